//! Zones and the buddy algorithm.
//!
//! A free block's state lives in its head page's word (`Buddy { order, migratetype }`); the
//! other pages of the block hold tail words. Its free-list links (next and previous pfn) live
//! in the first 16 bytes of the free memory itself, reached through the direct map or, for
//! memory without a permanent mapping, a momentary local mapping (`PageWords`, the atomic
//! word view of [`crate::base::page_access`]). Nothing is ever allocated to track free memory. Lists are doubly linked, so removing a block from the middle
//! (when its buddy is freed and they merge) is O(1).
//!
//! Blocks never span regions, so merging never crosses a zone or node boundary or a hole.
//!
//! In a two-level region, blocks of order 9 and up are described by area words; smaller blocks
//! exist only in split areas. Splitting a free area for a small allocation *carves* its first
//! page into the area's word table; when the 511 other pages are all free again the area is
//! made uniform (one order-9 free block) and merging continues at area level.
//!
//! Everything here runs under the zone lock, which the caller holds (`&mut FreeLists`).

use crate::base::addr::{Pfn, AREA_ORDER, AREA_PAGES};
use crate::base::layout::{MemmapLayout, ZoneType};
use crate::base::page_access::PageWords;
use crate::base::pageblock::{MigrateType, NR_MIGRATETYPES};
use crate::base::platform::Platform;
use crate::base::sync::{AtomicU64, Ordering, SpinLock};
use crate::memmap::word::{BuddyInfo, PageKind, SplitInfo, Subtype, Undescribed, Word};
use crate::memmap::{Memmap, RegionMap};

/// Highest MAX_ORDER a machine may be configured with.
pub const MAX_ORDER_LIMIT: u32 = 20;
pub(crate) const NONE: u64 = u64::MAX;

/// The free lists of one order.
#[derive(Clone, Copy)]
pub(crate) struct FreeArea {
    pub(crate) head: [u64; NR_MIGRATETYPES],
    pub(crate) nr: [u64; NR_MIGRATETYPES],
}

/// A zone's free lists (what the zone lock protects).
pub(crate) struct FreeLists {
    pub(crate) areas: [FreeArea; MAX_ORDER_LIMIT as usize + 1],
    pub(crate) free_pages: u64,
    /// Allocations and frees that bypassed the per-CPU lists.
    pub(crate) allocs: u64,
    pub(crate) frees: u64,
}

/// A zone: one node's memory of one [`ZoneType`].
pub struct Zone {
    pub(crate) node: u16,
    pub(crate) ztype: ZoneType,
    pub(crate) start: Pfn,
    pub(crate) end: Pfn,
    pub(crate) present: u64,
    pub(crate) managed: AtomicU64,
    /// Mirror of the free page count for lockless watermark checks.
    pub(crate) free_pages: AtomicU64,
    /// min, low, high.
    pub(crate) wmark: [AtomicU64; 3],
    /// Whether every page of the zone has a direct map (per-CPU lists link through it). A zone
    /// with any memory lacking one (highmem-like) serves only allocations that may be unmapped
    /// ([`Gfp::may_be_unmapped`](crate::Gfp::may_be_unmapped)).
    pub(crate) pcp_ok: bool,
    pub(crate) lock: SpinLock<FreeLists>,
}

impl Zone {
    pub(crate) fn new(node: u16, ztype: ZoneType) -> Self {
        Zone {
            node,
            ztype,
            start: Pfn(u64::MAX),
            end: Pfn(0),
            present: 0,
            managed: AtomicU64::new(0),
            free_pages: AtomicU64::new(0),
            wmark: [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)],
            pcp_ok: true,
            lock: SpinLock::new(FreeLists {
                areas: [FreeArea { head: [NONE; NR_MIGRATETYPES], nr: [0; NR_MIGRATETYPES] };
                    MAX_ORDER_LIMIT as usize + 1],
                free_pages: 0,
                allocs: 0,
                frees: 0,
            }),
        }
    }

    /// Node.
    pub fn node(&self) -> u16 {
        self.node
    }
    /// Zone type.
    pub fn zone_type(&self) -> ZoneType {
        self.ztype
    }
    /// First pfn spanned.
    pub fn start(&self) -> Pfn {
        self.start
    }
    /// One past the last pfn spanned.
    pub fn end(&self) -> Pfn {
        self.end
    }
    /// Pages present (in regions).
    pub fn present_pages(&self) -> u64 {
        self.present
    }
    /// Pages handed to the buddy allocator at boot (present minus reserved).
    pub fn managed_pages(&self) -> u64 {
        self.managed.load(Ordering::Relaxed)
    }
    /// Free pages in the buddy lists (not counting per-CPU lists).
    pub fn free_pages(&self) -> u64 {
        self.free_pages.load(Ordering::Relaxed)
    }
    /// Whether every page of the zone has a permanent kernel mapping. Kernel allocations
    /// (everything but [`Gfp::MOVABLE`](crate::Gfp::MOVABLE)) come only from such zones.
    pub fn direct_mapped(&self) -> bool {
        self.pcp_ok
    }
    /// The min, low and high watermarks in pages.
    pub fn watermarks(&self) -> [u64; 3] {
        [0, 1, 2].map(|i| self.wmark[i].load(Ordering::Relaxed))
    }
}

/// The buddy algorithm over one machine's memmap and platform.
pub(crate) struct Buddy<'a, P: Platform> {
    pub(crate) p: &'a P,
    pub(crate) mm: &'a Memmap,
    pub(crate) max_order: u32,
}

impl<'a, P: Platform> Buddy<'a, P> {
    #[inline]
    fn map(&self, pfn: Pfn) -> PageWords<'a, P> {
        PageWords::new(self.p, pfn).expect("Platform maps every present pfn (Platform safety items 1-2)")
    }

    #[inline]
    pub(crate) fn rm(&self, pfn: Pfn) -> &'a RegionMap {
        self.mm.region_map(self.mm.region_index(pfn).expect("blocks are inside regions"))
    }

    pub(crate) fn buddy_word(rm: &RegionMap, order: u32, mt: MigrateType, pcp: bool) -> Word {
        Word::buddy(BuddyInfo {
            order: order as u8,
            migratetype: mt as u8,
            zone: rm.region.zone as u8,
            node: rm.region.node,
            pcp,
        })
        .expect("fields in range")
    }

    pub(crate) fn undescribed(rm: &RegionMap, subtype: Subtype, order: u32) -> Word {
        Word::undescribed(Undescribed { subtype, order: order as u8, node: rm.region.node, zone: rm.region.zone as u8 })
            .expect("fields in range")
    }

    #[inline]
    fn block_word(&self, rm: &'a RegionMap, pfn: Pfn, order: u32) -> &'a crate::memmap::word::Page {
        self.mm.block_word(self.p, rm, pfn, order).expect("a free or allocated small block lives in a split area")
    }

    #[inline]
    pub(crate) fn list_add(&self, fl: &mut FreeLists, pfn: Pfn, order: u32, mt: MigrateType) {
        let a = &mut fl.areas[order as usize];
        let head = a.head[mt as usize];
        {
            let m = self.map(pfn);
            m.word(0).store(head, Ordering::Relaxed);
            m.word(1).store(NONE, Ordering::Relaxed);
        }
        if head != NONE {
            self.map(Pfn(head)).word(1).store(pfn.0, Ordering::Relaxed);
        }
        a.head[mt as usize] = pfn.0;
        a.nr[mt as usize] += 1;
    }

    #[inline]
    pub(crate) fn list_del(&self, fl: &mut FreeLists, pfn: Pfn, order: u32, mt: MigrateType) {
        let (next, prev) = {
            let m = self.map(pfn);
            (m.word(0).load(Ordering::Relaxed), m.word(1).load(Ordering::Relaxed))
        };
        let a = &mut fl.areas[order as usize];
        if prev == NONE {
            debug_assert_eq!(a.head[mt as usize], pfn.0, "a block without prev is its list's head");
            a.head[mt as usize] = next;
        } else {
            self.map(Pfn(prev)).word(0).store(next, Ordering::Relaxed);
        }
        if next != NONE {
            self.map(Pfn(next)).word(1).store(prev, Ordering::Relaxed);
        }
        a.nr[mt as usize] -= 1;
    }

    /// Changes the free-page count of the split area holding a small block.
    fn area_free_add(&self, rm: &RegionMap, pfn: Pfn, delta: i64) {
        let aw = rm.area_word(pfn);
        if let PageKind::Split(s) = aw.load().kind() {
            let free = (s.free as i64 + delta) as u16;
            aw.store(Word::split(SplitInfo { free, ..s }).expect("free <= 512"));
        }
    }

    #[inline]
    fn small_in_two_level(rm: &RegionMap, order: u32) -> bool {
        rm.region.layout == MemmapLayout::TwoLevel && order < AREA_ORDER
    }

    /// Frees a block that is on no list (its tails hold tail words), merging it with free
    /// buddies. Accounts the pages as free.
    pub(crate) fn free_block(&self, fl: &mut FreeLists, pfn: Pfn, order: u32, mt: MigrateType) {
        let rm = self.rm(pfn);
        fl.free_pages += 1 << order;
        if Self::small_in_two_level(rm, order) {
            self.area_free_add(rm, pfn, 1 << order);
            self.merge_and_add(fl, rm, pfn, order, mt, AREA_ORDER - 1);
            self.maybe_unsplit(fl, rm, pfn.align_down(AREA_ORDER));
        } else {
            self.merge_and_add(fl, rm, pfn, order, mt, self.max_order);
        }
    }

    fn merge_and_add(
        &self,
        fl: &mut FreeLists,
        rm: &'a RegionMap,
        mut pfn: Pfn,
        mut order: u32,
        mt: MigrateType,
        limit: u32,
    ) {
        while order < limit {
            let b = pfn.buddy(order);
            if b < rm.region.start || b.add(1 << order) > rm.region.end {
                break;
            }
            let Some(bw) = self.mm.block_word(self.p, rm, b, order) else { break };
            let Some(bi) = bw.load().buddy_info() else { break };
            if bi.order as u32 != order || bi.pcp {
                break;
            }
            let bmt = MigrateType::from_bits(bi.migratetype).unwrap_or(MigrateType::Movable);
            if (bmt == MigrateType::Isolate) != (mt == MigrateType::Isolate) {
                break;
            }
            self.list_del(fl, b, order, bmt);
            let (lo, hi) = if b < pfn { (b, pfn) } else { (pfn, b) };
            self.block_word(rm, hi, order).store(Word::TAIL);
            pfn = lo;
            order += 1;
        }
        self.block_word(rm, pfn, order).store(Self::buddy_word(rm, order, mt, false));
        self.list_add(fl, pfn, order, mt);
    }

    /// If the split area at `area` carved its table from itself and every other page is free
    /// again, makes it one order-9 free block and merges on at area level. An area whose
    /// table is a page from outside (a split 2 MiB folio's, always from this zone) is made
    /// whole when all 512 pages are free, and its table page is freed.
    fn maybe_unsplit(&self, fl: &mut FreeLists, rm: &'a RegionMap, area: Pfn) {
        let PageKind::Split(s) = rm.area_word(area).load().kind() else { return };
        let inside = s.table_pfn >= area.0 && s.table_pfn < area.0 + AREA_PAGES;
        if !inside {
            if s.free as u64 == AREA_PAGES {
                self.unsplit_external(fl, rm, area, Pfn(s.table_pfn));
            }
            return;
        }
        if s.table_pfn != area.0 || s.free as u64 != AREA_PAGES - 1 {
            return;
        }
        let table = self.mm.table(self.p, s.table_pfn).expect("two-level regions are mapped");
        for k in 0..AREA_ORDER {
            let b = area.add(1 << k);
            let bi =
                table[1 << k].load().buddy_info().expect("a fully free carved area holds blocks at 2^k of order k");
            debug_assert_eq!(bi.order as u32, k);
            self.list_del(fl, b, k, MigrateType::from_bits(bi.migratetype).unwrap_or(MigrateType::Movable));
        }
        let mt = MigrateType::from_bits(rm.pageblock(area).load(Ordering::Relaxed)).unwrap_or(MigrateType::Movable);
        self.mm.unsplit_area(rm, area, Self::buddy_word(rm, AREA_ORDER, mt, false));
        fl.free_pages += 1; // the table page is free memory again
        self.merge_and_add(fl, rm, area, AREA_ORDER, mt, self.max_order);
    }

    /// A fully free area whose table page lives outside it: two free order-8 halves become one
    /// order-9 block, and the table page (of this zone) is freed.
    fn unsplit_external(&self, fl: &mut FreeLists, rm: &'a RegionMap, area: Pfn, table_pfn: Pfn) {
        let table = self.mm.table(self.p, table_pfn.0).expect("two-level regions are mapped");
        let half = AREA_PAGES / 2;
        for b in [0, half] {
            let bi = table[b as usize].load().buddy_info().expect("a fully free area holds two order-8 blocks");
            debug_assert_eq!(bi.order as u32, AREA_ORDER - 1);
            self.list_del(
                fl,
                area.add(b),
                AREA_ORDER - 1,
                MigrateType::from_bits(bi.migratetype).unwrap_or(MigrateType::Movable),
            );
        }
        let mt = MigrateType::from_bits(rm.pageblock(area).load(Ordering::Relaxed)).unwrap_or(MigrateType::Movable);
        self.mm.unsplit_area(rm, area, Self::buddy_word(rm, AREA_ORDER, mt, false));
        self.merge_and_add(fl, rm, area, AREA_ORDER, mt, self.max_order);
        // The table page: an allocated order-0 page of this zone, free again.
        let trm = self.rm(table_pfn);
        self.block_word(trm, table_pfn, 0).store(Word::TAIL);
        let tmt =
            MigrateType::from_bits(trm.pageblock(table_pfn).load(Ordering::Relaxed)).unwrap_or(MigrateType::Movable);
        self.free_block(fl, table_pfn, 0, tmt);
    }

    /// Takes a block of `order` of type `mt` (or stolen from a fallback type) off the lists
    /// and accounts it as allocated. Its head word becomes a tail word here, under the zone
    /// lock; the caller stamps the real one.
    pub(crate) fn rmqueue(&self, fl: &mut FreeLists, order: u32, mt: MigrateType) -> Option<Pfn> {
        let pfn = self.take(fl, order, mt).or_else(|| self.steal(fl, order, mt))?;
        fl.free_pages -= 1 << order;
        let rm = self.rm(pfn);
        // Retire the Buddy head word while the zone lock is still held: a block off the lists
        // must never look free to a CPU merging its buddy.
        self.block_word(rm, pfn, order).store(Word::TAIL);
        if Self::small_in_two_level(rm, order) {
            self.area_free_add(rm, pfn, -(1 << order));
        }
        Some(pfn)
    }

    fn take(&self, fl: &mut FreeLists, order: u32, mt: MigrateType) -> Option<Pfn> {
        for o in order..=self.max_order {
            let head = fl.areas[o as usize].head[mt as usize];
            if head != NONE {
                let pfn = Pfn(head);
                self.list_del(fl, pfn, o, mt);
                return Some(self.expand(fl, pfn, order, o, mt));
            }
        }
        None
    }

    /// Splits a block of order `high` down to `low`, putting the unused halves back.
    fn expand(&self, fl: &mut FreeLists, pfn: Pfn, low: u32, mut high: u32, mt: MigrateType) -> Pfn {
        let rm = self.rm(pfn);
        while high > low {
            if rm.region.layout == MemmapLayout::TwoLevel && high == AREA_ORDER {
                return self.carve(fl, rm, pfn, low, mt);
            }
            high -= 1;
            let half = pfn.add(1 << high);
            self.block_word(rm, half, high).store(Self::buddy_word(rm, high, mt, false));
            self.list_add(fl, half, high, mt);
        }
        pfn
    }

    /// Splits the free order-9 area at `area` (already off the lists): its first page becomes
    /// the word table, the rest become free blocks of orders 0..=8 except the one returned.
    fn carve(&self, fl: &mut FreeLists, rm: &'a RegionMap, area: Pfn, low: u32, mt: MigrateType) -> Pfn {
        let memmap_word = Self::undescribed(rm, Subtype::Memmap, 0);
        self.mm.split_area(self.p, rm, area, area, (AREA_PAGES - 1) as u16, |i| {
            if i == 0 {
                memmap_word
            } else if i.is_power_of_two() {
                Self::buddy_word(rm, i.trailing_zeros(), mt, false)
            } else {
                Word::TAIL
            }
        });
        for k in 0..AREA_ORDER {
            if k != low {
                self.list_add(fl, area.add(1 << k), k, mt);
            }
        }
        fl.free_pages -= 1; // the table page
        area.add(1 << low)
    }

    /// Takes from a fallback migratetype, largest block first, claiming the pageblock when the
    /// block is large or the request is not movable (as Linux does).
    fn steal(&self, fl: &mut FreeLists, order: u32, mt: MigrateType) -> Option<Pfn> {
        for o in (order..=self.max_order).rev() {
            for &fmt in mt.fallbacks() {
                let head = fl.areas[o as usize].head[fmt as usize];
                if head == NONE {
                    continue;
                }
                let pfn = Pfn(head);
                let rm = self.rm(pfn);
                if o >= AREA_ORDER {
                    let mut pb = pfn;
                    while pb < pfn.add(1 << o) {
                        rm.pageblock(pb).store(mt as u8, Ordering::Relaxed);
                        pb = pb.add(AREA_PAGES);
                    }
                    self.list_del(fl, pfn, o, fmt);
                    return Some(self.expand(fl, pfn, order, o, mt));
                }
                if o >= AREA_ORDER / 2 || mt != MigrateType::Movable {
                    let moved = self.move_freepages_block(fl, rm, pfn.align_down(AREA_ORDER), fmt, mt);
                    if moved * 2 >= AREA_PAGES {
                        rm.pageblock(pfn).store(mt as u8, Ordering::Relaxed);
                    }
                    self.list_del(fl, pfn, o, mt);
                    return Some(self.expand(fl, pfn, order, o, mt));
                }
                self.list_del(fl, pfn, o, fmt);
                return Some(self.expand(fl, pfn, order, o, fmt));
            }
        }
        None
    }

    /// Moves every free block of type `from` inside the pageblock at `pb` to `to`'s lists;
    /// returns the free pages found in the pageblock.
    pub(crate) fn move_freepages_block(
        &self,
        fl: &mut FreeLists,
        rm: &'a RegionMap,
        pb: Pfn,
        from: MigrateType,
        to: MigrateType,
    ) -> u64 {
        let start = pb.max(rm.region.start);
        let end = pb.add(AREA_PAGES).min(rm.region.end);
        let mut moved = 0;
        let mut pfn = start;
        while pfn < end {
            let Some(w) = self.mm.page_word(self.p, rm, pfn) else { return moved };
            match w.load().buddy_info() {
                Some(bi) if !bi.pcp => {
                    let k = bi.order as u32;
                    if bi.migratetype == from as u8 {
                        self.list_del(fl, pfn, k, from);
                        w.store(Self::buddy_word(rm, k, to, false));
                        self.list_add(fl, pfn, k, to);
                    }
                    moved += 1 << k;
                    pfn = pfn.add(1 << k);
                }
                _ => pfn = pfn.add(1),
            }
        }
        moved
    }
}
