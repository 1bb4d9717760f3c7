//! One replay from a trace directory to a [`Report`]: the simulated machine's layout from
//! the start snapshot, booting it, loading the start state, reading and replaying every event,
//! and the end state; also the parse-only timing `memdesc bench` reports next to it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use memdesc::folio::FolioKind;

use super::engine::*;
use super::metadata::*;
use memdesc::base::layout::MAX_REGIONS;
use memdesc::mm::pgtable::MmKind;
use memdesc::{Config, MemmapLayout, MemoryLayout, Pfn, RegionSpec};
use memdesc_linux::census::{census_runs, Census, CensusOptions, Kind, Run};
use memdesc_linux::trace::{EventKind, TraceReader, TraceStats};
use memdesc_linux::Snapshot;

/// Which memmap the simulated machine uses.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MemmapArg {
    /// One word per 4 KiB page.
    #[default]
    Flat,
    /// One word per 2 MiB area, per-page words only where an area is split.
    TwoLevel,
}

/// The bundled sample trace, relative to the repository root.
pub const SAMPLE_TRACE: &str = "samples/small";

/// Where the bundled sample trace is (the lookup of [`crate::data_dirs`]).
pub fn sample_dir() -> Option<PathBuf> {
    crate::data_dirs::bundled(SAMPLE_TRACE, "start")
}

/// Builds the simulated machine's layout from the start snapshot: one region per run of
/// present pfns (holes left out), merged across the smallest gaps (kept reserved) when there
/// would be too many regions.
pub fn layout_from_runs(runs: &[Run], memmap: MemmapLayout) -> Result<MemoryLayout> {
    let mut regions: Vec<(u64, u64)> = Vec::new();
    for r in runs.iter().filter(|r| r.kind != Kind::Hole) {
        match regions.last_mut() {
            Some(last) if last.1 == r.start => last.1 = r.start + r.len,
            _ => regions.push((r.start.max(1), r.start + r.len)),
        }
    }
    regions.retain(|r| r.0 < r.1);
    let mut gaps = Vec::new();
    // Zone boundaries split regions again; leave room for that.
    while regions.len() > MAX_REGIONS - 8 {
        let i = (0..regions.len() - 1).min_by_key(|&i| regions[i + 1].0 - regions[i].1).expect("two regions");
        gaps.push((regions[i].1, regions[i + 1].0));
        regions[i].1 = regions[i + 1].1;
        regions.remove(i + 1);
    }
    let mut l = MemoryLayout::new();
    for (s, e) in regions {
        l.add_region(RegionSpec { start: Pfn(s), end: Pfn(e), node: 0, mapped: true, layout: memmap })
            .map_err(|e| anyhow::anyhow!("simulated layout: {e:?}"))?;
    }
    for (s, e) in gaps {
        l.reserve(Pfn(s), Pfn(e)).map_err(|e| anyhow::anyhow!("simulated layout: {e:?}"))?;
    }
    Ok(l)
}

/// Everything `memdesc replay` reports.
#[derive(Debug, Clone)]
pub struct Report {
    /// The trace directory.
    pub source: String,
    /// Memmap layout.
    pub memmap: MemmapArg,
    /// Line and event counts of the reader.
    pub stats: TraceStats,
    /// Replayed per event type.
    pub replayed: [u64; EventKind::COUNT],
    /// Skipped per event type.
    pub skipped_by_kind: [u64; EventKind::COUNT],
    /// Skip reasons (unknown events included).
    pub skipped: BTreeMap<String, u64>,
    /// Failed simulated allocations.
    pub alloc_failures: u64,
    /// Frees of pfns no allocation covers.
    pub unmatched_frees: u64,
    /// Frees of start-snapshot allocations.
    pub pre_trace_frees: u64,
    /// Frees of part of a block.
    pub partial_frees: u64,
    /// See [`Replayer::stale_start_pages`].
    pub stale_start_pages: u64,
    /// See [`Replayer::lost_free_pages`].
    pub lost_free_pages: u64,
    /// See [`Replayer::lost_object_frees`].
    pub lost_object_frees: u64,
    /// Errors of the simulated allocators (must be empty).
    pub sim_errors: BTreeMap<String, u64>,
    /// Seconds: boot, start state, events (decompression and parsing included).
    pub boot_seconds: f64,
    /// Seconds building the start state.
    pub start_seconds: f64,
    /// Seconds replaying the events (wall clock).
    pub replay_seconds: f64,
    /// CPU seconds of the replaying thread over the same span (excludes time spent waiting
    /// for a CPU on a loaded host).
    pub replay_cpu_seconds: f64,
    /// Of that, the host kernel's time (mostly faulting in simulated memory the allocators
    /// touch for the first time: a cost of the simulation, not of memdesc).
    pub replay_host_sys_seconds: f64,
    /// Pages of the simulated machine (regions).
    pub machine_pages: u64,
    /// Metadata samples.
    pub samples: Vec<Sample>,
    /// End-state rows: (kind, replay pages, end snapshot pages, explanation).
    pub end_rows: Vec<(String, u64, Option<u64>, &'static str)>,
    /// Free blocks by order: simulated (after draining per-CPU lists) and end buddyinfo.
    pub free_blocks: (Vec<u64>, Option<Vec<u64>>),
    /// Live Linux slab pages at the end (skipped by signature) and how many of them the end
    /// snapshot flags SLAB.
    pub slab_signature: (u64, u64),
    /// Raw (non-slab) trace pages live at the end that the end snapshot flags SLAB.
    pub slab_missed: u64,
    /// The largest per-pfn disagreements (replay kind, end snapshot kind, pages): a pfn the
    /// replay holds as one kind where the end snapshot's own flags say another.
    pub confusion: Vec<((&'static str, &'static str), u64)>,
    /// The simulated machine's largest slab caches at the end (name, pages, active objects,
    /// objects).
    pub slab_caches: Vec<(String, u64, u64, u64)>,
    /// The descriptor caches at the end, with their real geometry.
    pub descriptor_caches: Vec<DescCache>,
    /// 2 MiB areas of the traced pfn space (for the traced placement's two-level cost).
    pub traced_areas: u64,
    /// The simulated page allocator's counters at the end (allocations, and of them those
    /// served inside CPU-local 2 MiB areas).
    pub counters: memdesc::page_alloc::AllocCounters,
}

impl Report {
    /// Events replayed, all types.
    pub fn replayed_total(&self) -> u64 {
        self.replayed.iter().sum()
    }
    /// Events skipped, unknown events included.
    pub fn skipped_total(&self) -> u64 {
        self.skipped.values().sum()
    }
    /// Lines accounted for: replayed + skipped + headers + blank + lost markers.
    pub fn accounted_lines(&self) -> u64 {
        self.replayed_total() + self.skipped_total() + self.stats.headers + self.stats.blank + self.stats.lost_markers
    }
    /// Events per second over the replay, decompression and parsing included.
    pub fn events_per_sec(&self) -> f64 {
        (self.stats.events + self.stats.unknown) as f64 / self.replay_seconds.max(1e-9)
    }
    /// Events per CPU second of the replaying thread.
    pub fn events_per_cpu_sec(&self) -> f64 {
        (self.stats.events + self.stats.unknown) as f64 / self.replay_cpu_seconds.max(1e-9)
    }
}

pub(crate) fn open_trace(dir: &Path) -> Result<TraceReader<Box<dyn std::io::Read>>> {
    for name in ["events.txt.zst", "events.txt"] {
        let p = dir.join(name);
        if p.exists() {
            let r = TraceReader::open(&p).with_context(|| format!("opening {}", p.display()))?;
            return Ok(r);
        }
    }
    bail!("{}: no events.txt.zst or events.txt", dir.display())
}

pub(crate) fn expected_events(dir: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join("README")).ok()?;
    text.lines().find_map(|l| l.strip_prefix("events:")).and_then(|v| v.trim().parse().ok())
}

/// Replays the trace in `dir`. `progress`: draw a progress bar on stderr.
pub fn replay(dir: &Path, memmap: MemmapArg, progress: bool) -> Result<Report> {
    replay_with(dir, memmap, progress, false)
}

/// [`replay`] on a machine with CPU-local 2 MiB areas on or off (`Config::cpu_areas`).
pub fn replay_with(dir: &Path, memmap: MemmapArg, progress: bool, cpu_areas: bool) -> Result<Report> {
    let start = Snapshot::read_dir(&dir.join("start")).with_context(|| format!("reading {}/start", dir.display()))?;
    let end = Snapshot::read_dir(&dir.join("end")).ok();
    let mut runs = Vec::new();
    let census: Census = census_runs(&start.kpage, &start.zoneinfo, CensusOptions::default(), &mut |r| runs.push(r));
    let layout_kind = match memmap {
        MemmapArg::Flat => MemmapLayout::Flat,
        MemmapArg::TwoLevel => MemmapLayout::TwoLevel,
    };
    let layout = layout_from_runs(&runs, layout_kind)?;
    let nr_cpus = start.cpus.unwrap_or(2).clamp(1, 64) as usize;
    let config = Config { nr_cpus, debug_checks: false, cpu_areas, ..Config::default() };
    let t = Instant::now();
    let m = memdesc_host::boot(&layout, config).map_err(|e| anyhow::anyhow!("booting the simulated machine: {e}"))?;
    let boot_seconds = t.elapsed().as_secs_f64();
    let pfns = start.kpage.len().max(end.as_ref().map_or(0, |e| e.kpage.len()));
    let linux_bytes = census.total * 64;
    let cpu = m.cpus().claim(0).context("claiming CPU 0 to set up the kernel allocators")?;
    let caches = m.mm_caches(&cpu).map_err(|e| anyhow::anyhow!("mm caches of the replay: {e}"))?;
    let kmm = caches.mm_create(&cpu, MmKind::Kernel).map_err(|e| anyhow::anyhow!("kernel mm of the replay: {e}"))?;
    let kernel = Kernel::new(&m, &cpu, &kmm)?;
    drop(cpu);
    let mut r = Replayer::new(&m, &kernel, pfns, linux_bytes)?;
    let t = Instant::now();
    r.load_start(&runs);
    drop(runs);
    let start_seconds = t.elapsed().as_secs_f64();
    r.sample();

    let mut reader = open_trace(dir)?;
    let bar = if progress {
        let b = match expected_events(dir) {
            Some(n) => indicatif::ProgressBar::new(n),
            None => indicatif::ProgressBar::new_spinner(),
        };
        b.set_style(
            indicatif::ProgressStyle::with_template("replay {bar:40} {pos}/{len} events {per_sec} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        Some(b)
    } else {
        None
    };
    const SAMPLE_EVERY: u64 = 4096;
    let t = Instant::now();
    let cpu0 = crate::measure::thread_cpu_time();
    let sys0 = crate::measure::thread_sys_time().unwrap_or_default();
    let mut n = 0u64;
    while let Some(rec) = reader.next_record()? {
        r.event(&rec.event);
        n += 1;
        if n.is_multiple_of(SAMPLE_EVERY) {
            r.sample();
            if let Some(b) = &bar {
                b.set_position(n);
            }
        }
    }
    let replay_seconds = t.elapsed().as_secs_f64();
    let replay_cpu_seconds = (crate::measure::thread_cpu_time() - cpu0).as_secs_f64();
    let replay_host_sys_seconds =
        crate::measure::thread_sys_time().map_or(0.0, |s| s.saturating_sub(sys0).as_secs_f64());
    r.sample();
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let stats = reader.stats().clone();
    let mut skipped: BTreeMap<String, u64> = r.skipped.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    for (name, c) in &stats.unknown_by_name {
        *skipped.entry(format!("unknown event {name}")).or_insert(0) += c;
    }

    // End state.
    m.drain_all_from(&r.cpu);
    let mut pages = [0u64; Kind::COUNT];
    let mut linux_slab_live = (0u64, 0u64);
    let mut slab_missed = 0u64;
    let end_flags = |pfn: u64| end.as_ref().map(|e| e.kpage.flags(pfn));
    let mut seen = vec![false; r.entries.len()];
    for (pfn, &i) in r.index.iter().enumerate() {
        if i == 0 || seen[i as usize] {
            continue;
        }
        seen[i as usize] = true;
        let e = &r.entries[i as usize];
        let live = e.live as u64;
        match e.what {
            What::Raw(k) => {
                pages[k as usize] += live;
                if !e.pre && end_flags(pfn as u64).is_some_and(|f| f.has(memdesc_linux::kpf::KPF_SLAB)) {
                    slab_missed += live;
                }
            }
            What::Folio(FolioKind::Anon) => pages[Kind::Anon as usize] += live,
            What::Folio(FolioKind::File) => pages[Kind::File as usize] += live,
            What::LinuxSlab => {
                linux_slab_live.0 += live;
                let (h, o) = (e.head, e.order);
                for p in h..h + (1u64 << o) {
                    if end_flags(p).is_some_and(|f| f.has(memdesc_linux::kpf::KPF_SLAB)) {
                        linux_slab_live.1 += 1;
                    }
                }
            }
            What::NetPool => pages[Kind::Other as usize] += live,
            What::Lost => {}
        }
    }
    // Per pfn: what the replay holds there against what the end snapshot's flags say.
    let mut confusion: BTreeMap<(&'static str, &'static str), u64> = BTreeMap::new();
    if let Some(e) = &end {
        let n = r.index.len().min(e.kpage.len() as usize);
        for pfn in 0..n {
            let theirs = memdesc_linux::census::base_kind(e.kpage.flags(pfn as u64));
            let i = r.index[pfn];
            let ours = if i == 0 {
                "free"
            } else {
                match r.entries[i as usize].what {
                    What::Raw(k) => k.name(),
                    What::Folio(FolioKind::Anon) => "anon",
                    What::Folio(FolioKind::File) => "file",
                    What::LinuxSlab => "slab",
                    What::NetPool => "other",
                    What::Lost => "lost",
                }
            };
            let theirs = theirs.name();
            let same = ours == theirs || (ours == "free" && theirs == "other" && e.kpage.flags(pfn as u64).is_empty());
            if !same {
                *confusion.entry((ours, theirs)).or_insert(0) += 1;
            }
        }
    }
    let mut confusion: Vec<((&'static str, &'static str), u64)> = confusion.into_iter().collect();
    confusion.sort_by_key(|c| std::cmp::Reverse(c.1));
    confusion.truncate(10);
    let vmalloc_pages: u64 = r.vmalloc.stats().pages;
    let (desc_slab, our_slab) = r.slab_pages();
    let mut slab_caches: Vec<(String, u64, u64, u64)> = Vec::new();
    m.for_each_cache(|c| {
        let i = m.slab_info(c);
        slab_caches.push((c.name().to_string(), i.num_slabs * i.pagesperslab as u64, i.active_objs, i.num_objs));
    });
    slab_caches.sort_by_key(|c| std::cmp::Reverse(c.1));
    slab_caches.truncate(12);
    let end_census = end.as_ref().map(|e| Census::from_snapshot(e, CensusOptions::default()));
    let endk = |k: Kind| end_census.as_ref().map(|c| c.pages[k]);
    let free = m.nr_free_pages();
    let end_rows: Vec<(String, u64, Option<u64>, &'static str)> = vec![
        ("free".into(), free, endk(Kind::Free).zip(endk(Kind::Uninit)).map(|(a, b)| a + b),
         "Linux: free + not yet initialised (deferred init; free in the replay). The replay's own memmap (memdesc_metadata) comes out of free memory; memory Linux allocated outside the traced window (between the start snapshot and the first event, or between the last event and the end snapshot: no page event names it) is free here (see the disagreements below)"),
        ("anon".into(), pages[Kind::Anon as usize], endk(Kind::Anon),
         "folios typed by mm_lru_insertion (flag a) or anon in the start snapshot; pages allocated outside the traced window are free in the replay"),
        ("file".into(), pages[Kind::File as usize], endk(Kind::File),
         "folios typed by mm_filemap_add_to_page_cache or mm_lru_insertion, or file in the start snapshot; pages allocated outside the traced window are free in the replay"),
        ("slab".into(), our_slab + pages[Kind::Slab as usize], endk(Kind::Slab),
         "our slab's pages for the replayed objects plus Linux's start-state slab pages still live; objects allocated before the trace are unknown, so their frees free nothing and partial slabs pack differently"),
        ("page_table".into(), pages[Kind::PageTable as usize], endk(Kind::PageTable),
         "start-state page tables plus trace pages whose GFP flags look like page tables (GFP_KERNEL[_ACCOUNT]|__GFP_ZERO, order 0); the replay's own kernel page tables (mapping its vmalloc areas) are in no row"),
        ("reserved".into(), pages[Kind::Reserved as usize] + m.reserved_pages().saturating_sub(m.boot_pages()), endk(Kind::Reserved),
         "start-state reserved pages, plus the gaps between regions the simulated layout keeps reserved"),
        ("other".into(), pages[Kind::Other as usize] + pages[Kind::ZeroPage as usize] + pages[Kind::Offline as usize] + pages[Kind::HwPoison as usize] + vmalloc_pages,
         endk(Kind::Other).map(|o| o + endk(Kind::ZeroPage).unwrap_or(0) + endk(Kind::Offline).unwrap_or(0) + endk(Kind::HwPoison).unwrap_or(0)),
         "raw kernel pages, page_pool pages (netmem) and the pages of live vmalloc areas (VmallocDesc); page-table pages the GFP heuristic missed land here"),
        ("memdesc_metadata".into(), desc_slab + m.boot_pages(), None,
         "memdesc's memmap (boot allocator) and descriptor caches; Linux's struct pages sit in memory it reports as reserved or outside the zones"),
    ];
    let mut sim_blocks = vec![0u64; m.config().max_order as usize + 1];
    for z in m.zones() {
        for (o, per_mt) in m.free_blocks(z).iter().enumerate().take(sim_blocks.len()) {
            sim_blocks[o] += per_mt.iter().sum::<u64>();
        }
    }
    let end_blocks = end.as_ref().and_then(|e| e.buddyinfo.as_ref()).map(|b| b.blocks_by_order());
    Ok(Report {
        source: crate::data_dirs::display(dir),
        memmap,
        stats,
        replayed: r.replayed,
        skipped_by_kind: r.skipped_by_kind,
        skipped,
        alloc_failures: r.alloc_failures,
        unmatched_frees: r.unmatched_frees,
        pre_trace_frees: r.pre_trace_frees,
        partial_frees: r.partial_frees,
        stale_start_pages: r.stale_start_pages,
        lost_free_pages: r.lost_free_pages,
        lost_object_frees: r.lost_object_frees,
        sim_errors: r.sim_errors.clone(),
        boot_seconds,
        start_seconds,
        replay_seconds,
        replay_cpu_seconds,
        replay_host_sys_seconds,
        machine_pages: layout.present_pages(),
        samples: r.samples.clone(),
        end_rows,
        free_blocks: (sim_blocks, end_blocks),
        slab_signature: linux_slab_live,
        slab_missed,
        confusion,
        slab_caches,
        descriptor_caches: r.descriptor_caches(),
        traced_areas: r.area_occ.len() as u64,
        counters: m.counters(),
    })
}

/// Reads every record of `dir`'s trace without replaying it: (events, wall seconds, CPU
/// seconds). `memdesc bench` reports it next to the replay, to show how much of the replay's
/// time is decompression and parsing.
pub fn parse_only(dir: &Path) -> Result<(u64, f64, f64)> {
    let mut reader = open_trace(dir)?;
    let t = Instant::now();
    let cpu0 = crate::measure::thread_cpu_time();
    let mut n = 0u64;
    while let Some(rec) = reader.next_record()? {
        n += std::hint::black_box(&rec.event).kind() as u64 & 1;
    }
    std::hint::black_box(n);
    let s = reader.stats();
    Ok((s.events + s.unknown, t.elapsed().as_secs_f64(), (crate::measure::thread_cpu_time() - cpu0).as_secs_f64()))
}
