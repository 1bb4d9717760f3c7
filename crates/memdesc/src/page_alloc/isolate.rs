//! Pfn-level operations on free memory that hwpoison, offlining, the balloon, compaction and
//! guard pages share: take one given aligned block out of the buddy lists even when it sits
//! inside a larger free block (splitting that block and putting the rest back), isolate and
//! un-isolate pageblocks (migratetype [`MigrateType::Isolate`], which the allocator never
//! hands out and never merges with other types), the counters of the undescribed kinds, and
//! the report of reserved ranges.
//!
//! These operations work on **flat** regions; a pfn in a two-level region gets
//! [`IsolateError::TwoLevel`] (taking one page out of an unsplit 2 MiB area would need the
//! area split first, which only the allocator's own carve path does today).
//!
//! This module touches zone free lists (under the zone lock), page words of free pages, and
//! pageblock bytes; never page contents except the free-list links the buddy code keeps.

use crate::base::addr::Pfn;
use crate::base::pageblock::MigrateType;
use crate::base::platform::Platform;
use crate::base::sync::Ordering;
use crate::memmap::word::{PageKind, Subtype, Word};
use crate::memmap::RegionMap;
use crate::page_alloc::zone::Buddy;
use crate::page_alloc::PageAllocator;
// The isolation operations proper serve memory health (offline, compaction, hwpoison, balloon).
#[cfg(feature = "health")]
use crate::base::addr::{AREA_ORDER, AREA_PAGES};
#[cfg(feature = "health")]
use crate::base::layout::{MemmapLayout, NR_ZONES};
#[cfg(feature = "health")]
use crate::page_alloc::zone::{FreeLists, Zone};

/// Why a pfn-level operation on free memory was refused. Nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IsolateError {
    /// The pfn is in no region.
    OutOfRange(Pfn),
    /// The pfn is in a two-level region (not supported by these operations).
    TwoLevel(Pfn),
    /// The block is not (entirely) free in the buddy lists.
    NotFree(Pfn),
    /// The pfn or range is not aligned as required.
    Misaligned(Pfn),
}

impl core::fmt::Display for IsolateError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            IsolateError::OutOfRange(p) => write!(f, "pfn {p} is not in any memory region"),
            IsolateError::TwoLevel(p) => write!(f, "pfn {p} is in a two-level region (unsupported)"),
            IsolateError::NotFree(p) => write!(f, "pfn {p} is not free in the buddy lists"),
            IsolateError::Misaligned(p) => write!(f, "pfn {p} is misaligned for this operation"),
        }
    }
}

impl core::error::Error for IsolateError {}

/// A snapshot of the undescribed-kind counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UndescribedStats {
    /// Pages whose word is `HwPoison` now.
    pub hwpoison_pages: u64,
    /// `memory_failure` calls that were handled (recovered, delayed or ignored).
    pub hwpoison_events: u64,
    /// Poisoned folio pages still waiting for their owner's last reference (a poisoned slab
    /// waiting for its last object is not counted here).
    pub hwpoison_delayed: u64,
    /// Poisoned pages left in place (kernel memory that cannot be recovered).
    pub hwpoison_ignored: u64,
    /// Pages whose word is `Offline` now (balloon and offlined ranges).
    pub offline_pages: u64,
    /// Guard pages now in place.
    pub guard_pages: u64,
}

impl<P: Platform> PageAllocator<P> {
    /// The counters of poisoned, offline and guard pages.
    pub(crate) fn undescribed_stats(&self) -> UndescribedStats {
        let c = &self.undesc;
        UndescribedStats {
            hwpoison_pages: c.hwpoison.load(Ordering::Relaxed),
            hwpoison_events: c.hwpoison_events.load(Ordering::Relaxed),
            hwpoison_delayed: c.hwpoison_delayed.load(Ordering::Relaxed),
            hwpoison_ignored: c.hwpoison_ignored.load(Ordering::Relaxed),
            offline_pages: c.offline.load(Ordering::Relaxed),
            guard_pages: c.guard.load(Ordering::Relaxed),
        }
    }

    /// Calls `f(start, end)` for every maximal run of `Reserved` pages (firmware ranges and
    /// boot allocations: memmap, per-CPU areas, slab bootstrap), in pfn order; returns the
    /// number of reserved pages. These pages are never on a free list and never allocated.
    pub(crate) fn reserved_ranges(&self, mut f: impl FnMut(Pfn, Pfn)) -> u64 {
        let mut run: Option<(Pfn, Pfn)> = None;
        let mut total = 0;
        for r in self.memmap.regions() {
            self.memmap.walk(&self.platform, r.start, r.end, |v| {
                let n = 1u64 << v.span_order;
                let reserved = matches!(v.word.kind(), PageKind::Undescribed(u) if u.subtype == Subtype::Reserved);
                if reserved {
                    total += n;
                    run = match run {
                        Some((s, e)) if e == v.first => Some((s, v.first.add(n))),
                        Some((s, e)) => {
                            f(s, e);
                            Some((v.first, v.first.add(n)))
                        }
                        None => Some((v.first, v.first.add(n))),
                    };
                }
            });
        }
        if let Some((s, e)) = run {
            f(s, e);
        }
        total
    }

    /// The migratetype of the pageblock holding `pfn`.
    pub(crate) fn pageblock_migratetype(&self, pfn: Pfn) -> Option<MigrateType> {
        let rm = self.memmap.region_map(self.memmap.region_index(pfn)?);
        MigrateType::from_bits(rm.pageblock(pfn).load(Ordering::Relaxed))
    }

    /// Stamps every page of an owned block `HwPoison`.
    #[cfg(feature = "slab")]
    pub(crate) fn retire_poisoned_block(&self, pfn: Pfn, order: u32) {
        let rm = self.memmap.region_map(self.memmap.region_index(pfn).expect("an owned block is in a region"));
        for i in 0..1u64 << order {
            if let Some(w) = self.memmap.page_word(&self.platform, rm, pfn.add(i)) {
                w.store(Self::undesc_word(rm, Subtype::HwPoison, 0));
            }
        }
        self.undesc.hwpoison.fetch_add(1 << order, Ordering::Relaxed);
    }

    /// The region map and zone of a pfn in a flat region.
    #[cfg(feature = "health")]
    pub(crate) fn flat_ctx(&self, pfn: Pfn) -> Result<(&RegionMap, &Zone), IsolateError> {
        let rm =
            self.memmap.region_index(pfn).map(|i| self.memmap.region_map(i)).ok_or(IsolateError::OutOfRange(pfn))?;
        if rm.region.layout != MemmapLayout::Flat {
            return Err(IsolateError::TwoLevel(pfn));
        }
        let slot = rm.region.node as usize * NR_ZONES + rm.region.zone as usize;
        let zone = self.zones[slot].as_ref().ok_or(IsolateError::OutOfRange(pfn))?;
        Ok((rm, zone))
    }

    /// Takes the aligned block `[pfn, pfn + 2^order)` out of the buddy lists, splitting the
    /// free block that contains it and putting the other pieces back on their list. Drains the
    /// per-CPU lists first if the page sits on one. The block's words are left as tail words
    /// (the caller stamps the head) and its pages are no longer counted free.
    #[cfg(feature = "health")]
    pub(crate) fn take_free_block(&self, pfn: Pfn, order: u32) -> Result<(), IsolateError> {
        if !pfn.is_aligned(order) || order > self.config().max_order {
            return Err(IsolateError::Misaligned(pfn));
        }
        let (rm, zone) = self.flat_ctx(pfn)?;
        if pfn.add(1 << order) > rm.region.end {
            return Err(IsolateError::OutOfRange(pfn));
        }
        for attempt in 0..2 {
            let mut fl = zone.lock.lock();
            if self.take_locked(&mut fl, rm, pfn, order) {
                zone.free_pages.store(fl.free_pages, Ordering::Relaxed);
                return Ok(());
            }
            drop(fl);
            // The page may sit on a per-CPU list: drain them all and look once more.
            if attempt == 0 && self.pcp_pages() > 0 {
                self.drain_all();
            } else {
                break;
            }
        }
        Err(IsolateError::NotFree(pfn))
    }

    /// Under the zone lock: `take_free_block` without the draining.
    #[cfg(feature = "health")]
    pub(crate) fn take_locked(&self, fl: &mut FreeLists, rm: &RegionMap, pfn: Pfn, order: u32) -> bool {
        let Some((head, ho)) = self.free_block_containing_pfn(pfn) else { return false };
        let Some(bi) = rm.flat_word(head).load().buddy_info() else { return false };
        if bi.pcp || (ho < order) {
            return false;
        }
        let buddy = self.buddy();
        let mt = MigrateType::from_bits(bi.migratetype).unwrap_or(MigrateType::Movable);
        buddy.list_del(fl, head, ho, mt);
        let (mut h, mut o) = (head, ho);
        while o > order {
            o -= 1;
            let hi = h.add(1 << o);
            let (keep, give) = if pfn >= hi { (hi, h) } else { (h, hi) };
            rm.flat_word(give).store(Buddy::<P>::buddy_word(rm, o, mt, false));
            buddy.list_add(fl, give, o, mt);
            h = keep;
        }
        debug_assert_eq!(h, pfn);
        rm.flat_word(pfn).store(Word::TAIL);
        fl.free_pages -= 1 << order;
        true
    }

    /// The undescribed word of `subtype` and `order` for a page of `rm`.
    pub(crate) fn undesc_word(rm: &RegionMap, subtype: Subtype, order: u32) -> Word {
        Buddy::<P>::undescribed(rm, subtype, order)
    }

    /// Takes every free block in `[start, end)` (flat, aligned to `max_order`) off its list and
    /// frees it again as migratetype `mt`, merging as the buddy algorithm does. Used to move a
    /// range's free memory onto or off the isolate lists.
    #[cfg(feature = "health")]
    pub(crate) fn refile_range(&self, zone: &Zone, rm: &RegionMap, start: Pfn, end: Pfn, mt: MigrateType) {
        let buddy = self.buddy();
        let mut fl = zone.lock.lock();
        let mut pfn = start;
        while pfn < end {
            match rm.flat_word(pfn).load().buddy_info() {
                Some(bi) if !bi.pcp => {
                    let k = bi.order as u32;
                    let old = MigrateType::from_bits(bi.migratetype).unwrap_or(MigrateType::Movable);
                    buddy.list_del(&mut fl, pfn, k, old);
                    rm.flat_word(pfn).store(Word::TAIL);
                    fl.free_pages -= 1 << k;
                    buddy.free_block(&mut fl, pfn, k, mt);
                    pfn = pfn.add(1 << k);
                }
                _ => pfn = pfn.add(1),
            }
        }
        zone.free_pages.store(fl.free_pages, Ordering::Relaxed);
    }

    /// Sets the migratetype of every pageblock of `[start, end)` (pageblock-aligned).
    #[cfg(feature = "health")]
    pub(crate) fn set_pageblocks(&self, rm: &RegionMap, start: Pfn, end: Pfn, mt: MigrateType) {
        let mut pb = start;
        while pb < end {
            rm.pageblock(pb).store(mt as u8, Ordering::Relaxed);
            pb = pb.add(AREA_PAGES);
        }
    }

    /// Whether `pfn`'s pageblock is isolated.
    #[cfg(feature = "health")]
    pub(crate) fn pageblock_isolated(rm: &RegionMap, pfn: Pfn) -> bool {
        rm.pageblock(pfn.align_down(AREA_ORDER)).load(Ordering::Relaxed) == MigrateType::Isolate as u8
    }
}
