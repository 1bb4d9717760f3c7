//! z3fold on the simulated machine: three objects per page with the page word naming its
//! descriptor, precise errors, compaction of the middle object (moved next to the first, or
//! promoted to first/last), map racing compaction on two CPUs, every page back after destroy,
//! migration of a page (handles follow, a mapped object makes it `Busy`), and a property test
//! against a `HashMap` model with compaction and migration in the middle of the sequence.

use std::collections::HashMap;

use memdesc::base::layout::{MemmapLayout, MemoryLayout};
use memdesc::memmap::word::PageKind;
use memdesc::z3fold::{z3fold_migrate_page, Buddy, Z3Error, Z3foldPool, Z3_MAX_ALLOC};
use memdesc::zsmalloc::Handle;
use memdesc::Cpu;
use memdesc::{Config, Pfn};
use memdesc_host::{boot, SimMachine, SimPlatform};
use proptest::prelude::*;

mod common;
#[allow(unused_imports)]
use common::*;

fn machine() -> SimMachine {
    boot(&MemoryLayout::pc(1, MemmapLayout::Flat), Config { nr_cpus: 2, debug_checks: true, ..Config::default() })
        .unwrap()
}

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

type Pool<'m> = Z3foldPool<'m, SimPlatform>;

fn write(pool: &Pool<'_>, h: &Handle, d: &[u8]) {
    pool.map_write(h).unwrap().copy_from_slice(d);
}

fn read(pool: &Pool<'_>, h: &Handle) -> Vec<u8> {
    pool.map_read(h).unwrap().to_vec()
}

/// The page word of `h`'s page names a z3fold descriptor of this pool's state.
fn check_word(m: &SimMachine, cpu: &Cpu<'_>, pool: &Pool<'_>, h: &Handle) {
    let (pfn, _) = pool.location(h).unwrap();
    let g = m.rcu().read_lock(cpu);
    match m.memmap().load(m.platform(), pfn).unwrap().word.kind() {
        PageKind::Z3fold(d) => {
            let d = d.get(&g);
            assert_eq!(d.flags.pfn(), pfn);
            assert_ne!(d.pool_addr(), 0);
        }
        k => panic!("z3fold page {pfn} has word {k:?}"),
    }
}

/// Free pages plus slab pages; no page may still hold a z3fold word.
fn accounted(m: &SimMachine) -> u64 {
    m.drain_all();
    let mut slab_pages = 0;
    m.for_each_cache(|c| {
        let i = m.slab_info(c);
        slab_pages += i.num_slabs * i.pagesperslab as u64;
    });
    let mut z3 = 0;
    for r in m.memmap().regions() {
        m.memmap().walk(m.platform(), r.start, r.end, |v| z3 += matches!(v.word.kind(), PageKind::Z3fold(_)) as u64);
    }
    assert_eq!(z3, 0, "pages still hold z3fold words");
    m.nr_free_pages() + slab_pages
}

fn warm(m: &SimMachine, cpu: &Cpu<'_>) -> u64 {
    let pool = Z3foldPool::new(m, cpu).unwrap();
    let hs: Vec<_> = (0..40).map(|i| pool.malloc(cpu, 100 + i * 50).unwrap()).collect();
    for h in hs {
        pool.free(cpu, h).unwrap();
    }
    pool.destroy(cpu);
    accounted(m)
}

#[test]
fn three_objects_share_a_page() {
    let m = machine();
    let cpu = m.cpus().claim(0).unwrap();
    let free0 = warm(&m, &cpu);
    let pool = Z3foldPool::new(&m, &cpu).unwrap();
    let a = pool.malloc(&cpu, 1000).unwrap();
    let b = pool.malloc(&cpu, 1000).unwrap();
    let c = pool.malloc(&cpu, 1000).unwrap();
    let (pa, wa) = pool.location(&a).unwrap();
    let (pb, wb) = pool.location(&b).unwrap();
    let (pc, wc) = pool.location(&c).unwrap();
    assert_eq!((pa, pb), (pa, pc), "one page");
    assert_eq!((wa, wb, wc), (Buddy::First, Buddy::Last, Buddy::Middle));
    for (i, h) in [&a, &b, &c].into_iter().enumerate() {
        write(&pool, h, &pattern(i as u64, 1000));
        check_word(&m, &cpu, &pool, h);
    }
    for (i, h) in [&a, &b, &c].into_iter().enumerate() {
        assert_eq!(read(&pool, h), pattern(i as u64, 1000), "objects do not overlap");
    }
    let d = pool.malloc(&cpu, 2000).unwrap();
    assert_ne!(pool.location(&d).unwrap().0, pa, "a full page takes nothing more");
    assert_eq!(pool.stats().pages, 2);
    let full = pool.malloc(&cpu, Z3_MAX_ALLOC).unwrap();
    write(&pool, &full, &pattern(9, Z3_MAX_ALLOC));
    assert_eq!(read(&pool, &full), pattern(9, Z3_MAX_ALLOC));
    for h in [a, b, c, d, full] {
        pool.free(&cpu, h).unwrap();
    }
    assert_eq!(pool.stats().pages, 0);
    assert!(!matches!(m.memmap().load(m.platform(), pa).unwrap().word.kind(), PageKind::Z3fold(_)));
    pool.destroy(&cpu);
    assert_eq!(accounted(&m), free0);
}

#[test]
fn refused_operations_change_nothing() {
    let m = machine();
    let cpu = m.cpus().claim(0).unwrap();
    let pool = Z3foldPool::new(&m, &cpu).unwrap();
    assert_eq!(pool.malloc(&cpu, 0), Err(Z3Error::InvalidSize(0)));
    assert_eq!(pool.malloc(&cpu, Z3_MAX_ALLOC + 1), Err(Z3Error::InvalidSize(Z3_MAX_ALLOC + 1)));
    let a = pool.malloc(&cpu, 300).unwrap();
    write(&pool, &a, &pattern(3, 300));
    let (ar, aid) = (a.raw(), a.id());
    let never = probe(ar + (77 << 12));
    let never_id = never.id();
    assert_eq!(pool.free(&cpu, never), Err(Z3Error::BadHandle(never_id)));
    let other = Z3foldPool::new(&m, &cpu).unwrap();
    let o = other.malloc(&cpu, 300).unwrap();
    assert_eq!(pool.free(&cpu, probe(o.raw())), Err(Z3Error::BadHandle(o.id())), "a handle of another pool");
    other.free(&cpu, o).unwrap();
    other.destroy(&cpu);
    {
        let _r = pool.map_read(&a).unwrap();
        // (An owned handle cannot be freed while a mapping borrows it; a raw copy is refused.)
        assert_eq!(pool.free(&cpu, probe(ar)), Err(Z3Error::Mapped(aid)));
        assert!(matches!(pool.map_write(&a), Err(Z3Error::AlreadyMapped(_))));
    }
    assert_eq!(read(&pool, &a), pattern(3, 300));
    pool.free(&cpu, a).unwrap();
    assert_eq!(pool.free(&cpu, probe(ar)), Err(Z3Error::DoubleFree(aid)));
    let b = pool.malloc(&cpu, 300).unwrap();
    assert_eq!(pool.free(&cpu, probe(ar)), Err(Z3Error::StaleHandle(aid)));
    pool.free(&cpu, b).unwrap();
    pool.destroy(&cpu);
}

#[test]
fn compaction_moves_and_promotes_the_middle_object() {
    let m = machine();
    let cpu = m.cpus().claim(0).unwrap();
    let pool = Z3foldPool::new(&m, &cpu).unwrap();
    // Page 1: first, last, middle; free the first: the middle becomes the first.
    let f = pool.malloc(&cpu, 1000).unwrap();
    let l = pool.malloc(&cpu, 1000).unwrap();
    let mid = pool.malloc(&cpu, 900).unwrap();
    write(&pool, &mid, &pattern(5, 900));
    write(&pool, &l, &pattern(6, 1000));
    assert_eq!(pool.location(&mid).unwrap().1, Buddy::Middle);
    pool.free(&cpu, f).unwrap();
    // A 1500-byte object does not fit before the middle (16 chunks) or anywhere else.
    let st = pool.compact();
    assert_eq!((st.objects_moved, st.promoted), (1, 1));
    assert_eq!(pool.location(&mid).unwrap().1, Buddy::First, "the handle follows the move");
    assert_eq!(read(&pool, &mid), pattern(5, 900));
    assert_eq!(read(&pool, &l), pattern(6, 1000));
    // Now the free space is one run: a 2000-byte object fits in the same page as a middle.
    let big = pool.malloc(&cpu, 2000).unwrap();
    assert_eq!(pool.location(&big).unwrap().0, pool.location(&mid).unwrap().0);
    assert_eq!(pool.compact(), Default::default(), "nothing left to move");
    // A mapped page is left alone.
    let m2 = pool.malloc(&cpu, 100).unwrap();
    let m3 = pool.malloc(&cpu, 100).unwrap();
    let m4 = pool.malloc(&cpu, 100).unwrap();
    assert_eq!(pool.location(&m4).unwrap().1, Buddy::Middle);
    write(&pool, &m4, &pattern(8, 100));
    pool.free(&cpu, m2).unwrap();
    {
        let _g = pool.map_read(&m3).unwrap();
        assert_eq!(pool.compact().objects_moved, 0);
    }
    assert_eq!(pool.compact().objects_moved, 1);
    assert_eq!(read(&pool, &m4), pattern(8, 100));
    pool.destroy(&cpu);
}

#[test]
fn map_races_compaction_on_two_cpus() {
    const ROUNDS: u64 = 40;
    let m = machine();
    let pool = {
        let cpu = m.cpus().claim(0).unwrap();
        Z3foldPool::new(&m, &cpu).unwrap()
    };
    let keep: Vec<(u64, Handle, usize)> = {
        let cpu = m.cpus().claim(0).unwrap();
        let mut keep = Vec::new();
        for i in 0..300u64 {
            let size = 100 + (i as usize * 89) % 1200;
            let h = pool.malloc(&cpu, size).unwrap();
            write(&pool, &h, &pattern(i, size));
            if i % 3 == 0 {
                pool.free(&cpu, h).unwrap();
            } else {
                keep.push((i, h, size));
            }
        }
        keep
    };
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            // Stops the other thread even if this one panics.
            let _stop = StopOnDrop(&stop);
            let _cpu = m.cpus().claim(0).unwrap();
            for r in 0..ROUNDS {
                for &(i, ref h, size) in &keep {
                    let mut w = pool.map_write(h).unwrap();
                    assert_eq!(&w[..], &pattern(i + r, size)[..]);
                    w.copy_from_slice(&pattern(i + r + 1, size));
                }
            }
        });
        s.spawn(|| {
            let cpu = m.cpus().claim(1).unwrap();
            let mut n = 0;
            // Keep making middles movable: free and reallocate one first object per round.
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let h = pool.malloc(&cpu, 64 + n % 500).unwrap();
                n += pool.compact().objects_moved as usize;
                pool.free(&cpu, h).unwrap();
                // Let the mapper run (the host's CPUs are shared; a preempted lock holder
                // would make the other spin).
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        });
    });
    for &(i, ref h, size) in &keep {
        assert_eq!(read(&pool, h), pattern(i + ROUNDS, size));
    }
    let cpu = m.cpus().claim(0).unwrap();
    pool.destroy(&cpu);
}

#[test]
fn migration_moves_the_page_and_refuses_a_mapped_one() {
    let m = machine();
    let cpu = m.cpus().claim(0).unwrap();
    let pool = Z3foldPool::new(&m, &cpu).unwrap();
    let hs: Vec<Handle> = (0..3).map(|i| pool.malloc(&cpu, 1000 + i).unwrap()).collect();
    for (i, h) in hs.iter().enumerate() {
        write(&pool, h, &pattern(i as u64, 1000 + i));
    }
    let old = pool.location(&hs[0]).unwrap().0;
    assert!(hs.iter().all(|h| pool.location(h).unwrap().0 == old));
    {
        let _g = pool.map_read(&hs[1]).unwrap();
        assert_eq!(z3fold_migrate_page(&m, &cpu, old), Err(memdesc::zsmalloc::ZsMigrateError::Busy(old)));
    }
    let new = z3fold_migrate_page(&m, &cpu, old).unwrap();
    for (i, h) in hs.iter().enumerate() {
        assert_eq!(pool.location(h).unwrap().0, new);
        assert_eq!(read(&pool, h), pattern(i as u64, 1000 + i));
        check_word(&m, &cpu, &pool, h);
    }
    assert!(!matches!(m.memmap().load(m.platform(), old).unwrap().word.kind(), PageKind::Z3fold(_)));
    for h in hs {
        pool.free(&cpu, h).unwrap();
    }
    pool.destroy(&cpu);
    m.check(|_, _, _| ()).unwrap();
}

#[derive(Clone, Debug)]
enum Op {
    Alloc(usize),
    Free(usize),
    Write(usize, u64),
    Read(usize),
    Compact,
    /// Migrate the page of object `i` (to a page the pool allocates, or to one we give it).
    Migrate(usize, bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => prop_oneof![1usize..300, 300usize..2000, 2000usize..=Z3_MAX_ALLOC].prop_map(Op::Alloc),
        4 => any::<usize>().prop_map(Op::Free),
        2 => (any::<usize>(), any::<u64>()).prop_map(|(i, s)| Op::Write(i, s)),
        2 => any::<usize>().prop_map(Op::Read),
        2 => Just(Op::Compact),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(i, t)| Op::Migrate(i, t)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random alloc/free/write/read with compaction and page migration mixed in, against a
    /// `HashMap` model: objects read back intact after any number of compactions and
    /// migrations, no two live objects of a
    /// page overlap, freed handles are refused, destroy returns every page.
    #[test]
    fn matches_reference_model(ops in proptest::collection::vec(op(), 1..250)) {
        let m = machine();
        let cpu = m.cpus().claim(0).unwrap();
        let free0 = warm(&m, &cpu);
        let pool = Z3foldPool::new(&m, &cpu).unwrap();
        // The model is keyed by the handles' raw values; `order` owns the live handles.
        let mut model: HashMap<u64, Vec<u8>> = HashMap::new();
        let mut order: Vec<Handle> = Vec::new();
        for (n, op) in ops.into_iter().enumerate() {
            match op {
                Op::Alloc(size) => {
                    let h = pool.malloc(&cpu, size).unwrap();
                    let d = pattern(n as u64, size);
                    write(&pool, &h, &d);
                    model.insert(h.raw(), d);
                    order.push(h);
                }
                Op::Free(i) if !order.is_empty() => {
                    let h = order.swap_remove(i % order.len());
                    let r = h.raw();
                    model.remove(&r);
                    pool.free(&cpu, h).unwrap();
                    prop_assert!(pool.free(&cpu, probe(r)).is_err());
                }
                Op::Write(i, s) if !order.is_empty() => {
                    let h = &order[i % order.len()];
                    let d = pattern(s, model[&h.raw()].len());
                    write(&pool, h, &d);
                    model.insert(h.raw(), d);
                }
                Op::Read(i) if !order.is_empty() => {
                    let h = &order[i % order.len()];
                    prop_assert_eq!(&read(&pool, h), &model[&h.raw()]);
                    check_word(&m, &cpu, &pool, h);
                }
                Op::Migrate(i, to) if !order.is_empty() => {
                    let h = &order[i % order.len()];
                    let (old, which) = pool.location(h).unwrap();
                    let new = if to {
                        // Through the machine's migration (the pool's move to a target page
                        // is crate-private; compaction's tests drive it with targets).
                        m.migrate_page(&cpu, old, memdesc::Gfp::MOVABLE).unwrap()
                    } else {
                        z3fold_migrate_page(&m, &cpu, old).unwrap()
                    };
                    prop_assert_ne!(new, old);
                    prop_assert_eq!(pool.location(h).unwrap(), (new, which), "the handle follows its page");
                    for h in &order {
                        prop_assert_eq!(&read(&pool, h), &model[&h.raw()]);
                    }
                    check_word(&m, &cpu, &pool, h);
                }
                Op::Compact => {
                    pool.compact();
                    for h in &order {
                        prop_assert_eq!(&read(&pool, h), &model[&h.raw()]);
                    }
                }
                _ => {}
            }
        }
        // At most three objects per page, each of a distinct kind.
        let mut per_page: HashMap<Pfn, Vec<Buddy>> = HashMap::new();
        for h in &order {
            let (p, b) = pool.location(h).unwrap();
            per_page.entry(p).or_default().push(b);
        }
        for (p, bs) in &per_page {
            prop_assert!(bs.len() <= 3, "page {} has {:?}", p, bs);
            for (i, b) in bs.iter().enumerate() {
                prop_assert!(!bs[..i].contains(b), "page {} has {:?}", p, bs);
            }
        }
        prop_assert_eq!(order.len(), model.len());
        for h in &order {
            prop_assert_eq!(&read(&pool, h), &model[&h.raw()]);
        }
        let st = pool.stats();
        prop_assert_eq!(st.objects, model.len() as u64);
        prop_assert_eq!(st.pages, per_page.len() as u64);
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
