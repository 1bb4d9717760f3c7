//! # memdesc
//!
//! A physical memory manager in which every 4 KiB page is described by one 8-byte tagged word
//! ([`word::Page`]) that names what the page is and, for most kinds, points to a typed memory
//! descriptor shared by all the pages it covers ([`desc`]), instead of a 64-byte `struct page`.
//!
//! The crate is `#![no_std]` and depends on nothing; it reaches the machine only through
//! [`Platform`]. Start at [`PhysMem::boot`].
//!
//! Each subsystem above the page allocator is a Cargo feature, all on by default: `slab`
//! (slab, kmalloc), `folio` (folios, LRU, page cache), `pgtable` (page tables, VMAs, rmap),
//! `vmalloc`, `page_pool`, `zsmalloc`, `z3fold` (`pools` for all four) and `health`
//! (migration, compaction, hwpoison, offlining, balloon). Without default features the crate
//! is the page allocator alone.
//!
//! ## Quick start
//!
//! `examples/quickstart.rs` boots a machine over a host buffer with a tiny [`Platform`],
//! allocates and frees pages through an owned [`Pages`] handle, shows the raw interface
//! refusing a double free, and uses kmalloc (it needs `slab`). Run it with
//! `cargo run -p memdesc --example quickstart`; the test suite runs it too. Its source:
//!
#![doc = concat!("```rust,ignore\n", include_str!("../examples/quickstart.rs"), "```")]
#![no_std]
#![deny(missing_docs)]

#[cfg(any(test, feature = "alloc"))]
extern crate alloc;
#[cfg(test)]
extern crate std;

// The layers, bottom to top (docs/ARCHITECTURE.md has the map). A module may import only from
// its own layer and the layers below it; nothing below `machine` names `PhysMem`.
// 0: addresses, platform, boot map, flags, CPUs, RCU, settings.
pub mod base;
// 1: page words and descriptor layouts.
pub mod memmap;
// 2: zones, buddy, per-CPU lists.
pub mod page_alloc;
// 3: slab caches, kmalloc, descriptor caches.
#[cfg(feature = "slab")]
pub mod slab;
// 4: folios, LRU lists, the page cache.
#[cfg(feature = "folio")]
pub mod folio;
// 5: address spaces: page tables, VMAs, rmap.
#[cfg(feature = "pgtable")]
pub mod mm;
// 6: vmalloc, sg, page_pool, zsmalloc, z3fold.
pub mod pools;
// 7: the assembled machine (`PhysMem`) and the public API.
pub mod machine;
// 8: migration, compaction, hwpoison, offlining, balloon.
#[cfg(feature = "health")]
pub mod health;

// transition alias (issue 13): the old flat paths (`crate::addr`, `memdesc::zone`, …) name the
// modules in their layer folders until every user is moved to the new paths.
pub use base::{addr, boot, config, cpu, fault, gfp, layout, list, page_access, pageblock, platform, rcu};
// transition alias (issue 13)
pub(crate) use base::sync;
// transition alias (issue 13)
pub use memmap::{desc, desc_ref, lookup, tag, word};
// transition alias (issue 13)
pub use machine::check;
// transition alias (issue 13)
pub use page_alloc::{guard, isolate, pages, pcp, zone};
// transition alias (issue 13)
#[cfg(feature = "slab")]
pub use slab::{kmalloc, sheaf};
// transition alias (issue 13)
#[cfg(feature = "health")]
pub use health::{balloon, compaction, hwpoison, migrate, offline};

// transition alias (issue 13), removed when the layers land
#[cfg(feature = "page_pool")]
pub use pools::page_pool;
// transition alias (issue 13), removed when the layers land
#[cfg(feature = "vmalloc")]
pub use pools::{sg, vmalloc};
// transition alias (issue 13), removed when the layers land
#[cfg(feature = "z3fold")]
pub use pools::z3fold;
// transition alias (issue 13), removed when the layers land
#[cfg(feature = "zsmalloc")]
pub use pools::zsmalloc;

// transition alias (issue 13), removed when the layers land
#[cfg(feature = "pgtable")]
pub use mm::{mappable, pgtable};

// transition alias (issue 13), removed when the layers land
pub use addr::{Pfn, PAGE_SIZE};
pub use config::Config;
// transition alias (issue 13), removed when the layers land
#[cfg(feature = "folio")]
pub use folio::pagecache;
pub use gfp::Gfp;
pub use layout::{MemmapLayout, MemoryLayout, RegionSpec, ZoneType};
pub use machine::PhysMem;
pub use page_alloc::{AllocError, BootFailure, FreeError};
pub use pageblock::MigrateType;
pub use pages::Pages;
pub use platform::Platform;
#[cfg(feature = "slab")]
pub use slab::{CacheArgs, CacheRef, SlabCache, SlabError};
pub use sync::{SpinGuard, SpinLock};
