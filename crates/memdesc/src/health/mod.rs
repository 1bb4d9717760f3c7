//! Layer 8, memory health: operations over the whole assembled machine, above
//! [`crate::machine`] — migration ([`migrate`]) and zone compaction ([`compaction`]),
//! hardware-poison handling ([`hwpoison`]), offlining and onlining ranges ([`offline`]) and the
//! balloon ([`balloon`]). They touch every kind of page, so they work on [`PhysMem`] itself
//! (`impl PhysMem` blocks) and reach each layer through its methods.
//!
//! Import rule: this layer may import every layer, and no layer imports it. (The consistency
//! checker stays in `check.rs`, built in every configuration.) What each of these does per
//! descriptor kind is one table, `kinds`, one file per kind.
//!
//! [`PhysMem`]: crate::PhysMem

pub mod balloon;
pub mod compaction;
pub mod hwpoison;
pub(crate) mod kinds;
#[cfg(all(test, not(loom)))]
mod kinds_tests;
pub mod migrate;
pub mod offline;
mod poisoned;
