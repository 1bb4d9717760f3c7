//! Zones and the buddy algorithm.
//!
//! A free block's state lives in its head page's word (`Buddy { order, migratetype }`); the
//! other pages of the block hold tail words. Its free-list links (next and previous pfn) live
//! in the words of its second and third pages for blocks of order 2 and up
//! ([`crate::memmap::word::Word::linked_tail`]: the memmap cache line the head word is in,
//! rather than the cold free memory); an order-1 block of a flat region keeps its next link in
//! its second page's word and its previous link in its head word, a `BuddyLinked` word that
//! has room for it (`memmap/word.rs`). Blocks of order 0, and a two-level region's blocks of
//! order 1 and of an area or more, keep them in the first 16 bytes of the free memory itself,
//! reached through the direct map or, for memory without a permanent
//! mapping, a momentary local mapping (`PageWords`, the atomic word view of
//! [`crate::base::page_access`]). A block off the lists has plain tail words only. Nothing is
//! ever allocated to track free memory. Lists are doubly linked, so removing a block from the
//! middle (when its buddy is freed and they merge) is O(1).
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
use crate::base::layout::{MemmapLayout, ZoneType, MAX_NODES, NR_ZONES};
use crate::base::page_access::PageWords;
use crate::base::pageblock::{MigrateType, NR_MIGRATETYPES};
use crate::base::platform::Platform;
use crate::base::sync::{AtomicU64, Ordering, SpinLock};
use crate::memmap::word::{
    BuddyInfo, SplitInfo, Subtype, Undescribed, Word, MAX_INLINE_ORDER, MAX_MIGRATETYPE, MAX_NODE, MAX_ZONE,
};
use crate::memmap::{Memmap, RegionMap};

/// Highest MAX_ORDER a machine may be configured with.
pub const MAX_ORDER_LIMIT: u32 = 20;
pub(crate) const NONE: u64 = u64::MAX;
/// Lowest order whose free blocks keep their list links in words (see [`Buddy::links`]).
pub(crate) const LINK_WORDS_MIN_ORDER: u32 = 1;

/// Whether a free block of `order` on a buddy list of a region of `layout` keeps its links in
/// words (its second page's word is then a linked tail): the one place the rule is written
/// ([`Buddy::link_words`], `Buddy::link_word` and the checker ask it).
pub(crate) const fn links_in_words(layout: MemmapLayout, order: u32) -> bool {
    match layout {
        MemmapLayout::Flat => order >= LINK_WORDS_MIN_ORDER,
        MemmapLayout::TwoLevel => order > 1 && order < AREA_ORDER,
    }
}

// What `Buddy::buddy_word` encodes without range checks always fits the word's fields: orders
// up to MAX_ORDER_LIMIT (the machine refuses a larger max_order at boot), nodes below
// MAX_NODES (layouts refuse others), zone types and migratetypes by their enums.
const _: () = assert!(MAX_ORDER_LIMIT <= MAX_INLINE_ORDER as u32);
// Guard words carry 32 + the guarded order (page_alloc/guard.rs).
const _: () = assert!(32 + MAX_ORDER_LIMIT <= MAX_INLINE_ORDER as u32);
const _: () = assert!(MAX_NODES <= MAX_NODE as usize + 1);
const _: () = assert!(NR_ZONES <= MAX_ZONE as usize + 1);
const _: () = assert!(NR_MIGRATETYPES <= MAX_MIGRATETYPE as usize + 1);

/// The free lists of one order.
#[derive(Clone, Copy)]
pub(crate) struct FreeArea {
    pub(crate) head: [u64; NR_MIGRATETYPES],
    pub(crate) nr: [u64; NR_MIGRATETYPES],
}

/// A zone's free lists (what the zone lock protects).
pub(crate) struct FreeLists {
    pub(crate) areas: [FreeArea; MAX_ORDER_LIMIT as usize + 1],
    /// The machine's `max_order` (`Config::max_order`): no block is larger, the lists above
    /// it stay empty. Kept here, where every buddy operation has it at hand.
    pub(crate) max_order: u32,
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
    /// An empty zone of `ztype` on `node` on a machine of `max_order`.
    pub(crate) fn new(node: u16, ztype: ZoneType, max_order: u32) -> Self {
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
                max_order,
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

/// The buddy algorithm over one machine's memmap and platform (two pointers, passed in
/// registers to the out-of-line parts; the machine's `max_order` is in the free lists).
pub(crate) struct Buddy<'a, P: Platform> {
    pub(crate) p: &'a P,
    pub(crate) mm: &'a Memmap,
}

impl<'a, P: Platform> Buddy<'a, P> {
    /// `f` of the first two words of page `pfn`'s memory (next and previous), where the
    /// links of blocks without link words live: through the hot region's window
    /// (`Memmap::hot_window`), else the platform's direct map, else a momentary local mapping.
    #[inline(always)]
    fn with_mem_links<R>(&self, pfn: Pfn, f: impl FnOnce([&AtomicU64; 2]) -> R) -> R {
        if let Some(t) = self.mm.hot_window().table(self.p, pfn) {
            return f([&t[0], &t[1]]);
        }
        let m = PageWords::new(self.p, pfn).expect("Platform maps every present pfn (Platform safety items 1-2)");
        f([m.word(0), m.word(1)])
    }

    #[inline]
    pub(crate) fn rm(&self, pfn: Pfn) -> &'a RegionMap {
        self.mm.region_map(self.mm.region_index(pfn).expect("blocks are inside regions"))
    }

    #[inline]
    pub(crate) fn buddy_word(rm: &RegionMap, order: u32, mt: MigrateType, pcp: bool) -> Word {
        debug_assert!(order <= MAX_ORDER_LIMIT && (rm.region.node as usize) < MAX_NODES);
        let w = if order == 1 && !pcp {
            rm.linked_base().with_linked_migratetype(mt as u8)
        } else {
            rm.buddy_base().with_buddy_block(order as u8, mt as u8, pcp)
        };
        debug_assert_eq!(
            w,
            Word::buddy_in_range(BuddyInfo {
                order: order as u8,
                migratetype: mt as u8,
                zone: rm.region.zone as u8,
                node: rm.region.node,
                pcp,
            })
        );
        w
    }

    /// The undescribed word of `subtype` heading a block of `order` of region `rm` (never a
    /// tail; orders up to the guard words' `32 + MAX_ORDER_LIMIT`).
    #[inline]
    pub(crate) fn undescribed(rm: &RegionMap, subtype: Subtype, order: u32) -> Word {
        debug_assert!(subtype != Subtype::Tail && order <= MAX_INLINE_ORDER as u32);
        Word::undescribed_in_range(Undescribed {
            subtype,
            order: order as u8,
            node: rm.region.node,
            zone: rm.region.zone as u8,
        })
    }

    #[inline(always)]
    fn block_word(&self, rm: &'a RegionMap, pfn: Pfn, order: u32) -> &'a crate::memmap::word::Page {
        if rm.region.layout == MemmapLayout::Flat {
            return rm.flat_word(pfn);
        }
        self.mm.block_word(self.p, rm, pfn, order).expect("a free or allocated small block lives in a split area")
    }

    /// The region map of `pfn`, which is usually `rm`'s (a list neighbour may lie in another
    /// region of the zone).
    #[inline]
    fn rm_near(&self, rm: &'a RegionMap, pfn: Pfn) -> &'a RegionMap {
        if pfn >= rm.region.start && pfn < rm.region.end {
            rm
        } else {
            self.rm(pfn)
        }
    }

    /// The words that hold the next and previous links of the free block of `order` at `pfn`:
    /// its second and third pages' words, or in a flat region for an order-1 block its second
    /// page's word and its own (`BuddyLinked`) head word. `None` where the links live in the
    /// first 16 bytes of the block's memory instead: blocks of order 0 (no second page) and, in
    /// a two-level region, blocks of order 1 (reaching the split area's word table costs more
    /// there than the block's own memory: 402 -> 501 instructions per mixed step, 26 -> 30 ns)
    /// and of an area or more (their pages have no words of their own).
    #[inline(always)]
    fn link_words(&self, rm: &'a RegionMap, pfn: Pfn, order: u32) -> Option<[&'a crate::memmap::word::Page; 2]> {
        if !links_in_words(rm.region.layout, order) {
            return None;
        }
        match rm.region.layout {
            MemmapLayout::Flat if order == 1 => {
                let [head, tail] = rm.flat_words_at(pfn);
                Some([tail, head])
            }
            MemmapLayout::Flat => Some(rm.flat_words_after(pfn)),
            MemmapLayout::TwoLevel => {
                let t = self.mm.table_of(self.p, rm, pfn).expect("a free small block lives in a split area");
                let i = (pfn.0 & (AREA_PAGES - 1)) as usize;
                Some([&t[i + 1], &t[i + 2]])
            }
        }
    }

    /// The (next, previous) links of the free block of `order` at `pfn` ([`NONE`] at the end;
    /// a list head's previous link is stale, never read).
    #[inline]
    pub(crate) fn links(&self, rm: &'a RegionMap, pfn: Pfn, order: u32) -> (u64, u64) {
        match self.link_words(rm, pfn, order) {
            Some([n, p]) => (n.load().link_raw(), p.load().link_raw()),
            None => self.with_mem_links(pfn, |[n, p]| (n.load(Ordering::Relaxed), p.load(Ordering::Relaxed))),
        }
    }

    /// The word of link `which` (0 next, 1 previous) of [`Buddy::link_words`], alone (one
    /// index computed and checked, not two): page `pfn + 1 + which`'s, or for an order-1
    /// block of a flat region page `pfn + 1 - which`'s.
    #[inline(always)]
    fn link_word(
        &self,
        rm: &'a RegionMap,
        pfn: Pfn,
        order: u32,
        which: usize,
    ) -> Option<&'a crate::memmap::word::Page> {
        if !links_in_words(rm.region.layout, order) {
            return None;
        }
        match rm.region.layout {
            MemmapLayout::Flat => Some(rm.flat_word(pfn.add(if order == 1 { 1 - which } else { 1 + which } as u64))),
            MemmapLayout::TwoLevel => {
                let t = self.mm.table_of(self.p, rm, pfn).expect("a free small block lives in a split area");
                Some(&t[(pfn.0 & (AREA_PAGES - 1)) as usize + 1 + which])
            }
        }
    }

    /// Sets link `which` (0 next, 1 previous) of the free block of `order` at `pfn`. An
    /// order-1 block's previous link is in its head word, whose other fields stay.
    #[inline(always)]
    fn set_link(&self, rm: &'a RegionMap, pfn: Pfn, order: u32, which: usize, link: u64) {
        match self.link_word(rm, pfn, order, which) {
            Some(w) if order == 1 && which == 1 => w.store(w.load().with_link_raw(link)),
            Some(w) => w.store(Word::linked_tail_raw(link)),
            None => self.with_mem_links(pfn, |m| m[which].store(link, Ordering::Relaxed)),
        }
    }

    /// Puts the free block of `order` at `pfn` (of region `rm`) at the head of its list. Only
    /// its next link is written: a list head's previous link is never read (the list's head
    /// pointer says which block is first), so taking the head off a list touches nothing but
    /// the head itself.
    #[inline(always)]
    fn list_add_in(&self, fl: &mut FreeLists, rm: &'a RegionMap, pfn: Pfn, order: u32, mt: MigrateType) {
        let a = &mut fl.areas[order as usize];
        let head = a.head[mt as usize];
        self.set_link(rm, pfn, order, 0, head);
        if head != NONE {
            self.set_link(self.rm_near(rm, Pfn(head)), Pfn(head), order, 1, pfn.0);
        }
        a.head[mt as usize] = pfn.0;
        a.nr[mt as usize] += 1;
    }

    /// Takes the free block of `order` at `pfn` (of region `rm`) off its list; link tail
    /// words go back to plain tail words (an order-1 block's head word keeps its stale previous
    /// link until the caller, which always does, stores the block's next head word).
    #[inline(always)]
    fn list_del_in(&self, fl: &mut FreeLists, rm: &'a RegionMap, pfn: Pfn, order: u32, mt: MigrateType) {
        let is_head = fl.areas[order as usize].head[mt as usize] == pfn.0;
        let (next, prev) = match self.link_words(rm, pfn, order) {
            Some([n, p]) => {
                let links = (n.load().link_raw(), if is_head { NONE } else { p.load().link_raw() });
                n.store(Word::TAIL);
                if order != 1 {
                    p.store(Word::TAIL);
                }
                links
            }
            None => self.with_mem_links(pfn, |m| {
                (m[0].load(Ordering::Relaxed), if is_head { NONE } else { m[1].load(Ordering::Relaxed) })
            }),
        };
        let a = &mut fl.areas[order as usize];
        if is_head {
            a.head[mt as usize] = next;
        } else {
            debug_assert_ne!(prev, NONE, "a block other than its list's head has a previous block");
            self.set_link(self.rm_near(rm, Pfn(prev)), Pfn(prev), order, 0, next);
            if next != NONE {
                self.set_link(self.rm_near(rm, Pfn(next)), Pfn(next), order, 1, prev);
            }
        }
        a.nr[mt as usize] -= 1;
    }

    /// Puts the free block of `order` at `pfn` at the head of its list.
    #[inline]
    #[cfg_attr(not(feature = "health"), allow(dead_code))] // isolation and offlining
    pub(crate) fn list_add(&self, fl: &mut FreeLists, pfn: Pfn, order: u32, mt: MigrateType) {
        self.list_add_in(fl, self.rm(pfn), pfn, order, mt)
    }

    /// Takes the free block of `order` at `pfn` off its list.
    #[inline]
    #[cfg_attr(not(feature = "health"), allow(dead_code))] // isolation and offlining
    pub(crate) fn list_del(&self, fl: &mut FreeLists, pfn: Pfn, order: u32, mt: MigrateType) {
        self.list_del_in(fl, self.rm(pfn), pfn, order, mt)
    }

    /// Changes the free-page count of the split area holding a small block.
    fn area_free_add(&self, rm: &RegionMap, pfn: Pfn, delta: i64) {
        let aw = rm.area_word(pfn);
        if let Some(s) = aw.load().as_split() {
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
        self.free_block_in(fl, self.rm(pfn), pfn, order, mt)
    }

    /// [`Buddy::free_block`] of a block of region `rm`. Inline: the common case is one call of
    /// the merge loop.
    #[inline]
    pub(crate) fn free_block_in(&self, fl: &mut FreeLists, rm: &'a RegionMap, pfn: Pfn, order: u32, mt: MigrateType) {
        fl.free_pages += 1 << order;
        if Self::small_in_two_level(rm, order) {
            self.free_small_in_two_level(fl, rm, pfn, order, mt);
        } else {
            self.merge_and_add(fl, rm, pfn, order, mt, fl.max_order);
        }
    }

    /// The rest of [`Buddy::free_block_in`] for a block smaller than an area of a two-level
    /// region: merges inside its split area, which may then become whole again.
    fn free_small_in_two_level(&self, fl: &mut FreeLists, rm: &'a RegionMap, pfn: Pfn, order: u32, mt: MigrateType) {
        self.area_free_add(rm, pfn, 1 << order);
        self.merge_and_add(fl, rm, pfn, order, mt, AREA_ORDER - 1);
        self.maybe_unsplit(fl, rm, pfn.align_down(AREA_ORDER));
    }

    /// Merges the free block of `order` at `pfn` with its free buddies up to order `limit` and
    /// puts the result on its list. Inline: most frees find their buddy in use, which is one
    /// word compare before the head word and the list add; merging is out of line.
    #[inline(always)]
    fn merge_and_add(&self, fl: &mut FreeLists, rm: &'a RegionMap, pfn: Pfn, order: u32, mt: MigrateType, limit: u32) {
        if order < limit && self.mergeable_buddy(rm, pfn, order, mt).is_some() {
            self.merge_and_add_loop(fl, rm, pfn, order, mt, limit);
            return;
        }
        self.block_word(rm, pfn, order).store(Self::buddy_word(rm, order, mt, false));
        self.list_add_in(fl, rm, pfn, order, mt);
    }

    /// The buddy of the free block of `order` at `pfn` and its migratetype, if that buddy is
    /// a free block of the same order on the buddy lists (not a per-CPU list) that may merge
    /// with it (isolated blocks merge only with isolated ones).
    #[inline(always)]
    fn mergeable_buddy(&self, rm: &'a RegionMap, pfn: Pfn, order: u32, mt: MigrateType) -> Option<(Pfn, MigrateType)> {
        let b = pfn.buddy(order);
        if b < rm.region.start || b.add(1 << order) > rm.region.end {
            return None;
        }
        let bw = if rm.region.layout == MemmapLayout::Flat {
            rm.flat_word(b)
        } else {
            self.mm.block_word(self.p, rm, b, order)?
        };
        let bi = bw.load().as_buddy()?;
        if bi.order as u32 != order || bi.pcp {
            return None;
        }
        let bmt = MigrateType::from_bits(bi.migratetype).unwrap_or(MigrateType::Movable);
        if (bmt == MigrateType::Isolate) != (mt == MigrateType::Isolate) {
            return None;
        }
        Some((b, bmt))
    }

    /// [`Buddy::merge_and_add`] from its first merge on.
    #[inline(never)]
    fn merge_and_add_loop(
        &self,
        fl: &mut FreeLists,
        rm: &'a RegionMap,
        mut pfn: Pfn,
        mut order: u32,
        mt: MigrateType,
        limit: u32,
    ) {
        while order < limit {
            let Some((b, bmt)) = self.mergeable_buddy(rm, pfn, order, mt) else { break };
            self.list_del_in(fl, rm, b, order, bmt);
            let (lo, hi) = if b < pfn { (b, pfn) } else { (pfn, b) };
            self.block_word(rm, hi, order).store(Word::TAIL);
            pfn = lo;
            order += 1;
        }
        self.block_word(rm, pfn, order).store(Self::buddy_word(rm, order, mt, false));
        self.list_add_in(fl, rm, pfn, order, mt);
    }

    /// If the split area at `area` carved its table from itself and every other page is free
    /// again, makes it one order-9 free block and merges on at area level. An area whose
    /// table is a page from outside (a split 2 MiB folio's, always from this zone) is made
    /// whole when all 512 pages are free, and its table page is freed.
    fn maybe_unsplit(&self, fl: &mut FreeLists, rm: &'a RegionMap, area: Pfn) {
        let Some(s) = rm.area_word(area).load().as_split() else { return };
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
            self.list_del_in(fl, rm, b, k, MigrateType::from_bits(bi.migratetype).unwrap_or(MigrateType::Movable));
        }
        let mt = MigrateType::from_bits(rm.pageblock(area).load(Ordering::Relaxed)).unwrap_or(MigrateType::Movable);
        self.mm.unsplit_area(rm, area, Self::buddy_word(rm, AREA_ORDER, mt, false));
        fl.free_pages += 1; // the table page is free memory again
        self.merge_and_add(fl, rm, area, AREA_ORDER, mt, fl.max_order);
    }

    /// A fully free area whose table page lives outside it: two free order-8 halves become one
    /// order-9 block, and the table page (of this zone) is freed.
    fn unsplit_external(&self, fl: &mut FreeLists, rm: &'a RegionMap, area: Pfn, table_pfn: Pfn) {
        let table = self.mm.table(self.p, table_pfn.0).expect("two-level regions are mapped");
        let half = AREA_PAGES / 2;
        for b in [0, half] {
            let bi = table[b as usize].load().buddy_info().expect("a fully free area holds two order-8 blocks");
            debug_assert_eq!(bi.order as u32, AREA_ORDER - 1);
            self.list_del_in(
                fl,
                rm,
                area.add(b),
                AREA_ORDER - 1,
                MigrateType::from_bits(bi.migratetype).unwrap_or(MigrateType::Movable),
            );
        }
        let mt = MigrateType::from_bits(rm.pageblock(area).load(Ordering::Relaxed)).unwrap_or(MigrateType::Movable);
        self.mm.unsplit_area(rm, area, Self::buddy_word(rm, AREA_ORDER, mt, false));
        self.merge_and_add(fl, rm, area, AREA_ORDER, mt, fl.max_order);
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
    #[inline]
    pub(crate) fn rmqueue(&self, fl: &mut FreeLists, order: u32, mt: MigrateType) -> Option<Pfn> {
        self.rmqueue_in(fl, order, mt, None).map(|(pfn, _)| pfn)
    }

    /// [`Buddy::rmqueue`], also naming the block's region. `near` is a region of the zone if
    /// the caller knows one: a block inside it needs no region lookup. Inline: most requests
    /// find a block of their own order at the head of its list, which takes a few loads and
    /// stores; larger blocks to split and fallback types are out of line.
    #[inline(always)]
    pub(crate) fn rmqueue_in(
        &self,
        fl: &mut FreeLists,
        order: u32,
        mt: MigrateType,
        near: Option<&'a RegionMap>,
    ) -> Option<(Pfn, &'a RegionMap)> {
        // No block is ever above max_order: an order past the table has no blocks either.
        let head = fl.areas.get(order as usize).map_or(NONE, |a| a.head[mt as usize]);
        let (pfn, rm) = if head != NONE {
            let pfn = Pfn(head);
            let rm = match near {
                Some(near) => self.rm_near(near, pfn),
                None => self.rm(pfn),
            };
            self.list_del_in(fl, rm, pfn, order, mt);
            (pfn, rm)
        } else {
            self.take_larger(fl, order, mt)?
        };
        fl.free_pages -= 1 << order;
        // Retire the Buddy head word while the zone lock is still held: a block off the lists
        // must never look free to a CPU merging its buddy.
        self.block_word(rm, pfn, order).store(Word::TAIL);
        if Self::small_in_two_level(rm, order) {
            self.area_free_add(rm, pfn, -(1 << order));
        }
        Some((pfn, rm))
    }

    /// The rest of [`Buddy::rmqueue_in`] when the list of `order` and `mt` is empty: splits the
    /// smallest larger block of `mt`, or steals from a fallback type.
    #[inline(never)]
    fn take_larger(&self, fl: &mut FreeLists, order: u32, mt: MigrateType) -> Option<(Pfn, &'a RegionMap)> {
        self.take(fl, order, mt).or_else(|| self.steal(fl, order, mt))
    }

    fn take(&self, fl: &mut FreeLists, order: u32, mt: MigrateType) -> Option<(Pfn, &'a RegionMap)> {
        for o in order + 1..=fl.max_order {
            let head = fl.areas[o as usize].head[mt as usize];
            if head != NONE {
                let pfn = Pfn(head);
                let rm = self.rm(pfn);
                self.list_del_in(fl, rm, pfn, o, mt);
                return Some((self.expand(fl, rm, pfn, order, o, mt), rm));
            }
        }
        None
    }

    /// Splits a block of order `high` down to `low`, putting the unused halves back.
    fn expand(&self, fl: &mut FreeLists, rm: &'a RegionMap, pfn: Pfn, low: u32, mut high: u32, mt: MigrateType) -> Pfn {
        while high > low {
            if rm.region.layout == MemmapLayout::TwoLevel && high == AREA_ORDER {
                return self.carve(fl, rm, pfn, low, mt);
            }
            high -= 1;
            let half = pfn.add(1 << high);
            self.block_word(rm, half, high).store(Self::buddy_word(rm, high, mt, false));
            self.list_add_in(fl, rm, half, high, mt);
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
                self.list_add_in(fl, rm, area.add(1 << k), k, mt);
            }
        }
        fl.free_pages -= 1; // the table page
        area.add(1 << low)
    }

    /// Takes from a fallback migratetype, largest block first, claiming the pageblock when the
    /// block is large or the request is not movable (as Linux does).
    fn steal(&self, fl: &mut FreeLists, order: u32, mt: MigrateType) -> Option<(Pfn, &'a RegionMap)> {
        for o in (order..=fl.max_order).rev() {
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
                    self.list_del_in(fl, rm, pfn, o, fmt);
                    return Some((self.expand(fl, rm, pfn, order, o, mt), rm));
                }
                if o >= AREA_ORDER / 2 || mt != MigrateType::Movable {
                    let moved = self.move_freepages_block(fl, rm, pfn.align_down(AREA_ORDER), fmt, mt);
                    if moved * 2 >= AREA_PAGES {
                        rm.pageblock(pfn).store(mt as u8, Ordering::Relaxed);
                    }
                    self.list_del_in(fl, rm, pfn, o, mt);
                    return Some((self.expand(fl, rm, pfn, order, o, mt), rm));
                }
                self.list_del_in(fl, rm, pfn, o, fmt);
                return Some((self.expand(fl, rm, pfn, order, o, fmt), rm));
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
                        self.list_del_in(fl, rm, pfn, k, from);
                        w.store(Self::buddy_word(rm, k, to, false));
                        self.list_add_in(fl, rm, pfn, k, to);
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
