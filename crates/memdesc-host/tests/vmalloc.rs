//! vmalloc on the simulated machine: areas in both memmap layouts and in highmem-free and
//! unmapped memory, byte access through the platform mapping, kernel PTEs that agree with the
//! page arrays (guard pages unmapped, tables freed by vfree), precise vfree errors, OOM
//! unwinding (pages or page tables) with nothing leaked. User mappings are in
//! `user_mappings.rs`.

use memdesc::base::layout::{MemmapLayout, MemoryLayout, RegionSpec};
use memdesc::memmap::word::Tag;
use memdesc::pgtable::{MapError, MmKind};
use memdesc::vmalloc::{Mappable, Unmappable, VmallocError, VmallocSpace};
use memdesc::Cpu;
use memdesc::{Config, Gfp, Pfn, PAGE_SIZE};
use memdesc_host::{boot, SimMachine};

mod common;
#[allow(unused_imports)]
use common::*;

fn machine(layout: MemmapLayout) -> SimMachine {
    boot(&MemoryLayout::pc(1, layout), Config { nr_cpus: 2, debug_checks: true, ..Config::default() }).unwrap()
}

/// A 64 MiB machine, small enough to run out of.
fn small_machine(layout: MemmapLayout) -> SimMachine {
    let mut l = MemoryLayout::new();
    l.add_region(RegionSpec { start: Pfn(0x1000), end: Pfn(0x1000 + 16384), node: 0, mapped: true, layout }).unwrap();
    boot(&l, Config { nr_cpus: 1, debug_checks: true, ..Config::default() }).unwrap()
}

/// Free pages after returning every cache's empty slabs and every per-CPU page.
fn settled_free(m: &SimMachine, cpu: &Cpu<'_>) -> u64 {
    let mut caches = vec![];
    m.for_each_cache(|c| caches.push(c as *const memdesc::SlabCache as usize));
    for c in caches {
        // SAFETY: caches listed by for_each_cache live as long as the machine (none is
        // destroyed in these tests).
        let c = unsafe { &*(c as *const memdesc::SlabCache) };
        m.shrink_any_cache(cpu, c);
    }
    m.drain_all();
    m.nr_free_pages()
}

#[test]
fn areas_in_both_layouts_free_everything() {
    for layout in [MemmapLayout::Flat, MemmapLayout::TwoLevel] {
        let m = machine(layout);
        let cpu = m.cpus().claim(0).unwrap();
        let mms = m.mm_caches(&cpu).unwrap();
        let kmm = mms.mm_create(&cpu, MmKind::Kernel).unwrap();
        let s = VmallocSpace::new(&m, &cpu, &kmm).unwrap();
        let warm = s.vmalloc::<Unmappable>(&cpu, 1, Gfp::KERNEL).unwrap();
        s.vfree_area(&cpu, warm).unwrap();
        let free0 = settled_free(&m, &cpu);
        let mut areas = vec![];
        for (i, size) in [1usize, 4096, 4097, 100_000, 1 << 20, 3 << 20].into_iter().enumerate() {
            let a = s.vmalloc::<Unmappable>(&cpu, size, Gfp::ZERO).unwrap();
            let pattern: Vec<u8> = (0..size).map(|j| (j * 31 + i) as u8).collect();
            s.write_area(&a, 0, &pattern).unwrap();
            areas.push((a, pattern));
        }
        // Areas are disjoint with a guard page after each, and every page's word names it.
        for w in areas.windows(2) {
            assert!(w[1].0.addr() >= w[0].0.addr() + w[0].0.size() + PAGE_SIZE);
        }
        for (a, pattern) in &areas {
            let mut back = vec![0u8; pattern.len()];
            s.read(a.addr(), &mut back).unwrap();
            assert_eq!(&back, pattern, "{layout:?}");
            for i in 0..a.nr_pages() {
                let pfn = s.vmalloc_to_pfn(a.addr() + i * PAGE_SIZE).unwrap();
                assert_eq!(s.pfn_at(a, i), Ok(pfn));
                let v = m.memmap().load(m.platform(), pfn).unwrap();
                assert_eq!(v.span_order, 0, "vmalloc pages have per-page words, even in two-level regions");
                assert_eq!(v.word.tag(), Some(Tag::VmallocUnmappable));
            }
            let mut seen = vec![];
            s.for_each_page(a.addr(), |i, pfn| seen.push((i, pfn))).unwrap();
            assert_eq!(seen.len(), a.nr_pages());
            for (i, pfn) in seen {
                assert_eq!(s.vmalloc_to_pfn(a.addr() + i * PAGE_SIZE), Ok(pfn));
            }
        }
        for (a, _) in areas {
            s.vfree_area(&cpu, a).unwrap();
        }
        assert_eq!(s.stats().areas, 0);
        assert_eq!(settled_free(&m, &cpu), free0, "{layout:?}: every page came back");
        m.check(|_, _, _| {}).unwrap();
    }
}

#[test]
fn oom_midway_unwinds_everything() {
    for layout in [MemmapLayout::Flat, MemmapLayout::TwoLevel] {
        let m = small_machine(layout);
        let cpu = m.cpus().claim(0).unwrap();
        let mms = m.mm_caches(&cpu).unwrap();
        let kmm = mms.mm_create(&cpu, MmKind::Kernel).unwrap();
        let s = VmallocSpace::new(&m, &cpu, &kmm).unwrap();
        let keep = s.vmalloc::<Mappable>(&cpu, 5 * PAGE_SIZE, Gfp::KERNEL).unwrap();
        let free0 = settled_free(&m, &cpu);
        let live0 = s.stats();
        // More than the machine has: fails after taking thousands of pages.
        let e = s.vmalloc::<Unmappable>(&cpu, 80 << 20, Gfp::NOWARN).unwrap_err();
        assert!(matches!(e, VmallocError::NoMemory(_)), "{e:?}");
        assert_eq!(s.stats(), live0);
        assert_eq!(settled_free(&m, &cpu), free0, "{layout:?}: a failed vmalloc leaks nothing");
        m.check(|_, _, _| {}).unwrap();
        // The machine is still usable, and the survivor intact.
        let big = s.vmalloc::<Unmappable>(&cpu, 16 << 20, Gfp::KERNEL).unwrap();
        s.vfree_area(&cpu, big).unwrap();
        s.vfree_area(&cpu, keep).unwrap();
    }
}

#[test]
fn virtual_space_exhaustion_unwinds_pages() {
    let m = machine(MemmapLayout::Flat);
    let cpu = m.cpus().claim(0).unwrap();
    let mms = m.mm_caches(&cpu).unwrap();
    let kmm = mms.mm_create(&cpu, MmKind::Kernel).unwrap();
    let s = VmallocSpace::with_range(&m, &cpu, &kmm, 0xffff_c900_0000_0000, 16 * PAGE_SIZE).unwrap();
    let a = s.vmalloc::<Unmappable>(&cpu, 7 * PAGE_SIZE, Gfp::KERNEL).unwrap();
    let free0 = settled_free(&m, &cpu);
    // 7 + guard used; 8 left, which holds 7 + guard but not 8 + guard.
    assert_eq!(
        s.vmalloc::<Unmappable>(&cpu, 8 * PAGE_SIZE, Gfp::KERNEL).unwrap_err(),
        VmallocError::NoVirtualSpace { pages: 8 }
    );
    assert_eq!(settled_free(&m, &cpu), free0);
    let b = s.vmalloc::<Unmappable>(&cpu, 7 * PAGE_SIZE, Gfp::KERNEL).unwrap();
    assert_eq!(b.addr(), a.addr() + 8 * PAGE_SIZE);
    // Freeing the first makes room again, first fit.
    s.vfree_area(&cpu, a).unwrap();
    let c = s.vmalloc::<Unmappable>(&cpu, 3 * PAGE_SIZE, Gfp::KERNEL).unwrap();
    assert_eq!(c.addr(), 0xffff_c900_0000_0000);
    s.vfree_area(&cpu, b).unwrap();
    s.vfree_area(&cpu, c).unwrap();
    assert_eq!(
        VmallocSpace::with_range(&m, &cpu, &kmm, 0xffff_c900_0000_1001, PAGE_SIZE).err(),
        Some(VmallocError::BadRange)
    );
    assert_eq!(
        VmallocSpace::with_range(&m, &cpu, &kmm, usize::MAX - 4095, 2 * PAGE_SIZE).err(),
        Some(VmallocError::BadRange)
    );
}

#[test]
fn bad_and_double_vfree_are_refused_precisely() {
    let m = machine(MemmapLayout::TwoLevel);
    let cpu = m.cpus().claim(0).unwrap();
    let mms = m.mm_caches(&cpu).unwrap();
    let kmm = mms.mm_create(&cpu, MmKind::Kernel).unwrap();
    let s = VmallocSpace::new(&m, &cpu, &kmm).unwrap();
    let a = s.vmalloc::<Unmappable>(&cpu, 3 * PAGE_SIZE, Gfp::KERNEL).unwrap();
    let b = s.vmalloc::<Unmappable>(&cpu, PAGE_SIZE, Gfp::KERNEL).unwrap();
    let (va, vb) = (a.addr(), b.addr());
    assert_eq!(vfree(&s, &cpu, va + 5), Err(VmallocError::NotAreaStart { va: va + 5, start: va }));
    assert_eq!(vfree(&s, &cpu, va + 3 * PAGE_SIZE), Err(VmallocError::GuardPage { va: va + 3 * PAGE_SIZE, area: va }));
    assert_eq!(vfree(&s, &cpu, vb + 10 * PAGE_SIZE), Err(VmallocError::NotAllocated(vb + 10 * PAGE_SIZE)));
    assert_eq!(vfree(&s, &cpu, 0x1000), Err(VmallocError::OutOfRange(0x1000)));
    assert_eq!(s.vmalloc_to_pfn(vb + PAGE_SIZE), Err(VmallocError::GuardPage { va: vb + PAGE_SIZE, area: vb }));
    let mut buf = [0u8; 8];
    assert_eq!(s.read(vb + PAGE_SIZE - 4, &mut buf), Err(VmallocError::OutOfBounds { va: vb + PAGE_SIZE - 4, len: 8 }));
    assert_eq!(s.stats().areas, 2, "nothing changed");
    vfree(&s, &cpu, va).unwrap();
    assert_eq!(vfree(&s, &cpu, va), Err(VmallocError::DoubleFree(va)));
    assert_eq!(s.vfree_area(&cpu, a), Err(VmallocError::Stale(va)));
    assert_eq!(s.read(va, &mut buf), Err(VmallocError::NotAllocated(va)));
    // A new area reusing the address: the old start is no longer "double freed".
    let c = s.vmalloc::<Unmappable>(&cpu, PAGE_SIZE, Gfp::KERNEL).unwrap();
    assert_eq!(c.addr(), va);
    s.vfree_area(&cpu, b).unwrap();
    s.vfree_area(&cpu, c).unwrap();
    m.check(|_, _, _| {}).unwrap();
}

#[test]
fn areas_are_mapped_by_kernel_ptes_and_vfree_unmaps_them() {
    for layout in [MemmapLayout::Flat, MemmapLayout::TwoLevel] {
        let m = machine(layout);
        let cpu = m.cpus().claim(0).unwrap();
        let mms = m.mm_caches(&cpu).unwrap();
        let kmm = mms.mm_create(&cpu, MmKind::Kernel).unwrap();
        let s = VmallocSpace::new(&m, &cpu, &kmm).unwrap();
        let a = s.vmalloc::<Mappable>(&cpu, 700 * PAGE_SIZE, Gfp::KERNEL).unwrap();
        let b = s.vmalloc::<Unmappable>(&cpu, 3 * PAGE_SIZE, Gfp::KERNEL).unwrap();
        for (start, n) in [(a.addr(), a.nr_pages()), (b.addr(), b.nr_pages())] {
            let mut seen = vec![];
            s.for_each_page(start, |i, pfn| seen.push((i, pfn))).unwrap();
            for (i, pfn) in seen {
                // The page tables and the page array agree.
                let (e, huge) = kmm.translate((start + i * PAGE_SIZE) as u64).unwrap();
                assert!(!huge && !e.user());
                assert_eq!(e.pfn(), pfn);
                assert_eq!(s.vmalloc_to_pfn(start + i * PAGE_SIZE + 5), Ok(pfn));
            }
            assert_eq!(kmm.translate((start + n * PAGE_SIZE) as u64), None, "guard page unmapped");
        }
        let tables = kmm.mm().pt_pages();
        assert!(tables >= 5, "PGD, PUD, PMD and at least two PTE tables: {tables}");
        s.vfree_area(&cpu, a).unwrap();
        assert!(kmm.mm().pt_pages() < tables, "tables emptied by vfree are freed");
        assert_eq!(kmm.translate(b.addr() as u64).map(|(e, _)| e.pfn()), s.pfn_at(&b, 0).ok());
        s.vfree_area(&cpu, b).unwrap();
        assert_eq!(kmm.mm().pt_pages(), 1, "only the PGD is left");
        assert!(s.destroy(&cpu).is_ok());
        kmm.destroy(&cpu);
        mms.destroy(&cpu).unwrap();
        m.check(|_, _, _| {}).unwrap();
    }
}

#[test]
fn oom_in_page_tables_unwinds_everything() {
    // Leave k pages free (k swept), then vmalloc 3 pages in a fresh kernel address space: for
    // some k the pages fit but the page tables (PUD, PMD, PTE) do not, and that failure must
    // give back every page, descriptor, record and table taken.
    let m = small_machine(MemmapLayout::Flat);
    let cpu = m.cpus().claim(0).unwrap();
    let mms = m.mm_caches(&cpu).unwrap();
    let kmm = mms.mm_create(&cpu, MmKind::Kernel).unwrap();
    let s = VmallocSpace::new(&m, &cpu, &kmm).unwrap();
    let warm = s.vmalloc::<Unmappable>(&cpu, 3 * PAGE_SIZE, Gfp::KERNEL).unwrap();
    s.vfree_area(&cpu, warm).unwrap();
    let free0 = settled_free(&m, &cpu);
    let (mut table_ooms, mut page_ooms, mut ok) = (0, 0, 0);
    for k in 0..24 {
        let mut hog = vec![];
        while let Ok(p) = m.alloc_pages_raw(&cpu, 0, Gfp::NOWARN) {
            hog.push(p);
        }
        for p in hog.drain(hog.len() - k..) {
            free_raw(&m, &cpu, p, 0).unwrap();
        }
        match s.vmalloc::<Unmappable>(&cpu, 3 * PAGE_SIZE, Gfp::NOWARN) {
            Ok(a) => {
                ok += 1;
                s.vfree_area(&cpu, a).unwrap();
            }
            Err(VmallocError::PageTable(MapError::NoMemory(_))) => table_ooms += 1,
            Err(VmallocError::NoMemory(_)) => page_ooms += 1,
            Err(e) => panic!("{e:?}"),
        }
        assert_eq!(s.stats().areas, 0);
        assert_eq!(kmm.mm().pt_pages(), 1, "k = {k}: no table left behind");
        for p in hog {
            free_raw(&m, &cpu, p, 0).unwrap();
        }
        assert_eq!(settled_free(&m, &cpu), free0, "k = {k}: nothing leaked");
    }
    assert!(table_ooms > 0 && page_ooms > 0 && ok > 0, "{page_ooms} {table_ooms} {ok}");
    m.check(|_, _, _| {}).unwrap();
}

#[test]
fn two_threads_allocate_and_free_concurrently() {
    let m = machine(MemmapLayout::Flat);
    let cpu0 = m.cpus().claim(0).unwrap();
    let mms = m.mm_caches(&cpu0).unwrap();
    let kmm = mms.mm_create(&cpu0, MmKind::Kernel).unwrap();
    let s = VmallocSpace::new(&m, &cpu0, &kmm).unwrap();
    drop(cpu0);
    std::thread::scope(|sc| {
        for t in 0..2usize {
            let (m, s) = (&m, &s);
            sc.spawn(move || {
                let cpu = m.cpus().claim(t).unwrap();
                let mut live = vec![];
                for i in 0..200usize {
                    let a = s.vmalloc::<Unmappable>(&cpu, (i % 5 + 1) * PAGE_SIZE, Gfp::KERNEL).unwrap();
                    s.write_area(&a, 0, &[(t * 100 + i) as u8; 64]).unwrap();
                    live.push((a, (t * 100 + i) as u8));
                    if i % 3 == 0 {
                        let (a, v) = live.swap_remove(0);
                        let mut b = [0u8; 64];
                        s.read_area(&a, 0, &mut b).unwrap();
                        assert_eq!(b, [v; 64]);
                        s.vfree_area(&cpu, a).unwrap();
                    }
                }
                for (a, _) in live {
                    s.vfree_area(&cpu, a).unwrap();
                }
            });
        }
    });
    assert_eq!(s.stats().areas, 0);
    assert_eq!(kmm.mm().pt_pages(), 1, "both threads' PTEs and tables are gone");
}

#[test]
fn highmem_pages_are_reached_through_local_mappings() {
    // A pmem-like region with no direct map, in the Movable zone: movable vmalloc pages land
    // there and every byte access goes through a momentary local mapping.
    let mut l = MemoryLayout::new();
    l.add_region(RegionSpec {
        start: Pfn(0x1000),
        end: Pfn(0x5000),
        node: 0,
        mapped: true,
        layout: MemmapLayout::Flat,
    })
    .unwrap();
    l.add_region(RegionSpec {
        start: Pfn(0x10_0000),
        end: Pfn(0x10_2000),
        node: 0,
        mapped: false,
        layout: MemmapLayout::Flat,
    })
    .unwrap();
    l.movable_from(Pfn(0x10_0000));
    let m = boot(&l, Config { nr_cpus: 1, debug_checks: true, ..Config::default() }).unwrap();
    let cpu = m.cpus().claim(0).unwrap();
    let mms = m.mm_caches(&cpu).unwrap();
    let kmm = mms.mm_create(&cpu, MmKind::Kernel).unwrap();
    let s = VmallocSpace::new(&m, &cpu, &kmm).unwrap();
    let a = s.vmalloc::<Mappable>(&cpu, 5 * PAGE_SIZE, Gfp::MOVABLE | Gfp::ZERO).unwrap();
    for i in 0..5 {
        let pfn = s.pfn_at(&a, i).unwrap();
        assert!(pfn >= Pfn(0x10_0000) && memdesc::Platform::direct_map(m.platform(), pfn).is_none());
    }
    let before = m.platform().local_maps();
    let data: Vec<u8> = (0..5 * PAGE_SIZE - 10).map(|i| (i % 253) as u8).collect();
    s.write_area(&a, 10, &data).unwrap();
    let mut back = vec![0u8; data.len()];
    s.read_area(&a, 10, &mut back).unwrap();
    assert_eq!(back, data);
    assert!(m.platform().local_maps() >= before + 10, "one local mapping per page touched");
    s.vfree_area(&cpu, a).unwrap();
    m.check(|_, _, _| {}).unwrap();
}

mod model {
    use super::*;
    use memdesc::vmalloc::{AreaKind, VmArea};
    use proptest::prelude::*;

    const SPACE_PAGES: usize = 256;
    const BASE: usize = 0xffff_c900_0000_0000;

    #[derive(Clone, Debug)]
    enum Op {
        Alloc(usize, bool),
        Free(usize),
        FreeInterior(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (1usize..40, any::<bool>()).prop_map(|(n, m)| Op::Alloc(n, m)),
            3 => any::<usize>().prop_map(Op::Free),
            1 => any::<usize>().prop_map(Op::FreeInterior),
        ]
    }

    /// First fit with one guard page after every area, over sorted (start page, pages).
    fn first_fit(areas: &[(usize, usize)], n: usize) -> Option<usize> {
        let mut cand = 0;
        for &(s, len) in areas {
            // n pages and a guard page fit before the next area.
            if cand + n < s {
                return Some(cand);
            }
            cand = s + len + 1;
        }
        (cand + n < SPACE_PAGES).then_some(cand)
    }

    enum Handle {
        M(VmArea<Mappable>),
        U(VmArea<Unmappable>),
    }

    fn check_area<K: AreaKind>(
        m: &SimMachine,
        s: &VmallocSpace<'_, memdesc_host::SimPlatform>,
        a: &VmArea<K>,
        tag: Tag,
        stamp: u8,
    ) {
        for i in 0..a.nr_pages() {
            let pfn = s.pfn_at(a, i).unwrap();
            assert_eq!(s.vmalloc_to_pfn(a.addr() + i * PAGE_SIZE), Ok(pfn), "kernel PTE {i} matches the array");
            assert_eq!(m.memmap().load(m.platform(), pfn).unwrap().word.tag(), Some(tag));
            let mut b = [0u8; 2];
            s.read_area(a, i * PAGE_SIZE, &mut b).unwrap();
            assert_eq!(b, [stamp, i as u8], "page {i} kept its bytes");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]
        #[test]
        fn vmalloc_matches_first_fit_model(ops in proptest::collection::vec(op(), 1..80)) {
            let m = small_machine(MemmapLayout::Flat);
            let cpu = m.cpus().claim(0).unwrap();
            let mms = m.mm_caches(&cpu).unwrap();
            let kmm = mms.mm_create(&cpu, MmKind::Kernel).unwrap();
            let s = VmallocSpace::with_range(&m, &cpu, &kmm, BASE, SPACE_PAGES * PAGE_SIZE).unwrap();
            let free0 = settled_free(&m, &cpu);
            let mut model: Vec<(usize, usize)> = vec![];
            let mut live: Vec<(Handle, u8)> = vec![];
            for (step, o) in ops.into_iter().enumerate() {
                match o {
                    Op::Alloc(n, mappable) => {
                        let want = first_fit(&model, n);
                        let got = if mappable {
                            s.vmalloc::<Mappable>(&cpu, n * PAGE_SIZE - 1, Gfp::KERNEL).map(Handle::M)
                        } else {
                            s.vmalloc::<Unmappable>(&cpu, n * PAGE_SIZE, Gfp::KERNEL).map(Handle::U)
                        };
                        match (want, got) {
                            (Some(p), Ok(h)) => {
                                let (addr, stamp) = (BASE + p * PAGE_SIZE, step as u8);
                                for i in 0..n {
                                    let w = [stamp, i as u8];
                                    match &h {
                                        Handle::M(a) => { prop_assert_eq!(a.addr(), addr); s.write_area(a, i * PAGE_SIZE, &w).unwrap() }
                                        Handle::U(a) => { prop_assert_eq!(a.addr(), addr); s.write_area(a, i * PAGE_SIZE, &w).unwrap() }
                                    }
                                }
                                model.push((p, n));
                                model.sort();
                                live.push((h, stamp));
                            }
                            (None, Err(e)) => prop_assert_eq!(e, VmallocError::NoVirtualSpace { pages: n }),
                            (w, g) => prop_assert!(false, "model {:?}, got {:?}", w, g.map(|_| ())),
                        }
                    }
                    Op::Free(i) if !live.is_empty() => {
                        let (h, _) = live.swap_remove(i % live.len());
                        let addr = match h {
                            Handle::M(a) => { let x = a.addr(); s.vfree_area(&cpu, a).unwrap(); x }
                            Handle::U(a) => { let x = a.addr(); s.vfree_area(&cpu, a).unwrap(); x }
                        };
                        model.retain(|&(p, _)| BASE + p * PAGE_SIZE != addr);
                    }
                    Op::FreeInterior(i) if !model.is_empty() => {
                        let (p, n) = model[i % model.len()];
                        let start = BASE + p * PAGE_SIZE;
                        let va = start + (i % (n + 1)) * PAGE_SIZE + 8;
                        let e = vfree(&s, &cpu, va).unwrap_err();
                        if va < start + n * PAGE_SIZE {
                            prop_assert_eq!(e, VmallocError::NotAreaStart { va, start });
                        } else {
                            prop_assert_eq!(e, VmallocError::GuardPage { va, area: start });
                        }
                    }
                    _ => {}
                }
                prop_assert_eq!(s.stats().areas, model.len() as u64);
                prop_assert_eq!(s.stats().pages, model.iter().map(|&(_, n)| n as u64).sum::<u64>());
            }
            for (h, stamp) in &live {
                match h {
                    Handle::M(a) => check_area(&m, &s, a, Tag::VmallocMappable, *stamp),
                    Handle::U(a) => check_area(&m, &s, a, Tag::VmallocUnmappable, *stamp),
                }
            }
            for (h, _) in live {
                match h {
                    Handle::M(a) => s.vfree_area(&cpu, a).unwrap(),
                    Handle::U(a) => s.vfree_area(&cpu, a).unwrap(),
                }
            }
            prop_assert_eq!(kmm.mm().pt_pages(), 1, "every table freed with the last area");
            prop_assert_eq!(settled_free(&m, &cpu), free0);
        }
    }
}
