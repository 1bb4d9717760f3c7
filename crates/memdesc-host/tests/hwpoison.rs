//! hwpoison and reserved ranges on the simulated machine: one test per kind of page
//! `memory_failure` handles (free, per-CPU, anon and page-cache folios mapped or not, slab,
//! zsmalloc, z3fold, vmalloc, page_pool, mappable, raw and reserved memory), the poisoned page
//! never handed out again, unpoison, and the census accounting every page exactly once.

use memdesc::folio::{FolioKind, FolioRef};
use memdesc::hwpoison::{PoisonAction, PoisonError, PoisonedKind};
use memdesc::memmap::desc::Folio;
use memdesc::memmap::word::{PageKind, Subtype, Tag};
use memdesc::Cpu;
use memdesc::{AllocError, CacheArgs, Config, FreeError, Gfp, MemmapLayout, MemoryLayout, Pfn, Platform, RegionSpec};
use memdesc_host::{boot, SimMachine};

mod common;
#[allow(unused_imports)]
use common::*;

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
        match m.alloc_pages_raw(cpu, 0, Gfp::HIGH | Gfp::NOWARN) {
            Ok(p) => all.push(p),
            Err(AllocError::NoMemory { .. }) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(all.len() > 10_000);
    assert!(!all.contains(&pfn), "a poisoned page was handed out");
    for p in all {
        free_raw(m, cpu, p, 0).unwrap();
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
            assert_eq!(free_raw(&m, &cpu, Pfn(p), 0), Err(FreeError::NotAllocated(Pfn(p), Subtype::Reserved)));
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
    let a = m.alloc_pages_raw(&cpu, 0, Gfp::KERNEL).unwrap();
    free_raw(&m, &cpu, a, 0).unwrap();
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
    m.lru_add(&f);
    // Hardware poison splits whoever holds the folio: the owner's reference is copied onto
    // every piece (the owner learns of it from the report), so it is kept raw here.
    let _ = f.into_raw();
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
        // SAFETY: the owner's reference on this piece, adopted once and put.
        assert_eq!(m.folio_put(&cpu, unsafe { FolioRef::from_raw(pf) }), Ok(true));
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
    space.insert(&cpu, &f, 8).unwrap();
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
    space.insert(&cpu, &g, 100).unwrap();
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
    let objs: Vec<_> = (0..8).map(|_| c.alloc_raw(&cpu).unwrap()).collect();
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
    let more: Vec<_> = (0..64).map(|_| c.alloc_raw(&cpu).unwrap()).collect();
    assert!(more.iter().all(|o| m.platform().virt_to_pfn(*o) != Some(pfn)));
    for o in objs.iter().chain(more.iter()) {
        cache_free_raw(&c, &cpu, *o).unwrap();
    }
    m.shrink_cache(&cpu, &c);
    assert_eq!(subtype(&m, pfn), Some(Subtype::HwPoison), "the emptied poisoned slab is retired");
    check_all(&m, &[pfn]);
    let fresh: Vec<_> = (0..200).map(|_| c.alloc_raw(&cpu).unwrap()).collect();
    assert!(fresh.iter().all(|o| m.platform().virt_to_pfn(*o) != Some(pfn)));
    for o in fresh {
        cache_free_raw(&c, &cpu, o).unwrap();
    }
    never_handed_out(&m, &cpu, pfn);
}

#[test]
fn raw_kernel_memory_is_ignored_and_bad_pfns_are_typed_errors() {
    let m = machine();
    let cpu = m.cpus().claim(0).unwrap();
    let raw = m.alloc_pages_raw(&cpu, 2, Gfp::KERNEL).unwrap();
    for p in [raw, raw.add(3)] {
        let r = m.memory_failure(&cpu, p).unwrap();
        assert_eq!((r.kind, r.action), (PoisonedKind::Undescribed(Subtype::Unmappable), PoisonAction::Ignored));
    }
    free_raw(&m, &cpu, raw, 2).unwrap();
    assert_eq!(m.undescribed_stats().hwpoison_ignored, 2);
    assert_eq!(m.memory_failure(&cpu, Pfn(0x9_0000)), Err(PoisonError::OutOfRange(Pfn(0x9_0000))));
    assert_eq!(m.unpoison(&cpu, raw), Err(PoisonError::NotPoisoned(raw)));
    check_all(&m, &[]);
}

#[test]
fn empty_slab_whose_objects_sit_in_a_sheaf_is_retired_at_once() {
    let m = machine();
    let cpu = m.cpus().claim(0).unwrap();
    let c = m.create_cache(&cpu, CacheArgs::new("poison_empty", 512)).unwrap();
    let o = c.alloc_raw(&cpu).unwrap();
    let pfn = m.platform().virt_to_pfn(o).unwrap();
    cache_free_raw(&c, &cpu, o).unwrap(); // back in this CPU's sheaf: the slab still counts it in use
    let r = m.memory_failure(&cpu, pfn).unwrap();
    assert_eq!(r.kind, PoisonedKind::Slab { cache: "poison_empty", objects_in_use: 0, objects: r_objects(&r) });
    assert_eq!(r.action, PoisonAction::Recovered);
    assert_eq!(subtype(&m, pfn), Some(Subtype::HwPoison));
    check_all(&m, &[pfn]);
    let more: Vec<_> = (0..100).map(|_| c.alloc_raw(&cpu).unwrap()).collect();
    assert!(more.iter().all(|o| m.platform().virt_to_pfn(*o) != Some(pfn)));
    for o in more {
        cache_free_raw(&c, &cpu, o).unwrap();
    }
}

fn r_objects(r: &memdesc::hwpoison::PoisonReport) -> u32 {
    match r.kind {
        PoisonedKind::Slab { objects, .. } => objects,
        _ => 0,
    }
}

const PAGE: u64 = 4096;

/// The page `va` maps in `mm`, read at byte 100.
fn read_va<P: memdesc::Platform>(m: &SimMachine, mm: &memdesc::pgtable::MmRef<'_, P>, va: u64) -> Option<u8> {
    mm.translate(va).map(|(e, _)| read(m, e.pfn()))
}

#[test]
fn mapped_anon_large_folio_is_split_and_the_page_unmapped_in_every_mm() {
    let m = machine();
    let cpu = m.cpus().claim(0).unwrap();
    let mms = m.mm_caches(&cpu).unwrap();
    let parent = mms.mm_create(&cpu, memdesc::pgtable::MmKind::User).unwrap();
    let va = 0x4000_0000u64;
    parent.mmap_anon(&cpu, va, 4 << 20).unwrap();
    let f = m.folio_alloc(&cpu, 3, Gfp::MOVABLE, FolioKind::Anon).unwrap();
    let base = f.flags.pfn();
    for i in 0..8 {
        write(&m, base.add(i), i as u8 + 1);
    }
    parent.map_folio(&cpu, va, &f).unwrap();
    m.folio_put(&cpu, f).unwrap(); // the mappings hold it
    let child = parent.fork(&cpu).unwrap();
    let bad = base.add(5);
    let mut seen = Vec::new();
    let r = m.memory_failure_with(&cpu, bad, &mut |mm, a| seen.push((mm.addr(), a))).unwrap();
    assert_eq!(r.kind, PoisonedKind::AnonFolio { order: 3 });
    assert!(r.split);
    assert_eq!(r.unmapped, 2);
    seen.sort();
    let mut want = vec![(parent.mm().addr(), va + 5 * PAGE), (child.mm().addr(), va + 5 * PAGE)];
    want.sort();
    assert_eq!(seen, want, "both mms reported");
    assert_eq!(r.action, PoisonAction::Recovered, "only the mappings held the page");
    assert_eq!(subtype(&m, bad), Some(Subtype::HwPoison));
    for mm in [&parent, &child] {
        assert!(mm.translate(va + 5 * PAGE).is_none());
        for i in (0..8).filter(|&i| i != 5) {
            assert_eq!(read_va(&m, mm, va + i * PAGE), Some(i as u8 + 1), "page {i} still mapped, data intact");
        }
    }
    child.destroy(&cpu);
    parent.destroy(&cpu);
    check_all(&m, &[bad]);
    never_handed_out(&m, &cpu, bad);
}

#[test]
fn pmd_mapped_2mib_anon_folio_loses_one_page_and_keeps_511_mapped() {
    let m = machine();
    let cpu = m.cpus().claim(0).unwrap();
    let mms = m.mm_caches(&cpu).unwrap();
    let mm = mms.mm_create(&cpu, memdesc::pgtable::MmKind::User).unwrap();
    let va = 0x4000_0000u64;
    mm.mmap_anon(&cpu, va, 4 << 20).unwrap();
    let f = m.folio_alloc(&cpu, 9, Gfp::MOVABLE, FolioKind::Anon).unwrap();
    let base = f.flags.pfn();
    for i in 0..512 {
        write(&m, base.add(i), (i % 251) as u8 + 1);
    }
    mm.map_folio_pmd(&cpu, va, &f).unwrap();
    m.folio_put(&cpu, f).unwrap();
    assert!(mm.translate(va).unwrap().1, "a PMD mapping");
    let bad = base.add(300);
    let mut seen = Vec::new();
    let r = m.memory_failure_with(&cpu, bad, &mut |_, a| seen.push(a)).unwrap();
    assert_eq!((r.kind, r.split, r.unmapped), (PoisonedKind::AnonFolio { order: 9 }, true, 1));
    assert_eq!(seen, vec![va + 300 * PAGE]);
    assert_eq!(r.action, PoisonAction::Recovered);
    assert!(mm.translate(va + 300 * PAGE).is_none());
    for i in (0..512u64).filter(|&i| i != 300) {
        let (e, huge) = mm.translate(va + i * PAGE).unwrap();
        assert!(!huge, "the PMD was split into PTEs");
        assert_eq!(e.pfn(), base.add(i));
        assert_eq!(read(&m, e.pfn()), (i % 251) as u8 + 1);
    }
    mm.destroy(&cpu);
    check_all(&m, &[bad]);
    never_handed_out(&m, &cpu, bad);
}

#[test]
fn mapped_page_cache_folio_is_unmapped_and_the_rest_stays_cached() {
    let m = machine();
    let cpu = m.cpus().claim(0).unwrap();
    let space = m.address_space_create(&cpu).unwrap();
    let mms = m.mm_caches(&cpu).unwrap();
    let mm = mms.mm_create(&cpu, memdesc::pgtable::MmKind::User).unwrap();
    let fva = 0x8000_0000u64;
    mm.mmap_file(&cpu, fva, 1 << 20, space.space(), 0).unwrap();
    let f = m.folio_alloc(&cpu, 2, Gfp::MOVABLE, FolioKind::File).unwrap();
    let base = f.flags.pfn();
    for i in 0..4 {
        write(&m, base.add(i), 0x40 + i as u8);
    }
    space.insert(&cpu, &f, 8).unwrap();
    mm.map_folio(&cpu, fva + 8 * PAGE, &f).unwrap();
    m.folio_put(&cpu, f).unwrap();
    let bad = base.add(2);
    let mut seen = Vec::new();
    let r = m.memory_failure_with(&cpu, bad, &mut |_, a| seen.push(a)).unwrap();
    assert_eq!(r.kind, PoisonedKind::FileFolio { order: 2, index: 10, mapping: space.space().addr() });
    assert_eq!((r.action, r.split, r.unmapped), (PoisonAction::Recovered, true, 4));
    seen.sort();
    assert_eq!(seen, (8..12).map(|i| fva + i * PAGE).collect::<Vec<_>>(), "the whole folio was unmapped");
    assert_eq!(subtype(&m, bad), Some(Subtype::HwPoison));
    assert!(space.lookup(&cpu, 10).is_none());
    for idx in [8u64, 9, 11] {
        assert!(mm.translate(fva + idx * PAGE).is_none());
        let g = space.lookup(&cpu, idx).expect("other pages stay cached");
        assert_eq!(read(&m, g.flags.pfn()), 0x40 + (idx - 8) as u8);
        assert_eq!(g.counts.mapcount(), 0);
        m.folio_put(&cpu, g).unwrap();
    }
    space.verify().unwrap();
    mm.destroy(&cpu);
    space.destroy(&cpu);
    check_all(&m, &[bad]);
}

fn fill(buf: &mut [u8], seed: u64) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (seed.wrapping_mul(13).wrapping_add(i as u64) % 253) as u8;
    }
}

fn filled(buf: &[u8], seed: u64) -> bool {
    buf.iter().enumerate().all(|(i, &b)| b == (seed.wrapping_mul(13).wrapping_add(i as u64) % 253) as u8)
}

#[test]
fn zsmalloc_page_loses_only_the_objects_on_it() {
    use memdesc::zsmalloc::{ZsError, ZsPool, ZS_MAX_PAGES};
    let m = machine();
    let cpu = m.cpus().claim(0).unwrap();
    let pool = ZsPool::new(&m, &cpu).unwrap();
    let hs: Vec<_> = (0..40u64)
        .map(|i| {
            let h = pool.malloc(&cpu, 1500).unwrap();
            fill(&mut pool.map_write(&cpu, &h).unwrap(), i);
            h
        })
        .collect();
    let pages = |h: &memdesc::zsmalloc::Handle| {
        let mut out = [Pfn(0); ZS_MAX_PAGES];
        let n = pool.pages_of(h, &mut out).unwrap();
        out[..n].to_vec()
    };
    assert!(pages(&hs[0]).len() >= 2, "1500-byte objects use multi-page zspages");
    let mut lost_total = 0;
    let mut bad_pages = Vec::new();
    // A middle page of the first zspage, then the first page of another (handle entries name
    // the first page, so that path rewrites them).
    let other = hs.iter().find(|h| pages(h)[0] != pages(&hs[0])[0]).unwrap();
    for (h, k) in [(&hs[0], 1usize), (other, 0)] {
        let zpages = pages(h);
        let bad = zpages[k];
        let members: Vec<usize> = (0..hs.len()).filter(|&i| pages(&hs[i]) == zpages).collect();
        let r = m.memory_failure(&cpu, bad).unwrap();
        let PoisonedKind::Zsmalloc { objects_lost, objects_in_use } = r.kind else { panic!("{r:?}") };
        assert_eq!(r.action, PoisonAction::Recovered);
        assert_eq!(objects_in_use as usize, members.len());
        assert!(objects_lost > 0 && (objects_lost as usize) < members.len(), "{objects_lost} of {}", members.len());
        assert_eq!(subtype(&m, bad), Some(Subtype::HwPoison));
        let mut lost = 0;
        for &i in &members {
            match pool.map_read(&cpu, &hs[i]) {
                Err(ZsError::Lost(_)) => lost += 1,
                Ok(g) => assert!(filled(&g, i as u64), "object {i} of the zspage intact"),
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(lost, objects_lost);
        assert!(!pages(h).contains(&bad), "a fresh page took its place");
        lost_total += lost;
        bad_pages.push(bad);
    }
    // The rest of the pool is intact and the rebuilt free lists hand out working objects.
    let more: Vec<_> = (0..40u64)
        .map(|i| {
            let h = pool.malloc(&cpu, 1500).unwrap();
            fill(&mut pool.map_write(&cpu, &h).unwrap(), 1000 + i);
            h
        })
        .collect();
    let mut ok = 0;
    for (i, h) in hs.iter().enumerate() {
        if let Ok(g) = pool.map_read(&cpu, h) {
            assert!(filled(&g, i as u64));
            ok += 1;
        }
    }
    assert_eq!(ok + lost_total as usize, hs.len());
    for (i, h) in more.iter().enumerate() {
        assert!(filled(&pool.map_read(&cpu, h).unwrap(), 1000 + i as u64));
    }
    // Lost objects can still be freed.
    for h in hs.into_iter().chain(more) {
        pool.free(&cpu, h).unwrap();
    }
    pool.destroy(&cpu);
    check_all(&m, &bad_pages);
    for b in bad_pages {
        never_handed_out(&m, &cpu, b);
    }
}

#[test]
fn z3fold_page_loses_its_objects_and_the_pool_goes_on() {
    use memdesc::z3fold::{Z3Error, Z3foldPool};
    let m = machine();
    let cpu = m.cpus().claim(0).unwrap();
    let pool = Z3foldPool::new(&m, &cpu).unwrap();
    let hs: Vec<_> = (0..9u64)
        .map(|i| {
            let h = pool.malloc(&cpu, 1200).unwrap();
            fill(&mut pool.map_write(&h).unwrap(), i);
            h
        })
        .collect();
    let bad = pool.location(&hs[0]).unwrap().0;
    let on_it: Vec<usize> = (0..hs.len()).filter(|&i| pool.location(&hs[i]).unwrap().0 == bad).collect();
    assert_eq!(on_it.len(), 3, "three 1200-byte objects share a page");
    let r = m.memory_failure(&cpu, bad).unwrap();
    assert_eq!((r.kind, r.action), (PoisonedKind::Z3fold { objects_lost: 3 }, PoisonAction::Recovered));
    assert_eq!(subtype(&m, bad), Some(Subtype::HwPoison));
    for (i, h) in hs.iter().enumerate() {
        if on_it.contains(&i) {
            assert!(matches!(pool.map_read(h), Err(Z3Error::Lost(x)) if x == h.id()));
            assert_ne!(pool.location(h).unwrap().0, bad);
        } else {
            assert!(filled(&pool.map_read(h).unwrap(), i as u64), "object {i} intact");
        }
    }
    for h in hs {
        pool.free(&cpu, h).unwrap();
    }
    pool.destroy(&cpu);
    check_all(&m, &[bad]);
    never_handed_out(&m, &cpu, bad);
}

#[test]
fn vmalloc_page_pool_and_mappable_pages_are_reported_and_left_in_place() {
    use memdesc::page_pool::{PagePool, PoolParams};
    use memdesc::vmalloc::{Unmappable, VmallocSpace};
    let m = machine();
    let cpu = m.cpus().claim(0).unwrap();
    let mms = m.mm_caches(&cpu).unwrap();
    let kmm = mms.mm_create(&cpu, memdesc::pgtable::MmKind::Kernel).unwrap();
    let vs = VmallocSpace::new(&m, &cpu, &kmm).unwrap();
    let a = vs.vmalloc::<Unmappable>(&cpu, 3 * 4096, Gfp::KERNEL).unwrap();
    vs.write_area(&a, 4096 + 100, &[0x5a]).unwrap();
    let pfn = vs.pfn_at(&a, 1).unwrap();
    let before = m.memmap().load(m.platform(), pfn).unwrap().word;
    let r = m.memory_failure(&cpu, pfn).unwrap();
    let PoisonedKind::Vmalloc { area, index, mappable } = r.kind else { panic!("{r:?}") };
    assert_eq!((index, mappable, r.action), (1, false, PoisonAction::Ignored));
    let PageKind::Vmalloc { desc, .. } = before.kind() else { panic!() };
    // SAFETY: the area is live, so is its page's descriptor.
    assert_eq!(area, unsafe { &*(desc.addr() as *const memdesc::memmap::desc::VmallocDesc) }.area());
    assert_eq!(m.memmap().load(m.platform(), pfn).unwrap().word, before, "left in place");
    assert_eq!(read(&m, pfn), 0x5a);
    vs.vfree_area(&cpu, a).unwrap();

    let pool = PagePool::new(&m, &cpu, PoolParams { ring_size: 4, ..Default::default() }).unwrap();
    let n = pool.alloc(&cpu).unwrap();
    let r = m.memory_failure(&cpu, n.pfn()).unwrap();
    assert_eq!(r.kind, PoisonedKind::PagePool { pool: n.netmem().pool(), mapcount: 0 });
    assert_eq!(r.action, PoisonAction::Ignored);
    assert_eq!(m.memmap().load(m.platform(), n.pfn()).unwrap().word.tag(), Some(Tag::NetPool));

    let d = m.mappable_alloc(&cpu, 1, Gfp::KERNEL, 0xd00d).unwrap().into_raw();
    let r = m.memory_failure(&cpu, d.flags.pfn().add(1)).unwrap();
    assert_eq!(r.kind, PoisonedKind::Mappable { owner: 0xd00d, order: 1, mapcount: 0 });
    assert_eq!(r.action, PoisonAction::Ignored);
    assert_eq!(mappable_put(&m, &cpu, d), Ok(true));
    assert_eq!(m.undescribed_stats().hwpoison_ignored, 3);
    memdesc::page_pool::pp_put(&m, &cpu, n).unwrap();
    assert!(pool.try_destroy(&cpu).is_ok());
    check_all(&m, &[]);
}

/// A two-level machine: a mapped 2 MiB anon folio in an unsplit area loses one page; the area
/// is split with a table page from the same zone, the poisoned page gets its own `HwPoison`
/// word and the other 511 pages stay mapped with their data.
#[test]
fn two_level_unsplit_area_folio_loses_only_the_page() {
    let m = boot(
        &MemoryLayout::pc(1, MemmapLayout::TwoLevel),
        Config { nr_cpus: 2, debug_checks: true, ..Config::default() },
    )
    .unwrap();
    let cpu = m.cpus().claim(0).unwrap();
    let mms = m.mm_caches(&cpu).unwrap();
    let mm = mms.mm_create(&cpu, memdesc::pgtable::MmKind::User).unwrap();
    let va = 0x4000_0000u64;
    mm.mmap_anon(&cpu, va, 4 << 20).unwrap();
    let f = m.folio_alloc(&cpu, 9, Gfp::MOVABLE, FolioKind::Anon).unwrap();
    let base = f.flags.pfn();
    for i in 0..512 {
        write(&m, base.add(i), (i % 241) as u8 + 3);
    }
    mm.map_folio_pmd(&cpu, va, &f).unwrap();
    m.folio_put(&cpu, f).unwrap();
    let split0 = m.memmap().split_areas();
    let bad = base.add(77);
    let r = m.memory_failure(&cpu, bad).unwrap();
    assert_eq!((r.kind, r.split, r.unmapped), (PoisonedKind::AnonFolio { order: 9 }, true, 1));
    assert_eq!(r.action, PoisonAction::Recovered);
    assert_eq!(m.memmap().split_areas(), split0 + 1, "the area got a table page");
    assert_eq!(subtype(&m, bad), Some(Subtype::HwPoison));
    assert_eq!(m.memory_failure(&cpu, bad), Err(PoisonError::AlreadyPoisoned(bad)));
    assert!(mm.translate(va + 77 * PAGE).is_none());
    for i in (0..512u64).filter(|&i| i != 77) {
        let (e, _) = mm.translate(va + i * PAGE).unwrap();
        assert_eq!(e.pfn(), base.add(i));
        assert_eq!(read(&m, e.pfn()), (i % 241) as u8 + 3);
    }
    // Free memory in a two-level region is not handled (typed error, nothing changed).
    m.drain_all();
    let mut free_area = None;
    m.check(|p, o, pcp| {
        if o >= 9 && !pcp && free_area.is_none() {
            free_area = Some(p.add(5));
        }
    })
    .unwrap();
    let fp = free_area.unwrap();
    assert_eq!(m.memory_failure(&cpu, fp), Err(PoisonError::TwoLevel(fp)));
    mm.destroy(&cpu);
    check_all(&m, &[bad]);
    assert_eq!(m.undescribed_stats().hwpoison_pages, 1);
}
