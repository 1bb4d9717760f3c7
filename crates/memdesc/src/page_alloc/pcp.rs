//! Per-CPU page lists (PCP): small stacks of free pages of orders 0..=3 per CPU and zone, in
//! front of the buddy lists.
//!
//! The owning CPU takes its own list lock on the fast path — a lock no other CPU touches
//! except to drain it (before compaction or offlining, or when memory runs short) — so the
//! fast path shares nothing with other CPUs. Refill and drain move `batch` pages at a time
//! under the zone lock; a list longer than `high` pages is drained down by a batch.
//!
//! Pages on a PCP list keep a `Buddy { pcp: true }` word (free, but never merged while there).
//! The stack is linked through the first word of each free page ([`PcpLinks`]), so the lists
//! allocate nothing.

use crate::base::pageblock::NR_PCP_TYPES;
use crate::base::sync::{SpinGuard, SpinLock};
use crate::page_alloc::zone::NONE;

/// Highest order kept on per-CPU lists.
pub const PCP_MAX_ORDER: u32 = 3;
const ORDERS: usize = PCP_MAX_ORDER as usize + 1;

/// Where the "next" link of a page on a per-CPU stack lives.
pub(crate) trait PcpLinks {
    fn next(&self, pfn: u64) -> u64;
    fn set_next(&self, pfn: u64, next: u64);
}

/// The stacks of one CPU for one zone.
pub(crate) struct PcpLists {
    head: [[u64; NR_PCP_TYPES]; ORDERS],
    count: [[u32; NR_PCP_TYPES]; ORDERS],
    /// Pages (not blocks) on all lists.
    pub(crate) pages: u32,
    /// Allocations and frees through this CPU's lists (per-CPU, so counting shares nothing).
    pub(crate) allocs: u64,
    pub(crate) frees: u64,
}

/// One CPU's lists for one zone, with their lock and limits.
pub(crate) struct Pcp {
    pub(crate) lists: SpinLock<PcpLists>,
    pub(crate) high: u32,
    pub(crate) batch: u32,
}

/// The zone side of the per-CPU protocol: the buddy lists a per-CPU list refills from and
/// drains into, behind the zone lock. The page allocator implements it over its zones; the loom
/// models over a stand-in, so they drive the real [`Pcp::alloc`], [`Pcp::free`] and
/// [`Pcp::drain_all`].
pub(crate) trait PcpZone {
    /// What the zone lock protects.
    type Free;
    /// Takes the zone lock (always after the list lock: lists, then zone).
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
    /// Allocation through the list of the CPU that owns it: pop, or refill a batch from the
    /// zone and pop.
    #[inline]
    pub(crate) fn alloc(&self, links: &impl PcpLinks, zone: &impl PcpZone, order: u32, mt: usize) -> Option<u64> {
        let mut l = self.lists.lock();
        if let Some(pfn) = l.pop(links, order, mt) {
            l.allocs += 1;
            return Some(pfn);
        }
        let mut z = zone.lock();
        for _ in 0..(self.batch >> order).max(1) {
            let Some(pfn) = zone.take(&mut z, order, mt) else { break };
            l.push(links, order, mt, pfn);
        }
        zone.done(&z);
        drop(z);
        let r = l.pop(links, order, mt);
        l.allocs += r.is_some() as u64;
        r
    }

    /// A free through the owner's list: `stamp` writes the block's per-CPU free word under the
    /// list lock, then the block is pushed; a list above `high` drains a batch to the zone.
    #[inline]
    pub(crate) fn free(
        &self,
        links: &impl PcpLinks,
        zone: &impl PcpZone,
        pfn: u64,
        order: u32,
        mt: usize,
        stamp: impl FnOnce(),
    ) {
        let mut l = self.lists.lock();
        stamp();
        l.push(links, order, mt, pfn);
        l.frees += 1;
        if l.pages > self.high {
            let mut z = zone.lock();
            l.drain(links, self.batch, |p, o, m| zone.give(&mut z, p, o, m));
            zone.done(&z);
        }
    }

    /// Returns every page on the list to the zone. Any CPU may call it: it takes the list's
    /// lock, which is what makes a remote drain safe against the owner's fast path.
    pub(crate) fn drain_all(&self, links: &impl PcpLinks, zone: &impl PcpZone) {
        #[cfg(all(test, loom))]
        if crate::base::sync::mutation::active(crate::base::sync::Mutation::PcpDrainDropsLock) {
            return self.drain_all_dropping_the_lock(links, zone);
        }
        let mut l = self.lists.lock();
        if l.pages == 0 {
            return;
        }
        let mut z = zone.lock();
        l.drain(links, u32::MAX, |p, o, m| zone.give(&mut z, p, o, m));
        zone.done(&z);
    }

    /// The broken drain the loom model must catch: reads the lists under the lock, gives the
    /// pages back with the lock dropped, then empties the lists under the lock again.
    #[cfg(all(test, loom))]
    fn drain_all_dropping_the_lock(&self, links: &impl PcpLinks, zone: &impl PcpZone) {
        let mut taken = std::vec::Vec::new();
        {
            let l = self.lists.lock();
            for o in 0..ORDERS {
                for m in 0..NR_PCP_TYPES {
                    let mut pfn = l.head[o][m];
                    while pfn != NONE {
                        taken.push((pfn, o as u32, m));
                        pfn = links.next(pfn);
                    }
                }
            }
        }
        let mut z = zone.lock();
        for (pfn, o, m) in taken {
            zone.give(&mut z, pfn, o, m);
        }
        zone.done(&z);
        drop(z);
        let mut l = self.lists.lock();
        l.head = [[NONE; NR_PCP_TYPES]; ORDERS];
        l.count = [[0; NR_PCP_TYPES]; ORDERS];
        l.pages = 0;
    }

    pub(crate) fn new(high: u32, batch: u32) -> Self {
        Pcp {
            lists: SpinLock::new(PcpLists {
                head: [[NONE; NR_PCP_TYPES]; ORDERS],
                count: [[0; NR_PCP_TYPES]; ORDERS],
                pages: 0,
                allocs: 0,
                frees: 0,
            }),
            high,
            batch,
        }
    }
}

impl PcpLists {
    #[inline]
    pub(crate) fn push(&mut self, links: &impl PcpLinks, order: u32, mt: usize, pfn: u64) {
        let (o, m) = (order as usize, mt);
        links.set_next(pfn, self.head[o][m]);
        self.head[o][m] = pfn;
        self.count[o][m] += 1;
        self.pages += 1 << order;
    }

    #[inline]
    pub(crate) fn pop(&mut self, links: &impl PcpLinks, order: u32, mt: usize) -> Option<u64> {
        let (o, m) = (order as usize, mt);
        let pfn = self.head[o][m];
        if pfn == NONE {
            return None;
        }
        self.head[o][m] = links.next(pfn);
        self.count[o][m] -= 1;
        self.pages -= 1 << order;
        Some(pfn)
    }

    /// Pops up to `pages` pages' worth of blocks (all lists, lowest order first), calling
    /// `f(pfn, order, migratetype)` for each.
    pub(crate) fn drain(&mut self, links: &impl PcpLinks, mut pages: u32, mut f: impl FnMut(u64, u32, usize)) {
        for order in 0..ORDERS as u32 {
            for mt in 0..NR_PCP_TYPES {
                while pages > 0 {
                    let Some(pfn) = self.pop(links, order, mt) else { break };
                    pages = pages.saturating_sub(1 << order);
                    f(pfn, order, mt);
                }
            }
        }
    }

    /// First pfn on the list of `order` and migratetype `mt` ([`NONE`] if empty).
    pub(crate) fn head_of(&self, order: u32, mt: usize) -> u64 {
        self.head[order as usize][mt]
    }

    /// Blocks on the list of `order` and migratetype `mt`.
    pub(crate) fn count(&self, order: u32, mt: usize) -> u32 {
        self.count[order as usize][mt]
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use core::cell::RefCell;

    struct VecLinks(RefCell<[u64; 64]>);
    impl PcpLinks for VecLinks {
        fn next(&self, pfn: u64) -> u64 {
            self.0.borrow()[pfn as usize]
        }
        fn set_next(&self, pfn: u64, next: u64) {
            self.0.borrow_mut()[pfn as usize] = next;
        }
    }

    #[test]
    fn lifo_and_drain_accounting() {
        let links = VecLinks(RefCell::new([0; 64]));
        let pcp = Pcp::new(8, 4);
        let mut l = pcp.lists.lock();
        l.push(&links, 0, 1, 5);
        l.push(&links, 0, 1, 6);
        l.push(&links, 1, 0, 8);
        assert_eq!(l.pages, 4);
        assert_eq!(l.pop(&links, 0, 1), Some(6), "last freed is hottest");
        let mut drained = [0u64; 4];
        let mut n = 0;
        l.drain(&links, 100, |pfn, _, _| {
            drained[n] = pfn;
            n += 1;
        });
        assert_eq!(&drained[..n], &[5, 8]);
        assert_eq!(l.pages, 0);
        assert_eq!(l.count(0, 1), 0);
    }
}

#[cfg(all(test, loom))]
pub(crate) mod loom_tests {
    use super::*;
    use crate::base::sync::{mutation, Mutation, SpinGuard};
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
    /// real `Pcp::alloc`/`Pcp::free`, while another CPU drains the list with the real
    /// `Pcp::drain_all`. No page may be lost or appear twice.
    fn pcp_fast_path_races_drain() {
        loom::model(|| {
            let links = Arc::new(Links::new());
            let zone = Arc::new(VecZone::new(&[3, 4]));
            let pcp = Arc::new(Pcp::new(8, 2));
            {
                // Two pages already on the list.
                let mut l = pcp.lists.lock();
                for pfn in 1..3 {
                    l.push(&*links, 0, 0, pfn);
                }
            }
            let drainer = {
                let (pcp, links, zone) = (pcp.clone(), links.clone(), zone.clone());
                loom::thread::spawn(move || pcp.drain_all(&*links, &*zone))
            };
            // Owner: allocate two pages (the second may need a refill), free one back.
            let a = pcp.alloc(&*links, &*zone, 0, 0);
            let b = pcp.alloc(&*links, &*zone, 0, 0);
            if let Some(pfn) = a {
                pcp.free(&*links, &*zone, pfn, 0, 0, || ());
            }
            drainer.join().unwrap();
            let mut all = zone.0.lock().clone();
            all.extend(b);
            let mut l = pcp.lists.lock();
            while let Some(pfn) = l.pop(&*links, 0, 0) {
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

    /// The same model with the remote drain dropping the list lock between taking the pages
    /// and emptying the list must fail.
    #[test]
    #[should_panic(expected = "page")]
    fn loom_pcp_fast_path_races_drain_fails_when_drain_drops_the_lock() {
        mutation::with(Mutation::PcpDrainDropsLock, pcp_fast_path_races_drain);
    }
}
