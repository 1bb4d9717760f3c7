//! page_pool on the simulated machine: a proptest against a reference model (ring FIFO,
//! fragments, release on a full ring), a two-thread recycle producer/consumer, destroy with
//! blocks in flight (deferred and refused), precise put errors, and nothing leaked.

use std::collections::{HashMap, VecDeque};

use memdesc::base::layout::{MemmapLayout, MemoryLayout};
use memdesc::memmap::word::Tag;
use memdesc::page_pool::{
    pp_put, pp_put_frag, Destroyed, Frag, NetmemRef, PagePool, PoolError, PoolParams, FRAG_ALIGN,
};
use memdesc::Cpu;
use memdesc::{Config, Gfp, Pfn, PAGE_SIZE};
use memdesc_host::{boot, SimMachine};
use proptest::prelude::*;

mod common;
#[allow(unused_imports)]
use common::*;

fn machine(layout: MemmapLayout) -> SimMachine {
    boot(&MemoryLayout::pc(1, layout), Config { nr_cpus: 2, debug_checks: true, ..Config::default() }).unwrap()
}

/// Free pages after returning every cache's empty slabs and every per-CPU page.
fn settled_free(m: &SimMachine, cpu: &Cpu<'_>) -> u64 {
    let mut caches = vec![];
    m.for_each_cache(|c| caches.push(c as *const memdesc::SlabCache as usize));
    for c in caches {
        // SAFETY: caches listed by for_each_cache live as long as the machine.
        let c = unsafe { &*(c as *const memdesc::SlabCache) };
        m.shrink_any_cache(cpu, c);
    }
    m.drain_all();
    m.nr_free_pages()
}

#[test]
fn destroy_defers_until_the_last_block_returns_and_leaks_nothing() {
    for (layout, order) in [(MemmapLayout::Flat, 0), (MemmapLayout::TwoLevel, 2), (MemmapLayout::TwoLevel, 9)] {
        let m = machine(layout);
        let cpu = m.cpus().claim(0).unwrap();
        let free0 = settled_free(&m, &cpu);
        let pool = PagePool::new(&m, &cpu, PoolParams { order, ring_size: 4, ..Default::default() }).unwrap();
        let held: Vec<NetmemRef<'_>> = (0..3).map(|_| pool.alloc(&cpu).unwrap()).collect();
        for n in &held {
            for i in 0..1u64 << order {
                let v = m.memmap().load(m.platform(), n.pfn().add(i)).unwrap();
                assert_eq!(v.word.tag(), Some(Tag::NetPool), "every page word of the block");
            }
        }
        let recycled = pool.alloc(&cpu).unwrap();
        pp_put(&m, &cpu, recycled).unwrap();
        let f = pool.alloc_frag(&cpu, 100).unwrap();
        // Refused while blocks are in flight; the pool comes back unchanged.
        let (pool, e) = pool.try_destroy(&cpu).unwrap_err();
        assert_eq!(e, PoolError::InFlight(4));
        assert_eq!(pool.stats().ring, 0, "the fragment block came from the ring");
        pp_put_frag(&m, &cpu, f).unwrap();
        // The idle fragment block is only the pool's: still in flight 3.
        let (pool, e) = pool.try_destroy(&cpu).unwrap_err();
        assert_eq!(e, PoolError::InFlight(3));
        assert_eq!(pool.destroy(&cpu), Destroyed::Deferred(3));
        for n in held {
            pp_put(&m, &cpu, n).unwrap();
        }
        assert_eq!(settled_free(&m, &cpu), free0, "{layout:?} order {order}: every block and the pool state freed");
        m.check(|_, _, _| {}).unwrap();
    }
}

#[test]
fn puts_of_foreign_pages_are_refused() {
    let m = machine(MemmapLayout::Flat);
    let cpu = m.cpus().claim(0).unwrap();
    let pool = PagePool::new(&m, &cpu, PoolParams::default()).unwrap();
    let raw = m.alloc_pages_raw(&cpu, 0, Gfp::KERNEL).unwrap();
    assert_eq!(pp_put_raw(&m, &cpu, raw), Err(PoolError::NotNetmem(raw, Some(Tag::Undescribed))));
    let obj = m.kmalloc_raw(&cpu, 32, Gfp::KERNEL).unwrap();
    let spfn = memdesc::Platform::virt_to_pfn(m.platform(), obj).unwrap();
    assert_eq!(pp_put_raw(&m, &cpu, spfn), Err(PoolError::NotNetmem(spfn, Some(Tag::Slab))));
    assert_eq!(pp_put_raw(&m, &cpu, Pfn(1 << 39)), Err(PoolError::NotNetmem(Pfn(1 << 39), None)));
    let n = pool.alloc(&cpu).unwrap();
    let pfn = n.into_raw();
    pp_put_raw(&m, &cpu, pfn).unwrap();
    assert_eq!(pp_put_raw(&m, &cpu, pfn), Err(PoolError::NoReference(pfn)), "double put");
    assert_eq!(pool.stats().recycled, 1);
    let other = machine(MemmapLayout::Flat);
    let ocpu = other.cpus().claim(0).unwrap();
    let n2 = pool.alloc(&cpu).unwrap();
    assert_eq!(pp_put(&other, &ocpu, n2), Err(PoolError::WrongMachine));
    pp_put_raw(&m, &cpu, pfn).unwrap();
    assert_eq!(
        PagePool::new(&m, &cpu, PoolParams { ring_size: 0, ..Default::default() }).err(),
        Some(PoolError::BadParams)
    );
    assert_eq!(
        PagePool::new(&m, &cpu, PoolParams { order: 11, ..Default::default() }).err(),
        Some(PoolError::BadParams)
    );
    kfree_raw(&m, &cpu, obj).unwrap();
    free_raw(&m, &cpu, raw, 0).unwrap();
    assert_eq!(pool.destroy(&cpu), Destroyed::Now);
}

#[test]
fn recycle_ring_two_threads_producer_consumer() {
    let m = machine(MemmapLayout::Flat);
    let cpu0 = m.cpus().claim(0).unwrap();
    let free0 = settled_free(&m, &cpu0);
    let pool = PagePool::new(&m, &cpu0, PoolParams { ring_size: 64, ..Default::default() }).unwrap();
    drop(cpu0);
    const N: u64 = 3000;
    let (tx, rx) = std::sync::mpsc::sync_channel::<NetmemRef<'_>>(8);
    std::thread::scope(|s| {
        let (m, pool) = (&m, &pool);
        // The driver: allocates receive buffers (consumes the ring) and hands them to the stack.
        s.spawn(move || {
            let cpu0 = m.cpus().claim(0).unwrap();
            for i in 0..N {
                let n = pool.alloc(&cpu0).unwrap();
                let p = memdesc::Platform::direct_map(m.platform(), n.pfn()).unwrap();
                // SAFETY: the block is ours until it is sent; one byte inside the page.
                unsafe { p.as_ptr().write(i as u8) };
                tx.send(n).unwrap();
            }
        });
        // The stack: consumes the buffers and puts them (produces into the ring).
        s.spawn(move || {
            let cpu1 = m.cpus().claim(1).unwrap();
            for i in 0..N {
                let n = rx.recv().unwrap();
                let p = memdesc::Platform::direct_map(m.platform(), n.pfn()).unwrap();
                // SAFETY: as above; the block came to this thread with its reference.
                assert_eq!(unsafe { p.as_ptr().read() }, i as u8);
                pp_put(m, &cpu1, n).unwrap();
            }
        });
    });
    let st = pool.stats();
    assert_eq!(st.alloc_fast + st.alloc_slow, N);
    assert_eq!(st.recycled, N);
    assert_eq!((st.released, st.live), (0, 0));
    assert!(st.alloc_slow <= 16, "at most the blocks in flight are ever new: {st:?}");
    let cpu0 = m.cpus().claim(0).unwrap();
    assert_eq!(pool.destroy(&cpu0), Destroyed::Now);
    assert_eq!(settled_free(&m, &cpu0), free0);
}

#[derive(Clone, Debug)]
enum Op {
    Alloc,
    Frag(usize),
    Put(usize),
    PutFrag(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Alloc),
        3 => (1usize..=PAGE_SIZE).prop_map(Op::Frag),
        2 => any::<usize>().prop_map(Op::Put),
        2 => any::<usize>().prop_map(Op::PutFrag),
    ]
}

/// The reference model: FIFO ring of capacity `cap`, per-block reference counts, the current
/// fragment block and offset, and the counters.
#[derive(Default)]
struct Model {
    cap: usize,
    ring: VecDeque<Pfn>,
    refs: HashMap<Pfn, u32>,
    frag: Option<(Pfn, usize)>,
    fast: u64,
    slow: u64,
    recycled: u64,
    released: u64,
}

impl Model {
    /// The block the next take gets: Some(pfn) from the ring, None for a new one.
    fn take(&mut self) -> Option<Pfn> {
        match self.ring.pop_front() {
            Some(p) => {
                self.fast += 1;
                Some(p)
            }
            None => {
                self.slow += 1;
                None
            }
        }
    }
    fn put(&mut self, pfn: Pfn) {
        let r = self.refs.get_mut(&pfn).unwrap();
        *r -= 1;
        if *r == 0 {
            self.refs.remove(&pfn);
            if self.ring.len() < self.cap {
                self.ring.push_back(pfn);
                self.recycled += 1;
            } else {
                self.released += 1;
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn pool_matches_model(ops in proptest::collection::vec(op(), 1..120), cap in 1usize..6) {
        let m = machine(MemmapLayout::Flat);
        let cpu = m.cpus().claim(0).unwrap();
        let free0 = settled_free(&m, &cpu);
        let pool = PagePool::new(&m, &cpu, PoolParams { ring_size: cap, ..Default::default() }).unwrap();
        let mut model = Model { cap, ..Model::default() };
        let mut blocks: Vec<NetmemRef<'_>> = vec![];
        let mut frags: Vec<Frag<'_>> = vec![];
        for o in ops {
            match o {
                Op::Alloc => {
                    let want = model.take();
                    let n = pool.alloc(&cpu).unwrap();
                    if let Some(p) = want {
                        prop_assert_eq!(n.pfn(), p, "the ring is FIFO");
                    }
                    prop_assert_eq!(n.netmem().pp_ref_count(), 1);
                    model.refs.insert(n.pfn(), 1);
                    blocks.push(n);
                }
                Op::Frag(size) => {
                    let len = size.next_multiple_of(FRAG_ALIGN);
                    let f = pool.alloc_frag(&cpu, size).unwrap();
                    match model.frag {
                        Some((p, off)) if off + len <= PAGE_SIZE => {
                            prop_assert_eq!((f.netmem().flags.pfn(), f.offset()), (p, off));
                            *model.refs.get_mut(&p).unwrap() += 1;
                            model.frag = Some((p, off + len));
                        }
                        old => {
                            let want = model.take();
                            let p = f.netmem().flags.pfn();
                            if let Some(w) = want {
                                prop_assert_eq!(p, w);
                            }
                            prop_assert_eq!(f.offset(), 0);
                            model.refs.insert(p, 2);
                            model.frag = Some((p, len));
                            if let Some((op, _)) = old {
                                model.put(op);
                            }
                        }
                    }
                    prop_assert_eq!(f.len(), len);
                    frags.push(f);
                }
                Op::Put(i) if !blocks.is_empty() => {
                    let n = blocks.swap_remove(i % blocks.len());
                    let p = n.pfn();
                    pp_put(&m, &cpu, n).unwrap();
                    model.put(p);
                }
                Op::PutFrag(i) if !frags.is_empty() => {
                    let f = frags.swap_remove(i % frags.len());
                    let p = f.netmem().flags.pfn();
                    pp_put_frag(&m, &cpu, f).unwrap();
                    model.put(p);
                }
                _ => {}
            }
            let st = pool.stats();
            prop_assert_eq!(
                (st.alloc_fast, st.alloc_slow, st.recycled, st.released, st.ring, st.live),
                (model.fast, model.slow, model.recycled, model.released, model.ring.len() as u64, model.refs.len() as u64)
            );
            for (p, r) in &model.refs {
                let v = m.memmap().load(m.platform(), *p).unwrap();
                prop_assert_eq!(v.word.tag(), Some(Tag::NetPool));
                let held = blocks.iter().find(|b| b.pfn() == *p).map(|b| b.netmem().pp_ref_count());
                let held = held.or_else(|| frags.iter().find(|f| f.netmem().flags.pfn() == *p).map(|f| f.netmem().pp_ref_count()));
                if let Some(c) = held {
                    prop_assert_eq!(c, *r as u64);
                }
            }
        }
        let outstanding = blocks.len() + frags.len();
        let d = pool.destroy(&cpu);
        if outstanding == 0 {
            prop_assert_eq!(d, Destroyed::Now);
        } else {
            prop_assert!(matches!(d, Destroyed::Deferred(_)));
        }
        for n in blocks {
            pp_put(&m, &cpu, n).unwrap();
        }
        for f in frags {
            pp_put_frag(&m, &cpu, f).unwrap();
        }
        prop_assert_eq!(settled_free(&m, &cpu), free0);
    }
}
