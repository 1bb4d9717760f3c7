//! Per-CPU page lists (PCP): small stacks of free pages of orders 0..=3 per CPU and zone, in
//! front of the buddy lists.
//!
//! The lists of a CPU are touched only by the holder of that CPU's [`Cpu`] token (cpu.rs
//! invariants 5 and 6): the owner on its fast path, with no lock and no compare-and-swap, or
//! a borrower draining an unclaimed CPU. Another CPU that needs the pages back (compaction,
//! offlining, low memory) asks the owner through a [`crate::base::cpu::Request::Pages`] request,
//! which the owner serves at its next operation. Refill and drain move `batch` pages at a time
//! under the zone lock; a list longer than `high` pages is drained down by a batch.
//!
//! Invariants:
//! 1. Only the holder of CPU `c`'s token writes CPU `c`'s lists (every writer takes `&Cpu`
//!    of that CPU; the page allocator indexes the lists by the token's id). The fields are
//!    relaxed atomics written by plain loads and stores, so a racing reader (the checker,
//!    [`Pcp::pages`]) is defined behaviour and exact when the owner is quiescent.
//! 2. Pages on a PCP list keep a `Buddy { pcp: true }` word (free, but never merged while
//!    there). The stack is linked through the first word of each free page ([`PcpLinks`]),
//!    so the lists allocate nothing.
//! 3. Each CPU's lists for one zone are one [`Pcp`], aligned to 128 bytes (two cache lines,
//!    the adjacent-line prefetch unit): two CPUs' lists never share a line.

use crate::base::cpu::Cpu;
use crate::base::pageblock::NR_PCP_TYPES;
use crate::base::sync::{AtomicU32, AtomicU64, Ordering, SpinGuard};
use crate::page_alloc::zone::NONE;

/// Highest order kept on per-CPU lists.
pub const PCP_MAX_ORDER: u32 = 3;
const ORDERS: usize = PCP_MAX_ORDER as usize + 1;

/// Where the "next" link of a page on a per-CPU stack lives.
pub(crate) trait PcpLinks {
    fn next(&self, pfn: u64) -> u64;
    fn set_next(&self, pfn: u64, next: u64);
}

/// One owner-written counter (invariant 1): a load and a store, never a read-modify-write.
#[inline(always)]
fn add32(a: &AtomicU32, v: u32) {
    a.store(a.load(Ordering::Relaxed).wrapping_add(v), Ordering::Relaxed);
}
#[inline(always)]
fn sub32(a: &AtomicU32, v: u32) {
    a.store(a.load(Ordering::Relaxed).wrapping_sub(v), Ordering::Relaxed);
}
#[inline(always)]
fn add64(a: &AtomicU64, v: u64) {
    a.store(a.load(Ordering::Relaxed).wrapping_add(v), Ordering::Relaxed);
}

/// One CPU's lists for one zone, with their limits (invariants 1 and 3).
#[repr(align(128))]
pub(crate) struct Pcp {
    head: [[AtomicU64; NR_PCP_TYPES]; ORDERS],
    count: [[AtomicU32; NR_PCP_TYPES]; ORDERS],
    /// Pages (not blocks) on all lists.
    pages: AtomicU32,
    pub(crate) high: u32,
    pub(crate) batch: u32,
    /// Allocations and frees through this CPU's lists (per-CPU, so counting shares nothing).
    allocs: AtomicU64,
    frees: AtomicU64,
}

#[cfg(not(loom))]
const _: () = assert!(core::mem::align_of::<Pcp>() == 128 && core::mem::size_of::<Pcp>().is_multiple_of(128));

/// The zone side of the per-CPU protocol: the buddy lists a per-CPU list refills from and
/// drains into, behind the zone lock. The page allocator implements it over its zones; the loom
/// models over a stand-in, so they drive the real [`Pcp::alloc`], [`Pcp::free`] and
/// [`Pcp::drain_all`].
pub(crate) trait PcpZone {
    /// What the zone lock protects.
    type Free;
    /// Takes the zone lock.
    fn lock(&self) -> SpinGuard<'_, Self::Free>;
    /// Takes one free block of `order` and migratetype `mt` for a per-CPU list (its word
    /// becomes a per-CPU free block); `None` if the zone has none.
    fn take(&self, z: &mut Self::Free, order: u32, mt: usize) -> Option<u64>;
    /// Gives a block from a per-CPU list back to the buddy lists.
    fn give(&self, z: &mut Self::Free, pfn: u64, order: u32, mt: usize);
    /// Called once before the zone lock is dropped (publishes the zone's free page count).
    fn done(&self, z: &Self::Free);
}

impl Pcp {
    /// Allocation by the holder of this list's CPU (`_owner`, invariant 1): pop, or refill a
    /// batch from the zone and pop.
    #[inline]
    pub(crate) fn alloc(
        &self,
        _owner: &Cpu<'_>,
        links: &impl PcpLinks,
        zone: &impl PcpZone,
        order: u32,
        mt: usize,
    ) -> Option<u64> {
        if let Some(pfn) = self.pop(links, order, mt) {
            add64(&self.allocs, 1);
            return Some(pfn);
        }
        self.refill(links, zone, order, mt)
    }

    /// Allocation by the holder of this list's CPU (`_owner` is implied by the caller, which
    /// checked the token: invariant 1) from the list alone: pop, or `None` if it is empty
    /// (the fast path then takes the general one, which refills).
    #[inline(always)]
    pub(crate) fn pop_owned(&self, links: &impl PcpLinks, order: u32, mt: usize) -> Option<u64> {
        let pfn = self.pop(links, order, mt)?;
        add64(&self.allocs, 1);
        Some(pfn)
    }

    #[inline(never)]
    fn refill(&self, links: &impl PcpLinks, zone: &impl PcpZone, order: u32, mt: usize) -> Option<u64> {
        let mut z = zone.lock();
        for _ in 0..(self.batch >> order).max(1) {
            let Some(pfn) = zone.take(&mut z, order, mt) else { break };
            self.push(links, order, mt, pfn);
        }
        zone.done(&z);
        drop(z);
        let r = self.pop(links, order, mt);
        add64(&self.allocs, r.is_some() as u64);
        r
    }

    /// A free by the holder of this list's CPU (the caller has stamped the block's per-CPU
    /// free word): the block is pushed; a list above `high` drains a batch to the zone.
    #[inline(always)]
    pub(crate) fn free(
        &self,
        _owner: &Cpu<'_>,
        links: &impl PcpLinks,
        zone: &impl PcpZone,
        pfn: u64,
        order: u32,
        mt: usize,
    ) {
        if self.push_owned(links, pfn, order, mt) {
            self.drain_batch(_owner, links, zone);
        }
    }

    /// [`Pcp::free`] up to its drain (`_owner` is implied by the caller, which checked the
    /// token: invariant 1): the block is pushed; `true` if the list is now above `high`, when
    /// the caller must run [`Pcp::drain_batch`] (the fast path keeps that call out of line).
    #[inline(always)]
    pub(crate) fn push_owned(&self, links: &impl PcpLinks, pfn: u64, order: u32, mt: usize) -> bool {
        self.push(links, order, mt, pfn);
        add64(&self.frees, 1);
        self.pages.load(Ordering::Relaxed) > self.high
    }

    /// The end of [`Pcp::free`] when [`Pcp::push_owned`] found the list above `high`: a batch
    /// goes back to the zone. By the holder of this list's CPU (invariant 1).
    pub(crate) fn drain_batch(&self, _owner: &Cpu<'_>, links: &impl PcpLinks, zone: &impl PcpZone) {
        self.drain(links, zone, self.batch);
    }

    /// Returns every page on the list to the zone. Takes the token of the list's CPU
    /// (invariant 1): the owner's own, or one borrowed for a remote drain.
    pub(crate) fn drain_all(&self, _holder: &Cpu<'_>, links: &impl PcpLinks, zone: &impl PcpZone) {
        if self.pages.load(Ordering::Relaxed) == 0 {
            return;
        }
        self.drain(links, zone, u32::MAX);
    }

    pub(crate) fn new(high: u32, batch: u32) -> Self {
        Pcp {
            head: core::array::from_fn(|_| core::array::from_fn(|_| AtomicU64::new(NONE))),
            count: core::array::from_fn(|_| core::array::from_fn(|_| AtomicU32::new(0))),
            pages: AtomicU32::new(0),
            high,
            batch,
            allocs: AtomicU64::new(0),
            frees: AtomicU64::new(0),
        }
    }

    #[inline(always)]
    fn push(&self, links: &impl PcpLinks, order: u32, mt: usize, pfn: u64) {
        let (o, m) = (order as usize, mt);
        links.set_next(pfn, self.head[o][m].load(Ordering::Relaxed));
        self.head[o][m].store(pfn, Ordering::Relaxed);
        add32(&self.count[o][m], 1);
        add32(&self.pages, 1 << order);
    }

    #[inline(always)]
    fn pop(&self, links: &impl PcpLinks, order: u32, mt: usize) -> Option<u64> {
        let (o, m) = (order as usize, mt);
        let pfn = self.head[o][m].load(Ordering::Relaxed);
        if pfn == NONE {
            return None;
        }
        self.head[o][m].store(links.next(pfn), Ordering::Relaxed);
        sub32(&self.count[o][m], 1);
        sub32(&self.pages, 1 << order);
        Some(pfn)
    }

    /// Gives up to `pages` pages' worth of blocks (all lists, lowest order first) back to the
    /// zone under one hold of the zone lock.
    #[inline(never)]
    fn drain(&self, links: &impl PcpLinks, zone: &impl PcpZone, mut pages: u32) {
        let mut z = zone.lock();
        'out: for order in 0..ORDERS as u32 {
            for mt in 0..NR_PCP_TYPES {
                while pages > 0 {
                    let Some(pfn) = self.pop(links, order, mt) else { break };
                    pages = pages.saturating_sub(1 << order);
                    zone.give(&mut z, pfn, order, mt);
                }
                if pages == 0 {
                    break 'out;
                }
            }
        }
        zone.done(&z);
    }

    /// Pages on all lists (exact when the owner is quiescent, invariant 1).
    pub(crate) fn pages(&self) -> u32 {
        self.pages.load(Ordering::Relaxed)
    }

    /// Allocations and frees counted on these lists.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (self.allocs.load(Ordering::Relaxed), self.frees.load(Ordering::Relaxed))
    }

    /// First pfn on the list of `order` and migratetype `mt` ([`NONE`] if empty).
    pub(crate) fn head_of(&self, order: u32, mt: usize) -> u64 {
        self.head[order as usize][mt].load(Ordering::Relaxed)
    }

    /// Blocks on the list of `order` and migratetype `mt`.
    pub(crate) fn count(&self, order: u32, mt: usize) -> u32 {
        self.count[order as usize][mt].load(Ordering::Relaxed)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::base::cpu::CpuSet;
    use crate::base::sync::SpinLock;
    use core::cell::RefCell;
    use std::vec;
    use std::vec::Vec;

    struct VecLinks(RefCell<[u64; 64]>);
    impl PcpLinks for VecLinks {
        fn next(&self, pfn: u64) -> u64 {
            self.0.borrow()[pfn as usize]
        }
        fn set_next(&self, pfn: u64, next: u64) {
            self.0.borrow_mut()[pfn as usize] = next;
        }
    }

    struct Zone(SpinLock<Vec<(u64, u32, usize)>>);
    impl PcpZone for Zone {
        type Free = Vec<(u64, u32, usize)>;
        fn lock(&self) -> SpinGuard<'_, Self::Free> {
            self.0.lock()
        }
        fn take(&self, z: &mut Self::Free, order: u32, mt: usize) -> Option<u64> {
            let i = z.iter().position(|&(_, o, m)| o == order && m == mt)?;
            Some(z.swap_remove(i).0)
        }
        fn give(&self, z: &mut Self::Free, pfn: u64, order: u32, mt: usize) {
            z.push((pfn, order, mt));
        }
        fn done(&self, _: &Self::Free) {}
    }

    #[test]
    fn lifo_refill_high_and_drain_accounting() {
        let set = CpuSet::new(1);
        let cpu = set.claim(0).unwrap();
        let links = VecLinks(RefCell::new([0; 64]));
        let zone = Zone(SpinLock::new(vec![(10, 0, 1), (11, 0, 1), (12, 0, 1)]));
        let pcp = Pcp::new(6, 2);
        // An empty list refills a batch of two from the zone.
        let a = pcp.alloc(&cpu, &links, &zone, 0, 1).unwrap();
        assert_eq!((pcp.pages(), zone.0.lock().len()), (1, 1));
        pcp.free(&cpu, &links, &zone, 5, 0, 1);
        pcp.free(&cpu, &links, &zone, 8, 1, 0);
        assert_eq!(pcp.pages(), 4);
        assert_eq!(pcp.alloc(&cpu, &links, &zone, 0, 1), Some(5), "last freed is hottest");
        pcp.free(&cpu, &links, &zone, a, 0, 1);
        pcp.free(&cpu, &links, &zone, 20, 1, 0);
        pcp.free(&cpu, &links, &zone, 6, 0, 1);
        // Above high (7 > 6): a batch of two pages, lowest order first, went to the zone.
        assert_eq!(pcp.pages(), 5);
        assert_eq!(pcp.counts(), (2, 5));
        pcp.drain_all(&cpu, &links, &zone);
        assert_eq!(pcp.pages(), 0);
        assert_eq!((pcp.count(0, 1), pcp.head_of(1, 0)), (0, NONE));
        let mut all: Vec<u64> = zone.0.lock().iter().map(|b| b.0).collect();
        all.sort_unstable();
        assert_eq!(all, [6, 8, 10, 11, 12, 20], "5 is still allocated");
    }
}

#[cfg(all(test, loom))]
pub(crate) mod loom_tests {
    use super::*;
    use crate::base::cpu::{CpuSet, Request};
    use crate::base::sync::{mutation, Mutation, SpinGuard, SpinLock};
    use loom::sync::atomic::{AtomicU64, Ordering};
    use loom::sync::Arc;
    use std::vec::Vec;

    /// Links kept in loom atomics so the model sees every access.
    pub(crate) struct Links(pub(crate) [AtomicU64; 8]);
    impl Links {
        pub(crate) fn new() -> Self {
            Links(core::array::from_fn(|_| AtomicU64::new(0)))
        }
    }
    impl PcpLinks for Links {
        fn next(&self, pfn: u64) -> u64 {
            self.0[pfn as usize].load(Ordering::Relaxed)
        }
        fn set_next(&self, pfn: u64, next: u64) {
            self.0[pfn as usize].store(next, Ordering::Relaxed)
        }
    }

    /// A stand-in zone: its free blocks in a list behind a real [`SpinLock`]. Giving a block
    /// that is already free panics ("freed twice").
    pub(crate) struct VecZone(pub(crate) SpinLock<Vec<u64>>);
    impl VecZone {
        pub(crate) fn new(free: &[u64]) -> Self {
            VecZone(SpinLock::new(free.to_vec()))
        }
    }
    impl PcpZone for VecZone {
        type Free = Vec<u64>;
        fn lock(&self) -> SpinGuard<'_, Vec<u64>> {
            self.0.lock()
        }
        fn take(&self, z: &mut Vec<u64>, _: u32, _: usize) -> Option<u64> {
            z.pop()
        }
        fn give(&self, z: &mut Vec<u64>, pfn: u64, _: u32, _: usize) {
            assert!(!z.contains(&pfn), "page {pfn} freed twice into the zone");
            z.push(pfn);
        }
        fn done(&self, _: &Vec<u64>) {}
    }

    /// The owning CPU allocates (refilling from the zone) and frees on its list through the
    /// real `Pcp::alloc`/`Pcp::free` with no lock, serving drain requests between operations
    /// as the page allocator does, while another CPU drains the list through the real
    /// `CpuSet::on_cpu` (borrowing the CPU if free, else asking the owner). No page may be
    /// lost or appear twice.
    fn pcp_fast_path_races_drain() {
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(2);
        b.check(|| {
            let set = Arc::new(CpuSet::new(1));
            let links = Arc::new(Links::new());
            let zone = Arc::new(VecZone::new(&[3, 4]));
            let pcp = Arc::new(Pcp::new(8, 2));
            {
                // Two pages already on the list.
                let cpu = set.claim(0).unwrap();
                for pfn in 1..3 {
                    pcp.free(&cpu, &*links, &*zone, pfn, 0, 0);
                }
            }
            let drainer = {
                let (set, pcp, links, zone) = (set.clone(), pcp.clone(), links.clone(), zone.clone());
                loom::thread::spawn(move || set.on_cpu(0, Request::Pages, 1, |cpu| pcp.drain_all(cpu, &*links, &*zone)))
            };
            let b = {
                let cpu = set.claim(0).unwrap();
                let serve = || {
                    if let Some(asked) = cpu.pending(Request::Pages) {
                        pcp.drain_all(&cpu, &*links, &*zone);
                        cpu.ack(Request::Pages, asked);
                    }
                };
                // Owner: allocate two pages (the second may need a refill), free one back.
                serve();
                let a = pcp.alloc(&cpu, &*links, &*zone, 0, 0);
                serve();
                let b = pcp.alloc(&cpu, &*links, &*zone, 0, 0);
                if let Some(pfn) = a {
                    serve();
                    pcp.free(&cpu, &*links, &*zone, pfn, 0, 0);
                }
                b
            };
            // Borrowed, acknowledged or busy: in every case no page may be lost or doubled.
            drainer.join().unwrap();
            let mut all = zone.0.lock().clone();
            all.extend(b);
            let cpu = set.claim(0).unwrap();
            while let Some(pfn) = pcp.alloc(&cpu, &*links, &VecZone::new(&[]), 0, 0) {
                all.push(pfn);
            }
            all.sort_unstable();
            assert_eq!(all, [1, 2, 3, 4], "a page was lost or is in two places");
        });
    }

    #[test]
    fn loom_pcp_fast_path_races_drain() {
        pcp_fast_path_races_drain();
    }

    /// The same model with a remote drain that borrows the CPU while its owner holds it must
    /// fail: the token is the only thing between the owner's fast path and the drain.
    #[test]
    #[should_panic(expected = "a page was lost or is in two places")]
    fn loom_pcp_fast_path_races_drain_fails_when_drain_ignores_the_owner() {
        mutation::with(Mutation::CpuBorrowIgnoresOwner, pcp_fast_path_races_drain);
    }
}
