//! What a counted pfn is: [`Kind`], the per-kind [`KindCounts`], and the classification of a
//! pfn by its own flags ([`base_kind`], rules 2–11 of the census's precedence list).

use std::ops::{Index, IndexMut};

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use crate::kpf::*;

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
    pub(super) const fn grouped(self) -> bool {
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

/// A blank pfn: no flag and map count 0 (see *blank pages* in the
/// [census documentation](mod@crate::census)).
#[inline]
pub(super) fn blank(f: PageFlags, count: u8) -> bool {
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

/// The kind a pfn's own flags say (rules 2–11 of the [census documentation](mod@crate::census)).
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
