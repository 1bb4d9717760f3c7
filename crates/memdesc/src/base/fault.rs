//! Fault injection, after Linux's `fail_page_alloc` and `failslab`: a per-machine, seeded,
//! deterministic injector that makes allocations fail at a given rate, so tests and
//! `memdesc torture` can prove that every caller unwinds cleanly (no leak, no half-updated
//! descriptor).
//!
//! Every allocation site of the core asks [`FaultInjector::should_fail`] with its
//! [`FaultSite`] class before it allocates:
//!
//! | site | where |
//! |---|---|
//! | [`FaultSite::PageAlloc`] | `PhysMem::alloc_pages` and every typed page allocation (`alloc_with`): slabs' pages, folios, large kmalloc, per-CPU cache memory |
//! | [`FaultSite::Slab`] | every slab object allocation (`kmem_cache_alloc`, `kmalloc`, bulk, cache creation) |
//! | [`FaultSite::Desc`] | descriptor allocation from the TYPESAFE_BY_RCU descriptor caches (folios, split pieces, later ptdesc, zspage, …) |
//! | [`FaultSite::PageCacheNode`] | page-cache radix-tree node allocation |
//!
//! A disabled injector costs one relaxed load per site. An enabled one draws from a
//! counter-based generator (splitmix64 over an atomic counter seeded by the caller): with one
//! CPU the sequence of decisions is a pure function of the seed and the sequence of calls, so a
//! failing run replays exactly.
//!
//! This module touches only its own atomics.
//!
//! ```
//! use memdesc::base::fault::{FaultConfig, FaultInjector, FaultSite, FaultSites};
//! // A machine's own injector is `PhysMem::fault()`; a standalone one behaves the same.
//! let f = FaultInjector::new();
//! assert!(!f.should_fail(FaultSite::PageAlloc)); // disabled: one relaxed load
//! f.configure(FaultConfig { rate: 1.0, seed: 7, sites: FaultSites::only(FaultSite::PageAlloc) });
//! assert!(f.should_fail(FaultSite::PageAlloc));
//! assert!(!f.should_fail(FaultSite::Slab)); // not a chosen site
//! assert_eq!(f.injected(), 1);
//! f.disable();
//! ```

use crate::base::sync::{AtomicU32, AtomicU64, Ordering};

/// A class of allocation site.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultSite {
    /// The page allocator (every order, every flag).
    PageAlloc = 0,
    /// Slab objects: caches and kmalloc.
    Slab = 1,
    /// Descriptors from the per-kind descriptor caches.
    Desc = 2,
    /// Page-cache tree nodes.
    PageCacheNode = 3,
}

/// Number of [`FaultSite`] classes.
pub const NR_FAULT_SITES: usize = 4;

impl FaultSite {
    /// Every class, in order.
    pub const ALL: [FaultSite; NR_FAULT_SITES] =
        [FaultSite::PageAlloc, FaultSite::Slab, FaultSite::Desc, FaultSite::PageCacheNode];

    /// A short name (`page_alloc`, `slab`, `desc`, `pagecache_node`).
    pub fn name(self) -> &'static str {
        match self {
            FaultSite::PageAlloc => "page_alloc",
            FaultSite::Slab => "slab",
            FaultSite::Desc => "desc",
            FaultSite::PageCacheNode => "pagecache_node",
        }
    }
}

/// A set of [`FaultSite`] classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultSites(u32);

impl FaultSites {
    /// Every class.
    pub const ALL: FaultSites = FaultSites((1 << NR_FAULT_SITES) - 1);
    /// No class.
    pub const NONE: FaultSites = FaultSites(0);

    /// Only `site`.
    pub const fn only(site: FaultSite) -> FaultSites {
        FaultSites(1 << site as u32)
    }

    /// This set and `site`.
    pub const fn with(self, site: FaultSite) -> FaultSites {
        FaultSites(self.0 | 1 << site as u32)
    }

    /// Whether `site` is in the set.
    pub const fn contains(self, site: FaultSite) -> bool {
        self.0 & (1 << site as u32) != 0
    }
}

/// What to inject.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FaultConfig {
    /// Fraction of the allocations at the chosen sites that fail, in `[0, 1]` (`0` disables,
    /// `1` fails every one; NaN counts as `0`).
    pub rate: f64,
    /// Seed of the decision sequence.
    pub seed: u64,
    /// Which classes of site fail.
    pub sites: FaultSites,
}

/// The injector of one machine (see the module docs). Reached through `PhysMem::fault`.
pub struct FaultInjector {
    /// `rate × 2^64`, saturated; 0 = disabled (the only word a disabled site reads).
    threshold: AtomicU64,
    sites: AtomicU32,
    /// Counter of the generator.
    state: AtomicU64,
    injected: [AtomicU64; NR_FAULT_SITES],
}

const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// splitmix64's output function.
#[inline]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Default for FaultInjector {
    fn default() -> Self {
        Self::new()
    }
}

impl FaultInjector {
    /// A disabled injector.
    pub fn new() -> Self {
        FaultInjector {
            threshold: AtomicU64::new(0),
            sites: AtomicU32::new(0),
            state: AtomicU64::new(0),
            injected: core::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Starts injecting with `cfg` (restarting the decision sequence from `cfg.seed`). The
    /// failure counters keep counting; [`FaultInjector::reset_counts`] clears them.
    pub fn configure(&self, cfg: FaultConfig) {
        let t = if cfg.rate.is_nan() || cfg.rate <= 0.0 || cfg.sites == FaultSites::NONE {
            0
        } else if cfg.rate >= 1.0 {
            u64::MAX
        } else {
            // Float-to-int casts saturate; at least 1 so a tiny rate still injects.
            ((cfg.rate * 18_446_744_073_709_551_616.0) as u64).max(1)
        };
        self.threshold.store(0, Ordering::Relaxed);
        self.sites.store(cfg.sites.0, Ordering::Relaxed);
        self.state.store(cfg.seed, Ordering::Relaxed);
        self.threshold.store(t, Ordering::Release);
    }

    /// Stops injecting.
    pub fn disable(&self) {
        self.threshold.store(0, Ordering::Release);
    }

    /// Whether injection is on.
    pub fn enabled(&self) -> bool {
        self.threshold.load(Ordering::Relaxed) != 0
    }

    /// Whether the allocation at `site` must fail. One relaxed load when disabled.
    #[inline]
    pub fn should_fail(&self, site: FaultSite) -> bool {
        let t = self.threshold.load(Ordering::Relaxed);
        if t == 0 {
            return false;
        }
        self.decide(site, t)
    }

    #[cold]
    #[inline(never)]
    fn decide(&self, site: FaultSite, t: u64) -> bool {
        if self.sites.load(Ordering::Relaxed) & (1 << site as u32) == 0 {
            return false;
        }
        let r = mix(self.state.fetch_add(GAMMA, Ordering::Relaxed).wrapping_add(GAMMA));
        let fail = t == u64::MAX || r < t;
        if fail {
            self.injected[site as usize].fetch_add(1, Ordering::Relaxed);
        }
        fail
    }

    /// Failures injected so far, all sites.
    pub fn injected(&self) -> u64 {
        self.injected.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Failures injected so far at `site`.
    pub fn injected_at(&self, site: FaultSite) -> u64 {
        self.injected[site as usize].load(Ordering::Relaxed)
    }

    /// Clears the failure counters.
    pub fn reset_counts(&self) {
        for c in &self.injected {
            c.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn disabled_never_fails_and_rate_one_always_fails() {
        let f = FaultInjector::new();
        assert!((0..1000).all(|_| !f.should_fail(FaultSite::Slab)));
        f.configure(FaultConfig { rate: 1.0, seed: 1, sites: FaultSites::ALL });
        assert!((0..1000).all(|_| f.should_fail(FaultSite::Slab)));
        assert_eq!(f.injected_at(FaultSite::Slab), 1000);
        f.configure(FaultConfig { rate: f64::NAN, seed: 1, sites: FaultSites::ALL });
        assert!(!f.enabled());
    }

    #[test]
    fn rate_is_honoured_and_sequence_is_deterministic() {
        let f = FaultInjector::new();
        let run = |seed| {
            f.configure(FaultConfig { rate: 0.25, seed, sites: FaultSites::ALL });
            (0..20_000).map(|_| f.should_fail(FaultSite::PageAlloc)).collect::<std::vec::Vec<_>>()
        };
        let a = run(42);
        let b = run(42);
        let c = run(43);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let n = a.iter().filter(|&&x| x).count();
        assert!((4_500..5_500).contains(&n), "{n} of 20000 at rate 0.25");
    }

    #[test]
    fn sites_restrict_injection() {
        let f = FaultInjector::new();
        f.configure(FaultConfig { rate: 1.0, seed: 0, sites: FaultSites::only(FaultSite::Desc) });
        assert!(!f.should_fail(FaultSite::PageAlloc));
        assert!(!f.should_fail(FaultSite::Slab));
        assert!(f.should_fail(FaultSite::Desc));
        assert!(!f.should_fail(FaultSite::PageCacheNode));
        assert!(FaultSites::NONE.with(FaultSite::Slab).contains(FaultSite::Slab));
        assert_eq!(f.injected(), 1);
        f.reset_counts();
        assert_eq!(f.injected(), 0);
    }
}
