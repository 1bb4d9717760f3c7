//! Slab pages: never move (objects are referenced by address); a memory error flags the slab
//! so it hands out no more objects and is retired when empty.

use super::ops::{HealthKind, MigrateOp, OfflineOp, PoisonOp};
use crate::tag::Tag;

pub(super) static OPS: HealthKind =
    HealthKind { tags: &[Tag::Slab], migrate: MigrateOp::Never, poison: PoisonOp::Slab, offline: OfflineOp::Refuse };
