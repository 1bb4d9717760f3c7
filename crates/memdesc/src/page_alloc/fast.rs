//! The per-CPU fast paths of small allocations and frees (issue 14): what an allocation of
//! order the per-CPU lists serve (`pcp_serves`: orders 0 and 1) served from the caller's per-CPU list, and the free of an owned
//! small block onto it, do when nothing unusual is going on. Each fast path decides from a few
//! loads whether the general path would take exactly the same steps; if not (an empty list,
//! a zone under its watermark, a word that is not the expected head, guard pages on the
//! machine, debug checks, ...) it changes nothing and the caller runs the general path, which
//! makes every decision and reports every error as before.
//!
//! What the general allocation decides on every call and the fast one precomputes at boot
//! (`FastPath`): the first zone of the zone walk for a [`Gfp`]'s zone bits (regions and
//! zones never change after boot), and the region of a zone that has only one. The
//! watermark check stays on every allocation (one load of the zone's free count against its
//! low mark, the test the zone walk's first pass makes for a per-CPU order).
//!
//! The free checks the head word against the one exact word the allocation stamped (one
//! compare instead of decoding it) and moves it straight to the per-CPU free word: the caller
//! consumed the block's only owned handle (`Pages`), so no other free races
//! this one and the intermediate tail word of the general path's claim would be seen by no
//! one who could act on it.

use crate::base::addr::Pfn;
use crate::base::cpu::Cpu;
use crate::base::gfp::Gfp;
use crate::base::layout::{MemmapLayout, MAX_REGIONS};
use crate::base::pageblock::{MigrateType, NR_PCP_TYPES};
use crate::base::platform::Platform;
use crate::base::sync::Ordering;
use crate::memmap::word::{Page, Subtype, Word};
use crate::memmap::RegionMap;
use crate::page_alloc::fast_tables::{zone_class, NO_REGION, NO_SLOT, RAW_ORDERS};
use crate::page_alloc::pcp::Pcp;
use crate::page_alloc::zone::Buddy;
use crate::page_alloc::{PageAllocator, MAX_ZONE_SLOTS};

// `served_block` masks a region index instead of checking its bound.
const _: () = assert!(MAX_REGIONS.is_power_of_two());

impl<P: Platform> PageAllocator<P> {
    /// The word of a block of `order <= PCP_MAX_ORDER` at `pfn` in `rm` (`Memmap::block_word`
    /// with the flat layout's lookup inline).
    #[inline(always)]
    fn small_word<'a>(&'a self, rm: &'a RegionMap, pfn: Pfn) -> Option<&'a Page> {
        if rm.region.layout == MemmapLayout::Flat {
            Some(rm.flat_word(pfn))
        } else {
            self.memmap.page_word(&self.platform, rm, pfn)
        }
    }

    /// The per-CPU lists of CPU `cpu_id` (the id of a checked token, so below the number of
    /// CPUs) for zone slot `slot`.
    #[inline(always)]
    fn pcp_of(&self, cpu_id: usize, slot: usize) -> &Pcp {
        debug_assert!(cpu_id < self.cpus().nr() && slot < MAX_ZONE_SLOTS);
        &self.pcp[cpu_id * MAX_ZONE_SLOTS + slot]
    }

    /// The head word `alloc_pages` stamps on a raw block of `order <= max_order` in `rm`,
    /// whose zone is in `slot` (`Undescribed { Unmappable, order }`), from the precomputed
    /// table.
    #[inline(always)]
    pub(super) fn raw_head_word(&self, rm: &RegionMap, slot: usize, order: u32) -> Word {
        debug_assert!(slot == Self::slot_of(rm) && order <= self.config.max_order);
        debug_assert_eq!(
            self.fast.raw_head[slot][order as usize],
            Buddy::<P>::undescribed(rm, Subtype::Unmappable, order)
        );
        // Slots are below MAX_ZONE_SLOTS and orders at most MAX_ORDER_LIMIT, below RAW_ORDERS
        // (both powers of two): the masks only drop the bounds checks.
        self.fast.raw_head[slot & (MAX_ZONE_SLOTS - 1)][order as usize & (RAW_ORDERS - 1)]
    }

    /// The region of `slot`'s zone holding `pfn` (a pfn of that zone).
    #[inline(always)]
    fn region_in_slot(&self, slot: usize, pfn: Pfn) -> Option<&RegionMap> {
        match self.fast.sole_region[slot] {
            NO_REGION => self.memmap.region_index(pfn).map(|i| self.memmap.region_map(i)),
            i => Some(self.memmap.region_map(i as usize)),
        }
    }

    /// The zone slot (if the fast free serves it: `FastPath::region_slot`), region and word of
    /// a block of `order <= PCP_MAX_ORDER` at `pfn`: the hot region without a lookup, any
    /// other through the region table. `None`: the general path decides.
    #[inline(always)]
    fn served_block(&self, pfn: Pfn) -> Option<(usize, &RegionMap, &Page)> {
        let (slot, rm, word) = match self.memmap.hot_word(pfn) {
            Some((rm, word)) => (self.fast.hot_slot, rm, word),
            None => {
                let i = self.memmap.region_index(pfn)?;
                let rm = self.memmap.region_map(i);
                // Region indices are below MAX_REGIONS (a power of two): the mask only drops
                // the bounds check.
                (self.fast.region_slot[i & (MAX_REGIONS - 1)], rm, self.small_word(rm, pfn)?)
            }
        };
        // Table slots are NO_SLOT or below MAX_ZONE_SLOTS (a power of two): the mask only
        // drops the bounds checks of the tables indexed by it.
        (slot != NO_SLOT).then_some((slot as usize & (MAX_ZONE_SLOTS - 1), rm, word))
    }

    /// The fast allocation (module header): a block of `order` popped from the caller's
    /// per-CPU list of the first zone of `gfp`'s walk, when the general path would pop the
    /// same block (that zone passes the first pass's watermark and its list is not empty),
    /// with its region, the word to stamp and the zone's slot. The caller has checked the token, served
    /// requests, the order and the fault injector, and stamps the head word. `None`: nothing
    /// changed, take the general path.
    #[inline(always)]
    pub(super) fn alloc_fast(&self, cpu_id: usize, order: u32, gfp: Gfp) -> Option<(Pfn, &RegionMap, &Page, usize)> {
        if !super::pcp_serves(order) {
            return None;
        }
        // `NO_SLOT` also for a zone without per-CPU lists or with CPU-local areas, which come
        // before the per-CPU lists on the general path (`FastPath::pcp_slot`).
        let slot = self.fast.pcp_slot[zone_class(gfp)];
        if slot == NO_SLOT {
            return None;
        }
        // Below MAX_ZONE_SLOTS (a power of two): the mask only drops the bounds checks.
        let slot = slot as usize & (MAX_ZONE_SLOTS - 1);
        let mt = gfp.migratetype();
        let zone = self.zones[slot].as_ref()?;
        // `watermark_ok`'s first pass for a per-CPU order in a zone with per-CPU lists.
        if zone.free_pages.load(Ordering::Relaxed) < zone.wmark[1].load(Ordering::Relaxed) || !mt.has_pcp() {
            return None;
        }
        let pfn = Pfn(self.pcp_of(cpu_id, slot).pop_owned(&self.pcp_links(), order, mt as usize)?);
        let (rm, word) = match self.memmap.hot_word(pfn) {
            Some(found) => found,
            None => {
                let rm = self.region_in_slot(slot, pfn).expect("a per-CPU page lies in its zone's regions");
                (rm, self.small_word(rm, pfn).expect("an allocated block has a word"))
            }
        };
        Some((pfn, rm, word, slot))
    }

    /// The fast free of an owned block (module header): when `pfn` heads exactly the raw
    /// allocation of `order` that `alloc_pages` stamped, on a machine without guard pages and
    /// without debug tail checks, into a zone and pageblock with per-CPU lists, the block goes
    /// onto the caller's per-CPU list and this returns `true`. `false`: nothing changed, take
    /// the general path (which reports any error).
    #[inline(always)]
    pub(super) fn free_owned_fast(&self, cpu: &Cpu<'_>, cpu_id: usize, pfn: Pfn, order: u32) -> bool {
        if !super::pcp_serves(order) || (order > 0 && self.config.debug_checks) {
            return false;
        }
        // Guard pages exist only while this counter is above zero: the guarded allocation
        // counted them before handing the block out, so its owner sees them counted.
        if self.undesc.guard.load(Ordering::Relaxed) != 0 {
            return false;
        }
        // `None` also for a region whose zone has no per-CPU lists or gives CPU-local areas
        // (a block of a held area goes back to its area on the general path).
        let Some((slot, rm, word)) = self.served_block(pfn) else { return false };
        if word.load() != self.fast.raw_head[slot][order as usize] {
            return false;
        }
        // The exact head word of a raw allocation of `order` at `pfn`: the allocation was
        // aligned and inside the region (the general path's checks would pass).
        debug_assert!(pfn.is_aligned(order) && pfn.add(1 << order) <= rm.region.end);
        // A pageblock of a type with per-CPU lists (those are numbered below NR_PCP_TYPES);
        // any other value takes the general path, which decodes it.
        let mt = rm.pageblock(pfn).load(Ordering::Relaxed) as usize;
        if mt >= NR_PCP_TYPES {
            return false;
        }
        debug_assert!(MigrateType::from_bits(mt as u8).is_some_and(|m| m as usize == mt && m.has_pcp()));
        debug_assert!(self.zones[slot].as_ref().is_some_and(|z| z.pcp_ok) && !self.areas_ok[slot]);
        self.serve_requests(cpu);
        // The claim and the per-CPU free word in one store (module header).
        word.store(self.fast.pcp_free[slot][order as usize][mt]);
        // `Pcp::free` with its drain out of line (`pcp_drain_batch`).
        if self.pcp_of(cpu_id, slot).push_owned(&self.pcp_links(), pfn.0, order, mt) {
            self.pcp_drain_batch(cpu, cpu_id, slot);
        }
        true
    }
}
