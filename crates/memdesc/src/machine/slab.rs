//! The slab layer's public API on the machine: one-line forwarders to
//! [`Slabs`](crate::slab::Slabs) (layer 3). The raw entry points (`kfree_raw`,
//! `KBox::from_raw`, `cache_ref`, …) are in [`super::raw`].

use core::fmt;
use core::ptr::NonNull;

use crate::base::cpu::Cpu;
use crate::base::gfp::Gfp;
use crate::base::platform::Platform;
use crate::kmalloc::KBox;
use crate::page_alloc::AllocError;
use crate::slab::{CacheArgs, CacheRef, SlabCache, SlabError, SlabInfo};

use super::PhysMem;

impl<P: Platform> PhysMem<P> {
    /// Calls `f` for every cache.
    #[inline]
    pub fn for_each_cache(&self, f: impl FnMut(&SlabCache)) {
        self.slabs().for_each_cache(f)
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

    /// Usable size of a kmalloc allocation.
    #[inline]
    pub fn ksize(&self, ptr: NonNull<u8>) -> Result<usize, SlabError> {
        self.slabs().ksize(ptr)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use crate::base::cpu::Cpu;
    use crate::machine::test_machine::{machine, Buf};
    use crate::{CacheArgs, Gfp, MemmapLayout, PhysMem};
    use std::vec::Vec;

    /// Free pages with every cache shrunk and the per-CPU lists drained (until stable: a
    /// TYPESAFE_BY_RCU slab goes back only after a grace period).
    fn settled_free_pages(m: &PhysMem<Buf>, cpu: &Cpu<'_>) -> u64 {
        let mut last = u64::MAX;
        loop {
            m.for_each_cache(|c| {
                m.shrink_any_cache(cpu, c);
            });
            m.drain_all();
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
        let descs = m.check_descriptors(&cpu).unwrap();
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
    /// The cache list follows creation and destruction, and a permanent cache (held as a
    /// `Kept` by other layers) cannot be destroyed.
    #[cfg(feature = "pgtable")]
    #[test]
    fn the_cache_list_and_permanent_caches() {
        use crate::slab::{CacheFamily, SlabError};
        let m = machine(4096, MemmapLayout::Flat);
        let cpu = m.cpus().claim(0).unwrap();
        let count = || {
            let mut n = 0;
            m.for_each_cache(|_| n += 1);
            n
        };
        let n0 = count();
        let a = m.create_cache(&cpu, CacheArgs::new("list_a", 64)).unwrap();
        let b = m.create_cache(&cpu, CacheArgs::new("list_b", 64)).unwrap();
        let kept = m.slabs().new_cache_forever(&cpu, &CacheArgs::new("forever", 32), CacheFamily::Internal).unwrap();
        assert_eq!(count(), n0 + 3);
        m.destroy_cache(&cpu, a).unwrap();
        let mut names = Vec::new();
        m.for_each_cache(|c| names.push(c.name()));
        assert!(names.contains(&"list_b") && names.contains(&"forever") && !names.contains(&"list_a"), "{names:?}");
        let c = kept.get().unwrap();
        assert_eq!(c.name(), "forever");
        let r = m.destroy_cache(&cpu, m.slabs().cache_ref_internal(c));
        assert_eq!(r, Err(SlabError::NotUserCache("forever")));
        m.destroy_cache(&cpu, b).unwrap();
        assert_eq!(count(), n0 + 1);
        m.check(|_, _, _| {}).unwrap();
    }
}

/// Typed objects in slab memory (`slab/obj.rs`), on a booted machine.
#[cfg(all(test, not(loom)))]
mod obj_tests {
    use core::sync::atomic::{AtomicUsize, Ordering};

    use crate::machine::test_machine::machine;
    use crate::slab::{CacheArgs, OutOfBounds, SlabError};
    use crate::MemmapLayout;
    use std::vec::Vec;

    #[derive(Debug, PartialEq)]
    struct Rec {
        a: u64,
        b: [u8; 20],
    }

    #[repr(align(64))]
    #[derive(Debug, PartialEq)]
    struct Wide(u64, u32);

    #[repr(align(4096))]
    struct Page([u8; 16]);

    /// Counts drops, to see that a freed value is handed back (and dropped by its new owner).
    struct Counted<'c>(&'c AtomicUsize);
    impl Drop for Counted<'_> {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn kobj_holds_its_value_aligned_and_gives_it_back() {
        let m = machine(2048, MemmapLayout::Flat);
        let cpu = m.cpus().claim(0).unwrap();
        let s = m.slabs();
        let mut r = s.kobj(&cpu, Rec { a: 7, b: [3; 20] }).unwrap();
        assert_eq!(m.ksize(r.as_ptr().cast()).unwrap(), 32, "28 bytes in kmalloc-32");
        r.a += 1;
        r.b[19] = 9;
        let w = s.kobj(&cpu, Wide(1, 2)).unwrap();
        assert!((w.as_ptr().as_ptr() as usize).is_multiple_of(64), "{:p}", w.as_ptr());
        let p = s.kobj(&cpu, Page([5; 16])).unwrap();
        assert!((p.as_ptr().as_ptr() as usize).is_multiple_of(4096));
        assert_eq!(p.0[15], 5);
        let unit = s.kobj(&cpu, ()).unwrap();
        let mut b = [3; 20];
        b[19] = 9;
        assert_eq!(s.kobj_free(&cpu, r), Rec { a: 8, b });
        assert_eq!(s.kobj_free(&cpu, w), Wide(1, 2));
        assert_eq!(s.kobj_free(&cpu, p).0, [5; 16]);
        s.kobj_free(&cpu, unit);
        let drops = AtomicUsize::new(0);
        let c = s.kobj(&cpu, Counted(&drops)).unwrap();
        let v = s.kobj_free(&cpu, c);
        assert_eq!(drops.load(Ordering::Relaxed), 0, "the value is moved out, not dropped");
        drop(v);
        assert_eq!(drops.load(Ordering::Relaxed), 1);
        m.check(|_, _, _| {}).unwrap();
    }

    #[test]
    fn kobj_free_returns_the_memory() {
        let m = machine(2048, MemmapLayout::Flat);
        let cpu = m.cpus().claim(0).unwrap();
        let s = m.slabs();
        let c64 = || {
            let mut n = 0;
            m.for_each_cache(|c| {
                if c.name() == "kmalloc-64" {
                    n = c.live_objects();
                }
            });
            n
        };
        let before = c64();
        let objs: Vec<_> = (0..100u64).map(|i| s.kobj(&cpu, [i; 8]).unwrap()).collect();
        assert_eq!(c64(), before + 100);
        for (i, o) in objs.into_iter().enumerate() {
            assert_eq!(s.kobj_free(&cpu, o), [i as u64; 8]);
        }
        assert_eq!(c64(), before);
    }

    #[test]
    fn a_handle_of_another_machine_is_not_freed_there() {
        let a = machine(1024, MemmapLayout::Flat);
        let b = machine(1024, MemmapLayout::Flat);
        let ca = a.cpus().claim(0).unwrap();
        let cb = b.cpus().claim(0).unwrap();
        let o = a.slabs().kobj(&ca, 42u64).unwrap();
        let arr = a.slabs().karray(&ca, 4, 1u32).unwrap();
        assert_eq!(b.slabs().kobj_free(&cb, o), 42, "the value still comes back");
        b.slabs().karray_free(&cb, arr);
        a.check(|_, _, _| {}).unwrap();
        b.check(|_, _, _| {}).unwrap();
    }

    #[test]
    fn karray_is_bounds_checked() {
        let m = machine(2048, MemmapLayout::Flat);
        let cpu = m.cpus().claim(0).unwrap();
        let s = m.slabs();
        let mut a = s.karray(&cpu, 1000, 7u64).unwrap();
        assert_eq!(a.len(), 1000);
        assert!(!a.is_empty());
        assert!(a.as_slice().iter().all(|&v| v == 7));
        a.set(999, 1).unwrap();
        assert_eq!(a.set(1000, 1), Err(OutOfBounds { index: 1000, len: 1000 }));
        assert_eq!(a.get(999), Some(1));
        assert_eq!(a.get(1000), None);
        a.as_mut_slice()[0] = 2;
        assert_eq!(a.get(0), Some(2));
        assert_eq!(m.ksize(a.as_ptr().cast()).unwrap(), 8192);
        let e = s.karray(&cpu, 0, 0u8).unwrap();
        assert!(e.is_empty());
        assert_eq!(e.get(0), None);
        assert!(s.karray(&cpu, usize::MAX / 2, 0u32).is_err(), "overflowing size refused");
        assert!(s.karray(&cpu, 1 << 40, 0u8).is_err(), "more than the machine has refused");
        s.karray_free(&cpu, a);
        s.karray_free(&cpu, e);
        m.check(|_, _, _| {}).unwrap();
    }

    #[test]
    fn cache_objects_are_typed_and_checked() {
        let m = machine(2048, MemmapLayout::Flat);
        let cpu = m.cpus().claim(0).unwrap();
        let s = m.slabs();
        let c = s.new_obj_cache::<Wide>(&cpu, CacheArgs::new("wide", 0)).unwrap();
        assert_eq!(c.cache().name(), "wide");
        let mut objs: Vec<_> = (0..50).map(|i| s.obj_alloc(&cpu, c, Wide(i, 0)).unwrap()).collect();
        for o in &mut objs {
            assert!((o.as_ptr().as_ptr() as usize).is_multiple_of(64));
            o.1 = o.0 as u32 * 2;
        }
        assert_eq!(c.cache().live_objects(), 50);
        for (i, o) in objs.into_iter().enumerate() {
            assert_eq!(o.cache().name(), "wide");
            assert_eq!(s.obj_free(&cpu, o), Wide(i as u64, i as u32 * 2));
        }
        assert_eq!(c.cache().live_objects(), 0);
        // An existing cache is checked: too small, too little aligned, type-stable.
        let small = s.new_cache(&cpu, &CacheArgs::new("small", 16)).unwrap();
        assert!(s.obj_cache::<[u64; 2]>(small).is_ok());
        assert_eq!(s.obj_cache::<Rec>(small).err(), Some(SlabError::Layout { cache: "small", size: 32, align: 8 }));
        assert!(matches!(s.obj_cache::<Wide>(small), Err(SlabError::Layout { align: 64, .. })));
        let rcu = s.new_cache(&cpu, &CacheArgs { typesafe_by_rcu: true, ..CacheArgs::new("rcu", 64) }).unwrap();
        assert!(matches!(s.obj_cache::<u64>(rcu), Err(SlabError::Layout { cache: "rcu", .. })));
        let t = s.obj_cache::<[u64; 2]>(small).unwrap();
        let o = s.obj_alloc(&cpu, t, [1, 2]).unwrap();
        assert_eq!(*o, [1, 2]);
        assert_eq!(s.obj_free(&cpu, o), [1, 2]);
        m.check(|_, _, _| {}).unwrap();
    }
}
