//! Page-table pages: never move; a memory error on one cannot be recovered (left in place,
//! reported).

use super::ops::{HealthKind, MigrateOp, OfflineOp, PoisonOp};
use crate::health::poisoned::PoisonedKind;
use crate::rcu::RcuGuard;
use crate::tag::Tag;
use crate::word::Word;

pub(super) static OPS: HealthKind = HealthKind {
    tags: &[Tag::PageTable],
    migrate: MigrateOp::Never,
    poison: PoisonOp::Report(report),
    offline: OfflineOp::Refuse,
};

fn report(_: &RcuGuard<'_>, _: Word) -> PoisonedKind {
    PoisonedKind::PageTable
}
