//! The `replay` and `estimate` sections (issue 6): `memdesc replay` of a real trace and
//! `memdesc estimate` of a real snapshot, timed; and (issue 14) the 2 MiB areas a two-level
//! replay of the same trace splits, so the memory effect of the allocation policy is measured.

use anyhow::{Context, Result};
use indicatif::ProgressBar;
use serde::Serialize;

use crate::replay::metadata::Sample;

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
    /// The replay on a two-level memmap: most 2 MiB areas split (holding a word table) at
    /// once, per allocation policy of the simulated machine.
    pub split_areas_peak: SplitAreas,
    /// The replay on a two-level memmap: areas split when live memory peaked (the sample with
    /// the fewest free pages), per allocation policy.
    pub split_areas_at_live_peak: SplitAreas,
    /// The two-level replay: the most pages not free (machine pages − fewest free pages).
    pub two_level_live_pages_peak: u64,
    /// The two-level replay: pages of the simulated machine.
    pub two_level_machine_pages: u64,
    /// The two-level replay: allocation failures (0 expected).
    pub two_level_alloc_failures: u64,
    /// The two-level replay with CPU-local areas: how many of its page allocations the areas
    /// served (the proof that `split_areas_peak.cpu_areas` measured a machine using them).
    pub cpu_areas_use: AreaUse,
}

/// How much of a replay's page allocation went through CPU-local 2 MiB areas.
#[derive(Serialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AreaUse {
    /// Successful page allocations of the replay (start state included).
    pub allocs: u64,
    /// Of them, those served inside a CPU-held area.
    pub area_allocs: u64,
}

/// A count of split 2 MiB areas per allocation policy of the simulated machine, measured on
/// the same trace in the same run.
#[derive(Serialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SplitAreas {
    /// The page allocator as configured by default.
    pub default: u64,
    /// With CPU-local 2 MiB areas (`Config::cpu_areas`): a held two-level area is split.
    pub cpu_areas: u64,
}

/// From the samples of a two-level replay: (most split areas, split areas at the sample with
/// the fewest free pages, that fewest free pages).
pub fn split_areas_of(samples: &[Sample]) -> (u64, u64, u64) {
    let peak = samples.iter().map(|s| s.split_areas).max().unwrap_or(0);
    // `min_by_key` returns the first of equal minima: the moment the peak was first reached.
    let live = samples.iter().min_by_key(|s| s.free_pages);
    (peak, live.map_or(0, |s| s.split_areas), live.map_or(0, |s| s.free_pages))
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

pub(crate) fn measure_replay(runs: usize, progress: &ProgressBar) -> Result<ReplayBench> {
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
    progress.set_message("replay: two-level memmap, split areas");
    let two = crate::replay::driver::replay(&dir, crate::replay::driver::MemmapArg::TwoLevel, false)?;
    let (split_peak, split_at_live, min_free) = split_areas_of(&two.samples);
    progress.set_message("replay: two-level memmap, split areas with CPU-local areas");
    let two_areas = crate::replay::driver::replay_with(&dir, crate::replay::driver::MemmapArg::TwoLevel, false, true)?;
    let (areas_peak, areas_at_live, _) = split_areas_of(&two_areas.samples);
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
        split_areas_peak: SplitAreas { default: split_peak, cpu_areas: areas_peak },
        split_areas_at_live_peak: SplitAreas { default: split_at_live, cpu_areas: areas_at_live },
        two_level_live_pages_peak: two.machine_pages.saturating_sub(min_free),
        two_level_machine_pages: two.machine_pages,
        two_level_alloc_failures: two.alloc_failures,
        cpu_areas_use: AreaUse { allocs: two_areas.counters.alloc_ok, area_allocs: two_areas.counters.area_allocs },
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::driver::{replay, replay_with, sample_dir, MemmapArg};

    fn sample(events: u64, split_areas: u64, free_pages: u64) -> Sample {
        Sample {
            events,
            linux: 0,
            memdesc: 0,
            words: 0,
            split_areas,
            traced_split_areas: 0,
            traced_two_level: 0,
            free_pages,
        }
    }

    #[test]
    fn split_areas_at_the_peak_and_at_the_live_peak() {
        let s = [sample(0, 3, 900), sample(1, 9, 500), sample(2, 7, 400), sample(3, 5, 400), sample(4, 2, 950)];
        // Most split at once: 9; live memory peaked (fewest free pages) first at the third
        // sample, with 7 split.
        assert_eq!(split_areas_of(&s), (9, 7, 400));
        assert_eq!(split_areas_of(&[]), (0, 0, 0));
    }

    #[test]
    fn two_level_replay_of_the_sample_splits_areas() {
        let dir = sample_dir().expect("the bundled sample trace");
        let r = replay(&dir, MemmapArg::TwoLevel, false).unwrap();
        let (peak, at_live, min_free) = split_areas_of(&r.samples);
        assert!(peak > 0, "a two-level replay splits areas");
        assert!(at_live <= peak);
        assert!(min_free < r.machine_pages);
        assert!(r.samples.iter().all(|s| s.free_pages < r.machine_pages));
        // The flat memmap splits nothing.
        let flat = replay(&dir, MemmapArg::Flat, false).unwrap();
        assert_eq!(split_areas_of(&flat.samples).0, 0);
        // Only the machine with CPU-local areas serves allocations from them.
        assert_eq!(r.counters.area_allocs, 0);
        let areas = replay_with(&dir, MemmapArg::TwoLevel, false, true).unwrap();
        assert!(areas.counters.area_allocs > 0, "{:?}", areas.counters);
        assert!(areas.counters.area_allocs < areas.counters.alloc_ok);
        assert_eq!(areas.alloc_failures, 0);
    }
}
