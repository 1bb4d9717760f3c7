//! Mapping a zsmalloc object: [`ZsPool::map_read`] and [`ZsPool::map_write`] and the guards
//! they return ([`ZsRead`], [`ZsWrite`]). A mapping counts itself in its handle entry and its
//! zspage under the pool lock, then gives access without the lock: a pointer into the page,
//! or a kmalloc'd copy of an object that straddles two pages (written back when a write
//! mapping is dropped). See the locking section of [`super`].

use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;

use super::{zs_ref, Handle, HandleId, ZsError, ZsPool, E_LOST, E_MAPPED};
use crate::addr::PAGE_SIZE;
use crate::cpu::Cpu;
use crate::desc::Zspage;
use crate::gfp::Gfp;
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
        let mut g = self.state().lock.lock();
        let loc = self.resolve(&g, h)?;
        if g.handles.get(h.index()).is_some_and(|e| e & E_LOST != 0) {
            return Err(ZsError::Lost(h));
        }
        if g.handles.get(h.index()).is_some_and(|e| e & E_MAPPED != 0) {
            return Err(ZsError::AlreadyMapped(h));
        }
        let class = g.classes[loc.class];
        let zs = zs_ref(loc.zs);
        let off = loc.idx as usize * class.slot as usize + class.data_off();
        let straddles = off / PAGE_SIZE != (off + loc.size - 1) / PAGE_SIZE;
        let (ptr, copy) = if straddles {
            let buf = self.mem.kmalloc_raw(cpu, loc.size, Gfp::KERNEL)?;
            // SAFETY: a fresh kmalloc object of loc.size bytes; the object's bytes are ours
            // to read (allocated, not mapped elsewhere, and we hold the lock).
            self.copy_out(zs, off, unsafe { core::slice::from_raw_parts_mut(buf.as_ptr(), loc.size) });
            (buf, true)
        } else {
            (self.page_ptr(zs, off), false)
        };
        *g.handles.get_mut(h.index()).expect("resolved") |= E_MAPPED;
        zs.mapped.fetch_add(1, Ordering::Relaxed);
        g.mapped += 1;
        Ok(Mapping { pool: self, cpu, h, zs, off, ptr, len: loc.size, copy, write })
    }

    fn unmap(&self, m: &Mapping<'_, 'm, P>) {
        if m.copy {
            if m.write {
                // SAFETY: the buffer holds m.len bytes we own until the kfree below.
                self.copy_in(m.zs, m.off, unsafe { core::slice::from_raw_parts(m.ptr.as_ptr(), m.len) });
            }
            // SAFETY: the copy buffer is the kmalloc object map allocated for this mapping,
            // which is ending.
            let r = unsafe { self.mem.kfree_raw(m.cpu, m.ptr) };
            debug_assert!(r.is_ok(), "copy buffer free: {r:?}");
        }
        let mut g = self.state().lock.lock();
        if let Some(e) = g.handles.get_mut(m.h.index()) {
            *e &= !E_MAPPED;
        }
        m.zs.mapped.fetch_sub(1, Ordering::Relaxed);
        g.mapped -= 1;
    }
}

/// A live mapping (shared by [`ZsRead`] and [`ZsWrite`]).
struct Mapping<'a, 'm, P: Platform> {
    pool: &'a ZsPool<'m, P>,
    cpu: &'a Cpu<'a>,
    h: HandleId,
    zs: &'a Zspage,
    /// Offset of the object's data in the zspage.
    off: usize,
    ptr: NonNull<u8>,
    len: usize,
    /// `ptr` is a kmalloc'd copy (the object straddles two pages).
    copy: bool,
    write: bool,
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
        // SAFETY: ptr is valid for len bytes while the mapping lives (the zspage cannot move
        // or be freed while its mapped count is non-zero, and a copy is ours); nothing
        // writes the object meanwhile (one mapping per object; frees of it are refused).
        unsafe { core::slice::from_raw_parts(self.0.ptr.as_ptr(), self.0.len) }
    }
}

impl<P: Platform> Deref for ZsWrite<'_, '_, P> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: as for ZsRead.
        unsafe { core::slice::from_raw_parts(self.0.ptr.as_ptr(), self.0.len) }
    }
}

impl<P: Platform> DerefMut for ZsWrite<'_, '_, P> {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as for ZsRead; this mapping is the only access to the object's bytes, and
        // `&mut self` makes this the only live slice of it.
        unsafe { core::slice::from_raw_parts_mut(self.0.ptr.as_ptr(), self.0.len) }
    }
}
