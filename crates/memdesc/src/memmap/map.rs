//! The memmap: where each pfn's word lives, in two layouts behind one interface.
//!
//! - **Flat**: one word per 4 KiB page; the word of a pfn is `words[pfn - region.start]`.
//! - **Two-level** (for large memory and pmem): one word per 2 MiB area. While an area is
//!   uniform (one free block, one 2 MiB folio, one reserved range) its single word describes
//!   all 512 pages. When something needs per-page words the area is *split*: a page holding
//!   512 words (the area's table) is taken — carved from the area itself when the area is
//!   free, so splitting never needs a general-purpose allocator — and the area word becomes
//!   `Split { table_pfn, free, generation }`. When the area is uniform again the table is
//!   released and the area word describes the whole area once more.
//!
//! Regions are found through a section table (one `u16` per 128 MiB) that names the first
//! region at or after the section, flagged when the whole section lies in that region (then
//! the lookup is that one load); sparse layouts with holes cost nothing but that table.
//! Pageblock migratetypes (one byte per 2 MiB) live beside each region's words.
//!
//! Lockless readers use [`Memmap::load`], which re-reads the area word after reading a table
//! word and retries if the area was split or unsplit meanwhile. Writers (the page allocator
//! under the zone lock, descriptor owners under theirs) use the crate-private accessors.

use crate::base::addr::{Pfn, AREA_ORDER, AREA_PAGES, PAGE_SIZE};
use crate::base::boot::{BootAllocator, BootError};
use crate::base::layout::{LayoutError, MemmapLayout, MemoryLayout, Region, MAX_REGIONS};
use crate::base::page_access::BootArray;
use crate::base::page_access::{DirectWindow, PageWords};
use crate::base::platform::Platform;
use crate::base::sync::{fence, mutation, AtomicU64, AtomicU8, Mutation, Ordering};
use crate::memmap::word::{Page, SplitInfo, Word};

/// log2 of pages per section of the region lookup table (128 MiB).
pub const SECTION_SHIFT: u32 = 15;
/// Flag of a section-table entry: the whole section lies inside the region it names, so a
/// lookup stops there (regions number at most `MAX_REGIONS`, far below this bit).
const SECTION_WHOLE: u16 = 0x8000;
const _: () = assert!(MAX_REGIONS < SECTION_WHOLE as usize);

/// Why the memmap could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemmapError {
    /// The layout is invalid.
    Layout(LayoutError),
    /// The boot allocator could not place the memmap.
    Boot(BootError),
    /// The platform has no direct map for memory the boot allocator handed out.
    NoDirectMap(Pfn),
}

impl From<LayoutError> for MemmapError {
    fn from(e: LayoutError) -> Self {
        MemmapError::Layout(e)
    }
}
impl From<BootError> for MemmapError {
    fn from(e: BootError) -> Self {
        match e {
            BootError::NoDirectMap(pfn) => MemmapError::NoDirectMap(pfn),
            e => MemmapError::Boot(e),
        }
    }
}

/// One region's words and pageblock bytes.
pub(crate) struct RegionMap {
    pub(crate) region: Region,
    words: BootArray<Page>,
    pageblocks: BootArray<AtomicU8>,
    /// The first pfn of the region's first pageblock (`region.start` rounded down to a
    /// pageblock): `RegionMap::pageblock` indexes from it with one subtract.
    pb_base: u64,
    /// `Word::buddy_zone_base` of the region's zone type and node ([`RegionMap::buddy_base`]).
    buddy_base: Word,
    /// `Word::buddy_linked_zone_base` of the same ([`RegionMap::linked_base`]).
    linked_base: Word,
}

/// What a lockless read of a pfn's word found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WordView {
    /// The word.
    pub word: Word,
    /// log2 of the pages this word covers: 0 for a per-page word, 9 for an unsplit area.
    pub span_order: u32,
    /// First pfn the word covers.
    pub first: Pfn,
}

/// The memmap of one machine.
pub struct Memmap {
    regions: [Option<RegionMap>; MAX_REGIONS],
    nr: usize,
    sections: BootArray<u16>,
    static_bytes: u64,
    split_tables: AtomicU64,
    generation: AtomicU64,
    /// The index of the largest flat region, tried first by [`Memmap::load`] (`MAX_REGIONS`
    /// when there is none).
    hot: usize,
    /// That region's map again, an alias of `regions[hot]` (page_access.rs invariant 7:
    /// its arrays are the same boot memory, kept here beside the original), or an empty map
    /// when there is no flat region: the hot paths reach its words with one subtract and one
    /// bounds check, without the table index, its `Option` or a second bound.
    hot_map: RegionMap,
    /// The hot region's direct-map window ([`Memmap::hot_window`], [`Memmap::load_hot_addr`];
    /// empty when the region has no permanent linear mapping), made from the platform the
    /// memmap was built with.
    hot_window: DirectWindow,
    /// The hot region's words when its window is not empty (one per window page), else none:
    /// [`Memmap::load_hot_addr`] indexes them with the window's unchecked page index, one
    /// bounds check for both (another alias, page_access.rs invariant 7).
    #[cfg(feature = "slab")]
    hot_addr_words: BootArray<Page>,
}

impl Memmap {
    /// Builds the memmap of `layout`, placing it with the boot allocator. Every word starts as
    /// a tail word; the page allocator then stamps reserved ranges and frees the rest.
    ///
    /// The memmap lives in memory reached through `p`'s direct map: use it only while `p`
    /// lives (the page allocator keeps both together).
    pub(crate) fn build<P: Platform>(
        layout: &MemoryLayout,
        boot: &mut BootAllocator,
        p: &P,
    ) -> Result<Self, MemmapError> {
        let mut regions = [const { None }; MAX_REGIONS];
        let mut nr = 0;
        let mut static_bytes = 0;
        let mut err = None;
        layout
            .normalise(|region| {
                if nr == MAX_REGIONS {
                    return Err(LayoutError::TooManyRegions);
                }
                let nr_words = match region.layout {
                    MemmapLayout::Flat => region.pages() as usize,
                    MemmapLayout::TwoLevel => (region.pages() >> AREA_ORDER) as usize,
                };
                let first_pb = region.start.0 >> AREA_ORDER;
                let nr_pageblocks = (((region.end.0 - 1) >> AREA_ORDER) - first_pb + 1) as usize;
                let built = BootArray::new(boot, p, nr_words, Some(&region), |_| Page::new(Word::TAIL)).and_then(|w| {
                    let pb = BootArray::new(boot, p, nr_pageblocks, Some(&region), |_| {
                        AtomicU8::new(crate::base::pageblock::MigrateType::Movable as u8)
                    })?;
                    Ok((w, pb))
                });
                match built {
                    Ok((words, pageblocks)) => {
                        static_bytes += words.bytes() + pageblocks.bytes();
                        let pb_base = region.start.0 & !(AREA_PAGES - 1);
                        let buddy_base = Word::buddy_zone_base(region.zone as u8, region.node);
                        let linked_base = Word::buddy_linked_zone_base(region.zone as u8, region.node);
                        regions[nr] = Some(RegionMap { region, words, pageblocks, pb_base, buddy_base, linked_base });
                        nr += 1;
                        Ok(())
                    }
                    Err(e) => {
                        err = Some(MemmapError::from(e));
                        Err(LayoutError::TooManyRegions)
                    }
                }
            })
            .map_err(|e| err.unwrap_or(MemmapError::Layout(e)))?;
        let end = layout.end_pfn();
        let nr_sections = (end.0.div_ceil(1 << SECTION_SHIFT)) as usize;
        let sections = BootArray::new(boot, p, nr_sections, None, |s| {
            let sec_start = (s as u64) << SECTION_SHIFT;
            let sec_end = sec_start + (1 << SECTION_SHIFT);
            let first = (0..nr)
                .find(|&i| regions[i].as_ref().is_some_and(|r: &RegionMap| r.region.end.0 > sec_start))
                .unwrap_or(nr);
            let whole = regions
                .get(first)
                .and_then(Option::as_ref)
                .is_some_and(|r| r.region.start.0 <= sec_start && sec_end <= r.region.end.0);
            first as u16 | if whole { SECTION_WHOLE } else { 0 }
        })?;
        static_bytes += sections.bytes();
        let hot = (0..nr)
            .filter_map(|i| regions[i].as_ref().map(|r: &RegionMap| (i, &r.region)))
            .filter(|(_, r)| r.layout == MemmapLayout::Flat)
            .max_by_key(|(_, r)| r.pages())
            .map_or(MAX_REGIONS, |(i, _)| i);
        let hot_map = regions.get(hot).and_then(Option::as_ref).map_or_else(RegionMap::empty, RegionMap::alias);
        // Kept beside `p` as the memmap's boot arrays are (page_access.rs invariant 9).
        let hot_window = DirectWindow::new(p, hot_map.region.start, hot_map.region.pages());
        #[cfg(feature = "slab")]
        let hot_addr_words = if hot_window.pages() == 0 { BootArray::empty() } else { hot_map.words.alias() };
        #[cfg(feature = "slab")]
        debug_assert!(hot_window.pages() == 0 || hot_window.pages() == hot_addr_words.len() as u64);
        Ok(Memmap {
            regions,
            nr,
            sections,
            static_bytes,
            split_tables: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            hot,
            hot_map,
            hot_window,
            #[cfg(feature = "slab")]
            hot_addr_words,
        })
    }

    /// Bytes of memory the memmap uses now: word arrays, pageblock bytes, the section table,
    /// and the tables of split two-level areas.
    pub fn bytes(&self) -> u64 {
        self.static_bytes + self.split_tables.load(Ordering::Relaxed) * PAGE_SIZE as u64
    }

    /// Two-level areas currently split.
    pub fn split_areas(&self) -> u64 {
        self.split_tables.load(Ordering::Relaxed)
    }

    /// The normalised regions, in pfn order.
    pub fn regions(&self) -> impl Iterator<Item = &Region> {
        self.regions[..self.nr].iter().flatten().map(|r| &r.region)
    }

    /// Index of the region holding `pfn`: one table load when the pfn's whole section lies
    /// in one region (the common case), else a short walk from the section's first region.
    #[inline]
    pub(crate) fn region_index(&self, pfn: Pfn) -> Option<usize> {
        let s = *self.sections.get((pfn.0 >> SECTION_SHIFT) as usize)?;
        if s & SECTION_WHOLE != 0 {
            return Some((s & !SECTION_WHOLE) as usize);
        }
        let mut i = s as usize;
        while i < self.nr {
            let r = &self.regions[i].as_ref()?.region;
            if pfn < r.start {
                return None;
            }
            if pfn < r.end {
                return Some(i);
            }
            i += 1;
        }
        None
    }

    #[inline]
    pub(crate) fn region_map(&self, i: usize) -> &RegionMap {
        self.regions[i].as_ref().expect("region index from region_index")
    }

    /// The region holding `pfn`, if any.
    #[inline]
    pub fn region_of(&self, pfn: Pfn) -> Option<&Region> {
        self.region_index(pfn).map(|i| &self.region_map(i).region)
    }

    /// Reads the word that describes `pfn` without any lock: for a split area, the table word,
    /// re-checked against the area word so a table released meanwhile is never trusted.
    /// The largest flat region first (one word load whose address depends on the pfn alone:
    /// the kfree hit path), then any flat region inline, the two-level protocol out of line.
    #[inline(always)]
    pub fn load<P: Platform>(&self, p: &P, pfn: Pfn) -> Option<WordView> {
        if let Some(word) = self.load_hot(pfn) {
            return Some(WordView { word, span_order: 0, first: pfn });
        }
        let rm = self.region_map(self.region_index(pfn)?);
        match rm.region.layout {
            MemmapLayout::Flat => Some(WordView { word: rm.flat_word(pfn).load(), span_order: 0, first: pfn }),
            MemmapLayout::TwoLevel => self.load_two_level(p, rm, pfn),
        }
    }

    /// The word of `pfn` if it lies in the largest flat region (`None` elsewhere: use
    /// [`Memmap::load`]). No call, no load whose address depends on anything but `pfn`.
    #[inline(always)]
    pub(crate) fn load_hot(&self, pfn: Pfn) -> Option<Word> {
        self.hot_word(pfn).map(|(_, w)| w.load())
    }

    /// The index of the hot region (the largest flat one, tried first by [`Memmap::load`]),
    /// `MAX_REGIONS` when there is none.
    #[inline]
    pub(crate) fn hot_region(&self) -> usize {
        self.hot
    }

    /// The hot region's direct-map window: the words of its free pages (the page
    /// allocator's free-list links) without asking the platform. Use it with the platform
    /// the memmap was built with (page_access.rs invariant 9).
    #[inline(always)]
    pub(crate) fn hot_window(&self) -> &DirectWindow {
        &self.hot_window
    }

    /// The region map and word of `pfn` if it lies in the hot region (`None` elsewhere: use
    /// [`Memmap::region_index`]): a subtract and a compare decide, with no table walk (the
    /// page allocator's small-block fast paths). The hot region is flat, one word per page,
    /// so the words' bounds check is the region's.
    #[inline(always)]
    pub(crate) fn hot_word(&self, pfn: Pfn) -> Option<(&RegionMap, &Page)> {
        let rm = &self.hot_map;
        Some((rm, rm.words.get(pfn.0.wrapping_sub(rm.region.start.0) as usize)?))
    }

    /// The pfn and word of the page whose direct-map address holds `addr`, if that page lies
    /// in the largest flat region and the region is direct-mapped linearly (`None` elsewhere:
    /// use [`Platform::virt_to_pfn`] and [`Memmap::load`]). The same pfn as `virt_to_pfn`
    /// (the inverse of a linear map), without asking the platform: a subtract, a compare, a
    /// shift and the word's load (the kfree hit path).
    #[cfg(feature = "slab")]
    #[inline(always)]
    pub(crate) fn load_hot_addr(&self, addr: usize) -> Option<(Pfn, Word)> {
        let i = self.hot_window.page_index(addr);
        let w = self.hot_addr_words.get(i)?;
        Some((Pfn(self.hot_map.region.start.0 + i as u64), w.load()))
    }

    #[inline(never)]
    fn load_two_level<P: Platform>(&self, p: &P, rm: &RegionMap, pfn: Pfn) -> Option<WordView> {
        let i = (pfn.0 & (AREA_PAGES - 1)) as usize;
        match load_in_area(rm.area_word(pfn), i, |t| self.table(p, t).map(|t| &t[..]))? {
            (w, true) => Some(WordView { word: w, span_order: 0, first: pfn }),
            (w, false) => Some(WordView { word: w, span_order: AREA_ORDER, first: pfn.align_down(AREA_ORDER) }),
        }
    }

    /// The 512 words of a split area's table (table pfns come from Split words, which
    /// [`Memmap::split_area`] publishes after writing a full page of words there; two-level
    /// regions are always direct-mapped, `LayoutError::TwoLevelUnmapped`).
    #[inline]
    pub(crate) fn table<'a, P: Platform>(
        &'a self,
        p: &'a P,
        table_pfn: u64,
    ) -> Option<&'a [Page; AREA_PAGES as usize]> {
        PageWords::direct_table(p, Pfn(table_pfn)).map(Page::from_atomics)
    }

    /// Calls `f(first_pfn, span_order, word)` for every word covering `[start, end)`, stepping
    /// over unsplit areas in one call and over holes silently. Lockless; words may change
    /// under the walk, as they do for Linux's pfn walkers.
    pub fn walk<P: Platform>(&self, p: &P, start: Pfn, end: Pfn, mut f: impl FnMut(WordView)) {
        let mut pfn = start;
        while pfn < end {
            match self.load(p, pfn) {
                Some(v) => {
                    f(v);
                    pfn = v.first.add(1 << v.span_order).max(pfn.add(1));
                }
                None => {
                    // A hole: jump to the next region.
                    match self.regions().find(|r| r.start > pfn) {
                        Some(r) => pfn = r.start,
                        None => return,
                    }
                }
            }
        }
    }

    /// Splits a two-level area: initialises `table_pfn`'s page with the per-page words from
    /// `init(i)` and publishes the split. The area word must not be `Split` already.
    pub(crate) fn split_area<P: Platform>(
        &self,
        p: &P,
        rm: &RegionMap,
        area: Pfn,
        table_pfn: Pfn,
        free: u16,
        init: impl Fn(usize) -> Word,
    ) {
        // The caller owns `table_pfn` (taken from free memory or allocated for the table).
        let table = self.table(p, table_pfn.0).expect("two-level regions are mapped");
        for (i, w) in table.iter().enumerate() {
            w.store(init(i));
        }
        let generation = (self.generation.fetch_add(1, Ordering::Relaxed) & 1023) as u16;
        let w =
            Word::split(SplitInfo { free, generation, table_pfn: table_pfn.0 }).expect("pfn checked at layout time");
        rm.area_word(area).store(w);
        self.split_tables.fetch_add(1, Ordering::Relaxed);
    }

    /// Makes a split area uniform again: the area word becomes `uniform`; the caller releases
    /// the table page afterwards.
    pub(crate) fn unsplit_area(&self, rm: &RegionMap, area: Pfn, uniform: Word) {
        unsplit_word(rm.area_word(area), uniform);
        self.split_tables.fetch_sub(1, Ordering::Relaxed);
    }

    /// The word to use for `pfn` under the owning lock: the flat word, the table word of a
    /// split area, or `None` for a page inside an unsplit area.
    #[inline]
    pub(crate) fn page_word<'a, P: Platform>(&'a self, p: &'a P, rm: &'a RegionMap, pfn: Pfn) -> Option<&'a Page> {
        match rm.region.layout {
            MemmapLayout::Flat => Some(rm.flat_word(pfn)),
            MemmapLayout::TwoLevel => Some(&self.table_of(p, rm, pfn)?[(pfn.0 & (AREA_PAGES - 1)) as usize]),
        }
    }

    /// The word table of the split two-level area holding `pfn` under the owning lock; `None`
    /// if the area is not split.
    #[inline]
    pub(crate) fn table_of<'a, P: Platform>(
        &'a self,
        p: &'a P,
        rm: &'a RegionMap,
        pfn: Pfn,
    ) -> Option<&'a [Page; AREA_PAGES as usize]> {
        self.table(p, rm.area_word(pfn).load().as_split()?.table_pfn)
    }

    /// The word describing a block of `2^order` pages at `pfn` under the owning lock: for a
    /// two-level region and `order >= 9`, the area word; otherwise as [`Memmap::page_word`].
    #[inline(always)]
    pub(crate) fn block_word<'a, P: Platform>(
        &'a self,
        p: &'a P,
        rm: &'a RegionMap,
        pfn: Pfn,
        order: u32,
    ) -> Option<&'a Page> {
        if rm.region.layout == MemmapLayout::Flat {
            return Some(rm.flat_word(pfn));
        }
        if order >= AREA_ORDER {
            Some(rm.area_word(pfn))
        } else {
            self.page_word(p, rm, pfn)
        }
    }
}

/// The lockless read of page `i` of a two-level area whose area word is `area` (the protocol
/// of [`Memmap::load`]; the loom model drives this function). `table(table_pfn)` maps a split
/// area's table. Returns the word and whether it is the page's own (`true`, from the table) or
/// the whole area's (`false`); `None` if a table cannot be mapped.
///
/// A split area's table page is released when the area is unsplit and may be reused at once
/// (as a free page its first word links a free list, with relaxed stores). So a table word is
/// trusted only if the area word, re-read after it, still names the same split (table and
/// generation). The acquire fence orders the table read before that re-read; with the release
/// fence of [`unsplit_word`] it makes the re-read see the unsplit whenever the table read saw a
/// write of the reuse.
#[inline]
pub(crate) fn load_in_area<'t>(
    area: &Page,
    i: usize,
    table: impl Fn(u64) -> Option<&'t [Page]>,
) -> Option<(Word, bool)> {
    loop {
        let w1 = area.load();
        let Some(s) = w1.as_split() else {
            return Some((w1, false));
        };
        let w = table(s.table_pfn)?.get(i)?.load();
        if !mutation::active(Mutation::TwoLevelNoFences) {
            fence(Ordering::Acquire);
        }
        let w2 = area.load();
        if same_split(w1, w2) || mutation::active(Mutation::TwoLevelNoRecheck) {
            return Some((w, true));
        }
    }
}

/// Makes an area uniform again (the writer side of [`load_in_area`]): publishes `uniform`,
/// then a release fence, so a reader that sees any later write to the released table page
/// sees `uniform` on its re-read.
#[inline]
pub(crate) fn unsplit_word(area: &Page, uniform: Word) {
    area.store(uniform);
    if !mutation::active(Mutation::TwoLevelNoFences) {
        fence(Ordering::Release);
    }
}

fn same_split(a: Word, b: Word) -> bool {
    match (a.as_split(), b.as_split()) {
        (Some(x), Some(y)) => x.generation == y.generation && x.table_pfn == y.table_pfn,
        _ => false,
    }
}

impl RegionMap {
    /// The map of no region (the memmap's hot map on a machine without a flat region): no
    /// words, no pageblocks, so every lookup in it misses.
    fn empty() -> RegionMap {
        RegionMap {
            region: Region {
                start: Pfn(0),
                end: Pfn(0),
                node: 0,
                zone: crate::base::layout::ZoneType::Normal,
                mapped: false,
                layout: MemmapLayout::Flat,
            },
            words: BootArray::empty(),
            pageblocks: BootArray::empty(),
            pb_base: 0,
            buddy_base: Word::TAIL,
            linked_base: Word::TAIL,
        }
    }

    /// The same map again, over the same boot memory (`BootArray::alias`; page_access.rs
    /// invariant 7: kept in the memmap beside the original).
    fn alias(&self) -> RegionMap {
        RegionMap {
            region: self.region,
            words: self.words.alias(),
            pageblocks: self.pageblocks.alias(),
            pb_base: self.pb_base,
            buddy_base: self.buddy_base,
            linked_base: self.linked_base,
        }
    }

    #[inline]
    pub(crate) fn flat_word(&self, pfn: Pfn) -> &Page {
        &self.words[(pfn.0 - self.region.start.0) as usize]
    }

    /// The words of page `pfn` and the page after it in a flat region (one bounds check for
    /// both).
    #[inline]
    pub(crate) fn flat_words_at(&self, pfn: Pfn) -> [&Page; 2] {
        let i = (pfn.0 - self.region.start.0) as usize;
        let [a, b] = <&[Page; 2]>::try_from(&self.words.as_slice()[i..i + 2]).expect("a range of two");
        [a, b]
    }

    /// The words of the two pages after `pfn` in a flat region (one bounds check for both).
    #[inline]
    pub(crate) fn flat_words_after(&self, pfn: Pfn) -> [&Page; 2] {
        self.flat_words_at(pfn.add(1))
    }

    /// The buddy word of this region's zone type and node without the block's fields
    /// (`Word::buddy_zone_base`, precomputed at build).
    #[inline]
    pub(crate) fn buddy_base(&self) -> Word {
        self.buddy_base
    }

    /// The [`Tag::BuddyLinked`](crate::memmap::tag::Tag::BuddyLinked) word of this region's
    /// zone type and node without the block's migratetype or link
    /// (`Word::buddy_linked_zone_base`, precomputed at build).
    #[inline]
    pub(crate) fn linked_base(&self) -> Word {
        self.linked_base
    }

    #[inline]
    pub(crate) fn area_word(&self, pfn: Pfn) -> &Page {
        &self.words[((pfn.0 - self.region.start.0) >> AREA_ORDER) as usize]
    }

    #[inline]
    pub(crate) fn pageblock(&self, pfn: Pfn) -> &AtomicU8 {
        &self.pageblocks[((pfn.0 - self.pb_base) >> AREA_ORDER) as usize]
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::base::sync::mutation;
    use crate::memmap::word::{Subtype, Undescribed};
    use loom::sync::Arc;

    const TABLE: u64 = 100;
    const GARBAGE: u64 = 0xdead_beef_0000_0001;

    fn page_word(order: u8) -> Word {
        Word::undescribed(Undescribed { subtype: Subtype::Unmappable, order, node: 0, zone: 0 }).unwrap()
    }

    fn split(generation: u16) -> Word {
        Word::split(SplitInfo { free: 0, generation, table_pfn: TABLE }).unwrap()
    }

    /// A reader of page 0 of a split two-level area ([`load_in_area`], the real lockless read)
    /// races a writer that unsplits the area ([`unsplit_word`]), reuses the released table page
    /// as free memory (a relaxed store over word 0, as the free-list links do), then splits the
    /// area again into the same table page with a new generation. The reader gets the area's
    /// word, or a page word of a table that was live while it read: never the reuse's bytes.
    fn reader_races_unsplit_reuse_resplit() {
        loom::model(|| {
            // The table page: two words of it are enough for the model.
            let table = Arc::new([AtomicU64::new(page_word(0).0), AtomicU64::new(page_word(0).0)]);
            let area = Arc::new(Page::new(split(0)));
            let uniform = page_word(9);
            let reader = {
                let (table, area) = (table.clone(), area.clone());
                loom::thread::spawn(move || {
                    let map = |t: u64| {
                        assert_eq!(t, TABLE);
                        Some(&Page::from_atomics(&table)[..])
                    };
                    let (w, own) = load_in_area(&area, 0, map).unwrap();
                    assert_ne!(w.0, GARBAGE, "read a word of a released table");
                    assert!(!own || w == page_word(0) || w == page_word(1), "read a torn table word");
                    assert!(own || w == uniform);
                })
            };
            unsplit_word(&area, uniform);
            table[0].store(GARBAGE, Ordering::Relaxed);
            // Split again into the same page: stamp the words, then publish (as split_area).
            table[0].store(page_word(1).0, Ordering::Relaxed);
            area.store(split(1));
            reader.join().unwrap();
        });
    }

    #[test]
    fn loom_two_level_read_races_unsplit_and_resplit() {
        reader_races_unsplit_reuse_resplit();
    }

    /// The same model without the fences of `load_in_area` and `unsplit_word` must fail: the
    /// reader can see the reuse's store and still the old area word on its re-read (found by
    /// this model; the code before it had no fences).
    #[test]
    #[should_panic(expected = "released table")]
    fn loom_two_level_read_fails_without_fences() {
        mutation::with(Mutation::TwoLevelNoFences, reader_races_unsplit_reuse_resplit);
    }

    /// The same model with the reader trusting the table word without re-reading the area
    /// word must fail.
    #[test]
    #[should_panic(expected = "released table")]
    fn loom_two_level_read_fails_without_recheck() {
        mutation::with(Mutation::TwoLevelNoRecheck, reader_races_unsplit_reuse_resplit);
    }
}
