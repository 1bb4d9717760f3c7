//! Slab caches and kmalloc on the simulated machine: size classes, large kmalloc, refused
//! frees, TYPESAFE_BY_RCU slab release, shrink and destroy, bulk APIs, slabinfo, cross-CPU
//! frees, and a property test against a reference model.

use std::collections::BTreeMap;
use std::ptr::NonNull;

use memdesc::base::layout::{MemmapLayout, MemoryLayout};
use memdesc::kmalloc::{KMALLOC_MAX_CACHE_SIZE, KMALLOC_SIZES};
use memdesc::memmap::word::{PageKind, Subtype};
use memdesc::{CacheArgs, Config, Gfp, Platform, SlabCache, SlabError};
use memdesc_host::{boot, SimMachine};
use proptest::prelude::*;

mod common;
#[allow(unused_imports)]
use common::*;

fn machine(layout: MemmapLayout) -> SimMachine {
    boot(&MemoryLayout::pc(1, layout), Config { nr_cpus: 2, debug_checks: true, ..Config::default() }).unwrap()
}

/// The cache a slab object's page word names, read under RCU as a lockless reader would.
fn owner_of(m: &SimMachine, cpu: &memdesc::Cpu<'_>, obj: NonNull<u8>) -> Option<usize> {
    let g = m.rcu().read_lock(cpu);
    let pfn = m.platform().virt_to_pfn(obj)?;
    match m.memmap().load(m.platform(), pfn)?.word.kind() {
        PageKind::Slab(d) => Some(d.get(&g).cache_addr()),
        _ => None,
    }
}

fn addr(c: &SlabCache) -> usize {
    c as *const SlabCache as usize
}

#[test]
fn kmalloc_size_classes() {
    for layout in [MemmapLayout::Flat, MemmapLayout::TwoLevel] {
        let m = machine(layout);
        let cpu = m.cpus().claim(0).unwrap();
        let mut prev = 0;
        for &size in &KMALLOC_SIZES {
            for req in [prev + 1, size] {
                let p = m.kmalloc_raw(&cpu, req, Gfp::ZERO).unwrap();
                assert_eq!(m.ksize(p).unwrap(), size, "request {req}");
                if size.is_power_of_two() {
                    assert_eq!(p.as_ptr() as usize % size.min(4096), 0, "kmalloc-{size} is naturally aligned");
                }
                // SAFETY: a fresh zeroed allocation of `req` bytes.
                assert!(unsafe { std::slice::from_raw_parts(p.as_ptr(), req) }.iter().all(|&b| b == 0));
                assert!(owner_of(&m, &cpu, p).is_some(), "kmalloc-{size} objects live in Slab pages");
                kfree_raw(&m, &cpu, p).unwrap();
            }
            prev = size;
        }
        let mut info = String::new();
        m.write_slabinfo(&mut info).unwrap();
        for name in ["kmalloc-96", "kmalloc-192", "kmalloc-8k", "slab_desc", "kmem_cache"] {
            assert!(info.lines().any(|l| l.starts_with(name)), "{name} missing from\n{info}");
        }
        assert!(info.starts_with("slabinfo - version: 2.1"));
    }
}

#[test]
fn large_kmalloc_goes_to_the_page_allocator() {
    let m = machine(MemmapLayout::Flat);
    let cpu = m.cpus().claim(0).unwrap();
    let p = m.kmalloc_raw(&cpu, KMALLOC_MAX_CACHE_SIZE + 1, Gfp::KERNEL).unwrap();
    assert_eq!(m.ksize(p).unwrap(), 16384);
    let pfn = m.platform().virt_to_pfn(p).unwrap();
    assert!(matches!(m.memmap().load(m.platform(), pfn).unwrap().word.kind(),
        PageKind::Undescribed(u) if u.subtype == Subtype::LargeKmalloc && u.order == 2));
    // SAFETY: 16 KiB allocation; one byte in is an interior pointer.
    let inner = unsafe { NonNull::new_unchecked(p.as_ptr().add(4096)) };
    assert!(matches!(kfree_raw(&m, &cpu, inner), Err(SlabError::NotSlab(..) | SlabError::InteriorPointer(_))));
    kfree_raw(&m, &cpu, p).unwrap();
    assert!(kfree_raw(&m, &cpu, p).is_err(), "double free of a large kmalloc");
}

#[test]
fn refused_frees_change_nothing() {
    let m = machine(MemmapLayout::Flat);
    let cpu = m.cpus().claim(0).unwrap();
    let a = m.create_cache(&cpu, CacheArgs::new("test_a", 40)).unwrap();
    let b = m.create_cache(&cpu, CacheArgs::new("test_b", 40)).unwrap();
    let x = a.alloc(&cpu).unwrap().into_raw();
    let live = a.cache().live_objects();
    // SAFETY: 40-byte object; 8 bytes in is inside it.
    let interior = unsafe { NonNull::new_unchecked(x.as_ptr().add(8)) };
    assert_eq!(cache_free_raw(&a, &cpu, interior), Err(SlabError::InteriorPointer(interior.as_ptr() as usize)));
    assert_eq!(cache_free_raw(&b, &cpu, x), Err(SlabError::WrongCache { addr: x.as_ptr() as usize, owner: "test_a" }));
    // The owned handle of another cache is refused the same way (and not freed).
    let z = a.alloc(&cpu).unwrap();
    let zaddr = z.as_ptr().as_ptr() as usize;
    assert_eq!(b.free(&cpu, z), Err(SlabError::WrongCache { addr: zaddr, owner: "test_a" }));
    // SAFETY: `z` was refused above, so the object is still allocated and ours.
    a.free(&cpu, unsafe { memdesc::slab::SlabObj::from_raw(&a, NonNull::new(zaddr as *mut u8).unwrap()) }).unwrap();
    let raw = m.alloc_pages_raw(&cpu, 0, Gfp::KERNEL).unwrap();
    let raw_ptr = m.platform().direct_map(raw).unwrap();
    assert!(matches!(cache_free_raw(&a, &cpu, raw_ptr), Err(SlabError::NotSlab(..))));
    assert!(matches!(kfree_raw(&m, &cpu, raw_ptr), Err(SlabError::NotSlab(..))));
    let stack = 0u64;
    assert!(matches!(kfree_raw(&m, &cpu, NonNull::from(&stack).cast()), Err(SlabError::OutOfRange(_))));
    assert_eq!(a.cache().live_objects(), live, "refused frees change nothing");
    cache_free_raw(&a, &cpu, x).unwrap();
    assert_eq!(cache_free_raw(&a, &cpu, x), Err(SlabError::DoubleFree(x.as_ptr() as usize)));
    assert_eq!(a.cache().live_objects(), live - 1);
    let y = a.alloc(&cpu).unwrap();
    assert!(matches!(m.destroy_cache(&cpu, a), Err(SlabError::Busy(1))));
    let a = CacheRefAgain::find(&m, "test_a");
    a.free(&cpu, y).unwrap();
    free_raw(&m, &cpu, raw, 0).unwrap();
}

/// Rebuilds a handle to a cache by name (a cache whose destroy was refused is still there).
struct CacheRefAgain;
impl CacheRefAgain {
    fn find<'m>(m: &'m SimMachine, name: &str) -> memdesc::CacheRef<'m, memdesc_host::SimPlatform> {
        let mut found = None;
        m.for_each_cache(|c| {
            if c.name() == name {
                found = Some(c as *const SlabCache);
            }
        });
        // SAFETY: caches live until destroyed; the test does not destroy this one.
        // SAFETY: the tests using it destroy the cache only through the handle this returns.
        unsafe { m.cache_ref(&*found.unwrap()) }.unwrap()
    }
}

/// One of the machine's caches by name (any family).
fn find_cache<'m>(m: &'m SimMachine, name: &str) -> &'m SlabCache {
    let mut found = None;
    m.for_each_cache(|c| {
        if c.name() == name {
            found = Some(c as *const SlabCache);
        }
    });
    // SAFETY: caches live until destroyed; the tests destroy none of those they look up.
    unsafe { &*found.unwrap() }
}

#[test]
fn caches_shrink_and_destroy_return_every_page() {
    let m = machine(MemmapLayout::TwoLevel);
    let cpu = m.cpus().claim(0).unwrap();
    m.drain_all();
    let free0 = m.nr_free_pages();
    let ctor_runs = std::sync::atomic::AtomicUsize::new(0);
    static CTOR: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    fn ctor(p: NonNull<u8>) {
        CTOR.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: the ctor gets a whole object.
        unsafe { p.as_ptr().write(0x5a) };
    }
    let _ = ctor_runs;
    for typesafe in [false, true] {
        let c = m
            .create_cache(
                &cpu,
                CacheArgs { ctor: Some(ctor), typesafe_by_rcu: typesafe, align: 16, ..CacheArgs::new("obj200", 200) },
            )
            .unwrap();
        let mut objs: Vec<Option<memdesc::slab::SlabObj>> = (0..1000).map(|_| None).collect();
        c.alloc_bulk(&cpu, &mut objs).unwrap();
        for o in objs.iter().flatten() {
            assert_eq!(o.as_ptr().as_ptr() as usize % 16, 0);
            assert_eq!(owner_of(&m, &cpu, o.as_ptr()), Some(addr(c.cache())));
        }
        assert!(objs.iter().all(Option::is_some));
        assert!(CTOR.load(std::sync::atomic::Ordering::Relaxed) >= 1000);
        // SAFETY: constructed objects hold the ctor's byte.
        assert_eq!(unsafe { objs[0].as_ref().unwrap().as_ptr().as_ptr().read() }, 0x5a);
        let info = m.slab_info(c.cache());
        // Handed out, plus what sits in this CPU's sheaves (counted active, as SLUB does).
        let sheaved = 2 * memdesc::sheaf::SHEAF_CAPACITY as u64;
        assert!((1000..=1000 + sheaved).contains(&info.active_objs), "{}", info.active_objs);
        assert!(info.num_objs >= 1000);
        c.free_bulk(&cpu, &mut objs).unwrap();
        assert_eq!(c.cache().live_objects(), 0);
        assert!(m.shrink_cache(&cpu, &c) > 0);
        assert_eq!(m.slab_info(c.cache()).num_slabs, 0, "shrink returns every empty slab");
        m.destroy_cache(&cpu, c).unwrap();
    }
    // Slab descriptors freed by the shrink went back to their own cache; give its empty
    // slabs back too, then every page is home.
    m.shrink_any_cache(&cpu, find_cache(&m, "slab_desc"));
    m.shrink_any_cache(&cpu, find_cache(&m, "kmem_cache"));
    m.drain_all();
    assert_eq!(m.nr_free_pages(), free0);
}

#[test]
fn typesafe_slabs_wait_for_readers() {
    let m = machine(MemmapLayout::Flat);
    let cpu0 = m.cpus().claim(0).unwrap();
    let cpu1 = m.cpus().claim(1).unwrap();
    let c = m
        .create_cache(&cpu0, CacheArgs { typesafe_by_rcu: true, align: 16, ..CacheArgs::new("rcu_obj", 512) })
        .unwrap();
    let per_slab = c.cache().objects_per_slab() as usize;
    let objs: Vec<_> = (0..per_slab * 12).map(|_| c.alloc(&cpu0).unwrap()).collect();
    let slab_pages = |m: &SimMachine| {
        let mut n = 0;
        for r in m.memmap().regions() {
            m.memmap().walk(m.platform(), r.start, r.end, |v| {
                if let PageKind::Slab(_) = v.word.kind() {
                    n += 1u64 << v.span_order;
                }
            });
        }
        n
    };
    let reader = m.rcu().read_lock(&cpu1);
    for o in objs {
        c.free(&cpu0, o).unwrap();
    }
    let while_reading = slab_pages(&m);
    // Freeing beyond MIN_PARTIAL empty slabs discards them, but a reader may still hold a
    // pointer into them: their pages stay slab pages until the grace period ends.
    let expected_min = (12 * (1 << c.cache().order())) as u64;
    assert!(while_reading >= expected_min, "{while_reading} < {expected_min}");
    drop(reader);
    m.shrink_cache(&cpu0, &c);
    assert!(slab_pages(&m) < while_reading, "after the grace period the pages go back");
    m.destroy_cache(&cpu0, c).unwrap();
}

#[test]
fn cross_cpu_frees() {
    let m = machine(MemmapLayout::Flat);
    let (tx, rx) = std::sync::mpsc::channel::<Vec<usize>>();
    std::thread::scope(|s| {
        let m = &m;
        s.spawn(move || {
            let cpu = m.cpus().claim(0).unwrap();
            for round in 0..50 {
                let batch: Vec<usize> = (0..100)
                    .map(|i| m.kmalloc_raw(&cpu, 16 + (i * 37 + round) % 2000, Gfp::KERNEL).unwrap().as_ptr() as usize)
                    .collect();
                tx.send(batch).unwrap();
            }
        });
        s.spawn(move || {
            let cpu = m.cpus().claim(1).unwrap();
            for batch in rx {
                for p in batch {
                    kfree_raw(m, &cpu, NonNull::new(p as *mut u8).unwrap()).unwrap();
                }
            }
        });
    });
    let mut live = 0;
    m.for_each_cache(|c| {
        if c.name().starts_with("kmalloc") {
            live += c.live_objects();
        }
    });
    assert_eq!(live, 0);
}

#[derive(Clone, Debug)]
enum Op {
    Kmalloc(usize),
    CacheAlloc(usize),
    Free(usize),
    Shrink(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1usize..12000).prop_map(Op::Kmalloc),
        4 => (0usize..3).prop_map(Op::CacheAlloc),
        5 => any::<usize>().prop_map(Op::Free),
        1 => (0usize..3).prop_map(Op::Shrink),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// Random alloc/free across caches and sizes against a reference model: every object is
    /// distinct, aligned, inside a Slab page whose descriptor names the right cache; nothing
    /// leaks once everything is freed.
    #[test]
    fn matches_reference_model(ops in prop::collection::vec(op(), 1..300), cpu_pick in any::<u64>()) {
        let m = machine(MemmapLayout::TwoLevel);
        let cpus = [m.cpus().claim(0).unwrap(), m.cpus().claim(1).unwrap()];
        let caches = [
            m.create_cache(&cpus[0], CacheArgs::new("p24", 24)).unwrap(),
            m.create_cache(&cpus[0], CacheArgs { align: 64, ..CacheArgs::new("p100a64", 100) }).unwrap(),
            m.create_cache(&cpus[0], CacheArgs { typesafe_by_rcu: true, align: 16, ..CacheArgs::new("p48rcu", 48) }).unwrap(),
        ];
        // Model: address -> (size, owner: Some(cache index) or None for kmalloc).
        let mut live: BTreeMap<usize, (usize, Option<usize>)> = BTreeMap::new();
        for (step, op) in ops.into_iter().enumerate() {
            let cpu = &cpus[((cpu_pick >> (step % 64)) & 1) as usize];
            match op {
                Op::Kmalloc(size) => {
                    let p = m.kmalloc_raw(cpu, size, Gfp::KERNEL).unwrap();
                    prop_assert!(live.insert(p.as_ptr() as usize, (size, None)).is_none());
                }
                Op::CacheAlloc(i) => {
                    let p = caches[i].alloc_raw(cpu).unwrap();
                    let a = p.as_ptr() as usize;
                    prop_assert_eq!(a % [8, 64, 16][i], 0);
                    prop_assert_eq!(owner_of(&m, cpu, p), Some(addr(caches[i].cache())));
                    prop_assert!(live.insert(a, (caches[i].cache().object_size(), Some(i))).is_none());
                }
                Op::Free(k) => {
                    if !live.is_empty() {
                        let (&a, &(_, owner)) = live.iter().nth(k % live.len()).unwrap();
                        let p = NonNull::new(a as *mut u8).unwrap();
                        match owner {
                            Some(i) => prop_assert_eq!(cache_free_raw(&caches[i], cpu, p), Ok(())),
                            None => prop_assert_eq!(kfree_raw(&m, cpu, p), Ok(())),
                        }
                        live.remove(&a);
                    }
                }
                Op::Shrink(i) => {
                    m.shrink_cache(cpu, &caches[i]);
                }
            }
            // Objects never overlap.
            let mut end = 0;
            for (&a, &(size, _)) in &live {
                prop_assert!(a >= end, "objects overlap at {:#x}", a);
                end = a + size;
            }
        }
        for (&a, &(_, owner)) in &live {
            let p = NonNull::new(a as *mut u8).unwrap();
            match owner {
                Some(i) => prop_assert_eq!(cache_free_raw(&caches[i], &cpus[0], p), Ok(())),
                None => prop_assert_eq!(kfree_raw(&m, &cpus[0], p), Ok(())),
            }
        }
        for c in &caches {
            prop_assert_eq!(c.cache().live_objects(), 0);
        }
        for c in caches {
            prop_assert_eq!(m.destroy_cache(&cpus[0], c), Ok(()));
        }
        m.check(|_, _, _| {}).unwrap();
    }
}
