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
    /// The handle of an object of `cache` the caller owns (the checked constructor behind
    /// [`SlabObj::from_raw`], whose contract callers keep).
    #[inline]
    pub(crate) fn new_owned<P: Platform>(cache: &CacheRef<'_, P>, ptr: NonNull<u8>) -> SlabObj {
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
            // The object's own slab names its cache (the handle owns the object, so its slab
            // and cache are live).
            let addr = obj.ptr.as_ptr() as usize;
            return Err(match self.slabs.slab_of(addr) {
                Ok(slab) => SlabError::WrongCache { addr, owner: self.slabs.cache_of(slab).name },
                Err(e) => e,
            });
        }
        self.slabs.cache_free(cpu, self.cache, obj.ptr)
    }

    /// Frees an object of this cache by address; the caller owns it (the checked function
    /// behind [`CacheRef::free_raw`], whose contract callers keep). Checked: an address outside
    /// the cache's objects, an interior pointer and a double free are refused and change
    /// nothing.
    #[inline]
    pub(crate) fn free_owned(&self, cpu: &Cpu<'_>, obj: NonNull<u8>) -> Result<(), SlabError> {
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
