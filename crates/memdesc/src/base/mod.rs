//! Layer 0, the base: what every other layer stands on and nothing here depends on a layer
//! above it.
//!
//! - [`addr`]: page frame numbers, page and area sizes;
//! - [`platform`]: the one seam to the machine (direct map, local maps);
//! - [`layout`]: the boot memory map (regions, nodes, zone types);
//! - `boot` (crate-private; its error type is public): the boot allocator that carves the memmap and per-CPU arrays out of that map;
//! - [`gfp`], [`pageblock`]: allocation flags and the migratetypes they map to;
//! - [`cpu`], [`rcu`]: CPU tokens and the machine's RCU (which owns the CPU set);
//! - [`config`]: the machine's settings ([`config::Config`]);
//! - [`fault`]: the fault injector the allocators consult;
//! - `sync`: atomics (loom-swappable) and the spin lock;
//! - `list` (crate-private): THE intrusive list type every list uses;
//! - [`page_access`]: THE safe access type for page contents (copy, fill, compare).
//!
//! Import rule: a module here imports only other modules of `base` (and `core`).

pub mod addr;
pub(crate) mod boot;
pub mod config;
pub mod cpu;
pub mod fault;
pub mod gfp;
pub mod layout;
pub(crate) mod list;
pub mod page_access;
pub mod pageblock;
pub mod platform;
pub mod rcu;
pub(crate) mod sync;

pub use boot::{BootError, MAX_BOOT_RANGES};
