//! Anon and page-cache folios: migrated (the descriptor stays, the data moves), split down to
//! the poisoned page on a memory error, migrated out of an offlined range.

use super::ops::{HealthKind, MigrateOp, OfflineOp, PoisonOp};
use crate::tag::Tag;

pub(super) static OPS: HealthKind = HealthKind {
    tags: &[Tag::AnonFolio, Tag::FileFolio],
    migrate: MigrateOp::Folio,
    poison: PoisonOp::Folio,
    offline: OfflineOp::Migrate,
};
