//! vmalloc: virtually contiguous kernel areas backed by order-0 pages from anywhere in memory.
//!
//! A [`VmallocSpace`] owns a range of kernel virtual addresses (by default Linux's x86-64
//! 4-level `VMALLOC_START`, 32 TiB) and hands out areas of whole pages from it, first fit, with
//! one unmapped **guard page** after every area as Linux leaves one, so a linear overrun of an
//! area faults instead of running into its neighbour.
//!
//! Every page of an area is an order-0 page from [`PhysMem::alloc_pages`](crate::PhysMem::alloc_pages) with its own
//! [`VmallocDesc`] (pfn, refcount, mapcount, owning area, index in the area), and its word
//! is tagged [`Tag::VmallocMappable`] or [`Tag::VmallocUnmappable`]. Which of the two an area
//! is shows in its handle's type, [`VmArea<Mappable>`] or [`VmArea<Unmappable>`]: only the
//! mappable handle has [`VmArea::user_page`] and is taken by [`VmallocSpace::map_user`], the
//! two ways this module gives a page out for a user mapping, so handing an unmappable area's
//! page to user space does not compile:
//!
//! ```compile_fail
//! # fn f<P: memdesc::Platform>(s: &memdesc::vmalloc::VmallocSpace<'_, P>, a: &memdesc::vmalloc::VmArea<memdesc::vmalloc::Unmappable>) {
//! let _ = a.user_page(s, 0); // no such method on an unmappable area
//! # }
//! ```
//!
//! ```compile_fail
//! # use memdesc::{pgtable::MmRef, Cpu, vmalloc::{Unmappable, VmArea, VmallocSpace}, Platform};
//! # fn f<P: Platform>(s: &VmallocSpace<'_, P>, cpu: &Cpu<'_>, mm: &MmRef<'_, P>, a: &VmArea<Unmappable>) {
//! let _ = s.map_user(cpu, mm, 0x1000, a, 0); // expects a VmArea<Mappable>
//! # }
//! ```
//!
//! while the same calls on a mappable area compile:
//!
//! ```
//! # use memdesc::{pgtable::MmRef, Cpu, vmalloc::{Mappable, VmArea, VmallocSpace}, Platform};
//! # fn f<P: Platform>(s: &VmallocSpace<'_, P>, cpu: &Cpu<'_>, mm: &MmRef<'_, P>, a: &VmArea<Mappable>) {
//! let _ = a.user_page(s, 0);
//! let _ = s.map_user(cpu, mm, 0x1000, a, 0);
//! # }
//! ```
//!
//! For pages reached by pfn rather than through a handle, the page-table module's one rule,
//! [`crate::pgtable::mappability`], decides from the word ([`PhysMem::user_page_of`](crate::PhysMem::user_page_of),
//! [`crate::pgtable::MmRef::map_pfn`]); this module has no check of its own. A mappable area's
//! page is mapped into a user address space with [`VmallocSpace::map_user`], under the space
//! lock, so it cannot race with `vfree` (which refuses with [`VmallocError::Mapped`] while a
//! user entry maps a page of the area).
//!
//! **Bookkeeping lives in the simulated machine's memory**: each area is a record in a slab
//! cache of this space (`vmap_area`), its page array (one pfn per page) is a kmalloc
//! allocation, and the records form an address-ordered list under one spin lock. Lookup by
//! address walks that list (Linux keeps an augmented red-black tree; the list keeps this
//! small and is linear in the number of live areas).
//!
//! **Page tables.** A space is given a kernel address space (a [`crate::pgtable::Mm`] of kind
//! `Kernel`, usually one per machine as Linux's `init_mm`, shared by every space and other
//! kernel mappings) and claims its whole virtual range there as one pfn VMA. Every area's pages
//! are mapped by PTEs at `area.addr() + i * PAGE_SIZE` through
//! [`crate::pgtable::MmRef::map_pfn`] (unmappable pages are allowed in a kernel space); the
//! guard page after an area is never mapped. As every page-table entry does, each kernel PTE
//! holds one reference and one mapcount of the page's [`VmallocDesc`], so a page's mapcount is
//! 1 + its user mappings. `vfree` unmaps the area (page tables emptied by that are freed, as
//! the page-table module does) before freeing its pages, and [`VmallocSpace::vmalloc_to_pfn`]
//! answers from the page tables. The page array is kept (one pfn per page) for freeing and for
//! byte access, which goes through a [`PageAccess`] window on each page.
//!
//! Allocation takes every page first, then the virtual range and its PTEs; any failure on the
//! way (pages, descriptors, bookkeeping, page tables) returns every page, descriptor, array,
//! record and page-table page already taken, so a failed `vmalloc` leaves the machine as it
//! was.
//!
//! This module touches its own records and page arrays, the words and [`VmallocDesc`]s of its
//! pages, their bytes (through `PageAccess` windows), and entries of its kernel address space and of
//! user address spaces only through the page-table module's API.

mod area;

use core::marker::PhantomData;

use crate::addr::{Pfn, PAGE_SIZE};
use crate::cpu::Cpu;
use crate::desc::{pool_desc_held, pool_window, DescPtr, VmallocDesc};
use crate::gfp::Gfp;
use crate::page_access::PageAccess;
use crate::page_alloc::AllocError;
use crate::pgtable::{MapError, MmKind, MmRef, UserPage};
use crate::platform::Platform;
use crate::pools::{PoolHost, Pools};
use crate::slab::{CacheArgs, CacheObj, ObjCache};
use crate::sync::{Ordering, SpinLock};
use crate::word::{PageKind, Tag, Word};

pub use area::{AreaKind, Mappable, Unmappable, VmArea};
use area::{Found, VmapArea};

#[cfg(doc)]
use crate::pgtable::MmCaches;

/// Linux's x86-64 (4-level) start of the vmalloc range.
pub const VMALLOC_START: usize = 0xffff_c900_0000_0000;
/// Linux's x86-64 (4-level) size of the vmalloc range: 32 TiB.
pub const VMALLOC_SIZE: usize = 32 << 40;
/// Recently freed area starts remembered to tell a double `vfree` from a bad address.
const FREED_HISTORY: usize = 16;

/// Why a vmalloc operation was refused. Nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmallocError {
    /// A zero-byte area was asked for.
    ZeroSize,
    /// The size does not fit the space (or overflows when rounded to pages).
    TooLarge(usize),
    /// Pages, descriptors or bookkeeping could not be allocated.
    NoMemory(AllocError),
    /// No free virtual range of this many pages (plus its guard page) is left.
    NoVirtualSpace {
        /// Pages asked for.
        pages: usize,
    },
    /// The space's range is empty, unaligned or wraps around.
    BadRange,
    /// The address is outside this space's virtual range.
    OutOfRange(usize),
    /// No area covers the address.
    NotAllocated(usize),
    /// The address is inside an area but is not its start (vfree needs the start).
    NotAreaStart {
        /// The address given.
        va: usize,
        /// The start of the area it is in.
        start: usize,
    },
    /// The address is the guard page after an area.
    GuardPage {
        /// The address given.
        va: usize,
        /// Start of the area the guard page follows.
        area: usize,
    },
    /// The address started an area that was already freed.
    DoubleFree(usize),
    /// The handle names an area that was freed (by address) since.
    Stale(usize),
    /// The access runs past the end of the area.
    OutOfBounds {
        /// Start of the access.
        va: usize,
        /// Its length.
        len: usize,
    },
    /// A page of the area is still mapped into user space.
    Mapped {
        /// Start of the area.
        va: usize,
        /// Index of the mapped page.
        index: usize,
    },
    /// A page of the area could not be mapped by the platform.
    NoMapping(Pfn),
    /// The space still has this many live areas.
    Busy(u64),
    /// The page tables refused (out of memory for a table, a user mapping refused, the
    /// space's range taken by another VMA of the kernel address space).
    PageTable(MapError),
    /// The address space given is not a kernel one.
    NotKernelMm,
}

impl core::fmt::Display for VmallocError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            VmallocError::ZeroSize => write!(f, "vmalloc of zero bytes"),
            VmallocError::TooLarge(s) => write!(f, "vmalloc of {s} bytes does not fit the vmalloc space"),
            VmallocError::NoMemory(e) => write!(f, "vmalloc: {e}"),
            VmallocError::NoVirtualSpace { pages } => write!(f, "no free virtual range of {pages} pages"),
            VmallocError::BadRange => write!(f, "the vmalloc range is empty, unaligned or wraps"),
            VmallocError::OutOfRange(va) => write!(f, "{va:#x} is outside the vmalloc space"),
            VmallocError::NotAllocated(va) => write!(f, "no vmalloc area at {va:#x}"),
            VmallocError::NotAreaStart { va, start } => {
                write!(f, "{va:#x} is inside the area at {start:#x}, not its start")
            }
            VmallocError::GuardPage { va, area } => write!(f, "{va:#x} is the guard page of the area at {area:#x}"),
            VmallocError::DoubleFree(va) => write!(f, "double vfree of {va:#x}"),
            VmallocError::Stale(va) => write!(f, "the area at {va:#x} was freed"),
            VmallocError::OutOfBounds { va, len } => write!(f, "{len} bytes at {va:#x} run past the area"),
            VmallocError::Mapped { va, index } => write!(f, "page {index} of the area at {va:#x} is mapped"),
            VmallocError::NoMapping(p) => write!(f, "pfn {p} cannot be mapped"),
            VmallocError::Busy(n) => write!(f, "the vmalloc space still has {n} areas"),
            VmallocError::PageTable(e) => write!(f, "vmalloc page tables: {e}"),
            VmallocError::NotKernelMm => write!(f, "a vmalloc space needs a kernel address space"),
        }
    }
}

impl core::error::Error for VmallocError {}

struct Inner<'m> {
    /// The records, in address order (each owns the next).
    head: Option<CacheObj<'m, VmapArea<'m>>>,
    next_id: u64,
    areas: u64,
    pages: u64,
    freed: [usize; FREED_HISTORY],
    freed_next: usize,
}

/// Counters of a [`VmallocSpace`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmallocStats {
    /// Live areas.
    pub areas: u64,
    /// Pages backing them.
    pub pages: u64,
}

/// A range of kernel virtual addresses and the vmalloc areas in it.
pub struct VmallocSpace<'m, P: Platform> {
    mem: Pools<'m, P>,
    kmm: &'m MmRef<'m, P>,
    records: ObjCache<'m, VmapArea<'m>>,
    start: usize,
    end: usize,
    inner: SpinLock<Inner<'m>>,
}

impl<'m, P: Platform> VmallocSpace<'m, P> {
    /// A space over Linux's vmalloc range ([`VMALLOC_START`], [`VMALLOC_SIZE`]), mapped by
    /// the kernel address space `kmm` (see [`VmallocSpace::with_range`]).
    pub fn new(mem: &'m impl PoolHost<P>, cpu: &Cpu<'_>, kmm: &'m MmRef<'m, P>) -> Result<Self, VmallocError> {
        Self::with_range(mem, cpu, kmm, VMALLOC_START, VMALLOC_SIZE)
    }

    /// A space over `[start, start + size)`, both page-aligned and in the kernel half, whose
    /// areas are mapped by the kernel address space `kmm` (made by [`MmCaches::mm_create`]
    /// with `MmKind::Kernel`; one may serve every space of a machine). Creates the space's
    /// record cache and claims the range as one pfn VMA of `kmm`: a range another VMA
    /// overlaps is refused with [`VmallocError::PageTable`]`(`[`MapError::Overlap`]`)`.
    pub fn with_range(
        mem: &'m impl PoolHost<P>,
        cpu: &Cpu<'_>,
        kmm: &'m MmRef<'m, P>,
        start: usize,
        size: usize,
    ) -> Result<Self, VmallocError> {
        let mem = mem.pools();
        let end = start.checked_add(size).ok_or(VmallocError::BadRange)?;
        if size == 0 || !start.is_multiple_of(PAGE_SIZE) || !size.is_multiple_of(PAGE_SIZE) {
            return Err(VmallocError::BadRange);
        }
        if kmm.mm().kind() != MmKind::Kernel {
            return Err(VmallocError::NotKernelMm);
        }
        // The space's own cache: no user can reach it through `cache_ref` and destroy it.
        let records = mem
            .slabs()
            .new_obj_cache::<VmapArea<'m>>(cpu, CacheArgs::new("vmap_area", core::mem::size_of::<VmapArea<'m>>()))
            .map_err(VmallocError::NoMemory)?;
        if let Err(e) = kmm.mmap_pfn(cpu, start as u64, size as u64) {
            let r = mem.slabs().destroy_cache(cpu, mem.slabs().cache_ref_internal(records.cache()));
            debug_assert!(r.is_ok(), "{r:?}");
            return Err(match e {
                MapError::OutOfRange(_) | MapError::Misaligned(_) => VmallocError::BadRange,
                e => VmallocError::PageTable(e),
            });
        }
        Ok(VmallocSpace {
            mem,
            kmm,
            records,
            start,
            end,
            inner: SpinLock::new(Inner {
                head: None,
                next_id: 1,
                areas: 0,
                pages: 0,
                freed: [0; FREED_HISTORY],
                freed_next: 0,
            }),
        })
    }

    /// Destroys an empty space: its VMA leaves the kernel address space and its record cache
    /// is destroyed. Refused with [`VmallocError::Busy`] (and the space handed back) while
    /// areas are live. A space that is simply dropped keeps its VMA and record cache, as a
    /// boot-time space would.
    #[allow(clippy::result_large_err)]
    pub fn destroy(self, cpu: &Cpu<'_>) -> Result<(), (Self, VmallocError)> {
        let areas = self.inner.lock().areas;
        if areas != 0 {
            return Err((self, VmallocError::Busy(areas)));
        }
        let r = self.kmm.munmap(cpu, self.start as u64);
        debug_assert!(r.is_ok_and(|st| st.entries == 0), "{r:?}");
        let r = self.mem.slabs().destroy_cache(cpu, self.mem.slabs().cache_ref_internal(self.records.cache()));
        debug_assert!(r.is_ok(), "{r:?}");
        Ok(())
    }

    /// The kernel address space whose page tables map this space's areas.
    pub fn kernel_mm(&self) -> &'m MmRef<'m, P> {
        self.kmm
    }

    /// The virtual range `[start, end)`.
    pub fn range(&self) -> (usize, usize) {
        (self.start, self.end)
    }

    /// Live areas and pages.
    pub fn stats(&self) -> VmallocStats {
        let g = self.inner.lock();
        VmallocStats { areas: g.areas, pages: g.pages }
    }

    /// Allocates an area of `size` bytes (rounded up to pages) of kind `K`: `vmalloc` with
    /// `K = Unmappable`, `vmalloc_user` with `K = Mappable`; [`Gfp::ZERO`] zeroes it.
    pub fn vmalloc<K: AreaKind>(&self, cpu: &Cpu<'_>, size: usize, gfp: Gfp) -> Result<VmArea<K>, VmallocError> {
        if size == 0 {
            return Err(VmallocError::ZeroSize);
        }
        let nr = size.div_ceil(PAGE_SIZE);
        // The area and its guard page must fit the space.
        if nr >= (self.end - self.start) / PAGE_SIZE {
            return Err(VmallocError::TooLarge(size));
        }
        let slabs = self.mem.slabs();
        let blank = VmapArea { va: 0, nr_pages: nr, pages: None, next: None, id: 0 };
        // The record first: its address is what the pages' descriptors name (`area`).
        let mut rec = slabs.obj_alloc(cpu, self.records, blank).map_err(VmallocError::NoMemory)?;
        match slabs.karray(cpu, nr, 0u64) {
            Ok(a) => rec.pages = Some(a),
            Err(e) => {
                self.free_area(cpu, rec, 0);
                return Err(VmallocError::NoMemory(e));
            }
        }
        let rec_addr = rec.as_ptr().as_ptr() as usize;
        for i in 0..nr {
            match self.alloc_page::<K>(cpu, gfp, rec_addr, i) {
                Ok(pfn) => {
                    let r = rec.pages.as_mut().map(|a| a.set(i, pfn.0));
                    debug_assert!(r.is_some_and(|r| r.is_ok()), "i < nr");
                }
                Err(e) => {
                    self.free_area(cpu, rec, i);
                    return Err(VmallocError::NoMemory(e));
                }
            }
        }
        let mut g = self.inner.lock();
        let Some((pos, va)) = self.find_gap(&g, nr) else {
            drop(g);
            self.free_area(cpu, rec, nr);
            return Err(VmallocError::NoVirtualSpace { pages: nr });
        };
        // PTEs for every page (not the guard page), before the area is linked: nobody sees a
        // half-mapped area. A failure (a page-table page not available) unmaps what was
        // mapped, which frees the tables it emptied, and returns everything taken.
        for i in 0..nr {
            let pfn = pfn_of(&rec, i);
            if let Err(e) = self.kmm.map_pfn(cpu, (va + i * PAGE_SIZE) as u64, pfn) {
                if i > 0 {
                    let r = self.kmm.unmap(cpu, va as u64, (i * PAGE_SIZE) as u64);
                    debug_assert!(r.is_ok_and(|st| st.entries == i as u64), "{r:?}");
                }
                drop(g);
                self.free_area(cpu, rec, nr);
                return Err(VmallocError::PageTable(e));
            }
        }
        let id = g.next_id;
        g.next_id += 1;
        rec.va = va;
        rec.id = id;
        let link = g.link_mut(pos);
        rec.next = link.take();
        *link = Some(rec);
        g.areas += 1;
        g.pages += nr as u64;
        // The start may be handed out again: it no longer names a freed area.
        for f in g.freed.iter_mut() {
            if *f == va {
                *f = 0;
            }
        }
        Ok(VmArea { va, nr_pages: nr, id, _kind: PhantomData })
    }

    /// Frees the area starting at `va`, for a caller that owns it (the checked body of the
    /// raw [`VmallocSpace::vfree`], in `machine/raw.rs`). Refused, with nothing changed, for an
    /// address that is not an area's start ([`VmallocError::NotAreaStart`],
    /// [`VmallocError::GuardPage`], [`VmallocError::NotAllocated`],
    /// [`VmallocError::OutOfRange`]), a recently freed start ([`VmallocError::DoubleFree`]) or
    /// an area with a page still mapped to user space.
    pub(crate) fn vfree_owned(&self, cpu: &Cpu<'_>, va: usize) -> Result<(), VmallocError> {
        self.vfree_checked(cpu, va, None)
    }

    /// Frees the area a handle names (consuming the handle); [`VmallocError::Stale`] if it was
    /// already freed by address.
    pub fn vfree_area<K: AreaKind>(&self, cpu: &Cpu<'_>, area: VmArea<K>) -> Result<(), VmallocError> {
        self.vfree_checked(cpu, area.va, Some(area.id))
    }

    fn vfree_checked(&self, cpu: &Cpu<'_>, va: usize, id: Option<u64>) -> Result<(), VmallocError> {
        let mut g = self.inner.lock();
        let (pos, nr) = match self.locate(&g, va)? {
            Found::Area { pos, rec: r } => {
                if id.is_some_and(|id| id != r.id) {
                    return Err(VmallocError::Stale(va));
                }
                if r.va != va {
                    return Err(VmallocError::NotAreaStart { va, start: r.va });
                }
                // One mapcount is the page's kernel PTE; any more are user mappings.
                for i in 0..r.nr_pages {
                    let d = self.desc_at(&*g, pfn_of(r, i));
                    if d.is_some_and(|d| d.counts.mapcount() > 1) {
                        return Err(VmallocError::Mapped { va, index: i });
                    }
                }
                (pos, r.nr_pages)
            }
            Found::Guard { rec } => return Err(VmallocError::GuardPage { va, area: rec.va }),
            Found::Gap if id.is_some() => return Err(VmallocError::Stale(va)),
            Found::Gap if g.freed.contains(&va) => return Err(VmallocError::DoubleFree(va)),
            Found::Gap => return Err(VmallocError::NotAllocated(va)),
        };
        // Clear the kernel PTEs (dropping their counts) and free the tables they leave empty.
        let st = self.kmm.unmap(cpu, va as u64, (nr * PAGE_SIZE) as u64);
        debug_assert!(st.is_ok_and(|st| st.entries == nr as u64), "{st:?}");
        let link = g.link_mut(pos);
        let mut rec = link.take().expect("located");
        *link = rec.next.take();
        g.areas -= 1;
        g.pages -= nr as u64;
        let slot = g.freed_next;
        g.freed[slot] = va;
        g.freed_next = (slot + 1) % FREED_HISTORY;
        drop(g);
        // The record is unlinked: this call owns it, its page array and its pages.
        self.free_area(cpu, rec, nr);
        Ok(())
    }

    /// The pfn backing the page that holds `va` (Linux's `vmalloc_to_pfn`), read from the
    /// kernel page tables; the errors say why an address has no page (guard page, no area,
    /// outside the space).
    pub fn vmalloc_to_pfn(&self, va: usize) -> Result<Pfn, VmallocError> {
        let g = self.inner.lock();
        match self.locate(&g, va)? {
            Found::Area { .. } => {
                // Every page of a linked area has its PTE (mapped before linking, unmapped
                // after unlinking, both under this lock).
                let e = self.kmm.translate(va as u64);
                debug_assert!(e.is_some_and(|(e, huge)| e.present() && !huge), "{e:?}");
                e.map(|(e, _)| e.pfn()).ok_or(VmallocError::NotAllocated(va))
            }
            Found::Guard { rec } => Err(VmallocError::GuardPage { va, area: rec.va }),
            Found::Gap => Err(VmallocError::NotAllocated(va)),
        }
    }

    /// Copies `buf.len()` bytes from the area holding `va` (all inside one area).
    pub fn read(&self, va: usize, buf: &mut [u8]) -> Result<(), VmallocError> {
        self.copy(va, buf.len(), None, |done, w| buf[done..done + w.len()].copy_from_slice(w.bytes()))
    }

    /// Copies `data` into the area holding `va` (all inside one area), for a caller that owns
    /// the area (the checked body of the raw [`VmallocSpace::write`], in `machine/raw.rs`).
    /// Checked: `va..va+len` must lie inside one live area ([`VmallocError`] otherwise,
    /// nothing written).
    pub(crate) fn write_owned(&self, va: usize, data: &[u8]) -> Result<(), VmallocError> {
        self.copy(va, data.len(), None, |done, w| {
            let n = w.len();
            w.bytes_mut().copy_from_slice(&data[done..done + n])
        })
    }

    /// Reads through a handle, at `offset` bytes into the area.
    pub fn read_area<K: AreaKind>(&self, a: &VmArea<K>, offset: usize, buf: &mut [u8]) -> Result<(), VmallocError> {
        let va = a.va.checked_add(offset).ok_or(VmallocError::OutOfBounds { va: a.va, len: buf.len() })?;
        self.copy(va, buf.len(), Some((a.va, a.id)), |done, w| buf[done..done + w.len()].copy_from_slice(w.bytes()))
    }

    /// Writes through a handle, at `offset` bytes into the area.
    pub fn write_area<K: AreaKind>(&self, a: &VmArea<K>, offset: usize, data: &[u8]) -> Result<(), VmallocError> {
        let va = a.va.checked_add(offset).ok_or(VmallocError::OutOfBounds { va: a.va, len: data.len() })?;
        self.copy(va, data.len(), Some((a.va, a.id)), |done, w| {
            let n = w.len();
            w.bytes_mut().copy_from_slice(&data[done..done + n])
        })
    }

    /// Calls `f(index, pfn)` for every page of the area at `va`, in order, from the page
    /// array (a cross-check of the kernel page tables, which map page `index` at
    /// `va + index * PAGE_SIZE`). `f` runs under the space's lock: it must not call back into
    /// this space.
    pub fn for_each_page(&self, va: usize, mut f: impl FnMut(usize, Pfn)) -> Result<(), VmallocError> {
        let g = self.inner.lock();
        match self.locate(&g, va)? {
            Found::Area { rec, .. } => {
                let r = rec;
                if r.va != va {
                    return Err(VmallocError::NotAreaStart { va, start: r.va });
                }
                (0..r.nr_pages).for_each(|i| f(i, pfn_of(r, i)));
                Ok(())
            }
            Found::Guard { rec } => Err(VmallocError::GuardPage { va, area: rec.va }),
            Found::Gap => Err(VmallocError::NotAllocated(va)),
        }
    }

    /// The pfn of page `index` of an area.
    pub fn pfn_at<K: AreaKind>(&self, a: &VmArea<K>, index: usize) -> Result<Pfn, VmallocError> {
        let va = (index < a.nr_pages)
            .then(|| a.va + index * PAGE_SIZE)
            .ok_or(VmallocError::OutOfBounds { va: a.va, len: (index + 1) * PAGE_SIZE })?;
        let g = self.inner.lock();
        match self.locate(&g, va)? {
            Found::Area { rec, .. } if rec.id == a.id => Ok(pfn_of(rec, index)),
            _ => Err(VmallocError::Stale(a.va)),
        }
    }

    fn copy(
        &self,
        va: usize,
        len: usize,
        handle: Option<(usize, u64)>,
        mut f: impl FnMut(usize, &mut PageAccess<'_, P>),
    ) -> Result<(), VmallocError> {
        let g = self.inner.lock();
        let rec = match handle {
            // Through a handle: its area must still be the one at its start.
            Some((start, id)) => match self.locate(&g, start)? {
                Found::Area { rec, .. } if rec.va == start && rec.id == id => rec,
                _ => return Err(VmallocError::Stale(start)),
            },
            None => match self.locate(&g, va)? {
                Found::Area { rec, .. } => rec,
                Found::Guard { rec } => return Err(VmallocError::GuardPage { va, area: rec.va }),
                Found::Gap => return Err(VmallocError::NotAllocated(va)),
            },
        };
        let r = rec;
        if va < r.va {
            return Err(VmallocError::OutOfBounds { va, len });
        }
        let end = va.checked_add(len).ok_or(VmallocError::OutOfBounds { va, len })?;
        if end > r.va + r.nr_pages * PAGE_SIZE {
            return Err(VmallocError::OutOfBounds { va, len });
        }
        let mut done = 0;
        while done < len {
            let off_in_area = va - r.va + done;
            let (idx, off) = (off_in_area / PAGE_SIZE, off_in_area % PAGE_SIZE);
            let n = (PAGE_SIZE - off).min(len - done);
            let pfn = pfn_of(r, idx);
            // The area's bytes are the space lock holder's (pool item P2 of `desc.rs`).
            let mut w = pool_window(self.mem.platform(), pfn, off, n).ok_or(VmallocError::NoMapping(pfn))?;
            f(done, &mut w);
            done += n;
        }
        Ok(())
    }

    /// Where `va` falls; `OutOfRange` outside the space.
    fn locate<'g>(&self, g: &'g Inner<'m>, va: usize) -> Result<Found<'g, 'm>, VmallocError> {
        if va < self.start || va >= self.end {
            return Err(VmallocError::OutOfRange(va));
        }
        for (pos, r) in g.iter().enumerate() {
            if va < r.va {
                return Ok(Found::Gap);
            }
            let end = r.va + r.nr_pages * PAGE_SIZE;
            if va < end {
                return Ok(Found::Area { pos, rec: r });
            }
            if va < end + PAGE_SIZE {
                return Ok(Found::Guard { rec: r });
            }
        }
        Ok(Found::Gap)
    }

    /// First fit: how many records precede the new one, and the start of a free range of `nr`
    /// pages plus a guard page.
    fn find_gap(&self, g: &Inner<'m>, nr: usize) -> Option<(usize, usize)> {
        let need = (nr + 1) * PAGE_SIZE;
        let mut cand = self.start;
        for (pos, r) in g.iter().enumerate() {
            if cand.checked_add(need)? <= r.va {
                return Some((pos, cand));
            }
            cand = r.va + (r.nr_pages + 1) * PAGE_SIZE;
        }
        (cand.checked_add(need)? <= self.end).then_some((g.areas as usize, cand))
    }

    /// The descriptor of a page of an area, for as long as `held` is borrowed: the space's
    /// lock state (the area is linked) or the area's record (the caller owns the unlinked
    /// area). Pool item P1 of `desc.rs`.
    fn desc_at<'h, H: ?Sized>(&self, held: &'h H, pfn: Pfn) -> Option<&'h VmallocDesc> {
        match self.mem.memmap().load(self.mem.platform(), pfn)?.word.kind() {
            PageKind::Vmalloc { desc, .. } => Some(pool_desc_held(desc, held)),
            _ => None,
        }
    }

    /// Frees an area's first `got` pages, its page array and its record (unlinked, or never
    /// linked: the caller owns them).
    fn free_area(&self, cpu: &Cpu<'_>, rec: CacheObj<'m, VmapArea<'m>>, got: usize) {
        for i in 0..got {
            self.free_page(cpu, &rec, pfn_of(&rec, i));
        }
        let area = self.mem.slabs().obj_free(cpu, rec);
        if let Some(a) = area.pages {
            self.mem.slabs().karray_free(cpu, a);
        }
    }

    fn alloc_page<K: AreaKind>(&self, cpu: &Cpu<'_>, gfp: Gfp, rec: usize, i: usize) -> Result<Pfn, AllocError> {
        let pfn = self.mem.pages().alloc_internal(cpu, 0, gfp)?;
        let d = match self.mem.slabs().alloc_desc::<VmallocDesc>(cpu) {
            Ok(d) => d,
            Err(e) => {
                let r = self.mem.pages().free_internal(cpu, pfn, 0);
                debug_assert!(r.is_ok(), "{r:?}");
                return Err(e);
            }
        };
        d.flags.init(0, 0, pfn);
        d.counts.mapcount.store(0, Ordering::Relaxed);
        d.area.store(rec, Ordering::Relaxed);
        d.index.store(i as u64, Ordering::Relaxed);
        d.counts.refcount.store(1, Ordering::Release);
        let w = Word::desc_as(DescPtr::from_ref(d), K::TAG).expect("vmalloc tags");
        self.mem.pages().stamp_block(pfn, 0, w);
        Ok(pfn)
    }

    fn free_page(&self, cpu: &Cpu<'_>, area: &VmapArea<'m>, pfn: Pfn) {
        let d = self.desc_at(area, pfn);
        debug_assert!(d.is_some(), "vmalloc page {pfn} lost its word");
        self.mem.pages().stamp_block(pfn, 0, Word::TAIL);
        if let Some(d) = d {
            d.counts.refcount.store(0, Ordering::Release);
            self.mem.slabs().free_desc(cpu, d);
        }
        let rm = self.mem.memmap().region_map(self.mem.memmap().region_index(pfn).expect("vmalloc pfn"));
        self.mem.pages().free_claimed(cpu, rm, pfn, 0);
    }
}

impl<'m, P: Platform> VmallocSpace<'m, P> {
    /// Maps page `index` of the mappable area `area` at `va` of the user address space `mm`
    /// (which needs a pfn VMA there): the page's refcount and mapcount each go up by one,
    /// and [`crate::pgtable::MmRef::unmap`] brings them down. Done under the space lock, so
    /// the area cannot be freed meanwhile; `vfree` refuses with [`VmallocError::Mapped`]
    /// until every user entry is gone. (Only mappable areas can be passed: the area's type
    /// says so.)
    pub fn map_user(
        &self,
        cpu: &Cpu<'_>,
        mm: &MmRef<'_, P>,
        va: u64,
        area: &VmArea<Mappable>,
        index: usize,
    ) -> Result<(), VmallocError> {
        let len = index.checked_add(1).and_then(|n| n.checked_mul(PAGE_SIZE)).unwrap_or(usize::MAX);
        if index >= area.nr_pages {
            return Err(VmallocError::OutOfBounds { va: area.va, len });
        }
        let g = self.inner.lock();
        let rec = match self.locate(&g, area.va)? {
            Found::Area { rec, .. } if rec.va == area.va && rec.id == area.id => rec,
            _ => return Err(VmallocError::Stale(area.va)),
        };
        let page = UserPage::new(pfn_of(rec, index), Tag::VmallocMappable);
        mm.map_user_page(cpu, va, page).map_err(VmallocError::PageTable)
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

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::base::layout::MemmapLayout;
    use crate::machine::test_machine::machine;

    const BASE: usize = VMALLOC_START;

    #[test]
    fn areas_get_guard_gaps_and_words_name_their_area() {
        let m = machine(4096, MemmapLayout::Flat);
        let cpu = m.cpus().claim(0).unwrap();
        let mms = m.mm_caches(&cpu).unwrap();
        let kmm = mms.mm_create(&cpu, MmKind::Kernel).unwrap();
        let s = VmallocSpace::with_range(&m, &cpu, &kmm, BASE, 64 * PAGE_SIZE).unwrap();
        let a = s.vmalloc::<Unmappable>(&cpu, 3 * PAGE_SIZE - 1, Gfp::ZERO).unwrap();
        let b = s.vmalloc::<Mappable>(&cpu, 1, Gfp::KERNEL).unwrap();
        assert_eq!(a.addr(), BASE);
        assert_eq!(a.nr_pages(), 3);
        assert_eq!(b.addr(), a.addr() + 4 * PAGE_SIZE, "one guard page between areas");
        assert_eq!(
            s.vmalloc_to_pfn(a.addr() + 3 * PAGE_SIZE),
            Err(VmallocError::GuardPage { va: a.addr() + 3 * PAGE_SIZE, area: a.addr() })
        );
        for i in 0..3 {
            let pfn = s.vmalloc_to_pfn(a.addr() + i * PAGE_SIZE + 7).unwrap();
            match m.memmap().load(m.platform(), pfn).unwrap().word.kind() {
                PageKind::Vmalloc { mappable: false, desc } => {
                    let guard = m.rcu().read_lock(&cpu);
                    let d = desc.get(&guard);
                    assert_eq!(d.index(), i as u64);
                    assert_eq!(d.flags.pfn(), pfn);
                }
                k => panic!("{k:?}"),
            }
        }
        assert!(matches!(
            m.memmap().load(m.platform(), s.pfn_at(&b, 0).unwrap()).unwrap().word.kind(),
            PageKind::Vmalloc { mappable: true, .. }
        ));
        assert_eq!(s.stats(), VmallocStats { areas: 2, pages: 4 });
        s.vfree_area(&cpu, a).unwrap();
        let (s, e) = s.destroy(&cpu).unwrap_err();
        assert_eq!(e, VmallocError::Busy(1));
        let mut buf = [0u8; 4];
        assert_eq!(s.read_area(&b, 0, &mut buf), Ok(()));
        // `b` is ours; freeing it by address (keeping the handle) is what this tests: the
        // handle goes stale and is refused below.
        s.vfree_owned(&cpu, b.addr()).unwrap();
        assert_eq!(s.read_area(&b, 0, &mut buf), Err(VmallocError::Stale(b.addr())));
        assert_eq!(s.stats(), VmallocStats::default());
        assert!(s.destroy(&cpu).is_ok());
    }

    #[test]
    fn areas_are_mapped_by_kernel_page_tables() {
        let m = machine(4096, MemmapLayout::Flat);
        let cpu = m.cpus().claim(0).unwrap();
        let mms = m.mm_caches(&cpu).unwrap();
        let kmm = mms.mm_create(&cpu, MmKind::Kernel).unwrap();
        assert_eq!(kmm.mm().pt_pages(), 1, "just the PGD");
        let s = VmallocSpace::with_range(&m, &cpu, &kmm, BASE, 1024 * PAGE_SIZE).unwrap();
        // 600 pages straddle two PTE tables.
        let a = s.vmalloc::<Unmappable>(&cpu, 600 * PAGE_SIZE, Gfp::KERNEL).unwrap();
        assert_eq!(kmm.mm().pt_pages(), 1 + 1 + 1 + 2, "PGD, PUD, PMD and two PTE tables");
        for i in 0..600 {
            let (e, huge) = kmm.translate((a.addr() + i * PAGE_SIZE) as u64).unwrap();
            assert!(!huge && e.present() && !e.user());
            assert_eq!(e.pfn(), s.pfn_at(&a, i).unwrap(), "PTE {i} matches the page array");
            assert_eq!(s.vmalloc_to_pfn(a.addr() + i * PAGE_SIZE + 99), Ok(e.pfn()));
            let g = s.inner.lock();
            let d = s.desc_at(&*g, e.pfn()).unwrap();
            assert_eq!((d.counts.refcount(), d.counts.mapcount()), (2, 1), "the kernel PTE counts");
            drop(g);
        }
        assert_eq!(kmm.translate((a.addr() + 600 * PAGE_SIZE) as u64), None, "the guard page is unmapped");
        // A user address space cannot host a vmalloc space.
        let user = mms.mm_create(&cpu, MmKind::User).unwrap();
        assert_eq!(VmallocSpace::with_range(&m, &cpu, &user, BASE, PAGE_SIZE).err(), Some(VmallocError::NotKernelMm));
        // Nor may two spaces share a range of one kernel address space.
        assert!(matches!(
            VmallocSpace::with_range(&m, &cpu, &kmm, BASE + PAGE_SIZE, PAGE_SIZE).err(),
            Some(VmallocError::PageTable(MapError::Overlap(_)))
        ));
        s.vfree_area(&cpu, a).unwrap();
        assert_eq!(kmm.mm().pt_pages(), 1, "vfree freed every table it emptied");
        assert!(s.destroy(&cpu).is_ok());
        user.destroy(&cpu);
        kmm.destroy(&cpu);
    }

    #[test]
    fn bad_frees_are_precise_and_change_nothing() {
        let m = machine(4096, MemmapLayout::Flat);
        let cpu = m.cpus().claim(0).unwrap();
        let mms = m.mm_caches(&cpu).unwrap();
        let kmm = mms.mm_create(&cpu, MmKind::Kernel).unwrap();
        let s = VmallocSpace::with_range(&m, &cpu, &kmm, BASE, 64 * PAGE_SIZE).unwrap();
        let a = s.vmalloc::<Unmappable>(&cpu, 2 * PAGE_SIZE, Gfp::KERNEL).unwrap();
        let va = a.addr();
        // Every free by address below names an address that starts no live area (refused
        // before anything changes), or the area `a` this test owns, freed once.
        assert_eq!(
            s.vfree_owned(&cpu, va + PAGE_SIZE),
            Err(VmallocError::NotAreaStart { va: va + PAGE_SIZE, start: va })
        );
        assert_eq!(
            s.vfree_owned(&cpu, va + 2 * PAGE_SIZE),
            Err(VmallocError::GuardPage { va: va + 2 * PAGE_SIZE, area: va })
        );
        assert_eq!(s.vfree_owned(&cpu, va + 8 * PAGE_SIZE), Err(VmallocError::NotAllocated(va + 8 * PAGE_SIZE)));
        assert_eq!(s.vfree_owned(&cpu, 0x10), Err(VmallocError::OutOfRange(0x10)));
        assert_eq!(s.stats().areas, 1);
        s.vfree_owned(&cpu, va).unwrap();
        assert_eq!(s.vfree_owned(&cpu, va), Err(VmallocError::DoubleFree(va)));
        assert_eq!(s.vfree_area(&cpu, a), Err(VmallocError::Stale(va)));
        assert_eq!(s.vmalloc::<Unmappable>(&cpu, 0, Gfp::KERNEL).unwrap_err(), VmallocError::ZeroSize);
        assert_eq!(
            s.vmalloc::<Unmappable>(&cpu, 64 * PAGE_SIZE, Gfp::KERNEL).unwrap_err(),
            VmallocError::TooLarge(64 * PAGE_SIZE)
        );
    }

    #[test]
    fn bytes_cross_pages() {
        let m = machine(4096, MemmapLayout::Flat);
        let cpu = m.cpus().claim(0).unwrap();
        let mms = m.mm_caches(&cpu).unwrap();
        let kmm = mms.mm_create(&cpu, MmKind::Kernel).unwrap();
        let s = VmallocSpace::with_range(&m, &cpu, &kmm, BASE, 64 * PAGE_SIZE).unwrap();
        let a = s.vmalloc::<Mappable>(&cpu, 3 * PAGE_SIZE, Gfp::ZERO).unwrap();
        let data: std::vec::Vec<u8> = (0..6000u32).map(|i| (i * 7 % 251) as u8).collect();
        s.write_area(&a, 100, &data).unwrap();
        let mut back = std::vec![0u8; 6000];
        s.read(a.addr() + 100, &mut back).unwrap();
        assert_eq!(back, data);
        let mut z = [1u8; 100];
        s.read_area(&a, 0, &mut z).unwrap();
        assert_eq!(z, [0u8; 100], "Gfp::ZERO zeroes");
        assert_eq!(
            s.write_area(&a, 3 * PAGE_SIZE - 1, &[1, 2]),
            Err(VmallocError::OutOfBounds { va: a.addr() + 3 * PAGE_SIZE - 1, len: 2 })
        );
        assert_eq!(a.user_page(&s, 2).unwrap().tag(), Tag::VmallocMappable);
        s.vfree_area(&cpu, a).unwrap();
    }
}

/// The pfn of page `i` of an area.
fn pfn_of(r: &VmapArea<'_>, i: usize) -> Pfn {
    debug_assert!(i < r.nr_pages);
    Pfn(r.pages.as_ref().and_then(|a| a.get(i)).unwrap_or(0))
}

impl<'m> Inner<'m> {
    /// The records, in address order.
    fn iter(&self) -> impl Iterator<Item = &VmapArea<'m>> {
        core::iter::successors(self.head.as_deref(), |r| r.next.as_deref())
    }

    /// The link after the first `pos` records (`pos` 0: the head).
    fn link_mut(&mut self, pos: usize) -> &mut Option<CacheObj<'m, VmapArea<'m>>> {
        let mut link = &mut self.head;
        for _ in 0..pos {
            link = &mut link.as_mut().expect("pos is at most the number of records").next;
        }
        link
    }
}
