//! The `replay` and `estimate` sections (issue 6): `memdesc replay` of a real trace and
//! `memdesc estimate` of a real snapshot, timed.

use anyhow::{Context, Result};
use serde::Serialize;

/// Target of `replay.events_per_sec` (issue 6).
pub const TARGET_REPLAY_EVENTS_PER_SEC: f64 = 2e6;
/// Target of `estimate.seconds` for the mixA snapshot (issue 6).
pub const TARGET_ESTIMATE_SECONDS: f64 = 1.0;

/// `memdesc replay` of a real trace, timed.
#[derive(Serialize, Debug, Clone)]
pub struct ReplayBench {
    /// The trace directory.
    pub trace: String,
    /// Events in the trace.
    pub events: u64,
    /// Events per wall-clock second over the event loop, zstd decompression and parsing
    /// included (best of the runs).
    pub events_per_sec: f64,
    /// Events per CPU second of the replaying thread (best of the runs): what the loop costs
    /// when it does not wait for a CPU on a loaded host.
    pub events_per_cpu_sec: f64,
    /// CPU seconds of the replaying thread in the best run, and of them the host kernel's
    /// (faulting in simulated memory touched for the first time: a simulation cost).
    pub cpu_seconds: f64,
    /// See `cpu_seconds`.
    pub host_sys_seconds: f64,
    /// Decompression and parsing alone, events per wall-clock second (best of the runs).
    pub parse_events_per_sec: f64,
    /// Decompression and parsing alone, events per CPU second.
    pub parse_events_per_cpu_sec: f64,
    /// Seconds to boot the simulated machine and to build the start state (outside the
    /// events/s figure).
    pub boot_seconds: f64,
    /// Seconds building the start state from the start snapshot.
    pub start_state_seconds: f64,
    /// Allocation failures (0 expected).
    pub alloc_failures: u64,
    /// The target.
    pub target_events_per_sec: f64,
    /// Runs measured.
    pub runs: usize,
}

/// `memdesc estimate` of a snapshot, timed.
#[derive(Serialize, Debug, Clone)]
pub struct EstimateBench {
    /// The snapshot directory.
    pub snapshot: String,
    /// pfns in the snapshot.
    pub pfns: u64,
    /// Seconds to read, classify and estimate (best of the runs).
    pub seconds: f64,
    /// The target.
    pub target_seconds: f64,
    /// Runs measured.
    pub runs: usize,
}

pub(crate) fn measure_replay(runs: usize) -> Result<ReplayBench> {
    let dir = crate::data_dirs::shared_data("traces/pagecache")
        .or_else(crate::replay::driver::sample_dir)
        .context("neither ../shared/data/traces/pagecache nor the bundled sample was found")?;
    let mut best: Option<crate::replay::driver::Report> = None;
    let (mut parse_wall, mut parse_cpu) = (f64::MAX, f64::MAX);
    let mut events = 0;
    for _ in 0..runs.max(1) {
        let (n, w, c) = crate::replay::driver::parse_only(&dir)?;
        events = n;
        parse_wall = parse_wall.min(w);
        parse_cpu = parse_cpu.min(c);
        let r = crate::replay::driver::replay(&dir, crate::replay::driver::MemmapArg::Flat, false)?;
        if best.as_ref().is_none_or(|b| r.replay_seconds < b.replay_seconds) {
            best = Some(r);
        }
    }
    let r = best.context("no replay run")?;
    Ok(ReplayBench {
        trace: dir.display().to_string(),
        events,
        events_per_sec: r.events_per_sec().round(),
        events_per_cpu_sec: r.events_per_cpu_sec().round(),
        cpu_seconds: r.replay_cpu_seconds,
        host_sys_seconds: r.replay_host_sys_seconds,
        parse_events_per_sec: (events as f64 / parse_wall.max(1e-9)).round(),
        parse_events_per_cpu_sec: (events as f64 / parse_cpu.max(1e-9)).round(),
        boot_seconds: r.boot_seconds,
        start_state_seconds: r.start_seconds,
        alloc_failures: r.alloc_failures,
        target_events_per_sec: TARGET_REPLAY_EVENTS_PER_SEC,
        runs: runs.max(1),
    })
}

pub(crate) fn measure_estimate(runs: usize) -> Result<EstimateBench> {
    let dir = crate::data_dirs::shared_data("snapshots/mixA")
        .or_else(crate::estimate::compute::sample_dir)
        .context("neither ../shared/data/snapshots/mixA nor the bundled sample was found")?;
    let sizes = crate::sizes::descriptor_sizes();
    let mut secs = f64::MAX;
    let mut pfns = 0;
    for _ in 0..runs.max(1) {
        let r = crate::estimate::compute::compute(&dir, &sizes)?;
        secs = secs.min(r.seconds);
        pfns = r.census.total;
    }
    Ok(EstimateBench {
        snapshot: dir.display().to_string(),
        pfns,
        seconds: secs,
        target_seconds: TARGET_ESTIMATE_SECONDS,
        runs: runs.max(1),
    })
}
