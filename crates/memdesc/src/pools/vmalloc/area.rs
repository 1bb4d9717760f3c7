//! The types of a vmalloc area: the typed handle a caller holds ([`VmArea`] of kind
//! [`Mappable`] or [`Unmappable`]), the record the space keeps per area in its slab cache
//! (linked in address order under the space lock), and where an address falls among them.
//! The space that hands them out and walks the records is [`super::VmallocSpace`].

use core::marker::PhantomData;

use crate::addr::PAGE_SIZE;
use crate::slab::{CacheObj, KArray};
use crate::word::Tag;

mod sealed {
    pub trait Sealed {}
}

/// Which kind of vmalloc area a handle names: [`Mappable`] or [`Unmappable`].
pub trait AreaKind: sealed::Sealed {
    /// The tag the area's page words carry.
    const TAG: Tag;
}

/// Marker: the area's pages may be mapped into user space (Linux's `vmalloc_user`).
#[derive(Debug)]
pub enum Mappable {}
/// Marker: the area's pages are kernel-only (plain `vmalloc`).
#[derive(Debug)]
pub enum Unmappable {}
impl sealed::Sealed for Mappable {}
impl sealed::Sealed for Unmappable {}
impl AreaKind for Mappable {
    const TAG: Tag = Tag::VmallocMappable;
}
impl AreaKind for Unmappable {
    const TAG: Tag = Tag::VmallocUnmappable;
}

/// A vmalloc area, typed by its kind. It is a name (address, size, identity), not a borrow:
/// every access goes through the [`VmallocSpace`](super::VmallocSpace), which checks it is still live.
#[derive(Debug)]
pub struct VmArea<K: AreaKind> {
    pub(super) va: usize,
    pub(super) nr_pages: usize,
    pub(super) id: u64,
    pub(super) _kind: PhantomData<K>,
}

impl<K: AreaKind> VmArea<K> {
    /// Gives up the handle for the area's first address; free it with the raw
    /// [`VmallocSpace::vfree`](super::VmallocSpace::vfree).
    pub fn into_raw(self) -> usize {
        self.va
    }
    /// First virtual address.
    pub fn addr(&self) -> usize {
        self.va
    }
    /// Size in bytes (whole pages).
    pub fn size(&self) -> usize {
        self.nr_pages * PAGE_SIZE
    }
    /// Number of pages.
    pub fn nr_pages(&self) -> usize {
        self.nr_pages
    }
}

/// One area's record, in the space's slab cache. Only read or written under the space lock
/// while linked; the list owns it (each record its successor).
pub(super) struct VmapArea<'m> {
    pub(super) va: usize,
    pub(super) nr_pages: usize,
    /// The pfns of the area's pages (kmalloc'd; `None` only while the area is being made).
    pub(super) pages: Option<KArray<'m, u64>>,
    pub(super) next: Option<CacheObj<'m, VmapArea<'m>>>,
    pub(super) id: u64,
}

/// Where an address falls in the area list.
pub(super) enum Found<'g, 'm> {
    /// Inside the area `rec`, the `pos`-th record of the list.
    Area { pos: usize, rec: &'g VmapArea<'m> },
    /// In the guard page of the area `rec`.
    Guard { rec: &'g VmapArea<'m> },
    /// In no area.
    Gap,
}
