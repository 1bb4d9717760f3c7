//! vmalloc areas: the typed handle a caller holds ([`VmArea`], [`Mappable`] or
//! [`Unmappable`]) and the space's bookkeeping of them — one record per area in the space's
//! slab cache, linked in address order under the space lock — with the walks over that list
//! (find the area or guard page an address falls in, first-fit a free range).

use core::marker::PhantomData;

use super::{Inner, VmallocError, VmallocSpace};
use crate::addr::{Pfn, PAGE_SIZE};
use crate::pgtable::UserPage;
use crate::platform::Platform;
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
/// every access goes through the [`VmallocSpace`], which checks it is still live.
#[derive(Debug)]
pub struct VmArea<K: AreaKind> {
    pub(super) va: usize,
    pub(super) nr_pages: usize,
    pub(super) id: u64,
    pub(super) _kind: PhantomData<K>,
}

impl<K: AreaKind> VmArea<K> {
    /// Gives up the handle for the area's first address; free it with the `unsafe`
    /// [`VmallocSpace::vfree`].
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

/// One area's record, in the space's slab cache. Only read or written under the space lock.
#[repr(C)]
pub(super) struct VmapArea {
    pub(super) va: usize,
    pub(super) nr_pages: usize,
    /// kmalloc'd array of `nr_pages` pfns.
    pub(super) pages: usize,
    pub(super) next: usize,
    pub(super) id: u64,
    pub(super) mappable: bool,
}

/// Where an address falls in the area list.
pub(super) enum Found {
    /// Inside the area whose record is at `rec`; `prev` precedes it in the list (0: head).
    Area { prev: usize, rec: usize },
    /// In the guard page of the area at `rec`.
    Guard { rec: usize },
    /// In no area.
    Gap,
}
impl<P: Platform> VmallocSpace<'_, P> {
    /// Where `va` falls; `OutOfRange` outside the space.
    pub(super) fn locate(&self, g: &Inner, va: usize) -> Result<Found, VmallocError> {
        if va < self.start || va >= self.end {
            return Err(VmallocError::OutOfRange(va));
        }
        let (mut prev, mut cur) = (0, g.head);
        while cur != 0 {
            let r = Self::rec(cur);
            if va < r.va {
                return Ok(Found::Gap);
            }
            let end = r.va + r.nr_pages * PAGE_SIZE;
            if va < end {
                return Ok(Found::Area { prev, rec: cur });
            }
            if va < end + PAGE_SIZE {
                return Ok(Found::Guard { rec: cur });
            }
            prev = cur;
            cur = r.next;
        }
        Ok(Found::Gap)
    }

    /// First fit: the record to insert after (0: at the head) and the start of a free range of
    /// `nr` pages plus a guard page.
    pub(super) fn find_gap(&self, g: &Inner, nr: usize) -> Option<(usize, usize)> {
        let need = (nr + 1) * PAGE_SIZE;
        let (mut prev, mut cur, mut cand) = (0, g.head, self.start);
        while cur != 0 {
            let r = Self::rec(cur);
            if cand.checked_add(need)? <= r.va {
                return Some((prev, cand));
            }
            cand = r.va + (r.nr_pages + 1) * PAGE_SIZE;
            prev = cur;
            cur = r.next;
        }
        (cand.checked_add(need)? <= self.end).then_some((prev, cand))
    }

    pub(super) fn rec<'a>(addr: usize) -> &'a VmapArea {
        // SAFETY: record addresses in the list are live records of this space (linked after
        // being written, unlinked before being freed); callers hold the space lock, under which
        // records are only read or have `next` replaced through `set_next`.
        unsafe { &*(addr as *const VmapArea) }
    }

    pub(super) fn set_next(addr: usize, next: usize) {
        // SAFETY: as in `rec`; the caller holds the lock and no reference to this record's
        // `next` is live across the call.
        unsafe { (*(addr as *mut VmapArea)).next = next };
    }

    pub(super) fn pfn_of(r: &VmapArea, i: usize) -> Pfn {
        debug_assert!(i < r.nr_pages);
        // SAFETY: `pages` is the record's array of nr_pages pfns, written before linking.
        Pfn(unsafe { (r.pages as *const u64).add(i).read() })
    }
}

impl VmArea<Mappable> {
    /// Page `index` of this mappable area, as a [`UserPage`] token for
    /// [`crate::pgtable::MmRef::map_user_page`]. (Only mappable areas have this method.)
    /// [`VmallocSpace::map_user`] is the safer path: it holds the space lock while mapping.
    pub fn user_page<P: Platform>(&self, space: &VmallocSpace<'_, P>, index: usize) -> Result<UserPage, VmallocError> {
        let pfn = space.pfn_at(self, index)?;
        Ok(UserPage::new(pfn, Tag::VmallocMappable))
    }
}
