//! The `compaction` section of `memdesc bench` (issue 8): a flat machine is filled with order-0
//! anonymous folios, every other one is freed (free memory in order-0 pieces only, no order-9
//! block), and one compaction run rebuilds large blocks. Reports the order-9-or-larger free
//! blocks before and after, the folios migrated, and migrations per second of the timed run
//! (median over repetitions, each on a freshly booted and fragmented machine).
//!
//! There is no peer: no other crate compacts a physical memory map.

use std::time::Instant;

use anyhow::{anyhow, Result};
use memdesc::folio::FolioKind;
use memdesc::{Config, Gfp, MemmapLayout, MemoryLayout, Pfn, RegionSpec};
use serde::Serialize;

/// What the compaction section measured.
#[derive(Serialize, Debug, Default, Clone)]
pub struct CompactionBench {
    /// RAM of the machine in MiB (one flat region in the Normal zone).
    pub machine_mib: u64,
    /// Folios live while compacting (the other half of those allocated were freed).
    pub live_folios: u64,
    /// Free blocks of order 9 or more before compaction (the fragmentation leaves none).
    pub order9_blocks_before: u64,
    /// Free blocks of order 9 or more after one compaction run.
    pub order9_blocks_after: u64,
    /// Folios migrated by the run.
    pub migrated: u64,
    /// Folios the run could not migrate.
    pub failed: u64,
    /// Pages the migration scanner stepped over.
    pub scanned: u64,
    /// Milliseconds of the run (median).
    pub compact_ms: f64,
    /// Folios migrated per second (median over repetitions).
    pub migrated_per_sec: f64,
    /// Repetitions.
    pub reps: usize,
}

/// One fragmented machine compacted once: (report, seconds, live folios).
fn once(pages: u64) -> Result<(memdesc::compaction::CompactReport, f64, u64)> {
    let mut l = MemoryLayout::new();
    let start = Pfn(1 << 20);
    l.add_region(RegionSpec { start, end: start.add(pages), node: 0, mapped: true, layout: MemmapLayout::Flat })
        .map_err(|e| anyhow!("layout: {e:?}"))?;
    let m = memdesc_host::boot(&l, Config { nr_cpus: 1, debug_checks: false, ..Config::default() })?;
    let cpu = m.cpus().claim(0).ok_or_else(|| anyhow!("no cpu"))?;
    let mut all = Vec::new();
    while let Ok(f) = m.folio_alloc(&cpu, 0, Gfp::MOVABLE | Gfp::NOWARN, FolioKind::Anon) {
        all.push(f);
    }
    let mut live = Vec::new();
    for (i, f) in all.into_iter().enumerate() {
        if i % 2 == 1 {
            m.folio_put(&cpu, f).map_err(|e| anyhow!("{e}"))?;
        } else {
            live.push(f);
        }
    }
    m.drain_all();
    let t = Instant::now();
    let rep = m.compact_all(&cpu);
    let secs = t.elapsed().as_secs_f64();
    let n = live.len() as u64;
    for f in live {
        m.folio_put(&cpu, f).map_err(|e| anyhow!("{e}"))?;
    }
    Ok((rep, secs, n))
}

/// Runs the section (`quick`: a 128 MiB machine, 3 repetitions; else 512 MiB, 5).
pub fn run(quick: bool) -> Result<CompactionBench> {
    let (mib, reps) = if quick { (128u64, 3usize) } else { (512, 5) };
    let mut rates = Vec::new();
    let mut times = Vec::new();
    let mut out = CompactionBench { machine_mib: mib, reps, ..CompactionBench::default() };
    for _ in 0..reps {
        let (rep, secs, live) = once(mib << 8)?;
        rates.push(rep.migrated as f64 / secs.max(1e-9));
        times.push(secs * 1e3);
        out.live_folios = live;
        out.order9_blocks_before = rep.free_before.iter().skip(9).sum();
        out.order9_blocks_after = rep.blocks_at_least(9);
        out.migrated = rep.migrated;
        out.failed = rep.failed;
        out.scanned = rep.scanned;
    }
    out.migrated_per_sec = crate::bench::median(&mut rates);
    out.compact_ms = crate::bench::median(&mut times);
    Ok(out)
}
