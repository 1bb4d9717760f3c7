//! The page cache on the simulated machine: insert, lockless lookup, delete and truncation at
//! dense, sparse and huge indices, large folios (order 2 and 9) in both memmap layouts,
//! straddling folios, lookups racing truncation and folio reuse on two CPUs, and a property
//! test against a `BTreeMap` model. Every test ends with all memory back in the allocator.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use memdesc::base::layout::{MemmapLayout, MemoryLayout};
use memdesc::folio::filemap::AddressSpaceRef;
use memdesc::folio::space::PageCacheError;
use memdesc::folio::truncate::TruncateStats;
use memdesc::folio::xarray::MAX_HEIGHT;
use memdesc::folio::{FolioKind, FolioRef};
use memdesc::memmap::desc::Folio;
use memdesc::Cpu;
use memdesc::{Config, Gfp};
use memdesc_host::torture::settled_free_pages;
use memdesc_host::{boot, SimMachine, SimPlatform};
use proptest::prelude::*;

type File<'m> = AddressSpaceRef<'m, SimPlatform>;

fn machine(layout: MemmapLayout) -> SimMachine {
    boot(&MemoryLayout::pc(1, layout), Config { nr_cpus: 2, debug_checks: true, ..Config::default() }).unwrap()
}

/// The baseline after one round trip through every cache the page cache uses.
fn warm_baseline(m: &SimMachine, cpu: &Cpu<'_>) -> u64 {
    let file = m.address_space_create(cpu).unwrap();
    let f = m.folio_alloc(cpu, 0, Gfp::MOVABLE, FolioKind::File).unwrap();
    file.insert(cpu, &f, 1 << 30).unwrap();
    m.folio_put(cpu, f).unwrap();
    file.destroy(cpu);
    settled_free_pages(m, cpu)
}

fn file_folio<'m>(m: &'m SimMachine, cpu: &Cpu<'_>, order: u32) -> FolioRef<'m> {
    m.folio_alloc(cpu, order, Gfp::MOVABLE, FolioKind::File).unwrap()
}

fn addr(f: &Folio) -> usize {
    f as *const Folio as usize
}

/// Looks up `index` and drops the reference at once; the folio's address.
fn peek(m: &SimMachine, cpu: &Cpu<'_>, file: &File<'_>, index: u64) -> Option<usize> {
    let f = file.lookup(cpu, index)?;
    let a = addr(&f);
    assert_eq!(m.folio_put(cpu, f), Ok(false), "the cache still holds a reference");
    Some(a)
}

#[test]
fn insert_lookup_delete_at_dense_sparse_and_huge_indices() {
    for layout in [MemmapLayout::Flat, MemmapLayout::TwoLevel] {
        let m = machine(layout);
        let cpu = m.cpus().claim(0).unwrap();
        let free0 = warm_baseline(&m, &cpu);
        let file = m.address_space_create(&cpu).unwrap();
        let mut indices: Vec<u64> = (0..300).collect();
        indices.extend([1 << 12, 1 << 18, (1 << 18) + 1, 1 << 30, 1 << 45, 3 << 60, u64::MAX - 1, u64::MAX]);
        let mut folios = Vec::new();
        for (n, &i) in indices.iter().enumerate() {
            let f = file_folio(&m, &cpu, 0);
            file.insert(&cpu, &f, i).unwrap();
            assert_eq!(f.counts.refcount(), 2, "the caller's and the cache's");
            assert_eq!(f.index(), i);
            assert_eq!(f.mapping(), file.space().addr());
            folios.push(f);
            if n == 299 {
                assert_eq!(file.space().height(), 2, "300 indices need two levels");
            }
        }
        assert_eq!(file.space().height(), MAX_HEIGHT, "u64::MAX needs all eleven levels");
        assert_eq!(file.nr_pages(), indices.len() as u64);
        assert_eq!(file.nr_folios(), indices.len() as u64);
        file.verify().unwrap();
        for (&i, f) in indices.iter().zip(&folios) {
            assert_eq!(peek(&m, &cpu, &file, i), Some(addr(f)), "index {i}");
        }
        for i in [300, 1 << 11, (1 << 18) + 2, (1 << 30) + 1, 1 << 44, u64::MAX - 2] {
            assert_eq!(peek(&m, &cpu, &file, i), None, "index {i}");
        }
        let mut seen = Vec::new();
        file.for_each(|i, f| {
            assert_eq!(f.index(), i);
            seen.push(i)
        });
        assert_eq!(seen, indices, "for_each walks in index order");
        // Delete the huge ones first: the tree shrinks back to two levels.
        for (&i, f) in indices.iter().zip(folios).rev() {
            assert_eq!(file.delete(&cpu, &f), Ok(false), "the caller still holds a reference");
            assert_eq!(f.mapping(), 0);
            assert_eq!(file.delete(&cpu, &f), Err(PageCacheError::NotCached));
            assert_eq!(peek(&m, &cpu, &file, i), None);
            if i == 0 {
                assert_eq!(file.space().height(), 0);
            } else if i == 299 {
                assert_eq!(file.space().height(), 2);
            } else if i < 64 {
                assert_eq!(file.space().height(), 1, "shrunk after deleting index {i}");
            }
            file.verify().unwrap();
            assert_eq!(f.counts.refcount(), 1);
            assert_eq!(m.folio_put(&cpu, f), Ok(true));
        }
        assert_eq!((file.nr_pages(), file.nr_folios()), (0, 0));
        assert_eq!(file.destroy(&cpu), TruncateStats::default());
        assert_eq!(settled_free_pages(&m, &cpu), free0, "{layout:?}");
        m.check(|_, _, _| {}).unwrap();
    }
}

#[test]
fn large_folios_are_found_at_every_covered_index() {
    for layout in [MemmapLayout::Flat, MemmapLayout::TwoLevel] {
        let m = machine(layout);
        let cpu = m.cpus().claim(0).unwrap();
        let free0 = warm_baseline(&m, &cpu);
        let file = m.address_space_create(&cpu).unwrap();
        let small = file_folio(&m, &cpu, 0);
        file.insert(&cpu, &small, 3).unwrap();
        let o2 = file_folio(&m, &cpu, 2);
        let o9 = file_folio(&m, &cpu, 9);
        let o6 = file_folio(&m, &cpu, 6);
        assert_eq!(file.insert(&cpu, &o2, 2), Err(PageCacheError::Misaligned { index: 2, order: 2 }));
        assert_eq!(file.insert(&cpu, &o2, 0), Err(PageCacheError::Occupied { index: 3 }));
        file.insert(&cpu, &o2, 4).unwrap();
        assert_eq!(file.insert(&cpu, &o9, 0), Err(PageCacheError::Occupied { index: 3 }));
        file.insert(&cpu, &o9, 1 << 20).unwrap();
        file.insert(&cpu, &o6, 64).unwrap();
        assert_eq!(o9.counts.refcount(), 2, "a refused insert took no reference");
        file.verify().unwrap();
        for (f, start, order) in [(&o2, 4u64, 2u32), (&o9, 1 << 20, 9), (&o6, 64, 6)] {
            for i in start..start + (1 << order) {
                assert_eq!(peek(&m, &cpu, &file, i), Some(addr(f)), "order {order} at {i}");
            }
            assert_ne!(peek(&m, &cpu, &file, start - 1), Some(addr(f)));
            assert_eq!(peek(&m, &cpu, &file, start + (1 << order)), None);
            // Inserting over any part of it is refused with the first cached index.
            let one = file_folio(&m, &cpu, 0);
            let mid = start + (1 << order) - 1;
            assert_eq!(file.insert(&cpu, &one, mid), Err(PageCacheError::Occupied { index: mid }));
            assert_eq!(m.folio_put(&cpu, one), Ok(true));
        }
        assert_eq!(file.nr_pages(), 1 + 4 + 512 + 64);
        for f in [small, o2, o9, o6] {
            assert_eq!(file.delete(&cpu, &f), Ok(false));
            assert_eq!(m.folio_put(&cpu, f), Ok(true));
        }
        file.verify().unwrap();
        file.destroy(&cpu);
        assert_eq!(settled_free_pages(&m, &cpu), free0, "{layout:?}");
        m.check(|_, _, _| {}).unwrap();
    }
}

#[test]
fn refusals_are_precise_and_change_nothing() {
    let m = machine(MemmapLayout::Flat);
    let cpu = m.cpus().claim(0).unwrap();
    let free0 = warm_baseline(&m, &cpu);
    let (a, b) = (m.address_space_create(&cpu).unwrap(), m.address_space_create(&cpu).unwrap());
    let anon = m.folio_alloc(&cpu, 0, Gfp::MOVABLE, FolioKind::Anon).unwrap();
    assert_eq!(a.insert(&cpu, &anon, 0), Err(PageCacheError::NotFileFolio));
    assert_eq!(anon.counts.refcount(), 1);
    let f = file_folio(&m, &cpu, 1);
    a.insert(&cpu, &f, 8).unwrap();
    assert_eq!(b.insert(&cpu, &f, 8), Err(PageCacheError::AlreadyCached { mapping: a.space().addr() }));
    assert_eq!(b.delete(&cpu, &f), Err(PageCacheError::NotCached));
    assert_eq!(b.nr_pages(), 0);
    assert_eq!(f.counts.refcount(), 2);
    // Empty and reversed ranges truncate nothing.
    #[allow(clippy::reversed_empty_ranges)]
    let stats = [a.truncate(&cpu, 9..9), a.truncate(&cpu, 10..2), a.truncate(&cpu, ..0)];
    assert_eq!(stats, [TruncateStats::default(); 3]);
    assert_eq!(a.nr_pages(), 2);
    assert_eq!(m.folio_put(&cpu, f), Ok(false));
    assert_eq!(m.folio_put(&cpu, anon), Ok(true));
    // A freed folio cannot be inserted: it takes a reference, which `folio_put` consumed
    // (the compile-time check); an anon folio is refused above.
    assert_eq!(a.destroy(&cpu), TruncateStats { folios: 1, pages: 2, ..TruncateStats::default() });
    b.destroy(&cpu);
    assert_eq!(settled_free_pages(&m, &cpu), free0);
    m.check(|_, _, _| {}).unwrap();
}

#[test]
fn truncation_splits_straddling_folios_or_removes_them_whole() {
    for layout in [MemmapLayout::Flat, MemmapLayout::TwoLevel] {
        let m = machine(layout);
        let cpu = m.cpus().claim(0).unwrap();
        let free0 = warm_baseline(&m, &cpu);
        let file = m.address_space_create(&cpu).unwrap();
        // [0, 512) order 9 | [512, 516) order 2 | 516..520 order 0 | [1024, 1032) order 3 (pinned)
        let big = file_folio(&m, &cpu, 9);
        file.insert(&cpu, &big, 0).unwrap();
        m.lru_add(&big);
        let big_pfn = big.flags.pfn();
        let o2 = file_folio(&m, &cpu, 2);
        file.insert(&cpu, &o2, 512).unwrap();
        for (f, i) in [(big, 0), (o2, 512)] {
            assert_eq!(m.folio_put(&cpu, f), Ok(false), "the cache holds the only reference of {i}");
        }
        for i in 516..520 {
            let f = file_folio(&m, &cpu, 0);
            file.insert(&cpu, &f, i).unwrap();
            assert_eq!(m.folio_put(&cpu, f), Ok(false));
        }
        let pinned = file_folio(&m, &cpu, 3);
        file.insert(&cpu, &pinned, 1024).unwrap();

        // Remove [100, 514): the order-9 folio keeps [0, 100) as order-2 pieces (100 = 25 × 4),
        // in two-level memory too (its area gets a table page from elsewhere). The order-2
        // folio keeps [514, 516) as one order-1 piece.
        let st = file.truncate(&cpu, 100..514);
        file.verify().unwrap();
        let split_big = true;
        assert_eq!(st.split, if split_big { 2 } else { 1 });
        assert_eq!(st.pages, 514 - 100 + if split_big { 0 } else { 100 });
        assert_eq!(st.dropped_outside, if split_big { 0 } else { 100 });
        assert_eq!(st.folios, if split_big { (512 - 100) / 4 + 1 } else { 2 });
        assert_eq!(st.unreleased, 0);
        for i in 0..100 {
            let got = file.lookup(&cpu, i);
            if split_big {
                let f = got.expect("kept piece");
                assert_eq!((f.index(), f.flags.order()), (i & !3, 2));
                assert_eq!(f.flags.pfn(), big_pfn.add(i & !3), "pieces keep their pages");
                assert_eq!(f.counts.refcount(), 2);
                assert_ne!(f.flags.flags() & memdesc::memmap::desc::PG_LRU, 0, "pieces follow the LRU");
                assert_eq!(m.folio_put(&cpu, f), Ok(false));
            } else {
                assert!(got.is_none());
            }
        }
        for i in 100..514 {
            assert_eq!(peek(&m, &cpu, &file, i), None, "index {i}");
        }
        for i in 514..516 {
            let f = file.lookup(&cpu, i).unwrap();
            assert_eq!((f.index(), f.flags.order()), (514, 1));
            assert_eq!(m.folio_put(&cpu, f), Ok(false));
        }
        assert!(peek(&m, &cpu, &file, 516).is_some());
        let kept = if split_big { 100 } else { 0 };
        assert_eq!(file.nr_pages(), kept + 2 + 4 + 8);
        assert_eq!(file.nr_folios(), kept / 4 + 1 + 4 + 1);

        // A straddling folio with another reference cannot be split: removed whole.
        let st = file.truncate(&cpu, 1030..=1030);
        assert_eq!((st.split, st.pages, st.dropped_outside), (0, 8, 7));
        assert_eq!(pinned.counts.refcount(), 1, "only our reference is left");
        assert_eq!(pinned.mapping(), 0);
        assert_eq!(m.folio_put(&cpu, pinned), Ok(true));

        let st = file.truncate(&cpu, ..);
        assert_eq!(st.pages, kept + 2 + 4);
        assert_eq!(file.nr_pages(), 0);
        assert_eq!(m.lru_len(0), 0, "truncation takes folios off the LRU");
        file.destroy(&cpu);
        assert_eq!(settled_free_pages(&m, &cpu), free0, "{layout:?}");
        m.check(|_, _, _| {}).unwrap();
    }
}

#[test]
fn splitting_the_only_folio_shrinks_the_tree() {
    let m = machine(MemmapLayout::Flat);
    let cpu = m.cpus().claim(0).unwrap();
    let free0 = warm_baseline(&m, &cpu);
    let file = m.address_space_create(&cpu).unwrap();
    let big = file_folio(&m, &cpu, 9);
    file.insert(&cpu, &big, 0).unwrap();
    let big_addr = addr(&big);
    assert_eq!(m.folio_put(&cpu, big), Ok(false));
    assert_eq!(file.space().height(), 2, "an order-9 folio sits in 8 slots of a level-1 root");
    // Keep [0, 32): one order-5 piece, in a leaf that becomes the root.
    let st = file.truncate(&cpu, 32..);
    assert_eq!((st.split, st.folios, st.pages), (1, 15, 480));
    file.verify().unwrap();
    assert_eq!(file.space().height(), 1);
    let f = file.lookup(&cpu, 31).unwrap();
    assert_eq!((f.index(), f.flags.order(), f.counts.refcount()), (0, 5, 2));
    assert_eq!(addr(&f), big_addr, "the first piece is the original descriptor");
    assert_eq!(m.folio_put(&cpu, f), Ok(false));
    // And an order-6 folio split at 1 keeps 64 - 1 pages as order-0 pieces.
    let o6 = file_folio(&m, &cpu, 6);
    file.insert(&cpu, &o6, 64).unwrap();
    assert_eq!(m.folio_put(&cpu, o6), Ok(false));
    let st = file.truncate(&cpu, 64..=64);
    assert_eq!((st.split, st.folios, st.pages), (1, 1, 1));
    assert_eq!(file.nr_folios(), 1 + 63);
    file.verify().unwrap();
    assert_eq!(peek(&m, &cpu, &file, 64), None);
    assert!(peek(&m, &cpu, &file, 65).is_some());
    assert_eq!(file.destroy(&cpu).pages, 32 + 63);
    assert_eq!(settled_free_pages(&m, &cpu), free0);
    m.check(|_, _, _| {}).unwrap();
}

/// A cheap deterministic generator for the stress test.
fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

#[test]
fn lookups_race_truncation_and_reuse() {
    // PAGECACHE_STRESS_ROUNDS=5000 for a longer run.
    let rounds: u64 = std::env::var("PAGECACHE_STRESS_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(150);
    let m = machine(MemmapLayout::Flat);
    let cpu0 = m.cpus().claim(0).unwrap();
    let free0 = warm_baseline(&m, &cpu0);
    let file = m.address_space_create(&cpu0).unwrap();
    let other = m.address_space_create(&cpu0).unwrap();
    // Folios at 4096.. that stay cached throughout, with a reference of our own.
    let stable: Vec<FolioRef<'_>> = (0..8)
        .map(|k| {
            let f = file_folio(&m, &cpu0, 1);
            file.insert(&cpu0, &f, 4096 + 2 * k).unwrap();
            f
        })
        .collect();
    let stop = AtomicBool::new(false);
    let (hits, stable_hits) = (AtomicU64::new(0), AtomicU64::new(0));
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let cpu1 = m.cpus().claim(1).unwrap();
            let mut rng = 0x9e37_79b9_7f4a_7c15u64;
            while !stop.load(Ordering::Relaxed) {
                let r = xorshift(&mut rng);
                let i = if r.is_multiple_of(8) { 4096 + (r >> 8) % 16 } else { (r >> 8) % 320 };
                let Some(f) = file.lookup(&cpu1, i) else {
                    assert!(!(4096..4112).contains(&i), "a folio that stays cached was missed at {i}");
                    continue;
                };
                // Pinned: it may be truncated meanwhile, but never reused for another file or
                // index while we hold it.
                let m_now = f.mapping();
                assert!(m_now == file.space().addr() || m_now == 0, "folio of another file at {i}");
                let o = f.flags.order();
                assert!(f.index() <= i && i - f.index() < 1 << o, "index {i}: folio at {} order {o}", f.index());
                assert!(f.counts.refcount() >= 1);
                hits.fetch_add(1, Ordering::Relaxed);
                if i >= 4096 {
                    stable_hits.fetch_add(1, Ordering::Relaxed);
                }
                assert!(m.folio_put(&cpu1, f).is_ok());
            }
        });
        // The rounds start once the reader hits (on a loaded host the scheduler may otherwise
        // run every round before the reader's first lookup: no race at all).
        while stable_hits.load(Ordering::Relaxed) == 0 && !reader.is_finished() {
            std::thread::yield_now();
        }
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        for round in 0..rounds {
            for target in [&file, &other] {
                // Fill [0, 320) with folios of orders 0..=3 where free.
                let mut i = 0u64;
                while i < 320 {
                    let order = (xorshift(&mut rng) % 4) as u32;
                    let order = order.min((i.trailing_zeros()).min(3));
                    let f = file_folio(&m, &cpu0, order);
                    match target.insert(&cpu0, &f, i) {
                        Ok(()) | Err(PageCacheError::Occupied { .. }) => {}
                        Err(e) => panic!("insert at {i}: {e}"),
                    }
                    assert!(m.folio_put(&cpu0, f).is_ok());
                    i += 1 << order;
                }
                // Truncate a random range, sometimes everything (freeing every node).
                let a = xorshift(&mut rng) % 320;
                let b = a + xorshift(&mut rng) % (320 - a) + 1;
                if round.is_multiple_of(4) {
                    target.truncate(&cpu0, 0..320);
                } else {
                    target.truncate(&cpu0, a..b);
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert!(hits.load(Ordering::Relaxed) > 0 && stable_hits.load(Ordering::Relaxed) > 0);
    eprintln!(
        "lookups that hit: {} (stable: {}), lookups under the lock: {}",
        hits.load(Ordering::Relaxed),
        stable_hits.load(Ordering::Relaxed),
        file.space().slow_lookups()
    );
    file.verify().unwrap();
    for f in &stable {
        assert_eq!(f.counts.refcount(), 2, "the cache's and ours: readers dropped theirs");
    }
    file.truncate(&cpu0, ..);
    for f in stable {
        assert_eq!(f.counts.refcount(), 1);
        assert_eq!(m.folio_put(&cpu0, f), Ok(true));
    }
    file.destroy(&cpu0);
    other.destroy(&cpu0);
    assert_eq!(settled_free_pages(&m, &cpu0), free0);
    m.check(|_, _, _| {}).unwrap();
}

#[derive(Clone, Debug)]
enum Op {
    Insert { base: usize, off: u64, order: u32 },
    Lookup { base: usize, off: u64 },
    Delete(usize),
    DeleteUncached,
    Truncate { base: usize, off: u64, len: u64 },
}

/// Index regions: dense, sparse, and the top of the index space.
const BASES: [u64; 4] = [0, 1 << 20, 1 << 40, u64::MAX - 1023];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..4usize, 0..1024u64, 0..=3u32).prop_map(|(base, off, order)| Op::Insert { base, off, order }),
        // Orders 6 and 7 sit one tree level up: their splits build leaves below them.
        1 => (0..4usize, 0..1024u64, 6..=7u32).prop_map(|(base, off, order)| Op::Insert { base, off, order }),
        4 => (0..4usize, 0..1024u64).prop_map(|(base, off)| Op::Lookup { base, off }),
        2 => any::<usize>().prop_map(Op::Delete),
        1 => Just(Op::DeleteUncached),
        2 => (0..4usize, 0..1024u64, 1..64u64).prop_map(|(base, off, len)| Op::Truncate { base, off, len }),
    ]
}

/// Model entry: order, and the descriptor address once known (split pieces are learned on
/// their first lookup).
type Model = BTreeMap<u64, (u32, Option<usize>)>;

/// The model entry covering `i`.
fn covering(model: &Model, i: u64) -> Option<(u64, u32, Option<usize>)> {
    let (&s, &(o, a)) = model.range(..=i).next_back()?;
    (i - s < 1 << o).then_some((s, o, a))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random insert/lookup/delete/truncate with folios of orders 0..=3 (and some of 6 and 7)
    /// against a model; the cache holds the only reference to each folio, so every straddling
    /// folio is split.
    #[test]
    fn matches_reference_model(ops in prop::collection::vec(op(), 1..200), two_level in any::<bool>()) {
        let layout = if two_level { MemmapLayout::TwoLevel } else { MemmapLayout::Flat };
        let m = machine(layout);
        let cpu = m.cpus().claim(0).unwrap();
        let free0 = warm_baseline(&m, &cpu);
        let file = m.address_space_create(&cpu).unwrap();
        let mut model = Model::new();
        for op in ops {
            match op {
                Op::Insert { base, off, order } => {
                    let i = (BASES[base] + off) & !((1u64 << order) - 1);
                    let f = file_folio(&m, &cpu, order);
                    let last = i + ((1 << order) - 1);
                    let first_taken = covering(&model, i).map(|_| i)
                        .or_else(|| model.range(i..=last).next().map(|(&s, _)| s));
                    match first_taken {
                        Some(t) => prop_assert_eq!(file.insert(&cpu, &f, i), Err(PageCacheError::Occupied { index: t })),
                        None => {
                            prop_assert_eq!(file.insert(&cpu, &f, i), Ok(()));
                            model.insert(i, (order, Some(addr(&f))));
                        }
                    }
                    prop_assert!(m.folio_put(&cpu, f).is_ok());
                }
                Op::Lookup { base, off } => {
                    let i = BASES[base] + off;
                    let got = file.lookup(&cpu, i);
                    match (covering(&model, i), got) {
                        (None, None) => {}
                        (Some((s, o, a)), Some(f)) => {
                            prop_assert_eq!((f.index(), f.flags.order()), (s, o));
                            if let Some(a) = a {
                                prop_assert_eq!(addr(&f), a);
                            }
                            model.insert(s, (o, Some(addr(&f))));
                            prop_assert_eq!(f.counts.refcount(), 2);
                            prop_assert_eq!(m.folio_put(&cpu, f), Ok(false));
                        }
                        (want, got) => prop_assert!(false, "index {}: model {:?}, cache {:?}", i, want, got.map(|f| addr(&f))),
                    }
                }
                Op::Delete(k) => {
                    if model.is_empty() {
                        continue;
                    }
                    let (&s, &(o, a)) = model.iter().nth(k % model.len()).unwrap();
                    let a = match a {
                        Some(a) => a,
                        None => {
                            let f = file.lookup(&cpu, s).unwrap();
                            let a = addr(&f);
                            prop_assert!(m.folio_put(&cpu, f).is_ok());
                            a
                        }
                    };
                    // SAFETY: a cached folio: the cache's reference keeps it alive.
                    let f = unsafe { &*(a as *const Folio) };
                    prop_assert_eq!(f.flags.order(), o);
                    prop_assert_eq!(file.delete(&cpu, f), Ok(true), "the cache held the only reference");
                    model.remove(&s);
                }
                Op::DeleteUncached => {
                    let f = file_folio(&m, &cpu, 0);
                    prop_assert_eq!(file.delete(&cpu, &f), Err(PageCacheError::NotCached));
                    prop_assert_eq!(m.folio_put(&cpu, f), Ok(true));
                }
                Op::Truncate { base, off, len } => {
                    let first = BASES[base] + off;
                    let last = first.saturating_add(len - 1);
                    let mut want = TruncateStats::default();
                    let hit: Vec<(u64, u32)> = model.iter()
                        .filter(|&(&s, &(o, _))| s <= last && s + ((1 << o) - 1) >= first)
                        .map(|(&s, &(o, _))| (s, o))
                        .collect();
                    for (s, o) in hit {
                        model.remove(&s);
                        let end = s + ((1 << o) - 1);
                        let (a, b) = (s.max(first), end.min(last));
                        want.pages += b - a + 1;
                        if s >= first && end <= last {
                            want.folios += 1;
                            continue;
                        }
                        // Split into the largest pieces aligned to the range's boundaries.
                        let mut n = o;
                        if a > s { n = n.min((a - s).trailing_zeros()); }
                        if b < end { n = n.min((b + 1 - s).trailing_zeros()); }
                        want.split += 1;
                        want.folios += (b - a + 1) >> n;
                        for p in (s..=end).step_by(1 << n) {
                            if p < a || p > b {
                                model.insert(p, (n, None));
                            }
                        }
                    }
                    prop_assert_eq!(file.truncate(&cpu, first..=last), want);
                }
            }
            prop_assert_eq!(file.verify(), Ok(()));
            prop_assert_eq!(file.nr_pages(), model.values().map(|&(o, _)| 1u64 << o).sum::<u64>());
            prop_assert_eq!(file.nr_folios(), model.len() as u64);
        }
        let pages = model.values().map(|&(o, _)| 1u64 << o).sum::<u64>();
        let st = file.destroy(&cpu);
        prop_assert_eq!((st.pages, st.folios, st.split), (pages, model.len() as u64, 0));
        prop_assert_eq!(settled_free_pages(&m, &cpu), free0);
        let checked = m.check(|_, _, _| ());
        prop_assert!(checked.is_ok(), "{:?}", checked);
    }
}
