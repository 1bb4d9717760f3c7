//! page_pool (netmem) pages: owned by a driver's pool, never moved; on a memory error left in
//! place and their pool and mapcount reported (the driver would have to be told).

use super::ops::{HealthKind, MigrateOp, OfflineOp, PoisonOp};
use crate::desc::Netmem;
use crate::desc_ref;
use crate::health::poisoned::PoisonedKind;
use crate::memmap::kinds::desc_of;
use crate::rcu::RcuGuard;
use crate::sync::Ordering;
use crate::tag::Tag;
use crate::word::Word;

pub(super) static OPS: HealthKind = HealthKind {
    tags: &[Tag::NetPool],
    migrate: MigrateOp::Never,
    poison: PoisonOp::Report(report),
    offline: OfflineOp::Refuse,
};

fn report(g: &RcuGuard<'_>, w: Word) -> PoisonedKind {
    let (pool, mapcount) = desc_of::<Netmem>(w).map_or((0, 0), |d| {
        let d = desc_ref::rcu(g, d);
        (d.pool.load(Ordering::Acquire), d.counts.mapcount())
    });
    PoisonedKind::PagePool { pool, mapcount }
}
