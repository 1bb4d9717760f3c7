//! Fault injection: every API run with allocation failures injected at high rates, at every
//! site class together and one at a time, must unwind cleanly: after everything is freed the
//! free pages and live slab objects are back at their start values, and the invariant checker
//! and the descriptor checker pass.

use memdesc::base::fault::{FaultConfig, FaultSite, FaultSites};
use memdesc::base::layout::{MemmapLayout, MemoryLayout};
use memdesc::folio::{FolioError, FolioExt, FolioKind, FolioRef};
use memdesc::memmap::desc::Folio;
use memdesc::pagecache::PageCacheError;
use memdesc::Cpu;
use memdesc::{AllocError, CacheArgs, Config, Gfp};
use memdesc_host::torture::{live_slab_objects, settled_free_pages};
use memdesc_host::{boot, SimMachine};

mod common;
#[allow(unused_imports)]
use common::*;

const RATES: [f64; 3] = [0.3, 0.6, 0.9];

fn machine(layout: MemmapLayout) -> SimMachine {
    boot(&MemoryLayout::pc(1, layout), Config { nr_cpus: 2, debug_checks: true, ..Config::default() }).unwrap()
}

/// Runs `body` with injection on at `rate` for `sites` on both memmap layouts, then checks that
/// nothing leaked and every checker passes. Returns the failures injected.
fn leak_checked(sites: FaultSites, rate: f64, seed: u64, body: impl Fn(&SimMachine, &Cpu<'_>)) -> u64 {
    leak_checked_with(sites, rate, seed, |_, _| (), |m, cpu, _| body(m, cpu))
}

/// As [`leak_checked`], with `setup` run before the baseline (for what stays allocated by
/// design, such as a filesystem's descriptor cache).
fn leak_checked_with<T>(
    sites: FaultSites,
    rate: f64,
    seed: u64,
    setup: impl for<'m> Fn(&'m SimMachine, &Cpu<'_>) -> T,
    body: impl Fn(&SimMachine, &Cpu<'_>, &T),
) -> u64 {
    let mut injected = 0;
    for layout in [MemmapLayout::Flat, MemmapLayout::TwoLevel] {
        let m = machine(layout);
        let cpu = m.cpus().claim(0).unwrap();
        let t = setup(&m, &cpu);
        let free0 = settled_free_pages(&m, &cpu);
        let objs0 = live_slab_objects(&m);
        m.fault().configure(FaultConfig { rate, seed, sites });
        body(&m, &cpu, &t);
        m.fault().disable();
        injected += m.fault().injected();
        assert_eq!(settled_free_pages(&m, &cpu), free0, "{layout:?} rate {rate}: pages leaked");
        assert_eq!(live_slab_objects(&m), objs0, "{layout:?} rate {rate}: slab objects leaked");
        m.check(|_, _, _| {}).unwrap_or_else(|v| panic!("{layout:?} rate {rate}: {v}"));
        m.check_descriptors(&cpu).unwrap_or_else(|v| panic!("{layout:?} rate {rate}: {v}"));
    }
    injected
}

fn failed(e: AllocError) -> bool {
    matches!(e, AllocError::Injected | AllocError::NoMemory { .. })
}

const GFPS: [Gfp; 7] = [Gfp::KERNEL, Gfp::MOVABLE, Gfp::RECLAIMABLE, Gfp::ATOMIC, Gfp::DMA32, Gfp::DMA, Gfp::ZERO];

#[test]
fn page_allocator_all_orders_and_flags() {
    for rate in RATES {
        let n = leak_checked(FaultSites::ALL, rate, 1, |m, cpu| {
            let mut got = vec![];
            for round in 0..4 {
                for order in 0..=10 {
                    for gfp in GFPS {
                        match m.alloc_pages_raw(cpu, order, gfp) {
                            Ok(p) => got.push((p, order)),
                            Err(e) => assert!(failed(e), "{e}"),
                        }
                    }
                }
                if round % 2 == 1 {
                    for (p, o) in got.drain(..) {
                        free_raw(m, cpu, p, o).unwrap();
                    }
                }
            }
            assert!(m.fault().injected_at(FaultSite::PageAlloc) > 0);
        });
        assert!(n > 0);
    }
}

#[test]
fn kmalloc_small_and_large() {
    for rate in RATES {
        leak_checked(FaultSites::ALL, rate, 2, |m, cpu| {
            let mut got = vec![];
            let mut ok = 0;
            for i in 0..3000usize {
                let size = if i % 10 == 0 { 8193 + i * 13 } else { 1 + (i * 37) % 8192 };
                match m.kmalloc_raw(cpu, size, if i % 3 == 0 { Gfp::ZERO } else { Gfp::KERNEL }) {
                    Ok(p) => {
                        ok += 1;
                        got.push(p);
                    }
                    Err(e) => assert!(failed(e), "{e}"),
                }
                if i % 7 == 0 {
                    if let Some(p) = got.pop() {
                        kfree_raw(m, cpu, p).unwrap();
                    }
                }
            }
            assert!(ok > 0, "some allocations succeed at rate {rate}");
            for p in got {
                kfree_raw(m, cpu, p).unwrap();
            }
        });
    }
}

#[test]
fn slab_caches_bulk_and_typesafe_by_rcu() {
    for rate in RATES {
        leak_checked(FaultSites::ALL, rate, 3, |m, cpu| {
            let mut caches = vec![];
            for (i, args) in [
                CacheArgs::new("fi-40", 40),
                CacheArgs { typesafe_by_rcu: true, ..CacheArgs::new("fi-rcu-700", 700) },
                CacheArgs::new("fi-2500", 2500),
            ]
            .into_iter()
            .enumerate()
            {
                // Cache creation itself may fail (per-CPU pages, the cache object): retry.
                let c = loop {
                    match m.create_cache(cpu, args) {
                        Ok(c) => break c,
                        Err(e) => assert!(failed(e), "cache {i}: {e}"),
                    }
                };
                caches.push(c);
            }
            for c in &caches {
                let mut held: Vec<Option<memdesc::slab::SlabObj>> = vec![];
                for i in 0..400 {
                    if i % 5 == 0 {
                        let mut out: Vec<Option<memdesc::slab::SlabObj>> = (0..1 + i % 13).map(|_| None).collect();
                        match c.alloc_bulk(cpu, &mut out) {
                            Ok(()) => {
                                assert!(out.iter().all(Option::is_some));
                                held.extend(out)
                            }
                            Err(e) => {
                                assert!(failed(e), "{e}");
                                assert!(out.iter().all(Option::is_none), "a failed bulk allocation keeps nothing");
                            }
                        }
                    } else {
                        match c.alloc(cpu) {
                            Ok(o) => held.push(Some(o)),
                            Err(e) => assert!(failed(e), "{e}"),
                        }
                    }
                    if i % 50 == 49 {
                        let half = held.len() / 2;
                        c.free_bulk(cpu, &mut held[half..]).unwrap();
                        held.truncate(half);
                        m.shrink_cache(cpu, c);
                    }
                }
                c.free_bulk(cpu, &mut held).unwrap();
            }
            for c in caches {
                m.destroy_cache(cpu, c).unwrap();
            }
        });
    }
}

#[repr(C, align(16))]
struct ExtFolio {
    folio: Folio,
    private: std::sync::atomic::AtomicU64,
}
// SAFETY: repr(C), Folio first, 16-aligned, all atomics, all-zero valid.
unsafe impl FolioExt for ExtFolio {
    const NAME: &'static str = "fi_ext_folio";
}

#[test]
fn folios_alloc_split_lru_and_extended() {
    for rate in RATES {
        leak_checked(FaultSites::ALL, rate, 4, |m, cpu| {
            let mut held: Vec<FolioRef<'_>> = vec![];
            for i in 0..600u32 {
                let order = [0, 1, 3, 5, 9][i as usize % 5];
                let kind = if i % 2 == 0 { FolioKind::Anon } else { FolioKind::File };
                match m.folio_alloc(cpu, order, Gfp::MOVABLE, kind) {
                    Ok(f) => {
                        if i % 3 == 0 {
                            m.lru_add(&f);
                        }
                        held.push(f);
                    }
                    Err(e) => assert!(failed(e), "{e}"),
                }
                // Split the newest large folio: a failure must leave it whole and untouched.
                if let Some(f) = held.last() {
                    let o = f.flags.order();
                    if o >= 1 && i % 4 == 0 {
                        let (pfn, refs) = (f.flags.pfn(), f.counts.refcount());
                        let mut pieces = vec![];
                        assert!(m.folio_trylock(f));
                        let r = m.folio_split(cpu, f, 0, |p| pieces.push(p));
                        m.folio_unlock(f);
                        match r {
                            Ok(()) => held.extend(pieces),
                            Err(FolioError::NoMemory(e)) => {
                                assert!(failed(e));
                                assert_eq!((f.flags.pfn(), f.flags.order(), f.counts.refcount()), (pfn, o, refs));
                            }
                            Err(FolioError::BadOrder) => {}
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
            }
            for f in held {
                m.lru_del(&f);
                assert_eq!(m.folio_put(cpu, f), Ok(true));
            }
        });
    }
}

#[test]
fn extended_folios() {
    for rate in RATES {
        leak_checked_with(
            FaultSites::ALL,
            rate,
            6,
            // A filesystem's descriptor cache lives as long as the machine.
            |m, cpu| m.register_folio_ext::<ExtFolio>(cpu).unwrap(),
            |m, cpu, ext| {
                let mut exts = vec![];
                for i in 0..300 {
                    match m.folio_alloc_ext(cpu, ext, i % 3, Gfp::MOVABLE) {
                        Ok(e) => exts.push(e),
                        Err(e) => assert!(failed(e)),
                    }
                }
                for e in exts {
                    assert_eq!(m.folio_put(cpu, e), Ok(true));
                }
            },
        );
    }
}

#[test]
fn page_cache_insert_lookup_truncate() {
    for rate in RATES {
        leak_checked(FaultSites::ALL, rate, 5, |m, cpu| {
            let file = loop {
                match m.address_space_create(cpu) {
                    Ok(f) => break f,
                    Err(e) => assert!(failed(e)),
                }
            };
            let (mut ok, mut nomem, mut occ) = (0, 0, 0);
            for i in 0..1500u64 {
                let order = [0u32, 0, 2, 3, 6, 7][i as usize % 6];
                let index = ((i * 2654435761) % 50_000) >> order << order;
                let index = if i % 11 == 0 { u64::MAX - 300 + (index % 200) } else { index } >> order << order;
                let f = match m.folio_alloc(cpu, order, Gfp::MOVABLE, FolioKind::File) {
                    Ok(f) => f,
                    Err(e) => {
                        assert!(failed(e));
                        continue;
                    }
                };
                match file.insert(cpu, &f, index) {
                    Ok(()) => ok += 1,
                    Err(PageCacheError::NoMemory(e)) => {
                        assert!(failed(e));
                        nomem += 1;
                    }
                    Err(PageCacheError::Occupied { .. }) => occ += 1,
                    Err(e) => panic!("insert: {e:?}"),
                }
                assert!(m.folio_put(cpu, f).is_ok());
                if let Some(g) = file.lookup(cpu, index) {
                    m.folio_put(cpu, g).unwrap();
                }
                if i % 40 == 39 {
                    // Straddling truncation splits large folios when it can allocate.
                    let a = (i * 7919) % 50_000;
                    let st = file.truncate(cpu, a + 1..a + 300);
                    assert_eq!(st.unreleased, 0);
                    file.verify().unwrap();
                }
                if i % 13 == 0 {
                    if let Some(g) = file.lookup(cpu, index) {
                        assert!(file.delete(cpu, &g).is_ok());
                        m.folio_put(cpu, g).unwrap();
                    }
                }
            }
            // At rate 0.9 a folio and its nodes rarely all come through.
            assert!(ok > 0 || rate > 0.8, "ok {ok} nomem {nomem} occupied {occ}");
            file.verify().unwrap();
            assert_eq!(file.destroy(cpu).unreleased, 0);
        });
    }
}

/// One site class at a time at rate 1.0 (every allocation there fails): the APIs fail with the
/// injected error and change nothing; the other classes are untouched.
#[test]
fn each_site_class_alone() {
    for site in FaultSite::ALL {
        let m = machine(MemmapLayout::TwoLevel);
        let cpu = m.cpus().claim(0).unwrap();
        let f = m.folio_alloc(&cpu, 0, Gfp::MOVABLE, FolioKind::File).unwrap();
        let file = m.address_space_create(&cpu).unwrap();
        let free0 = settled_free_pages(&m, &cpu);
        // Warm every cache used below so that only the chosen class allocates.
        kfree_raw(&m, &cpu, m.kmalloc_raw(&cpu, 64, Gfp::KERNEL).unwrap()).unwrap();
        m.folio_put(&cpu, m.folio_alloc(&cpu, 0, Gfp::MOVABLE, FolioKind::Anon).unwrap()).unwrap();
        file.insert(&cpu, &f, 5).unwrap();
        file.delete(&cpu, &f).unwrap();
        m.fault().configure(FaultConfig { rate: 1.0, seed: 9, sites: FaultSites::only(site) });
        let page = m.alloc_pages_raw(&cpu, 0, Gfp::KERNEL);
        assert_eq!(page.is_err(), site == FaultSite::PageAlloc, "{site:?}");
        let obj = m.kmalloc_raw(&cpu, 64, Gfp::KERNEL);
        assert_eq!(obj.is_err(), site == FaultSite::Slab, "{site:?}");
        let folio = m.folio_alloc(&cpu, 0, Gfp::MOVABLE, FolioKind::Anon);
        assert_eq!(
            folio.is_err(),
            matches!(site, FaultSite::Desc | FaultSite::PageAlloc),
            "{site:?}: a folio needs a descriptor and pages"
        );
        let ins = file.insert(&cpu, &f, 5);
        assert_eq!(
            matches!(ins, Err(PageCacheError::NoMemory(AllocError::Injected))),
            site == FaultSite::PageCacheNode,
            "{site:?}: {ins:?}"
        );
        assert_eq!(m.fault().injected(), m.fault().injected_at(site));
        m.fault().disable();
        if let Ok(p) = page {
            free_raw(&m, &cpu, p, 0).unwrap();
        }
        if let Ok(o) = obj {
            kfree_raw(&m, &cpu, o).unwrap();
        }
        if let Ok(g) = folio {
            m.folio_put(&cpu, g).unwrap();
        }
        file.destroy(&cpu);
        m.folio_put(&cpu, f).unwrap();
        assert!(settled_free_pages(&m, &cpu) >= free0, "{site:?}");
        m.check(|_, _, _| {}).unwrap();
        m.check_descriptors(&cpu).unwrap();
    }
}
