//! vmalloc pages (mappable or not): never move (their kernel mappings are fixed); a memory
//! error is kernel memory that cannot be recovered, as in Linux: left in place, the area and
//! the page's index reported.

use super::ops::{HealthKind, MigrateOp, OfflineOp, PoisonOp};
use crate::desc::VmallocDesc;
use crate::desc_ref;
use crate::health::poisoned::PoisonedKind;
use crate::memmap::kinds::desc_of;
use crate::rcu::RcuGuard;
use crate::tag::Tag;
use crate::word::Word;

pub(super) static OPS: HealthKind = HealthKind {
    tags: &[Tag::VmallocMappable, Tag::VmallocUnmappable],
    migrate: MigrateOp::Never,
    poison: PoisonOp::Report(report),
    offline: OfflineOp::Refuse,
};

fn report(g: &RcuGuard<'_>, w: Word) -> PoisonedKind {
    let mappable = w.tag() == Some(Tag::VmallocMappable);
    let (area, index) = desc_of::<VmallocDesc>(w).map_or((0, 0), |d| {
        let d = desc_ref::rcu(g, d);
        (d.area(), d.index())
    });
    PoisonedKind::Vmalloc { area, index, mappable }
}
