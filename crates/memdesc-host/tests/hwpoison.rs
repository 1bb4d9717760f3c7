//! hwpoison and reserved ranges on the simulated machine: one test per kind of page
//! `memory_failure` handles, the poisoned page never handed out again, unpoison, and the census
//! accounting every page exactly once.

use memdesc::cpu::Cpu;
use memdesc::desc::Folio;
use memdesc::folio::FolioKind;
use memdesc::hwpoison::{PoisonAction, PoisonError, PoisonedKind};
use memdesc::word::{PageKind, Subtype, Tag};
use memdesc::{AllocError, CacheArgs, Config, FreeError, Gfp, MemmapLayout, MemoryLayout, Pfn, Platform, RegionSpec};
use memdesc_host::{boot, SimMachine};

/// One 64 MiB flat region at 16 MiB (zone DMA32) with a reserved firmware range inside.
fn layout() -> MemoryLayout {
    let mut l = MemoryLayout::new();
    l.add_region(RegionSpec {
        start: Pfn(0x1000),
        end: Pfn(0x5000),
        node: 0,
        mapped: true,
        layout: MemmapLayout::Flat,
    })
    .unwrap();
    l.reserve(Pfn(0x1100), Pfn(0x1108)).unwrap();
    l
}

fn machine() -> SimMachine {
    boot(&layout(), Config { nr_cpus: 2, debug_checks: true, ..Config::default() }).unwrap()
}

fn subtype(m: &SimMachine, pfn: Pfn) -> Option<Subtype> {
    match m.memmap().load(m.platform(), pfn)?.word.kind() {
        PageKind::Undescribed(u) => Some(u.subtype),
        _ => None,
    }
}

fn write(m: &SimMachine, pfn: Pfn, v: u8) {
    let p = m.platform().direct_map(pfn).unwrap();
    // SAFETY: the page is allocated to the test and direct-mapped.
    unsafe { std::ptr::write_bytes(p.as_ptr(), v, 4096) };
}

fn read(m: &SimMachine, pfn: Pfn) -> u8 {
    let p = m.platform().direct_map(pfn).unwrap();
    // SAFETY: as above.
    unsafe { *p.as_ptr().add(100) }
}

/// Allocates every order-0 page it can, checks none is `pfn`, frees them all.
fn never_handed_out(m: &SimMachine, cpu: &Cpu<'_>, pfn: Pfn) {
    let mut all = Vec::new();
    loop {
        match m.alloc_pages(cpu, 0, Gfp::HIGH | Gfp::NOWARN) {
            Ok(p) => all.push(p),
            Err(AllocError::NoMemory { .. }) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(all.len() > 10_000);
    assert!(!all.contains(&pfn), "a poisoned page was handed out");
    for p in all {
        m.free_pages(cpu, p, 0).unwrap();
    }
}

fn check_all(m: &SimMachine, poisoned: &[Pfn]) {
    m.check(|p, o, _| {
        for &x in poisoned {
            assert!(!(p <= x && x < p.add(1 << o)), "poisoned {x} inside free block {p}/{o}");
        }
    })
    .unwrap();
    let c = m.census().unwrap();
    assert_eq!(c.hwpoison, m.undescribed_stats().hwpoison_pages);
}

#[test]
fn reserved_ranges_are_reported_never_allocated_and_refuse_free() {
    let m = machine();
    let cpu = m.cpus().claim(0).unwrap();
    let mut ranges = Vec::new();
    let n = m.reserved_ranges(|s, e| ranges.push((s, e)));
    assert_eq!(n, m.reserved_pages());
    assert!(ranges.contains(&(Pfn(0x1100), Pfn(0x1108))), "{ranges:x?}");
    assert_eq!(ranges.iter().map(|(s, e)| e.0 - s.0).sum::<u64>(), n);
    for &(s, e) in &ranges {
        for p in s.0..e.0 {
            assert_eq!(subtype(&m, Pfn(p)), Some(Subtype::Reserved));
            assert_eq!(m.free_pages(&cpu, Pfn(p), 0), Err(FreeError::NotAllocated(Pfn(p), Subtype::Reserved)));
        }
    }
    m.check(|p, o, _| {
        for &(s, e) in &ranges {
            assert!(p.add(1 << o) <= s || e <= p, "free block {p}/{o} overlaps reserved {s}..{e}");
        }
    })
    .unwrap();
    // buddyinfo counts exactly the free blocks check() walked, none of them reserved.
    for z in m.zones() {
        let blocks = m.free_blocks(z);
        let pages: u64 = blocks.iter().enumerate().map(|(o, per)| per.iter().sum::<u64>() << o).sum();
        assert_eq!(pages, z.free_pages());
    }
    assert_eq!(m.census().unwrap().reserved, n);
    never_handed_out(&m, &cpu, Pfn(0x1100));
    // A reserved page is kernel memory: memory_failure leaves it in place.
    let r = m.memory_failure(&cpu, Pfn(0x1104)).unwrap();
    assert_eq!(r.action, PoisonAction::Ignored);
    assert_eq!(r.kind, PoisonedKind::Undescribed(Subtype::Reserved));
    assert_eq!(subtype(&m, Pfn(0x1104)), Some(Subtype::Reserved));
}

#[test]
fn free_page_inside_a_large_block_is_carved_out() {
    let m = machine();
    let cpu = m.cpus().claim(0).unwrap();
    m.drain_all();
    let free0 = m.nr_free_pages();
    // A pfn in the middle of a free max-order block.
    let mut target = None;
    m.check(|p, o, pcp| {
        if o == 10 && !pcp && target.is_none() {
            target = Some(p.add(333));
        }
    })
    .unwrap();
    let pfn = target.unwrap();
    assert_eq!(m.free_block_containing_pfn(pfn).map(|b| b.1), Some(10));
    let r = m.memory_failure(&cpu, pfn).unwrap();
    assert_eq!((r.kind, r.action, r.pages_lost), (PoisonedKind::Free, PoisonAction::Recovered, 1));
    assert_eq!(subtype(&m, pfn), Some(Subtype::HwPoison));
    assert_eq!(m.nr_free_pages(), free0 - 1);
    assert_eq!(m.memory_failure(&cpu, pfn), Err(PoisonError::AlreadyPoisoned(pfn)));
    check_all(&m, &[pfn]);
    never_handed_out(&m, &cpu, pfn);
    assert_eq!(m.undescribed_stats().hwpoison_pages, 1);
    m.unpoison(&cpu, pfn).unwrap();
    assert_eq!(m.unpoison(&cpu, pfn), Err(PoisonError::NotPoisoned(pfn)));
    m.drain_all();
    assert_eq!(m.nr_free_pages(), free0);
    assert_eq!(m.undescribed_stats().hwpoison_pages, 0);
    check_all(&m, &[]);
}

#[test]
fn free_page_on_a_per_cpu_list_is_drained_first() {
    let m = machine();
    let cpu = m.cpus().claim(0).unwrap();
    let a = m.alloc_pages(&cpu, 0, Gfp::KERNEL).unwrap();
    m.free_pages(&cpu, a, 0).unwrap();
    assert!(matches!(m.memmap().load(m.platform(), a).unwrap().word.kind(), PageKind::Buddy(b) if b.pcp));
    let r = m.memory_failure(&cpu, a).unwrap();
    assert_eq!((r.kind, r.action), (PoisonedKind::FreePerCpu, PoisonAction::Recovered));
    assert_eq!(m.pcp_pages(), 0);
    check_all(&m, &[a]);
    never_handed_out(&m, &cpu, a);
}

#[test]
fn unmapped_anon_large_folio_is_split_and_only_the_page_is_lost() {
    let m = machine();
    let cpu = m.cpus().claim(0).unwrap();
    let f = m.folio_alloc(&cpu, 3, Gfp::MOVABLE, FolioKind::Anon).unwrap();
    let base = f.flags.pfn();
    for i in 0..8 {
        write(&m, base.add(i), i as u8 + 1);
    }
    m.lru_add(f);
    let bad = base.add(5);
    let r = m.memory_failure(&cpu, bad).unwrap();
    assert_eq!(r.kind, PoisonedKind::AnonFolio { order: 3 });
    assert!(r.split);
    assert_eq!(r.action, PoisonAction::Delayed, "the owner still holds its reference");
    assert_eq!(m.undescribed_stats().hwpoison_delayed, 1);
    // The owner drops every piece (it owns each after the split).
    let mut pieces: Vec<&Folio> = Vec::new();
    for i in 0..8 {
        let p = base.add(i);
        if let PageKind::AnonFolio(d) = m.memmap().load(m.platform(), p).unwrap().word.kind() {
            // SAFETY: the owner holds a reference to every piece.
            let pf = unsafe { &*(d.addr() as *const Folio) };
            assert_eq!(pf.flags.order(), 0);
            if p != bad {
                assert_eq!(read(&m, p), i as u8 + 1, "data of the other pages intact");
            }
            pieces.push(pf);
        }
    }
    assert_eq!(pieces.len(), 8);
    for pf in pieces {
        m.lru_del(pf);
        assert_eq!(m.folio_put(&cpu, pf), Ok(true));
    }
    assert_eq!(subtype(&m, bad), Some(Subtype::HwPoison));
    assert_eq!(m.undescribed_stats().hwpoison_delayed, 0);
    assert_eq!(m.undescribed_stats().hwpoison_pages, 1);
    check_all(&m, &[bad]);
    never_handed_out(&m, &cpu, bad);
}

#[test]
fn page_cache_large_folio_keeps_its_other_pages_cached() {
    let m = machine();
    let cpu = m.cpus().claim(0).unwrap();
    let space = m.address_space_create(&cpu).unwrap();
    let f = m.folio_alloc(&cpu, 2, Gfp::MOVABLE, FolioKind::File).unwrap();
    let base = f.flags.pfn();
    for i in 0..4 {
        write(&m, base.add(i), 0x40 + i as u8);
    }
    space.insert(&cpu, f, 8).unwrap();
    m.folio_put(&cpu, f).unwrap(); // the cache's reference is the only one
    let bad = base.add(2);
    let r = m.memory_failure(&cpu, bad).unwrap();
    assert_eq!(r.kind, PoisonedKind::FileFolio { order: 2, index: 10, mapping: space.space().addr() });
    assert_eq!(r.action, PoisonAction::Recovered);
    assert!(r.split);
    assert_eq!(subtype(&m, bad), Some(Subtype::HwPoison));
    assert!(space.lookup(&cpu, 10).is_none(), "the poisoned index left the cache");
    for idx in [8u64, 9, 11] {
        let g = space.lookup(&cpu, idx).expect("other pages stay cached");
        assert_eq!(read(&m, g.flags.pfn()), 0x40 + (idx - 8) as u8);
        m.folio_put(&cpu, g).unwrap();
    }
    assert_eq!(space.nr_pages(), 3);
    space.verify().unwrap();
    check_all(&m, &[bad]);
    // An order-0 cached folio with an extra reference: removed now, retired at the last put.
    let g = m.folio_alloc(&cpu, 0, Gfp::MOVABLE, FolioKind::File).unwrap();
    space.insert(&cpu, g, 100).unwrap();
    let r = m.memory_failure(&cpu, g.flags.pfn()).unwrap();
    assert_eq!(r.action, PoisonAction::Delayed);
    assert!(space.lookup(&cpu, 100).is_none());
    let gp = g.flags.pfn();
    assert_eq!(m.folio_put(&cpu, g), Ok(true));
    assert_eq!(subtype(&m, gp), Some(Subtype::HwPoison));
    space.destroy(&cpu);
    check_all(&m, &[bad, gp]);
    never_handed_out(&m, &cpu, bad);
}

#[test]
fn slab_page_reports_its_cache_and_is_never_reused() {
    let m = machine();
    let cpu = m.cpus().claim(0).unwrap();
    let c = m.create_cache(&cpu, CacheArgs::new("poison_test", 256)).unwrap();
    let objs: Vec<_> = (0..8).map(|_| c.alloc(&cpu).unwrap()).collect();
    let pfn = m.platform().virt_to_pfn(objs[0]).unwrap();
    let same: Vec<_> = objs.iter().filter(|o| m.platform().virt_to_pfn(**o) == Some(pfn)).copied().collect();
    let r = m.memory_failure(&cpu, pfn).unwrap();
    match r.kind {
        PoisonedKind::Slab { cache, objects_in_use, objects } => {
            assert_eq!(cache, "poison_test");
            assert!(objects_in_use >= same.len() as u32 && objects_in_use <= objects);
        }
        k => panic!("{k:?}"),
    }
    assert_eq!(r.action, PoisonAction::Delayed);
    assert_eq!(m.memory_failure(&cpu, pfn), Err(PoisonError::AlreadyPoisoned(pfn)));
    // New objects never come from the poisoned slab (it left the partial list).
    let more: Vec<_> = (0..64).map(|_| c.alloc(&cpu).unwrap()).collect();
    assert!(more.iter().all(|o| m.platform().virt_to_pfn(*o) != Some(pfn)));
    for o in objs.iter().chain(more.iter()) {
        c.free(&cpu, *o).unwrap();
    }
    m.shrink_cache(&cpu, &c);
    assert_eq!(subtype(&m, pfn), Some(Subtype::HwPoison), "the emptied poisoned slab is retired");
    check_all(&m, &[pfn]);
    let fresh: Vec<_> = (0..200).map(|_| c.alloc(&cpu).unwrap()).collect();
    assert!(fresh.iter().all(|o| m.platform().virt_to_pfn(*o) != Some(pfn)));
    for o in fresh {
        c.free(&cpu, o).unwrap();
    }
    never_handed_out(&m, &cpu, pfn);
}

#[test]
fn raw_kernel_memory_is_ignored_and_mapped_or_foreign_kinds_are_typed_errors() {
    let m = machine();
    let cpu = m.cpus().claim(0).unwrap();
    let raw = m.alloc_pages(&cpu, 2, Gfp::KERNEL).unwrap();
    for p in [raw, raw.add(3)] {
        let r = m.memory_failure(&cpu, p).unwrap();
        assert_eq!((r.kind, r.action), (PoisonedKind::Undescribed(Subtype::Unmappable), PoisonAction::Ignored));
    }
    m.free_pages(&cpu, raw, 2).unwrap();
    assert_eq!(m.undescribed_stats().hwpoison_ignored, 2);
    assert_eq!(m.memory_failure(&cpu, Pfn(0x9_0000)), Err(PoisonError::OutOfRange(Pfn(0x9_0000))));
    assert_eq!(m.unpoison(&cpu, raw), Err(PoisonError::NotPoisoned(raw)));
    check_all(&m, &[]);
    let _ = Tag::Zsmalloc; // zsmalloc/page tables: unit tests in the crate build those words
}

#[test]
fn empty_slab_whose_objects_sit_in_a_sheaf_is_retired_at_once() {
    let m = machine();
    let cpu = m.cpus().claim(0).unwrap();
    let c = m.create_cache(&cpu, CacheArgs::new("poison_empty", 512)).unwrap();
    let o = c.alloc(&cpu).unwrap();
    let pfn = m.platform().virt_to_pfn(o).unwrap();
    c.free(&cpu, o).unwrap(); // back in this CPU's sheaf: the slab still counts it in use
    let r = m.memory_failure(&cpu, pfn).unwrap();
    assert_eq!(r.kind, PoisonedKind::Slab { cache: "poison_empty", objects_in_use: 0, objects: r_objects(&r) });
    assert_eq!(r.action, PoisonAction::Recovered);
    assert_eq!(subtype(&m, pfn), Some(Subtype::HwPoison));
    check_all(&m, &[pfn]);
    let more: Vec<_> = (0..100).map(|_| c.alloc(&cpu).unwrap()).collect();
    assert!(more.iter().all(|o| m.platform().virt_to_pfn(*o) != Some(pfn)));
    for o in more {
        c.free(&cpu, o).unwrap();
    }
}

fn r_objects(r: &memdesc::hwpoison::PoisonReport) -> u32 {
    match r.kind {
        PoisonedKind::Slab { objects, .. } => objects,
        _ => 0,
    }
}
