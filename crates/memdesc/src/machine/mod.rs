//! Layer 7, the machine: [`PhysMem`] assembles one machine out of the layers below it and is
//! the public face of the crate. It owns one value per layer, in private fields, boots them in
//! order, and forwards the public API (`mem.alloc_pages`, `mem.kmalloc`, …) to them: the
//! forwarders are grouped by subsystem (`pages.rs` for the page allocator, `slab.rs` for the
//! slab layer), each one line long.
//!
//! # The pattern every layer follows
//! A layer (a folder: `page_alloc/`, `slab/`, `folio/`, `mm/`, `pools/`) has
//! 1. a **state** type with private fields that only its own modules touch
//!    (`PageAllocator<P>`, [`SlabState`](crate::slab::SlabState), `FolioState`, …);
//! 2. a **view** type that borrows its state together with the view of the layer below, and
//!    carries the layer's operations as methods:
//!
//! ```text
//! pub struct Slabs<'a, P: Platform> {          // slab/mod.rs
//!     pages: &'a PageAllocator<P>,             // the layer below (a view of it, in general)
//!     state: &'a SlabState,                    // this layer's own state
//! }
//! impl<'a, P: Platform> Slabs<'a, P> {
//!     pub(crate) fn kmalloc_raw(&self, cpu: &Cpu<'_>, size: usize, gfp: Gfp)
//!         -> Result<NonNull<u8>, AllocError> {
//!         // … self.pages.alloc_with(cpu, order, gfp, …) to reach down,
//!         //   self.state.kmalloc[i] for its own state
//!     }
//! }
//! // the next layer up nests the view: Folios<'a, P> { slabs: Slabs<'a, P>, state: &'a FolioState }
//! // (and may keep `pages: &'a PageAllocator<P>` beside it when it calls the allocator directly)
//! ```
//!
//! The bottom layer's state is its own view (`PageAllocator<P>` has the methods directly).
//! Views are `Copy` and hand out references with the machine's lifetime `'a`, never the
//! view's, so `mem.slabs().alloc_desc::<Folio>(cpu)?` returns a `&'a Folio` that outlives
//! the temporary view.
//!
//! 3. errors and handles (`AllocError`, `Pages`, `KBox`, `CacheRef`) live in the lowest layer
//!    that makes them; a handle's public constructor that needs the machine (`Pages::from_raw`,
//!    `KBox::from_raw`) is an inherent `impl` in this folder (the raw ones in `raw.rs`), over a
//!    `pub(crate) fn new` in its layer;
//! 4. the **machine** makes the views (`PhysMem::slabs()`), forwards the public API to them,
//!    and does everything that crosses layers upward: boot order (the page allocator calls the
//!    slab layer's `reserve` through a callback, then the machine runs [`Slabs::boot`] and
//!    stores its caches), and any "lower layer needs a higher one" step (reclaim under
//!    pressure, draining caches) is written here, calling down into each layer in turn.
//!    A lower layer never names `PhysMem` or a layer above it.
//!
//! Layers not yet converted (pgtable, pools, health) still add
//! `impl PhysMem` blocks; they reach the layers below through `PhysMem::pages` and
//! `PhysMem::slabs` (and `PhysMem::folios`). Converting one means: give it a state with private fields and a view
//! over the view below, move its `impl PhysMem` bodies to the view (replacing
//! `self.pages().x` by `self.<below>.x`), and leave one-line public forwarders here. The
//! health layer (migration, compaction, hwpoison, offlining, balloon) works on the whole
//! assembled machine and may keep `impl PhysMem`. So does the consistency checker
//! ([`check`]), which is here because it is built in every configuration and reads every
//! layer; it may later become per-layer checks assembled here.
//!
//! [`Slabs::boot`]: crate::slab::Slabs

pub mod check;
#[cfg(feature = "folio")]
mod folio;
#[cfg(feature = "pgtable")]
mod mm;
#[cfg(all(test, not(loom), feature = "pgtable"))]
mod mm_tests;
mod pages;
mod raw;
#[cfg(feature = "slab")]
mod slab;
#[cfg(all(test, not(loom), feature = "slab"))]
pub(crate) mod test_machine;

use crate::base::layout::MemoryLayout;
use crate::base::platform::Platform;
use crate::page_alloc::PageAllocator;

pub use crate::base::config::Config;
pub use crate::page_alloc::BootFailure;

/// The physical memory manager of one machine: the page allocator and every subsystem built
/// on it (see the module header for how the parts fit).
pub struct PhysMem<P: Platform> {
    /// Layer 2: memmap, zones, per-CPU lists, counters (page_alloc/).
    pages: PageAllocator<P>,
    /// Layer 3: slab caches, kmalloc and the descriptor caches (slab/).
    #[cfg(feature = "slab")]
    slab: crate::slab::SlabState,
    /// Layer 4: LRU lists and the page cache's caches (folio/).
    #[cfg(feature = "folio")]
    folio: crate::folio::FolioState,
}

impl<P: Platform> PhysMem<P> {
    /// Boots a machine: builds the memmap with the boot allocator, stamps reserved memory,
    /// frees every other page into the buddy lists, then boots the slab layer (its bootstrap
    /// caches placed by the boot allocator, kmalloc and the descriptor caches) and the folio
    /// layer.
    pub fn boot(platform: P, layout: &MemoryLayout, config: Config) -> Result<Self, BootFailure> {
        let nr_cpus = config.nr_cpus.max(1);
        #[cfg(feature = "slab")]
        let reserve = |p: &P, boot: &mut crate::base::boot::BootAllocator| {
            crate::slab::SlabState::reserve(p, boot, nr_cpus, config.debug_checks)
        };
        #[cfg(not(feature = "slab"))]
        let reserve = |_: &P, _: &mut crate::base::boot::BootAllocator| {
            let _ = nr_cpus;
            Ok(())
        };
        #[cfg_attr(not(feature = "slab"), allow(unused_variables))]
        let (pages, slab) = PageAllocator::boot(platform, layout, config, reserve)?;
        #[allow(unused_mut)]
        let mut mem = PhysMem {
            pages,
            #[cfg(feature = "slab")]
            slab,
            #[cfg(feature = "folio")]
            folio: crate::folio::FolioState::new(),
        };
        #[cfg(feature = "slab")]
        {
            let oom = |_| BootFailure::Boot(crate::base::boot::BootError::OutOfMemory { pages: 1 });
            let made = mem.slabs().boot().map_err(oom)?;
            mem.slab.set_boot_caches(made);
            #[cfg(feature = "folio")]
            {
                let made = mem.folios().boot().map_err(oom)?;
                mem.folio.set_boot_caches(made);
            }
        }
        Ok(mem)
    }

    /// The page allocator (layer 2), for the layers above it.
    #[inline]
    pub(crate) fn pages(&self) -> &PageAllocator<P> {
        &self.pages
    }

    /// The slab layer's view (layer 3), for the layers above it.
    #[cfg(feature = "slab")]
    #[inline]
    pub(crate) fn slabs(&self) -> crate::slab::Slabs<'_, P> {
        crate::slab::Slabs::new(&self.pages, &self.slab)
    }

    /// The pools' view (layer 6): the page allocator and the slab layer.
    #[cfg(any(feature = "vmalloc", feature = "page_pool", feature = "zsmalloc"))]
    #[inline]
    pub(crate) fn pools(&self) -> crate::pools::Pools<'_, P> {
        crate::pools::Pools::new(&self.pages, self.slabs())
    }

    /// The folio layer's view (layer 4), for the layers above it.
    #[cfg(feature = "folio")]
    #[inline]
    pub(crate) fn folios(&self) -> crate::folio::Folios<'_, P> {
        crate::folio::Folios::new(&self.pages, self.slabs(), &self.folio)
    }
}

#[cfg(any(feature = "vmalloc", feature = "page_pool", feature = "zsmalloc"))]
impl<P: Platform> crate::pools::view_sealed::Sealed for PhysMem<P> {}

/// The machine hosts the pools: their public entry points take `&mem`.
#[cfg(any(feature = "vmalloc", feature = "page_pool", feature = "zsmalloc"))]
impl<P: Platform> crate::pools::PoolHost<P> for PhysMem<P> {
    fn pools(&self) -> crate::pools::Pools<'_, P> {
        PhysMem::pools(self)
    }
}
