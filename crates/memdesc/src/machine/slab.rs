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

#[cfg(all(test, not(loom)))]
mod tests {
    use crate::cpu::Cpu;
    use crate::machine::test_machine::{machine, Buf};
    use crate::slab::SlabCache;
    use crate::{CacheArgs, Gfp, MemmapLayout, PhysMem};
    use std::vec::Vec;

    /// Free pages with every cache shrunk and the per-CPU lists drained (until stable: a
    /// TYPESAFE_BY_RCU slab goes back only after a grace period).
    fn settled_free_pages(m: &PhysMem<Buf>, cpu: &Cpu<'_>) -> u64 {
        let mut last = u64::MAX;
        loop {
            let mut caches = Vec::new();
            m.for_each_cache(|c| caches.push(c as *const SlabCache));
            for c in caches {
                // SAFETY: caches live until destroyed, and none is destroyed meanwhile.
                m.shrink_any_cache(cpu, unsafe { &*c });
            }
            m.drain_all_from(cpu);
            let now = m.nr_free_pages();
            if now == last {
                return now;
            }
            last = now;
        }
    }

    /// The slab layer on a booted machine, in every build that has it (the page allocator and
    /// slab alone, without the descriptor caches, included): kmalloc size classes, a large
    /// kmalloc, a user cache, and the consistency checks; every page comes back.
    #[test]
    fn kmalloc_and_a_user_cache_on_a_booted_machine() {
        let m = machine(4096, MemmapLayout::Flat);
        let cpu = m.cpus().claim(0).unwrap();
        let free0 = settled_free_pages(&m, &cpu);
        let small = m.kmalloc(&cpu, 100, Gfp::ZERO).unwrap();
        assert_eq!(m.ksize(small.as_ptr()).unwrap(), 128);
        let large = m.kmalloc(&cpu, 3 * 4096 + 1, Gfp::KERNEL).unwrap();
        assert_eq!(m.ksize(large.as_ptr()).unwrap(), 4 * 4096);
        let c = m.create_cache(&cpu, CacheArgs::new("machine_test", 200)).unwrap();
        let objs: Vec<_> = (0..100).map(|_| c.alloc(&cpu).unwrap()).collect();
        assert_eq!(c.cache().live_objects(), 100);
        assert!(m.nr_free_pages() < free0);
        m.check(|_, _, _| {}).unwrap();
        let descs = m.check_descriptors().unwrap();
        assert!(descs.slabs > 0, "{descs:?}");
        for o in objs {
            c.free(&cpu, o).unwrap();
        }
        m.destroy_cache(&cpu, c).unwrap();
        m.kfree(&cpu, small).unwrap();
        m.kfree(&cpu, large).unwrap();
        assert_eq!(settled_free_pages(&m, &cpu), free0, "every page comes back");
        m.check(|_, _, _| {}).unwrap();
    }
}
