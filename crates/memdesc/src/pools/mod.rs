//! Pools: allocators that take whole pages from the page allocator and hand out something
//! else — virtually contiguous areas ([`vmalloc`], with scatter-gather lists over them in
//! [`sg`]), network buffers with netmem descriptors ([`page_pool`]), and small objects packed
//! into pages ([`zsmalloc`], [`z3fold`]). zsmalloc and z3fold share one handle table
//! ([`zs_handle`]) and the page helpers of zsmalloc's migration, so z3fold builds only with
//! zsmalloc (the `z3fold` feature implies `zsmalloc`).
//!
//! This is layer 6 of the core: a pool may use the layers below it (base, memmap, page
//! allocator, slab, folios, address spaces) and the other pools, never the machine assembly's
//! higher layers (health). Each pool is its own Cargo feature: `vmalloc` (with `sg`),
//! `page_pool`, `zsmalloc`, `z3fold`; `pools` turns on all four.

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
