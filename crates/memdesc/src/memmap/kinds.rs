//! The memmap layer's half of the per-kind operations table (issue 13, item 4): for every tag
//! that names a descriptor, the facts the lower layers need about that kind —
//!
//! - **the mappability rule** ([`MapRule`]): whether a page of the kind may be mapped into user
//!   space, into kernel space only, or never (read by `mm::mappable::mappability`);
//! - **the checker's block function** ([`KindInfo::block`]): reads the descriptor a word names
//!   under RCU, says whether it looks alive, and gives the `DescFlags` whose pfn and order are
//!   the block it claims (read by `machine::check::check_descriptors`), with the class the
//!   checker counts it under ([`BlockClass`]).
//!
//! The health layer's half (what migrate, poison and offline do per kind) is
//! `health::kinds`, one file per kind. Adding a descriptor kind = its tag and layout here in
//! the memmap (`tag.rs`, `desc.rs`), one [`KindInfo`] entry in [`KINDS`], one file under
//! `health/kinds/` and its one registration line there. Nothing else matches on the kind.
//!
//! Words that name no descriptor (free buddy heads, undescribed pages, split area words,
//! corrupt bits) are the page allocator's; they have no entry, and the callers handle them
//! with the allocator's own words.

use crate::base::rcu::RcuGuard;
use crate::memmap::desc::{
    DescFlags, DescPtr, Descriptor, Folio, MappableDesc, Netmem, PtDesc, Slab, VmallocDesc, Z3foldDesc,
};
use crate::memmap::desc_ref;
use crate::memmap::tag::Tag;
use crate::memmap::word::Word;

/// Where a page of a kind may be mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapRule {
    /// Into any address space (its descriptor has the shared refcount and mapcount).
    User,
    /// Into kernel address spaces only.
    KernelOnly,
    /// Never.
    Never,
}

/// Under which total the descriptor checker counts a kind's blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockClass {
    /// [`crate::machine::check::DescReport::slabs`].
    Slab,
    /// [`crate::machine::check::DescReport::folios`].
    Folio,
    /// [`crate::machine::check::DescReport::others`].
    Other,
}

/// What the checker's block function read from the descriptor a word names.
#[derive(Clone, Copy)]
pub enum BlockState<'g> {
    /// The kind's pages are not one aligned block (zsmalloc: its pool verifies them).
    NotABlock,
    /// A live descriptor at `addr`; `flags` give the block (first pfn, order) it claims.
    Live {
        /// The descriptor's address.
        addr: usize,
        /// Its flags word.
        flags: &'g DescFlags,
    },
    /// A descriptor in a state no live one has: what is wrong.
    Dead(&'static str),
}

/// The memmap layer's facts about one descriptor kind (one tag).
#[derive(Clone, Copy)]
pub struct KindInfo {
    /// The tag of the words that name the kind.
    pub tag: Tag,
    /// Where its pages may be mapped.
    pub map: MapRule,
    /// Under which total the checker counts it.
    pub class: BlockClass,
    /// The checker's read of the descriptor `word` names (`word` carries [`KindInfo::tag`]).
    pub block: for<'g> fn(&'g RcuGuard<'_>, Word) -> BlockState<'g>,
}

impl core::fmt::Debug for KindInfo {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KindInfo").field("tag", &self.tag).field("map", &self.map).field("class", &self.class).finish()
    }
}

/// Every descriptor kind, one entry per tag.
pub static KINDS: [KindInfo; 10] = [
    KindInfo { tag: Tag::Slab, map: MapRule::Never, class: BlockClass::Slab, block: slab_block },
    KindInfo { tag: Tag::AnonFolio, map: MapRule::User, class: BlockClass::Folio, block: folio_block },
    KindInfo { tag: Tag::FileFolio, map: MapRule::User, class: BlockClass::Folio, block: folio_block },
    KindInfo { tag: Tag::PageTable, map: MapRule::Never, class: BlockClass::Other, block: flags_block::<PtDesc> },
    KindInfo {
        tag: Tag::VmallocMappable,
        map: MapRule::User,
        class: BlockClass::Other,
        block: flags_block::<VmallocDesc>,
    },
    KindInfo {
        tag: Tag::VmallocUnmappable,
        map: MapRule::KernelOnly,
        class: BlockClass::Other,
        block: flags_block::<VmallocDesc>,
    },
    KindInfo { tag: Tag::NetPool, map: MapRule::User, class: BlockClass::Other, block: netmem_block },
    KindInfo { tag: Tag::Zsmalloc, map: MapRule::Never, class: BlockClass::Other, block: zspage_block },
    KindInfo { tag: Tag::Z3fold, map: MapRule::Never, class: BlockClass::Other, block: flags_block::<Z3foldDesc> },
    KindInfo { tag: Tag::Mappable, map: MapRule::User, class: BlockClass::Other, block: mappable_block },
];

/// Index of each tag's entry in [`KINDS`] (`u8::MAX`: none), built once at compile time.
static BY_TAG: [u8; 16] = {
    let mut t = [u8::MAX; 16];
    let mut i = 0;
    while i < KINDS.len() {
        t[KINDS[i].tag as usize] = i as u8;
        i += 1;
    }
    t
};

/// The entry of the kind whose words carry `tag`; `None` for the page allocator's own tags
/// (buddy, undescribed, split).
#[inline]
pub fn kind_of(tag: Tag) -> Option<&'static KindInfo> {
    KINDS.get(BY_TAG[tag as usize] as usize)
}

/// The entry of the kind `word` names; `None` for a word that names no descriptor.
#[inline]
pub fn kind_of_word(word: Word) -> Option<&'static KindInfo> {
    word.tag().and_then(kind_of)
}

/// The `T` descriptor `word` names, if its tag is one of `T`'s.
#[inline]
pub fn desc_of<T: Descriptor>(word: Word) -> Option<DescPtr<T>> {
    let tag = word.tag()?;
    if !T::TAGS.contains(&tag) {
        return None;
    }
    word.desc_addr().map(DescPtr::from_word_addr)
}

fn slab_block<'g>(g: &'g RcuGuard<'_>, w: Word) -> BlockState<'g> {
    let Some(d) = desc_of::<Slab>(w) else { return BlockState::NotABlock };
    let s = desc_ref::rcu(g, d);
    if s.inuse() > s.objects() || s.cache_addr() == 0 {
        return BlockState::Dead("slab in use beyond its objects");
    }
    BlockState::Live { addr: d.addr(), flags: &s.flags }
}

fn folio_block<'g>(g: &'g RcuGuard<'_>, w: Word) -> BlockState<'g> {
    let Some(d) = desc_of::<Folio>(w) else { return BlockState::NotABlock };
    let f = desc_ref::rcu(g, d);
    if f.counts.refcount() == 0 {
        return BlockState::Dead("folio with no reference");
    }
    BlockState::Live { addr: d.addr(), flags: &f.flags }
}

fn netmem_block<'g>(g: &'g RcuGuard<'_>, w: Word) -> BlockState<'g> {
    let Some(d) = desc_of::<Netmem>(w) else { return BlockState::NotABlock };
    let n = desc_ref::rcu(g, d);
    if n.pool() == 0 {
        return BlockState::Dead("netmem of no pool");
    }
    BlockState::Live { addr: d.addr(), flags: &n.flags }
}

fn mappable_block<'g>(g: &'g RcuGuard<'_>, w: Word) -> BlockState<'g> {
    let Some(d) = desc_of::<MappableDesc>(w) else { return BlockState::NotABlock };
    let m = desc_ref::rcu(g, d);
    if m.counts.refcount() == 0 {
        return BlockState::Dead("mappable memory with no reference");
    }
    BlockState::Live { addr: d.addr(), flags: &m.flags }
}

fn zspage_block<'g>(_: &'g RcuGuard<'_>, _: Word) -> BlockState<'g> {
    // A zspage's pages are not one aligned block: `ZsPool::verify` checks them.
    BlockState::NotABlock
}

/// The kinds whose only check is the block their flags claim (page tables, vmalloc, z3fold).
trait FlagsOnly: Descriptor + 'static {
    fn flags(&self) -> &DescFlags;
}
impl FlagsOnly for PtDesc {
    fn flags(&self) -> &DescFlags {
        &self.flags
    }
}
impl FlagsOnly for VmallocDesc {
    fn flags(&self) -> &DescFlags {
        &self.flags
    }
}
impl FlagsOnly for Z3foldDesc {
    fn flags(&self) -> &DescFlags {
        &self.flags
    }
}

fn flags_block<'g, T: FlagsOnly + 'static>(g: &'g RcuGuard<'_>, w: Word) -> BlockState<'g> {
    let Some(d) = desc_of::<T>(w) else { return BlockState::NotABlock };
    BlockState::Live { addr: d.addr(), flags: desc_ref::rcu(g, d).flags() }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// Every tag that names a descriptor has exactly one entry, and the page allocator's
    /// own tags have none.
    #[test]
    fn every_descriptor_tag_has_one_entry() {
        for bits in 0..16u8 {
            let Some(tag) = Tag::from_bits(bits) else { continue };
            let entries = KINDS.iter().filter(|k| k.tag == tag).count();
            let allocator = matches!(tag, Tag::Undescribed | Tag::Buddy | Tag::BuddyLinked | Tag::Split);
            assert_eq!(entries, usize::from(!allocator), "{tag:?}");
            assert_eq!(kind_of(tag).map(|k| k.tag), (!allocator).then_some(tag));
        }
    }

    /// The mappability rule as a table: exactly the kinds with the shared counts map into
    /// user space, unmappable vmalloc into kernel space only.
    #[test]
    fn map_rules() {
        let user: std::vec::Vec<Tag> = KINDS.iter().filter(|k| k.map == MapRule::User).map(|k| k.tag).collect();
        assert_eq!(user, [Tag::AnonFolio, Tag::FileFolio, Tag::VmallocMappable, Tag::NetPool, Tag::Mappable]);
        assert_eq!(kind_of(Tag::VmallocUnmappable).unwrap().map, MapRule::KernelOnly);
        for t in [Tag::Slab, Tag::PageTable, Tag::Zsmalloc, Tag::Z3fold] {
            assert_eq!(kind_of(t).unwrap().map, MapRule::Never, "{t:?}");
        }
        assert!(kind_of_word(Word::TAIL).is_none());
    }
}
