//! The machine's settings ([`Config`]): plain data that every layer reads (the page
//! allocator its orders and per-CPU list sizes, the slab layer its debug mode, the address
//! spaces their mapcount limit). It lives at the bottom so that no layer imports the machine
//! to read it; [`crate::machine`] re-exports it.

/// Machine-wide settings.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Largest order the buddy allocator merges to (Linux: 10).
    pub max_order: u32,
    /// CPUs (per-CPU lists and RCU slots).
    pub nr_cpus: usize,
    /// Verify every tail word on free (on in debug builds).
    pub debug_checks: bool,
    /// Pages a per-CPU list may hold before it is drained by a batch.
    pub pcp_high: u32,
    /// Pages moved per refill or drain.
    pub pcp_batch: u32,
    /// Largest mapcount a folio may reach; mapping past it splits a large folio instead
    /// (see [`crate::mm::pgtable`]). Configurable so tests can reach it.
    pub mapcount_limit: u32,
    /// Serve orders 0..=3 from CPU-local 2 MiB areas (`page_alloc/area.rs`) in zones of
    /// direct-mapped regions (flat or two-level), in front of the per-CPU lists.
    pub cpu_areas: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_order: 10,
            nr_cpus: 2,
            debug_checks: cfg!(debug_assertions),
            pcp_high: 384,
            pcp_batch: 63,
            mapcount_limit: 1 << 30,
            cpu_areas: false,
        }
    }
}
