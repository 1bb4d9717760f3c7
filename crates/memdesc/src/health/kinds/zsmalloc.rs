//! zsmalloc component pages: moved and poisoned through the pool (the word leads to the
//! zspage, the zspage to its pool, whose lock the change is made under); handles never change.

use super::ops::{HealthKind, MigrateOp, OfflineOp, PoisonOp, Pool};
use crate::tag::Tag;

pub(super) static OPS: HealthKind = HealthKind {
    tags: &[Tag::Zsmalloc],
    migrate: MigrateOp::Pool(Pool::Zsmalloc),
    poison: PoisonOp::Pool(Pool::Zsmalloc),
    offline: OfflineOp::Migrate,
};
