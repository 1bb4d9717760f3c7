//! The slab layer's public API on the machine: one-line forwarders to
//! [`Slabs`](crate::slab::Slabs) (layer 3), plus the constructor of raw [`KBox`] handles,
//! which needs the machine's identity.

use core::fmt;
use core::ptr::NonNull;

use crate::cpu::Cpu;
use crate::gfp::Gfp;
use crate::kmalloc::KBox;
use crate::page_alloc::AllocError;
use crate::platform::Platform;
use crate::slab::{CacheArgs, CacheRef, SlabCache, SlabError, SlabInfo};

use super::PhysMem;

impl<P: Platform> PhysMem<P> {
    /// Calls `f` for every cache.
    #[inline]
    pub fn for_each_cache(&self, f: impl FnMut(&SlabCache)) {
        self.slabs().for_each_cache(f)
    }

    /// A handle to one of this machine's user caches (from [`PhysMem::for_each_cache`]); the
    /// crate's own caches and kmalloc's are refused with [`SlabError::NotUserCache`].
    ///
    /// # Safety
    /// The returned handle is a second handle to a cache whose creator holds one: the caller
    /// ensures the cache is not destroyed (through either handle) while the other is still
    /// used, and frees through it only objects it owns.
    #[inline]
    pub unsafe fn cache_ref<'m>(&'m self, cache: &'m SlabCache) -> Result<CacheRef<'m, P>, SlabError> {
        // SAFETY: the caller's contract is the forwarded method's, word for word.
        unsafe { self.slabs().cache_ref(cache) }
    }

    /// Returns every empty slab of any cache of this machine (a user's, kmalloc's or the
    /// crate's own) to the page allocator; see [`PhysMem::shrink_cache`]. Returns pages freed.
    #[inline]
    pub fn shrink_any_cache(&self, cpu: &Cpu<'_>, cache: &SlabCache) -> u64 {
        self.slabs().shrink_any_cache(cpu, cache)
    }

    /// Creates a cache. Its `SlabCache` struct is an object of the cache of caches.
    #[inline]
    pub fn create_cache(&self, cpu: &Cpu<'_>, args: CacheArgs) -> Result<CacheRef<'_, P>, AllocError> {
        self.slabs().create_cache(cpu, args)
    }

    /// Destroys a cache with no live objects: flushes its sheaves, frees its slabs (after a
    /// grace period for TYPESAFE_BY_RCU caches) and its per-CPU memory.
    #[inline]
    pub fn destroy_cache(&self, cpu: &Cpu<'_>, cache: CacheRef<'_, P>) -> Result<(), SlabError> {
        self.slabs().destroy_cache(cpu, cache)
    }

    /// Returns every empty slab of `cache` to the page allocator (after a grace period for
    /// TYPESAFE_BY_RCU caches), flushing all CPUs' sheaves first. Returns pages freed.
    #[inline]
    pub fn shrink_cache(&self, cpu: &Cpu<'_>, cache: &CacheRef<'_, P>) -> u64 {
        self.slabs().shrink_cache(cpu, cache)
    }

    /// The slabinfo row of a cache.
    #[inline]
    pub fn slab_info(&self, c: &SlabCache) -> SlabInfo {
        self.slabs().slab_info(c)
    }

    /// Writes every cache in the format of Linux's /proc/slabinfo (version 2.1 columns).
    #[inline]
    pub fn write_slabinfo(&self, out: &mut impl fmt::Write) -> fmt::Result {
        self.slabs().write_slabinfo(out)
    }

    /// Allocates `size` bytes (see the crate-level example; `memdesc_host::boot` gives a
    /// machine to try it on). The [`KBox`] owns the memory; free it with [`PhysMem::kfree`].
    #[inline]
    pub fn kmalloc(&self, cpu: &Cpu<'_>, size: usize, gfp: Gfp) -> Result<KBox, AllocError> {
        self.slabs().kmalloc(cpu, size, gfp)
    }

    /// As [`PhysMem::kmalloc`], returning the address instead of a handle. Safe: the caller
    /// owns the memory and gives it back with [`PhysMem::kfree_raw`] (or wraps it with
    /// [`KBox::from_raw`]); losing the pointer leaks it.
    #[inline]
    pub fn kmalloc_raw(&self, cpu: &Cpu<'_>, size: usize, gfp: Gfp) -> Result<NonNull<u8>, AllocError> {
        self.slabs().kmalloc_raw(cpu, size, gfp)
    }

    /// Frees memory from [`PhysMem::kmalloc`], consuming its handle. Checked as
    /// [`PhysMem::kfree_raw`]; a handle of another machine is refused with
    /// [`SlabError::OutOfRange`]. A refused free keeps the memory allocated (leaked).
    #[inline]
    pub fn kfree(&self, cpu: &Cpu<'_>, obj: KBox) -> Result<(), SlabError> {
        self.slabs().kfree(cpu, obj)
    }

    /// Frees kmalloc memory by address. Checked: an address outside the machine, in a page
    /// that is neither a kmalloc slab nor a large kmalloc block (a descriptor cache's object,
    /// a user cache's, a folio, free memory, …: [`SlabError::NotKmalloc`] or
    /// [`SlabError::NotSlab`]), an interior pointer and a double free (in release builds too,
    /// whichever CPU freed it first) are refused and change nothing.
    ///
    /// # Safety
    /// The caller owns the memory: `ptr` came from [`PhysMem::kmalloc_raw`] of this machine
    /// (or [`KBox::into_raw`]), has not been freed since, and nothing uses it after this
    /// call. The checks catch a double free but cannot tell the owner of a live object from
    /// anyone else: freeing another owner's object hands it out again while still in use.
    #[inline]
    pub unsafe fn kfree_raw(&self, cpu: &Cpu<'_>, ptr: NonNull<u8>) -> Result<(), SlabError> {
        // SAFETY: the caller's contract is the forwarded method's, word for word.
        unsafe { self.slabs().kfree_raw(cpu, ptr) }
    }

    /// Usable size of a kmalloc allocation.
    #[inline]
    pub fn ksize(&self, ptr: NonNull<u8>) -> Result<usize, SlabError> {
        self.slabs().ksize(ptr)
    }
}

impl KBox {
    /// Makes the handle of raw kmalloc memory again.
    ///
    /// # Safety
    /// The caller owns the memory: `ptr` came from [`PhysMem::kmalloc_raw`] of `mem` (or
    /// [`KBox::into_raw`]), has not been freed since, and no other handle or raw owner remains.
    #[inline]
    pub unsafe fn from_raw<P: Platform>(mem: &PhysMem<P>, ptr: NonNull<u8>) -> KBox {
        KBox::new(ptr, mem.machine_id())
    }
}
