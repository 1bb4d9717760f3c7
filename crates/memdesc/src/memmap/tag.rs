//! The four-bit type tag of a page word, in its own module so that the word format
//! ([`crate::memmap::word`]) and the descriptor layouts ([`crate::memmap::desc`]) can both name it without
//! importing each other: `word` decodes tags into typed descriptor pointers, `desc` says
//! which tag each descriptor kind is stamped with.

/// The four-bit type tag in the low bits of every word.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Tag {
    /// No descriptor: subtype, order, node and zone inline ([`Undescribed`](crate::memmap::word::Undescribed)).
    Undescribed = 0,
    /// Head of a free buddy block: order and migratetype inline ([`BuddyInfo`](crate::memmap::word::BuddyInfo)).
    Buddy = 1,
    /// Page of a slab; points to its [`Slab`](crate::memmap::desc::Slab) descriptor.
    Slab = 2,
    /// Page of an anonymous folio; points to its [`Folio`](crate::memmap::desc::Folio).
    AnonFolio = 3,
    /// Page of a page-cache folio; points to its [`Folio`](crate::memmap::desc::Folio).
    FileFolio = 4,
    /// Page-table page; points to its [`PtDesc`](crate::memmap::desc::PtDesc).
    PageTable = 5,
    /// vmalloc page that may be mapped to user space; points to its [`VmallocDesc`](crate::memmap::desc::VmallocDesc).
    VmallocMappable = 6,
    /// vmalloc page that must never reach user space; points to its [`VmallocDesc`](crate::memmap::desc::VmallocDesc).
    VmallocUnmappable = 7,
    /// page_pool (netmem) page; points to its [`Netmem`](crate::memmap::desc::Netmem).
    NetPool = 8,
    /// Component page of a zspage; points to its [`Zspage`](crate::memmap::desc::Zspage).
    Zsmalloc = 9,
    /// z3fold page; points to its [`Z3foldDesc`](crate::memmap::desc::Z3foldDesc).
    Z3fold = 10,
    /// Driver memory that may be mapped to user space; points to its [`MappableDesc`](crate::memmap::desc::MappableDesc).
    Mappable = 11,
    /// Two-level memmap only: a 2 MiB area whose 512 per-page words exist ([`SplitInfo`](crate::memmap::word::SplitInfo)).
    Split = 12,
    /// Head of a free order-1 buddy block on a buddy free list: migratetype, zone and node
    /// inline, and the block's previous free-list link ([`Word::buddy`](crate::memmap::word::Word::buddy) makes it for every
    /// free order-1 block off the per-CPU lists; it decodes to [`BuddyInfo`](crate::memmap::word::BuddyInfo) like `Buddy`).
    BuddyLinked = 13,
}

impl Tag {
    /// Decodes the tag bits; `None` for the two unused values.
    #[inline]
    pub const fn from_bits(bits: u8) -> Option<Tag> {
        Some(match bits {
            0 => Tag::Undescribed,
            1 => Tag::Buddy,
            2 => Tag::Slab,
            3 => Tag::AnonFolio,
            4 => Tag::FileFolio,
            5 => Tag::PageTable,
            6 => Tag::VmallocMappable,
            7 => Tag::VmallocUnmappable,
            8 => Tag::NetPool,
            9 => Tag::Zsmalloc,
            10 => Tag::Z3fold,
            11 => Tag::Mappable,
            12 => Tag::Split,
            13 => Tag::BuddyLinked,
            _ => return None,
        })
    }
}
