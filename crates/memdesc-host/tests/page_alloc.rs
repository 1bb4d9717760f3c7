//! The page allocator on the simulated machine: behaviour, refused frees, both memmap
//! layouts, unmapped memory, threads, and a property test against a reference model.

use std::collections::HashSet;

use memdesc::base::layout::{MemmapLayout, MemoryLayout, RegionSpec};
use memdesc::memmap::word::{PageKind, Subtype};
use memdesc::Cpu;
use memdesc::{AllocError, Config, FreeError, Gfp, Pfn, ZoneType};
use memdesc_host::{boot, SimMachine};
use proptest::prelude::*;

const LAYOUTS: [MemmapLayout; 2] = [MemmapLayout::Flat, MemmapLayout::TwoLevel];

/// 64 MiB across DMA and DMA32, a hole, and a reserved range: small enough to check fully.
fn small(layout: MemmapLayout) -> MemoryLayout {
    let mut l = MemoryLayout::new();
    l.add_region(RegionSpec { start: Pfn(1), end: Pfn(0x9f), node: 0, mapped: true, layout: MemmapLayout::Flat })
        .unwrap();
    l.add_region(RegionSpec { start: Pfn(0x100), end: Pfn(0x4000), node: 0, mapped: true, layout }).unwrap();
    l.reserve(Pfn(0x100), Pfn(0x180)).unwrap();
    l.reserve(Pfn(0x2345), Pfn(0x2350)).unwrap();
    l
}

fn machine(layout: MemmapLayout) -> SimMachine {
    machine_with(layout, false)
}

/// The machine with CPU-local areas on or off.
fn machine_with(layout: MemmapLayout, cpu_areas: bool) -> SimMachine {
    let m = boot(&small(layout), Config { nr_cpus: 2, debug_checks: true, cpu_areas, ..Config::default() }).unwrap();
    KERNEL.with(|k| k.set(kernel_pages(&m)));
    m
}

/// Pages the machine itself uses right after boot (kmalloc caches' slabs and sheaves).
fn kernel_pages(m: &SimMachine) -> u64 {
    let rep = m.check(|_, _, _| {}).unwrap();
    let managed: u64 = m.zones().map(|z| z.managed_pages()).sum();
    managed - rep.buddy_free_pages - rep.pcp_pages - rep.split_areas
}

/// Checks the allocator and that free blocks and `allocated` never overlap and together with
/// the split-area tables and the kernel's own pages account for every managed page.
fn check_model(m: &SimMachine, allocated: &[(Pfn, u32)]) {
    check_model_with(m, allocated, KERNEL.with(|k| k.get()))
}

thread_local! {
    static KERNEL: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn check_model_with(m: &SimMachine, allocated: &[(Pfn, u32)], kernel: u64) {
    let mut seen = HashSet::new();
    for &(pfn, order) in allocated {
        for i in 0..1u64 << order {
            assert!(seen.insert(pfn.0 + i), "pfn {:#x} allocated twice", pfn.0 + i);
        }
    }
    let rep = m
        .check(|pfn, order, _| {
            for i in 0..1u64 << order {
                assert!(seen.insert(pfn.0 + i), "pfn {:#x} free and allocated, or free twice", pfn.0 + i);
            }
        })
        .unwrap_or_else(|v| panic!("invariant violated: {v}"));
    let managed: u64 = m.zones().map(|z| z.managed_pages()).sum();
    assert_eq!(
        seen.len() as u64 + rep.split_areas + kernel,
        managed,
        "every managed page is free, allocated, a table, or the kernel's"
    );
}

/// Checks the model with `got` allocated, frees it all, drains, and checks the empty model.
fn free_all_and_check(m: &SimMachine, cpu: &Cpu<'_>, got: Vec<(Pfn, u32)>) {
    check_model(m, &got);
    for (p, o) in got {
        free_raw(m, cpu, p, o).unwrap();
    }
    m.drain_all_from(cpu);
    check_model(m, &[]);
}

#[test]
fn alloc_free_all_orders_restores_state() {
    for layout in LAYOUTS {
        let m = machine(layout);
        let cpu = m.cpus().claim(0).unwrap();
        let before = m.nr_free_pages();
        let splits = m.memmap().split_areas();
        let mut got = vec![];
        for order in 0..=10 {
            let pfn = m.alloc_pages_raw(&cpu, order, Gfp::KERNEL).unwrap();
            assert!(pfn.is_aligned(order));
            got.push((pfn, order));
        }
        check_model(&m, &got);
        for (pfn, order) in got {
            free_raw(&m, &cpu, pfn, order).unwrap();
        }
        m.drain_all_from(&cpu);
        check_model(&m, &[]);
        assert_eq!(m.nr_free_pages(), before, "{layout:?}");
        assert_eq!(m.memmap().split_areas(), splits, "only the partly reserved areas stay split");
        assert_eq!(splits > 0, layout == MemmapLayout::TwoLevel);
    }
}

#[test]
fn refused_frees_change_nothing() {
    for layout in LAYOUTS {
        let m = machine(layout);
        let cpu = m.cpus().claim(0).unwrap();
        let a = m.alloc_pages_raw(&cpu, 2, Gfp::KERNEL).unwrap();
        let b = m.alloc_pages_raw(&cpu, 0, Gfp::KERNEL).unwrap();
        let free = m.nr_free_pages();
        assert_eq!(free_raw(&m, &cpu, a.add(1), 0), Err(FreeError::NotHead(a.add(1))));
        assert_eq!(free_raw(&m, &cpu, a, 1), Err(FreeError::WrongOrder { pfn: a, given: 1, allocated: 2 }));
        assert_eq!(free_raw(&m, &cpu, a.add(1), 1), Err(FreeError::Misaligned { pfn: a.add(1), order: 1 }));
        assert_eq!(free_raw(&m, &cpu, Pfn(0x120), 0), Err(FreeError::NotAllocated(Pfn(0x120), Subtype::Reserved)));
        assert_eq!(free_raw(&m, &cpu, Pfn(0x50000), 0), Err(FreeError::OutOfRange(Pfn(0x50000))));
        assert_eq!(free_raw(&m, &cpu, Pfn(0xa0), 0), Err(FreeError::OutOfRange(Pfn(0xa0))), "a hole");
        assert_eq!(m.nr_free_pages(), free, "refused frees leave the allocator untouched");
        free_raw(&m, &cpu, b, 0).unwrap();
        assert_eq!(free_raw(&m, &cpu, b, 0), Err(FreeError::DoubleFree(b)));
        check_model(&m, &[(a, 2)]);
        assert!(m.counters().free_errors >= 7);
    }
}

#[test]
fn exhaustion_is_an_error_and_recovers() {
    for layout in LAYOUTS {
        let m = machine(layout);
        let cpu = m.cpus().claim(0).unwrap();
        let mut got = vec![];
        loop {
            match m.alloc_pages_raw(&cpu, 0, Gfp::KERNEL | Gfp::NOWARN) {
                Ok(p) => got.push((p, 0)),
                Err(e) => {
                    assert_eq!(e, AllocError::NoMemory { order: 0 });
                    break;
                }
            }
        }
        // The min watermark keeps a reserve that only high-priority allocations may dip into.
        let high = m.alloc_pages_raw(&cpu, 0, Gfp::ATOMIC).expect("atomic reserve");
        got.push((high, 0));
        assert!(m.counters().alloc_fail_quiet >= 1);
        assert_eq!(m.alloc_pages_raw(&cpu, 30, Gfp::KERNEL), Err(AllocError::InvalidOrder(30)));
        free_all_and_check(&m, &cpu, got);
    }
}

#[test]
fn zones_and_migratetypes() {
    let m = machine(MemmapLayout::Flat);
    let cpu = m.cpus().claim(0).unwrap();
    let dma = m.alloc_pages_raw(&cpu, 0, Gfp::DMA).unwrap();
    assert!(dma < Pfn(0x1000), "DMA allocations come from below 16 MiB");
    let zone_of = |p: Pfn| m.memmap().region_of(p).unwrap().zone;
    assert_eq!(zone_of(dma), ZoneType::Dma);
    let k = m.alloc_pages_raw(&cpu, 0, Gfp::KERNEL).unwrap();
    assert_eq!(zone_of(k), ZoneType::Dma32, "kernel memory prefers the highest allowed zone");
    // Unmovable and movable allocations land in different pageblocks.
    let u: Vec<_> = (0..64).map(|_| m.alloc_pages_raw(&cpu, 0, Gfp::KERNEL).unwrap()).collect();
    let mv: Vec<_> = (0..64).map(|_| m.alloc_pages_raw(&cpu, 0, Gfp::MOVABLE).unwrap()).collect();
    let blocks = |v: &[Pfn]| v.iter().map(|p| p.0 >> 9).collect::<HashSet<_>>();
    assert!(blocks(&u).is_disjoint(&blocks(&mv)), "unmovable memory stole its own pageblocks");
    let mut ti = String::new();
    m.write_pagetypeinfo(&mut ti).unwrap();
    assert!(ti.contains("type    Unmovable") && ti.contains("Page block order: 9"));
    let mut bi = String::new();
    m.write_buddyinfo(&mut bi).unwrap();
    assert!(bi.starts_with("Node 0, zone      DMA"), "{bi}");
    assert_eq!(bi.lines().count(), 2);
}

/// A free order-1 block on a buddy list of a flat region keeps both its links in its words
/// (the next in its tail word, the previous in its `BuddyLinked` head word), none in its
/// memory: the test overwrites the first bytes of every such block and the lists stay intact
/// through the checker's walk and through merges that unlink the blocks from the middle.
#[test]
fn flat_order1_blocks_link_through_their_words() {
    use memdesc::memmap::word::Tag;
    use memdesc::Platform;
    let m = machine(MemmapLayout::Flat);
    let cpu = m.cpus().claim(0).unwrap();
    let got: Vec<Pfn> = (0..64).map(|_| m.alloc_pages_raw(&cpu, 1, Gfp::KERNEL).unwrap()).collect();
    let held: HashSet<Pfn> = got.iter().copied().collect();
    // Free the lower block of every pair of buddies both held: its buddy stays allocated, so
    // once the per-CPU lists are drained it is an order-1 block on a buddy list.
    let freed: Vec<Pfn> = got.iter().copied().filter(|&p| p.0 & 2 == 0 && held.contains(&Pfn(p.0 | 2))).collect();
    assert!(freed.len() >= 8, "only {} buddy pairs among 64 order-1 allocations", freed.len());
    for &p in &freed {
        free_raw(&m, &cpu, p, 1).unwrap();
    }
    m.drain_all_from(&cpu);
    for &p in &freed {
        let head = m.memmap().load(m.platform(), p).unwrap().word;
        assert_eq!(head.tag(), Some(Tag::BuddyLinked), "pfn {p:?}");
        assert!(matches!(head.kind(), PageKind::Buddy(b) if b.order == 1 && !b.pcp));
        let tail = m.memmap().load(m.platform(), p.add(1)).unwrap().word;
        assert!(tail.is_tail());
        if let Some(next) = tail.tail_link() {
            let w = m.memmap().load(m.platform(), Pfn(next)).unwrap().word;
            assert!(matches!(w.kind(), PageKind::Buddy(b) if b.order == 1), "next of {p:?} is {next:#x}: {w:?}");
        }
        // Overwrite what would be the links if they lived in the free memory.
        for q in [p, p.add(1)] {
            let words = m.platform().direct_map(q).unwrap().as_ptr() as *mut u64;
            for i in 0..2 {
                // SAFETY: the simulated memory of a free block that this test overwrites on
                // purpose: the allocator keeps nothing there.
                unsafe { words.add(i).write(0x5a5a_5a5a_5a5a_5a5a ^ q.0) };
            }
        }
    }
    let live: Vec<(Pfn, u32)> = got.iter().filter(|p| !freed.contains(p)).map(|&p| (p, 1)).collect();
    check_model(&m, &live);
    // Freeing the partners merges every freed block, unlinking it from the middle of its list.
    free_all_and_check(&m, &cpu, live);
}

#[test]
fn two_level_split_and_unsplit() {
    let m = boot(&MemoryLayout::pc(1, MemmapLayout::TwoLevel), Config::default()).unwrap();
    KERNEL.with(|k| k.set(kernel_pages(&m)));
    let cpu = m.cpus().claim(0).unwrap();
    let splits_at_boot = m.memmap().split_areas();
    let bytes_at_boot = m.memmap().bytes();
    // Small blocks left in areas split at boot go first; keep allocating until one carves a
    // fresh area.
    let mut got = vec![];
    while m.memmap().split_areas() == splits_at_boot {
        got.push(m.alloc_pages_raw(&cpu, 4, Gfp::MOVABLE).unwrap());
    }
    let p = *got.last().unwrap();
    assert_eq!(m.memmap().split_areas(), splits_at_boot + 1, "a small allocation splits one area");
    assert_eq!(m.memmap().bytes(), bytes_at_boot + 4096);
    let v = m.memmap().load(m.platform(), p).unwrap();
    assert_eq!(v.span_order, 0);
    assert!(matches!(v.word.kind(), PageKind::Undescribed(u) if u.subtype == Subtype::Unmappable && u.order == 4));
    let table = p.align_down(9);
    assert!(
        matches!(m.memmap().load(m.platform(), table).unwrap().word.kind(), PageKind::Undescribed(u) if u.subtype == Subtype::Memmap)
    );
    for q in got {
        free_raw(&m, &cpu, q, 4).unwrap();
    }
    m.drain_all_from(&cpu);
    assert_eq!(m.memmap().split_areas(), splits_at_boot, "the area is uniform again");
    assert_eq!(m.memmap().bytes(), bytes_at_boot);
    let v = m.memmap().load(m.platform(), p).unwrap();
    assert_eq!(v.span_order, 9, "one word describes the whole area again");
    // A 2 MiB allocation never splits anything.
    let big = m.alloc_pages_raw(&cpu, 9, Gfp::MOVABLE).unwrap();
    assert_eq!(m.memmap().split_areas(), splits_at_boot);
    free_raw(&m, &cpu, big, 9).unwrap();
    check_model(&m, &[]);
}

#[test]
fn unmapped_memory_uses_local_mappings() {
    let mut l = small(MemmapLayout::Flat);
    // A pmem-like region with no direct map, in the Movable zone.
    l.add_region(RegionSpec {
        start: Pfn(0x10_0000),
        end: Pfn(0x10_4000),
        node: 0,
        mapped: false,
        layout: MemmapLayout::Flat,
    })
    .unwrap();
    l.movable_from(Pfn(0x10_0000));
    let m = boot(&l, Config::default()).unwrap();
    KERNEL.with(|k| k.set(kernel_pages(&m)));
    let cpu = m.cpus().claim(0).unwrap();
    let before = m.platform().local_maps();
    assert!(before > 0, "booting linked free blocks through local mappings");
    let mut got = vec![];
    for order in [0, 3, 5] {
        let p = m.alloc_pages_raw(&cpu, order, Gfp::MOVABLE | Gfp::ZERO).unwrap();
        assert!(p >= Pfn(0x10_0000), "movable memory comes from the Movable zone");
        assert!(m.platform().direct_map(p).is_none());
        got.push((p, order));
    }
    assert!(m.platform().local_maps() > before);
    check_model(&m, &got);
    for (p, o) in got {
        free_raw(&m, &cpu, p, o).unwrap();
    }
    check_model(&m, &[]);
    let z = m.zones().find(|z| z.zone_type() == ZoneType::Movable).unwrap();
    assert_eq!(z.free_pages(), 0x4000);
}

/// Kernel allocations never come from memory without a direct map (as Linux keeps
/// GFP_KERNEL out of ZONE_HIGHMEM). Before the fix a KERNEL allocation was served from a
/// `mapped: false` zone, and creating a slab cache with only unmapped memory free panicked
/// at `expect("kernel memory is direct-mapped")` (slab.rs), as the bare-metal kernel found.
#[test]
fn regression_kernel_allocs_never_unmapped() {
    let mut l = small(MemmapLayout::Flat);
    // Highmem-like: node 0's Normal zone, the first zone a KERNEL allocation tries, has no
    // direct map.
    l.add_region(RegionSpec {
        start: Pfn(0x10_0000),
        end: Pfn(0x10_4000),
        node: 0,
        mapped: false,
        layout: MemmapLayout::Flat,
    })
    .unwrap();
    let m = boot(&l, Config { nr_cpus: 1, debug_checks: true, ..Config::default() }).unwrap();
    let cpu = m.cpus().claim(0).unwrap();
    let unmapped = |p: Pfn| p >= Pfn(0x10_0000);
    let normal = m.zones().find(|z| z.zone_type() == ZoneType::Normal).unwrap();
    assert!(!normal.direct_mapped());
    // Take every page: kernel memory first (never unmapped), then the rest as movable.
    // Atomic ones dip below the min watermark, so they come last.
    let mut held = vec![];
    for gfp in [Gfp::KERNEL, Gfp::ATOMIC] {
        while let Ok(p) = m.alloc_pages_raw(&cpu, 0, gfp) {
            assert!(!unmapped(p) && m.platform().direct_map(p).is_some(), "kernel page {p} without a direct map");
            held.push(p);
        }
    }
    let mut movable = vec![];
    while let Ok(p) = m.alloc_pages_raw(&cpu, 0, Gfp::MOVABLE) {
        movable.push(p);
    }
    assert!(movable.iter().filter(|p| unmapped(**p)).count() >= 0x3000, "movable memory uses the unmapped zone");
    // Give back only the unmapped memory.
    for p in movable {
        if unmapped(p) {
            free_raw(&m, &cpu, p, 0).unwrap();
        } else {
            held.push(p);
        }
    }
    // Kernel users get a clean error instead of unmapped memory (or a panic).
    assert!(matches!(
        m.create_cache(&cpu, memdesc::slab::CacheArgs::new("regression", 64)),
        Err(AllocError::NoMemory { .. })
    ));
    assert!(matches!(m.kmalloc(&cpu, 3 * 4096, Gfp::MOVABLE), Err(AllocError::NoMemory { .. })));
    for gfp in [Gfp::KERNEL, Gfp::RECLAIMABLE, Gfp::ATOMIC, Gfp::KERNEL | Gfp::ZERO] {
        assert_eq!(m.alloc_pages_raw(&cpu, 0, gfp), Err(AllocError::NoMemory { order: 0 }), "{gfp:?}");
    }
    // Movable allocations may still use it (through local mappings).
    let p = m.alloc_pages_raw(&cpu, 0, Gfp::MOVABLE | Gfp::ZERO).unwrap();
    assert!(unmapped(p));
    free_raw(&m, &cpu, p, 0).unwrap();
    // With mapped memory back, kernel allocations work again.
    for p in held {
        free_raw(&m, &cpu, p, 0).unwrap();
    }
    let c = m.create_cache(&cpu, memdesc::slab::CacheArgs::new("regression", 64)).unwrap();
    m.destroy_cache(&cpu, c).unwrap();
    m.check(|_, _, _| {}).unwrap();
}

use memdesc::Platform;

mod common;
#[allow(unused_imports)]
use common::*;

#[test]
fn two_cpus_in_parallel() {
    for (layout, areas) in LAYOUTS.into_iter().flat_map(|l| [(l, false), (l, true)]) {
        let m = machine_with(layout, areas);
        std::thread::scope(|s| {
            for id in 0..2 {
                let m = &m;
                s.spawn(move || {
                    let cpu: Cpu<'_> = m.cpus().claim(id).unwrap();
                    let mut live = vec![];
                    let mut x = 12345u64 + id as u64;
                    // Orders above 3 bypass the per-CPU lists and race on the zone lists
                    // (this caught a block looking free between rmqueue and its stamp).
                    for _ in 0..60_000 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        if live.len() < 200 && !x.is_multiple_of(3) {
                            let order = (x >> 8) as u32 % 8;
                            if let Ok(p) = m.alloc_pages_raw(&cpu, order, Gfp::KERNEL) {
                                live.push((p, order));
                            }
                        } else if let Some((p, o)) = live.pop() {
                            free_raw(m, &cpu, p, o).unwrap();
                        }
                    }
                    for (p, o) in live {
                        free_raw(m, &cpu, p, o).unwrap();
                    }
                });
            }
        });
        check_model(&m, &[]);
    }
}

#[derive(Clone, Debug)]
enum Op {
    Alloc { order: u32, gfp: u8, cpu: usize },
    Free { index: usize, cpu: usize },
    Drain,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0u32..=10, 0u8..5, 0usize..2).prop_map(|(order, gfp, cpu)| Op::Alloc { order, gfp, cpu }),
        4 => (any::<usize>(), 0usize..2).prop_map(|(index, cpu)| Op::Free { index, cpu }),
        1 => Just(Op::Drain),
    ]
}

fn gfp(i: u8) -> Gfp {
    [Gfp::KERNEL, Gfp::MOVABLE, Gfp::RECLAIMABLE, Gfp::DMA32, Gfp::ATOMIC][i as usize]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random alloc/free sequences across zones, orders and flags, checked after every step
    /// against a reference model, for both memmap layouts.
    #[test]
    fn matches_reference_model(
        ops in prop::collection::vec(op(), 1..120),
        two_level in any::<bool>(),
        areas in any::<bool>(),
    ) {
        let layout = if two_level { MemmapLayout::TwoLevel } else { MemmapLayout::Flat };
        let m = machine_with(layout, areas);
        let cpus = [m.cpus().claim(0).unwrap(), m.cpus().claim(1).unwrap()];
        let managed_free = m.nr_free_pages();
        let mut live: Vec<(Pfn, u32)> = vec![];
        for op in ops {
            match op {
                Op::Alloc { order, gfp: g, cpu } => {
                    if let Ok(p) = m.alloc_pages_raw(&cpus[cpu], order, gfp(g)) {
                        prop_assert!(p.is_aligned(order));
                        live.push((p, order));
                    }
                }
                Op::Free { index, cpu } => {
                    if !live.is_empty() {
                        let (p, o) = live.swap_remove(index % live.len());
                        prop_assert_eq!(free_raw(&m, &cpus[cpu], p, o), Ok(()));
                        prop_assert_eq!(free_raw(&m, &cpus[cpu], p, o), Err(FreeError::DoubleFree(p)));
                    }
                }
                Op::Drain => cpus.iter().for_each(|c| m.drain_local(c)),
            }
            check_model(&m, &live);
        }
        for (p, o) in live.drain(..) {
            prop_assert_eq!(free_raw(&m, &cpus[0], p, o), Ok(()));
        }
        cpus.iter().for_each(|c| m.drain_local(c));
        check_model(&m, &[]);
        prop_assert_eq!(m.nr_free_pages(), managed_free);
    }
}

#[test]
fn two_nodes_fall_back_across_nodes() {
    let mut l = MemoryLayout::new();
    l.add_region(RegionSpec {
        start: Pfn(0x1_0000),
        end: Pfn(0x1_2000),
        node: 0,
        mapped: true,
        layout: MemmapLayout::Flat,
    })
    .unwrap();
    l.add_region(RegionSpec {
        start: Pfn(0x2_0000),
        end: Pfn(0x2_2000),
        node: 1,
        mapped: true,
        layout: MemmapLayout::TwoLevel,
    })
    .unwrap();
    let m = boot(&l, Config { nr_cpus: 1, debug_checks: true, ..Config::default() }).unwrap();
    KERNEL.with(|k| k.set(kernel_pages(&m)));
    assert_eq!(m.zones().filter(|z| z.node() == 1).count(), 1);
    let cpu = m.cpus().claim(0).unwrap();
    let mut got = vec![];
    let mut nodes = HashSet::new();
    while let Ok(p) = m.alloc_pages_raw(&cpu, 3, Gfp::KERNEL | Gfp::NOWARN) {
        nodes.insert(m.memmap().region_of(p).unwrap().node);
        got.push((p, 3));
    }
    assert_eq!(nodes.len(), 2, "node 0 exhausted, then node 1 serves");
    free_all_and_check(&m, &cpu, got);
}

#[test]
fn pfn_walk_covers_every_present_page_once() {
    for layout in LAYOUTS {
        let m = machine(layout);
        let cpu = m.cpus().claim(0).unwrap();
        let raw_heads = |m: &SimMachine| {
            let mut n = 0;
            m.memmap().walk(m.platform(), Pfn(0), Pfn(0x5000), |v| {
                n += matches!(v.word.kind(), PageKind::Undescribed(u) if u.subtype == Subtype::Unmappable) as u32;
            });
            n
        };
        let kernel_raw = raw_heads(&m);
        let held: Vec<_> = (0..5).map(|o| m.alloc_pages_raw(&cpu, o, Gfp::MOVABLE).unwrap()).collect();
        let mut covered = 0u64;
        let mut last_end = Pfn(0);
        let (mut unsplit, mut allocated_heads) = (0, 0);
        m.memmap().walk(m.platform(), Pfn(0), Pfn(0x5000), |v| {
            assert!(v.first >= last_end, "walk goes forward and never repeats a pfn");
            last_end = v.first.add(1 << v.span_order);
            covered += 1 << v.span_order;
            unsplit += (v.span_order == 9) as u32;
            if let PageKind::Undescribed(u) = v.word.kind() {
                allocated_heads += (u.subtype == Subtype::Unmappable) as u32;
            }
        });
        assert_eq!(covered, 0x9e + (0x4000 - 0x100), "holes skipped, every present pfn once");
        assert_eq!(allocated_heads, kernel_raw + 5);
        assert_eq!(unsplit > 0, layout == MemmapLayout::TwoLevel, "unsplit areas are stepped over whole");
        // word -> pfn range: an allocation's head word covers its block.
        for (o, &p) in held.iter().enumerate() {
            let v = m.memmap().load(m.platform(), p).unwrap();
            assert_eq!((v.first, v.span_order), (p, 0));
            assert!(matches!(v.word.kind(), PageKind::Undescribed(u) if u.order as usize == o));
            if o > 0 {
                assert!(m.memmap().load(m.platform(), p.add(1)).unwrap().word.is_tail());
            }
            free_raw(&m, &cpu, p, o as u32).unwrap();
        }
    }
}
