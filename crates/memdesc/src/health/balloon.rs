//! A memory balloon (as virtio-balloon drivers have): [`Balloon::inflate`] takes order-0 pages
//! from the allocator and marks them `Undescribed { Offline }` (given back to the hypervisor),
//! [`Balloon::deflate`] returns them.
//!
//! The balloon keeps no list of its pages: with no `struct page` there is nowhere to link
//! them, and their contents belong to the hypervisor. Deflating finds them by their words: an
//! order-0 `Offline` page in a pageblock that is not isolated is a balloon page (pages of an
//! offlined range sit in isolated pageblocks, see [`crate::health::offline`]). So a machine has one
//! balloon; a second `Balloon` would share the first one's pages.
//!
//! This module touches page words only (through the allocator's stamping and free paths).

use crate::base::cpu::Cpu;
use crate::base::gfp::Gfp;
use crate::base::platform::Platform;
use crate::base::sync::{Ordering, SpinLock};
use crate::memmap::word::{PageKind, Subtype, Word};
use crate::page_alloc::AllocError;
use crate::PhysMem;

/// Counters of a balloon.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BalloonStats {
    /// Pages in the balloon now.
    pub pages: u64,
    /// Pages ever inflated.
    pub inflated: u64,
    /// Pages ever deflated.
    pub deflated: u64,
}

/// The machine's balloon.
pub struct Balloon<'m, P: Platform> {
    mem: &'m PhysMem<P>,
    stats: SpinLock<BalloonStats>,
}

impl<'m, P: Platform> Balloon<'m, P> {
    /// An empty balloon.
    pub fn new(mem: &'m PhysMem<P>) -> Self {
        Balloon { mem, stats: SpinLock::new(BalloonStats::default()) }
    }

    /// The counters.
    pub fn stats(&self) -> BalloonStats {
        *self.stats.lock()
    }

    /// Takes up to `n` pages from the allocator into the balloon; returns how many it got
    /// (fewer when memory runs out, which is not an error for a balloon).
    pub fn inflate(&self, cpu: &Cpu<'_>, n: u64) -> u64 {
        let mut got = 0;
        while got < n {
            // Count the page before its `Offline` word is published: a `deflate` on another CPU
            // may find and return it at once, and must never subtract a page not yet counted.
            self.mem.pages().undesc().offline.fetch_add(1, Ordering::Relaxed);
            self.stats.lock().pages += 1;
            let r = self.mem.pages().alloc_with(cpu, 0, Gfp::MOVABLE | Gfp::NOWARN, |rm| {
                crate::page_alloc::PageAllocator::<P>::undesc_word(rm, Subtype::Offline, 0)
            });
            match r {
                Ok(_) => got += 1,
                Err(AllocError::NoMemory { .. } | AllocError::Injected | AllocError::InvalidOrder(_)) => {
                    self.mem.pages().undesc().offline.fetch_sub(1, Ordering::Relaxed);
                    self.stats.lock().pages -= 1;
                    break;
                }
            }
        }
        self.stats.lock().inflated += got;
        got
    }

    /// Returns up to `n` balloon pages to the allocator; returns how many.
    pub fn deflate(&self, cpu: &Cpu<'_>, n: u64) -> u64 {
        let m = self.mem;
        let mut done = 0;
        let regions = m.memmap().regions().count();
        'outer: for ri in 0..regions {
            let rm = m.memmap().region_map(ri);
            let r = rm.region;
            let mut pfn = r.start;
            while pfn < r.end {
                if done == n {
                    break 'outer;
                }
                let Some(w) = m.memmap().page_word(m.platform(), rm, pfn) else {
                    pfn = pfn.add(1);
                    continue;
                };
                let cur = w.load();
                let balloon = matches!(cur.kind(), PageKind::Undescribed(u) if u.subtype == Subtype::Offline && u.order == 0)
                    && !crate::page_alloc::PageAllocator::<P>::pageblock_isolated(rm, pfn);
                if balloon && w.compare_exchange(cur, Word::TAIL).is_ok() {
                    m.pages().free_claimed(cpu, rm, pfn, 0);
                    done += 1;
                }
                pfn = pfn.add(1);
            }
        }
        m.pages().undesc().offline.fetch_sub(done, Ordering::Relaxed);
        let mut s = self.stats.lock();
        s.pages -= done;
        s.deflated += done;
        done
    }
}
