//! The operation table ([`OPS`]): every op of every subsystem with its weight, one file per
//! subsystem, and the hwpoison plug-in point ([`POISON_HOOK`]).

pub mod folio;
pub mod health;
pub mod pagecache;
pub mod pages;
pub mod pgtable;
pub mod pools;
pub mod slab;

use crate::torture::worker::*;
use folio::*;
use health::*;
use pagecache::*;
use pages::*;
use pgtable::*;
use pools::*;
use slab::*;

/// The hwpoison plug-in point: `memory_failure` at a uniformly random pfn of the machine (any
/// kind of page, as a machine check picks). Each op draws with probability `poison_rate`;
/// the draws are injected at the next quiescent point, one CPU at a time with the others
/// stopped, so that the owner of a hit object drops it as lost (a split folio's surviving
/// pieces verified and put, a poisoned slab's objects freed unverified) before it touches it
/// again. Kinds `memory_failure` refuses with a typed error are counted (`poison_refused`).
pub const POISON_HOOK: Option<PoisonHook> = Some(poison_random_pfn);

/// Every operation, with its weight. See the module docs for how a subsystem adds its rows.
pub const OPS: &[Op] = &[
    Op { name: "page_alloc", weight: 10, run: op_page_alloc },
    Op { name: "page_free", weight: 9, run: op_page_free },
    Op { name: "page_misuse", weight: 1, run: op_page_misuse },
    Op { name: "kmalloc", weight: 12, run: op_kmalloc },
    Op { name: "kfree", weight: 11, run: op_kfree },
    Op { name: "cache_alloc", weight: 10, run: op_cache_alloc },
    Op { name: "cache_free", weight: 9, run: op_cache_free },
    Op { name: "cache_alloc_bulk", weight: 2, run: op_cache_alloc_bulk },
    Op { name: "cache_free_bulk", weight: 2, run: op_cache_free_bulk },
    Op { name: "cache_shrink", weight: 1, run: op_cache_shrink },
    Op { name: "folio_alloc", weight: 8, run: op_folio_alloc },
    Op { name: "folio_put", weight: 7, run: op_folio_put },
    Op { name: "folio_ref", weight: 3, run: op_folio_ref },
    Op { name: "folio_flags", weight: 3, run: op_folio_flags },
    Op { name: "folio_split", weight: 2, run: op_folio_split },
    Op { name: "folio_clone", weight: 3, run: op_folio_clone },
    Op { name: "folio_migrate", weight: 2, run: op_folio_migrate },
    Op { name: "folio_hot", weight: 4, run: op_folio_hot },
    Op { name: "pc_insert", weight: 6, run: op_pc_insert },
    Op { name: "pc_lookup", weight: 8, run: op_pc_lookup },
    Op { name: "pc_delete", weight: 2, run: op_pc_delete },
    Op { name: "pc_truncate", weight: 2, run: op_pc_truncate },
    Op { name: "rcu_lookup", weight: 6, run: op_rcu_lookup },
    Op { name: "drain", weight: 1, run: op_drain },
    Op { name: "exchange", weight: 2, run: op_exchange },
    Op { name: "free_any", weight: 1, run: op_free_any },
    Op { name: "mm_map", weight: 5, run: op_mm_map },
    Op { name: "mm_unmap", weight: 5, run: op_mm_unmap },
    Op { name: "mm_split_pmd", weight: 1, run: op_mm_split_pmd },
    Op { name: "mm_fork", weight: 1, run: op_mm_fork },
    Op { name: "mm_child_drop", weight: 1, run: op_mm_child_drop },
    Op { name: "dev_map", weight: 2, run: op_dev_map },
    Op { name: "vmalloc", weight: 4, run: op_vmalloc },
    Op { name: "vfree", weight: 4, run: op_vfree },
    Op { name: "pp_alloc", weight: 5, run: op_pp_alloc },
    Op { name: "pp_put", weight: 5, run: op_pp_put },
    Op { name: "zs_malloc", weight: 5, run: op_zs_malloc },
    Op { name: "zs_free", weight: 5, run: op_zs_free },
    Op { name: "zs_compact", weight: 1, run: op_zs_compact },
    Op { name: "zs_migrate", weight: 2, run: op_zs_migrate },
    Op { name: "z3_malloc", weight: 4, run: op_z3_malloc },
    Op { name: "z3_free", weight: 4, run: op_z3_free },
    Op { name: "z3_compact", weight: 1, run: op_z3_compact },
    Op { name: "compact", weight: 1, run: op_compact },
    Op { name: "balloon", weight: 1, run: op_balloon },
    Op { name: "offline", weight: 1, run: op_offline },
    Op { name: "guard_alloc", weight: 2, run: op_guard_alloc },
];
