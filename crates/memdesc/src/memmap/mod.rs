//! Layer 1, the memmap: one 8-byte word per page and the descriptors those words point to.
//!
//! - [`tag`]: the four-bit tag of a word (shared by `word` and `desc`, so neither imports
//!   the other for it);
//! - [`word`]: the word format, its encoders and decoders ([`word::Page`] is the atomic);
//! - [`desc`]: the layout of every descriptor kind (folio, slab, ptdesc, zspage, …), Linux's
//!   `mm_types.h`: data only, owned and mutated by the layer that allocates each kind;
//! - [`map`] (re-exported here as [`Memmap`]): where each pfn's word lives, flat or two-level;
//! - [`desc_ref`]: THE module that turns a descriptor address into a reference, its lifetime
//!   tied to a pin, a lock guard or an RCU read section;
//! - [`lookup`]: the lockless pfn-to-descriptor read under RCU;
//! - `kinds`: the per-kind table of this layer (mappability rule, checker block function).
//!
//! Import rule: this layer imports only `base` and itself. Within it, `tag` imports nothing,
//! `desc` imports `tag`, `word` imports `tag` and `desc`, `map` and `lookup` import `word`.
//! The layers above allocate the memory and decide what the words say; this layer only
//! stores and decodes them.

pub mod desc;
pub mod desc_ref;
pub(crate) mod kinds;
pub mod lookup;
pub mod map;
pub mod tag;
pub mod word;

pub(crate) use map::RegionMap;
pub use map::{Memmap, MemmapError, WordView, SECTION_SHIFT};
