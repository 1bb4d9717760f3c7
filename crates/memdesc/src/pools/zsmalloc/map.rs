//! Mapping a zsmalloc object: [`ZsPool::map_read`] and [`ZsPool::map_write`] and the guards
//! they return ([`ZsRead`], [`ZsWrite`]). A mapping counts itself in its handle entry and its
//! zspage under the pool lock, then gives access without the lock: a window on the page,
//! or a kmalloc'd copy of an object that straddles two pages (written back when a write
//! mapping is dropped). See the locking section of [`super`].

use core::ops::{Deref, DerefMut};

use super::{Handle, HandleId, ZsError, ZsPool, E_LOST, E_MAPPED};
use crate::addr::PAGE_SIZE;
use crate::cpu::Cpu;
use crate::desc::{DescPtr, Zspage};
use crate::page_access::PageAccess;
use crate::platform::Platform;
use crate::slab::KArray;
use crate::sync::Ordering;

impl<'m, P: Platform> ZsPool<'m, P> {
    /// Maps an object for reading. The object stays where it is until the guard is dropped.
    pub fn map_read<'a>(&'a self, cpu: &'a Cpu<'a>, h: &'a Handle) -> Result<ZsRead<'a, 'm, P>, ZsError> {
        Ok(ZsRead(self.map(cpu, h.0, false)?))
    }

    /// Maps an object for reading and writing; what is written reaches the pool at the
    /// latest when the guard is dropped.
    pub fn map_write<'a>(&'a self, cpu: &'a Cpu<'a>, h: &'a Handle) -> Result<ZsWrite<'a, 'm, P>, ZsError> {
        Ok(ZsWrite(self.map(cpu, h.0, true)?))
    }

    fn map<'a>(&'a self, cpu: &'a Cpu<'a>, h: HandleId, write: bool) -> Result<Mapping<'a, 'm, P>, ZsError> {
        let rg = self.mem.rcu().read_lock(cpu);
        let mut g = self.state().lock.lock();
        let loc = self.resolve(&g, h)?;
        if g.handles.get(h.index()).is_some_and(|e| e & E_LOST != 0) {
            return Err(ZsError::Lost(h));
        }
        if g.handles.get(h.index()).is_some_and(|e| e & E_MAPPED != 0) {
            return Err(ZsError::AlreadyMapped(h));
        }
        let class = g.classes[loc.class];
        let zs = loc.zs.get(&rg);
        let off = loc.idx as usize * class.slot as usize + class.data_off();
        let straddles = off / PAGE_SIZE != (off + loc.size - 1) / PAGE_SIZE;
        let bytes = if straddles {
            let mut buf = self.mem.slabs().karray(cpu, loc.size, 0u8)?;
            // The object's bytes are ours to read: allocated, not mapped, and we hold the lock.
            self.copy_out(zs, off, buf.as_mut_slice());
            Bytes::Copy(buf)
        } else {
            // The object's bytes become the mapping's (pool item P2 of `desc.rs`): counted in
            // the zspage below, under the lock.
            Bytes::InPage(self.window(zs, off, loc.size))
        };
        *g.handles.get_mut(h.index()).expect("resolved") |= E_MAPPED;
        zs.mapped.fetch_add(1, Ordering::Relaxed);
        g.mapped += 1;
        Ok(Mapping { pool: self, cpu, h, zs: loc.zs, off, bytes, write })
    }

    fn unmap(&self, m: &mut Mapping<'_, 'm, P>) {
        let rg = self.mem.rcu().read_lock(m.cpu);
        // The mapped count keeps the zspage in place and alive (compaction and migration skip
        // it, its objects cannot be freed while one is mapped).
        let zs = m.zs.get(&rg);
        if let Bytes::Copy(buf) = core::mem::replace(&mut m.bytes, Bytes::Gone) {
            if m.write {
                self.copy_in(zs, m.off, buf.as_slice());
            }
            self.mem.slabs().karray_free(m.cpu, buf);
        }
        let mut g = self.state().lock.lock();
        if let Some(e) = g.handles.get_mut(m.h.index()) {
            *e &= !E_MAPPED;
        }
        zs.mapped.fetch_sub(1, Ordering::Relaxed);
        g.mapped -= 1;
    }
}

/// Where a mapping's bytes are.
enum Bytes<'m, P: Platform> {
    /// In the page: a window on the object (it lies in one page).
    InPage(PageAccess<'m, P>),
    /// A kmalloc'd copy (the object straddles two pages).
    Copy(KArray<'m, u8>),
    /// Unmapped (while the mapping is being dropped).
    Gone,
}

/// A live mapping (shared by [`ZsRead`] and [`ZsWrite`]).
struct Mapping<'a, 'm, P: Platform> {
    pool: &'a ZsPool<'m, P>,
    cpu: &'a Cpu<'a>,
    h: HandleId,
    zs: DescPtr<Zspage>,
    /// Offset of the object's data in the zspage.
    off: usize,
    bytes: Bytes<'m, P>,
    write: bool,
}

impl<P: Platform> Mapping<'_, '_, P> {
    fn bytes(&self) -> &[u8] {
        match &self.bytes {
            Bytes::InPage(w) => w.bytes(),
            Bytes::Copy(buf) => buf.as_slice(),
            Bytes::Gone => &[],
        }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        match &mut self.bytes {
            Bytes::InPage(w) => w.bytes_mut(),
            Bytes::Copy(buf) => buf.as_mut_slice(),
            Bytes::Gone => &mut [],
        }
    }
}

impl<P: Platform> Drop for Mapping<'_, '_, P> {
    fn drop(&mut self) {
        let pool = self.pool;
        pool.unmap(self);
    }
}

/// A read mapping of a zsmalloc object; unmaps on drop.
pub struct ZsRead<'a, 'm, P: Platform>(Mapping<'a, 'm, P>);

/// A write mapping of a zsmalloc object; writes back (if it is a copy) and unmaps on drop.
pub struct ZsWrite<'a, 'm, P: Platform>(Mapping<'a, 'm, P>);

impl<P: Platform> Deref for ZsRead<'_, '_, P> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.0.bytes()
    }
}

impl<P: Platform> Deref for ZsWrite<'_, '_, P> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.0.bytes()
    }
}

impl<P: Platform> DerefMut for ZsWrite<'_, '_, P> {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.0.bytes_mut()
    }
}
