//! The fast paths of buddy-order allocations and frees (issue 14): blocks of the orders the
//! per-CPU lists do not serve (`pcp_serves`: every order above 1) go straight between the
//! caller and a zone's buddy lists, as in Linux's `rmqueue_buddy` and `__free_one_page`. What
//! the general path spends around the buddy itself (the zone walk with its gfp decode, the
//! region lookup after taking a block, the full decode of the freed head word, the guard-page
//! probe, the pageblock and area branches of `free_claimed`) is replaced by a few loads that
//! prove the general path would take exactly the same steps; if they do not (a zone under its
//! watermark or out of blocks, CPU-local areas, guard pages on the machine, debug checks, a
//! word that is not the expected head, ...) nothing has changed and the caller runs the
//! general path, which makes every decision and reports every error as before.
//!
//! The allocation takes the first zone of the gfp's walk from a boot-time table
//! (`FastPath::first_slot`, which the order-0 fast path's table is derived from: zones and
//! regions never change after boot), makes the first pass's watermark test (free pages at least the low mark plus the block),
//! and takes the block under the zone lock with `Buddy::rmqueue_in`, which also names the
//! block's region. The general path's first pass would try exactly that zone with exactly that test
//! and that call; if the lists hold nothing for the request, `Buddy::rmqueue_in` changed nothing
//! and the general path starts its walk over.
//!
//! The free compares the head word against the one exact word the allocation stamped
//! (`Undescribed { Unmappable, order }` of the block's zone) instead of decoding it, claims
//! it with a plain store (the caller consumed the block's only owned `Pages`, so no other free
//! races this one), and gives it to the zone's buddy lists as `free_claimed` does.

use crate::base::addr::Pfn;
use crate::base::gfp::Gfp;
use crate::base::pageblock::MigrateType;
use crate::base::platform::Platform;
use crate::base::sync::Ordering;
use crate::memmap::word::Word;
use crate::memmap::RegionMap;
use crate::page_alloc::area::AREA_MAX_ORDER;
use crate::page_alloc::fast_tables::{zone_class, NO_REGION, NO_SLOT};
use crate::page_alloc::{PageAllocator, MAX_ZONE_SLOTS};

impl<P: Platform> PageAllocator<P> {
    /// The fast allocation of a buddy order (module header): a block of `order` taken from
    /// the buddy lists of the first zone of `gfp`'s walk, when the general path's first pass
    /// would take it there (no CPU-local areas serve the request, the zone passes the
    /// watermark, its lists hold a block). The caller has checked the token, served
    /// requests, the order and the fault injector, and stamps the head word (the zone's slot
    /// comes with the block). `None`: nothing changed, take the general path.
    #[inline(always)]
    pub(super) fn alloc_buddy_fast(&self, order: u32, gfp: Gfp) -> Option<(Pfn, &RegionMap, usize)> {
        if super::pcp_serves(order) {
            return None;
        }
        let slot = self.fast.first_slot[zone_class(gfp)];
        if slot == NO_SLOT {
            return None;
        }
        let slot = slot as usize;
        let mt = gfp.migratetype();
        // CPU-local areas come before the buddy lists on the general path (`rmqueue`).
        if order <= AREA_MAX_ORDER && mt.has_pcp() && self.areas_ok[slot] {
            return None;
        }
        let zone = self.zones[slot].as_ref()?;
        // `watermark_ok`'s first pass for an order without per-CPU lists.
        if zone.free_pages.load(Ordering::Relaxed) < zone.wmark[1].load(Ordering::Relaxed) + (1 << order) {
            return None;
        }
        let near = match self.fast.sole_region[slot] {
            NO_REGION => None,
            i => Some(self.memmap.region_map(i as usize)),
        };
        let mut fl = zone.lock.lock();
        let (pfn, rm) = self.buddy().rmqueue_in(&mut fl, order, mt, near)?;
        fl.allocs += 1;
        zone.free_pages.store(fl.free_pages, Ordering::Relaxed);
        Some((pfn, rm, slot))
    }

    /// The fast free of an owned block of a buddy order (module header): when `pfn` heads
    /// exactly the raw allocation of `order` that `alloc_pages` stamped, on a machine without
    /// guard pages and without debug tail checks, outside zones with CPU-local areas for that
    /// order, the block goes to its zone's buddy lists and this returns `true`. `false`:
    /// nothing changed, take the general path (which reports any error). The caller consumed
    /// the block's only owned handle (`Pages`, its invariants 1 and 2).
    #[inline(always)]
    pub(super) fn free_buddy_fast(&self, pfn: Pfn, order: u32) -> bool {
        if super::pcp_serves(order) || order > self.config.max_order || self.config.debug_checks {
            return false;
        }
        // Guard pages exist only while this counter is above zero: the guarded allocation
        // counted them before handing the block out, so its owner sees them counted.
        if self.undesc.guard.load(Ordering::Relaxed) != 0 {
            return false;
        }
        // An aligned pfn: a two-level region's area word also stands for the area's other
        // pages, which the general path refuses as misaligned.
        if !pfn.is_aligned(order) {
            return false;
        }
        // The hot region is flat: its page word is the block's word.
        let (rm, word) = match self.memmap.hot_word(pfn) {
            Some(found) => found,
            None => {
                let Some(i) = self.memmap.region_index(pfn) else { return false };
                let rm = self.memmap.region_map(i);
                let Some(word) = self.memmap.block_word(&self.platform, rm, pfn, order) else { return false };
                (rm, word)
            }
        };
        // A region's node and zone type are below MAX_NODES and NR_ZONES (checked at layout
        // time), so its slot is below MAX_ZONE_SLOTS (a power of two): the mask only drops
        // the bounds checks.
        let slot = Self::slot_of(rm) & (MAX_ZONE_SLOTS - 1);
        // A block of an order areas serve goes back to its area (the general path).
        if order <= AREA_MAX_ORDER && self.areas_ok[slot] {
            return false;
        }
        if word.load() != self.raw_head_word(rm, slot, order) {
            return false;
        }
        // The exact head word of a raw allocation of `order` at `pfn`: the allocation was
        // inside the region (the general path's checks would pass).
        debug_assert!(pfn.add(1 << order) <= rm.region.end);
        let Some(zone) = self.zones[slot].as_ref() else { return false };
        // The owner's claim (`claim_for_free` with `owned`): a plain store.
        word.store(Word::TAIL);
        let mt = MigrateType::from_bits(rm.pageblock(pfn).load(Ordering::Relaxed)).unwrap_or(MigrateType::Movable);
        let mut fl = zone.lock.lock();
        self.buddy().free_block_in(&mut fl, rm, pfn, order, mt);
        fl.frees += 1;
        zone.free_pages.store(fl.free_pages, Ordering::Relaxed);
        true
    }
}
