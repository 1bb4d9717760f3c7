//! Mappable driver memory: owned by a driver, never moved; on a memory error left in place and
//! its owner, order and mapcount reported.

use super::ops::{HealthKind, MigrateOp, OfflineOp, PoisonOp};
use crate::desc::MappableDesc;
use crate::desc_ref;
use crate::health::poisoned::PoisonedKind;
use crate::memmap::kinds::desc_of;
use crate::rcu::RcuGuard;
use crate::tag::Tag;
use crate::word::Word;

pub(super) static OPS: HealthKind = HealthKind {
    tags: &[Tag::Mappable],
    migrate: MigrateOp::Never,
    poison: PoisonOp::Report(report),
    offline: OfflineOp::Refuse,
};

fn report(g: &RcuGuard<'_>, w: Word) -> PoisonedKind {
    let (owner, order, mapcount) = desc_of::<MappableDesc>(w).map_or((0, 0, 0), |d| {
        let d = desc_ref::rcu(g, d);
        (d.owner(), d.flags.order(), d.counts.mapcount())
    });
    PoisonedKind::Mappable { owner, order, mapcount }
}
