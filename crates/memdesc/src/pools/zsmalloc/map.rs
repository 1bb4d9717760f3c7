//! Mapping a zsmalloc object: [`ZsPool::map_read`] and [`ZsPool::map_write`] and the guards
//! they return ([`ZsRead`], [`ZsWrite`]). A mapping counts itself in its handle entry and its
//! zspage under the pool lock, then gives access without the lock: a window on the page,
//! or a kmalloc'd copy of an object that straddles two pages (written back when a write
//! mapping is dropped). See the locking section of [`super`].

use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;

use super::{Handle, HandleId, ZsError, ZsPool, E_LOST, E_MAPPED};
use crate::addr::PAGE_SIZE;
use crate::cpu::Cpu;
use crate::desc::{DescPtr, Zspage};
use crate::gfp::Gfp;
use crate::page_access::PageAccess;
use crate::platform::Platform;
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
            let buf = self.mem.kmalloc_raw(cpu, loc.size, Gfp::KERNEL)?;
            // SAFETY: a fresh kmalloc object of loc.size bytes; the object's bytes are ours
            // to read (allocated, not mapped elsewhere, and we hold the lock).
            self.copy_out(zs, off, unsafe { core::slice::from_raw_parts_mut(buf.as_ptr(), loc.size) });
            Bytes::Copy(buf)
        } else {
            // The object's bytes become the mapping's (pool item P2 of `desc.rs`): counted in
            // the zspage below, under the lock.
            Bytes::InPage(self.window(zs, off, loc.size))
        };
        *g.handles.get_mut(h.index()).expect("resolved") |= E_MAPPED;
        zs.mapped.fetch_add(1, Ordering::Relaxed);
        g.mapped += 1;
        Ok(Mapping { pool: self, cpu, h, zs: loc.zs, off, bytes, len: loc.size, write })
    }

    fn unmap(&self, m: &Mapping<'_, 'm, P>) {
        let rg = self.mem.rcu().read_lock(m.cpu);
        // The mapped count keeps the zspage in place and alive (compaction and migration skip
        // it, its objects cannot be freed while one is mapped).
        let zs = m.zs.get(&rg);
        if let Bytes::Copy(ptr) = m.bytes {
            if m.write {
                // SAFETY: the buffer holds m.len bytes we own until the kfree below.
                self.copy_in(zs, m.off, unsafe { core::slice::from_raw_parts(ptr.as_ptr(), m.len) });
            }
            // SAFETY: the copy buffer is the kmalloc object map allocated for this mapping,
            // which is ending.
            let r = unsafe { self.mem.kfree_raw(m.cpu, ptr) };
            debug_assert!(r.is_ok(), "copy buffer free: {r:?}");
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
    /// A kmalloc'd copy of `len` bytes (the object straddles two pages).
    Copy(NonNull<u8>),
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
    len: usize,
    write: bool,
}

impl<P: Platform> Mapping<'_, '_, P> {
    fn bytes(&self) -> &[u8] {
        match &self.bytes {
            Bytes::InPage(w) => w.bytes(),
            // SAFETY: the copy holds len bytes that are this mapping's until it is dropped.
            Bytes::Copy(ptr) => unsafe { core::slice::from_raw_parts(ptr.as_ptr(), self.len) },
        }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        match &mut self.bytes {
            Bytes::InPage(w) => w.bytes_mut(),
            // SAFETY: as in `bytes`; `&mut self` makes this the only live slice of the copy.
            Bytes::Copy(ptr) => unsafe { core::slice::from_raw_parts_mut(ptr.as_ptr(), self.len) },
        }
    }
}

impl<P: Platform> Drop for Mapping<'_, '_, P> {
    fn drop(&mut self) {
        self.pool.unmap(self);
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
