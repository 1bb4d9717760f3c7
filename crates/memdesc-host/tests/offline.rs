//! Offlining on the simulated machine: the balloon, offlining a range with movable folios
//! (migrated out, data intact, the range never allocated again, onlined back), a range holding
//! mapped anon and file folios and zsmalloc / z3fold pages (all moved out, read back through the
//! page tables and the handles), and offlining that fails on an unmovable page and restores the
//! range exactly.

use memdesc::balloon::Balloon;
use memdesc::folio::{FolioKind, FolioRef};
use memdesc::memmap::desc::Folio;
use memdesc::memmap::word::{PageKind, Subtype};
use memdesc::migrate::MigrateError;
use memdesc::offline::OfflineError;
use memdesc::pagecache::AddressSpaceRef;
use memdesc::Cpu;
use memdesc::{AllocError, Config, Gfp, MemmapLayout, MemoryLayout, MigrateType, Pfn, Platform, RegionSpec};
use memdesc_host::{boot, SimMachine};

mod common;
#[allow(unused_imports)]
use common::*;

const BLOCK: u64 = 1 << 10; // max_order block: offlining granularity

fn machine() -> SimMachine {
    let mut l = MemoryLayout::new();
    l.add_region(RegionSpec {
        start: Pfn(0x1000),
        end: Pfn(0x5000),
        node: 0,
        mapped: true,
        layout: MemmapLayout::Flat,
    })
    .unwrap();
    boot(&l, Config { nr_cpus: 2, debug_checks: true, ..Config::default() }).unwrap()
}

fn subtype(m: &SimMachine, pfn: Pfn) -> Option<Subtype> {
    match m.memmap().load(m.platform(), pfn)?.word.kind() {
        PageKind::Undescribed(u) => Some(u.subtype),
        _ => None,
    }
}

fn stamp(m: &SimMachine, f: &Folio, v: u64) {
    for i in 0..1u64 << f.flags.order() {
        let p = m.platform().direct_map(f.flags.pfn().add(i)).unwrap().cast::<u64>();
        // SAFETY: the folio's pages are ours and direct-mapped.
        unsafe { p.as_ptr().add(7).write(v + i) };
    }
}

fn stamped(m: &SimMachine, f: &Folio, v: u64) -> bool {
    (0..1u64 << f.flags.order()).all(|i| {
        let p = m.platform().direct_map(f.flags.pfn().add(i)).unwrap().cast::<u64>();
        // SAFETY: as above.
        unsafe { p.as_ptr().add(7).read() == v + i }
    })
}

fn isolate_free(m: &SimMachine) -> u64 {
    m.zones()
        .map(|z| {
            m.free_blocks(z).iter().enumerate().map(|(o, per)| per[MigrateType::Isolate as usize] << o).sum::<u64>()
        })
        .sum()
}

/// Movable folios spread over the zone, each stamped with its number: page-cache folios held by
/// their cache alone (migration moves nothing an owner holds), with views of them that stay
/// valid until the returned address space is destroyed.
fn populate<'m>(m: &'m SimMachine, cpu: &Cpu<'_>) -> (AddressSpaceRef<'m, memdesc_host::SimPlatform>, Vec<&'m Folio>) {
    let space = m.address_space_create(cpu).unwrap();
    let mut v = Vec::new();
    for i in 0..3000u64 {
        let f = m.folio_alloc(cpu, (i % 3) as u32, Gfp::MOVABLE, FolioKind::File).unwrap();
        stamp(m, &f, i << 16);
        space.insert(cpu, &f, i * 4).unwrap();
        v.push(f);
    }
    // Free every other one, so ranges hold folios and free memory; the cache holds the rest.
    let mut kept = Vec::new();
    for (i, f) in v.into_iter().enumerate() {
        if i % 2 == 0 {
            space.delete(cpu, &f).unwrap();
            assert_eq!(m.folio_put(cpu, f), Ok(true));
        } else {
            let raw = f.into_raw();
            // SAFETY: the count into_raw gave up, adopted once to be put; the cache keeps
            // the folio (and so the view) until the space is destroyed.
            assert_eq!(m.folio_put(cpu, unsafe { FolioRef::from_raw(raw) }), Ok(false));
            kept.push(raw);
        }
    }
    (space, kept)
}

/// A max_order-aligned range holding folios and nothing unmovable.
fn movable_range(m: &SimMachine, folios: &[&Folio]) -> (Pfn, Pfn) {
    for f in folios {
        let s = f.flags.pfn().align_down(10);
        let ok = (0..BLOCK).all(|i| match m.memmap().load(m.platform(), s.add(i)).unwrap().word.kind() {
            PageKind::AnonFolio(_) | PageKind::FileFolio(_) | PageKind::Buddy(_) => true,
            PageKind::Undescribed(u) => u.subtype == Subtype::Tail,
            _ => false,
        });
        if ok {
            return (s, s.add(BLOCK));
        }
    }
    panic!("no movable range");
}

#[test]
fn balloon_inflates_and_deflates() {
    let m = machine();
    let cpu = m.cpus().claim(0).unwrap();
    m.drain_all();
    let free0 = m.nr_free_pages();
    let b = Balloon::new(&m);
    assert_eq!(b.inflate(&cpu, 1000), 1000);
    assert_eq!(b.stats().pages, 1000);
    assert_eq!(m.census().unwrap().offline, 1000);
    assert_eq!(m.undescribed_stats().offline_pages, 1000);
    m.drain_all();
    assert_eq!(m.nr_free_pages(), free0 - 1000);
    assert_eq!(b.deflate(&cpu, 400), 400);
    assert_eq!(b.stats(), memdesc::balloon::BalloonStats { pages: 600, inflated: 1000, deflated: 400 });
    // Inflating past what is free stops at the watermark, not with an error.
    let got = b.inflate(&cpu, 1 << 30);
    assert!(got > 10_000 && got < 1 << 30, "{got}");
    assert!(matches!(m.alloc_pages_raw(&cpu, 0, Gfp::NOWARN), Err(AllocError::NoMemory { .. })));
    m.check(|_, _, _| ()).unwrap();
    assert_eq!(m.census().unwrap().offline, 600 + got);
    assert_eq!(b.deflate(&cpu, u64::MAX), 600 + got);
    m.drain_all();
    assert_eq!(m.nr_free_pages(), free0);
    assert_eq!(m.census().unwrap().offline, 0);
    m.check(|_, _, _| ()).unwrap();
}

#[test]
fn offline_range_migrates_folios_out_and_online_gives_it_back() {
    let m = machine();
    let cpu = m.cpus().claim(0).unwrap();
    let (space, folios) = populate(&m, &cpu);
    let (s, e) = movable_range(&m, &folios);
    let inside: Vec<usize> = (0..folios.len()).filter(|&i| (s..e).contains(&folios[i].flags.pfn())).collect();
    assert!(!inside.is_empty());
    let managed0: u64 = m.zones().map(|z| z.managed_pages()).sum();
    let census0 = m.census().unwrap();
    let r = m.offline_range(&cpu, s, e).unwrap();
    assert_eq!(r.pages, BLOCK);
    assert_eq!(r.migrated_folios, inside.len() as u64);
    for (i, f) in folios.iter().enumerate() {
        assert!(!(s..e).contains(&f.flags.pfn()), "folio {i} still in the offline range");
        assert!(stamped(&m, f, (2 * i as u64 + 1) << 16), "folio {i} data");
    }
    for p in s.0..e.0 {
        let st = subtype(&m, Pfn(p));
        assert!(st == Some(Subtype::Offline) || st == Some(Subtype::Tail), "{p:#x}: {st:?}");
    }
    assert_eq!(m.pageblock_migratetype(s), Some(MigrateType::Isolate));
    let c = m.census().unwrap();
    assert_eq!(c.offline, BLOCK);
    assert_eq!(c.present, census0.present);
    assert_eq!(m.undescribed_stats().offline_pages, BLOCK);
    assert_eq!(m.zones().map(|z| z.managed_pages()).sum::<u64>(), managed0 - BLOCK);
    assert_eq!(m.offline_range(&cpu, s, e), Err(OfflineError::AlreadyIsolated(s)));
    m.check(|p, o, _| assert!(p.add(1 << o) <= s || e <= p, "free block {p}/{o} in the offline range")).unwrap();
    // Nothing in the range is handed out.
    let mut all = Vec::new();
    while let Ok(p) = m.alloc_pages_raw(&cpu, 0, Gfp::HIGH | Gfp::NOWARN) {
        assert!(!(s..e).contains(&p));
        all.push(p);
    }
    for p in all {
        free_raw(&m, &cpu, p, 0).unwrap();
    }
    assert_eq!(m.online_range(s, e), Ok(BLOCK));
    assert_eq!(m.online_range(s, e), Err(OfflineError::NotOffline(s)));
    assert_eq!(m.pageblock_migratetype(s), Some(MigrateType::Movable));
    assert_eq!(m.census().unwrap().offline, 0);
    assert_eq!(m.zones().map(|z| z.managed_pages()).sum::<u64>(), managed0);
    m.check(|_, _, _| ()).unwrap();
    assert_eq!(space.destroy(&cpu).folios, folios.len() as u64);
    m.check(|_, _, _| ()).unwrap();
}

#[test]
fn offline_range_with_an_unmovable_page_fails_and_restores_everything() {
    let m = machine();
    let cpu = m.cpus().claim(0).unwrap();
    let (space, folios) = populate(&m, &cpu);
    let (s, e) = movable_range(&m, &folios);
    // A poisoned page in the range cannot be moved.
    m.drain_all();
    let bad = (s.0..e.0).map(Pfn).find(|&p| m.free_block_containing_pfn(p).is_some()).unwrap();
    m.memory_failure(&cpu, bad).unwrap();
    let types: Vec<_> = (0..BLOCK / 512).map(|i| m.pageblock_migratetype(s.add(i * 512))).collect();
    m.drain_all();
    let census0 = m.census().unwrap();
    let free0 = m.nr_free_pages();
    let err = m.offline_range(&cpu, s, e).unwrap_err();
    assert!(
        matches!(err, OfflineError::Unmovable { pfn, why: MigrateError::NotMovable { .. } } if pfn == bad),
        "{err:?}"
    );
    let after: Vec<_> = (0..BLOCK / 512).map(|i| m.pageblock_migratetype(s.add(i * 512))).collect();
    assert_eq!(after, types, "pageblock types restored");
    assert_eq!(isolate_free(&m), 0, "nothing left on isolate lists");
    m.drain_all();
    let c = m.census().unwrap();
    assert_eq!(c.free + c.pcp + c.described + c.raw, census0.free + census0.pcp + census0.described + census0.raw);
    assert_eq!(c.hwpoison, 1);
    assert_eq!(m.nr_free_pages(), free0, "no page lost");
    m.check(|_, _, _| ()).unwrap();
    for (i, f) in folios.iter().enumerate() {
        assert!(stamped(&m, f, (2 * i as u64 + 1) << 16), "folio {i} data");
    }
    assert!(matches!(m.offline_range(&cpu, s.add(1), e), Err(OfflineError::Misaligned { .. })));
    assert_eq!(m.online_range(s, e), Err(OfflineError::NotOffline(s)));
    assert_eq!(space.destroy(&cpu).folios, folios.len() as u64);
}

/// Offlining a range that holds mapped anon folios, mapped page-cache folios, zsmalloc and
/// z3fold pages moves all of them out: the page tables point to the new pages (data read back
/// through them), the cache still finds its folios, every pool object reads back.
#[test]
fn offline_range_moves_mapped_folios_and_pool_pages_out() {
    use memdesc::pgtable::MmKind;
    use memdesc::z3fold::Z3foldPool;
    use memdesc::zsmalloc::ZsPool;
    const PAGE: u64 = 4096;
    let m = machine();
    let cpu = m.cpus().claim(0).unwrap();
    let space = m.address_space_create(&cpu).unwrap();
    let mms = m.mm_caches(&cpu).unwrap();
    let mm = mms.mm_create(&cpu, MmKind::User).unwrap();
    let (anon, fva) = (0x4000_0000u64, 0x8000_0000u64);
    mm.mmap_anon(&cpu, anon, 16 << 20).unwrap();
    mm.mmap_file(&cpu, fva, 16 << 20, space.space(), 0).unwrap();
    let zs = ZsPool::new(&m, &cpu).unwrap();
    let z3 = Z3foldPool::new(&m, &cpu).unwrap();
    let (mut anons, mut files, mut zsh, mut z3h) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..2000u64 {
        let a = m.folio_alloc(&cpu, 0, Gfp::MOVABLE, FolioKind::Anon).unwrap();
        stamp(&m, &a, i << 16);
        mm.map_folio(&cpu, anon + i * PAGE, &a).unwrap();
        let a = a.into_raw();
        // SAFETY: adopted once to be put; the mapping keeps the folio (and the view) until
        // the mm is destroyed.
        assert_eq!(m.folio_put(&cpu, unsafe { FolioRef::from_raw(a) }), Ok(false));
        anons.push(a);
        let f = m.folio_alloc(&cpu, 0, Gfp::MOVABLE, FolioKind::File).unwrap();
        stamp(&m, &f, (i << 16) | 1);
        space.insert(&cpu, &f, i).unwrap();
        mm.map_folio(&cpu, fva + i * PAGE, &f).unwrap();
        let f = f.into_raw();
        // SAFETY: as above; the cache and the mapping keep it.
        assert_eq!(m.folio_put(&cpu, unsafe { FolioRef::from_raw(f) }), Ok(false));
        files.push(f);
        let h = zs.malloc(&cpu, 2000).unwrap();
        zs.map_write(&cpu, &h).unwrap().fill(i as u8);
        zsh.push(h);
        let h = z3.malloc(&cpu, 1500).unwrap();
        z3.map_write(&h).unwrap().fill(!(i as u8));
        z3h.push(h);
    }
    // A range holding mapped folios and pool pages, nothing unmovable.
    let (s, e) = (0x1000u64..0x5000)
        .step_by(BLOCK as usize)
        .map(|p| (Pfn(p), Pfn(p + BLOCK)))
        .find(|&(s, _)| {
            let kinds: Vec<_> =
                (0..BLOCK).map(|i| m.memmap().load(m.platform(), s.add(i)).unwrap().word.kind()).collect();
            kinds.iter().any(|k| matches!(k, PageKind::Zsmalloc(_)))
                && kinds.iter().any(|k| matches!(k, PageKind::Z3fold(_)))
                && kinds.iter().any(|k| matches!(k, PageKind::AnonFolio(_)))
                && kinds.iter().all(|k| match k {
                    PageKind::AnonFolio(_)
                    | PageKind::FileFolio(_)
                    | PageKind::Zsmalloc(_)
                    | PageKind::Z3fold(_)
                    | PageKind::Buddy(_) => true,
                    PageKind::Undescribed(u) => u.subtype == Subtype::Tail,
                    _ => false,
                })
        })
        .expect("a range of mapped folios and pool pages");
    let r = m.offline_range(&cpu, s, e).unwrap();
    assert_eq!(r.pages, BLOCK);
    assert!(r.migrated_folios > 0 && r.migrated_pool_pages > 0, "{r:?}");
    for (i, (a, f)) in anons.iter().zip(&files).enumerate() {
        let i = i as u64;
        for (va, fo, v) in [(anon + i * PAGE, a, i << 16), (fva + i * PAGE, f, (i << 16) | 1)] {
            let pfn = mm.translate(va).unwrap().0.pfn();
            assert_eq!(pfn, fo.flags.pfn());
            assert!(!(s..e).contains(&pfn), "mapping {va:#x} still in the range");
            assert!(stamped(&m, fo, v));
        }
        assert_eq!((a.counts.refcount(), a.counts.mapcount()), (1, 1));
    }
    for (i, h) in zsh.iter().enumerate() {
        let mut out = [Pfn(0); memdesc::zsmalloc::ZS_MAX_PAGES];
        let n = zs.pages_of(h, &mut out).unwrap();
        assert!(out[..n].iter().all(|p| !(s..e).contains(p)));
        assert!(zs.map_read(&cpu, h).unwrap().iter().all(|&b| b == i as u8));
    }
    for (i, h) in z3h.iter().enumerate() {
        assert!(!(s..e).contains(&z3.location(h).unwrap().0));
        assert!(z3.map_read(h).unwrap().iter().all(|&b| b == !(i as u8)));
    }
    space.verify().unwrap();
    m.check(|_, _, _| ()).unwrap();
    assert_eq!(m.online_range(s, e), Ok(BLOCK));
    mm.destroy(&cpu);
    zs.destroy(&cpu);
    z3.destroy(&cpu);
    space.destroy(&cpu);
    m.check(|_, _, _| ()).unwrap();
}
