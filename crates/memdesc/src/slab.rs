//! The slab descriptor: what every page of a slab points to (owning cache, freelist, object
//! counts, partial-list links). Its layout keeps flags first like every flagged descriptor.

use crate::desc::{DescFlags, Descriptor, ListLinks};
use crate::sync::{AtomicU32, AtomicUsize};
use crate::word::Tag;

/// A slab: the descriptor every page of a slab points to.
#[repr(C, align(16))]
pub struct Slab {
    /// Flags, order and pfn.
    pub flags: DescFlags,
    pub(crate) cache: AtomicUsize,
    pub(crate) freelist: AtomicUsize,
    pub(crate) inuse: AtomicU32,
    pub(crate) objects: AtomicU32,
    pub(crate) list: ListLinks,
}

// SAFETY: 16-byte aligned (repr), every field atomic, allocated only from the slab-descriptor
// cache, which is TYPESAFE_BY_RCU.
unsafe impl Descriptor for Slab {
    const TAG: Tag = Tag::Slab;
    const TAGS: &'static [Tag] = &[Tag::Slab];
}
