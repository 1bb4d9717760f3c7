//! The page word: one 8-byte atomic per 4 KiB page that says what the page is.
//!
//! Layout of a word (`u64`), low bits first:
//!
//! | bits   | tag `Undescribed`        | tag `Buddy`             | tag `BuddyLinked` (free order-1 head) | tag `Split` (two-level area) | described tags          |
//! |--------|--------------------------|-------------------------|---------------------------------------|------------------------------|-------------------------|
//! | 0..4   | tag                      | tag                     | tag                                   | tag                          | tag                     |
//! | 4..64  | subtype 4, order 6, node 10, zone 3 | order 6, migratetype 3, zone 3, node 10, pcp 1 | migratetype 3, zone 3, node 10, 0 4, link 40 | free count 10, generation 10, table pfn 40 | descriptor address bits 4..64 |
//!
//! A free order-1 block on a buddy list has two words for its two free-list links: the tail
//! word carries the next link, and the head word, which must also say what the block is, is a
//! `BuddyLinked` word with the previous link in the same 40 bits a tail link uses (order 1
//! and "not per-CPU" are implied by the tag, which makes the room). [`Word::buddy`] encodes
//! every free order-1 block that is not on a per-CPU list this way (link none) and both tags
//! decode to the same [`BuddyInfo`].
//!
//! A *tail* word (`Undescribed`, subtype `Tail`) has no order, node or zone (they decode as 0);
//! bits 24..64 instead carry an optional free-list link: `pfn + 1`, 0 meaning none. So the
//! plain [`Word::TAIL`] is the tail without a link. The page allocator keeps the next and
//! previous links of a free block of order 2 and up in its second and third pages' words
//! ([`Word::linked_tail`], [`Word::tail_link`]), where allocating or freeing the block reads
//! and writes the memmap cache line it already touches instead of the cold free memory;
//! every other tail word, and every tail of an allocated block, is the plain [`Word::TAIL`].
//!
//! Descriptors are 16-byte aligned, so the address of a descriptor has its low four bits clear
//! and the whole word is `address | tag`: decoding is one mask. Every address the machine can
//! form fits, including kernel addresses at the top of the address space.
//!
//! Reading a word gives a [`PageKind`]: a typed view whose described variants carry a
//! [`DescPtr`] of the right descriptor type, which can only be dereferenced under an RCU read
//! guard (descriptors are `TYPESAFE_BY_RCU`, see [`crate::memmap::lookup`]).
//!
//! This module touches only the word's bits; it never dereferences a descriptor. It is the one
//! writer of page words: every store goes through [`Page`]'s methods, including the words of a
//! split two-level area's table, which `Page::from_atomics` views as `Page`s.
//!
//! # Invariants
//! 1. **A `Page` is an `AtomicU64`.** `Page` is `#[repr(transparent)]` over the crate's
//!    `AtomicU64`, so a `&[AtomicU64; N]` and a `&[Page; N]` over the same memory have the
//!    same layout and the same (atomic-only) access rules; `Page::from_atomics` is the one
//!    cast between them.

use crate::base::sync::{AtomicU64, Ordering};
use crate::memmap::desc::{
    DescPtr, Descriptor, Folio, MappableDesc, Netmem, PtDesc, Slab, VmallocDesc, Z3foldDesc, Zspage,
};

pub use crate::memmap::tag::Tag;

/// What an undescribed page is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Subtype {
    /// Never initialised (the all-zero word).
    Uninit = 0,
    /// Inside a block whose head page's word describes it (free or raw-allocated block).
    Tail = 1,
    /// Reserved by the boot memory map or the boot allocator; never allocatable.
    Reserved = 2,
    /// Hardware-poisoned: never handed out again.
    HwPoison = 3,
    /// Offline (ballooned out or an offlined range).
    Offline = 4,
    /// Debug guard page around an allocation.
    Guard = 5,
    /// The shared zero page.
    ZeroPage = 6,
    /// Head of a large kmalloc allocation served straight from the page allocator.
    LargeKmalloc = 7,
    /// Head of raw page-allocator memory: unmappable driver or kernel memory.
    Unmappable = 8,
    /// A page that holds memmap words (a split two-level area's table).
    Memmap = 9,
    /// Head of a block the crate allocated for itself (per-CPU sheaf arrays, a slab's or a
    /// descriptor-backed page before its descriptor word is stamped, two-level area tables
    /// before they are published). No public free accepts it.
    Internal = 10,
}

impl Subtype {
    const fn from_bits(bits: u8) -> Option<Subtype> {
        Some(match bits {
            0 => Subtype::Uninit,
            1 => Subtype::Tail,
            2 => Subtype::Reserved,
            3 => Subtype::HwPoison,
            4 => Subtype::Offline,
            5 => Subtype::Guard,
            6 => Subtype::ZeroPage,
            7 => Subtype::LargeKmalloc,
            8 => Subtype::Unmappable,
            9 => Subtype::Memmap,
            10 => Subtype::Internal,
            _ => return None,
        })
    }
}

/// Largest order an inline field holds (6 bits).
pub const MAX_INLINE_ORDER: u8 = 63;
/// First bit of the link a tail word carries (`pfn + 1` in the 40 bits up to 64).
const LINK_SHIFT: u32 = 24;
// The link field holds every pfn but the largest (`MAX_PFN + 1` would need a 41st bit; the
// largest pfn is odd, never the head of a block that has a third page), and leaves the tag
// and the subtype alone.
const _: () = assert!(64 - LINK_SHIFT == 40 && crate::base::addr::MAX_PFN == (1 << 40) - 1);
const _: () = assert!(LINK_SHIFT >= 8, "the tag and subtype stay below the link");
const _: () = assert!(Word::linked_tail_raw(crate::base::addr::MAX_PFN - 1).is_tail());
const _: () =
    assert!(Word::linked_tail_raw(crate::base::addr::MAX_PFN - 1).tail_link_raw() == crate::base::addr::MAX_PFN - 1);
const _: () = assert!(Word::linked_tail_raw(u64::MAX).0 == Word::TAIL.0, "no link is the plain tail");
const _: () = assert!(Word::TAIL.tail_link_raw() == u64::MAX);
// A `BuddyLinked` word's fields (migratetype 4..7, zone 7..10, node 10..20) stay below its
// link, which uses the same 40 bits as a tail's; the largest values of every field round-trip
// beside the largest link.
const _: () = assert!(20 <= LINK_SHIFT);
const _: () = {
    let w = Word::buddy_linked_zone_base(MAX_ZONE, MAX_NODE).with_linked_migratetype(MAX_MIGRATETYPE);
    let l = w.with_link_raw(crate::base::addr::MAX_PFN - 1);
    assert!(l.link_raw() == crate::base::addr::MAX_PFN - 1);
    match l.as_buddy() {
        Some(b) => assert!(
            b.order == 1 && b.migratetype == MAX_MIGRATETYPE && b.zone == MAX_ZONE && b.node == MAX_NODE && !b.pcp
        ),
        None => panic!("a linked head decodes as a buddy head"),
    }
};
/// Largest node number a word holds (10 bits).
pub const MAX_NODE: u16 = 1023;
/// Largest zone index a word holds (3 bits).
pub const MAX_ZONE: u8 = 7;
/// Largest migratetype a word holds (3 bits).
pub const MAX_MIGRATETYPE: u8 = 7;

/// Inline contents of an undescribed word.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Undescribed {
    /// What the page is.
    pub subtype: Subtype,
    /// Order of the block this word heads (0 for single pages and tails).
    pub order: u8,
    /// NUMA node.
    pub node: u16,
    /// Zone index within the node.
    pub zone: u8,
}

/// Inline contents of a free buddy block's head word.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BuddyInfo {
    /// Order of the free block.
    pub order: u8,
    /// Migratetype of the free list it is on.
    pub migratetype: u8,
    /// Zone index within the node.
    pub zone: u8,
    /// NUMA node.
    pub node: u16,
    /// On a per-CPU list rather than a buddy free list (never merged while there).
    pub pcp: bool,
}

/// Inline contents of a split two-level area's word.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SplitInfo {
    /// Pages of the area that are free in the buddy lists (0..=512).
    pub free: u16,
    /// Bumped on every split, so a lockless reader can detect a table that changed under it.
    pub generation: u16,
    /// Pfn of the page holding the area's 512 words.
    pub table_pfn: u64,
}

/// Why a value cannot be encoded in a word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// A field is wider than its bits.
    FieldTooLarge(&'static str),
    /// A descriptor address is not 16-byte aligned.
    Misaligned,
}

/// A typed view of a word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageKind {
    /// No descriptor.
    Undescribed(Undescribed),
    /// Head of a free buddy block.
    Buddy(BuddyInfo),
    /// Slab page.
    Slab(DescPtr<Slab>),
    /// Anonymous folio page.
    AnonFolio(DescPtr<Folio>),
    /// Page-cache folio page.
    FileFolio(DescPtr<Folio>),
    /// Page-table page.
    PageTable(DescPtr<PtDesc>),
    /// vmalloc page.
    Vmalloc {
        /// Whether the page may be mapped to user space.
        mappable: bool,
        /// The vmalloc area descriptor.
        desc: DescPtr<VmallocDesc>,
    },
    /// page_pool page.
    NetPool(DescPtr<Netmem>),
    /// zsmalloc component page.
    Zsmalloc(DescPtr<Zspage>),
    /// z3fold page.
    Z3fold(DescPtr<Z3foldDesc>),
    /// Mappable driver memory.
    Mappable(DescPtr<MappableDesc>),
    /// A split two-level area.
    Split(SplitInfo),
    /// Bits that no encoder produces: memory corruption. Carries the raw value for reporting.
    Invalid(u64),
}

/// A loaded word value: plain data, `Copy`, encodes and decodes.
///
/// ```
/// use memdesc::memmap::word::{BuddyInfo, PageKind, Word};
/// let w = Word::buddy(BuddyInfo { order: 3, migratetype: 1, zone: 2, node: 0, pcp: false }).unwrap();
/// assert!(matches!(w.kind(), PageKind::Buddy(b) if b.order == 3));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Word(pub(crate) u64);

const fn field(v: u64, shift: u32, bits: u32) -> u64 {
    (v >> shift) & ((1 << bits) - 1)
}

impl Word {
    /// The all-zero word: an uninitialised page.
    pub const UNINIT: Word = Word(0);
    /// A tail page (its block's head describes it), node 0 zone 0.
    pub const TAIL: Word = Word(((Subtype::Tail as u64) << 4) | Tag::Undescribed as u64);

    /// The raw bits, for reporting and hashing.
    #[inline]
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// Rebuilds a word from raw bits (tests). Decoding raw bits never panics.
    #[cfg(all(test, not(loom)))]
    pub(crate) const fn from_raw(raw: u64) -> Word {
        Word(raw)
    }

    /// The tag, or `None` for an invalid tag value.
    #[inline]
    pub const fn tag(self) -> Option<Tag> {
        Tag::from_bits((self.0 & 0xF) as u8)
    }

    /// Encodes an undescribed word. A tail has no fields of its own (see
    /// [`Word::linked_tail`]): a `Tail` with a non-zero order, node or zone is refused.
    pub const fn undescribed(u: Undescribed) -> Result<Word, EncodeError> {
        if matches!(u.subtype, Subtype::Tail) && (u.order != 0 || u.node != 0 || u.zone != 0) {
            return Err(EncodeError::FieldTooLarge("tail fields"));
        }
        if u.order > MAX_INLINE_ORDER {
            return Err(EncodeError::FieldTooLarge("order"));
        }
        if u.node > MAX_NODE {
            return Err(EncodeError::FieldTooLarge("node"));
        }
        if u.zone > MAX_ZONE {
            return Err(EncodeError::FieldTooLarge("zone"));
        }
        Ok(Word(
            Tag::Undescribed as u64
                | (u.subtype as u64) << 4
                | (u.order as u64) << 8
                | (u.node as u64) << 14
                | (u.zone as u64) << 24,
        ))
    }

    /// Encodes a tail word carrying the free-list link `link` (`None`: the end of the list,
    /// which is the plain [`Word::TAIL`]). The page allocator keeps the links of free blocks of
    /// order 2 and up in the words of their second and third pages.
    ///
    /// ```
    /// use memdesc::memmap::word::{PageKind, Subtype, Word};
    /// let w = Word::linked_tail(Some(0x1234)).unwrap();
    /// assert!(w.is_tail());
    /// assert_eq!(w.tail_link(), Some(0x1234));
    /// assert!(matches!(w.kind(), PageKind::Undescribed(u) if u.subtype == Subtype::Tail && u.order == 0));
    /// assert_eq!(Word::linked_tail(None), Ok(Word::TAIL));
    /// ```
    pub const fn linked_tail(link: Option<u64>) -> Result<Word, EncodeError> {
        match link {
            None => Ok(Word::TAIL),
            Some(pfn) if pfn >= crate::base::addr::MAX_PFN => Err(EncodeError::FieldTooLarge("link")),
            Some(pfn) => Ok(Self::linked_tail_raw(pfn)),
        }
    }

    /// [`Word::linked_tail`] for the buddy lists' hot path: `link` is a pfn below `MAX_PFN`, or
    /// `u64::MAX` for none (which becomes the plain tail, as `u64::MAX + 1` wraps to 0).
    #[inline]
    pub(crate) const fn linked_tail_raw(link: u64) -> Word {
        debug_assert!(link < crate::base::addr::MAX_PFN || link == u64::MAX);
        Word(Word::TAIL.0 | link.wrapping_add(1) << LINK_SHIFT)
    }

    /// The free-list link a tail word carries; `None` for the plain tail or a word that is not
    /// a tail.
    #[inline]
    pub const fn tail_link(self) -> Option<u64> {
        if self.is_tail() && self.0 >> LINK_SHIFT != 0 {
            Some(self.tail_link_raw())
        } else {
            None
        }
    }

    /// The link of a word the caller knows to be a tail: `u64::MAX` for none.
    #[inline]
    pub(crate) const fn tail_link_raw(self) -> u64 {
        (self.0 >> LINK_SHIFT).wrapping_sub(1)
    }

    /// [`Word::undescribed`] for the page allocator's hot paths, whose fields are in range by
    /// construction (not a tail; orders below 64; node below `MAX_NODES` and the zone enum,
    /// const-asserted in `page_alloc::zone`): no range checks outside debug builds.
    #[inline(always)]
    pub(crate) const fn undescribed_in_range(u: Undescribed) -> Word {
        debug_assert!(Word::undescribed(u).is_ok());
        Word(
            Tag::Undescribed as u64
                | (u.subtype as u64) << 4
                | (u.order as u64) << 8
                | (u.node as u64) << 14
                | (u.zone as u64) << 24,
        )
    }

    /// Whether this is an undescribed word of `subtype` (one compare of the low byte).
    #[inline(always)]
    pub(crate) const fn is_undescribed(self, subtype: Subtype) -> bool {
        self.0 & 0xFF == Tag::Undescribed as u64 | (subtype as u64) << 4
    }

    /// Encodes a free buddy block head (a free order-1 block that is not on a per-CPU list
    /// gets a [`Tag::BuddyLinked`] word without a link; see the module header).
    pub const fn buddy(b: BuddyInfo) -> Result<Word, EncodeError> {
        if b.order > MAX_INLINE_ORDER {
            return Err(EncodeError::FieldTooLarge("order"));
        }
        if b.migratetype > MAX_MIGRATETYPE {
            return Err(EncodeError::FieldTooLarge("migratetype"));
        }
        if b.zone > MAX_ZONE {
            return Err(EncodeError::FieldTooLarge("zone"));
        }
        if b.node > MAX_NODE {
            return Err(EncodeError::FieldTooLarge("node"));
        }
        if b.order == 1 && !b.pcp {
            return Ok(Word::buddy_linked_zone_base(b.zone, b.node).with_linked_migratetype(b.migratetype));
        }
        Ok(Word(
            Tag::Buddy as u64
                | (b.order as u64) << 4
                | (b.migratetype as u64) << 10
                | (b.zone as u64) << 13
                | (b.node as u64) << 16
                | (b.pcp as u64) << 26,
        ))
    }

    /// [`Word::buddy`] for the buddy allocator's split and merge loops, whose fields are in
    /// range by construction (orders up to `MAX_ORDER_LIMIT`, node below `MAX_NODES`, the
    /// zone and migratetype enums; const-asserted in `page_alloc::zone`): no range checks
    /// outside debug builds.
    #[inline(always)]
    pub(crate) const fn buddy_in_range(b: BuddyInfo) -> Word {
        debug_assert!(Word::buddy(b).is_ok());
        if b.order == 1 && !b.pcp {
            return Word::buddy_linked_zone_base(b.zone, b.node).with_linked_migratetype(b.migratetype);
        }
        Word::buddy_zone_base(b.zone, b.node).with_buddy_block(b.order, b.migratetype, b.pcp)
    }

    /// The buddy word of zone type `zone` on node `node` with order 0, migratetype 0 and
    /// not per-CPU: the part of [`Word::buddy_in_range`] a region fixes, completed by
    /// [`Word::with_buddy_block`]. Fields in range as for `buddy_in_range`.
    pub(crate) const fn buddy_zone_base(zone: u8, node: u16) -> Word {
        Word(Tag::Buddy as u64 | (zone as u64) << 13 | (node as u64) << 16)
    }

    /// A [`Word::buddy_zone_base`] completed with a block's fields (fields in range as for
    /// [`Word::buddy_in_range`], which is this for every block but a free order-1 one off the
    /// per-CPU lists, whose word is [`Word::buddy_linked_zone_base`]'s): three shifts and ors.
    #[inline(always)]
    pub(crate) const fn with_buddy_block(self, order: u8, migratetype: u8, pcp: bool) -> Word {
        Word(self.0 | (order as u64) << 4 | (migratetype as u64) << 10 | (pcp as u64) << 26)
    }

    /// The [`Tag::BuddyLinked`] word of zone type `zone` on node `node` with migratetype 0
    /// and no link (fields in range as for [`Word::buddy_in_range`]).
    pub(crate) const fn buddy_linked_zone_base(zone: u8, node: u16) -> Word {
        Word(Tag::BuddyLinked as u64 | (zone as u64) << 7 | (node as u64) << 10)
    }

    /// A [`Word::buddy_linked_zone_base`] completed with the block's migratetype.
    #[inline(always)]
    pub(crate) const fn with_linked_migratetype(self, migratetype: u8) -> Word {
        Word(self.0 | (migratetype as u64) << 4)
    }

    /// This [`Tag::BuddyLinked`] word with its link replaced by `link` (a pfn below `MAX_PFN`,
    /// or `u64::MAX` for none), the other fields kept.
    #[inline(always)]
    pub(crate) const fn with_link_raw(self, link: u64) -> Word {
        debug_assert!(self.0 & 0xF == Tag::BuddyLinked as u64);
        debug_assert!(link < crate::base::addr::MAX_PFN || link == u64::MAX);
        Word(self.0 & ((1 << LINK_SHIFT) - 1) | link.wrapping_add(1) << LINK_SHIFT)
    }

    /// The free-list link a linked tail or a [`Tag::BuddyLinked`] head carries (`u64::MAX`
    /// for none): the caller knows the word is one of the two; both keep `pfn + 1` in the
    /// same 40 bits.
    #[inline(always)]
    pub(crate) const fn link_raw(self) -> u64 {
        (self.0 >> LINK_SHIFT).wrapping_sub(1)
    }

    /// Encodes a split two-level area.
    pub const fn split(s: SplitInfo) -> Result<Word, EncodeError> {
        if s.free > 1023 {
            return Err(EncodeError::FieldTooLarge("free"));
        }
        if s.generation > 1023 {
            return Err(EncodeError::FieldTooLarge("generation"));
        }
        if s.table_pfn > crate::base::addr::MAX_PFN {
            return Err(EncodeError::FieldTooLarge("table_pfn"));
        }
        Ok(Word(Tag::Split as u64 | (s.free as u64) << 4 | (s.generation as u64) << 14 | s.table_pfn << 24))
    }

    /// Encodes a pointer to a descriptor under the descriptor type's tag.
    #[inline]
    pub fn desc<T: Descriptor>(ptr: DescPtr<T>) -> Word {
        Self::desc_with_tag(ptr, T::TAG)
    }

    /// Encodes a pointer to a descriptor under one of the tags its type allows
    /// (a [`Folio`] is anon or file; a [`VmallocDesc`] is mappable or not).
    ///
    /// Returns `None` if `tag` is not one of `T`'s tags.
    #[inline]
    pub fn desc_as<T: Descriptor>(ptr: DescPtr<T>, tag: Tag) -> Option<Word> {
        T::TAGS.contains(&tag).then(|| Self::desc_with_tag(ptr, tag))
    }

    #[inline]
    fn desc_with_tag<T: Descriptor>(ptr: DescPtr<T>, tag: Tag) -> Word {
        let addr = ptr.addr() as u64;
        // DescPtr guarantees 16-byte alignment, so the tag bits are free.
        debug_assert_eq!(addr & 0xF, 0);
        Word(addr | tag as u64)
    }

    /// [`PageKind::Split`]'s contents if this is a split area's word: the two-level hot paths'
    /// decode, one tag compare instead of [`Word::kind`]'s full match.
    #[inline(always)]
    pub(crate) const fn as_split(self) -> Option<SplitInfo> {
        let w = self.0;
        if w & 0xF != Tag::Split as u64 {
            return None;
        }
        Some(SplitInfo { free: field(w, 4, 10) as u16, generation: field(w, 14, 10) as u16, table_pfn: w >> 24 })
    }

    /// Decodes the word into its typed view. Never panics, whatever the bits.
    #[inline]
    pub fn kind(self) -> PageKind {
        let w = self.0;
        let Some(tag) = self.tag() else { return PageKind::Invalid(w) };
        let addr = (w & !0xF) as usize;
        match tag {
            Tag::Undescribed => match self.as_undescribed() {
                Some(u) => PageKind::Undescribed(u),
                None => PageKind::Invalid(w),
            },
            Tag::Buddy | Tag::BuddyLinked => match self.as_buddy() {
                Some(b) => PageKind::Buddy(b),
                None => PageKind::Invalid(w),
            },
            Tag::Split => match self.as_split() {
                Some(s) => PageKind::Split(s),
                None => PageKind::Invalid(w),
            },
            _ => match DescAddr::new(addr) {
                None => PageKind::Invalid(w),
                Some(a) => match tag {
                    Tag::Slab => PageKind::Slab(a.typed()),
                    Tag::AnonFolio => PageKind::AnonFolio(a.typed()),
                    Tag::FileFolio => PageKind::FileFolio(a.typed()),
                    Tag::PageTable => PageKind::PageTable(a.typed()),
                    Tag::VmallocMappable => PageKind::Vmalloc { mappable: true, desc: a.typed() },
                    Tag::VmallocUnmappable => PageKind::Vmalloc { mappable: false, desc: a.typed() },
                    Tag::NetPool => PageKind::NetPool(a.typed()),
                    Tag::Zsmalloc => PageKind::Zsmalloc(a.typed()),
                    Tag::Z3fold => PageKind::Z3fold(a.typed()),
                    Tag::Mappable => PageKind::Mappable(a.typed()),
                    Tag::Undescribed | Tag::Buddy | Tag::BuddyLinked | Tag::Split => PageKind::Invalid(w),
                },
            },
        }
    }

    /// The descriptor address bits if the tag is a described kind.
    #[inline]
    pub fn desc_addr(self) -> Option<usize> {
        match self.tag()? {
            Tag::Undescribed | Tag::Buddy | Tag::BuddyLinked | Tag::Split => None,
            _ => Some((self.0 & !0xF) as usize),
        }
    }

    /// Shorthand: the inline contents if this is an undescribed word.
    #[inline]
    pub fn undescribed_info(self) -> Option<Undescribed> {
        self.as_undescribed()
    }

    /// [`Word::undescribed_info`] without the full decode of [`Word::kind`]: one tag compare.
    #[inline(always)]
    pub(crate) const fn as_undescribed(self) -> Option<Undescribed> {
        let w = self.0;
        if w & 0xF != Tag::Undescribed as u64 {
            return None;
        }
        match Subtype::from_bits(field(w, 4, 4) as u8) {
            // A tail's upper bits are its free-list link, not fields.
            Some(Subtype::Tail) => Some(Undescribed { subtype: Subtype::Tail, order: 0, node: 0, zone: 0 }),
            Some(subtype) => Some(Undescribed {
                subtype,
                order: field(w, 8, 6) as u8,
                node: field(w, 14, 10) as u16,
                zone: field(w, 24, 3) as u8,
            }),
            None => None,
        }
    }

    /// Shorthand: the inline contents if this is a buddy word.
    #[inline]
    pub fn buddy_info(self) -> Option<BuddyInfo> {
        self.as_buddy()
    }

    /// [`Word::buddy_info`] without the full decode of [`Word::kind`] (the buddy allocator's
    /// merge loop): one tag compare.
    #[inline(always)]
    pub(crate) const fn as_buddy(self) -> Option<BuddyInfo> {
        let w = self.0;
        if w & 0xF == Tag::BuddyLinked as u64 {
            if field(w, 20, 4) != 0 {
                return None;
            }
            return Some(BuddyInfo {
                order: 1,
                migratetype: field(w, 4, 3) as u8,
                zone: field(w, 7, 3) as u8,
                node: field(w, 10, 10) as u16,
                pcp: false,
            });
        }
        if w & 0xF != Tag::Buddy as u64 {
            return None;
        }
        Some(BuddyInfo {
            order: field(w, 4, 6) as u8,
            migratetype: field(w, 10, 3) as u8,
            zone: field(w, 13, 3) as u8,
            node: field(w, 16, 10) as u16,
            pcp: field(w, 26, 1) == 1,
        })
    }

    /// Whether this is a tail word (with or without a free-list link).
    #[inline]
    pub const fn is_tail(self) -> bool {
        self.0 & 0xF == Tag::Undescribed as u64 && field(self.0, 4, 4) == Subtype::Tail as u64
    }
}

impl core::fmt::Debug for Word {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Word({:#018x}: {:?})", self.0, self.kind())
    }
}

/// A non-zero, 16-byte-aligned address decoded from a word.
struct DescAddr(usize);

impl DescAddr {
    fn new(addr: usize) -> Option<Self> {
        (addr != 0).then_some(DescAddr(addr))
    }
    fn typed<T: Descriptor>(self) -> DescPtr<T> {
        DescPtr::from_word_addr(self.0)
    }
}

/// The page word as it sits in the memmap: one `AtomicU64`.
///
/// Writers hold the lock of whatever owns the page (the zone lock for free pages, the owner's
/// lock otherwise) and publish with release stores; lockless readers load with acquire and
/// revalidate (see [`crate::memmap::lookup`]).
#[repr(transparent)]
pub struct Page(AtomicU64);

#[cfg(not(loom))]
const _: () = assert!(core::mem::size_of::<Page>() == 8, "the page word is 8 bytes");
#[cfg(not(loom))]
const _: () = assert!(core::mem::align_of::<Page>() == 8);
// The order-0 folio plus its word must not exceed Linux's 64-byte struct page.
#[cfg(not(loom))]
const _: () = assert!(core::mem::size_of::<Folio>() + core::mem::size_of::<Page>() <= 64);

impl Page {
    /// A word holding `w`.
    #[cfg(not(loom))]
    pub const fn new(w: Word) -> Self {
        Page(AtomicU64::new(w.0))
    }

    /// A word holding `w`.
    #[cfg(loom)]
    pub fn new(w: Word) -> Self {
        Page(AtomicU64::new(w.0))
    }

    /// Loads the word (acquire: a described word's descriptor is initialised before it is
    /// published).
    #[inline]
    pub fn load(&self) -> Word {
        Word(self.0.load(Ordering::Acquire))
    }

    /// Publishes a new word (release).
    #[inline]
    pub(crate) fn store(&self, w: Word) {
        self.0.store(w.0, Ordering::Release)
    }

    /// Replaces the word only if it still holds `old`.
    #[inline]
    pub(crate) fn compare_exchange(&self, old: Word, new: Word) -> Result<Word, Word> {
        self.0.compare_exchange(old.0, new.0, Ordering::AcqRel, Ordering::Acquire).map(Word).map_err(Word)
    }

    /// Shorthand for `self.load().kind()`.
    #[inline]
    pub fn kind(&self) -> PageKind {
        self.load().kind()
    }

    /// Atomic words viewed as page words: a split two-level area's table (a page of words
    /// from `PageWords`, see [`crate::base::page_access`]) as the `Page`s it holds.
    #[inline]
    pub(crate) fn from_atomics<const N: usize>(words: &[AtomicU64; N]) -> &[Page; N] {
        // SAFETY: invariant 1: `Page` is repr(transparent) over `AtomicU64`, so the arrays have
        // the same layout, and both allow only atomic access to the words.
        unsafe { &*(words as *const [AtomicU64; N] as *const [Page; N]) }
    }
}

impl core::fmt::Debug for Page {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.load().fmt(f)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    const SUBTYPES: [Subtype; 11] = [
        Subtype::Uninit,
        Subtype::Tail,
        Subtype::Reserved,
        Subtype::HwPoison,
        Subtype::Offline,
        Subtype::Guard,
        Subtype::ZeroPage,
        Subtype::LargeKmalloc,
        Subtype::Unmappable,
        Subtype::Memmap,
        Subtype::Internal,
    ];

    #[test]
    fn undescribed_every_subtype_and_field_limit() {
        for subtype in SUBTYPES {
            for order in [0, 1, 9, 10, MAX_INLINE_ORDER] {
                for node in [0, 1, MAX_NODE] {
                    for zone in [0, 3, MAX_ZONE] {
                        let u = Undescribed { subtype, order, node, zone };
                        if subtype == Subtype::Tail && (order, node, zone) != (0, 0, 0) {
                            assert_eq!(Word::undescribed(u), Err(EncodeError::FieldTooLarge("tail fields")));
                            continue;
                        }
                        let w = Word::undescribed(u).unwrap();
                        assert_eq!(w.tag(), Some(Tag::Undescribed));
                        assert_eq!(w.kind(), PageKind::Undescribed(u));
                        assert_eq!(w.undescribed_info(), Some(u));
                        assert_eq!(w.is_tail(), subtype == Subtype::Tail);
                    }
                }
            }
        }
        let base = Undescribed { subtype: Subtype::Reserved, order: 0, node: 0, zone: 0 };
        assert_eq!(Word::undescribed(Undescribed { order: 64, ..base }), Err(EncodeError::FieldTooLarge("order")));
        assert_eq!(Word::undescribed(Undescribed { node: 1024, ..base }), Err(EncodeError::FieldTooLarge("node")));
        assert_eq!(Word::undescribed(Undescribed { zone: 8, ..base }), Err(EncodeError::FieldTooLarge("zone")));
        assert_eq!(Word::UNINIT.kind(), PageKind::Undescribed(Undescribed { subtype: Subtype::Uninit, ..base }));
        assert!(Word::TAIL.is_tail());
    }

    #[test]
    fn linked_tails_are_tails_with_a_link() {
        use crate::base::addr::MAX_PFN;
        let tail = Undescribed { subtype: Subtype::Tail, order: 0, node: 0, zone: 0 };
        for pfn in [0, 1, 4, 0x1234_5678, MAX_PFN - 1] {
            let w = Word::linked_tail(Some(pfn)).unwrap();
            assert!(w.is_tail());
            assert_eq!(w.tail_link(), Some(pfn));
            assert_eq!(w.tail_link_raw(), pfn);
            assert_eq!(w, Word::linked_tail_raw(pfn));
            assert_eq!(w.kind(), PageKind::Undescribed(tail), "a link is not an order, node or zone");
            assert_eq!(w.desc_addr(), None);
            assert_ne!(w, Word::TAIL);
        }
        assert_eq!(Word::linked_tail(None), Ok(Word::TAIL));
        assert_eq!(Word::TAIL.tail_link(), None);
        assert_eq!(Word::linked_tail_raw(u64::MAX), Word::TAIL);
        assert_eq!(Word::linked_tail(Some(MAX_PFN)), Err(EncodeError::FieldTooLarge("link")));
        assert_eq!(Word::linked_tail(Some(u64::MAX - 1)), Err(EncodeError::FieldTooLarge("link")));
        let b = Word::buddy(BuddyInfo { order: 2, migratetype: 1, zone: 2, node: 0, pcp: false }).unwrap();
        assert_eq!(b.tail_link(), None, "only tails carry links");
    }

    #[test]
    fn buddy_every_field_limit() {
        for order in [0, 5, 10, MAX_INLINE_ORDER] {
            for migratetype in 0..=MAX_MIGRATETYPE {
                for zone in [0, MAX_ZONE] {
                    for node in [0, 7, MAX_NODE] {
                        for pcp in [false, true] {
                            let b = BuddyInfo { order, migratetype, zone, node, pcp };
                            let w = Word::buddy(b).unwrap();
                            assert_eq!(w.kind(), PageKind::Buddy(b));
                            assert_eq!(w.buddy_info(), Some(b));
                            assert_eq!(w.desc_addr(), None);
                        }
                    }
                }
            }
        }
        let b = BuddyInfo { order: 0, migratetype: 0, zone: 0, node: 0, pcp: false };
        assert!(Word::buddy(BuddyInfo { order: 64, ..b }).is_err());
        assert!(Word::buddy(BuddyInfo { migratetype: 8, ..b }).is_err());
        assert!(Word::buddy(BuddyInfo { zone: 8, ..b }).is_err());
        assert!(Word::buddy(BuddyInfo { node: 1024, ..b }).is_err());
    }

    #[test]
    fn split_field_limits() {
        for free in [0, 1, 511, 512, 1023] {
            for generation in [0, 1023] {
                for table_pfn in [0, 1, crate::base::addr::MAX_PFN] {
                    let s = SplitInfo { free, generation, table_pfn };
                    assert_eq!(Word::split(s).unwrap().kind(), PageKind::Split(s));
                }
            }
        }
        let s = SplitInfo { free: 0, generation: 0, table_pfn: 0 };
        assert!(Word::split(SplitInfo { free: 1024, ..s }).is_err());
        assert!(Word::split(SplitInfo { generation: 1024, ..s }).is_err());
        assert!(Word::split(SplitInfo { table_pfn: crate::base::addr::MAX_PFN + 1, ..s }).is_err());
    }

    #[test]
    fn described_every_tag_and_extreme_addresses() {
        // Low, user-ish, kernel direct-map, and the very top of the address space.
        for addr in [0x10usize, 0x7fff_ffff_fff0, 0xffff_8880_1234_5670, 0xffff_ffff_ffff_fff0] {
            let check = |w: Word, tag: Tag| {
                assert_eq!(w.tag(), Some(tag));
                assert_eq!(w.desc_addr(), Some(addr));
                w.kind()
            };
            let p = DescPtr::<Folio>::from_word_addr(addr);
            assert_eq!(check(Word::desc(p), Tag::AnonFolio), PageKind::AnonFolio(p));
            assert_eq!(check(Word::desc_as(p, Tag::FileFolio).unwrap(), Tag::FileFolio), PageKind::FileFolio(p));
            assert_eq!(Word::desc_as(p, Tag::Slab), None, "a folio cannot be tagged slab");
            let s = DescPtr::<Slab>::from_word_addr(addr);
            assert_eq!(check(Word::desc(s), Tag::Slab), PageKind::Slab(s));
            let t = DescPtr::<PtDesc>::from_word_addr(addr);
            assert_eq!(check(Word::desc(t), Tag::PageTable), PageKind::PageTable(t));
            let v = DescPtr::<VmallocDesc>::from_word_addr(addr);
            assert_eq!(check(Word::desc(v), Tag::VmallocUnmappable), PageKind::Vmalloc { mappable: false, desc: v });
            assert_eq!(
                check(Word::desc_as(v, Tag::VmallocMappable).unwrap(), Tag::VmallocMappable),
                PageKind::Vmalloc { mappable: true, desc: v }
            );
            let n = DescPtr::<Netmem>::from_word_addr(addr);
            assert_eq!(check(Word::desc(n), Tag::NetPool), PageKind::NetPool(n));
            let z = DescPtr::<Zspage>::from_word_addr(addr);
            assert_eq!(check(Word::desc(z), Tag::Zsmalloc), PageKind::Zsmalloc(z));
            let z3 = DescPtr::<Z3foldDesc>::from_word_addr(addr);
            assert_eq!(check(Word::desc(z3), Tag::Z3fold), PageKind::Z3fold(z3));
            let m = DescPtr::<MappableDesc>::from_word_addr(addr);
            assert_eq!(check(Word::desc(m), Tag::Mappable), PageKind::Mappable(m));
        }
    }

    #[test]
    fn order1_free_heads_are_linked_words() {
        use crate::base::addr::MAX_PFN;
        for (mt, zone, node) in [(0, 0, 0), (3, 2, 1), (MAX_MIGRATETYPE, MAX_ZONE, MAX_NODE)] {
            let b = BuddyInfo { order: 1, migratetype: mt, zone, node, pcp: false };
            let w = Word::buddy(b).unwrap();
            assert_eq!(w.tag(), Some(Tag::BuddyLinked));
            assert_eq!(w, Word::buddy_in_range(b));
            assert_eq!(w.link_raw(), u64::MAX, "a new head word has no link");
            for link in [0, 2, 0x1234_5678, MAX_PFN - 1] {
                let l = w.with_link_raw(link);
                assert_eq!(l.link_raw(), link);
                assert_eq!(l.kind(), PageKind::Buddy(b), "the link leaves the fields alone");
                assert_eq!(l.with_link_raw(u64::MAX), w);
            }
            // On a per-CPU list an order-1 block keeps the plain buddy word (no links there).
            let p = Word::buddy(BuddyInfo { pcp: true, ..b }).unwrap();
            assert_eq!(p.tag(), Some(Tag::Buddy));
            assert_eq!(p.kind(), PageKind::Buddy(BuddyInfo { pcp: true, ..b }));
        }
        // The four bits between the node and the link are zero in every word an encoder makes.
        let w = Word::buddy(BuddyInfo { order: 1, migratetype: 1, zone: 1, node: 1, pcp: false }).unwrap();
        assert_eq!(Word::from_raw(w.raw() | 1 << 20).kind(), PageKind::Invalid(w.raw() | 1 << 20));
    }

    #[test]
    fn arbitrary_bits_never_panic() {
        // Unused tags, unused subtypes, and described tags with a null address are invalid.
        for tag in 14u64..16 {
            assert_eq!(Word::from_raw(tag | 0xabc0).kind(), PageKind::Invalid(tag | 0xabc0));
        }
        assert_eq!(Word::from_raw(0xF0).kind(), PageKind::Invalid(0xF0), "undescribed subtype 15");
        assert_eq!(Word::from_raw(Tag::Slab as u64).kind(), PageKind::Invalid(2), "null descriptor");
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let _ = Word::from_raw(x).kind();
        }
    }

    #[test]
    fn page_is_one_atomic_word() {
        let p = Page::new(Word::TAIL);
        assert_eq!(p.load(), Word::TAIL);
        let b = Word::buddy(BuddyInfo { order: 2, migratetype: 1, zone: 2, node: 0, pcp: false }).unwrap();
        assert_eq!(p.compare_exchange(Word::UNINIT, b), Err(Word::TAIL));
        assert_eq!(p.compare_exchange(Word::TAIL, b), Ok(Word::TAIL));
        assert_eq!(p.kind(), b.kind());
    }
}
