//! The `compaction` section of `memdesc bench` (issue 8): a flat machine is filled with order-0
//! file folios, every other one is freed and the rest are left to one page cache (migration
//! moves only folios that no owner holds besides their cache and mappings) (free memory in order-0 pieces only, no order-9
//! block), and one compaction run rebuilds large blocks. Reports the order-9-or-larger free
//! blocks before and after, the folios migrated, and migrations per second of the timed run
//! (median over repetitions, each on a freshly booted and fragmented machine).
//!
//! The same run is repeated with anon folios, every live one **mapped** in a process and its fork child
//! (two page-table entries each, found and rewritten through the reverse map while the folio
//! is frozen): `mapped_migrated_per_sec`, and its ratio to the unmapped rate measured in the
//! same bench run (`mapped_to_unmapped_rate`), give the cost of the rmap walk.
//!
//! There is no external peer: no other crate compacts a physical memory map.

use std::time::Instant;

use anyhow::{anyhow, Result};
use memdesc::folio::FolioKind;
use memdesc::mm::pgtable::MmKind;
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
    /// Folios migrated per second when every live folio is mapped in two mms (median).
    pub mapped_migrated_per_sec: f64,
    /// Order-9-or-larger free blocks after compacting the mapped machine.
    pub mapped_order9_blocks_after: u64,
    /// `mapped_migrated_per_sec / migrated_per_sec` (same bench run).
    pub mapped_to_unmapped_rate: f64,
}

/// One fragmented machine compacted once: (report, seconds, live folios). Migration moves only
/// folios nobody holds but their page cache and mappings: without `mapped`, every live folio
/// is a file folio held by its page cache alone; with `mapped`, an anon folio mapped in a
/// process and its fork child and held by those entries alone.
fn once(pages: u64, mapped: bool) -> Result<(memdesc::health::compaction::CompactReport, f64, u64)> {
    let mut l = MemoryLayout::new();
    let start = Pfn(1 << 20);
    l.add_region(RegionSpec { start, end: start.add(pages), node: 0, mapped: true, layout: MemmapLayout::Flat })
        .map_err(|e| anyhow!("layout: {e:?}"))?;
    let m = memdesc_host::boot(&l, Config { nr_cpus: 1, debug_checks: false, ..Config::default() })?;
    let cpu = m.cpus().claim(0).ok_or_else(|| anyhow!("no cpu"))?;
    let mut all = Vec::new();
    let kind = if mapped { FolioKind::Anon } else { FolioKind::File };
    while let Ok(f) = m.folio_alloc(&cpu, 0, Gfp::MOVABLE | Gfp::NOWARN, kind) {
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
    let n = live.len() as u64;
    let mms = if mapped { Some(m.mm_caches(&cpu).map_err(|e| anyhow!("{e}"))?) } else { None };
    let mut procs = Vec::new();
    let space = if mapped { None } else { Some(m.address_space_create(&cpu).map_err(|e| anyhow!("{e}"))?) };
    if let Some(space) = &space {
        for (i, f) in live.drain(..).enumerate() {
            space.insert(&cpu, &f, i as u64).map_err(|e| anyhow!("{e}"))?;
            m.folio_put(&cpu, f).map_err(|e| anyhow!("{e}"))?; // the cache holds it
        }
    }
    if let Some(mms) = &mms {
        let parent = mms.mm_create(&cpu, MmKind::User).map_err(|e| anyhow!("{e}"))?;
        let base = 0x10_0000_0000u64;
        parent.mmap_anon(&cpu, base, n << 12).map_err(|e| anyhow!("{e}"))?;
        for (i, f) in live.drain(..).enumerate() {
            parent.map_folio(&cpu, base + ((i as u64) << 12), &f).map_err(|e| anyhow!("{e}"))?;
            m.folio_put(&cpu, f).map_err(|e| anyhow!("{e}"))?; // the entries hold it
        }
        let child = parent.fork(&cpu).map_err(|e| anyhow!("{e}"))?;
        procs.push(parent);
        procs.push(child);
    }
    m.drain_all_from(&cpu);
    let t = Instant::now();
    let rep = m.compact_all(&cpu);
    let secs = t.elapsed().as_secs_f64();
    for p in procs {
        p.destroy(&cpu);
    }
    if let Some(space) = space {
        space.destroy(&cpu);
    }
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
        let (rep, secs, live) = once(mib << 8, false)?;
        rates.push(rep.migrated as f64 / secs.max(1e-9));
        times.push(secs * 1e3);
        out.live_folios = live;
        out.order9_blocks_before = rep.free_before.iter().skip(9).sum();
        out.order9_blocks_after = rep.blocks_at_least(9);
        out.migrated = rep.migrated;
        out.failed = rep.failed;
        out.scanned = rep.scanned;
    }
    out.migrated_per_sec = crate::measure::median(&mut rates);
    out.compact_ms = crate::measure::median(&mut times);
    let mut mapped_rates = Vec::new();
    for _ in 0..reps {
        let (rep, secs, _) = once(mib << 8, true)?;
        mapped_rates.push(rep.migrated as f64 / secs.max(1e-9));
        out.mapped_order9_blocks_after = rep.blocks_at_least(9);
    }
    out.mapped_migrated_per_sec = crate::measure::median(&mut mapped_rates);
    out.mapped_to_unmapped_rate = out.mapped_migrated_per_sec / out.migrated_per_sec.max(1e-9);
    Ok(out)
}
