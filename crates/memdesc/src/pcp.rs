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

use crate::pageblock::NR_PCP_TYPES;
use crate::sync::SpinLock;
use crate::zone::NONE;

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

impl Pcp {
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
mod loom_tests {
    use super::*;
    use loom::sync::atomic::{AtomicU64, Ordering};
    use loom::sync::{Arc, Mutex};

    /// Links kept in loom atomics so the model sees every access.
    struct Links([AtomicU64; 8]);
    impl PcpLinks for Links {
        fn next(&self, pfn: u64) -> u64 {
            self.0[pfn as usize].load(Ordering::Relaxed)
        }
        fn set_next(&self, pfn: u64, next: u64) {
            self.0[pfn as usize].store(next, Ordering::Relaxed)
        }
    }

    /// The owning CPU allocates and frees on its list while another CPU drains it into the
    /// "buddy" (a mutex-protected set). No page may be lost or appear twice.
    #[test]
    fn loom_pcp_fast_path_races_drain() {
        loom::model(|| {
            let links = Arc::new(Links(core::array::from_fn(|_| AtomicU64::new(0))));
            let pcp = Arc::new(Pcp::new(8, 2));
            let buddy = Arc::new(Mutex::new(std::vec::Vec::new()));
            {
                let mut l = pcp.lists.lock();
                for pfn in 0..3 {
                    l.push(&*links, 0, 0, pfn);
                }
            }
            let drainer = {
                let (pcp, links, buddy) = (pcp.clone(), links.clone(), buddy.clone());
                loom::thread::spawn(move || {
                    let mut l = pcp.lists.lock();
                    l.drain(&*links, u32::MAX, |pfn, _, _| buddy.lock().unwrap().push(pfn));
                })
            };
            // Owner: alloc one page, then free it back.
            let got = pcp.lists.lock().pop(&*links, 0, 0);
            if let Some(pfn) = got {
                pcp.lists.lock().push(&*links, 0, 0, pfn);
            }
            drainer.join().unwrap();
            let mut all = buddy.lock().unwrap().clone();
            let mut l = pcp.lists.lock();
            while let Some(pfn) = l.pop(&*links, 0, 0) {
                all.push(pfn);
            }
            all.sort_unstable();
            assert_eq!(all, [0, 1, 2], "every page exactly once");
        });
    }
}
