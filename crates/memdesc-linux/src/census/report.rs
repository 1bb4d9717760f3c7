//! What a census reports: the [`Census`] totals, per zone ([`ZoneCensus`]) and per 2 MiB
//! area ([`AreaCensus`]). [`Census::from_snapshot`] is next to the walk that fills it.

use serde::Serialize;

use super::kind::KindCounts;
use super::options::BuddyMode;

/// Pfns per 2 MiB area.
pub const AREA_PAGES: u64 = 512;

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
    /// inside [`Kind::Other`](super::Kind::Other)).
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
}
