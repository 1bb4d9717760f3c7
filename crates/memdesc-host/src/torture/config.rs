//! What a torture run is asked to do ([`TortureConfig`]) and what it reports ([`TortureReport`]).

use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// Settings of a torture run.
#[derive(Clone, Debug)]
pub struct TortureConfig {
    /// CPUs, one thread each.
    pub threads: usize,
    /// Seed of everything random.
    pub seed: u64,
    /// Stop at the first quiescent point after this long (None: only `max_ops`).
    pub duration: Option<Duration>,
    /// Stop after this many operations per CPU (None: only `duration`).
    pub max_ops: Option<u64>,
    /// Fault-injection rate at every allocation site.
    pub fail_rate: f64,
    /// Rate of hwpoison injection per operation (see [`POISON_HOOK`](crate::torture::POISON_HOOK)).
    pub poison_rate: f64,
    /// Operations per CPU between quiescent points.
    pub check_every: u64,
    /// Pages one CPU may hold before it prefers frees.
    pub max_live_pages: u64,
    /// Shared with a progress display: total operations so far.
    pub progress: Option<std::sync::Arc<AtomicU64>>,
    /// Run only the ops with these names (empty: all of [`OPS`](crate::torture::OPS)).
    pub only: Vec<String>,
    /// Draw every choice from these bytes instead of the seeded generator, on one CPU, and
    /// stop when they run out (fuzzing and property tests: see [`run_script`](crate::torture::run_script)).
    pub script: Option<Vec<u8>>,
    /// Harness self-test: CPU `.0` panics after `.1` operations, to check that a worker's
    /// panic ends the run promptly with an error instead of leaving the others waiting at the
    /// next quiescent point.
    pub inject_panic: Option<(usize, u64)>,
    /// Boot the machine with CPU-local 2 MiB areas (`Config::cpu_areas`).
    pub cpu_areas: bool,
}

impl Default for TortureConfig {
    fn default() -> Self {
        TortureConfig {
            threads: 2,
            seed: 1,
            duration: Some(Duration::from_secs(10)),
            max_ops: None,
            fail_rate: 0.0,
            poison_rate: 0.0,
            check_every: 100_000,
            max_live_pages: 8192,
            progress: None,
            only: Vec::new(),
            script: None,
            inject_panic: None,
            cpu_areas: false,
        }
    }
}

/// Per-operation counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpStat {
    /// The op's name.
    pub name: &'static str,
    /// Times it ran.
    pub runs: u64,
    /// Times it failed the way it may (allocation failure, injected or not).
    pub failed: u64,
    /// Times it had nothing to act on.
    pub skipped: u64,
}

/// What a run found.
#[derive(Clone, Debug, Default)]
pub struct TortureReport {
    /// The seed.
    pub seed: u64,
    /// CPUs.
    pub threads: usize,
    /// Operations run, all CPUs.
    pub ops: u64,
    /// Invariant violations and unexpected results.
    pub violations: u64,
    /// Pages neither free nor owned after everything was freed.
    pub lost_pages: u64,
    /// Bytes that did not hold their pattern when verified.
    pub corrupted_bytes: u64,
    /// Failures the fault injector injected.
    pub injected_failures: u64,
    /// Pages the hwpoison hook retired (at once or when their owner let go): the poisoned page,
    /// or a whole slab for a slab page. Pages `memory_failure` left in place (kernel memory)
    /// are `poison_ignored`, refused calls `poison_refused`.
    pub poisoned_pages: u64,
    /// `memory_failure` calls that left kernel memory in place (reserved, raw, page tables…).
    pub poison_ignored: u64,
    /// `memory_failure` calls refused with a typed error (two-level region, a kind whose
    /// handler is not wired, busy, already poisoned): counted, not violations.
    pub poison_refused: u64,
    /// Pages whose word is `HwPoison` at the end (left out of `lost_pages`).
    pub hwpoison_pages: u64,
    /// Held objects the poison destroyed, dropped as lost (not verified, not leaked).
    pub poison_lost_objects: u64,
    /// Quiescent points checked.
    pub checks: u64,
    /// Wall time of the operations.
    pub elapsed: Duration,
    /// Per-op counts, in [`OPS`](crate::torture::OPS) order.
    pub per_op: Vec<OpStat>,
    /// The first violations, described.
    pub messages: Vec<String>,
    /// The op-log tail of the CPU that saw the first violation (or CPU 0's at the end).
    pub log_tail: Vec<String>,
    /// Hash of CPU 0's whole op log: equal for equal single-CPU runs.
    pub log_hash: u64,
    /// Whether hwpoison injection was available (see [`POISON_HOOK`](crate::torture::POISON_HOOK)).
    pub poison_available: bool,
}
