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

// transition alias (issue 13): the old flat paths (`crate::addr`, `crate::zone`, …) of the lower
// layers, inside the crate only, until every internal user is moved to the layer paths (the files
// of base, memmap and page_alloc no longer use them; machine/ and the layers above still do). Outside
// the crate these modules are reached as `memdesc::base::…`, `memdesc::memmap::…`,
// `memdesc::page_alloc::…` and `memdesc::machine::…`, and the types a kernel embeds are
// re-exported below.
#[allow(unused_imports)]
pub(crate) use base::{addr, boot, config, cpu, fault, gfp, layout, list, page_access, pageblock, platform, rcu, sync};
// transition alias (issue 13), crate-internal
#[allow(unused_imports)]
pub(crate) use memmap::{desc, desc_ref, lookup, tag, word};
// transition alias (issue 13), crate-internal
#[allow(unused_imports)]
pub(crate) use machine::check;
// transition alias (issue 13), crate-internal
#[allow(unused_imports)]
pub(crate) use page_alloc::{guard, isolate, pages, pcp, zone};
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

// The public API of the lower layers at the crate root: what a kernel embeds (docs/ARCHITECTURE.md
// "Public API" has the table).
pub use base::addr::{Pfn, PAGE_SIZE};
pub use base::config::Config;
pub use base::cpu::{Cpu, ForeignCpu, MAX_CPUS};
pub use base::gfp::Gfp;
pub use base::layout::{MemmapLayout, MemoryLayout, RegionSpec, ZoneType};
pub use base::pageblock::MigrateType;
pub use base::platform::Platform;
pub use machine::PhysMem;
pub use page_alloc::pages::Pages;
pub use page_alloc::{AllocError, BootFailure, FreeError};
#[cfg(feature = "slab")]
pub use slab::{CacheArgs, CacheRef, SlabCache, SlabError};
// transition alias (issue 13), removed when the layers land
#[cfg(feature = "folio")]
pub use folio::pagecache;
