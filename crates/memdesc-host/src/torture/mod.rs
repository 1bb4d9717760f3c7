//! The torture engine behind `memdesc torture`: every thread is a CPU of one simulated machine
//! running a seeded random mix of every operation the system has, writing a known pattern into
//! every byte it allocates and verifying it before every free, with fault injection, quiescent
//! invariant checks and a per-CPU operation log.
//!
//! # Operations are a table
//!
//! [`OPS`] lists every operation as an [`Op`]: a name, a weight, and a function
//! `fn(&mut Worker) -> Outcome`. A worker picks an op by weight, runs it and logs it. Objects
//! an op allocates are [`Live`] records on the worker's list, each with an `id` from which its
//! byte pattern derives; the free ops pick one, verify its pattern ([`Worker::verify`]) and free
//! it. The table covers the page allocator (all orders and flags, guard pages), kmalloc and
//! slab caches, folios (refs, LRU, flags, split), the page cache, descriptor lookup under RCU,
//! page tables (anon folios mapped into each CPU's own `Mm` by PTEs or a PMD, `split_pmd`,
//! forks that share them, destroyed later; mappable driver memory in a pfn VMA), vmalloc,
//! page_pool blocks and fragments, zsmalloc and z3fold objects with pool compaction and
//! `zs_migrate_page` under them, zone compaction, balloon inflate/deflate and offlining /
//! onlining of flat ranges (an unmovable page in the range is a clean failure, counted as
//! `failed`). Each CPU's `Mm` has an anon VMA and a pfn VMA cut into 2 MiB slots, one mapping
//! per slot. **A new subsystem plugs in** by:
//!
//! 1. adding a [`Live`] variant for the objects it hands out, with its arm in
//!    [`Worker::release`] (verify the pattern, free, expect `Ok`) and in [`Live::pages`];
//! 2. adding its rows to [`OPS`]: an allocating op that fills the memory with
//!    [`Worker::fill`] and pushes the `Live`, a freeing op that calls [`Worker::release`], and
//!    any op that only exercises it (ops that hold nothing afterwards just return an
//!    [`Outcome`]);
//! 3. if it has invariants of its own, checking them in `Worker::local_check` (per CPU, at
//!    every quiescent point) or in `global_check` (leader only);
//! 4. if `memory_failure` can destroy its objects, dropping them in `Worker::drop_poisoned`.
//!
//! # Patterns and moving memory
//!
//! A pattern is a window of a fixed 128 KiB pseudo-random source chosen by the key (one
//! `memcpy` to fill, one `memcmp` to verify, so debug builds run fast too). Raw pages are keyed
//! by pfn; folios, mapped memory and objects by their id and page index, because compaction,
//! offlining and migration move folios. A folio moves only while nobody but the page cache and
//! its mappings holds a reference (migration takes its own and freezes at the expected count),
//! so a folio this CPU holds stays put; the owner still touches its pages under the folio lock
//! ([`Worker::lock_folio`]), and the split op needs that lock.
//!
//! # Folio references
//!
//! A CPU keeps the references it holds on a [`Live`] folio in raw form (`FolioRef::into_raw`,
//! as a C-like caller keeps pfns) and takes or drops one only through the typed API: a
//! `FolioRef` adopted from it, cloned (`folio_get`) or put (`folio_put`). Nothing waits for a
//! frozen count or retries a refused put: a reference a migration or split took from under its
//! holder would show as a refused put or a wrong count at the next quiescent check. The
//! `folio_clone`, `rcu_lookup` (`folio_try_get` from a random pfn), `pc_lookup` and
//! `folio_migrate` ops take and drop references while other CPUs migrate, split and compact;
//! `folio_hot` has every CPU either reference or migrate one shared folio, so the two meet
//! constantly.
//!
//! # hwpoison
//!
//! [`POISON_HOOK`] calls `memory_failure` at a uniformly random pfn of the machine (any kind of
//! page, as a machine check picks it). Each op draws with probability `poison_rate`; the draws
//! are injected at the next quiescent point, one CPU at a time with the others stopped, and
//! then every CPU drops the held objects the events destroyed (`poison_lost_objects`): a
//! poisoned folio's surviving pieces are verified and put, the poisoned piece put unverified
//! (its last put retires it), a poisoned slab's objects freed unverified (which retires the
//! slab when empty). `poisoned_pages` counts pages retired (now or at the owner's last put);
//! calls that left kernel memory in place are `poison_ignored`, typed refusals (two-level
//! region, kinds whose handler is not wired, busy, already poisoned) `poison_refused`, neither
//! a violation. At the end `lost_pages` leaves out the pages whose word is `HwPoison`
//! (`hwpoison_pages`), and every other page must be back.
//!
//! # Invariants at quiescent points
//!
//! Per CPU: held folios' refcounts equal the references taken; every mapped folio's mapcount
//! equals the entries the reverse map finds (`rmap_walk` over this CPU's mm and its forks) and
//! its refcount those entries plus the owner's; files' trees verify and cached folios hold
//! exactly the cache's reference. Leader: the allocator checker, `check_descriptors` (every
//! block descriptor kind against its words) and the zsmalloc pool's own `verify`.
//!
//! # Reproducibility
//!
//! Worker `i` draws from a generator seeded by `(seed, i)`, the machine's fault injector from
//! `seed`, and quiescent points come every [`TortureConfig::check_every`] operations per CPU,
//! never on a timer, so with one thread the whole run is a function of the seed: the log hash
//! ([`TortureReport::log_hash`]) and tail repeat exactly.
//!
//! This module touches only the machine it boots, through the public API.//!
//! # Files
//! [`engine`] (the run and its quiescent points) over [`ops`] (the table, one file per
//! subsystem) over [`worker`] (one CPU: what it holds, drawing and logging ops) over
//! [`pattern`] and [`config`]. No file imports this one.

pub mod config;
pub mod engine;
pub mod ops;
pub mod pattern;
pub mod worker;

pub use config::*;
pub use engine::*;
pub use ops::*;
pub use worker::*;

#[cfg(test)]
mod tests {
    use super::pattern::*;
    use super::*;

    #[test]
    fn pattern_detects_every_changed_byte() {
        let mut buf = vec![0u8; 37];
        // SAFETY: our buffer.
        unsafe {
            fill_raw(buf.as_mut_ptr(), 37, 99);
            assert_eq!(verify_raw(buf.as_ptr(), 37, 99), 0);
            buf[3] ^= 1;
            buf[36] ^= 0xff;
            assert_eq!(verify_raw(buf.as_ptr(), 37, 99), 2);
            assert!(verify_raw(buf.as_ptr(), 37, 0xDEAD_BEEF_1234_5678) > 30, "another object's pattern");
        }
        // Longer than a window: chunks, each checked.
        let n = PAT_CHUNK * 2 + 100;
        let mut big = vec![0u8; n];
        // SAFETY: our buffer.
        unsafe {
            assert_eq!(nonzero_raw(big.as_ptr(), n), 0);
            fill_raw(big.as_mut_ptr(), n, 5);
            assert_eq!(verify_raw(big.as_ptr(), n, 5), 0);
            big[PAT_CHUNK + 1] ^= 0x10;
            big[n - 1] ^= 1;
            assert_eq!(verify_raw(big.as_ptr(), n, 5), 2);
            assert!(nonzero_raw(big.as_ptr(), n) > n as u64 / 2);
        }
    }

    #[test]
    fn op_weights_are_positive_and_names_unique() {
        let mut names: Vec<_> = OPS.iter().map(|o| o.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), OPS.len());
        assert!(OPS.iter().all(|o| o.weight > 0));
    }
}
