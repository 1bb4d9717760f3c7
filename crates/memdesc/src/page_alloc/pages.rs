//! Raw page allocations as owned handles: [`PhysMem::alloc_pages`](crate::PhysMem::alloc_pages) returns a [`Pages`] that
//! carries what freeing needs (first pfn, order, and the machine it came from), and
//! [`PhysMem::free_pages`](crate::PhysMem::free_pages) consumes it, so safe code can free only a block it was given, and
//! only once.
//!
//! Kernels also speak raw pfns (C callers, page tables, traces): [`Pages::into_raw`] and
//! [`Pages::from_raw`] cross over, and [`PhysMem::free_pages_raw`](crate::PhysMem::free_pages_raw) frees by pfn. Both
//! are part of the raw interface (`machine/raw.rs`): the free's checks (the page word must
//! head a raw allocation of that order) catch most mistakes, but they cannot tell the block's
//! owner from anyone else, so freeing a block the caller does not own would hand memory still
//! in use to the next allocation. Inside the crate the free is `PageAllocator`'s
//! crate-private `free_pages_owned`, whose callers own what they free.
//!
//! The crate's own allocations (per-CPU sheaf arrays, the pages of a slab or of a
//! descriptor-backed block before its descriptor word is stamped, two-level area tables) are
//! stamped `Undescribed { Internal }` instead of `Unmappable`: no public free accepts them,
//! [`PhysMem::free_pages_raw`](crate::PhysMem::free_pages_raw) of such a pfn returns [`FreeError::Internal`].
//!
//! # Invariants
//! 1. A `Pages` value exists for a block only while that block's head word is
//!    `Undescribed { Unmappable, order }` (or another word the owner stamped through a typed
//!    allocator that consumed it): it is made by `alloc_pages`, by `from_raw` (whose caller
//!    vouches for it), and destroyed by `free_pages` or `into_raw`.
//! 2. `Pages` is neither `Clone` nor `Copy`: one block, one owner.
//! 3. Dropping a `Pages` leaks the block (it stays allocated; [`PhysMem::check`](crate::PhysMem::check) still counts it
//!    as raw memory). Freeing needs a [`Cpu`] (the block goes to that CPU's per-CPU list), which
//!    `Drop` does not have; carrying a reference to the machine would not give one either, and
//!    claiming a CPU inside `drop` could fail or deadlock against the caller's own claim. So, as
//!    Asterinas' `ManuallyDrop`-style frames do, the handle is `#[must_use]` and a leak is the
//!    worst a forgotten handle does: never a free of something still in use.

use core::fmt;

use crate::base::addr::Pfn;
use crate::base::cpu::Cpu;
use crate::base::gfp::Gfp;
use crate::base::platform::Platform;
use crate::memmap::word::Subtype;
use crate::page_alloc::{AllocError, FreeError, PageAllocator};

/// An owned block of `2^order` raw pages from [`PhysMem::alloc_pages`](crate::PhysMem::alloc_pages).
///
/// Free it with [`PhysMem::free_pages`](crate::PhysMem::free_pages), which consumes it. It is not `Clone`: a block cannot
/// be freed twice through the safe API.
///
/// ```compile_fail,E0382
/// # fn f<P: memdesc::Platform>(mem: &memdesc::PhysMem<P>, cpu: &memdesc::Cpu<'_>) {
/// let pages = mem.alloc_pages(cpu, 0, memdesc::Gfp::KERNEL).unwrap();
/// mem.free_pages(cpu, pages).unwrap();
/// mem.free_pages(cpu, pages).unwrap(); // error[E0382]: use of moved value: `pages`
/// # }
/// ```
///
/// Dropping it leaks the block (see the module's invariant 3).
#[must_use = "dropping a Pages leaks the block; free it with PhysMem::free_pages"]
#[derive(PartialEq, Eq)]
pub struct Pages {
    pfn: Pfn,
    order: u32,
    machine: u32,
}

#[cfg(not(loom))]
const _: () = assert!(core::mem::size_of::<Pages>() == 16);

impl fmt::Debug for Pages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pages({}, order {})", self.pfn, self.order)
    }
}

impl Pages {
    /// The first page.
    #[inline]
    pub fn pfn(&self) -> Pfn {
        self.pfn
    }
    /// The order: the block is `2^order` pages.
    #[inline]
    pub fn order(&self) -> u32 {
        self.order
    }
    /// Pages in the block.
    #[inline]
    pub fn nr_pages(&self) -> u64 {
        1 << self.order
    }
    /// Gives up the handle for the raw pfn and order: the caller now owns the block by
    /// convention and frees it with [`PhysMem::free_pages_raw`](crate::PhysMem::free_pages_raw) (or turns it back into a handle
    /// with [`Pages::from_raw`]).
    #[inline]
    pub fn into_raw(self) -> (Pfn, u32) {
        (self.pfn, self.order)
    }

    /// A handle for a block of `machine` (its public constructor, `Pages::from_raw`, takes
    /// the machine and lives in `machine/raw.rs`).
    #[inline]
    pub(crate) fn new(pfn: Pfn, order: u32, machine: u32) -> Pages {
        Pages { pfn, order, machine }
    }
}

impl<P: Platform> PageAllocator<P> {
    /// Allocates `2^order` contiguous pages of raw (unmappable) memory.
    ///
    /// The head word becomes `Undescribed { Unmappable, order }`. The returned [`Pages`] owns
    /// the block; free it with [`PhysMem::free_pages`](crate::PhysMem::free_pages).
    #[inline(always)]
    pub(crate) fn alloc_pages(&self, cpu: &Cpu<'_>, order: u32, gfp: Gfp) -> Result<Pages, AllocError> {
        let pfn = self.alloc_pages_raw(cpu, order, gfp)?;
        Ok(Pages { pfn, order, machine: self.machine_id() })
    }

    /// As [`PhysMem::alloc_pages`](crate::PhysMem::alloc_pages), returning the first pfn instead of a handle, for callers
    /// that keep pfns (C interfaces, page tables, trace replay).
    ///
    /// Safe: allocating cannot free anything another owner holds; the caller now owns the
    /// block and gives it back with [`PhysMem::free_pages_raw`](crate::PhysMem::free_pages_raw) or wraps it with
    /// [`Pages::from_raw`]. Losing the pfn leaks the block.
    #[inline(always)]
    pub(crate) fn alloc_pages_raw(&self, cpu: &Cpu<'_>, order: u32, gfp: Gfp) -> Result<Pfn, AllocError> {
        if gfp.contains(Gfp::GUARD) {
            return self.alloc_guarded(cpu, order, gfp);
        }
        self.alloc_in_slot(cpu, order, gfp, |rm, slot| self.raw_head_word(rm, slot, order))
    }

    /// Frees a block from [`PhysMem::alloc_pages`](crate::PhysMem::alloc_pages), consuming its handle.
    ///
    /// A handle of another machine is refused with [`FreeError::ForeignMachine`]. The page word
    /// is still checked (see [`FreeError`]); a refused free leaves the allocator unchanged and
    /// the block allocated (leaked).
    #[inline(always)]
    pub(crate) fn free_pages(&self, cpu: &Cpu<'_>, pages: Pages) -> Result<(), FreeError> {
        if pages.machine != self.machine_id() {
            self.count_free_error();
            return Err(FreeError::ForeignMachine(pages.pfn));
        }
        // A Pages of this machine owns its block (invariants 1 and 2), and consuming it here
        // ends that ownership: the claim is a plain store.
        self.free_checked(cpu, pages.pfn, pages.order, true)
    }

    /// The free of raw memory: checks the word, claims it (a plain store when `owned`, the
    /// caller having consumed the block's only [`Pages`]; a compare-and-swap otherwise), then
    /// frees it through the caller's per-CPU list.
    #[inline(always)]
    fn free_checked(&self, cpu: &Cpu<'_>, pfn: Pfn, order: u32, owned: bool) -> Result<(), FreeError> {
        // A foreign token panics here, before anything changes.
        let cpu_id = self.cpu_id(cpu);
        if owned && (self.free_owned_fast(cpu, cpu_id, pfn, order) || self.free_buddy_fast(pfn, order)) {
            return Ok(());
        }
        self.free_general(cpu, pfn, order, owned)
    }

    /// The general free (`free_checked` when its fast path does not apply): every check, the
    /// claim, guard pages, then the per-CPU list or the buddy lists. Out of line, so the fast
    /// path stays small.
    #[inline(never)]
    fn free_general(&self, cpu: &Cpu<'_>, pfn: Pfn, order: u32, owned: bool) -> Result<(), FreeError> {
        let r = self.check_and_claim_as(pfn, order, owned, |u| matches!(u, Subtype::Unmappable));
        match r {
            Ok(rm) => {
                self.release_guards(cpu, rm, pfn, order);
                self.free_claimed(cpu, rm, pfn, order);
                Ok(())
            }
            Err(e) => {
                self.count_free_error();
                Err(e)
            }
        }
    }

    /// Frees raw memory by pfn and order. Checked: a double free, a free of a tail page, of
    /// the wrong order, of reserved or poisoned memory, of another kind's pages or of the
    /// crate's internal pages ([`FreeError::Internal`]) returns an error and changes nothing.
    ///
    /// The caller owns the block (crate-private; the public raw entry point is
    /// [`PhysMem::free_pages_raw`](crate::PhysMem::free_pages_raw), whose contract says what
    /// owning means): `pfn` heads a block of exactly `order` pages this machine handed out, not
    /// freed since, with no [`Pages`] left for it, and nothing uses its memory after this call.
    /// The word checks cannot tell the owner from anyone else.
    pub(crate) fn free_pages_owned(&self, cpu: &Cpu<'_>, pfn: Pfn, order: u32) -> Result<(), FreeError> {
        self.free_checked(cpu, pfn, order, false)
    }

    /// Writes `w` into every word describing the block at `pfn`: the per-page words, or the
    /// area words of a two-level region for blocks of 2 MiB and up.
    #[cfg(feature = "slab")]
    pub(crate) fn stamp_block(&self, pfn: Pfn, order: u32, w: crate::memmap::word::Word) {
        let rm = self.memmap.region_map(self.memmap.region_index(pfn).expect("allocated pfn"));
        if rm.region.layout == crate::base::layout::MemmapLayout::TwoLevel && order >= crate::base::addr::AREA_ORDER {
            let mut a = pfn;
            while a < pfn.add(1 << order) {
                rm.area_word(a).store(w);
                a = a.add(crate::base::addr::AREA_PAGES);
            }
            return;
        }
        for i in 0..1u64 << order {
            self.memmap.page_word(&self.platform, rm, pfn.add(i)).expect("small blocks have page words").store(w);
        }
    }

    /// Allocates a block for the crate itself, stamped `Undescribed { Internal, order }`: no
    /// public free accepts it. Free with [`PhysMem::free_internal`](crate::PhysMem::free_internal) (or restamp it with a
    /// descriptor word and free it through that descriptor's owner).
    #[cfg(feature = "slab")]
    pub(crate) fn alloc_internal(&self, cpu: &Cpu<'_>, order: u32, gfp: Gfp) -> Result<Pfn, AllocError> {
        self.alloc_with(cpu, order, gfp.without(Gfp::GUARD), |rm| {
            crate::page_alloc::zone::Buddy::<P>::undescribed(rm, Subtype::Internal, order)
        })
    }

    /// Frees a block from [`PhysMem::alloc_internal`](crate::PhysMem::alloc_internal) whose head word is still `Internal`.
    #[cfg(feature = "slab")]
    pub(crate) fn free_internal(&self, cpu: &Cpu<'_>, pfn: Pfn, order: u32) -> Result<(), FreeError> {
        let rm = self.check_and_claim(pfn, order, |u| matches!(u, Subtype::Internal)).inspect_err(|_| {
            self.count_free_error();
        })?;
        self.free_claimed(cpu, rm, pfn, order);
        Ok(())
    }
}
