//! z3fold pages: moved and poisoned through the pool, as zsmalloc pages.

use super::ops::{HealthKind, MigrateOp, OfflineOp, PoisonOp, Pool};
use crate::tag::Tag;

pub(super) static OPS: HealthKind = HealthKind {
    tags: &[Tag::Z3fold],
    migrate: MigrateOp::Pool(Pool::Z3fold),
    poison: PoisonOp::Pool(Pool::Z3fold),
    offline: OfflineOp::Migrate,
};
