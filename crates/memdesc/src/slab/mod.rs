//! Layer 3, the slab layer: object caches (their layout and free-list encoding in [`cache`],
//! the operations in [`alloc`], the users' handles in [`handle`]), their per-CPU sheaves
//! ([`sheaf`]), kmalloc's size classes and the descriptor caches ([`kmalloc`]).
//!
//! Inside the layer, imports go one way: `mod.rs` (the state and the view) imports only the
//! data modules `cache` and `sheaf`; `alloc`, `handle` and `kmalloc` (the view's methods)
//! import `mod.rs` and the data modules.
//!
//! # State and view
//! The layer's state is [`SlabState`] (private fields: the bootstrap caches, the list of every
//! cache, kmalloc's classes, the descriptor caches). Its operations are methods of
//! [`Slabs`], a borrowed view that pairs the state with the layer below:
//!
//! ```text
//! Slabs<'a, P> { pages: &'a PageAllocator<P>, state: &'a SlabState }
//! ```
//!
//! `self.pages.alloc_internal(..)` is how a slab gets its pages, `self.state.caches` is this
//! layer's own state. The machine ([`crate::machine::PhysMem`]) makes the view
//! (`mem.slabs()`) and forwards the public API (`mem.kmalloc`, `mem.create_cache`, …) to it.
//! References the view hands out (`&'a SlabCache`, `&'a Slab`, [`CacheRef<'a, P>`]) borrow
//! the machine, not the view, so the view is a cheap temporary (it is `Copy`).
//!
//! # Import rule
//! This layer imports `base`, `memmap`, `page_alloc` and itself. Nothing here names the
//! machine or a layer above: boot is orchestrated by the machine, which calls
//! `SlabState::reserve` (through the page allocator's boot callback, before the buddy
//! allocator takes the remaining pages) and then `Slabs::boot` once pages can be allocated.

pub mod alloc;
pub mod cache;
pub mod handle;
pub mod kmalloc;
pub mod obj;
pub mod sheaf;

use crate::base::boot::BootAllocator;
use crate::base::list::List;
use crate::base::platform::Platform;
use crate::base::sync::SpinLock;
use crate::memmap::desc_ref::Kept;
use crate::page_alloc::{AllocError, BootFailure, PageAllocator};

/// The slab descriptor (defined with the other descriptor layouts in [`crate::memmap::desc`]: the
/// page word names it in every build).
pub use crate::memmap::desc::Slab;
#[cfg(feature = "health")]
pub(crate) use cache::SlabPoison;
pub use cache::{CacheArgs, CacheFamily, SlabCache, SlabError, SlabInfo, MAX_SLAB_ORDER, MIN_PARTIAL};
pub use handle::{CacheRef, SlabObj};
pub use obj::{CacheObj, KArray, KObj, ObjCache, OutOfBounds};

use cache::SlabBoot;

/// Number of kmalloc size classes ([`kmalloc::KMALLOC_SIZES`]).
pub const NR_KMALLOC: usize = 13;
/// Largest kmalloc size whose cache is found by table (one slot per 8 bytes).
pub(crate) const KMALLOC_SMALL_MAX: usize = 256;
/// Slots of kmalloc's size table: slot `size.div_ceil(8)` for sizes up to
/// [`KMALLOC_SMALL_MAX`].
pub(crate) const KMALLOC_SMALL_SLOTS: usize = KMALLOC_SMALL_MAX / 8 + 1;

/// The slab layer's part of a machine: the bootstrap caches, the list of every cache,
/// kmalloc's size classes and (with a subsystem that has descriptors) the descriptor caches.
/// Private: only this layer's modules touch it, through [`Slabs`].
pub struct SlabState {
    boot: SlabBoot,
    /// Every cache of the machine.
    caches: SpinLock<List<SlabCache>>,
    /// kmalloc's size classes (permanent caches).
    kmalloc: [Kept<SlabCache>; NR_KMALLOC],
    /// kmalloc's cache for each size up to [`KMALLOC_SMALL_MAX`], by `size.div_ceil(8)`
    /// (permanent caches): the common sizes find their cache in one load.
    kmalloc_small: [Kept<SlabCache>; KMALLOC_SMALL_SLOTS],
    /// The descriptor caches (permanent), by [`crate::memmap::desc::CachedDescriptor::KIND`].
    #[cfg(any(feature = "folio", feature = "page_pool", feature = "zsmalloc"))]
    desc_caches: [Kept<SlabCache>; crate::memmap::desc::NR_DESC_KINDS],
}

impl SlabState {
    /// Places the two bootstrap caches in boot-allocator memory (boot, before the buddy
    /// allocator takes the remaining pages).
    pub(crate) fn reserve<P: Platform>(
        p: &P,
        boot: &mut BootAllocator,
        nr_cpus: usize,
        debug: bool,
    ) -> Result<SlabState, BootFailure> {
        let pfn = boot.alloc(SlabBoot::pages(nr_cpus), 0, None)?;
        let boot = SlabBoot::build(p, pfn, nr_cpus, debug)
            .ok_or(BootFailure::Memmap(crate::memmap::MemmapError::NoDirectMap(pfn)))?;
        Ok(SlabState {
            boot,
            caches: SpinLock::new(List::new()),
            kmalloc: [Kept::NONE; NR_KMALLOC],
            kmalloc_small: [Kept::NONE; KMALLOC_SMALL_SLOTS],
            #[cfg(any(feature = "folio", feature = "page_pool", feature = "zsmalloc"))]
            desc_caches: [Kept::NONE; crate::memmap::desc::NR_DESC_KINDS],
        })
    }

    /// Records the caches [`Slabs::boot`] created.
    pub(crate) fn set_boot_caches(&mut self, made: BootCaches) {
        (self.kmalloc, self.kmalloc_small) = made.kmalloc;
        #[cfg(any(feature = "folio", feature = "page_pool", feature = "zsmalloc"))]
        {
            self.desc_caches = made.desc_caches;
        }
    }
}

/// kmalloc's size classes and its size table (see [`SlabState`]).
pub(crate) type KmallocTables = ([Kept<SlabCache>; NR_KMALLOC], [Kept<SlabCache>; KMALLOC_SMALL_SLOTS]);

/// The caches the slab half of boot creates (see [`Slabs::boot`]).
pub(crate) struct BootCaches {
    /// The size classes and the size table.
    kmalloc: KmallocTables,
    #[cfg(any(feature = "folio", feature = "page_pool", feature = "zsmalloc"))]
    desc_caches: [Kept<SlabCache>; crate::memmap::desc::NR_DESC_KINDS],
}

/// The slab layer seen with the page allocator below it: every slab operation is a method of
/// this view (see the module header).
pub struct Slabs<'a, P: Platform> {
    pages: &'a PageAllocator<P>,
    state: &'a SlabState,
}

impl<P: Platform> Clone for Slabs<'_, P> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<P: Platform> Copy for Slabs<'_, P> {}

impl<'a, P: Platform> Slabs<'a, P> {
    /// The view of `state` over `pages` (the machine makes it).
    #[inline]
    pub(crate) fn new(pages: &'a PageAllocator<P>, state: &'a SlabState) -> Self {
        Slabs { pages, state }
    }

    /// The slab half of boot, once the page allocator runs: registers the bootstrap caches and
    /// creates kmalloc's size classes and the descriptor caches. The machine stores the result
    /// with [`SlabState::set_boot_caches`] (the view only borrows the state).
    pub(crate) fn boot(&self) -> Result<BootCaches, AllocError> {
        for c in [&self.state.boot.kmem_cache, &self.state.boot.slab_desc] {
            self.register_cache(c.get().expect("bootstrap caches are built by reserve"));
        }
        Ok(BootCaches {
            kmalloc: self.create_kmalloc_caches()?,
            #[cfg(any(feature = "folio", feature = "page_pool", feature = "zsmalloc"))]
            desc_caches: self.create_desc_caches()?,
        })
    }
}
