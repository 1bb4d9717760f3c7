//! The per-CPU fast paths of small allocations and frees (issue 14): what an allocation of
//! order `<= PCP_MAX_ORDER` served from the caller's per-CPU list, and the free of an owned
//! small block onto it, do when nothing unusual is going on. Each fast path decides from a few
//! loads whether the general path would take exactly the same steps; if not (an empty list,
//! a zone under its watermark, a word that is not the expected head, guard pages on the
//! machine, debug checks, ...) it changes nothing and the caller runs the general path, which
//! makes every decision and reports every error as before.
//!
//! What the general allocation decides on every call and the fast one precomputes at boot
//! ([`FastPath`]): the first zone of the zone walk for a [`Gfp`]'s zone bits (regions and
//! zones never change after boot), and the region of a zone that has only one. The
//! watermark check stays on every allocation (one load of the zone's free count against its
//! low mark, the test the zone walk's first pass makes for a per-CPU order).
//!
//! The free checks the head word against the one exact word the allocation stamped (one
//! compare instead of decoding it) and moves it straight to the per-CPU free word: the caller
//! consumed the block's only owned handle ([`super::pages::Pages`]), so no other free races
//! this one and the intermediate tail word of the general path's claim would be seen by no
//! one who could act on it.

use crate::base::addr::Pfn;
use crate::base::cpu::Cpu;
use crate::base::gfp::Gfp;
use crate::base::layout::{MemmapLayout, ZoneType, MAX_NODES, NR_ZONES};
use crate::base::pageblock::{MigrateType, NR_PCP_TYPES};
use crate::base::platform::Platform;
use crate::base::sync::Ordering;
use crate::memmap::word::{BuddyInfo, Page, Subtype, Undescribed, Word};
use crate::memmap::{Memmap, RegionMap};
use crate::page_alloc::pcp::{Pcp, PCP_MAX_ORDER};
use crate::page_alloc::zone::{Buddy, Zone};
use crate::page_alloc::{DirectLinks, PageAllocator, MAX_ZONE_SLOTS};

/// Orders with per-CPU lists.
const ORDERS: usize = PCP_MAX_ORDER as usize + 1;

/// No slot (`FastPath` tables).
const NO_SLOT: u8 = u8::MAX;
/// No single region (`FastPath::sole_region`).
const NO_REGION: u16 = u16::MAX;

/// What the fast paths precompute at boot from the zones and regions (fixed after boot).
pub(crate) struct FastPath {
    /// For each combination of the zone bits of a [`Gfp`] ([`zone_class`]): the slot of the
    /// first zone the general allocation's walk would try, if that zone has per-CPU lists;
    /// [`NO_SLOT`] otherwise (such allocations always take the general path).
    first_slot: [u8; 8],
    /// For each zone slot: the index of its region if the zone is exactly one region, else
    /// [`NO_REGION`] (the region is then looked up by pfn).
    sole_region: [u16; MAX_ZONE_SLOTS],
    /// For each zone slot and order: the head word of a raw allocation
    /// (`Undescribed { Unmappable, order }` with the zone's node and type), what
    /// `Buddy::undescribed` makes for any region of the zone.
    raw_head: [[Word; ORDERS]; MAX_ZONE_SLOTS],
    /// For each zone slot, order and per-CPU migratetype: the word of a block on a per-CPU
    /// list (`Buddy { pcp: true }`), what `Buddy::buddy_word` makes for any region of the zone.
    pcp_free: [[[Word; NR_PCP_TYPES]; ORDERS]; MAX_ZONE_SLOTS],
}

/// Index into [`FastPath::first_slot`]: the three bits of `gfp` that choose zones.
#[inline(always)]
fn zone_class(gfp: Gfp) -> usize {
    gfp.contains(Gfp::MOVABLE) as usize
        | (gfp.contains(Gfp::DMA) as usize) << 1
        | (gfp.contains(Gfp::DMA32) as usize) << 2
}

impl FastPath {
    /// Precomputes the tables from the booted zones and memmap.
    pub(crate) fn new(zones: &[Option<Zone>; MAX_ZONE_SLOTS], memmap: &Memmap) -> FastPath {
        let mut first_slot = [NO_SLOT; 8];
        for (class, first) in first_slot.iter_mut().enumerate() {
            let mut gfp = Gfp::KERNEL;
            for (bit, flag) in [Gfp::MOVABLE, Gfp::DMA, Gfp::DMA32].into_iter().enumerate() {
                if class & (1 << bit) != 0 {
                    gfp = gfp | flag;
                }
            }
            debug_assert_eq!(zone_class(gfp), class);
            // The same walk as `alloc_with`'s: nodes in order, zone types from the highest
            // allowed down, skipping absent zones and, unless the allocation may be
            // unmapped, zones without a direct map.
            let highest = gfp.highest_zone();
            let walk = (0..MAX_NODES).flat_map(|node| {
                ZoneType::ALL.iter().rev().filter(move |z| **z <= highest).map(move |zt| node * NR_ZONES + *zt as usize)
            });
            let found = walk
                .filter_map(|slot| zones[slot].as_ref().map(|z| (slot, z)))
                .find(|(_, z)| z.pcp_ok || gfp.may_be_unmapped());
            if let Some((slot, zone)) = found {
                if zone.pcp_ok {
                    *first = slot as u8;
                }
            }
        }
        let mut sole_region = [NO_REGION; MAX_ZONE_SLOTS];
        let mut regions_in = [0u32; MAX_ZONE_SLOTS];
        for (i, r) in memmap.regions().enumerate() {
            let slot = r.node as usize * NR_ZONES + r.zone as usize;
            regions_in[slot] += 1;
            sole_region[slot] = u16::try_from(i).unwrap_or(NO_REGION);
        }
        for (sole, n) in sole_region.iter_mut().zip(regions_in) {
            if n != 1 {
                *sole = NO_REGION;
            }
        }
        let mut raw_head = [[Word::TAIL; ORDERS]; MAX_ZONE_SLOTS];
        let mut pcp_free = [[[Word::TAIL; NR_PCP_TYPES]; ORDERS]; MAX_ZONE_SLOTS];
        for (slot, zone) in zones.iter().enumerate() {
            let Some(zone) = zone else { continue };
            let (node, ztype) = (zone.node, zone.ztype as u8);
            for order in 0..ORDERS {
                let u = Undescribed { subtype: Subtype::Unmappable, order: order as u8, node, zone: ztype };
                raw_head[slot][order] = Word::undescribed(u).expect("fields in range");
                for (mt, w) in pcp_free[slot][order].iter_mut().enumerate() {
                    let b = BuddyInfo { order: order as u8, migratetype: mt as u8, zone: ztype, node, pcp: true };
                    *w = Word::buddy(b).expect("fields in range");
                }
            }
        }
        FastPath { first_slot, sole_region, raw_head, pcp_free }
    }
}

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

    /// The head word `alloc_pages` stamps on a raw block of `order` in `rm`
    /// (`Undescribed { Unmappable, order }`), from the precomputed table for small orders.
    #[inline(always)]
    pub(super) fn raw_head_word(&self, rm: &RegionMap, order: u32) -> Word {
        match self.fast.raw_head[Self::slot_of(rm)].get(order as usize) {
            Some(w) => *w,
            None => Buddy::<P>::undescribed(rm, Subtype::Unmappable, order),
        }
    }

    /// The region of `slot`'s zone holding `pfn` (a pfn of that zone).
    #[inline(always)]
    fn region_in_slot(&self, slot: usize, pfn: Pfn) -> Option<&RegionMap> {
        match self.fast.sole_region[slot] {
            NO_REGION => self.memmap.region_index(pfn).map(|i| self.memmap.region_map(i)),
            i => Some(self.memmap.region_map(i as usize)),
        }
    }

    /// The fast allocation (module header): a block of `order` popped from the caller's
    /// per-CPU list of the first zone of `gfp`'s walk, when the general path would pop the
    /// same block (that zone passes the first pass's watermark and its list is not empty).
    /// The caller has checked the token, served requests, the order and the fault injector,
    /// and stamps the head word. `None`: nothing changed, take the general path.
    #[inline(always)]
    pub(super) fn alloc_fast(&self, cpu_id: usize, order: u32, gfp: Gfp) -> Option<(Pfn, &RegionMap)> {
        if order > PCP_MAX_ORDER {
            return None;
        }
        let slot = self.fast.first_slot[zone_class(gfp)];
        if slot == NO_SLOT {
            return None;
        }
        let slot = slot as usize;
        let mt = gfp.migratetype();
        let zone = self.zones[slot].as_ref()?;
        // `watermark_ok`'s first pass for a per-CPU order in a zone with per-CPU lists.
        if zone.free_pages.load(Ordering::Relaxed) < zone.wmark[1].load(Ordering::Relaxed) || !mt.has_pcp() {
            return None;
        }
        let pfn = Pfn(self.pcp_of(cpu_id, slot).pop_owned(&DirectLinks(&self.platform), order, mt as usize)?);
        let rm = self.region_in_slot(slot, pfn).expect("a per-CPU page lies in its zone's regions");
        Some((pfn, rm))
    }

    /// The fast free of an owned block (module header): when `pfn` heads exactly the raw
    /// allocation of `order` that `alloc_pages` stamped, on a machine without guard pages and
    /// without debug tail checks, into a zone and pageblock with per-CPU lists, the block goes
    /// onto the caller's per-CPU list and this returns `true`. `false`: nothing changed, take
    /// the general path (which reports any error).
    #[inline(always)]
    pub(super) fn free_owned_fast(&self, cpu: &Cpu<'_>, cpu_id: usize, pfn: Pfn, order: u32) -> bool {
        if order > PCP_MAX_ORDER || (order > 0 && self.config.debug_checks) {
            return false;
        }
        // Guard pages exist only while this counter is above zero: the guarded allocation
        // counted them before handing the block out, so its owner sees them counted.
        if self.undesc.guard.load(Ordering::Relaxed) != 0 {
            return false;
        }
        let Some(i) = self.memmap.region_index(pfn) else { return false };
        let rm = self.memmap.region_map(i);
        let Some(word) = self.small_word(rm, pfn) else { return false };
        let slot = Self::slot_of(rm);
        if word.load() != self.fast.raw_head[slot][order as usize] {
            return false;
        }
        // The exact head word of a raw allocation of `order` at `pfn`: the allocation was
        // aligned and inside the region (the general path's checks would pass).
        debug_assert!(pfn.is_aligned(order) && pfn.add(1 << order) <= rm.region.end);
        let Some(zone) = self.zones[slot].as_ref() else { return false };
        // A pageblock of a type with per-CPU lists (those are numbered below NR_PCP_TYPES);
        // any other value takes the general path, which decodes it.
        let mt = rm.pageblock(pfn).load(Ordering::Relaxed) as usize;
        if mt >= NR_PCP_TYPES || !zone.pcp_ok {
            return false;
        }
        debug_assert!(MigrateType::from_bits(mt as u8).is_some_and(|m| m as usize == mt && m.has_pcp()));
        self.serve_requests(cpu);
        // The claim and the per-CPU free word in one store (module header).
        word.store(self.fast.pcp_free[slot][order as usize][mt]);
        let side = super::ZoneSide { mem: self, zone };
        self.pcp_of(cpu_id, slot).free(cpu, &DirectLinks(&self.platform), &side, pfn.0, order, mt);
        true
    }
}
