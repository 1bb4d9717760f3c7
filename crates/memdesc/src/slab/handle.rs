//! The handles users hold: [`CacheRef`], a reference to one user cache of a machine (made by
//! `PhysMem::create_cache` and `PhysMem::cache_ref`), and [`SlabObj`], an owned object of
//! such a cache that [`CacheRef::free`] consumes.

use core::ptr::NonNull;

use crate::cpu::Cpu;
use crate::page_alloc::AllocError;
use crate::platform::Platform;
use crate::slab::Slabs;

use super::cache::*;

/// A reference to a user cache of a machine, for allocating and freeing its objects.
pub struct CacheRef<'m, P: Platform> {
    pub(super) slabs: Slabs<'m, P>,
    pub(super) cache: &'m SlabCache,
}

/// An owned object of a user cache, from [`CacheRef::alloc`]: free it with
/// [`CacheRef::free`], which consumes it. Not `Clone`; dropping it leaks the object (it stays
/// allocated, and the cache cannot be destroyed while it is live).
#[must_use = "dropping a SlabObj leaks the object; free it with CacheRef::free"]
#[derive(Debug, PartialEq, Eq)]
pub struct SlabObj {
    pub(super) ptr: NonNull<u8>,
    pub(super) cache: NonNull<SlabCache>,
}

// SAFETY: a SlabObj is a unique token for one object; the allocator's state it names is
// behind locks and atomics, and the pointer is never dereferenced through the handle.
unsafe impl Send for SlabObj {}
// SAFETY: as above; `&SlabObj` only reads the two addresses.
unsafe impl Sync for SlabObj {}

impl SlabObj {
    /// The object's address (valid until the object is freed).
    #[inline]
    pub fn as_ptr(&self) -> NonNull<u8> {
        self.ptr
    }
    /// Gives up the handle for the raw pointer; free it with [`CacheRef::free_raw`] (or make
    /// a handle again with [`SlabObj::from_raw`]).
    #[inline]
    pub fn into_raw(self) -> NonNull<u8> {
        self.ptr
    }
    /// Makes the handle of a raw object again.
    ///
    /// # Safety
    /// The caller owns the object: `ptr` came from [`CacheRef::alloc`] or
    /// [`CacheRef::alloc_raw`] of `cache` (and was given up with [`SlabObj::into_raw`] if it
    /// was a handle), has not been freed since, and no other handle or raw owner remains.
    #[inline]
    pub unsafe fn from_raw<P: Platform>(cache: &CacheRef<'_, P>, ptr: NonNull<u8>) -> SlabObj {
        SlabObj { ptr, cache: NonNull::from(cache.cache) }
    }
}

impl<'m, P: Platform> CacheRef<'m, P> {
    /// The cache (borrowed from the handle: `destroy_cache` consumes the handle, so no
    /// reference to a destroyed cache outlives it).
    pub fn cache(&self) -> &SlabCache {
        self.cache
    }

    /// Allocates an object.
    pub fn alloc(&self, cpu: &Cpu<'_>) -> Result<SlabObj, AllocError> {
        let ptr = self.slabs.cache_alloc(cpu, self.cache)?;
        Ok(SlabObj { ptr, cache: NonNull::from(self.cache) })
    }

    /// Allocates an object and returns its address (the caller owns it; see
    /// [`CacheRef::free_raw`]).
    pub fn alloc_raw(&self, cpu: &Cpu<'_>) -> Result<NonNull<u8>, AllocError> {
        self.slabs.cache_alloc(cpu, self.cache)
    }

    /// Frees an object of this cache, consuming its handle. An object of another cache is
    /// refused with [`SlabError::WrongCache`] (and leaked).
    pub fn free(&self, cpu: &Cpu<'_>, obj: SlabObj) -> Result<(), SlabError> {
        if obj.cache != NonNull::from(self.cache) {
            // SAFETY: a SlabObj names the live cache it came from (a cache with a live object
            // cannot be destroyed).
            let owner = unsafe { obj.cache.as_ref() }.name;
            return Err(SlabError::WrongCache { addr: obj.ptr.as_ptr() as usize, owner });
        }
        self.slabs.cache_free(cpu, self.cache, obj.ptr)
    }

    /// Frees an object of this cache by address. Checked: an address outside the cache's
    /// objects, an interior pointer and a double free are refused and change nothing.
    ///
    /// # Safety
    /// The caller owns the object: `obj` came from [`CacheRef::alloc_raw`] of this cache (or
    /// [`SlabObj::into_raw`]), has not been freed since, and nothing uses it after this call.
    /// The checks catch a double free, but not a free of an object somebody else holds.
    pub unsafe fn free_raw(&self, cpu: &Cpu<'_>, obj: NonNull<u8>) -> Result<(), SlabError> {
        self.slabs.cache_free(cpu, self.cache, obj)
    }

    /// Allocates `out.len()` objects; on failure frees what it took and returns the error.
    pub fn alloc_bulk(&self, cpu: &Cpu<'_>, out: &mut [Option<SlabObj>]) -> Result<(), AllocError> {
        for i in 0..out.len() {
            match self.alloc(cpu) {
                Ok(o) => out[i] = Some(o),
                Err(e) => {
                    for slot in out[..i].iter_mut() {
                        if let Some(o) = slot.take() {
                            let _ = self.free(cpu, o);
                        }
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Frees every object taken out of `objs`; stops at the first refused one and returns its
    /// index (the objects after it stay in `objs`).
    pub fn free_bulk(&self, cpu: &Cpu<'_>, objs: &mut [Option<SlabObj>]) -> Result<(), (usize, SlabError)> {
        for (i, o) in objs.iter_mut().enumerate() {
            if let Some(o) = o.take() {
                self.free(cpu, o).map_err(|e| (i, e))?;
            }
        }
        Ok(())
    }
}
