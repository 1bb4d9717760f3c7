//! The vocabulary of the per-kind table: the operation values an entry picks ([`MigrateOp`],
//! [`PoisonOp`], [`OfflineOp`]) and the entry itself ([`HealthKind`]). A file of its own so
//! that the kind files and the registration in `kinds/mod.rs` both import it and neither
//! imports the other.

use crate::health::poisoned::PoisonedKind;
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
