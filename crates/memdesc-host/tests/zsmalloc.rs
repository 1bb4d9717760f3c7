//! zsmalloc on the simulated machine: page words of component pages, objects that straddle
//! two pages, precise errors, compaction, migration of single pages (also to a caller's
//! target page), map racing compaction and migration on two CPUs, every page back after
//! destroy, and a property test against a `HashMap` model with compaction and migration in
//! the middle of the sequence.

use std::collections::HashMap;

use memdesc::base::layout::{MemmapLayout, MemoryLayout};
use memdesc::memmap::word::PageKind;
use memdesc::zsmalloc::{zs_migrate_page, Handle, ZsError, ZsMigrateError, ZsPool, ZS_MAX_ALLOC, ZS_MAX_PAGES};
use memdesc::Cpu;
use memdesc::{Config, Gfp, Pfn};
use memdesc_host::{boot, SimMachine};
use proptest::prelude::*;

mod common;
#[allow(unused_imports)]
use common::*;

fn machine(layout: MemmapLayout) -> SimMachine {
    boot(&MemoryLayout::pc(1, layout), Config { nr_cpus: 2, debug_checks: true, ..Config::default() }).unwrap()
}

/// Deterministic contents for object `seed` of `len` bytes.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn write(pool: &ZsPool<'_, memdesc_host::SimPlatform>, cpu: &Cpu<'_>, h: &Handle, data: &[u8]) {
    let mut m = pool.map_write(cpu, h).unwrap();
    assert_eq!(m.len(), data.len());
    m.copy_from_slice(data);
}

fn read(pool: &ZsPool<'_, memdesc_host::SimPlatform>, cpu: &Cpu<'_>, h: &Handle) -> Vec<u8> {
    pool.map_read(cpu, h).unwrap().to_vec()
}

fn pages(pool: &ZsPool<'_, memdesc_host::SimPlatform>, h: &Handle) -> Vec<Pfn> {
    let mut out = [Pfn(0); ZS_MAX_PAGES];
    let n = pool.pages_of(h, &mut out).unwrap();
    out[..n].to_vec()
}

/// Every component page of `h`'s zspage names one Zspage descriptor, which names the pool.
fn check_words(m: &SimMachine, cpu: &Cpu<'_>, pool: &ZsPool<'_, memdesc_host::SimPlatform>, h: &Handle) {
    let g = m.rcu().read_lock(cpu);
    let ps = pages(pool, h);
    let mut desc = None;
    for (i, &pfn) in ps.iter().enumerate() {
        match m.memmap().load(m.platform(), pfn).unwrap().word.kind() {
            PageKind::Zsmalloc(d) => {
                assert!(desc.is_none_or(|x| x == d.addr()), "one descriptor for the whole zspage");
                desc = Some(d.addr());
                let zs = d.get(&g);
                assert_eq!(zs.page(i), Some(pfn), "descriptor lists page {i}");
                assert_eq!(zs.flags.pfn(), ps[0]);
                assert_eq!(zs.flags.order(), 0, "zsmalloc pages have order 0");
                assert_ne!(zs.pool_addr(), 0, "the pool is reachable from the word");
            }
            k => panic!("pfn {pfn} of a zspage has word {k:?}"),
        }
    }
}

/// Pages that are free or held by slab caches (which keep some empty slabs for reuse), after
/// one pool has come and gone. Once a pool is destroyed this must be back where it was, and
/// no page may still hold a zsmalloc word.
fn warm(m: &SimMachine, cpu: &Cpu<'_>) -> u64 {
    let pool = ZsPool::new(m, cpu).unwrap();
    let hs: Vec<_> = (0..64).map(|i| pool.malloc(cpu, 100 + i * 60).unwrap()).collect();
    for h in hs {
        pool.free(cpu, h).unwrap();
    }
    pool.destroy(cpu);
    accounted(m)
}

fn accounted(m: &SimMachine) -> u64 {
    m.drain_all();
    let mut slab_pages = 0;
    m.for_each_cache(|c| {
        let i = m.slab_info(c);
        slab_pages += i.num_slabs * i.pagesperslab as u64;
    });
    let mut zs_pages = 0;
    for r in m.memmap().regions() {
        m.memmap().walk(m.platform(), r.start, r.end, |v| {
            zs_pages += matches!(v.word.kind(), PageKind::Zsmalloc(_)) as u64;
        });
    }
    assert_eq!(zs_pages, 0, "pages still hold zsmalloc words");
    m.nr_free_pages() + slab_pages
}

#[test]
fn objects_of_every_size_read_back_and_words_name_the_zspage() {
    for layout in [MemmapLayout::Flat, MemmapLayout::TwoLevel] {
        let m = machine(layout);
        let cpu = m.cpus().claim(0).unwrap();
        let free0 = warm(&m, &cpu);
        let pool = ZsPool::new(&m, &cpu).unwrap();
        let mut live = Vec::new();
        for (i, size) in (1..=ZS_MAX_ALLOC).step_by(37).chain([ZS_MAX_ALLOC - 8, ZS_MAX_ALLOC]).enumerate() {
            let h = pool.malloc(&cpu, size).unwrap();
            assert_eq!(pool.size_of(&h), Ok(size));
            let data = pattern(i as u64, size);
            write(&pool, &cpu, &h, &data);
            live.push((h, data));
        }
        let mut multi = 0;
        for (h, data) in &live {
            assert_eq!(&read(&pool, &cpu, h), data);
            check_words(&m, &cpu, &pool, h);
            multi += (pages(&pool, h).len() > 1) as u32;
        }
        assert!(multi > 0, "some classes use multi-page zspages");
        let st = pool.stats();
        assert_eq!(st.objects, live.len() as u64);
        assert_eq!(st.object_bytes, live.iter().map(|(_, d)| d.len() as u64).sum::<u64>());
        let mut zspages = 0;
        pool.classes(|c| zspages += c.zspages);
        assert_eq!(zspages, st.zspages);
        let first = pages(&pool, &live[0].0);
        for (h, _) in live.drain(..) {
            pool.free(&cpu, h).unwrap();
        }
        assert!(
            !matches!(m.memmap().load(m.platform(), first[0]).unwrap().word.kind(), PageKind::Zsmalloc(_)),
            "an emptied zspage's pages are no longer zsmalloc pages"
        );
        assert_eq!(pool.stats().pages, 0);
        pool.destroy(&cpu);
        assert_eq!(accounted(&m), free0, "{layout:?}: every page back");
        m.check(|_, _, _| {}).unwrap();
    }
}

#[test]
fn straddling_objects_map_through_a_copy_and_write_back() {
    let m = machine(MemmapLayout::Flat);
    let cpu = m.cpus().claim(0).unwrap();
    let pool = ZsPool::new(&m, &cpu).unwrap();
    // 3000-byte objects cannot all sit inside one page: some straddle.
    let hs: Vec<_> = (0..8).map(|_| pool.malloc(&cpu, 3000).unwrap()).collect();
    for (i, h) in hs.iter().enumerate() {
        let d = pattern(i as u64 + 100, 3000);
        write(&pool, &cpu, h, &d);
        // A read-modify-write through a second mapping.
        {
            let mut w = pool.map_write(&cpu, h).unwrap();
            assert_eq!(&w[..], &d[..], "a write mapping starts with the object's bytes");
            w[2999] ^= 0xFF;
        }
        let mut d2 = d.clone();
        d2[2999] ^= 0xFF;
        assert_eq!(read(&pool, &cpu, h), d2);
    }
    for h in hs {
        pool.free(&cpu, h).unwrap();
    }
    pool.destroy(&cpu);
}

#[test]
fn refused_operations_change_nothing() {
    let m = machine(MemmapLayout::Flat);
    let cpu = m.cpus().claim(0).unwrap();
    let pool = ZsPool::new(&m, &cpu).unwrap();
    assert_eq!(pool.malloc(&cpu, 0), Err(ZsError::InvalidSize(0)));
    assert_eq!(pool.malloc(&cpu, ZS_MAX_ALLOC + 1), Err(ZsError::InvalidSize(ZS_MAX_ALLOC + 1)));
    assert!(matches!(ZsPool::with_step(&m, &cpu, 12), Err(ZsError::InvalidStep(12))));
    let a = pool.malloc(&cpu, 500).unwrap();
    write(&pool, &cpu, &a, &pattern(1, 500));
    let (ar, aid) = (a.raw(), a.id());
    let never = probe(ar + (1000 << 12));
    let never_id = never.id();
    assert_eq!(pool.free(&cpu, never), Err(ZsError::BadHandle(never_id)));
    assert!(matches!(pool.map_read(&cpu, &probe(0)), Err(ZsError::BadHandle(_))));
    // A handle of another pool is not one of ours, even where the index and generation match.
    let other = ZsPool::new(&m, &cpu).unwrap();
    let o = other.malloc(&cpu, 500).unwrap();
    assert_eq!(pool.free(&cpu, probe(o.raw())), Err(ZsError::BadHandle(o.id())));
    assert_eq!(other.free(&cpu, probe(ar)), Err(ZsError::BadHandle(aid)));
    other.free(&cpu, o).unwrap();
    other.destroy(&cpu);
    {
        let _r = pool.map_read(&cpu, &a).unwrap();
        // (An owned handle cannot be freed while a mapping borrows it; a raw copy is refused.)
        assert_eq!(pool.free(&cpu, probe(ar)), Err(ZsError::Mapped(aid)));
        assert!(matches!(pool.map_write(&cpu, &a), Err(ZsError::AlreadyMapped(x)) if x == aid));
        let pfn = pages(&pool, &a)[0];
        assert_eq!(zs_migrate_page(&m, &cpu, pfn), Err(ZsMigrateError::Busy(pfn)));
    }
    assert_eq!(read(&pool, &cpu, &a), pattern(1, 500), "nothing changed");
    pool.free(&cpu, a).unwrap();
    assert_eq!(pool.free(&cpu, probe(ar)), Err(ZsError::DoubleFree(aid)));
    assert!(matches!(pool.map_read(&cpu, &probe(ar)), Err(ZsError::DoubleFree(_))));
    // The slot is reused: the old handle is now stale, the new one works.
    let b = pool.malloc(&cpu, 500).unwrap();
    assert_ne!(aid, b.id());
    assert_eq!(pool.free(&cpu, probe(ar)), Err(ZsError::StaleHandle(aid)));
    assert_eq!(pool.size_of(&b), Ok(500));
    // Migration refuses what is not a zsmalloc page.
    let raw = m.alloc_pages_raw(&cpu, 0, Gfp::KERNEL).unwrap();
    assert_eq!(zs_migrate_page(&m, &cpu, raw), Err(ZsMigrateError::NotZsmalloc(raw)));
    let bad = Pfn(1 << 39);
    assert_eq!(zs_migrate_page(&m, &cpu, bad), Err(ZsMigrateError::OutOfRange(bad)));
    // (A target that is not a raw order-0 allocation: the crate's own test
    // `pools::zsmalloc::migrate::tests::a_target_must_be_a_raw_order0_allocation`.)
    free_raw(&m, &cpu, raw, 0).unwrap();
    pool.free(&cpu, b).unwrap();
    pool.destroy(&cpu);
}

#[test]
fn migration_moves_a_page_and_keeps_every_object() {
    let m = machine(MemmapLayout::Flat);
    let cpu = m.cpus().claim(0).unwrap();
    let free0 = warm(&m, &cpu);
    let pool = ZsPool::new(&m, &cpu).unwrap();
    let mut live = Vec::new();
    for (i, size) in [200usize, 1500, 3000, 4096, 777].into_iter().cycle().take(60).enumerate() {
        let h = pool.malloc(&cpu, size).unwrap();
        let d = pattern(i as u64, size);
        write(&pool, &cpu, &h, &d);
        live.push((h, d));
    }
    for round in 0..3 {
        for (h, _) in &live {
            for (k, old) in pages(&pool, h).into_iter().enumerate() {
                let new = if round == 1 {
                    // Through the machine's migration (the pool's move to a given target is
                    // crate-private: see its test in pools::zsmalloc::migrate).
                    m.migrate_page(&cpu, old, Gfp::MOVABLE).unwrap()
                } else {
                    zs_migrate_page(&m, &cpu, old).unwrap()
                };
                assert_ne!(new, old);
                assert_eq!(pages(&pool, h)[k], new);
                assert!(
                    !matches!(m.memmap().load(m.platform(), old).unwrap().word.kind(), PageKind::Zsmalloc(_)),
                    "the old page left the zspage"
                );
                check_words(&m, &cpu, &pool, h);
            }
        }
        for (h, d) in &live {
            assert_eq!(&read(&pool, &cpu, h), d, "round {round}");
        }
        pool.verify().unwrap();
    }
    for (h, _) in live {
        pool.free(&cpu, h).unwrap();
    }
    pool.destroy(&cpu);
    assert_eq!(accounted(&m), free0);
}

#[test]
fn compaction_frees_sparse_zspages_and_keeps_data() {
    let m = machine(MemmapLayout::Flat);
    let cpu = m.cpus().claim(0).unwrap();
    let pool = ZsPool::new(&m, &cpu).unwrap();
    let mut live = Vec::new();
    for i in 0..2000u64 {
        let size = 64 + (i as usize * 131) % 3000;
        let h = pool.malloc(&cpu, size).unwrap();
        let d = pattern(i, size);
        write(&pool, &cpu, &h, &d);
        live.push((h, d));
    }
    // Free two of every three objects.
    let mut kept = Vec::new();
    for (i, (h, d)) in live.into_iter().enumerate() {
        if i % 3 == 0 {
            kept.push((h, d));
        } else {
            pool.free(&cpu, h).unwrap();
        }
    }
    let before = pool.stats();
    let st = pool.compact(&cpu);
    let after = pool.stats();
    assert!(st.objects_moved > 0 && st.pages_freed > 0, "{st:?}");
    pool.verify().unwrap();
    assert_eq!(before.pages - after.pages, st.pages_freed);
    assert_eq!(after.objects, kept.len() as u64);
    assert_eq!(after.object_bytes, before.object_bytes);
    for (h, d) in &kept {
        assert_eq!(&read(&pool, &cpu, h), d);
    }
    // Nothing is left to gain: a second run moves nothing, and every class has the fewest
    // zspages its objects fit in.
    assert_eq!(pool.compact(&cpu), Default::default());
    pool.classes(|c| assert_eq!(c.zspages, c.objects.div_ceil(c.objs as u64), "{c:?}"));
    pool.destroy(&cpu);
}

/// A class's last sparse zspage is emptied into larger classes' free slots: objects keep
/// their handles and contents, can be freed from there, and pool pages only go down.
#[test]
fn compaction_moves_objects_into_larger_classes() {
    let m = machine(MemmapLayout::Flat);
    let cpu = m.cpus().claim(0).unwrap();
    let pool = ZsPool::new(&m, &cpu).unwrap();
    let mut live = Vec::new();
    // One partly used zspage in each of seven classes.
    for (i, size) in [100usize, 200, 300, 400, 500, 600, 700].into_iter().enumerate() {
        for j in 0..3 {
            let h = pool.malloc(&cpu, size).unwrap();
            let d = pattern((i * 10 + j) as u64, size);
            write(&pool, &cpu, &h, &d);
            live.push((h, d));
        }
    }
    let before = pool.stats();
    assert_eq!(before.zspages, 7);
    let st = pool.compact(&cpu);
    pool.verify().unwrap();
    let after = pool.stats();
    assert!(st.objects_moved >= 3 && st.pages_freed > 0, "{st:?}");
    assert_eq!(before.pages - after.pages, st.pages_freed);
    assert!(after.zspages < before.zspages);
    let mut small = 0;
    pool.classes(|c| {
        if c.slot < 120 {
            small += c.objects;
        }
    });
    assert_eq!(small, 0, "the 100-byte objects moved to a larger class");
    for (h, d) in &live {
        assert_eq!(&read(&pool, &cpu, h), d);
        assert_eq!(pool.size_of(h), Ok(d.len()));
    }
    for (h, _) in live {
        pool.free(&cpu, h).unwrap();
    }
    assert_eq!(
        pool.stats(),
        memdesc::zsmalloc::ZsStats {
            metadata_bytes: pool.stats().metadata_bytes,
            classes: after.classes,
            ..Default::default()
        }
    );
    pool.destroy(&cpu);
}

#[test]
fn destroy_with_live_objects_returns_every_page() {
    let m = machine(MemmapLayout::TwoLevel);
    let cpu = m.cpus().claim(0).unwrap();
    let free0 = warm(&m, &cpu);
    let pool = ZsPool::new(&m, &cpu).unwrap();
    // Enough objects for a second handle-table chunk.
    for i in 0..1200 {
        // The handles are dropped on purpose: destroy takes back what they own.
        let _ = pool.malloc(&cpu, 16 + i % 2000).unwrap();
    }
    assert!(pool.stats().metadata_bytes > 2 * 4096);
    pool.destroy(&cpu);
    assert_eq!(accounted(&m), free0);
    m.check(|_, _, _| {}).unwrap();
}

/// One CPU maps, writes and reads its objects in a loop while the other compacts the pool and
/// migrates the component pages of those same objects: a mapping never sees its bytes move,
/// and every object reads back intact.
#[test]
fn map_races_compaction_and_migration_on_two_cpus() {
    let m = machine(MemmapLayout::Flat);
    let pool = {
        let cpu = m.cpus().claim(0).unwrap();
        ZsPool::new(&m, &cpu).unwrap()
    };
    let objs: Vec<(Handle, usize)> = {
        let cpu = m.cpus().claim(0).unwrap();
        (0..300usize)
            .map(|i| {
                let size = 100 + (i * 97) % 3500;
                let h = pool.malloc(&cpu, size).unwrap();
                write(&pool, &cpu, &h, &pattern(i as u64, size));
                (h, size)
            })
            .collect()
    };
    // Make sparse zspages for compaction to work on: free every other object.
    let mut keep: Vec<(u64, Handle, usize)> = Vec::new();
    {
        let cpu = m.cpus().claim(0).unwrap();
        for (i, (h, s)) in objs.into_iter().enumerate() {
            if i % 2 == 0 {
                keep.push((i as u64, h, s));
            } else {
                pool.free(&cpu, h).unwrap();
            }
        }
    }
    let rounds = 60;
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            // Stops the other thread even if this one panics.
            let _stop = StopOnDrop(&stop);
            let cpu = m.cpus().claim(0).unwrap();
            for r in 0..rounds {
                for &(i, ref h, size) in &keep {
                    let expect = pattern(i + r as u64, size);
                    {
                        let mut w = pool.map_write(&cpu, h).unwrap();
                        assert_eq!(&w[..], &pattern(i + r as u64 - (r > 0) as u64, size)[..]);
                        w.copy_from_slice(&pattern(i + r as u64 + 1, size));
                    }
                    // Undo to the next round's expected bytes through a second mapping.
                    let mut w = pool.map_write(&cpu, h).unwrap();
                    w.copy_from_slice(&expect);
                    drop(w);
                    let got = pool.map_read(&cpu, h).unwrap();
                    assert_eq!(&got[..], &expect[..]);
                }
            }
        });
        s.spawn(|| {
            let cpu = m.cpus().claim(1).unwrap();
            let (mut moved, mut migrated, mut busy) = (0, 0, 0);
            let mut r = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || (migrated == 0 && r < 100_000) {
                r += 1;
                // Let the mapper run (the host's CPUs are shared; a preempted lock holder
                // would make the other spin).
                std::thread::sleep(std::time::Duration::from_micros(100));
                if r % 10 == 0 {
                    moved += pool.compact(&cpu).objects_moved;
                }
                let (_, ref h, _) = keep[r % keep.len()];
                let mut out = [Pfn(0); ZS_MAX_PAGES];
                let n = pool.pages_of(h, &mut out).unwrap();
                for &p in &out[..n] {
                    match zs_migrate_page(&m, &cpu, p) {
                        Ok(_) => migrated += 1,
                        Err(ZsMigrateError::Busy(_)) | Err(ZsMigrateError::NotZsmalloc(_)) => busy += 1,
                        Err(e) => panic!("migration failed: {e}"),
                    }
                }
            }
            assert!(migrated > 0, "moved {moved}, migrated {migrated}, busy {busy}");
        });
    });
    let cpu = m.cpus().claim(0).unwrap();
    for &(i, ref h, size) in &keep {
        assert_eq!(read(&pool, &cpu, h), pattern(i + rounds as u64 - 1, size));
    }
    pool.verify().unwrap();
    pool.destroy(&cpu);
}

#[derive(Clone, Debug)]
enum Op {
    Alloc(usize),
    Free(usize),
    Write(usize, u64),
    Read(usize),
    Compact,
    Migrate(usize, usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop_oneof![1usize..200, 200usize..3000, 3000usize..=ZS_MAX_ALLOC].prop_map(Op::Alloc),
        4 => any::<usize>().prop_map(Op::Free),
        2 => (any::<usize>(), any::<u64>()).prop_map(|(i, s)| Op::Write(i, s)),
        2 => any::<usize>().prop_map(Op::Read),
        1 => Just(Op::Compact),
        2 => (any::<usize>(), 0usize..4).prop_map(|(i, k)| Op::Migrate(i, k)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random alloc/free/write/read with compaction and migration mixed in, against a
    /// `HashMap` of handle → bytes: every object reads back intact after any number of
    /// compactions and migrations, freed handles are refused, component words always name
    /// their zspage, and destroy returns every page.
    #[test]
    fn matches_reference_model(ops in proptest::collection::vec(op(), 1..250), step in prop_oneof![Just(8usize), Just(16), Just(32)]) {
        let m = machine(MemmapLayout::Flat);
        let cpu = m.cpus().claim(0).unwrap();
        let free0 = warm(&m, &cpu);
        let pool = ZsPool::with_step(&m, &cpu, step).unwrap();
        // The model is keyed by the handles' raw values; `order` owns the live handles.
        let mut model: HashMap<u64, Vec<u8>> = HashMap::new();
        let mut order: Vec<Handle> = Vec::new();
        let mut freed: Vec<u64> = Vec::new();
        for (n, op) in ops.into_iter().enumerate() {
            match op {
                Op::Alloc(size) => {
                    let h = pool.malloc(&cpu, size).unwrap();
                    prop_assert!(!model.contains_key(&h.raw()));
                    let d = pattern(n as u64, size);
                    write(&pool, &cpu, &h, &d);
                    model.insert(h.raw(), d);
                    order.push(h);
                }
                Op::Free(i) if !order.is_empty() => {
                    let h = order.swap_remove(i % order.len());
                    let r = h.raw();
                    model.remove(&r);
                    pool.free(&cpu, h).unwrap();
                    prop_assert!(pool.free(&cpu, probe(r)).is_err());
                    freed.push(r);
                }
                Op::Write(i, s) if !order.is_empty() => {
                    let h = &order[i % order.len()];
                    let d = pattern(s, model[&h.raw()].len());
                    write(&pool, &cpu, h, &d);
                    model.insert(h.raw(), d);
                }
                Op::Read(i) if !order.is_empty() => {
                    let h = &order[i % order.len()];
                    prop_assert_eq!(&read(&pool, &cpu, h), &model[&h.raw()]);
                    check_words(&m, &cpu, &pool, h);
                }
                Op::Compact => {
                    let before = pool.stats();
                    let st = pool.compact(&cpu);
                    prop_assert_eq!(before.pages - pool.stats().pages, st.pages_freed);
                }
                Op::Migrate(i, k) if !order.is_empty() => {
                    let h = &order[i % order.len()];
                    let ps = pages(&pool, h);
                    let old = ps[k % ps.len()];
                    let new = zs_migrate_page(&m, &cpu, old).unwrap();
                    prop_assert_eq!(pages(&pool, h)[k % ps.len()], new);
                }
                _ => {}
            }
            prop_assert_eq!(pool.verify(), Ok(()));
        }
        prop_assert_eq!(order.len(), model.len());
        for h in &order {
            prop_assert_eq!(&read(&pool, &cpu, h), &model[&h.raw()]);
        }
        for &r in &freed {
            prop_assert!(pool.map_read(&cpu, &probe(r)).is_err(), "freed handles stay refused");
        }
        let st = pool.stats();
        prop_assert_eq!(st.objects, model.len() as u64);
        prop_assert_eq!(st.object_bytes, model.values().map(|d| d.len() as u64).sum::<u64>());
        pool.destroy(&cpu);
        prop_assert_eq!(accounted(&m), free0);
    }
}

/// Sets the flag when dropped (also while unwinding).
struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
