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
mod page_table;
mod slab;
mod vmalloc;
mod z3fold;
mod zsmalloc;

use crate::hwpoison::PoisonedKind;
use crate::rcu::RcuGuard;
use crate::tag::Tag;
use crate::word::Word;

/// Which pool's own migration and poison entry points a pool page goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pool {
    /// zsmalloc (`crate::zsmalloc`).
    Zsmalloc,
    /// z3fold (`crate::z3fold`).
    Z3fold,
}

/// What migration (and compaction, which migrates) does with a page of the kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MigrateOp {
    /// Moves the folio it belongs to, descriptor staying (`migrate.rs`).
    Folio,
    /// Moves the page through its pool, under the pool's lock.
    Pool(Pool),
    /// Never moves: [`crate::migrate::MigrateError::NotMovable`].
    Never,
}

/// What the hardware-poison handler does with a page of the kind.
#[derive(Clone, Copy)]
pub(crate) enum PoisonOp {
    /// Splits the folio down to the page, unmaps and retires it (`hwpoison.rs`).
    Folio,
    /// Flags the slab; its pages are retired when it is empty (flat regions only).
    Slab,
    /// The pool replaces the page with a zeroed one; the objects on it are lost.
    Pool(Pool),
    /// Kernel or driver memory left in place; the function says what it was, from the
    /// descriptor the word names (read under the guard; the caller re-checks the word).
    Report(for<'g> fn(&'g RcuGuard<'_>, Word) -> PoisonedKind),
}

/// What offlining a range does with a page of the kind in use in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OfflineOp {
    /// Migrates it out of the range ([`HealthKind::migrate`]).
    Migrate,
    /// Refuses to offline the range.
    Refuse,
}

/// The health layer's operations for one descriptor kind.
#[derive(Clone, Copy)]
pub(crate) struct HealthKind {
    /// The tags of the words that name the kind.
    pub(crate) tags: &'static [Tag],
    /// Migration and compaction.
    pub(crate) migrate: MigrateOp,
    /// Hardware poison.
    pub(crate) poison: PoisonOp,
    /// Offlining.
    pub(crate) offline: OfflineOp,
}

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

    /// Table-driven: migration and offlining do what each page's entry says. A page of every
    /// never-moving kind at hand (slab, page table, mappable memory) is refused as
    /// `NotMovable` with its tag, and so is offlining the block around it; a folio reaches the folio
    /// mechanism (which backs off: its owner holds it).
    #[test]
    fn migration_follows_the_table() {
        use crate::desc::{DescPtr, PtDesc};
        use crate::folio::FolioKind;
        use crate::gfp::Gfp;
        use crate::migrate::MigrateError;
        use crate::offline::OfflineError;
        use crate::platform::Platform;
        let m = crate::machine::test_machine::machine(4096, crate::MemmapLayout::Flat);
        let cpu = m.cpus().claim(0).unwrap();
        let pt = m.slabs().alloc_desc::<PtDesc>(&cpu).unwrap();
        let pt_pfn = m.pages().alloc_with(&cpu, 0, Gfp::KERNEL, |_| Word::desc(DescPtr::from_ref(pt))).unwrap();
        let md = m.mappable_alloc(&cpu, 0, Gfp::KERNEL, 1).unwrap();
        let obj = m.kmalloc(&cpu, 64, Gfp::KERNEL).unwrap();
        let slab_pfn = m.platform().virt_to_pfn(obj.as_ptr()).unwrap();
        for pfn in [pt_pfn, md.flags.pfn(), slab_pfn] {
            let w = m.memmap().load(m.platform(), pfn).unwrap().word;
            let k = of_word(w).unwrap();
            assert_eq!((k.migrate, k.offline), (MigrateOp::Never, OfflineOp::Refuse), "{:?}", w.tag());
            let refused = MigrateError::NotMovable { pfn, tag: w.tag().unwrap() };
            assert_eq!(m.migrate_page(&cpu, pfn, Gfp::MOVABLE), Err(refused));
            let mo = m.config().max_order;
            let start = pfn.align_down(mo);
            let r = m.offline_range(&cpu, start, start.add(1 << mo));
            assert!(matches!(r, Err(OfflineError::Unmovable { .. })), "{:?}: {r:?}", w.tag());
        }
        let f = m.folio_alloc(&cpu, 0, Gfp::MOVABLE, FolioKind::Anon).unwrap();
        let pfn = f.flags.pfn();
        assert_eq!(of(Tag::AnonFolio).unwrap().migrate, MigrateOp::Folio);
        assert_eq!(m.migrate_page(&cpu, pfn, Gfp::MOVABLE), Err(MigrateError::Busy(pfn)), "its owner holds it");
        assert_eq!(m.folio_put(&cpu, f), Ok(true));
        m.kfree(&cpu, obj).unwrap();
    }
}
