//! Compaction on the simulated machine: a zone fragmented by page-cache folios until no order-9
//! block is free is compacted into order-9 blocks, every folio's data intact and every cached
//! folio still found by lookup; the same with mapped anon folios (parent and fork child),
//! mapped file folios, zsmalloc and z3fold pages, read back through the page tables and the
//! handles; `migrate_page` of PMD- and PTE-mapped folios; a CPU mapping and unmapping folios
//! racing a CPU migrating them; folio migration errors. Migration moves only folios that
//! nobody holds besides their page cache and mappings, so the tests give up their own
//! references first.

use memdesc::folio::{FolioKind, FolioRef};
use memdesc::health::migrate::MigrateError;
use memdesc::memmap::desc::Folio;
use memdesc::memmap::word::Tag;
use memdesc::mm::pgtable::{MmKind, MmRef};
use memdesc::pools::z3fold::Z3foldPool;
use memdesc::pools::zsmalloc::ZsPool;
use memdesc::{Config, Gfp, MemmapLayout, MemoryLayout, Pfn, Platform, RegionSpec};
use memdesc_host::{boot, SimMachine};

mod common;
#[allow(unused_imports)]
use common::*;

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

/// Gives up the test's reference on `f`, keeping a view of it for a folio that others (its
/// page cache, its mappings) keep holding.
///
/// # Safety
/// The view must not be used after those others let go.
unsafe fn put_keep_view<'a>(m: &'a SimMachine, cpu: &memdesc::Cpu<'_>, f: FolioRef<'a>) -> &'a Folio {
    let raw = f.into_raw();
    // SAFETY: the count into_raw gave up, adopted once to be put.
    assert_eq!(m.folio_put(cpu, unsafe { FolioRef::from_raw(raw) }), Ok(false), "others hold it");
    raw
}

fn stamp(m: &SimMachine, f: &Folio, v: u64) {
    let p = m.platform().direct_map(f.flags.pfn()).unwrap().cast::<u64>();
    // SAFETY: the folio's page is ours and direct-mapped.
    unsafe {
        p.as_ptr().write(v);
        p.as_ptr().add(511).write(!v);
    }
}

fn stamped(m: &SimMachine, f: &Folio, v: u64) -> bool {
    let p = m.platform().direct_map(f.flags.pfn()).unwrap().cast::<u64>();
    // SAFETY: as above.
    unsafe { p.as_ptr().read() == v && p.as_ptr().add(511).read() == !v }
}

#[test]
fn fragmented_zone_compacts_into_order9_blocks_with_data_intact() {
    let m = machine();
    let cpu = m.cpus().claim(0).unwrap();
    let space = m.address_space_create(&cpu).unwrap();
    // Fill the zone with order-0 cached file folios (the cache's reference the only one).
    let mut all: Vec<&Folio> = Vec::new();
    for i in 0u64.. {
        let Ok(f) = m.folio_alloc(&cpu, 0, Gfp::MOVABLE | Gfp::NOWARN, FolioKind::File) else { break };
        stamp(&m, &f, i);
        space.insert(&cpu, &f, i).unwrap();
        // SAFETY: the page cache holds it until the test deletes it or destroys the space.
        all.push(unsafe { put_keep_view(&m, &cpu, f) });
    }
    assert!(all.len() > 12_000, "{}", all.len());
    // Free every other folio: memory is free but in order-0 pieces.
    let mut kept = Vec::new();
    for (i, f) in all.into_iter().enumerate() {
        if i % 2 == 1 {
            assert_eq!(space.delete(&cpu, f), Ok(true));
        } else {
            kept.push((i as u64, f));
        }
    }
    m.drain_all_from(&cpu);
    let zone = m.zones().find(|z| z.start() <= Pfn(0x1000) && Pfn(0x1000) < z.end()).unwrap();
    let before = m.free_histogram(zone);
    assert_eq!(before[9..].iter().sum::<u64>(), 0, "fragmented: no order-9 block free: {before:?}");
    assert!(m.alloc_pages_raw(&cpu, 9, Gfp::MOVABLE | Gfp::NOWARN).is_err());
    let census0 = m.census().unwrap();

    let rep = m.compact_zone(&cpu, zone);
    assert_eq!(rep.free_before, before);
    assert!(rep.migrated > 1000, "{rep:?}");
    assert_eq!(rep.migrated, rep.migrated_pages);
    assert_eq!(rep.failed, 0, "{rep:?}");
    assert!(rep.scanned >= rep.migrated_pages);
    assert!(rep.blocks_at_least(9) >= 4, "{rep:?}");
    assert_eq!(rep.free_after, m.free_histogram(zone));

    // Every folio's data followed it; cached folios are found at their index.
    for &(i, f) in &kept {
        assert!(stamped(&m, f, i), "folio {i} data");
        let g = space.lookup(&cpu, i).expect("still cached");
        assert!(std::ptr::eq(&*g, f), "the cache holds the same descriptor");
        m.folio_put(&cpu, g).unwrap();
    }
    space.verify().unwrap();
    let c = m.census().unwrap();
    assert_eq!((c.free + c.pcp, c.described), (census0.free + census0.pcp, census0.described));
    m.check(|_, _, _| ()).unwrap();
    let big = m.alloc_pages_raw(&cpu, 9, Gfp::MOVABLE).expect("an order-9 block after compaction");
    free_raw(&m, &cpu, big, 9).unwrap();

    space.destroy(&cpu);
    m.check(|_, _, _| ()).unwrap();
}

#[test]
fn migrate_page_moves_a_folio_and_refuses_busy_or_unmovable_pages() {
    let m = machine();
    let cpu = m.cpus().claim(0).unwrap();
    let space = m.address_space_create(&cpu).unwrap();
    let f = m.folio_alloc(&cpu, 2, Gfp::MOVABLE, FolioKind::File).unwrap();
    stamp(&m, &f, 42);
    m.lru_add(&f);
    space.insert(&cpu, &f, 0).unwrap();
    let old = f.flags.pfn();
    // Its owner's reference (besides the cache's) pins it.
    assert_eq!(m.migrate_page(&cpu, old.add(1), Gfp::MOVABLE), Err(MigrateError::Busy(old)));
    assert_eq!(f.counts.refcount(), 2, "a refused migration drops its own reference");
    // SAFETY: the page cache holds it until the space is destroyed below.
    let f = unsafe { put_keep_view(&m, &cpu, f) };
    let new = m.migrate_page(&cpu, old.add(1), Gfp::MOVABLE).unwrap();
    assert_ne!(new, old);
    assert_eq!((f.flags.pfn(), f.flags.order(), f.counts.refcount()), (new, 2, 1));
    assert!(stamped(&m, f, 42));
    assert_eq!(m.lru_len(0), 1, "still on the LRU");
    // A pin blocks migration; a locked folio too.
    let g = space.lookup(&cpu, 3).unwrap();
    assert_eq!(m.migrate_page(&cpu, new, Gfp::MOVABLE), Err(MigrateError::Busy(new)));
    assert!(m.folio_trylock(&g));
    m.folio_put(&cpu, g).unwrap();
    assert_eq!(m.migrate_page(&cpu, new, Gfp::MOVABLE), Err(MigrateError::Busy(new)));
    m.folio_unlock(f);
    // An anon folio its owner holds does not move either.
    let a = m.folio_alloc(&cpu, 0, Gfp::MOVABLE, FolioKind::Anon).unwrap();
    let ap = a.flags.pfn();
    assert_eq!(m.migrate_page(&cpu, ap, Gfp::MOVABLE), Err(MigrateError::Busy(ap)));
    assert_eq!(m.folio_put(&cpu, a), Ok(true));
    let raw = m.alloc_pages_raw(&cpu, 0, Gfp::KERNEL).unwrap();
    assert_eq!(
        m.migrate_page(&cpu, raw, Gfp::MOVABLE),
        Err(MigrateError::NotMovable { pfn: raw, tag: Tag::Undescribed })
    );
    free_raw(&m, &cpu, raw, 0).unwrap();
    assert_eq!(space.destroy(&cpu).folios, 1);
    assert_eq!(m.lru_len(0), 0);
    m.check(|_, _, _| ()).unwrap();
    m.census().unwrap();
}

/// A CPU looking cached folios up locklessly (and reading their data while pinned) races a CPU
/// migrating them: every lookup returns the folio cached at that index with its data, and
/// migrations that meet a pin fail `Busy` without harm.
#[test]
fn lockless_lookups_race_migration() {
    let m = machine();
    let space = m.address_space_create(&m.cpus().claim(0).unwrap()).unwrap();
    const N: u64 = 64;
    {
        let cpu = m.cpus().claim(0).unwrap();
        for i in 0..N {
            let f = m.folio_alloc(&cpu, (i % 2) as u32, Gfp::MOVABLE, FolioKind::File).unwrap();
            stamp(&m, &f, i * 2);
            space.insert(&cpu, &f, i * 2).unwrap();
            m.folio_put(&cpu, f).unwrap();
        }
    }
    let rounds: u64 = std::env::var("MIGRATE_STRESS_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(300);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let started = std::sync::atomic::AtomicBool::new(false);
    let (migrated, busy) = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let cpu = m.cpus().claim(1).unwrap();
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for i in 0..N {
                    let g = space.lookup(&cpu, i * 2).expect("cached");
                    assert_eq!(g.index(), i * 2);
                    assert!(stamped(&m, &g, i * 2), "data of index {} at {}", i * 2, g.flags.pfn());
                    m.folio_put(&cpu, g).unwrap();
                    n += 1;
                    started.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
            n
        });
        let cpu = m.cpus().claim(0).unwrap();
        // Migrations start once the reader is looking up (on a loaded host the scheduler may
        // otherwise run every round before the reader's first lookup: no race at all).
        while !started.load(std::sync::atomic::Ordering::Relaxed) && !reader.is_finished() {
            std::thread::yield_now();
        }
        let (mut migrated, mut busy) = (0u64, 0u64);
        // The reader pins folios all the time, so a migration may find its folio busy; on a
        // loaded host that can happen many times in a row. Keep going (bounded) until at least
        // one migration got through, so the race is really exercised.
        let mut r = 0;
        while (r < rounds || migrated == 0) && r < rounds * 1000 {
            if r >= rounds {
                std::thread::yield_now();
            }
            r += 1;
            let g = space.lookup(&cpu, (r % N) * 2).unwrap();
            let pfn = g.flags.pfn();
            m.folio_put(&cpu, g).unwrap();
            match m.migrate_page(&cpu, pfn, Gfp::MOVABLE) {
                Ok(_) => migrated += 1,
                Err(MigrateError::Busy(_)) => busy += 1,
                Err(e) => panic!("{e}"),
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
        (migrated, busy)
    });
    assert!(migrated > 0, "migrated {migrated}, busy {busy}");
    let cpu = m.cpus().claim(0).unwrap();
    space.verify().unwrap();
    for i in 0..N {
        let g = space.lookup(&cpu, i * 2).unwrap();
        assert!(stamped(&m, &g, i * 2));
        m.folio_put(&cpu, g).unwrap();
    }
    space.destroy(&cpu);
    m.check(|_, _, _| ()).unwrap();
}

/// Reads the two stamp words of the page `va` maps in `mm`, through its page-table entry.
fn read_through_tables<P: Platform>(m: &SimMachine, mm: &MmRef<'_, P>, va: u64) -> (u64, u64) {
    let (e, _) = mm.translate(va).expect("mapped");
    let p = m.platform().direct_map(e.pfn()).unwrap().cast::<u64>();
    // SAFETY: a live mapped page, direct-mapped.
    unsafe { (p.as_ptr().read(), p.as_ptr().add(511).read()) }
}

fn fill(buf: &mut [u8], seed: u64) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (seed.wrapping_mul(31).wrapping_add(i as u64 * 7) % 251) as u8;
    }
}

fn filled(buf: &[u8], seed: u64) -> bool {
    buf.iter().enumerate().all(|(i, &b)| b == (seed.wrapping_mul(31).wrapping_add(i as u64 * 7) % 251) as u8)
}

/// A zone fragmented by mapped anon folios (mapped in a parent and its fork child), mapped
/// page-cache folios, zsmalloc zspages and z3fold pages compacts into order-9 blocks: every
/// mapping follows its folio (data read back through the page tables of both mms, counts
/// unchanged), every zsmalloc / z3fold object reads back through its handle.
#[test]
fn mapped_folios_and_pool_pages_compact_with_data_intact() {
    const PAGE: u64 = 4096;
    let m = machine();
    let cpu = m.cpus().claim(0).unwrap();
    let space = m.address_space_create(&cpu).unwrap();
    let mms = m.mm_caches(&cpu).unwrap();
    let parent = mms.mm_create(&cpu, MmKind::User).unwrap();
    let (anon, fva) = (0x4000_0000u64, 0x8000_0000u64);
    parent.mmap_anon(&cpu, anon, 64 << 20).unwrap();
    parent.mmap_file(&cpu, fva, 64 << 20, space.space(), 0).unwrap();
    let zs = ZsPool::new(&m, &cpu).unwrap();
    let z3 = Z3foldPool::new(&m, &cpu).unwrap();
    let (mut anons, mut files, mut zsh, mut z3h, mut fillers) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let nowarn = Gfp::MOVABLE | Gfp::NOWARN;
    for i in 0u64.. {
        let Ok(a) = m.folio_alloc(&cpu, 0, nowarn, FolioKind::Anon) else { break };
        stamp(&m, &a, i);
        parent.map_folio(&cpu, anon + i * PAGE, &a).unwrap();
        // SAFETY: the mappings hold it until the mms are destroyed at the end.
        anons.push((i, unsafe { put_keep_view(&m, &cpu, a) }));
        let Ok(f) = m.folio_alloc(&cpu, 0, nowarn, FolioKind::File) else { break };
        stamp(&m, &f, !i);
        space.insert(&cpu, &f, i).unwrap();
        parent.map_folio(&cpu, fva + i * PAGE, &f).unwrap();
        // SAFETY: the cache and the mappings hold it until the end.
        files.push((i, unsafe { put_keep_view(&m, &cpu, f) }));
        let Ok(h) = zs.malloc(&cpu, 1500) else { break };
        fill(&mut zs.map_write(&cpu, &h).unwrap(), i);
        zsh.push((i, h));
        let Ok(h) = z3.malloc(&cpu, 1800) else { break };
        fill(&mut z3.map_write(&h).unwrap(), !i);
        z3h.push((i, h));
        for _ in 0..3 {
            if let Ok(p) = m.folio_alloc(&cpu, 0, nowarn, FolioKind::Anon) {
                fillers.push(p);
            }
        }
    }
    assert!(anons.len() > 1000, "{}", anons.len());
    for f in fillers {
        m.folio_put(&cpu, f).unwrap();
    }
    let child = parent.fork(&cpu).unwrap();
    m.drain_all_from(&cpu);
    let zone = m.zones().find(|z| z.start() <= Pfn(0x1000) && Pfn(0x1000) < z.end()).unwrap();
    let before = m.free_histogram(zone);
    assert_eq!(before[9..].iter().sum::<u64>(), 0, "fragmented: no order-9 block free: {before:?}");
    let counts0: Vec<(u32, u32)> = anons.iter().map(|(_, f)| (f.counts.refcount(), f.counts.mapcount())).collect();
    assert!(counts0.iter().all(|&c| c == (2, 2)), "each anon folio is mapped in parent and child");
    let old_pfns: Vec<Pfn> = anons.iter().map(|(_, f)| f.flags.pfn()).collect();

    let rep = m.compact_zone(&cpu, zone);
    assert!(rep.migrated > 1000, "{rep:?}");
    assert!(rep.migrated_pool_pages > 100, "{rep:?}");
    assert_eq!(rep.failed, 0, "{rep:?}");
    assert!(rep.blocks_at_least(9) >= 2, "{rep:?}");
    let moved = anons.iter().zip(&old_pfns).filter(|((_, f), &p)| f.flags.pfn() != p).count();
    assert!(moved > 100, "mapped anon folios moved: {moved}");

    for (k, &(i, f)) in anons.iter().enumerate() {
        for mm in [&parent, &child] {
            assert_eq!(mm.translate(anon + i * PAGE).unwrap().0.pfn(), f.flags.pfn(), "anon {i}");
            assert_eq!(read_through_tables(&m, mm, anon + i * PAGE), (i, !i), "anon {i} data");
        }
        assert_eq!((f.counts.refcount(), f.counts.mapcount()), counts0[k], "counts unchanged");
    }
    for &(i, f) in &files {
        assert_eq!(read_through_tables(&m, &parent, fva + i * PAGE), (!i, i), "file {i} data");
        assert_eq!(child.translate(fva + i * PAGE).unwrap().0.pfn(), f.flags.pfn());
        let g = space.lookup(&cpu, i).expect("still cached");
        assert!(std::ptr::eq(&*g, f));
        m.folio_put(&cpu, g).unwrap();
    }
    for &(i, ref h) in &zsh {
        assert!(filled(&zs.map_read(&cpu, h).unwrap(), i), "zsmalloc object {i}");
    }
    for &(i, ref h) in &z3h {
        assert!(filled(&z3.map_read(h).unwrap(), !i), "z3fold object {i}");
    }
    space.verify().unwrap();
    m.check(|_, _, _| ()).unwrap();

    child.destroy(&cpu);
    parent.destroy(&cpu);
    zs.destroy(&cpu);
    z3.destroy(&cpu);
    space.destroy(&cpu);
    m.check(|_, _, _| ()).unwrap();
}

/// `migrate_page` of mapped folios: a PMD-mapped 2 MiB anon folio shared with a fork child and
/// a PTE-mapped order-2 page-cache folio move; every entry points to the new pages, counts
/// unchanged; a pin still makes it `Busy`.
#[test]
fn migrate_page_moves_mapped_folios_and_their_entries() {
    const PAGE: u64 = 4096;
    let m = machine();
    let cpu = m.cpus().claim(0).unwrap();
    let space = m.address_space_create(&cpu).unwrap();
    let mms = m.mm_caches(&cpu).unwrap();
    let parent = mms.mm_create(&cpu, MmKind::User).unwrap();
    let (anon, fva) = (0x4000_0000u64, 0x8000_0000u64);
    parent.mmap_anon(&cpu, anon, 4 << 20).unwrap();
    parent.mmap_file(&cpu, fva, 1 << 20, space.space(), 0).unwrap();
    let a = m.folio_alloc(&cpu, 9, Gfp::MOVABLE, FolioKind::Anon).unwrap();
    stamp(&m, &a, 7);
    parent.map_folio_pmd(&cpu, anon, &a).unwrap();
    let f = m.folio_alloc(&cpu, 2, Gfp::MOVABLE, FolioKind::File).unwrap();
    stamp(&m, &f, 9);
    space.insert(&cpu, &f, 4).unwrap();
    parent.map_folio(&cpu, fva + 4 * PAGE, &f).unwrap();
    // SAFETY: the cache and the mappings hold it until the end.
    let f = unsafe { put_keep_view(&m, &cpu, f) };
    let child = parent.fork(&cpu).unwrap();
    // The owner still holds `a`: refcount = owner + 2 PMD entries; it pins the folio.
    assert_eq!((a.counts.refcount(), a.counts.mapcount()), (3, 2));
    let pin = a.clone();
    assert_eq!(m.migrate_page(&cpu, a.flags.pfn(), Gfp::MOVABLE), Err(MigrateError::Busy(a.flags.pfn())));
    m.folio_put(&cpu, pin).unwrap();
    assert_eq!(m.migrate_page(&cpu, a.flags.pfn(), Gfp::MOVABLE), Err(MigrateError::Busy(a.flags.pfn())));
    // SAFETY: the two PMD entries hold it until the mms are destroyed.
    let a = unsafe { put_keep_view(&m, &cpu, a) };
    let (ca, cf) = ((a.counts.refcount(), a.counts.mapcount()), (f.counts.refcount(), f.counts.mapcount()));
    assert_eq!((ca, cf), ((2, 2), (9, 8)), "4 PTEs per mm for the file folio, + the cache");
    let (olda, oldf) = (a.flags.pfn(), f.flags.pfn());
    let na = m.migrate_page(&cpu, olda.add(17), Gfp::MOVABLE).unwrap();
    let nf = m.migrate_page(&cpu, oldf.add(3), Gfp::MOVABLE).unwrap();
    assert!(na != olda && nf != oldf);
    assert_eq!((a.flags.pfn(), f.flags.pfn()), (na, nf));
    for mm in [&parent, &child] {
        let (e, huge) = mm.translate(anon + 5 * PAGE).unwrap();
        assert!(huge);
        assert_eq!(e.pfn(), na);
        assert_eq!(read_through_tables(&m, mm, anon), (7, !7));
        for i in 0..4 {
            assert_eq!(mm.translate(fva + (4 + i) * PAGE).unwrap().0.pfn(), nf.add(i));
        }
        assert_eq!(read_through_tables(&m, mm, fva + 4 * PAGE), (9, !9));
    }
    assert_eq!(((a.counts.refcount(), a.counts.mapcount()), (f.counts.refcount(), f.counts.mapcount())), (ca, cf));
    let g = space.lookup(&cpu, 6).unwrap();
    assert!(std::ptr::eq(&*g, f));
    m.folio_put(&cpu, g).unwrap();
    space.verify().unwrap();
    m.check(|_, _, _| ()).unwrap();
    child.destroy(&cpu);
    parent.destroy(&cpu);
    assert!(m.folio_try_get(&cpu, na).is_none(), "the last unmap freed the anon folio");
    space.destroy(&cpu);
    m.check(|_, _, _| ()).unwrap();
}

/// One CPU maps and unmaps cached file folios (order 0 and 2) in an mm while another migrates
/// them over and over (mapped ones through the rmap, unmapped ones directly). The mapper takes
/// a reference through the page cache's lookup to map a folio and puts it after, so
/// migrations meet it (`Busy`) and get through between. No stale entry is ever installed
/// (every entry left at the end points to its folio's current pages, which hold its data), and
/// counts add up.
#[test]
fn mapping_races_migration() {
    const PAGE: u64 = 4096;
    const N: u64 = 24;
    let m = machine();
    let cpu0 = m.cpus().claim(0).unwrap();
    let space = m.address_space_create(&cpu0).unwrap();
    let mms = m.mm_caches(&cpu0).unwrap();
    let mm = mms.mm_create(&cpu0, MmKind::User).unwrap();
    let va0 = 0x4000_0000u64;
    mm.mmap_file(&cpu0, va0, N * 4 * PAGE, space.space(), 0).unwrap();
    for i in 0..N {
        let f = m.folio_alloc(&cpu0, (i % 2) as u32 * 2, Gfp::MOVABLE, FolioKind::File).unwrap();
        stamp(&m, &f, i);
        space.insert(&cpu0, &f, i * 4).unwrap();
        m.folio_put(&cpu0, f).unwrap(); // the cache's reference is the only one
    }
    drop(cpu0);
    let rounds: u64 = std::env::var("MIGRATE_STRESS_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(400);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (migrated, busy) = std::thread::scope(|s| {
        let mapper = s.spawn(|| {
            let _stop = StopOnDrop(&stop);
            let cpu = m.cpus().claim(1).unwrap();
            for r in 0..rounds {
                for i in 0..N {
                    let f = space.lookup(&cpu, i * 4).expect("cached");
                    mm.map_folio(&cpu, va0 + i * 4 * PAGE, &f).unwrap();
                    m.folio_put(&cpu, f).unwrap();
                }
                // Leave the folios mapped in the last round.
                if r + 1 < rounds {
                    mm.unmap(&cpu, va0, N * 4 * PAGE).unwrap();
                }
            }
        });
        let cpu = m.cpus().claim(0).unwrap();
        let (mut migrated, mut busy) = (0u64, 0u64);
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            for i in 0..N {
                let f = space.lookup(&cpu, i * 4).expect("cached");
                let pfn = f.flags.pfn();
                m.folio_put(&cpu, f).unwrap();
                match m.migrate_page(&cpu, pfn, Gfp::MOVABLE) {
                    Ok(_) => migrated += 1,
                    Err(MigrateError::Busy(_)) => busy += 1,
                    Err(e) => panic!("{e}"),
                }
            }
        }
        mapper.join().unwrap();
        (migrated, busy)
    });
    assert!(migrated > 0, "migrated {migrated}, busy {busy}");
    let cpu = m.cpus().claim(0).unwrap();
    for i in 0..N {
        let f = space.lookup(&cpu, i * 4).unwrap();
        let n = 1u64 << f.flags.order();
        for p in 0..n {
            let (e, _) = mm.translate(va0 + (i * 4 + p) * PAGE).unwrap();
            assert_eq!(e.pfn(), f.flags.pfn().add(p), "folio {i} page {p}: a stale entry");
        }
        assert!(stamped(&m, &f, i), "folio {i} data");
        // The cache's, the entries', ours.
        assert_eq!((f.counts.refcount(), f.counts.mapcount()), (2 + n as u32, n as u32));
        m.folio_put(&cpu, f).unwrap();
    }
    // And once more, quiescent, mapped: everything still moves.
    for i in 0..N {
        let f = space.lookup(&cpu, i * 4).unwrap();
        let pfn = f.flags.pfn();
        m.folio_put(&cpu, f).unwrap();
        m.migrate_page(&cpu, pfn, Gfp::MOVABLE).unwrap();
    }
    m.check(|_, _, _| ()).unwrap();
    mm.destroy(&cpu);
    for i in 0..N {
        let f = space.lookup(&cpu, i * 4).unwrap();
        assert!(stamped(&m, &f, i));
        m.folio_put(&cpu, f).unwrap();
    }
    assert_eq!(space.destroy(&cpu).folios, N);
    m.check(|_, _, _| ()).unwrap();
}

/// Sets the flag when dropped (also while unwinding).
struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
