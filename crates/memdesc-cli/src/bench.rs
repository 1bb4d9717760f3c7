//! `memdesc bench`: measures the memmap and the page allocator on the simulated machine, and
//! the page allocator against a peer crate run on the identical operation sequence in the same
//! process, and prints a table or one JSON object.
//!
//! # Sections
//!
//! - **`memmap`** (issue 2): for a 64 GiB flat machine and a 1 TiB two-level machine (both with
//!   the PC layout of [`MemoryLayout::pc`]: low memory, the PCI hole, reserved firmware and
//!   kernel ranges), the time [`Memmap::build`] takes to place and initialise every word
//!   (`init_ms`, on fresh host memory, so it includes the host's first-touch page faults;
//!   `init_prefaulted_ms` repeats it on memory already touched, which is what a kernel with
//!   real RAM pays), the time of the whole boot including the buddy free lists (`boot_ms`), the
//!   bytes the memmap uses as the booted allocator reports them ([`Memmap::bytes`]) and how much
//!   the host's resident set grew while the booted machine is alive (`host_rss_bytes`).
//! - **`page_alloc`** (issue 3): memdesc against
//!   [`buddy_system_allocator::FrameAllocator`] over the same frame range and the same
//!   operation sequence:
//!   - *order-0 pairs*: 1 GiB of order-0 pages is allocated, a random half of it freed (the same
//!     random indices for both allocators), then an order-0 page is allocated and freed again
//!     `pairs` times; nanoseconds per pair.
//!   - *mixed*: a sequence drawn once from a seeded RNG: at each step allocate (a random order
//!     0–9) or free (a random live block) with probability ½ each, never more than 4096 live
//!     blocks (an allocation drawn at the cap becomes a free, a free drawn with nothing live
//!     becomes an allocation); nanoseconds per operation.
//!   - *2 threads*: aggregate throughput of the order-0 pair loop on two claimed CPUs of one
//!     machine divided by one thread's.
//!
//!   memdesc runs with `debug_checks: false` and the default per-CPU list limits. Every
//!   allocator first runs its workload once untimed, so the host's first-touch page faults on
//!   simulated physical memory (a cost no kernel pays) are not counted. Then the allocators run
//!   in interleaved rounds (memdesc flat, memdesc two-level, the peer, rotating who goes first)
//!   so they share whatever else the host is doing, and each figure is the median of its
//!   rounds. The scaling run also reports CPU time per pair, which other processes taking a CPU
//!   do not distort: on a 2-CPU host shared with other work, read it next to the wall-clock
//!   ratio (and `meta.host_loadavg_1m`).
//!
//! `--quick` keeps every machine and workload and only takes fewer rounds. Nothing here knows
//! what the results should be: every figure is measured.
//!
//! The workload functions are shared with the criterion benches (`benches/page_alloc.rs`
//! includes this file), so both measure exactly the same thing.

use std::hint::black_box;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use buddy_system_allocator::FrameAllocator;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use memdesc::boot::BootAllocator;
use memdesc::cpu::Cpu;
use memdesc::memmap::Memmap;
use memdesc::{Config, Gfp, MemmapLayout, MemoryLayout, Pages, Pfn, RegionSpec};
use memdesc_host::{SimMachine, SimPlatform};
use rand::rngs::Xoshiro256PlusPlus;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use serde::Serialize;

/// Seed of every random sequence (the bytes of "memdesc").
pub const SEED: u64 = 0x006d_656d_6465_7363;
/// Pages in one GiB.
const GIB_PAGES: u64 = 1 << 18;
/// Highest order the *mixed* workload asks for.
pub const MIXED_MAX_ORDER: u32 = 9;
/// `FrameAllocator`'s const parameter: its largest order is `BSA_ORDER - 1`, memdesc's
/// `max_order` (10).
pub const BSA_ORDER: usize = 11;
/// The peer allocator, configured with the same largest order as memdesc.
pub type Bsa = FrameAllocator<BSA_ORDER>;

/// Targets from issue 3, printed next to the measured ratios.
pub const TARGET_ORDER0_SPEEDUP: f64 = 8.0;
/// Mixed orders: memdesc at least this many times faster than the peer.
pub const TARGET_MIXED_SPEEDUP: f64 = 3.0;
/// Two threads' aggregate order-0 throughput over one thread's.
pub const TARGET_THREADS2_SPEEDUP: f64 = 1.7;

/// Arguments of `memdesc bench`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct BenchArgs {
    /// Shorter loops and fewer repetitions (the same machines and workloads). Measured on a
    /// 2-CPU machine: about 17 s in a release build, about 6 min in a debug build on a loaded
    /// host; peak memory about 2.1 GB either way (the simulated machines).
    #[arg(long)]
    pub quick: bool,
    /// Print one JSON object (nested keys such as `memmap.flat_64g.init_ms`) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Run only these sections: names separated by spaces or commas, as `torture --only`
    /// takes its ops (`--only memmap,slab` or `--only memmap slab`).
    #[arg(long, value_enum, value_delimiter = ',', num_args = 1.., value_name = "SECTION")]
    pub only: Vec<Section>,
}

/// A section of the benchmark.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    /// Memmap initialisation and boot of a 64 GiB flat and a 1 TiB two-level machine.
    #[value(name = "memmap")]
    Memmap,
    /// The page allocator against buddy_system_allocator, and two-thread scaling.
    #[value(name = "page_alloc")]
    PageAlloc,
    /// kmalloc+kfree over a real kernel's size mix against mimalloc and the system allocator,
    /// and the memory efficiency of replaying a real kmalloc/kmem_cache stream.
    #[value(name = "slab")]
    Slab,
    /// Compaction of a zone fragmented by interleaved movable folios.
    #[value(name = "compaction")]
    Compaction,
    /// `memdesc replay` of the pagecache trace (decompression and parsing included).
    #[value(name = "replay")]
    Replay,
    /// `memdesc estimate` of the mixA snapshot.
    #[value(name = "estimate")]
    Estimate,
    /// Page tables: PTE vs PMD mapping of 2 MiB, fork, rmap walk, ptdesc size.
    #[value(name = "pgtable")]
    Pgtable,
    /// zsmalloc and z3fold density on compressed pages of real files (`zs_bench`).
    #[value(name = "zsmalloc")]
    Zsmalloc,
}

/// One machine of the memmap section.
#[derive(Clone, Copy, Debug)]
pub struct MemmapMachine {
    /// RAM in GiB (the layout is [`MemoryLayout::pc`]).
    pub gib: u64,
    /// Memmap layout of its main regions.
    pub layout: MemmapLayout,
}

impl MemmapMachine {
    /// The JSON key: `flat_64g`, `two_level_1t`.
    pub fn key(&self) -> String {
        let layout = match self.layout {
            MemmapLayout::Flat => "flat",
            MemmapLayout::TwoLevel => "two_level",
        };
        if self.gib >= 1024 && self.gib.is_multiple_of(1024) {
            format!("{layout}_{}t", self.gib / 1024)
        } else {
            format!("{layout}_{}g", self.gib)
        }
    }
}

/// Sizes and repetitions of one run.
#[derive(Clone, Debug)]
pub struct Plan {
    /// `--quick`.
    pub quick: bool,
    /// Machines of the memmap section.
    pub memmap_machines: Vec<MemmapMachine>,
    /// Repetitions of each memmap measurement.
    pub memmap_reps: usize,
    /// Pages of the page_alloc machine (one flat region in the Normal zone; the peer manages
    /// the same frame range).
    pub machine_pages: u64,
    /// Order-0 pages allocated before the pair loop (half of them are then freed).
    pub steady_pages: u64,
    /// Alloc+free pairs per timed run.
    pub pairs: u64,
    /// Operations of the mixed sequence.
    pub mixed_ops: usize,
    /// Most live blocks in the mixed sequence.
    pub mixed_max_live: usize,
    /// Pairs per thread in the scaling runs: enough that the two threads' runs overlap
    /// (about 0.1 s), however long the scheduler takes to put them on two CPUs.
    pub thread_pairs: u64,
    /// Rounds of the scaling runs (each one thread then two threads).
    pub thread_reps: usize,
    /// Timed rounds of each other page_alloc measurement (after one warm-up).
    pub reps: usize,
    /// Run the slab section (reads a real trace; tiny test plans leave it out).
    pub slab: bool,
    /// Run the replay and estimate sections (real data; tiny test plans leave them out).
    pub real_data: bool,
    /// Pages of real files the zsmalloc section compresses and stores.
    pub zs_pages: usize,
}

impl Plan {
    /// The plan for `memdesc bench` (`quick` for `--quick`).
    pub fn new(quick: bool) -> Self {
        let memmap_machines = vec![
            MemmapMachine { gib: 64, layout: MemmapLayout::Flat },
            MemmapMachine { gib: 1024, layout: MemmapLayout::TwoLevel },
        ];
        // The workloads are the same in both modes; --quick only takes fewer rounds.
        let (reps, thread_reps, memmap_reps) = if quick { (5, 3, 1) } else { (21, 9, 3) };
        Plan {
            quick,
            memmap_machines,
            memmap_reps,
            machine_pages: 8 * GIB_PAGES,
            steady_pages: GIB_PAGES,
            pairs: 200_000,
            mixed_ops: 250_000,
            mixed_max_live: 4096,
            thread_pairs: 2_000_000,
            thread_reps,
            reps,
            slab: true,
            real_data: true,
            zs_pages: if quick { 4096 } else { 32768 },
        }
    }
}

/// Everything `memdesc bench` measured; serialised as the `--json` output.
#[derive(Serialize, Debug, Default)]
pub struct Report {
    /// How the run was made.
    pub meta: Meta,
    /// The memmap section, keyed by machine (`flat_64g`, `two_level_1t`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memmap: Option<std::collections::BTreeMap<String, MemmapResult>>,
    /// The page_alloc section.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page_alloc: Option<PageAllocResult>,
    /// The slab section.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slab: Option<crate::slab_bench::SlabBench>,
    /// The compaction section.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compaction: Option<crate::compaction_bench::CompactionBench>,
    /// The replay section.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay: Option<ReplayBench>,
    /// The estimate section.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimate: Option<EstimateBench>,
    /// Descriptor sizes (`size_of` of the real types; always present, costs nothing).
    pub descriptors: crate::sizes::Descriptors,
    /// The pgtable section.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pgtable: Option<crate::pgtable_bench::PgtableBench>,
    /// The zsmalloc section.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zsmalloc: Option<crate::zs_bench::ZsBench>,
    /// z3fold on the zsmalloc section's objects, for comparison.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub z3fold: Option<crate::zs_bench::Density>,
}

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

fn measure_replay(runs: usize) -> Result<ReplayBench> {
    let dir = crate::data_dirs::shared_data("traces/pagecache")
        .or_else(crate::replay::sample_dir)
        .context("neither ../shared/data/traces/pagecache nor the bundled sample was found")?;
    let mut best: Option<crate::replay::Report> = None;
    let (mut parse_wall, mut parse_cpu) = (f64::MAX, f64::MAX);
    let mut events = 0;
    for _ in 0..runs.max(1) {
        let (n, w, c) = crate::replay::parse_only(&dir)?;
        events = n;
        parse_wall = parse_wall.min(w);
        parse_cpu = parse_cpu.min(c);
        let r = crate::replay::replay(&dir, crate::replay::MemmapArg::Flat, false)?;
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

fn measure_estimate(runs: usize) -> Result<EstimateBench> {
    let dir = crate::data_dirs::shared_data("snapshots/mixA")
        .or_else(crate::estimate::sample_dir)
        .context("neither ../shared/data/snapshots/mixA nor the bundled sample was found")?;
    let sizes = crate::sizes::descriptor_sizes();
    let mut secs = f64::MAX;
    let mut pfns = 0;
    for _ in 0..runs.max(1) {
        let r = crate::estimate::compute(&dir, &sizes)?;
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

/// How the run was made.
#[derive(Serialize, Debug, Default)]
pub struct Meta {
    /// `--quick`.
    pub quick: bool,
    /// Whether this binary was built with optimisations.
    pub optimized: bool,
    /// CPUs the host offers.
    pub host_cpus: usize,
    /// The host's 1-minute load average when the run started (other work skews timings).
    pub host_loadavg_1m: Option<f64>,
    /// Seed of every random sequence.
    pub seed: u64,
}

/// One machine of the memmap section.
#[derive(Serialize, Debug, Clone)]
pub struct MemmapResult {
    /// RAM of the machine in GiB.
    pub gib: u64,
    /// Pages present.
    pub pages: u64,
    /// `flat` or `two_level`.
    pub layout: &'static str,
    /// Milliseconds to place and initialise the memmap on fresh host memory (median).
    pub init_ms: f64,
    /// The same on host memory already touched (median).
    pub init_prefaulted_ms: f64,
    /// Milliseconds of the whole boot: memmap, reserved ranges and free lists (median).
    pub boot_ms: f64,
    /// Of `boot_ms`, the milliseconds the host kernel spent in the booting thread (faulting in
    /// the simulated memory the boot writes: memmap and free-list links), a cost of the
    /// simulation that a kernel on real RAM does not pay; `null` where unavailable.
    pub boot_host_sys_ms: Option<f64>,
    /// Bytes of the memmap after boot, as the allocator reports them.
    pub bytes: u64,
    /// `bytes` as a percentage of the machine's RAM.
    pub bytes_pct_of_ram: f64,
    /// Two-level areas split at boot (partly reserved areas).
    pub split_areas: u64,
    /// Growth of the host's resident set while the booted machine is alive (memmap plus the
    /// free-list links written into free memory); `null` where /proc is unavailable.
    pub host_rss_bytes: Option<u64>,
}

/// Per-allocator nanoseconds.
#[derive(Serialize, Debug, Clone, Copy, Default)]
pub struct PerAllocator {
    /// memdesc, flat memmap.
    pub memdesc: f64,
    /// memdesc, two-level memmap (the 4 KiB path pays one more indirection).
    pub memdesc_two_level: f64,
    /// `buddy_system_allocator::FrameAllocator`.
    pub buddy_system_allocator: f64,
}

/// The two-thread scaling run.
#[derive(Serialize, Debug, Clone, Copy, Default)]
pub struct Threads {
    /// Order-0 pairs per second, one thread (median).
    pub one_thread_pairs_per_s: f64,
    /// Order-0 pairs per second, two threads together (median).
    pub two_threads_pairs_per_s: f64,
    /// CPU time per pair, one thread (median): insensitive to other work taking the CPU.
    pub one_thread_cpu_ns_per_pair: f64,
    /// Mean CPU time per pair of the two threads running together (median): above the
    /// one-thread figure by what the threads cost each other (shared cache lines, locks).
    pub two_threads_cpu_ns_per_pair: f64,
}

/// The targets and whether this run met them.
#[derive(Serialize, Debug, Clone, Copy, Default)]
pub struct Targets {
    /// Order-0 pairs: memdesc at least this many times faster.
    pub order0_speedup_vs_bsa: f64,
    /// Mixed: memdesc at least this many times faster.
    pub mixed_speedup_vs_bsa: f64,
    /// Two threads at least this many times one thread.
    pub threads2_speedup: f64,
    /// Met in this run.
    pub order0_met: bool,
    /// Met in this run.
    pub mixed_met: bool,
    /// Met in this run.
    pub threads2_met: bool,
}

/// Workload parameters, so a reader knows what was measured.
#[derive(Serialize, Debug, Clone, Copy, Default)]
pub struct Params {
    /// Pages of the machine (and of the peer's frame range).
    pub machine_pages: u64,
    /// Order-0 pages allocated before the pair loop; a random half is freed.
    pub steady_pages: u64,
    /// Pairs per timed run.
    pub pairs: u64,
    /// Operations of the mixed sequence.
    pub mixed_ops: usize,
    /// Live-block cap of the mixed sequence.
    pub mixed_max_live: usize,
    /// Most live blocks the sequence actually reached.
    pub mixed_peak_live: usize,
    /// Pairs per thread in the scaling runs.
    pub thread_pairs: u64,
    /// Rounds of the scaling runs (medians reported).
    pub thread_reps: usize,
    /// Timed rounds of the other measurements (medians reported).
    pub reps: usize,
}

/// The page_alloc section.
#[derive(Serialize, Debug, Clone, Copy, Default)]
pub struct PageAllocResult {
    /// Nanoseconds per order-0 alloc+free pair (median).
    pub order0_pair_ns: PerAllocator,
    /// Nanoseconds per operation of the mixed sequence (median).
    pub mixed_ns: PerAllocator,
    /// buddy_system_allocator's order-0 time over memdesc's (flat).
    pub order0_speedup_vs_bsa: f64,
    /// buddy_system_allocator's mixed time over memdesc's (flat).
    pub mixed_speedup_vs_bsa: f64,
    /// Two threads' aggregate order-0 throughput over one thread's.
    pub threads2_speedup: f64,
    /// The throughputs behind `threads2_speedup`.
    pub threads: Threads,
    /// The targets.
    pub targets: Targets,
    /// What was run.
    pub params: Params,
}

// ---------------------------------------------------------------------------------------------
// Workloads (shared with the criterion benches)
// ---------------------------------------------------------------------------------------------

/// The page_alloc machine: one region of `pages` pages at 4 GiB (all in the Normal zone, no
/// holes, no firmware reservations), so memdesc and the peer manage the same frame range.
pub fn bench_layout(pages: u64, layout: MemmapLayout) -> Result<MemoryLayout> {
    let mut l = MemoryLayout::new();
    let (start, end) = bench_range(pages);
    l.add_region(RegionSpec { start: Pfn(start as u64), end: Pfn(end as u64), node: 0, mapped: true, layout })
        .map_err(|e| anyhow!("bad bench layout: {e:?}"))?;
    Ok(l)
}

/// The frame range `[start, end)` of [`bench_layout`].
pub fn bench_range(pages: u64) -> (usize, usize) {
    let start = 1usize << 20;
    (start, start + pages as usize)
}

/// Boots a machine for the allocator benchmarks: `debug_checks` off, two CPUs.
pub fn boot_bench_machine(pages: u64, layout: MemmapLayout) -> Result<SimMachine> {
    let config = Config { debug_checks: false, nr_cpus: 2, ..Config::default() };
    memdesc_host::boot(&bench_layout(pages, layout)?, config).context("booting the benchmark machine")
}

/// A peer allocator over the frame range of [`bench_layout`].
pub fn bsa_new(pages: u64) -> Box<Bsa> {
    let (start, end) = bench_range(pages);
    let mut a = Box::new(Bsa::new());
    a.add_frame(start, end);
    a
}

/// The indices (into the order of allocation) of the steady-state pages that are freed again:
/// a random half of `steady_pages`, in random order, from [`SEED`].
pub fn steady_free_indices(steady_pages: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..steady_pages as usize).collect();
    idx.shuffle(&mut Xoshiro256PlusPlus::seed_from_u64(SEED));
    idx.truncate(steady_pages as usize / 2);
    idx
}

/// Brings memdesc to the order-0 steady state; returns the pages still allocated.
pub fn memdesc_steady(m: &SimMachine, cpu: &Cpu<'_>, free_idx: &[usize], steady_pages: u64) -> Result<Vec<Pages>> {
    let mut pages = Vec::with_capacity(steady_pages as usize);
    for i in 0..steady_pages {
        pages.push(Some(
            m.alloc_pages(cpu, 0, Gfp::KERNEL).map_err(|e| anyhow!("memdesc steady-state alloc {i}: {e}"))?,
        ));
    }
    for &i in free_idx {
        let p = pages[i].take().ok_or_else(|| anyhow!("steady-state index {i} freed twice"))?;
        m.free_pages(cpu, p).map_err(|e| anyhow!("memdesc steady-state free: {e}"))?;
    }
    Ok(pages.into_iter().flatten().collect())
}

/// Brings the peer to the same steady state; returns the frames still allocated.
pub fn bsa_steady(a: &mut Bsa, free_idx: &[usize], steady_pages: u64) -> Result<Vec<usize>> {
    let mut frames = Vec::with_capacity(steady_pages as usize);
    for i in 0..steady_pages {
        frames.push(a.alloc(1).ok_or_else(|| anyhow!("buddy_system_allocator steady-state alloc {i} failed"))?);
    }
    let mut freed = vec![false; frames.len()];
    for &i in free_idx {
        a.dealloc(frames[i], 1);
        freed[i] = true;
    }
    Ok(frames.into_iter().zip(freed).filter(|(_, f)| !f).map(|(p, _)| p).collect())
}

/// `n` order-0 alloc+free pairs on memdesc.
#[inline(never)]
pub fn memdesc_pairs(m: &SimMachine, cpu: &Cpu<'_>, n: u64) -> Result<()> {
    for _ in 0..n {
        let p = m.alloc_pages(cpu, 0, Gfp::KERNEL).map_err(|e| anyhow!("memdesc order-0 alloc: {e}"))?;
        m.free_pages(cpu, black_box(p)).map_err(|e| anyhow!("memdesc order-0 free: {e}"))?;
    }
    Ok(())
}

/// `n` order-0 alloc+free pairs on the peer.
#[inline(never)]
pub fn bsa_pairs(a: &mut Bsa, n: u64) -> Result<()> {
    for _ in 0..n {
        let f = a.alloc(1).ok_or_else(|| anyhow!("buddy_system_allocator order-0 alloc failed"))?;
        a.dealloc(black_box(f), 1);
    }
    Ok(())
}

/// One step of the mixed sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Allocate a block of this order and append it to the live list.
    Alloc(u32),
    /// Free the live block at this index (the last live block takes its place).
    Free(usize),
}

/// The mixed sequence: `n` steps from [`SEED`]; returns the steps and the peak live count.
pub fn mixed_ops(n: usize, max_live: usize) -> (Vec<Op>, usize) {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(SEED ^ 0x006d_6978_6564);
    let (mut live, mut peak) = (0usize, 0usize);
    let ops = (0..n)
        .map(|_| {
            let want_alloc = rng.random_bool(0.5);
            if (want_alloc && live < max_live) || live == 0 {
                live += 1;
                peak = peak.max(live);
                Op::Alloc(rng.random_range(0..=MIXED_MAX_ORDER))
            } else {
                let i = rng.random_range(0..live);
                live -= 1;
                Op::Free(i)
            }
        })
        .collect();
    (ops, peak)
}

/// Runs the mixed sequence on memdesc; `live` holds the blocks left allocated.
#[inline(never)]
pub fn memdesc_mixed(m: &SimMachine, cpu: &Cpu<'_>, ops: &[Op], live: &mut Vec<Pages>) -> Result<()> {
    for (i, op) in ops.iter().enumerate() {
        match *op {
            Op::Alloc(o) => {
                live.push(m.alloc_pages(cpu, o, Gfp::KERNEL).map_err(|e| anyhow!("memdesc mixed step {i}: {e}"))?)
            }
            Op::Free(k) => {
                let p = live.swap_remove(k);
                m.free_pages(cpu, p).map_err(|e| anyhow!("memdesc mixed step {i}: {e}"))?;
            }
        }
    }
    Ok(())
}

/// Frees every block left by [`memdesc_mixed`].
pub fn memdesc_free_all(m: &SimMachine, cpu: &Cpu<'_>, live: &mut Vec<Pages>) -> Result<()> {
    for p in live.drain(..) {
        m.free_pages(cpu, p).map_err(|e| anyhow!("memdesc free: {e}"))?;
    }
    Ok(())
}

/// Runs the mixed sequence on the peer; `live` holds the blocks left allocated.
#[inline(never)]
pub fn bsa_mixed(a: &mut Bsa, ops: &[Op], live: &mut Vec<(usize, u32)>) -> Result<()> {
    for (i, op) in ops.iter().enumerate() {
        match *op {
            Op::Alloc(o) => live.push((
                a.alloc(1 << o).ok_or_else(|| anyhow!("buddy_system_allocator mixed step {i}: out of frames"))?,
                o,
            )),
            Op::Free(k) => {
                let (f, o) = live.swap_remove(k);
                a.dealloc(f, 1 << o);
            }
        }
    }
    Ok(())
}

/// Frees every block left by [`bsa_mixed`].
pub fn bsa_free_all(a: &mut Bsa, live: &mut Vec<(usize, u32)>) {
    for (f, o) in live.drain(..) {
        a.dealloc(f, 1 << o);
    }
}

// ---------------------------------------------------------------------------------------------
// Measurement
// ---------------------------------------------------------------------------------------------

/// Median of `xs` (0 for none).
pub fn median(xs: &mut [f64]) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Rounds to 3 decimals for stable, readable output.
fn r3(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}

/// Resident set of this process in bytes, from /proc/self/status.
fn rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// System (kernel) CPU time of the calling thread.
pub(crate) fn thread_sys_time() -> Option<Duration> {
    // SAFETY: getrusage only writes the struct we pass; an all-zero rusage is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_THREAD with a valid, exclusive pointer to an rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) } != 0 {
        return None;
    }
    Some(Duration::from_secs(ru.ru_stime.tv_sec as u64) + Duration::from_micros(ru.ru_stime.tv_usec as u64))
}

fn loadavg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

/// Measures one memmap machine.
pub fn measure_memmap(mm: MemmapMachine, reps: usize, progress: &ProgressBar) -> Result<MemmapResult> {
    let layout = MemoryLayout::pc(mm.gib, mm.layout);
    let key = mm.key();
    let mut init = Vec::new();
    let mut prefaulted = Vec::new();
    let mut boot = Vec::new();
    let mut boot_sys = Vec::new();
    let mut last = None;
    for _ in 0..reps.max(1) {
        progress.set_message(format!("memmap {key}: build"));
        let platform = SimPlatform::new(&layout).map_err(|e| anyhow!("simulated memory for {key}: {e}"))?;
        for pass in 0..2 {
            let mut ba = BootAllocator::new(&layout).map_err(|e| anyhow!("boot allocator for {key}: {e:?}"))?;
            let t = Instant::now();
            let memmap = Memmap::build(&layout, &mut ba, &platform).map_err(|e| anyhow!("memmap of {key}: {e:?}"))?;
            let d = ms(t.elapsed());
            black_box(&memmap);
            if pass == 0 { &mut init } else { &mut prefaulted }.push(d);
        }
        drop(platform);
        progress.set_message(format!("memmap {key}: boot"));
        // Drop the previous machine first so the resident-set delta is this machine's alone.
        drop(last.take());
        let rss0 = rss_bytes();
        let sys0 = thread_sys_time();
        let t = Instant::now();
        let m = memdesc_host::boot(&layout, Config { debug_checks: false, nr_cpus: 2, ..Config::default() })
            .map_err(|e| anyhow!("booting {key}: {e}"))?;
        boot.push(ms(t.elapsed()));
        if let (Some(a), Some(b)) = (sys0, thread_sys_time()) {
            boot_sys.push(ms(b.saturating_sub(a)));
        }
        let rss = match (rss0, rss_bytes()) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        };
        last = Some((m.memmap().bytes(), m.memmap().split_areas(), rss, m));
        progress.inc(1);
    }
    let (bytes, split_areas, host_rss_bytes, m) = last.ok_or_else(|| anyhow!("no memmap run"))?;
    drop(m);
    let pages = layout.present_pages();
    Ok(MemmapResult {
        gib: mm.gib,
        pages,
        layout: match mm.layout {
            MemmapLayout::Flat => "flat",
            MemmapLayout::TwoLevel => "two_level",
        },
        init_ms: r3(median(&mut init)),
        init_prefaulted_ms: r3(median(&mut prefaulted)),
        boot_ms: r3(median(&mut boot)),
        boot_host_sys_ms: (!boot_sys.is_empty()).then(|| r3(median(&mut boot_sys))),
        bytes,
        bytes_pct_of_ram: (bytes as f64 * 100.0 / (pages as f64 * memdesc::PAGE_SIZE as f64) * 1e4).round() / 1e4,
        split_areas,
        host_rss_bytes,
    })
}

/// CPU time of the calling thread (not counting time it waited for a CPU).
pub(crate) fn thread_cpu_time() -> Duration {
    // SAFETY: an all-zero timespec is a valid value; clock_gettime only writes it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: a valid clock id and an exclusive pointer to a timespec.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// One timed run of a measured closure.
type Run<'a> = Box<dyn FnMut() -> Result<Duration> + 'a>;

/// Runs each closure once untimed (warm-up), then `reps` rounds in which every closure runs once,
/// the first closure of a round rotating so no allocator always runs first; returns each
/// closure's median in nanoseconds per `per` units. Interleaving makes the allocators share
/// whatever else the host is doing, and the median drops rounds another process disturbed.
fn interleaved(reps: usize, per: u64, runs: &mut [Run<'_>]) -> Result<Vec<f64>> {
    for r in runs.iter_mut() {
        r()?;
    }
    let mut ns = vec![Vec::with_capacity(reps); runs.len()];
    for rep in 0..reps.max(1) {
        for k in 0..runs.len() {
            let i = (rep + k) % runs.len();
            ns[i].push(runs[i]()?.as_secs_f64() * 1e9 / per.max(1) as f64);
        }
    }
    Ok(ns.iter_mut().map(|v| median(v)).collect())
}

/// A booted benchmark machine in the order-0 steady state (CPU 0 made it).
pub struct Steady {
    /// The machine.
    pub m: SimMachine,
    /// Pages still allocated from the steady state (kept with the machine they belong to).
    pub _held: Vec<Pages>,
}

/// Boots a machine with `layout` and brings it to the order-0 steady state.
pub fn memdesc_steady_machine(plan: &Plan, layout: MemmapLayout) -> Result<Steady> {
    let m = boot_bench_machine(plan.machine_pages, layout)?;
    let held = {
        let cpu = m.cpus().claim(0).ok_or_else(|| anyhow!("CPU 0 busy"))?;
        memdesc_steady(&m, &cpu, &steady_free_indices(plan.steady_pages), plan.steady_pages)?
    };
    Ok(Steady { m, _held: held })
}

/// Order-0 pairs: memdesc flat, memdesc two-level and the peer, interleaved; ns per pair. The
/// flat machine is returned for the scaling runs.
fn measure_pairs(plan: &Plan) -> Result<(PerAllocator, Steady)> {
    let flat = memdesc_steady_machine(plan, MemmapLayout::Flat)?;
    let two = memdesc_steady_machine(plan, MemmapLayout::TwoLevel)?;
    let mut bsa = bsa_new(plan.machine_pages);
    let _bsa_held = bsa_steady(&mut bsa, &steady_free_indices(plan.steady_pages), plan.steady_pages)?;
    let cpu_flat = flat.m.cpus().claim(0).ok_or_else(|| anyhow!("CPU 0 busy"))?;
    let cpu_two = two.m.cpus().claim(0).ok_or_else(|| anyhow!("CPU 0 busy"))?;
    let n = plan.pairs;
    let ns = interleaved(
        plan.reps,
        n,
        &mut [
            Box::new(|| {
                let t = Instant::now();
                memdesc_pairs(&flat.m, &cpu_flat, n)?;
                Ok(t.elapsed())
            }),
            Box::new(|| {
                let t = Instant::now();
                memdesc_pairs(&two.m, &cpu_two, n)?;
                Ok(t.elapsed())
            }),
            Box::new(|| {
                let t = Instant::now();
                bsa_pairs(&mut bsa, n)?;
                Ok(t.elapsed())
            }),
        ],
    )?;
    drop(cpu_flat);
    let r = PerAllocator { memdesc: ns[0], memdesc_two_level: ns[1], buddy_system_allocator: ns[2] };
    Ok((r, flat))
}

/// The mixed sequence: memdesc flat, memdesc two-level and the peer, interleaved, each on a
/// fresh machine; ns per operation. Blocks left live at the end of a run are freed untimed.
fn measure_mixed(plan: &Plan, ops: &[Op]) -> Result<PerAllocator> {
    let flat = boot_bench_machine(plan.machine_pages, MemmapLayout::Flat)?;
    let two = boot_bench_machine(plan.machine_pages, MemmapLayout::TwoLevel)?;
    let mut bsa = bsa_new(plan.machine_pages);
    let cpu_flat = flat.cpus().claim(0).ok_or_else(|| anyhow!("CPU 0 busy"))?;
    let cpu_two = two.cpus().claim(0).ok_or_else(|| anyhow!("CPU 0 busy"))?;
    let (mut live_flat, mut live_two, mut live_bsa) = (
        Vec::with_capacity(plan.mixed_max_live),
        Vec::with_capacity(plan.mixed_max_live),
        Vec::with_capacity(plan.mixed_max_live),
    );
    let ns = interleaved(
        plan.reps,
        ops.len() as u64,
        &mut [
            Box::new(|| {
                let t = Instant::now();
                memdesc_mixed(&flat, &cpu_flat, ops, &mut live_flat)?;
                let d = t.elapsed();
                memdesc_free_all(&flat, &cpu_flat, &mut live_flat)?;
                Ok(d)
            }),
            Box::new(|| {
                let t = Instant::now();
                memdesc_mixed(&two, &cpu_two, ops, &mut live_two)?;
                let d = t.elapsed();
                memdesc_free_all(&two, &cpu_two, &mut live_two)?;
                Ok(d)
            }),
            Box::new(|| {
                let t = Instant::now();
                bsa_mixed(&mut bsa, ops, &mut live_bsa)?;
                let d = t.elapsed();
                bsa_free_all(&mut bsa, &mut live_bsa);
                Ok(d)
            }),
        ],
    )?;
    Ok(PerAllocator { memdesc: ns[0], memdesc_two_level: ns[1], buddy_system_allocator: ns[2] })
}

/// What one scaling run measured.
struct ThreadsRun {
    /// All pairs over the time from the first thread's start to the last thread's end.
    pairs_per_s: f64,
    /// Mean CPU time per pair of the threads (time spent waiting for a CPU not counted).
    cpu_ns_per_pair: f64,
}

/// Runs the order-0 pair loop on `threads` CPUs of `m` at once.
fn pairs_on_threads(m: &SimMachine, threads: usize, pairs: u64) -> Result<ThreadsRun> {
    let barrier = std::sync::Barrier::new(threads);
    let spans: Vec<Result<(Instant, Instant, Duration)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|id| {
                let barrier = &barrier;
                s.spawn(move || -> Result<(Instant, Instant, Duration)> {
                    let cpu = m.cpus().claim(id);
                    barrier.wait();
                    let cpu = cpu.ok_or_else(|| anyhow!("CPU {id} busy"))?;
                    let (start, cpu0) = (Instant::now(), thread_cpu_time());
                    memdesc_pairs(m, &cpu, pairs)?;
                    Ok((start, Instant::now(), thread_cpu_time().saturating_sub(cpu0)))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().map_err(|_| anyhow!("benchmark thread panicked"))?).collect()
    });
    let spans = spans.into_iter().collect::<Result<Vec<_>>>()?;
    let start = spans.iter().map(|s| s.0).min().ok_or_else(|| anyhow!("no threads"))?;
    let end = spans.iter().map(|s| s.1).max().ok_or_else(|| anyhow!("no threads"))?;
    let cpu: Duration = spans.iter().map(|s| s.2).sum();
    let total = (pairs * threads as u64) as f64;
    Ok(ThreadsRun {
        pairs_per_s: total / (end - start).as_secs_f64().max(1e-9),
        cpu_ns_per_pair: cpu.as_secs_f64() * 1e9 / total,
    })
}

/// Two-thread scaling of the order-0 pair loop on a steady-state machine: alternately one
/// thread (CPU 0) and two threads (CPUs 0 and 1), after one warm-up of each.
pub fn measure_threads(plan: &Plan, s: &Steady) -> Result<Threads> {
    pairs_on_threads(&s.m, 1, plan.thread_pairs)?;
    pairs_on_threads(&s.m, 2, plan.thread_pairs)?;
    let (mut one, mut two, mut one_cpu, mut two_cpu) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..plan.thread_reps.max(1) {
        let r1 = pairs_on_threads(&s.m, 1, plan.thread_pairs)?;
        let r2 = pairs_on_threads(&s.m, 2, plan.thread_pairs)?;
        one.push(r1.pairs_per_s);
        two.push(r2.pairs_per_s);
        one_cpu.push(r1.cpu_ns_per_pair);
        two_cpu.push(r2.cpu_ns_per_pair);
    }
    Ok(Threads {
        one_thread_pairs_per_s: median(&mut one).round(),
        two_threads_pairs_per_s: median(&mut two).round(),
        one_thread_cpu_ns_per_pair: r3(median(&mut one_cpu)),
        two_threads_cpu_ns_per_pair: r3(median(&mut two_cpu)),
    })
}

/// Runs the page_alloc section.
pub fn measure_page_alloc(plan: &Plan, progress: &ProgressBar) -> Result<PageAllocResult> {
    let (ops, peak) = mixed_ops(plan.mixed_ops, plan.mixed_max_live);
    let step = |what: &str| {
        progress.set_message(format!("page_alloc: {what}"));
        progress.inc(1);
    };
    step("order-0 pairs");
    let (pairs, flat) = measure_pairs(plan)?;
    step("two threads");
    let threads = measure_threads(plan, &flat)?;
    drop(flat);
    step("mixed orders");
    let mixed = measure_mixed(plan, &ops)?;
    let ratio = |a: f64, b: f64| if b > 0.0 { r3(a / b) } else { 0.0 };
    let order0 = ratio(pairs.buddy_system_allocator, pairs.memdesc);
    let mixed_speedup = ratio(mixed.buddy_system_allocator, mixed.memdesc);
    let t2 = ratio(threads.two_threads_pairs_per_s, threads.one_thread_pairs_per_s);
    let round = |p: PerAllocator| PerAllocator {
        memdesc: r3(p.memdesc),
        memdesc_two_level: r3(p.memdesc_two_level),
        buddy_system_allocator: r3(p.buddy_system_allocator),
    };
    Ok(PageAllocResult {
        order0_pair_ns: round(pairs),
        mixed_ns: round(mixed),
        order0_speedup_vs_bsa: order0,
        mixed_speedup_vs_bsa: mixed_speedup,
        threads2_speedup: t2,
        threads,
        targets: Targets {
            order0_speedup_vs_bsa: TARGET_ORDER0_SPEEDUP,
            mixed_speedup_vs_bsa: TARGET_MIXED_SPEEDUP,
            threads2_speedup: TARGET_THREADS2_SPEEDUP,
            order0_met: order0 >= TARGET_ORDER0_SPEEDUP,
            mixed_met: mixed_speedup >= TARGET_MIXED_SPEEDUP,
            threads2_met: t2 >= TARGET_THREADS2_SPEEDUP,
        },
        params: Params {
            machine_pages: plan.machine_pages,
            steady_pages: plan.steady_pages,
            pairs: plan.pairs,
            mixed_ops: plan.mixed_ops,
            mixed_max_live: plan.mixed_max_live,
            mixed_peak_live: peak,
            thread_pairs: plan.thread_pairs,
            thread_reps: plan.thread_reps,
            reps: plan.reps,
        },
    })
}

/// Page_alloc progress steps.
const PAGE_ALLOC_STEPS: u64 = 3;

/// Runs the selected sections of `plan`.
pub fn measure(plan: &Plan, sections: &[Section], progress: &ProgressBar) -> Result<Report> {
    let want = |s| sections.is_empty() || sections.contains(&s);
    let mut len = 0;
    if want(Section::Memmap) {
        len += (plan.memmap_machines.len() * plan.memmap_reps.max(1)) as u64;
    }
    if want(Section::PageAlloc) {
        len += PAGE_ALLOC_STEPS;
    }
    progress.set_length(len);
    let mut report = Report {
        meta: Meta {
            quick: plan.quick,
            optimized: !cfg!(debug_assertions),
            host_cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            host_loadavg_1m: loadavg(),
            seed: SEED,
        },
        descriptors: crate::sizes::descriptors(),
        ..Report::default()
    };
    if want(Section::Memmap) {
        let mut map = std::collections::BTreeMap::new();
        for &mm in &plan.memmap_machines {
            map.insert(mm.key(), measure_memmap(mm, plan.memmap_reps, progress)?);
        }
        report.memmap = Some(map);
    }
    if want(Section::PageAlloc) {
        report.page_alloc = Some(measure_page_alloc(plan, progress)?);
    }
    if want(Section::Slab) && (plan.slab || sections.contains(&Section::Slab)) {
        progress.set_message("slab");
        report.slab = Some(crate::slab_bench::run(plan.quick)?);
    }
    if want(Section::Compaction) {
        progress.set_message("compaction");
        report.compaction = Some(crate::compaction_bench::run(plan.quick)?);
    }
    let runs = if plan.quick { 1 } else { 3 };
    if want(Section::Replay) && (plan.real_data || sections.contains(&Section::Replay)) {
        progress.set_message("replay");
        report.replay = Some(measure_replay(runs)?);
    }
    if want(Section::Estimate) && (plan.real_data || sections.contains(&Section::Estimate)) {
        progress.set_message("estimate");
        report.estimate = Some(measure_estimate(runs)?);
    }
    if want(Section::Pgtable) {
        progress.set_message("pgtable");
        report.pgtable = Some(crate::pgtable_bench::run(plan.quick)?);
    }
    if want(Section::Zsmalloc) {
        progress.set_message("zsmalloc");
        let r = crate::zs_bench::run(plan.zs_pages)?;
        report.zsmalloc = Some(r.zsmalloc);
        report.z3fold = Some(r.z3fold);
    }
    Ok(report)
}

// ---------------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------------

/// Bytes as a readable size.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn machine_name(r: &MemmapResult) -> String {
    let layout = if r.layout == "flat" { "flat" } else { "two-level" };
    if r.gib >= 1024 && r.gib.is_multiple_of(1024) {
        format!("{layout} {} TiB", r.gib / 1024)
    } else {
        format!("{layout} {} GiB", r.gib)
    }
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}

/// Renders the report as aligned text tables.
pub fn render_table(report: &Report) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let m = &report.meta;
    let load = m.host_loadavg_1m.map_or_else(|| "?".to_string(), |l| format!("{l:.2}"));
    let _ = writeln!(
        out,
        "memdesc bench{}{} — host: {} CPUs, load {load}",
        if m.quick { " --quick" } else { "" },
        if m.optimized { "" } else { " (debug build: timings are not meaningful)" },
        m.host_cpus
    );
    if let Some(mm) = &report.memmap {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<20} {:>10} {:>12} {:>10} {:>13} {:>22} {:>11}",
            "memmap", "init", "init (warm)", "boot", "of it host", "memmap size", "host RSS"
        );
        for r in mm.values() {
            let rss = r.host_rss_bytes.map_or_else(|| "?".to_string(), |b| format!("+{}", size(b)));
            let sys = r.boot_host_sys_ms.map_or_else(|| "?".to_string(), |s| format!("{s:.0} ms"));
            let _ = writeln!(
                out,
                "  {:<18} {:>7.1} ms {:>9.1} ms {:>7.0} ms {:>13} {:>22} {:>11}",
                machine_name(r),
                r.init_ms,
                r.init_prefaulted_ms,
                r.boot_ms,
                sys,
                format!("{} ({:.4} %)", size(r.bytes), r.bytes_pct_of_ram),
                rss
            );
        }
        let _ = writeln!(
            out,
            "  (init: placing and writing every word, on fresh / on already-touched host memory; boot: memmap,\n   \
             reserved ranges and free lists; \"of it host\": host kernel time faulting in simulated memory)"
        );
    }
    if let Some(p) = &report.page_alloc {
        let t = &p.targets;
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<30} {:>9} {:>11} {:>13} {:>9} {:>13}",
            "page_alloc (ns, median)", "memdesc", "two-level", "buddy_sys_al", "speedup", "target"
        );
        let rows = [
            (
                "order-0 alloc+free pair",
                &p.order0_pair_ns,
                p.order0_speedup_vs_bsa,
                t.order0_speedup_vs_bsa,
                t.order0_met,
            ),
            ("mixed orders 0-9, per op", &p.mixed_ns, p.mixed_speedup_vs_bsa, t.mixed_speedup_vs_bsa, t.mixed_met),
        ];
        for (name, ns, speedup, target, met) in rows {
            let _ = writeln!(
                out,
                "  {:<28} {:>9.1} {:>11.1} {:>13.1} {:>8.2}x {:>13}",
                name,
                ns.memdesc,
                ns.memdesc_two_level,
                ns.buddy_system_allocator,
                speedup,
                format!(">= {target}x {}", verdict(met))
            );
        }
        let _ = writeln!(
            out,
            "  {:<28} {:>9} {:>11} {:>13} {:>8.2}x {:>13}",
            "2 threads / 1 thread (wall)",
            format!("{:.1}", p.threads.two_threads_pairs_per_s / 1e6),
            format!("{:.1}", p.threads.one_thread_pairs_per_s / 1e6),
            "M pairs/s",
            p.threads2_speedup,
            format!(">= {}x {}", t.threads2_speedup, verdict(t.threads2_met))
        );
        let _ = writeln!(
            out,
            "  {:<28} {:>9.1} ns per pair alone, {:.1} ns per pair each when two run together",
            "CPU time per pair", p.threads.one_thread_cpu_ns_per_pair, p.threads.two_threads_cpu_ns_per_pair
        );
        let q = &p.params;
        let _ = writeln!(
            out,
            "  ({} pairs after {} order-0 pages, half freed; {} mixed ops, peak {} live; median of {} rounds)",
            q.pairs, q.steady_pages, q.mixed_ops, q.mixed_peak_live, q.reps
        );
    }
    if let Some(sb) = &report.slab {
        let _ = writeln!(out);
        let _ = writeln!(out, "slab (ns per kmalloc+kfree pair, real size mix)   memdesc   mimalloc     system");
        let (a, b) = (&sb.pair_ns, &sb.threads2_pair_ns);
        let _ = writeln!(out, "  one thread {:>38.1} {:>10.1} {:>10.1}", a.memdesc, a.mimalloc, a.system);
        let _ = writeln!(out, "  two threads, per thread {:>25.1} {:>10.1} {:>10.1}", b.memdesc, b.mimalloc, b.system);
        let _ = writeln!(
            out,
            "  speedup vs mimalloc {:.2}x (target >= 1), vs system {:.2}x (target >= 2); {} sizes, mean {:.0} B",
            sb.speedup_vs_mimalloc, sb.speedup_vs_system, sb.sizes, sb.mean_size
        );
        let w = &sb.waste;
        let _ = writeln!(
            out,
            "  replay: {} allocs, {} frees ({} of pre-trace objects); live {} B requested, {} B allocated, {} pages",
            w.allocs, w.frees, w.unmatched_frees, w.bytes_requested, w.bytes_allocated, w.pages_used
        );
        let _ = writeln!(
            out,
            "  waste (pages x 4096 - requested) / requested: {:.3} at the end, {:.3} at the peak ({} B)",
            w.waste_ratio, w.waste_ratio_at_peak, w.peak_bytes_requested
        );
        let _ = writeln!(out, "  ({})", sb.trace);
    }
    if let Some(c) = &report.compaction {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "compaction ({} MiB, {} live order-0 folios, every other one freed; median of {})",
            c.machine_mib, c.live_folios, c.reps
        );
        let _ = writeln!(
            out,
            "  order>=9 free blocks {} -> {}; {} migrated, {} failed, {} pages scanned in {:.1} ms ({:.0} migrations/s)",
            c.order9_blocks_before, c.order9_blocks_after, c.migrated, c.failed, c.scanned, c.compact_ms, c.migrated_per_sec
        );
        let _ = writeln!(
            out,
            "  every live folio mapped in a process and its fork child: {:.0} migrations/s ({:.2}x unmapped), order>=9 free blocks after {}",
            c.mapped_migrated_per_sec, c.mapped_to_unmapped_rate, c.mapped_order9_blocks_after
        );
    }
    if let Some(r) = &report.replay {
        let _ = writeln!(out);
        let _ = writeln!(out, "replay of {} ({} events, decompression and parsing included)", r.trace, r.events);
        let _ = writeln!(
            out,
            "  {:.2} M events/s (target >= {:.0} M: {}), {:.2} M per CPU second; parsing alone {:.2} M/s ({:.2} M per CPU second)",
            r.events_per_sec / 1e6,
            r.target_events_per_sec / 1e6,
            verdict(r.events_per_sec >= r.target_events_per_sec),
            r.events_per_cpu_sec / 1e6,
            r.parse_events_per_sec / 1e6,
            r.parse_events_per_cpu_sec / 1e6
        );
        let _ = writeln!(
            out,
            "  CPU {:.2} s, of it host kernel {:.2} s (faulting in simulated memory); boot {:.2} s and start state {:.2} s not included; {} allocation failures",
            r.cpu_seconds, r.host_sys_seconds, r.boot_seconds, r.start_state_seconds, r.alloc_failures
        );
    }
    if let Some(e) = &report.estimate {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "estimate of {} ({} pfns): {:.3} s (target <= {:.0} s: {})",
            e.snapshot,
            e.pfns,
            e.seconds,
            e.target_seconds,
            verdict(e.seconds <= e.target_seconds)
        );
    }
    if let Some(p) = &report.pgtable {
        let _ = writeln!(out);
        let _ = writeln!(out, "pgtable (median of {} rounds)", p.rounds);
        let _ = writeln!(
            out,
            "  map+unmap 2 MiB: {:.1} ns per page by PTE, {:.0} ns by PMD ({:.1}x)",
            p.pte_map_unmap_ns_per_page, p.pmd_map_unmap_ns, p.pte_over_pmd
        );
        let _ = writeln!(
            out,
            "  fork+teardown {:.1} ns per mapped page; rmap walk of a folio in two mms {:.0} ns; ptdesc {} B",
            p.fork_ns_per_page, p.rmap_walk_ns, p.ptdesc_bytes
        );
    }
    if let (Some(z), Some(z3)) = (&report.zsmalloc, &report.z3fold) {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "zsmalloc density: {} pages of {} files under {} ({}), {} stored as-is, mean object {:.0} B",
            z.input_pages, z.files, z.source, z.compressor, z.incompressible_pages, z.mean_object_bytes
        );
        let _ = writeln!(out, "  pool bytes / live object bytes    before compaction   after   with metadata");
        for (name, d) in [("zsmalloc", &z.detail), ("z3fold", z3)] {
            let _ = writeln!(
                out,
                "  {:<32} {:>17.3} {:>7.3} {:>15.3}",
                name,
                d.overhead_ratio_before_compaction,
                d.overhead_ratio_after_compaction,
                d.overhead_ratio_with_metadata_after_compaction
            );
        }
        let steps: Vec<String> = z.by_step.iter().map(|(k, v)| format!("{k} B: {v:.3}")).collect();
        let pages: Vec<String> = z.by_max_pages.iter().map(|(k, v)| format!("{k}: {v:.3}")).collect();
        let _ = writeln!(
            out,
            "  zsmalloc target <= {} {}; class step {} B, zspages of up to {} pages ({} classes)",
            z.target_overhead_ratio,
            verdict(z.target_met),
            z.class_step,
            z.max_pages,
            z.classes
        );
        let _ = writeln!(
            out,
            "  after compaction by class step: {}; by most pages per zspage: {}",
            steps.join(", "),
            pages.join(", ")
        );
    }
    out
}

/// `memdesc bench`.
pub fn run(args: &BenchArgs) -> Result<()> {
    let plan = Plan::new(args.quick);
    let progress = if args.json || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        let style = ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
            .map_err(|e| anyhow!("progress template: {e}"))?;
        ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr()).with_style(style)
    };
    progress.enable_steady_tick(Duration::from_millis(200));
    let report = measure(&plan, &args.only, &progress);
    progress.finish_and_clear();
    let report = report?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).context("serialising the report")?);
    } else {
        print!("{}", render_table(&report));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tiny machines and loops: the whole run takes well under 10 s in a debug build.
    fn tiny_plan() -> Plan {
        Plan {
            quick: true,
            memmap_machines: vec![
                MemmapMachine { gib: 1, layout: MemmapLayout::Flat },
                MemmapMachine { gib: 4, layout: MemmapLayout::TwoLevel },
            ],
            memmap_reps: 1,
            machine_pages: 16 << 10,
            steady_pages: 4096,
            pairs: 2000,
            mixed_ops: 2000,
            mixed_max_live: 64,
            thread_pairs: 2000,
            slab: false,
            real_data: false,
            zs_pages: 96,
            thread_reps: 1,
            reps: 1,
        }
    }

    fn get<'a>(v: &'a serde_json::Value, path: &str) -> &'a serde_json::Value {
        path.split('.').fold(v, |v, k| v.get(k).unwrap_or_else(|| panic!("missing key {path}")))
    }

    fn num(v: &serde_json::Value, path: &str) -> f64 {
        get(v, path).as_f64().unwrap_or_else(|| panic!("{path} is not a number"))
    }

    #[test]
    fn report_has_every_key_with_sane_values() {
        let plan = tiny_plan();
        let report = measure(&plan, &[], &ProgressBar::hidden()).unwrap();
        let v = serde_json::to_value(&report).unwrap();
        for mm in &plan.memmap_machines {
            let k = format!("memmap.{}", mm.key());
            for f in ["init_ms", "init_prefaulted_ms", "boot_ms"] {
                assert!(num(&v, &format!("{k}.{f}")) > 0.0, "{k}.{f}");
            }
            // The bytes are the booted allocator's own figure.
            let layout = MemoryLayout::pc(mm.gib, mm.layout);
            let m = memdesc_host::boot(&layout, Config::default()).unwrap();
            assert_eq!(get(&v, &format!("{k}.bytes")).as_u64(), Some(m.memmap().bytes()), "{k}.bytes");
            assert_eq!(get(&v, &format!("{k}.pages")).as_u64(), Some(layout.present_pages()));
            assert!(get(&v, &format!("{k}.host_rss_bytes")).is_u64());
        }
        let flat = m_bytes(&v, "memmap.flat_1g");
        let two = m_bytes(&v, "memmap.two_level_4g");
        assert!(two < flat, "a 4 GiB two-level memmap ({two} B) is smaller than a 1 GiB flat one ({flat} B)");
        for k in ["order0_pair_ns", "mixed_ns"] {
            for a in ["memdesc", "memdesc_two_level", "buddy_system_allocator"] {
                assert!(num(&v, &format!("page_alloc.{k}.{a}")) > 0.0, "page_alloc.{k}.{a}");
            }
        }
        for k in ["order0_speedup_vs_bsa", "mixed_speedup_vs_bsa", "threads2_speedup"] {
            assert!(num(&v, &format!("page_alloc.{k}")) > 0.0, "page_alloc.{k}");
            assert!(get(&v, &format!("page_alloc.targets.{k}")).is_f64());
        }
        assert!(num(&v, "page_alloc.params.mixed_peak_live") <= 64.0);
        assert_eq!(get(&v, "meta.quick"), &serde_json::Value::Bool(true));
        let table = render_table(&report);
        assert!(table.contains("flat 1 GiB") && table.contains("two-level 4 GiB") && table.contains("2 threads"));
        for k in ["zsmalloc.overhead_ratio_before_compaction", "zsmalloc.overhead_ratio_after_compaction"] {
            assert!(num(&v, k) >= 1.0, "{k}");
        }
        assert!(num(&v, "z3fold.overhead_ratio_after_compaction") >= 1.0);
        assert!(table.contains("zsmalloc density"));
    }

    fn m_bytes(v: &serde_json::Value, k: &str) -> u64 {
        get(v, &format!("{k}.bytes")).as_u64().unwrap()
    }

    #[test]
    fn only_selects_sections() {
        let mut plan = tiny_plan();
        plan.memmap_machines.truncate(1);
        let r = measure(&plan, &[Section::Memmap], &ProgressBar::hidden()).unwrap();
        assert!(r.memmap.is_some() && r.page_alloc.is_none());
        let v = serde_json::to_value(&r).unwrap();
        assert!(v.get("page_alloc").is_none());
    }

    #[test]
    fn keys_name_the_machines() {
        assert_eq!(MemmapMachine { gib: 64, layout: MemmapLayout::Flat }.key(), "flat_64g");
        assert_eq!(MemmapMachine { gib: 1024, layout: MemmapLayout::TwoLevel }.key(), "two_level_1t");
        let full = Plan::new(false);
        let keys: Vec<_> = full.memmap_machines.iter().map(|m| m.key()).collect();
        assert_eq!(keys, ["flat_64g", "two_level_1t"]);
        assert_eq!(Plan::new(true).memmap_machines.len(), 2, "--quick measures the same machines");
    }

    #[test]
    fn mixed_sequence_is_repeatable_and_capped() {
        let (a, peak) = mixed_ops(20_000, 16);
        let (b, _) = mixed_ops(20_000, 16);
        assert_eq!(a, b);
        assert!(peak <= 16);
        let mut live = 0usize;
        let mut allocs = 0;
        for op in &a {
            match *op {
                Op::Alloc(o) => {
                    assert!(o <= MIXED_MAX_ORDER);
                    live += 1;
                    allocs += 1;
                }
                Op::Free(i) => {
                    assert!(i < live);
                    live -= 1;
                }
            }
            assert!(live <= 16);
        }
        assert!((8_000..12_000).contains(&allocs), "about half the steps allocate: {allocs}");
    }

    #[test]
    fn steady_state_frees_half() {
        let idx = steady_free_indices(1000);
        assert_eq!(idx.len(), 500);
        let mut sorted = idx.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 500, "distinct indices");
        assert_eq!(idx, steady_free_indices(1000), "seeded");
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
    }
}
