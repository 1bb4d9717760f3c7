//! The health layer's half of the per-kind operations table (issue 13, item 4): what
//! migration (and so compaction), hardware-poison handling and offlining do with a page of
//! each descriptor kind. One file per kind holds its [`HealthKind`]; [`KINDS`] registers them.
//! The lower layers' half (the mappability rule, the checker's block function) is
//! [`crate::memmap::kinds`].
//!
//! The entries are data plus plain functions: the mechanisms that need the whole machine
//! (migrating a folio, splitting and retiring it, poisoning a slab, a pool's own migration and
//! poison entry points) are written once in `migrate.rs` / `hwpoison.rs` and picked here by
//! an operation value ([`MigrateOp`], [`PoisonOp`], [`OfflineOp`]); what is particular to one
//! kind and needs only its descriptor (what a poison report says about a page left in place)
//! is a function in the kind's file.
//!
//! Adding a kind: its tag and descriptor in the memmap, its [`crate::memmap::kinds::KindInfo`]
//! entry, a file here with its `OPS`, and one line in [`KINDS`]. The tests below check that
//! every descriptor tag has exactly one entry in both tables.

mod folio;
mod mappable;
mod net_pool;
mod ops;
mod page_table;
mod slab;
mod vmalloc;
mod z3fold;
mod zsmalloc;

use crate::tag::Tag;
use crate::word::Word;
pub(crate) use ops::{HealthKind, MigrateOp, OfflineOp, PoisonOp, Pool};

/// The registration: every descriptor kind's operations.
static KINDS: [&HealthKind; 8] = [
    &folio::OPS,
    &slab::OPS,
    &page_table::OPS,
    &vmalloc::OPS,
    &net_pool::OPS,
    &zsmalloc::OPS,
    &z3fold::OPS,
    &mappable::OPS,
];

/// The operations of the kind whose words carry `tag`; `None` for the page allocator's own
/// tags (buddy, undescribed, split).
pub(crate) fn of(tag: Tag) -> Option<&'static HealthKind> {
    KINDS.iter().copied().find(|k| k.tags.contains(&tag))
}

/// The operations of the kind `word` names; `None` for a word that names no descriptor.
#[inline]
pub(crate) fn of_word(word: Word) -> Option<&'static HealthKind> {
    word.tag().and_then(of)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::memmap::kinds::kind_of;

    /// Every tag that names a descriptor has exactly one health entry (and one memmap entry),
    /// and the page allocator's tags have none.
    #[test]
    fn every_descriptor_tag_has_one_entry() {
        for bits in 0..16u8 {
            let Some(tag) = Tag::from_bits(bits) else { continue };
            let n = KINDS.iter().filter(|k| k.tags.contains(&tag)).count();
            assert_eq!(n == 1, kind_of(tag).is_some(), "{tag:?}: health and memmap tables agree");
            assert!(n <= 1, "{tag:?} registered twice");
        }
        for k in KINDS {
            assert!(!k.tags.is_empty());
        }
    }

    /// Offlining migrates exactly the kinds migration can move, and the pool kinds move and
    /// are poisoned through their own pool.
    #[test]
    fn offline_follows_migration() {
        for k in KINDS {
            let moves = k.migrate != MigrateOp::Never;
            assert_eq!(k.offline == OfflineOp::Migrate, moves, "{:?}", k.tags);
            if let MigrateOp::Pool(p) = k.migrate {
                assert!(matches!(k.poison, PoisonOp::Pool(q) if q == p), "{:?}", k.tags);
            }
            assert_eq!(k.migrate == MigrateOp::Folio, matches!(k.poison, PoisonOp::Folio), "{:?}", k.tags);
        }
        let movable: std::vec::Vec<Tag> =
            KINDS.iter().filter(|k| k.migrate != MigrateOp::Never).flat_map(|k| k.tags.iter().copied()).collect();
        assert_eq!(movable, [Tag::AnonFolio, Tag::FileFolio, Tag::Zsmalloc, Tag::Z3fold]);
    }
}
