//! Pools: allocators that take whole pages from the page allocator and hand out something
//! else — virtually contiguous areas ([`vmalloc`], with scatter-gather lists over them in
//! [`sg`]), network buffers with netmem descriptors ([`page_pool`]), and small objects packed
//! into pages ([`zsmalloc`], [`z3fold`]). zsmalloc and z3fold share one handle table
//! ([`zs_handle`]) and the page helpers of zsmalloc's migration, so z3fold builds only with
//! zsmalloc (the `z3fold` feature implies `zsmalloc`).
//!
//! This is layer 6 of the core: a pool may use the layers below it (base, memmap, page
//! allocator, slab, folios, address spaces) and the other pools, never the machine or the
//! health layer. Each pool is its own Cargo feature: `vmalloc` (with `sg`), `page_pool`,
//! `zsmalloc`, `z3fold`; `pools` turns on all four.
//!
//! # The view and the host
//! The pools keep no layer-wide state: each pool's state is its own (a kmalloc'd pool state, a
//! space's records). What they need from below is the [`Pools`] view: the page allocator and
//! the slab layer's view, made by the machine. Public entry points take `&impl`
//! [`PoolHost`] — a sealed trait the machine ([`crate::PhysMem`]) implements, so callers pass
//! `&mem` as before — and keep the view (`Copy`, borrowing the machine for `'m`).
//!
//! # Unsafe
//! None here: descriptor references, page contents and pool states are reached through the
//! audited helpers of `memmap/desc.rs` ("pool-owned descriptors", items P1–P5), typed kmalloc
//! and slab objects through `slab/obj.rs`, and the raw entry points live in
//! `machine/raw.rs`. page_pool's shared core is a leaked `KObj` freed by address by its last
//! user (`Slabs::kfree_owned`).
#![forbid(unsafe_code)]

#[cfg(any(feature = "vmalloc", feature = "page_pool", feature = "zsmalloc"))]
pub(crate) use view::sealed as view_sealed;
#[cfg(any(feature = "vmalloc", feature = "page_pool", feature = "zsmalloc"))]
pub use view::{PoolHost, Pools};

#[cfg(any(feature = "vmalloc", feature = "page_pool", feature = "zsmalloc"))]
mod view {
    use crate::base::config::Config;
    use crate::base::cpu::CpuSet;
    use crate::base::rcu::Rcu;
    use crate::memmap::map::Memmap;
    use crate::page_alloc::PageAllocator;
    use crate::platform::Platform;
    use crate::slab::Slabs;

    /// The layers below as the pools see them: the page allocator and the slab layer's view,
    /// for the machine's lifetime `'a`. Made by the machine ([`PoolHost::pools`]); `Copy`.
    pub struct Pools<'a, P: Platform> {
        pages: &'a PageAllocator<P>,
        slabs: Slabs<'a, P>,
    }

    impl<P: Platform> Clone for Pools<'_, P> {
        fn clone(&self) -> Self {
            *self
        }
    }
    impl<P: Platform> Copy for Pools<'_, P> {}

    // Each pool uses some of these; a build with only some pools leaves others unused.
    #[cfg_attr(not(all(feature = "vmalloc", feature = "page_pool", feature = "zsmalloc")), allow(dead_code))]
    impl<'a, P: Platform> Pools<'a, P> {
        /// The view over a machine's page allocator and slab layer.
        pub(crate) fn new(pages: &'a PageAllocator<P>, slabs: Slabs<'a, P>) -> Self {
            Pools { pages, slabs }
        }
        /// The page allocator (layer 2).
        #[inline]
        pub(crate) fn pages(&self) -> &'a PageAllocator<P> {
            self.pages
        }
        /// The slab layer (layer 3).
        #[inline]
        pub(crate) fn slabs(&self) -> Slabs<'a, P> {
            self.slabs
        }
        /// The memmap.
        #[inline]
        pub(crate) fn memmap(&self) -> &'a Memmap {
            self.pages.memmap()
        }
        /// The platform.
        #[inline]
        pub(crate) fn platform(&self) -> &'a P {
            self.pages.platform()
        }
        /// The machine's RCU.
        #[inline]
        pub(crate) fn rcu(&self) -> &'a Rcu {
            self.pages.rcu()
        }
        /// The machine's CPUs.
        #[inline]
        #[allow(dead_code)] // no pool needs it yet; the view offers what the layers below do
        pub(crate) fn cpus(&self) -> &'a CpuSet {
            self.pages.cpus()
        }
        /// The machine's settings.
        #[inline]
        pub(crate) fn config(&self) -> &'a Config {
            self.pages.config()
        }
        /// An address that identifies the machine (its page allocator's).
        #[inline]
        pub(crate) fn machine_addr(&self) -> usize {
            self.pages as *const PageAllocator<P> as usize
        }
    }

    pub(crate) mod sealed {
        /// Only the crate's machine (and the view itself) host pools.
        pub trait Sealed {}
    }

    /// What the pools' public entry points take: something that makes the [`Pools`] view of a
    /// machine. Implemented by [`crate::PhysMem`] (in the machine layer) and by the view
    /// itself; sealed.
    pub trait PoolHost<P: Platform>: sealed::Sealed {
        /// The view of the layers below the pools.
        fn pools(&self) -> Pools<'_, P>;
    }

    impl<P: Platform> sealed::Sealed for Pools<'_, P> {}
    impl<P: Platform> PoolHost<P> for Pools<'_, P> {
        fn pools(&self) -> Pools<'_, P> {
            *self
        }
    }
}

#[cfg(feature = "page_pool")]
pub mod page_pool;
#[cfg(feature = "vmalloc")]
pub mod sg;
#[cfg(feature = "vmalloc")]
pub mod vmalloc;
#[cfg(feature = "z3fold")]
pub mod z3fold;
#[cfg(feature = "zsmalloc")]
pub mod zs_handle;
#[cfg(feature = "zsmalloc")]
pub mod zsmalloc;
