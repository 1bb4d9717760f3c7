//! The `page_alloc` section (issue 3): memdesc against `buddy_system_allocator` on the same
//! frame range and operation sequence (order-0 pairs, mixed orders, two threads). The workload
//! functions are shared with the criterion benches (`benches/page_alloc.rs`).

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use buddy_system_allocator::FrameAllocator;
use indicatif::ProgressBar;
use memdesc::cpu::Cpu;
use memdesc::{Config, Gfp, MemmapLayout, MemoryLayout, Pages, Pfn, RegionSpec};
use memdesc_host::SimMachine;
use rand::rngs::Xoshiro256PlusPlus;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use serde::Serialize;

use super::plan::*;
use crate::measure::*;

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
pub(crate) fn measure_pairs(plan: &Plan) -> Result<(PerAllocator, Steady)> {
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
pub(crate) fn measure_mixed(plan: &Plan, ops: &[Op]) -> Result<PerAllocator> {
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
pub(crate) struct ThreadsRun {
    /// All pairs over the time from the first thread's start to the last thread's end.
    pairs_per_s: f64,
    /// Mean CPU time per pair of the threads (time spent waiting for a CPU not counted).
    cpu_ns_per_pair: f64,
}

/// Runs the order-0 pair loop on `threads` CPUs of `m` at once.
pub(crate) fn pairs_on_threads(m: &SimMachine, threads: usize, pairs: u64) -> Result<ThreadsRun> {
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
pub(crate) const PAGE_ALLOC_STEPS: u64 = 3;
