//! What may be mapped, and mappable driver memory.
//!
//! **The mappability rule.** [`mappability`] decides from a page's word whether it may be
//! mapped into an address space of a given kind: anon and file folios, `Mappable` driver
//! memory, `VmallocMappable` and `NetPool` pages (a kernel `Mm` also takes
//! `VmallocUnmappable`). Anything else — slab, page-table, zsmalloc, z3fold, unmappable
//! vmalloc, raw, reserved or free memory — is refused with [`crate::pgtable::MapError::Unmappable`]
//! naming the kind ([`UnmappableKind`]). [`PhysMem::user_page_of`](crate::PhysMem::user_page_of) and
//! [`crate::pgtable::MmRef::map_user_page`] (the [`UserPage`] token, which mappable vmalloc
//! handles also make), vmalloc's kernel and user mappings and page_pool pages all go through it.
//!
//! **Mappable driver memory:** blocks of any order described by one [`MappableDesc`] (flags,
//! refcount and mapcount at the offsets every mappable kind shares, owner), which drivers hand
//! to user space with [`crate::pgtable::MmRef::map_mappable`].
//!
//! Allocation stamps every page word (or the area words of a two-level region) with the
//! descriptor under `Tag::Mappable`; the last put ([`PhysMem::mappable_put`](crate::PhysMem::mappable_put) of a
//! [`MappableRef`], or the raw [`PhysMem::mappable_put_raw`](crate::PhysMem::mappable_put_raw)) resets the words,
//! returns the descriptor to its TYPESAFE_BY_RCU cache and the pages to the buddy allocator.
//! Each page-table entry mapping the memory holds a reference, so the memory outlives its
//! mappings. Misuse (a put without a reference, a last put while mapped, a descriptor that no
//! longer owns its pages) is refused with a [`MappableError`] and changes nothing.
//!
//! This module touches only the words of the memory it allocates and its descriptors.

use super::Mms;
use crate::addr::Pfn;
use crate::cpu::Cpu;
use crate::desc::{DescPtr, MappableDesc};
use crate::gfp::Gfp;
use crate::page_alloc::AllocError;
use crate::platform::Platform;
use crate::sync::Ordering;
use crate::word::{PageKind, Subtype, Tag, Word};

use super::mmap::MmKind;
use super::pgtable::MapError;

/// Why a mappable-memory operation was refused. Nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MappableError {
    /// A put of a descriptor with no references (already freed).
    NoReference,
    /// The last reference would go while page-table entries still map the memory.
    Mapped(u32),
    /// The descriptor does not describe its pages any more (a stale handle).
    NotOwner,
}

impl core::fmt::Display for MappableError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MappableError::NoReference => write!(f, "put of mappable memory with no references"),
            MappableError::Mapped(n) => write!(f, "mappable memory still mapped by {n} entries"),
            MappableError::NotOwner => write!(f, "descriptor no longer describes its pages"),
        }
    }
}

impl core::error::Error for MappableError {}

/// One reference to mappable driver memory, from [`PhysMem::mappable_alloc`](crate::PhysMem::mappable_alloc) or
/// [`PhysMem::mappable_get`](crate::PhysMem::mappable_get): [`PhysMem::mappable_put`](crate::PhysMem::mappable_put) consumes it. Not `Clone` (take another
/// reference with `mappable_get`); dropping it leaks the reference, so the memory is never
/// freed, never freed under another holder.
#[must_use = "dropping a MappableRef leaks its reference; put it with PhysMem::mappable_put"]
pub struct MappableRef<'m> {
    desc: &'m MappableDesc,
}

impl<'m> MappableRef<'m> {
    /// The descriptor.
    #[inline]
    pub fn desc(&self) -> &'m MappableDesc {
        self.desc
    }
    /// Gives up the handle for the descriptor; the reference stays held, to be put with the
    /// raw [`PhysMem::mappable_put_raw`](crate::PhysMem::mappable_put_raw) (or made a handle again with
    /// [`MappableRef::from_raw`]).
    #[inline]
    pub fn into_raw(self) -> &'m MappableDesc {
        self.desc
    }
    /// The handle of a reference the caller owns (the body of [`MappableRef::from_raw`], in
    /// `machine/raw.rs`): the caller hands its one reference to `desc` to the handle.
    #[inline]
    pub(crate) fn new_owned(desc: &'m MappableDesc) -> MappableRef<'m> {
        MappableRef { desc }
    }
}

impl core::ops::Deref for MappableRef<'_> {
    type Target = MappableDesc;
    #[inline]
    fn deref(&self) -> &MappableDesc {
        self.desc
    }
}

impl PartialEq for MappableRef<'_> {
    fn eq(&self, other: &Self) -> bool {
        core::ptr::eq(self.desc, other.desc)
    }
}

impl core::fmt::Debug for MappableRef<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "MappableRef(pfn {}, order {})", self.desc.flags.pfn(), self.desc.flags.order())
    }
}

impl<'a, P: Platform> Mms<'a, P> {
    /// Allocates `2^order` pages of driver memory that may be mapped to user space, with one
    /// reference; `owner` is the driver object's address (informational).
    pub(crate) fn mappable_alloc(
        &self,
        cpu: &Cpu<'_>,
        order: u32,
        gfp: Gfp,
        owner: usize,
    ) -> Result<MappableRef<'a>, AllocError> {
        let d = self.slabs.alloc_desc::<MappableDesc>(cpu)?;
        let pfn = match self.pages.alloc_internal(cpu, order, gfp) {
            Ok(p) => p,
            Err(e) => {
                self.slabs.free_desc(cpu, d);
                return Err(e);
            }
        };
        d.flags.init(0, order, pfn);
        d.counts.mapcount.store(0, Ordering::Relaxed);
        d.owner.store(owner, Ordering::Relaxed);
        d.counts.refcount.store(1, Ordering::Release);
        self.pages.stamp_block(pfn, order, Word::desc(DescPtr::from_ref(d)));
        Ok(MappableRef { desc: d })
    }

    /// Takes another reference; refused if there is none (the memory is free). Safe: it only
    /// adds a count to memory that is live, and the new reference is the caller's.
    pub(crate) fn mappable_get<'m>(&self, d: &'m MappableDesc) -> Result<MappableRef<'m>, MappableError> {
        if d.counts.try_get() {
            Ok(MappableRef { desc: d })
        } else {
            Err(MappableError::NoReference)
        }
    }

    /// Puts the reference `r` holds; the last one frees the memory. Returns whether it was
    /// freed. A refused put (see [`PhysMem::mappable_put_raw`](crate::PhysMem::mappable_put_raw)) keeps the reference, leaked.
    pub(crate) fn mappable_put(&self, cpu: &Cpu<'_>, r: MappableRef<'_>) -> Result<bool, MappableError> {
        // A MappableRef holds one reference (its invariant), given up here.
        self.mappable_put_owned(cpu, r.desc)
    }

    fn mappable_owns(&self, d: &MappableDesc) -> bool {
        self.pages
            .memmap()
            .load(self.pages.platform(), d.flags.pfn())
            .is_some_and(|v| v.word.desc_addr() == Some(d as *const MappableDesc as usize))
    }

    /// Drops a reference **the caller owns** (a [`MappableRef`]'s, or one a page-table entry
    /// held); the last one frees the memory. Returns whether it was freed. Checked: a
    /// descriptor with no reference left, one that is not this machine's live descriptor of its
    /// block, and the last put of mapped memory are refused. The body of the raw
    /// [`PhysMem::mappable_put_raw`](crate::PhysMem::mappable_put_raw) (`machine/raw.rs`).
    pub(crate) fn mappable_put_owned(&self, cpu: &Cpu<'_>, d: &MappableDesc) -> Result<bool, MappableError> {
        let mut cur = d.counts.refcount.load(Ordering::Acquire);
        loop {
            if cur == 0 {
                return Err(MappableError::NoReference);
            }
            if !self.mappable_owns(d) {
                return Err(MappableError::NotOwner);
            }
            if cur == 1 {
                let m = d.counts.mapcount();
                if m != 0 {
                    return Err(MappableError::Mapped(m));
                }
            }
            match d.counts.refcount.compare_exchange_weak(cur, cur - 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        if cur > 1 {
            return Ok(false);
        }
        let (pfn, order) = (d.flags.pfn(), d.flags.order());
        self.pages.stamp_block(pfn, order, Word::TAIL);
        let rm = self.pages.memmap().region_map(self.pages.memmap().region_index(pfn).expect("mappable pfn"));
        self.slabs.free_desc(cpu, d);
        self.pages.free_claimed(cpu, rm, pfn, order);
        Ok(true)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    // Exercised on the simulated machine in memdesc-host/tests/mm.rs (the core crate has no
    // machine of its own); the error type's text is checked here.
    use super::*;

    #[test]
    fn errors_name_the_misuse() {
        use std::string::ToString;
        assert!(MappableError::Mapped(3).to_string().contains('3'));
        assert!(MappableError::NoReference.to_string().contains("no references"));
    }
}

/// The kind of memory a refused mapping named.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnmappableKind {
    /// No word: outside every memmap region.
    NoPage,
    /// A page of slab memory.
    Slab,
    /// A page-table page.
    PageTable,
    /// Unmappable vmalloc memory.
    VmallocUnmappable,
    /// A zsmalloc page.
    Zsmalloc,
    /// A z3fold page.
    Z3fold,
    /// Free memory.
    Free,
    /// Undescribed memory of this subtype (raw, reserved, tail of a raw block, …).
    Undescribed(Subtype),
    /// A split two-level area word or corrupt bits.
    Invalid,
    /// A mappable kind that this VMA does not take (e.g. a folio in a pfn VMA).
    WrongVma(Tag),
}

/// **The one mappability rule**: may a page whose word is `word` be mapped into an address
/// space of kind `space`? Every path that installs an entry for a page by pfn
/// ([`MmRef::map_pfn`](super::mmap::MmRef::map_pfn),
/// [`MmRef::map_user_page`](super::mmap::MmRef::map_user_page), [`PhysMem::user_page_of`](crate::PhysMem::user_page_of),
/// vmalloc's kernel and user mappings) decides through this function, and nothing else does.
///
/// Accepted (the returned tag): anon and file folios, mappable driver memory, mappable vmalloc
/// pages and page-pool (netmem) pages — every kind with refcount and mapcount at the shared
/// offsets — and, in a kernel space only, unmappable vmalloc pages. Refused, with the kind:
/// slab, page-table, unmappable vmalloc (user space), zsmalloc and z3fold pages, free blocks,
/// every undescribed subtype, split area words and corrupt words.
///
/// ```
/// use memdesc::pgtable::{mappability, MmKind, UnmappableKind};
/// use memdesc::memmap::word::Word;
/// // A tail word (a page inside a raw block) is never mappable.
/// assert!(matches!(mappability(Word::TAIL, MmKind::User), Err(UnmappableKind::Undescribed(_))));
/// ```
pub fn mappability(word: Word, space: MmKind) -> Result<Tag, UnmappableKind> {
    use crate::memmap::kinds::{kind_of_word, MapRule};
    if let Some(k) = kind_of_word(word) {
        return match k.map {
            MapRule::User => Ok(k.tag),
            MapRule::KernelOnly if space == MmKind::Kernel => Ok(k.tag),
            MapRule::KernelOnly | MapRule::Never => Err(match k.tag {
                Tag::Slab => UnmappableKind::Slab,
                Tag::PageTable => UnmappableKind::PageTable,
                Tag::VmallocUnmappable => UnmappableKind::VmallocUnmappable,
                Tag::Zsmalloc => UnmappableKind::Zsmalloc,
                Tag::Z3fold => UnmappableKind::Z3fold,
                t => UnmappableKind::WrongVma(t),
            }),
        };
    }
    // The page allocator's own words.
    match word.kind() {
        PageKind::Buddy(_) => Err(UnmappableKind::Free),
        PageKind::Undescribed(u) => Err(UnmappableKind::Undescribed(u.subtype)),
        _ => Err(UnmappableKind::Invalid),
    }
}

/// Proof that a page passed [`mappability`] for user space when it was made: the token
/// [`MmRef::map_user_page`](super::mmap::MmRef::map_user_page) takes. Made only by
/// [`PhysMem::user_page_of`](crate::PhysMem::user_page_of) (from the word) and by `VmArea<Mappable>::user_page` (from the
/// handle's type; an unmappable area has no such method). The mapping re-checks the word, so
/// a token kept past its page's free is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserPage {
    pub(super) pfn: Pfn,
    pub(super) tag: Tag,
}

impl UserPage {
    /// A token for a page whose kind is known from a typed handle (crate-internal).
    #[cfg(feature = "vmalloc")]
    pub(crate) fn new(pfn: Pfn, tag: Tag) -> Self {
        UserPage { pfn, tag }
    }
    /// The page.
    pub fn pfn(&self) -> Pfn {
        self.pfn
    }
    /// The kind of memory it is.
    pub fn tag(&self) -> Tag {
        self.tag
    }
}

impl<'a, P: Platform> Mms<'a, P> {
    /// Decides by [`mappability`] whether the page at `pfn` may be mapped into user space, and
    /// returns the token for [`MmRef::map_user_page`](super::mmap::MmRef::map_user_page);
    /// refused with [`MapError::Unmappable`] naming the kind (a free tail is reported as `Free`).
    pub(crate) fn user_page_of(&self, pfn: Pfn) -> Result<UserPage, MapError> {
        let (_, tag) = self.classify_page(MmKind::User, pfn)?;
        Ok(UserPage { pfn, tag })
    }
}
