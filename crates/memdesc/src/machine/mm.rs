//! The address-space layer's public API on the machine: one-line forwarders to
//! [`Mms`](crate::mm::Mms) (layer 5), and [`PhysMem::mms`], the view the other layers above
//! use.

use crate::addr::Pfn;
use crate::cpu::Cpu;
use crate::desc::{Folio, MappableDesc};
use crate::gfp::Gfp;
use crate::mm::mappable::{MappableError, MappableRef, UserPage};
use crate::mm::mmap::{Mm, MmCaches};
use crate::mm::pgtable::{MapError, PtEntry};
#[cfg(feature = "health")]
use crate::mm::rmap::RmapLocked;
use crate::mm::Mms;
use crate::page_alloc::AllocError;
use crate::platform::Platform;

use super::PhysMem;

impl<P: Platform> PhysMem<P> {
    /// The address-space layer's view (layer 5), for the layers above it.
    #[inline]
    pub(crate) fn mms(&self) -> Mms<'_, P> {
        Mms::new(self.pages(), self.slabs(), self.folios())
    }

    /// Creates the slab caches address spaces live in (`mm_struct`, `vm_area`, and the
    /// TYPESAFE_BY_RCU `anon_vma`); every [`MmRef`](crate::pgtable::MmRef) is created through
    /// them.
    #[inline]
    pub fn mm_caches(&self, cpu: &Cpu<'_>) -> Result<MmCaches<'_, P>, AllocError> {
        self.mms().mm_caches(cpu)
    }

    /// Allocates `2^order` pages of driver memory that may be mapped to user space, with one
    /// reference; `owner` is the driver object's address (informational).
    #[inline]
    pub fn mappable_alloc(
        &self,
        cpu: &Cpu<'_>,
        order: u32,
        gfp: Gfp,
        owner: usize,
    ) -> Result<MappableRef<'_>, AllocError> {
        self.mms().mappable_alloc(cpu, order, gfp, owner)
    }

    /// Takes another reference; refused if there is none (the memory is free). Safe: it only
    /// adds a count to memory that is live, and the new reference is the caller's.
    #[inline]
    pub fn mappable_get<'m>(&'m self, d: &'m MappableDesc) -> Result<MappableRef<'m>, MappableError> {
        self.mms().mappable_get(d)
    }

    /// Puts the reference `r` holds; the last one frees the memory. Returns whether it was
    /// freed. A refused put (see [`PhysMem::mappable_put_raw`]) keeps the reference, leaked.
    #[inline]
    pub fn mappable_put(&self, cpu: &Cpu<'_>, r: MappableRef<'_>) -> Result<bool, MappableError> {
        self.mms().mappable_put(cpu, r)
    }

    /// Decides by [`mappability`](crate::mappable::mappability) whether the page at `pfn` may
    /// be mapped into user space, and returns the token for
    /// [`MmRef::map_user_page`](crate::pgtable::MmRef::map_user_page); refused with
    /// [`MapError::Unmappable`] naming the kind (a free tail is reported as `Free`).
    #[inline]
    pub fn user_page_of(&self, pfn: Pfn) -> Result<UserPage, MapError> {
        self.mms().user_page_of(pfn)
    }

    /// Calls `f(mm, va, entry)` for every page-table entry that maps `folio`, found from the
    /// folio's `mapping` and `index` (anon_vma or file `i_mmap`) the Linux way. Returns the
    /// number of entries found, which equals the folio's mapcount when nothing races.
    ///
    /// The callback runs with the rmap lock and that mm's page-table lock held: it must not
    /// call back into the page tables.
    #[inline]
    pub fn rmap_walk(&self, cpu: &Cpu<'_>, folio: &Folio, f: impl FnMut(&Mm, u64, PtEntry)) -> u32 {
        self.mms().rmap_walk(cpu, folio, f)
    }

    /// Locks `f`'s rmap list for a caller that must keep every entry mapping `f` stable across
    /// several steps (migration); see [`Mms::rmap_lock`](crate::mm::Mms).
    #[cfg(feature = "health")]
    #[inline]
    pub(crate) fn rmap_lock(&self, cpu: &Cpu<'_>, f: &Folio) -> Option<RmapLocked<'_>> {
        self.mms().rmap_lock(cpu, f)
    }

    /// With `f`'s rmap lock held, points every entry mapping `f` at the same page of `new`
    /// (see [`Mms::rmap_move_locked`](crate::mm::Mms)).
    #[cfg(feature = "health")]
    #[inline]
    pub(crate) fn rmap_move_locked(&self, l: &RmapLocked<'_>, f: &Folio, new: Pfn) -> u32 {
        self.mms().rmap_move_locked(l, f, new)
    }

    /// Unmaps every entry mapping `f` through the rmap (see
    /// [`Mms::rmap_unmap`](crate::mm::Mms)).
    #[cfg(feature = "health")]
    #[inline]
    pub(crate) fn rmap_unmap(&self, cpu: &Cpu<'_>, f: &Folio, each: &mut dyn FnMut(&Mm, u64)) -> u32 {
        self.mms().rmap_unmap(cpu, f, each)
    }
}
