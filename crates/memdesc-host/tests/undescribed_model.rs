//! A property test over everything issue 8 adds on a flat machine, against a reference model:
//! random sequences of anon and page-cache folio allocations and frees, hwpoison of random pfns
//! (free, per-CPU, folio, slab, reserved pages alike), unpoison, migration, compaction, range
//! offlining and onlining, and balloon inflate/deflate. After every step the allocator's
//! checker and the census pass, every live page's data is intact, no live folio sits on a
//! page the model knows is poisoned or offline, and the counters match the model.

use std::collections::{BTreeMap, BTreeSet};

use memdesc::balloon::Balloon;
use memdesc::folio::{FolioKind, FolioRef};
use memdesc::hwpoison::{PoisonAction, PoisonError, PoisonedKind};
use memdesc::memmap::desc::Folio;
use memdesc::memmap::word::PageKind;
use memdesc::migrate::MigrateError;
use memdesc::offline::OfflineError;
use memdesc::{Config, Gfp, MemmapLayout, MemoryLayout, Pfn, Platform, RegionSpec};
use memdesc_host::{boot, SimMachine};
use proptest::prelude::*;

const START: u64 = 0x1000;
const PAGES: u64 = 0x4000;

fn machine() -> SimMachine {
    let mut l = MemoryLayout::new();
    l.add_region(RegionSpec {
        start: Pfn(START),
        end: Pfn(START + PAGES),
        node: 0,
        mapped: true,
        layout: MemmapLayout::Flat,
    })
    .unwrap();
    l.reserve(Pfn(START + 0x100), Pfn(START + 0x104)).unwrap();
    boot(&l, Config { nr_cpus: 1, debug_checks: true, ..Config::default() }).unwrap()
}

fn put(m: &SimMachine, pfn: Pfn, v: u64) {
    let p = m.platform().direct_map(pfn).unwrap().cast::<u64>();
    // SAFETY: a page of a live folio the test owns.
    unsafe { p.as_ptr().add(3).write(v) };
}

fn get(m: &SimMachine, pfn: Pfn) -> u64 {
    let p = m.platform().direct_map(pfn).unwrap().cast::<u64>();
    // SAFETY: as above.
    unsafe { p.as_ptr().add(3).read() }
}

/// An anon folio the test owns (one reference, kept raw: `FolioRef::into_raw`); page `i`
/// holds `stamp + i`. It never migrates: its owner's reference pins it.
struct Anon<'m> {
    f: &'m Folio,
    stamp: u64,
    poisoned: bool,
}

#[derive(Clone, Debug)]
enum Op {
    Anon(u32),
    File(u32, u64),
    FreeAnon(usize),
    TruncateFile(u64),
    Poison(u64),
    PoisonAnon(usize, u64),
    PoisonFile(u64),
    Unpoison(usize),
    Migrate(usize),
    Compact,
    Offline(u64),
    Online(usize),
    Inflate(u64),
    Deflate(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u32..3).prop_map(Op::Anon),
        4 => (0u32..3, 0u64..64).prop_map(|(o, s)| Op::File(o, s)),
        3 => any::<usize>().prop_map(Op::FreeAnon),
        2 => (0u64..64).prop_map(Op::TruncateFile),
        3 => (0..PAGES).prop_map(Op::Poison),
        2 => (any::<usize>(), 0u64..4).prop_map(|(k, i)| Op::PoisonAnon(k, i)),
        2 => any::<u64>().prop_map(Op::PoisonFile),
        1 => any::<usize>().prop_map(Op::Unpoison),
        2 => any::<usize>().prop_map(Op::Migrate),
        1 => Just(Op::Compact),
        1 => (0..PAGES >> 10).prop_map(Op::Offline),
        1 => any::<usize>().prop_map(Op::Online),
        1 => (0u64..300).prop_map(Op::Inflate),
        1 => (0u64..300).prop_map(Op::Deflate),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn matches_reference_model(ops in prop::collection::vec(op(), 1..60)) {
        let m = machine();
        let cpu = m.cpus().claim(0).unwrap();
        let space = m.address_space_create(&cpu).unwrap();
        let balloon = Balloon::new(&m);
        let mut anon: Vec<Anon<'_>> = Vec::new();
        let mut file: BTreeMap<u64, u64> = BTreeMap::new(); // cached index -> value
        let mut poisoned: BTreeSet<Pfn> = BTreeSet::new(); // pages the model knows are HwPoison
        let mut offline: Vec<Pfn> = Vec::new();
        let mut next = 1u64 << 20;
        for op in ops {
            // Poisoning a page the model owns becomes poisoning its pfn.
            let op = match op {
                Op::PoisonAnon(k, i) if !anon.is_empty() => {
                    let f = anon[k % anon.len()].f;
                    Op::Poison(f.flags.pfn().0 + i % (1 << f.flags.order()) - START)
                }
                Op::PoisonFile(k) if !file.is_empty() => {
                    let idx = *file.keys().nth(k as usize % file.len()).unwrap();
                    let g = space.lookup(&cpu, idx).unwrap();
                    let pfn = g.flags.pfn().add(idx - g.index());
                    m.folio_put(&cpu, g).unwrap();
                    Op::Poison(pfn.0 - START)
                }
                Op::PoisonAnon(..) | Op::PoisonFile(_) => continue,
                op => op,
            };
            match op {
                Op::Anon(order) => {
                    if let Ok(f) = m.folio_alloc(&cpu, order, Gfp::MOVABLE | Gfp::NOWARN, FolioKind::Anon) {
                        for i in 0..1u64 << order {
                            let p = f.flags.pfn().add(i);
                            prop_assert!(!poisoned.contains(&p), "poisoned {} handed out", p);
                            put(&m, p, next + i);
                        }
                        anon.push(Anon { f: f.into_raw(), stamp: next, poisoned: false });
                        next += 1 << 10;
                    }
                }
                Op::File(order, slot) => {
                    let index = slot * 4;
                    if (index..index + (1 << order)).any(|i| file.contains_key(&i)) {
                        continue;
                    }
                    if let Ok(f) = m.folio_alloc(&cpu, order, Gfp::MOVABLE | Gfp::NOWARN, FolioKind::File) {
                        for i in 0..1u64 << order {
                            prop_assert!(!poisoned.contains(&f.flags.pfn().add(i)));
                            put(&m, f.flags.pfn().add(i), next + i);
                            file.insert(index + i, next + i);
                        }
                        next += 1 << 10;
                        prop_assert!(space.insert(&cpu, &f, index).is_ok());
                        m.folio_put(&cpu, f).unwrap();
                    }
                }
                Op::FreeAnon(k) => {
                    if !anon.is_empty() {
                        let a = anon.swap_remove(k % anon.len());
                        let (p, o) = (a.f.flags.pfn(), a.f.flags.order());
                        // SAFETY: the model's reference, given up once.
                        prop_assert_eq!(m.folio_put(&cpu, unsafe { FolioRef::from_raw(a.f) }), Ok(true));
                        if a.poisoned {
                            for i in 0..1u64 << o {
                                poisoned.insert(p.add(i));
                            }
                        }
                    }
                }
                Op::TruncateFile(slot) => {
                    space.truncate(&cpu, slot * 4..slot * 4 + 4);
                    for i in slot * 4..slot * 4 + 4 {
                        file.remove(&i);
                    }
                }
                Op::Poison(off) => {
                    let pfn = Pfn(START + off);
                    let owner = anon.iter().position(|a| {
                        let (p, o) = (a.f.flags.pfn(), a.f.flags.order());
                        p <= pfn && pfn < p.add(1 << o)
                    });
                    match m.memory_failure(&cpu, pfn) {
                        Ok(r) => match r.kind {
                            PoisonedKind::Free | PoisonedKind::FreePerCpu => {
                                prop_assert_eq!(r.action, PoisonAction::Recovered);
                                poisoned.insert(pfn);
                            }
                            PoisonedKind::AnonFolio { .. } => {
                                prop_assert_eq!(r.action, PoisonAction::Delayed);
                                let a = anon.swap_remove(owner.expect("the model owns every anon folio"));
                                let (p0, o) = (a.f.flags.pfn(), r.kind);
                                let order = match o { PoisonedKind::AnonFolio { order } => order, _ => 0 };
                                // The owner now owns every piece.
                                let mut seen = BTreeSet::new();
                                for i in 0..1u64 << order {
                                    let p = p0.add(i);
                                    let PageKind::AnonFolio(d) = m.memmap().load(m.platform(), p).unwrap().word.kind() else {
                                        panic!("piece {p} lost its word");
                                    };
                                    if seen.insert(d.addr()) {
                                        // SAFETY: a piece the model owns a reference to.
                                        let f = unsafe { &*(d.addr() as *const Folio) };
                                        anon.push(Anon { f, stamp: a.stamp + i, poisoned: p == pfn });
                                    }
                                }
                            }
                            PoisonedKind::FileFolio { index, mapping, .. } => {
                                prop_assert_eq!(mapping, space.space().addr());
                                prop_assert_eq!(r.action, PoisonAction::Recovered);
                                prop_assert!(file.remove(&index).is_some());
                                poisoned.insert(pfn);
                            }
                            PoisonedKind::Slab { .. } | PoisonedKind::PageTable | PoisonedKind::Undescribed(_) => {}
                            // The model makes no pool, vmalloc or driver pages.
                            k => prop_assert!(false, "unexpected kind {:?}", k),
                        },
                        Err(PoisonError::AlreadyPoisoned(_)) | Err(PoisonError::Busy(_)) => {}
                        Err(e) => prop_assert!(false, "memory_failure({}): {}", pfn, e),
                    }
                }
                Op::PoisonAnon(..) | Op::PoisonFile(_) => unreachable!("rewritten above"),
                Op::Unpoison(k) => {
                    if let Some(&p) = poisoned.iter().nth(k % poisoned.len().max(1)) {
                        prop_assert_eq!(m.unpoison(&cpu, p), Ok(()));
                        poisoned.remove(&p);
                    }
                }
                Op::Migrate(k) => {
                    if !anon.is_empty() {
                        let a = &anon[k % anon.len()];
                        match m.migrate_page(&cpu, a.f.flags.pfn(), Gfp::MOVABLE | Gfp::NOWARN) {
                            // Busy: the model's own reference pins it (migration never
                            // borrows it); a poisoned one is checked before that.
                            Err(MigrateError::Busy(_)) => {}
                            Err(MigrateError::NoTarget(_)) => {}
                            Ok(p) => prop_assert!(false, "migrated a folio its owner holds to {}", p),
                            Err(MigrateError::Poisoned(_)) => prop_assert!(a.poisoned),
                            Err(e) => prop_assert!(false, "migrate: {}", e),
                        }
                    }
                }
                Op::Compact => {
                    m.compact_all(&cpu);
                }
                Op::Offline(b) => {
                    let s = Pfn(START + (b << 10));
                    match m.offline_range(&cpu, s, s.add(1 << 10)) {
                        Ok(r) => {
                            prop_assert_eq!(r.pages, 1 << 10);
                            offline.push(s);
                        }
                        Err(OfflineError::Unmovable { .. }) | Err(OfflineError::AlreadyIsolated(_)) => {}
                        Err(e) => prop_assert!(false, "offline: {}", e),
                    }
                }
                Op::Online(k) => {
                    if !offline.is_empty() {
                        let s = offline.swap_remove(k % offline.len());
                        prop_assert_eq!(m.online_range(s, s.add(1 << 10)), Ok(1 << 10));
                    }
                }
                Op::Inflate(n) => {
                    balloon.inflate(&cpu, n);
                }
                Op::Deflate(n) => {
                    balloon.deflate(&cpu, n);
                }
            }
            // Invariants after every step.
            m.check(|p, o, _| {
                if let Some(x) = poisoned.range(p..p.add(1 << o)).next() {
                    panic!("poisoned {x} in free block {p}/{o}");
                }
            })
            .unwrap();
            let c = m.census().unwrap();
            let st = m.undescribed_stats();
            prop_assert_eq!(c.hwpoison, st.hwpoison_pages);
            prop_assert!(c.hwpoison >= poisoned.len() as u64);
            prop_assert_eq!(c.offline, st.offline_pages);
            prop_assert_eq!(c.offline, offline.len() as u64 * 1024 + balloon.stats().pages);
            prop_assert_eq!(st.hwpoison_delayed, anon.iter().filter(|a| a.poisoned).count() as u64);
            for a in &anon {
                let (p, o) = (a.f.flags.pfn(), a.f.flags.order());
                for &s in &offline {
                    prop_assert!(!(s <= p && p < s.add(1 << 10)), "folio in an offline range");
                }
                if !a.poisoned {
                    for i in 0..1u64 << o {
                        prop_assert_eq!(get(&m, p.add(i)), a.stamp + i, "anon data at {}", p.add(i));
                    }
                }
            }
            for (&idx, &v) in &file {
                let g = space.lookup(&cpu, idx);
                prop_assert!(g.is_some(), "index {} cached", idx);
                let g = g.unwrap();
                prop_assert_eq!(get(&m, g.flags.pfn().add(idx - g.index())), v, "file data at index {}", idx);
                m.folio_put(&cpu, g).unwrap();
            }
            prop_assert_eq!(space.nr_pages(), file.len() as u64);
        }
        for a in anon {
            // SAFETY: the model's reference, given up once.
            m.folio_put(&cpu, unsafe { FolioRef::from_raw(a.f) }).unwrap();
        }
        space.destroy(&cpu);
        balloon.deflate(&cpu, u64::MAX);
        for s in offline {
            m.online_range(s, s.add(1 << 10)).unwrap();
        }
        m.check(|_, _, _| ()).unwrap();
        let c = m.census().unwrap();
        prop_assert_eq!((c.offline, c.guard), (0, 0));
    }
}
