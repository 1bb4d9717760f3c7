//! The page census: every pfn of a kpageflags/kpagecount snapshot classified exactly once.
//!
//! # Which pfns are counted
//! A pfn is counted if it lies in the pfn span of some zone of `zoneinfo`
//! (`start_pfn .. start_pfn + spanned`), within the snapshot, and kpageflags does not say
//! [`KPF_NOPAGE`]. Pfns outside every zone (pfn 0 on x86) and `NOPAGE` pfns are reported
//! separately ([`Census::outside_zones`], [`Census::nopage`]) and are not part of
//! [`Census::total`].
//!
//! # Kinds, in order of precedence
//! A pfn's own flags decide its kind; the first rule that matches wins:
//! 1. [`Kind::Hole`] / [`Kind::Uninit`] — see *blank pages* below;
//! 2. `SLAB` → [`Kind::Slab`]; 3. `PGTABLE` → [`Kind::PageTable`]; 4. `BUDDY` →
//!    [`Kind::Free`]; 5. `HWPOISON`; 6. `OFFLINE`; 7. `ZERO_PAGE`; 8. `RESERVED`;
//! 9. `ANON` (KSM pages included) → [`Kind::Anon`];
//! 10. any page-cache or LRU state (`LRU`, `UPTODATE`, `DIRTY`, `WRITEBACK`, `MAPPEDTODISK`,
//!     `SWAPBACKED` without `ANON` — shmem —, `PRIVATE`, `UNEVICTABLE`, `MLOCKED`,
//!     `SWAPCACHE`, `HUGE`, `THP`, `ACTIVE`, `RECLAIM`) → [`Kind::File`];
//! 11. anything else → [`Kind::Other`] (kernel memory the kernel does not type: `alloc_pages`
//!     users such as the ftrace ring buffer, kernel stacks, vmalloc, page_pool, large
//!     kmalloc; and pages mapped to user space without LRU state).
//!
//! Because `SLAB` and `PGTABLE` outrank everything else and no rule reassigns such a page,
//! the census's slab and page-table counts equal the number of pfns carrying those bits —
//! an exact check run against every snapshot in the data.
//!
//! # Compound pages, folios, slabs: descriptor groups
//! A run `COMPOUND_HEAD, COMPOUND_TAIL*` is one allocation: one folio (anon/file), one slab,
//! one compound kernel allocation. A page that is neither head nor tail is a group of one.
//! The group's order is ⌈log2(length)⌉ (a length that is not a power of two is counted in
//! [`Census::irregular_groups`]). A tail whose own flags say only [`Kind::Other`] inherits the
//! kind of an anon/file group it continues (older kernels do not copy the folio's flags to
//! tails). This is how slab boundaries are known too: kpageflags marks multi-page slabs as
//! compound, so a slab's descriptor count is its number of head (or single) pages — no
//! guessing from `slabinfo`'s `pagesperslab`.
//!
//! # Blank pages: holes, deferred initialisation, untyped kernel memory
//! A *blank* pfn has no flag and map count 0. Three different things look like that:
//! holes inside a zone's span (the PCI hole below 4 GiB on x86 reads blank, not `NOPAGE`),
//! memory not yet initialised by deferred struct-page initialisation (zoneinfo's
//! `present − managed` pages, at the top of the zone, since Linux initialises them upward in
//! section-sized steps as it needs them), and kernel memory that carries no flag at all
//! (ring buffers, page-table-less `alloc_pages` users). Zoneinfo tells how many of the first
//! two a zone has: `A = spanned − managed − (pfns flagged RESERVED in the zone)` (holes that
//! the kernel marks RESERVED, like the legacy BIOS area, count as reserved and are not in
//! `A`). The census labels `A` blank pfns per zone: first the contiguous blank run at the
//! zone's top, then whole blank 2 MiB-aligned areas from the top down; of those, the lowest
//! `min(A, spanned − present)` are [`Kind::Hole`] and the rest [`Kind::Uninit`]. What cannot
//! be labelled that way is reported in [`Census::unexplained_absent`] (0 on all the data).
//!
//! # Free pages: two kernel behaviours
//! Linux 6.18 (our data) marks **every** page of a free block `BUDDY`; older kernels mark only
//! the block's first page and leave the rest blank, and kpageflags never says the order.
//! [`BuddyMode::Auto`] tells them apart: a run of three or more consecutive `BUDDY` pfns
//! cannot happen when only heads are marked (two adjacent free buddies of one order would have
//! merged), so such a run means every page is marked. In head-only mode the block that starts
//! at a `BUDDY` pfn `p` is taken to be the largest order `k ≤ max_order` with `p` aligned to
//! `2^k` and the following `2^k − 1` pfns all blank — the largest block the buddy allocator
//! could have there, and the reading that keeps the census consistent with `buddyinfo`'s free
//! page total (free memory is normally in large blocks, and blank non-free pages right after a
//! free head are rare). In every-page mode the free blocks are the maximal `BUDDY` runs cut
//! into aligned power-of-two blocks ([`Census::free_blocks_by_order`]), which can be compared
//! with `buddyinfo`'s histogram.
//!
//! # 2 MiB areas (for the two-level memmap)
//! The census also walks the 512-pfn areas that cover the zones: an area is *uniform* when
//! its 512 pfns are all free, all unavailable (reserved, hole, uninitialised, NOPAGE or
//! outside every zone), or all one anon/file folio of order ≥ 9; otherwise it is *split*
//! (the two-level memmap needs a 512-word table for it). See [`crate::cost`].
//!
//! [`KPF_NOPAGE`]: crate::kpf::KPF_NOPAGE

use std::ops::{Index, IndexMut};

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use crate::kpf::*;
use crate::snapshot::{KpageSnapshot, Snapshot};
use crate::tables::ZoneInfo;

/// Pfns per 2 MiB area.
pub const AREA_PAGES: u64 = 512;

/// The largest `max_buddy_order` honoured (larger requests are clamped).
pub const MAX_ORDER_LIMIT: u32 = 40;

/// What a counted pfn is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Free, in the buddy allocator.
    Free,
    /// Present but not yet initialised (deferred struct-page initialisation).
    Uninit,
    /// In a zone's span but not present (reads blank).
    Hole,
    /// Reserved (`PG_reserved`).
    Reserved,
    /// Slab.
    Slab,
    /// Page table.
    PageTable,
    /// Anonymous folio (KSM included).
    Anon,
    /// File (page-cache) folio, shmem included.
    File,
    /// The zero page (or the huge zero page).
    ZeroPage,
    /// Logically offline (balloon).
    Offline,
    /// Hardware-poisoned.
    HwPoison,
    /// Other kernel memory.
    Other,
}

impl Kind {
    /// Number of kinds.
    pub const COUNT: usize = 12;
    /// All kinds, in declaration order.
    pub const ALL: [Kind; Kind::COUNT] = [
        Kind::Free,
        Kind::Uninit,
        Kind::Hole,
        Kind::Reserved,
        Kind::Slab,
        Kind::PageTable,
        Kind::Anon,
        Kind::File,
        Kind::ZeroPage,
        Kind::Offline,
        Kind::HwPoison,
        Kind::Other,
    ];

    /// A stable snake_case name (the JSON key).
    pub const fn name(self) -> &'static str {
        match self {
            Kind::Free => "free",
            Kind::Uninit => "uninit",
            Kind::Hole => "hole",
            Kind::Reserved => "reserved",
            Kind::Slab => "slab",
            Kind::PageTable => "page_table",
            Kind::Anon => "anon",
            Kind::File => "file",
            Kind::ZeroPage => "zero_page",
            Kind::Offline => "offline",
            Kind::HwPoison => "hwpoison",
            Kind::Other => "other",
        }
    }

    /// Kinds that are not usable memory (for the two-level memmap's uniform areas).
    pub const fn unavailable(self) -> bool {
        matches!(self, Kind::Reserved | Kind::Hole | Kind::Uninit)
    }

    /// Kinds whose pages form descriptor groups (compound runs).
    const fn grouped(self) -> bool {
        matches!(self, Kind::Slab | Kind::PageTable | Kind::Anon | Kind::File | Kind::Other | Kind::ZeroPage)
    }
}

/// One number per [`Kind`]; serialises as `{"free": .., "uninit": .., ...}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KindCounts(pub [u64; Kind::COUNT]);

impl KindCounts {
    /// Sum over all kinds.
    pub fn sum(&self) -> u64 {
        self.0.iter().sum()
    }
}

impl Index<Kind> for KindCounts {
    type Output = u64;
    fn index(&self, k: Kind) -> &u64 {
        &self.0[k as usize]
    }
}

impl IndexMut<Kind> for KindCounts {
    fn index_mut(&mut self, k: Kind) -> &mut u64 {
        &mut self.0[k as usize]
    }
}

impl Serialize for KindCounts {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(Kind::COUNT))?;
        for k in Kind::ALL {
            m.serialize_entry(k.name(), &self[k])?;
        }
        m.end()
    }
}

/// How free blocks are marked in kpageflags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BuddyMode {
    /// Decide from the data (see the module documentation).
    #[default]
    Auto,
    /// Every page of a free block is marked `BUDDY` (Linux 6.18).
    EveryPage,
    /// Only the first page of a free block is marked (older kernels).
    HeadOnly,
}

/// Census options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CensusOptions {
    /// How free blocks are marked.
    pub buddy_mode: BuddyMode,
    /// The largest free-block order (`MAX_PAGE_ORDER`, 10 on x86-64; at most
    /// [`MAX_ORDER_LIMIT`]).
    pub max_buddy_order: u32,
}

impl Default for CensusOptions {
    fn default() -> Self {
        CensusOptions { buddy_mode: BuddyMode::Auto, max_buddy_order: 10 }
    }
}

/// The census of one zone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ZoneCensus {
    /// NUMA node.
    pub node: u32,
    /// Zone name.
    pub name: String,
    /// First pfn.
    pub start_pfn: u64,
    /// zoneinfo `spanned`.
    pub spanned: u64,
    /// zoneinfo `present`.
    pub present: u64,
    /// zoneinfo `managed`.
    pub managed: u64,
    /// Pfns flagged RESERVED in the span.
    pub reserved_flagged: u64,
    /// Blank pfns labelled holes.
    pub holes: u64,
    /// Blank pfns labelled not yet initialised.
    pub uninit: u64,
}

/// The 2 MiB areas covering the zones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AreaCensus {
    /// Areas.
    pub total: u64,
    /// Areas entirely free.
    pub uniform_free: u64,
    /// Areas entirely unavailable (reserved / hole / uninit / nopage / outside zones).
    pub uniform_unavailable: u64,
    /// Areas covered by one anon/file folio of order ≥ 9.
    pub uniform_folio: u64,
    /// The rest: areas that need a table of 512 words.
    pub split: u64,
    /// Counted pages, by kind, that lie in split areas.
    pub split_pages: KindCounts,
}

impl AreaCensus {
    /// Uniform areas.
    pub fn uniform(&self) -> u64 {
        self.uniform_free + self.uniform_unavailable + self.uniform_folio
    }
}

/// A page census.
#[derive(Clone, Debug, Serialize)]
pub struct Census {
    /// Counted pfns (in a zone span, not NOPAGE).
    pub total: u64,
    /// Pages by kind; sums to `total`.
    pub pages: KindCounts,
    /// Anon and file folios by order (index = order).
    pub folios_by_order: Vec<u64>,
    /// Anon folios by order.
    pub anon_folios_by_order: Vec<u64>,
    /// File folios by order.
    pub file_folios_by_order: Vec<u64>,
    /// Slabs by order.
    pub slabs_by_order: Vec<u64>,
    /// Page-table descriptor groups (page-table pages, compound ones counted once).
    pub page_tables: u64,
    /// Groups of other kernel memory (compound runs or single pages).
    pub other_groups: u64,
    /// Of those, groups with a page mapped to user space (they need a mappable descriptor).
    pub other_mapped_groups: u64,
    /// Groups whose length is not a power of two.
    pub irregular_groups: u64,
    /// Free blocks by order as reconstructed from kpageflags.
    pub free_blocks_by_order: Vec<u64>,
    /// The free-block marking used (never `Auto`).
    pub buddy_mode: BuddyMode,
    /// Pfns in a zone span flagged NOPAGE (not counted).
    pub nopage: u64,
    /// Pfns of the snapshot outside every zone span (not counted).
    pub outside_zones: u64,
    /// Holes/uninitialised pages zoneinfo implies but no blank run could be matched to.
    pub unexplained_absent: u64,
    /// The 2 MiB areas.
    pub areas: AreaCensus,
    /// Per zone.
    pub zones: Vec<ZoneCensus>,
    /// Free pages according to buddyinfo, if known (for the consistency check).
    pub buddyinfo_free: Option<u64>,
    /// Pages allocated by vmalloc according to meminfo's `VmallocUsed`, if known (they hide
    /// inside [`Kind::Other`]).
    pub vmalloc_pages: Option<u64>,
    /// zsmalloc zspages according to vmstat/zoneinfo `nr_zspages`, if known.
    pub zspages: Option<u64>,
}

impl Census {
    /// Anon + file folios.
    pub fn folios(&self) -> u64 {
        self.folios_by_order.iter().sum()
    }

    /// Order-0 anon + file folios.
    pub fn small_folios(&self) -> u64 {
        self.folios_by_order.first().copied().unwrap_or(0)
    }

    /// Anon + file folios of order ≥ 1.
    pub fn large_folios(&self) -> u64 {
        self.folios() - self.small_folios()
    }

    /// Slabs (one descriptor each).
    pub fn slabs(&self) -> u64 {
        self.slabs_by_order.iter().sum()
    }

    /// Runs the census over a snapshot directory's kpage pair and zoneinfo, and picks up the
    /// consistency figures of its other tables.
    pub fn from_snapshot(s: &Snapshot, opts: CensusOptions) -> Census {
        let mut c = census(&s.kpage, &s.zoneinfo, opts);
        c.buddyinfo_free = s.buddyinfo.as_ref().map(|b| b.free_pages());
        c.vmalloc_pages = s.meminfo.as_ref().and_then(|m| m.bytes("VmallocUsed")).map(|b| b / 4096);
        c.zspages = s.vmstat.as_ref().and_then(|v| v.get("nr_zspages")).map(|v| v.max(0) as u64).or_else(|| {
            let n: u64 = s.zoneinfo.zones.iter().filter_map(|z| z.stat("nr_zspages")).sum();
            Some(n)
        });
        c
    }
}

#[inline]
fn blank(f: PageFlags, count: u8) -> bool {
    f.is_empty() && count == 0
}

const FILE_MARKERS: u64 = (1 << KPF_LRU)
    | (1 << KPF_UPTODATE)
    | (1 << KPF_DIRTY)
    | (1 << KPF_WRITEBACK)
    | (1 << KPF_SWAPBACKED)
    | (1 << KPF_UNEVICTABLE)
    | (1 << KPF_SWAPCACHE)
    | (1 << KPF_HUGE)
    | (1 << KPF_THP)
    | (1 << KPF_ACTIVE)
    | (1 << KPF_RECLAIM)
    | (1u64 << KPF_MLOCKED)
    | (1u64 << KPF_MAPPEDTODISK)
    | (1u64 << KPF_PRIVATE)
    | (1u64 << KPF_PRIVATE_2);

/// The kind a pfn's own flags say (rules 2–11 of the module documentation).
pub fn base_kind(f: PageFlags) -> Kind {
    if f.has(KPF_SLAB) {
        Kind::Slab
    } else if f.has(KPF_PGTABLE) {
        Kind::PageTable
    } else if f.has(KPF_BUDDY) {
        Kind::Free
    } else if f.has(KPF_HWPOISON) {
        Kind::HwPoison
    } else if f.has(KPF_OFFLINE) {
        Kind::Offline
    } else if f.has(KPF_ZERO_PAGE) {
        Kind::ZeroPage
    } else if f.has(KPF_RESERVED) {
        Kind::Reserved
    } else if f.has(KPF_ANON) || f.has(KPF_KSM) {
        Kind::Anon
    } else if f.0 & FILE_MARKERS != 0 {
        Kind::File
    } else {
        Kind::Other
    }
}

/// ⌈log2(n)⌉ for n ≥ 1.
fn ceil_log2(n: u64) -> u32 {
    if n <= 1 {
        0
    } else {
        64 - (n - 1).leading_zeros()
    }
}

fn bump(v: &mut Vec<u64>, order: u32) {
    let i = order as usize;
    if v.len() <= i {
        v.resize(i + 1, 0);
    }
    v[i] += 1;
}

/// A run of labelled blank pfns.
#[derive(Clone, Copy, Debug)]
struct Absent {
    start: u64,
    end: u64,
    kind: Kind,
}

/// Labels holes and not-yet-initialised pages in each zone (see the module documentation).
fn label_absent(kpage: &KpageSnapshot, zi: &ZoneInfo, len: u64) -> (Vec<Absent>, Vec<ZoneCensus>, u64) {
    let is_blank = |p: u64| blank(kpage.flags(p), kpage.count(p).min(255) as u8);
    let mut out = Vec::new();
    let mut zones = Vec::new();
    let mut unexplained = 0u64;
    for (z, s, e) in zi.spans() {
        let e_clip = e.min(len);
        let s_clip = s.min(e_clip);
        let mut reserved = 0u64;
        kpage.scan(s_clip, e_clip, |_, _, f, _| {
            if f.has(KPF_RESERVED) && !f.has(KPF_NOPAGE) {
                reserved += 1;
            }
        });
        let want = z.spanned.saturating_sub(z.managed).saturating_sub(reserved).min(e_clip - s_clip);
        let mut runs: Vec<(u64, u64)> = Vec::new();
        let mut labelled = 0u64;
        // Phase 1: the blank run at the top of the zone.
        let mut p = e_clip;
        while p > s_clip && labelled < want && is_blank(p - 1) {
            p -= 1;
            labelled += 1;
        }
        if p < e_clip {
            runs.push((p, e_clip));
        }
        // Phase 2: whole blank 2 MiB areas below, from the top down.
        let mut area_end = p / AREA_PAGES * AREA_PAGES;
        while labelled + AREA_PAGES <= want && area_end >= s_clip + AREA_PAGES {
            let a = area_end - AREA_PAGES;
            if (a..area_end).all(is_blank) {
                runs.push((a, area_end));
                labelled += AREA_PAGES;
            }
            area_end = a;
        }
        unexplained += want - labelled;
        runs.sort_unstable();
        // The lowest `holes` labelled pfns are holes, the rest uninitialised.
        let holes = labelled.min(z.spanned.saturating_sub(z.present));
        let mut hole_left = holes;
        for (a, b) in runs {
            let h = hole_left.min(b - a);
            if h > 0 {
                out.push(Absent { start: a, end: a + h, kind: Kind::Hole });
                hole_left -= h;
            }
            if a + h < b {
                out.push(Absent { start: a + h, end: b, kind: Kind::Uninit });
            }
        }
        zones.push(ZoneCensus {
            node: z.node,
            name: z.name.clone(),
            start_pfn: s,
            spanned: z.spanned,
            present: z.present,
            managed: z.managed,
            reserved_flagged: reserved,
            holes,
            uninit: labelled - holes,
        });
    }
    out.sort_unstable_by_key(|a| a.start);
    (out, zones, unexplained)
}

/// Decides the buddy marking from the data.
fn detect_buddy_mode(kpage: &KpageSnapshot, spans: &[(u64, u64)]) -> BuddyMode {
    let mut run = 0u64;
    let mut any = false;
    for &(s, e) in spans {
        let mut found = false;
        kpage.scan(s, e, |_, _, f, _| {
            if f.has(KPF_BUDDY) {
                any = true;
                run += 1;
                if run >= 3 {
                    found = true;
                }
            } else {
                run = 0;
            }
        });
        if found {
            return BuddyMode::EveryPage;
        }
    }
    if any {
        BuddyMode::HeadOnly
    } else {
        BuddyMode::EveryPage
    }
}

/// Cuts the pfn run `[s, e)` into aligned power-of-two blocks of order ≤ `max`.
fn decompose(s: u64, e: u64, max: u32, out: &mut Vec<u64>) {
    let mut x = s;
    while x < e {
        let mut k = max.min(if x == 0 { 63 } else { x.trailing_zeros() });
        while k > 0 && x + (1u64 << k) > e {
            k -= 1;
        }
        bump(out, k);
        x += 1u64 << k;
    }
}

/// Merges zone spans into disjoint sorted ranges.
fn merged_spans(zi: &ZoneInfo) -> Vec<(u64, u64)> {
    let mut v: Vec<(u64, u64)> = Vec::new();
    for (_, s, e) in zi.spans() {
        if let Some(last) = v.last_mut() {
            if s <= last.1 {
                last.1 = last.1.max(e);
                continue;
            }
        }
        v.push((s, e));
    }
    v
}

#[derive(Clone, Copy)]
struct Group {
    kind: Kind,
    start: u64,
    len: u64,
    mapped: bool,
    id: u64,
}

/// Per-area accumulator.
struct Area {
    counts: [u32; Kind::COUNT],
    free: u32,
    unavailable: u32,
    folio: Option<u64>,
    folio_pages: u32,
}

impl Area {
    fn new() -> Self {
        Area { counts: [0; Kind::COUNT], free: 0, unavailable: 0, folio: None, folio_pages: 0 }
    }
}

/// A run of counted pfns handed to the visitor of [`census_runs`]: one descriptor group (a
/// folio, a slab, a page-table page, a compound or single page of other kernel memory, the
/// zero page), or a maximal run of one non-grouped kind (free, reserved, hole, …).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    /// First pfn.
    pub start: u64,
    /// Pfns in the run.
    pub len: u64,
    /// What they are.
    pub kind: Kind,
}

struct Walker<'a> {
    sink: &'a mut dyn FnMut(Run),
    plain: Option<Run>,
    kpage: &'a KpageSnapshot,
    opts: CensusOptions,
    c: Census,
    group: Option<Group>,
    next_group_id: u64,
    free_until: u64,
    buddy_run_start: Option<u64>,
    area: Area,
    cache: Vec<Option<Kind>>,
}

impl Walker<'_> {
    fn close_plain(&mut self) {
        if let Some(r) = self.plain.take() {
            (self.sink)(r);
        }
    }

    fn close_group(&mut self) {
        let Some(g) = self.group.take() else { return };
        (self.sink)(Run { start: g.start, len: g.len, kind: g.kind });
        let order = ceil_log2(g.len);
        if !g.len.is_power_of_two() {
            self.c.irregular_groups += 1;
        }
        match g.kind {
            Kind::Slab => bump(&mut self.c.slabs_by_order, order),
            Kind::PageTable => self.c.page_tables += 1,
            Kind::Anon => {
                bump(&mut self.c.folios_by_order, order);
                bump(&mut self.c.anon_folios_by_order, order);
            }
            Kind::File => {
                bump(&mut self.c.folios_by_order, order);
                bump(&mut self.c.file_folios_by_order, order);
            }
            Kind::Other => {
                self.c.other_groups += 1;
                if g.mapped {
                    self.c.other_mapped_groups += 1;
                }
            }
            _ => {}
        }
    }

    fn end_buddy_run(&mut self, pfn: u64) {
        if let Some(s) = self.buddy_run_start.take() {
            decompose(s, pfn, self.opts.max_buddy_order, &mut self.c.free_blocks_by_order);
        }
    }

    /// Head-only mode: the order of the free block starting at `p` (see the module docs).
    fn head_only_block(&self, p: u64, zone_end: u64, absent: &[Absent], ai: usize) -> u32 {
        let mut k = self.opts.max_buddy_order.min(if p == 0 { 63 } else { p.trailing_zeros() });
        // Blank pfns after p, up to the largest candidate block.
        let limit = p.saturating_add(1u64 << k).min(zone_end);
        let next_absent = absent.get(ai..).and_then(|a| a.iter().find(|a| a.end > p)).map(|a| a.start);
        let limit = match next_absent {
            Some(a) if a > p => limit.min(a),
            _ => limit,
        };
        let mut q = p + 1;
        while q < limit && blank(self.kpage.flags(q), self.kpage.count(q).min(255) as u8) {
            q += 1;
        }
        let run = q - p; // pages usable for the block, head included
        while k > 0 && (1u64 << k) > run {
            k -= 1;
        }
        k
    }

    fn end_area(&mut self) {
        let a = std::mem::replace(&mut self.area, Area::new());
        let areas = &mut self.c.areas;
        areas.total += 1;
        let n = AREA_PAGES as u32;
        if a.free == n {
            areas.uniform_free += 1;
        } else if a.unavailable == n {
            areas.uniform_unavailable += 1;
        } else if a.folio.is_some() && a.folio_pages == n {
            areas.uniform_folio += 1;
        } else {
            areas.split += 1;
            for k in Kind::ALL {
                areas.split_pages[k] += a.counts[k as usize] as u64;
            }
        }
    }

    /// An uncounted pfn (outside zones, NOPAGE, beyond the file): unavailable.
    fn uncounted(&mut self) {
        self.close_group();
        self.close_plain();
        self.area.unavailable += 1;
    }

    fn counted(&mut self, pfn: u64, kind: Kind, tail: bool, mapped: bool) {
        let mut kind = kind;
        if kind.grouped() {
            self.close_plain();
            let cont = match self.group {
                Some(g) if tail => g.kind == kind || (kind == Kind::Other && matches!(g.kind, Kind::Anon | Kind::File)),
                _ => false,
            };
            if cont {
                if let Some(g) = self.group.as_mut() {
                    kind = g.kind;
                    g.len += 1;
                    g.mapped |= mapped;
                }
            } else {
                self.close_group();
                self.group = Some(Group { kind, start: pfn, len: 1, mapped, id: self.next_group_id });
                self.next_group_id += 1;
            }
        } else {
            self.close_group();
            match self.plain.as_mut() {
                Some(r) if r.kind == kind && r.start + r.len == pfn => r.len += 1,
                _ => {
                    self.close_plain();
                    self.plain = Some(Run { start: pfn, len: 1, kind });
                }
            }
        }
        self.c.pages[kind] += 1;
        self.area.counts[kind as usize] += 1;
        if kind == Kind::Free {
            self.area.free += 1;
        } else if kind.unavailable() {
            self.area.unavailable += 1;
        } else if matches!(kind, Kind::Anon | Kind::File) {
            if let Some(g) = self.group {
                match self.area.folio {
                    None if self.area.folio_pages == 0 => {
                        self.area.folio = Some(g.id);
                        self.area.folio_pages = 1;
                    }
                    Some(id) if id == g.id => self.area.folio_pages += 1,
                    _ => {}
                }
            }
        }
    }
}

/// Runs the census of `kpage` over the zones of `zi` (see the module documentation).
pub fn census(kpage: &KpageSnapshot, zi: &ZoneInfo, opts: CensusOptions) -> Census {
    census_runs(kpage, zi, opts, &mut |_| {})
}

/// [`census`], also handing every counted pfn to `visit`, in pfn order, as part of exactly one
/// [`Run`] (uncounted pfns — outside every zone, `NOPAGE` — are in none). `memdesc replay`
/// rebuilds a machine's start state from these runs.
pub fn census_runs(kpage: &KpageSnapshot, zi: &ZoneInfo, opts: CensusOptions, visit: &mut dyn FnMut(Run)) -> Census {
    let len = kpage.len();
    // Zone spans clipped to the pfns the snapshot has: nothing beyond it is counted.
    let spans: Vec<(u64, u64)> =
        merged_spans(zi).into_iter().map(|(s, e)| (s.min(len), e.min(len))).filter(|&(s, e)| s < e).collect();
    let (absent, zones, unexplained) = label_absent(kpage, zi, len);
    let opts = CensusOptions { max_buddy_order: opts.max_buddy_order.min(MAX_ORDER_LIMIT), ..opts };
    let mode = match opts.buddy_mode {
        BuddyMode::Auto => detect_buddy_mode(kpage, &spans),
        m => m,
    };
    let mut w = Walker {
        sink: visit,
        plain: None,
        kpage,
        opts,
        c: Census {
            total: 0,
            pages: KindCounts::default(),
            folios_by_order: Vec::new(),
            anon_folios_by_order: Vec::new(),
            file_folios_by_order: Vec::new(),
            slabs_by_order: Vec::new(),
            page_tables: 0,
            other_groups: 0,
            other_mapped_groups: 0,
            irregular_groups: 0,
            free_blocks_by_order: Vec::new(),
            buddy_mode: mode,
            nopage: 0,
            outside_zones: 0,
            unexplained_absent: unexplained,
            areas: AreaCensus::default(),
            zones,
            buddyinfo_free: None,
            vmalloc_pages: None,
            zspages: None,
        },
        group: None,
        next_group_id: 0,
        free_until: 0,
        buddy_run_start: None,
        area: Area::new(),
        cache: vec![None; kpage.palette_len().unwrap_or(0)],
    };
    let (Some(&(lo, _)), Some(&(_, hi))) = (spans.first(), spans.last()) else {
        return w.c;
    };
    let lo = lo / AREA_PAGES * AREA_PAGES;
    let hi = hi.div_ceil(AREA_PAGES).saturating_mul(AREA_PAGES);
    let mut si = 0usize; // current span
    let mut ai = 0usize; // current absent run
    let mut pfn = lo;
    while pfn < hi {
        // Process one area at a time so that the per-area bookkeeping is simple.
        let area_end = pfn + AREA_PAGES;
        let file_end = area_end.min(len);
        if pfn < file_end {
            let mut visit = |p: u64, key: u32, f: PageFlags, cnt: u8| {
                while si < spans.len() && spans[si].1 <= p {
                    si += 1;
                }
                let in_zone = si < spans.len() && spans[si].0 <= p;
                if !in_zone {
                    if !f.has(KPF_NOPAGE) {
                        w.c.outside_zones += 1;
                    }
                    w.end_buddy_run(p);
                    w.uncounted();
                    return;
                }
                if f.has(KPF_NOPAGE) {
                    w.c.nopage += 1;
                    w.end_buddy_run(p);
                    w.uncounted();
                    return;
                }
                w.c.total += 1;
                while ai < absent.len() && absent[ai].end <= p {
                    ai += 1;
                }
                if ai < absent.len() && absent[ai].start <= p {
                    w.end_buddy_run(p);
                    w.counted(p, absent[ai].kind, false, false);
                    return;
                }
                let kind = match w.cache.get_mut(key as usize) {
                    Some(Some(k)) => *k,
                    Some(slot) => {
                        let k = base_kind(f);
                        *slot = Some(k);
                        k
                    }
                    None => base_kind(f),
                };
                let mut kind = kind;
                if kind == Kind::Free {
                    match mode {
                        BuddyMode::HeadOnly => {
                            if p >= w.free_until {
                                let zone_end = spans[si].1.min(len);
                                let k = w.head_only_block(p, zone_end, &absent, ai);
                                bump(&mut w.c.free_blocks_by_order, k);
                                w.free_until = p + (1u64 << k);
                            }
                        }
                        _ => {
                            if w.buddy_run_start.is_none() {
                                w.buddy_run_start = Some(p);
                            }
                        }
                    }
                } else {
                    w.end_buddy_run(p);
                    if mode == BuddyMode::HeadOnly && p < w.free_until && blank(f, cnt) {
                        kind = Kind::Free;
                    }
                }
                w.counted(p, kind, f.has(KPF_COMPOUND_TAIL), cnt > 0);
            };
            kpage.scan(pfn, file_end, &mut visit);
        }
        // pfns beyond the end of the file.
        let beyond = file_end.max(pfn);
        if beyond < area_end {
            w.end_buddy_run(beyond);
        }
        for _ in beyond..area_end {
            w.uncounted();
        }
        w.end_area();
        pfn = area_end;
    }
    w.end_buddy_run(hi);
    w.close_group();
    w.close_plain();
    w.c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zoneinfo(start: u64, spanned: u64, present: u64, managed: u64) -> ZoneInfo {
        let text = format!(
            "Node 0, zone Normal\n  pages free 0\n  spanned {spanned}\n  present {present}\n  managed {managed}\n  start_pfn: {start}\n"
        );
        ZoneInfo::parse("zoneinfo", text.as_bytes()).unwrap()
    }

    fn snap(flags: &[u64], counts: &[u64]) -> KpageSnapshot {
        let f: Vec<u8> = flags.iter().flat_map(|w| w.to_le_bytes()).collect();
        let c: Vec<u8> = counts.iter().flat_map(|w| w.to_le_bytes()).collect();
        KpageSnapshot::from_bytes(&f, &c).unwrap()
    }

    const B: u64 = 1 << KPF_BUDDY;
    const H: u64 = 1 << KPF_COMPOUND_HEAD;
    const T: u64 = 1 << KPF_COMPOUND_TAIL;
    const LRU: u64 = 1 << KPF_LRU;
    const ANON: u64 = 1 << KPF_ANON;
    const SLAB: u64 = 1 << KPF_SLAB;
    const RSV: u64 = 1u64 << KPF_RESERVED;

    #[test]
    fn kinds_groups_and_orders() {
        // 2048 pfns: [0,512) every-page free, [512,1024) one order-9 anon folio,
        // [1024,1028) an order-2 slab, 1028 an order-0 slab, 1029 pgtable, 1030..1034 file
        // order-2 folio with bare tails, then 1034 mapped other, rest other blank.
        let mut f = vec![0u64; 2048];
        let mut c = vec![0u64; 2048];
        for x in &mut f[..512] {
            *x = B;
        }
        f[512] = H | LRU | ANON;
        for x in &mut f[513..1024] {
            *x = T | LRU | ANON;
        }
        f[1024] = H | SLAB;
        for x in &mut f[1025..1028] {
            *x = T | SLAB;
        }
        f[1028] = SLAB;
        f[1029] = 1 << KPF_PGTABLE;
        f[1030] = H | LRU;
        for x in &mut f[1031..1034] {
            *x = T;
        }
        c[1034] = 1;
        // The top 512 pfns are uninitialised (spanned − managed = 512, nothing reserved).
        let s = snap(&f, &c);
        let z = zoneinfo(0, 2048, 2048, 1536);
        let cs = census(&s, &z, CensusOptions::default());
        assert_eq!(cs.buddy_mode, BuddyMode::EveryPage);
        assert_eq!(cs.total, 2048);
        assert_eq!(cs.pages.sum(), 2048);
        assert_eq!(cs.pages[Kind::Free], 512);
        assert_eq!(cs.pages[Kind::Anon], 512);
        assert_eq!(cs.pages[Kind::Slab], 5);
        assert_eq!(cs.pages[Kind::PageTable], 1);
        assert_eq!(cs.pages[Kind::File], 4);
        assert_eq!(cs.pages[Kind::Uninit], 512);
        assert_eq!(cs.pages[Kind::Other], 2048 - 512 - 512 - 5 - 1 - 4 - 512);
        assert_eq!(cs.anon_folios_by_order, {
            let mut v = vec![0; 10];
            v[9] = 1;
            v
        });
        assert_eq!(cs.file_folios_by_order, vec![0, 0, 1]);
        assert_eq!(cs.slabs_by_order, vec![1, 0, 1]);
        assert_eq!(cs.page_tables, 1);
        assert_eq!(cs.other_mapped_groups, 1);
        assert_eq!(cs.free_blocks_by_order, {
            let mut v = vec![0; 10];
            v[9] = 1;
            v
        });
        assert_eq!(cs.areas.total, 4);
        assert_eq!(cs.areas.uniform_free, 1);
        assert_eq!(cs.areas.uniform_folio, 1);
        assert_eq!(cs.areas.uniform_unavailable, 1);
        assert_eq!(cs.areas.split, 1);
        assert_eq!(cs.areas.split_pages.sum(), 512);

        // The runs tile the counted pfns in order and agree with the counts.
        let mut runs = Vec::new();
        let again = census_runs(&s, &z, CensusOptions::default(), &mut |r| runs.push(r));
        assert_eq!(again.pages, cs.pages);
        let mut next = 0;
        let mut by_kind = KindCounts::default();
        for r in &runs {
            assert_eq!(r.start, next, "{r:?}");
            next += r.len;
            by_kind[r.kind] += r.len;
        }
        assert_eq!(next, 2048);
        assert_eq!(by_kind, cs.pages);
        assert!(runs.contains(&Run { start: 512, len: 512, kind: Kind::Anon }));
        assert!(runs.contains(&Run { start: 1024, len: 4, kind: Kind::Slab }));
        assert!(runs.contains(&Run { start: 1028, len: 1, kind: Kind::Slab }));
        assert!(runs.contains(&Run { start: 0, len: 512, kind: Kind::Free }));
    }

    #[test]
    fn head_only_buddy_inference() {
        // Old kernels: only the head is BUDDY. An order-3 block at 8, an order-0 at 17
        // (followed by a non-blank page), and a block at 64 bounded by a reserved page at 68.
        let mut f = vec![1u64 << KPF_UPTODATE | LRU; 128];
        for x in &mut f[8..16] {
            *x = 0;
        }
        f[8] = B;
        f[17] = B;
        for x in &mut f[64..68] {
            *x = 0;
        }
        f[64] = B;
        f[68] = RSV;
        let c = vec![0u64; 128];
        let s = snap(&f, &c);
        let z = zoneinfo(0, 128, 128, 127);
        let cs = census(&s, &z, CensusOptions::default());
        assert_eq!(cs.buddy_mode, BuddyMode::HeadOnly);
        assert_eq!(cs.pages[Kind::Free], 8 + 1 + 4);
        assert_eq!(cs.free_blocks_by_order, vec![1, 0, 1, 1]);
        assert_eq!(cs.pages[Kind::Reserved], 1);
        // Forcing every-page mode counts only the marked pages.
        let cs = census(&s, &z, CensusOptions { buddy_mode: BuddyMode::EveryPage, ..CensusOptions::default() });
        assert_eq!(cs.pages[Kind::Free], 3);
    }

    #[test]
    fn holes_then_uninit_and_outside_pfns() {
        // Zone [1, 4096): 96 reserved-flagged pfns, a blank top of 1024 pfns of which
        // spanned − present = 512 are holes and the other 512 uninitialised.
        let mut f = vec![1u64 << KPF_UPTODATE | LRU; 4096];
        for x in &mut f[100..196] {
            *x = RSV;
        }
        for x in &mut f[3072..] {
            *x = 0;
        }
        f[0] = RSV;
        let c = vec![0u64; 4096];
        let s = snap(&f, &c);
        let z = zoneinfo(1, 4095, 4095 - 512, 4095 - 1024 - 96);
        let cs = census(&s, &z, CensusOptions::default());
        assert_eq!(cs.outside_zones, 1);
        assert_eq!(cs.total, 4095);
        assert_eq!(cs.pages[Kind::Hole], 512);
        assert_eq!(cs.pages[Kind::Uninit], 512);
        assert_eq!(cs.pages[Kind::Reserved], 96);
        assert_eq!(cs.unexplained_absent, 0);
        assert_eq!(cs.zones[0].holes, 512);
        assert_eq!(cs.areas.uniform_unavailable, 2);
    }

    #[test]
    fn decompose_runs() {
        let mut v = Vec::new();
        decompose(3, 17, 10, &mut v);
        // 3 | 4..8 | 8..16 | 16
        assert_eq!(v, vec![2, 0, 1, 1]);
        assert_eq!(ceil_log2(1), 0);
        assert_eq!(ceil_log2(3), 2);
        assert_eq!(ceil_log2(512), 9);
    }
}
