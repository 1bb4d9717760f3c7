//! The tables of the small-block fast paths (`page_alloc/fast.rs`), precomputed at boot from
//! the zones and the memmap, which never change after boot. A module of its own so that the
//! page allocator holds them without importing the fast paths (which import it).

use crate::base::gfp::Gfp;
use crate::base::layout::{ZoneType, MAX_NODES, MAX_REGIONS, NR_ZONES};
use crate::base::pageblock::NR_PCP_TYPES;
use crate::memmap::word::{BuddyInfo, Subtype, Undescribed, Word, MAX_INLINE_ORDER};
use crate::memmap::Memmap;
use crate::page_alloc::pcp::PCP_MAX_ORDER;
use crate::page_alloc::zone::{Zone, MAX_ORDER_LIMIT};

/// Zone slots (node × zone type), as the page allocator counts them.
const MAX_ZONE_SLOTS: usize = MAX_NODES * NR_ZONES;

/// Orders with per-CPU lists.
pub(super) const ORDERS: usize = PCP_MAX_ORDER as usize + 1;

/// Orders of `FastPath::raw_head`: every order a machine may be configured with, rounded up
/// to a power of two so that an order masked with `RAW_ORDERS - 1` needs no bounds check.
pub(super) const RAW_ORDERS: usize = (MAX_ORDER_LIMIT as usize + 1).next_power_of_two();
const _: () = assert!(RAW_ORDERS <= MAX_INLINE_ORDER as usize + 1);

/// No slot (`FastPath` tables).
pub(super) const NO_SLOT: u8 = u8::MAX;
/// No single region (`FastPath::sole_region`).
pub(super) const NO_REGION: u16 = u16::MAX;

/// What the fast paths precompute at boot from the zones and regions (fixed after boot).
pub(crate) struct FastPath {
    /// For each combination of the zone bits of a [`Gfp`] (`zone_class`): the slot of the
    /// first zone the general allocation's walk would try, if that zone has per-CPU lists;
    /// `NO_SLOT` otherwise (such allocations always take the general path). The buddy-order
    /// fast path (`fast_buddy.rs`) starts here.
    pub(super) first_slot: [u8; 8],
    /// `first_slot` where that zone also gives no CPU-local areas (which come before the
    /// per-CPU lists), else `NO_SLOT`: where the order-0 fast path starts.
    pub(super) pcp_slot: [u8; 8],
    /// For each region (by memmap index): the slot of its zone when the fast free serves the
    /// region's blocks (the zone has per-CPU lists and no CPU-local areas), else `NO_SLOT`.
    pub(super) region_slot: [u8; MAX_REGIONS],
    /// For each zone slot: the index of its region if the zone is exactly one region, else
    /// `NO_REGION` (the region is then looked up by pfn).
    pub(super) sole_region: [u16; MAX_ZONE_SLOTS],
    /// For each zone slot and order (every order a machine may have): the head word of a raw
    /// allocation (`Undescribed { Unmappable, order }` with the zone's node and type), what
    /// `Buddy::undescribed` makes for any region of the zone.
    pub(super) raw_head: [[Word; RAW_ORDERS]; MAX_ZONE_SLOTS],
    /// For each zone slot, order and per-CPU migratetype: the word of a block on a per-CPU
    /// list (`Buddy { pcp: true }`), what `Buddy::buddy_word` makes for any region of the zone.
    pub(super) pcp_free: [[[Word; NR_PCP_TYPES]; ORDERS]; MAX_ZONE_SLOTS],
    /// `region_slot` of the memmap's hot region (`Memmap::hot_word`), `NO_SLOT` if there is
    /// none: the fast free of a block there needs no region lookup.
    pub(super) hot_slot: u8,
}

/// Index into `FastPath::first_slot`: the three bits of `gfp` that choose zones.
#[inline(always)]
pub(super) fn zone_class(gfp: Gfp) -> usize {
    gfp.contains(Gfp::MOVABLE) as usize
        | (gfp.contains(Gfp::DMA) as usize) << 1
        | (gfp.contains(Gfp::DMA32) as usize) << 2
}

impl FastPath {
    /// Precomputes the tables from the booted zones and memmap; `areas_ok[slot]`: the zone in
    /// `slot` gives CPU-local areas (whose blocks the fast paths leave to the general path).
    pub(crate) fn new(
        zones: &[Option<Zone>; MAX_ZONE_SLOTS],
        areas_ok: &[bool; MAX_ZONE_SLOTS],
        memmap: &Memmap,
    ) -> FastPath {
        // The fast paths serve a zone with per-CPU lists and without CPU-local areas.
        let served = |slot: usize| zones[slot].as_ref().is_some_and(|z| z.pcp_ok) && !areas_ok[slot];
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
        let pcp_slot = first_slot.map(|slot| if slot != NO_SLOT && served(slot as usize) { slot } else { NO_SLOT });
        let mut region_slot = [NO_SLOT; MAX_REGIONS];
        let mut sole_region = [NO_REGION; MAX_ZONE_SLOTS];
        let mut regions_in = [0u32; MAX_ZONE_SLOTS];
        for (i, r) in memmap.regions().enumerate() {
            let slot = r.node as usize * NR_ZONES + r.zone as usize;
            regions_in[slot] += 1;
            sole_region[slot] = u16::try_from(i).unwrap_or(NO_REGION);
            if served(slot) {
                region_slot[i] = slot as u8;
            }
        }
        for (sole, n) in sole_region.iter_mut().zip(regions_in) {
            if n != 1 {
                *sole = NO_REGION;
            }
        }
        let mut raw_head = [[Word::TAIL; RAW_ORDERS]; MAX_ZONE_SLOTS];
        let mut pcp_free = [[[Word::TAIL; NR_PCP_TYPES]; ORDERS]; MAX_ZONE_SLOTS];
        for (slot, zone) in zones.iter().enumerate() {
            let Some(zone) = zone else { continue };
            let (node, ztype) = (zone.node, zone.ztype as u8);
            for (order, w) in raw_head[slot].iter_mut().enumerate() {
                let u = Undescribed { subtype: Subtype::Unmappable, order: order as u8, node, zone: ztype };
                *w = Word::undescribed(u).expect("fields in range");
            }
            for (order, words) in pcp_free[slot].iter_mut().enumerate() {
                for (mt, w) in words.iter_mut().enumerate() {
                    let b = BuddyInfo { order: order as u8, migratetype: mt as u8, zone: ztype, node, pcp: true };
                    *w = Word::buddy(b).expect("fields in range");
                }
            }
        }
        let hot_slot = region_slot.get(memmap.hot_region()).copied().unwrap_or(NO_SLOT);
        FastPath { first_slot, pcp_slot, region_slot, sole_region, raw_head, pcp_free, hot_slot }
    }
}
