//! The `slab` section of `memdesc bench` (issue 4): kmalloc+kfree pairs over the size mix of a
//! real kernel's kmalloc events, run through memdesc, mimalloc and the system allocator in the
//! same process; and the memory efficiency of replaying a real kmalloc/kmem_cache stream
//! through memdesc's slab caches.
//!
//! Issue 14 adds, in the same run: `scaling` (the pair loop on 1, 2, …, `--threads` threads at
//! once, each memdesc thread on its own claimed CPU: aggregate pairs per second and CPU time
//! per pair) and `cross_cpu` (objects of the same size mix allocated by a producer thread on
//! CPU 0 and freed by a consumer thread on CPU 1, handed over in batches,
//! [`crate::bench::threads::handoff`]).
//!
//! The size mix and the replayed stream come from `../shared/data/traces/metadata` when it is
//! there, else from the project's bundled sample.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use indicatif::ProgressBar;
use memdesc::base::layout::{MemmapLayout, MemoryLayout};
use memdesc::slab::kmalloc::KBox;
use memdesc::slab::SlabObj;
use memdesc::{CacheArgs, CacheRef, Config, Gfp};
use memdesc_host::{SimMachine, SimPlatform};
use memdesc_linux::trace::{Event, TraceReader};
use mimalloc::MiMalloc;
use serde::Serialize;

use crate::bench::threads::{handoff, medians, on_threads, ratio as speedup, Handoff, QueueOnly, ThreadsRun, Work};

/// Objects kept live by the pair loop: each step frees the oldest and allocates a new one, so
/// the loop does not just recycle one object.
const WINDOW: usize = 256;

/// The trace the size mix and the waste replay read.
pub fn trace_path() -> PathBuf {
    crate::data_dirs::shared_data("traces/metadata")
        .or_else(|| crate::data_dirs::bundled(crate::replay::driver::SAMPLE_TRACE, "events.txt.zst"))
        .map_or_else(|| PathBuf::from("samples/small/events.txt.zst"), |d| d.join("events.txt.zst"))
}

/// The requested sizes of every kmalloc event, in trace order.
pub fn size_mix(path: &Path, limit: usize) -> Result<Vec<usize>> {
    let mut sizes = Vec::new();
    TraceReader::open(path)
        .with_context(|| format!("opening {}", path.display()))?
        .for_each(|r| {
            if let Event::Kmalloc { bytes_req, .. } = r.event {
                if sizes.len() < limit {
                    sizes.push(bytes_req.max(1) as usize);
                }
            }
        })
        .with_context(|| format!("reading {}", path.display()))?;
    anyhow::ensure!(!sizes.is_empty(), "{} has no kmalloc events", path.display());
    Ok(sizes)
}

/// An allocator the pair loop can drive.
trait PairAlloc {
    fn alloc(&mut self, size: usize) -> *mut u8;
    fn free(&mut self, p: *mut u8, size: usize);
}

struct Memdesc<'m, 'c> {
    m: &'m SimMachine,
    cpu: &'c memdesc::Cpu<'m>,
}

impl PairAlloc for Memdesc<'_, '_> {
    fn alloc(&mut self, size: usize) -> *mut u8 {
        // The safe API end to end: an owned KBox, given up as a pointer for the pair loop.
        self.m.kmalloc(self.cpu, size, Gfp::KERNEL).map_or(std::ptr::null_mut(), |b| b.into_raw().as_ptr())
    }
    fn free(&mut self, p: *mut u8, _: usize) {
        if let Some(p) = NonNull::new(p) {
            // SAFETY: the pair loop frees each pointer `alloc` returned exactly once.
            let _ = self.m.kfree(self.cpu, unsafe { KBox::from_raw(self.m, p) });
        }
    }
}

struct Global<A: GlobalAlloc>(A);

impl<A: GlobalAlloc> PairAlloc for Global<A> {
    fn alloc(&mut self, size: usize) -> *mut u8 {
        // SAFETY: size >= 1, align 8 is a power of two.
        unsafe { self.0.alloc(Layout::from_size_align_unchecked(size, 8)) }
    }
    fn free(&mut self, p: *mut u8, size: usize) {
        if !p.is_null() {
            // SAFETY: p came from alloc with this same layout.
            unsafe { self.0.dealloc(p, Layout::from_size_align_unchecked(size, 8)) }
        }
    }
}

/// Runs `pairs` alloc+free pairs over `sizes`; returns nanoseconds per pair. Out of line, so
/// a profiler can collect exactly the loop (`examples/kmalloc_pairs.rs`).
#[inline(never)]
fn pairs(a: &mut impl PairAlloc, sizes: &[usize], pairs: usize) -> f64 {
    let mut ring: Vec<(*mut u8, usize)> = Vec::with_capacity(WINDOW);
    for &s in sizes.iter().cycle().take(WINDOW) {
        let p = a.alloc(s);
        ring.push((p, s));
    }
    let t = Instant::now();
    for i in 0..pairs {
        let s = sizes[i % sizes.len()];
        let slot = i % WINDOW;
        let (old, old_size) = ring[slot];
        a.free(old, old_size);
        let p = a.alloc(s);
        if !p.is_null() {
            // Touch the object as a caller would.
            // SAFETY: p points to at least s >= 1 writable bytes.
            unsafe { p.write(i as u8) };
        }
        ring[slot] = (p, s);
    }
    let ns = t.elapsed().as_nanos() as f64 / pairs as f64;
    for (p, s) in ring {
        a.free(p, s);
    }
    ns
}

/// The pair loop on memdesc alone, on the caller's CPU `cpu` of `m` (for instruction counts:
/// `examples/kmalloc_pairs.rs`); returns nanoseconds per pair.
pub fn memdesc_pair_loop(m: &SimMachine, cpu: &memdesc::Cpu<'_>, sizes: &[usize], n: usize) -> f64 {
    pairs(&mut Memdesc { m, cpu }, sizes, n)
}

/// The same pair loop on a peer, `"mimalloc"` or `"system"` (glibc malloc), for instruction
/// counts beside memdesc's (`examples/kmalloc_pairs.rs`); returns nanoseconds per pair, or
/// `None` for another name.
pub fn peer_pair_loop(peer: &str, sizes: &[usize], n: usize) -> Option<f64> {
    match peer {
        "mimalloc" => Some(pairs(&mut Global(MiMalloc), sizes, n)),
        "system" => Some(pairs(&mut Global(System), sizes, n)),
        _ => None,
    }
}

/// Results of the pair loop (and, in `scaling` and `cross_cpu`, other figures of the same
/// three allocators).
#[derive(Serialize, Debug, Clone, Copy, Default)]
pub struct PairNs {
    /// memdesc kmalloc/kfree.
    pub memdesc: f64,
    /// mimalloc.
    pub mimalloc: f64,
    /// The system allocator (glibc malloc).
    pub system: f64,
}

/// Memory efficiency of the replayed stream.
#[derive(Serialize, Debug, Clone, Default)]
pub struct Waste {
    /// kmalloc and kmem_cache_alloc events replayed.
    pub allocs: u64,
    /// Frees of objects allocated during the trace.
    pub frees: u64,
    /// Frees of objects allocated before the trace began (expected; skipped).
    pub unmatched_frees: u64,
    /// Caches created for kmem_cache_alloc names.
    pub caches: u64,
    /// Bytes the live objects asked for, at the end of the trace.
    pub bytes_requested: u64,
    /// Bytes the allocator gave them (object sizes).
    pub bytes_allocated: u64,
    /// Pages of the slabs (and large kmallocs) holding them.
    pub pages_used: u64,
    /// (pages_used × 4096 − bytes_requested) / bytes_requested at the end of the trace.
    pub waste_ratio: f64,
    /// The same ratio at the sampled moment with the most bytes requested.
    pub waste_ratio_at_peak: f64,
    /// Bytes requested at that moment.
    pub peak_bytes_requested: u64,
}

/// The `slab` section's results.
#[derive(Serialize, Debug, Clone)]
pub struct SlabBench {
    /// Where the sizes came from.
    pub trace: String,
    /// Sizes in the mix.
    pub sizes: usize,
    /// Mean requested size.
    pub mean_size: f64,
    /// One thread, ns per kmalloc+kfree pair.
    pub pair_ns: PairNs,
    /// Two threads at once, ns per pair per thread.
    pub threads2_pair_ns: PairNs,
    /// mimalloc ns / memdesc ns (≥ 1 means memdesc is faster).
    pub speedup_vs_mimalloc: f64,
    /// system ns / memdesc ns.
    pub speedup_vs_system: f64,
    /// The pair loop at 1, 2, …, `--threads` threads at once.
    pub scaling: Vec<SlabScalingRow>,
    /// Objects allocated on CPU 0 and freed on CPU 1.
    pub cross_cpu: SlabCross,
    /// The replay of the trace's kmalloc/kmem_cache stream.
    pub waste: Waste,
}

/// One row of `slab.scaling`: the pair loop on `threads` threads at once (each memdesc thread
/// on its own CPU, each thread starting at another place in the size mix).
#[derive(Serialize, Debug, Clone, Copy, Default)]
pub struct SlabScalingRow {
    /// Threads running at once.
    pub threads: usize,
    /// Aggregate kmalloc+kfree pairs per second of all threads (median).
    pub pairs_per_s: PairNs,
    /// CPU time per pair, all threads together (median).
    pub cpu_ns_per_pair: PairNs,
}

/// `slab.cross_cpu`: objects of the size mix allocated by a producer thread on CPU 0 (which
/// writes their first byte, as a driver fills a buffer) and freed by a consumer thread on
/// CPU 1, handed over in batches.
#[derive(Serialize, Debug, Clone, Copy, Default)]
pub struct SlabCross {
    /// Wall-clock nanoseconds per object, allocation to free (median).
    pub ns_per_object: PairNs,
    /// CPU time of both threads per object (median).
    pub cpu_ns_per_object: PairNs,
    /// mimalloc's ns per object over memdesc's.
    pub speedup_vs_mimalloc: f64,
    /// The system allocator's ns per object over memdesc's.
    pub speedup_vs_system: f64,
    /// The same hand-over of objects that cost nothing to allocate or free
    /// ([`QueueOnly`]): the part of every figure above that is the queue's, wall-clock ns per
    /// object (median).
    pub queue_only_ns_per_object: f64,
    /// CPU ns per object of that hand-over (median).
    pub queue_only_cpu_ns_per_object: f64,
    /// Objects per timed run.
    pub objects: u64,
    /// Objects per batch handed over.
    pub batch: usize,
}

/// Sizes and repetitions of the slab section.
#[derive(Clone, Copy, Debug)]
pub struct SlabPlan {
    /// Pairs per thread per timed run of the pair loop.
    pub pairs: usize,
    /// Timed runs of each measurement (medians reported).
    pub reps: usize,
    /// Most threads of the scaling runs.
    pub threads: usize,
    /// Objects per timed cross-CPU run.
    pub cross_objects: u64,
    /// Objects per batch handed over.
    pub cross_batch: usize,
}

impl SlabPlan {
    /// The plan of `memdesc bench` (`quick` for `--quick`) with up to `threads` threads.
    pub fn new(quick: bool, threads: usize) -> Self {
        SlabPlan {
            pairs: if quick { 200_000 } else { 4_000_000 },
            reps: if quick { 1 } else { 3 },
            threads: threads.max(1),
            cross_objects: if quick { 200_000 } else { 2_000_000 },
            cross_batch: crate::bench::threads::HANDOFF_BATCH,
        }
    }
}

fn peers(v: [f64; 3]) -> PairNs {
    PairNs { memdesc: v[0], mimalloc: v[1], system: v[2] }
}

/// The pair loop of allocator `which` (0 memdesc, 1 mimalloc, 2 the system allocator) on `t`
/// threads at once.
fn pairs_on_threads(m: &SimMachine, sizes: &[usize], which: usize, t: usize, n: usize) -> Result<ThreadsRun> {
    on_threads(t, n as u64, |id| {
        let off = &sizes[id * 7919 % sizes.len()..];
        Ok(match which {
            0 => {
                let cpu = m.cpus().claim(id).ok_or_else(|| anyhow!("CPU {id} busy or absent"))?;
                Box::new(move || {
                    pairs(&mut Memdesc { m, cpu: &cpu }, off, n);
                    Ok(())
                }) as Work<'_>
            }
            1 => Box::new(move || {
                pairs(&mut Global(MiMalloc), off, n);
                Ok(())
            }),
            _ => Box::new(move || {
                pairs(&mut Global(System), off, n);
                Ok(())
            }),
        })
    })
}

/// `slab.scaling`: after one warm-up of each, `reps` rounds of every thread count on every
/// allocator (the first allocator rotating); medians.
fn measure_scaling(
    m: &SimMachine,
    sizes: &[usize],
    plan: &SlabPlan,
    progress: &ProgressBar,
) -> Result<Vec<SlabScalingRow>> {
    let mut runs: Vec<[Vec<ThreadsRun>; 3]> = vec![Default::default(); plan.threads];
    for t in 1..=plan.threads {
        for w in 0..3 {
            pairs_on_threads(m, sizes, w, t, plan.pairs)?;
        }
    }
    for rep in 0..plan.reps.max(1) {
        progress.set_message(format!("slab: scaling, round {}/{}", rep + 1, plan.reps.max(1)));
        for t in 1..=plan.threads {
            for k in 0..3 {
                let w = (rep + k) % 3;
                runs[t - 1][w].push(pairs_on_threads(m, sizes, w, t, plan.pairs)?);
            }
        }
    }
    Ok(runs
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let med = r.map(|runs| medians(&runs));
            SlabScalingRow {
                threads: i + 1,
                pairs_per_s: peers(med.map(|m| m.0.round())),
                cpu_ns_per_pair: peers(med.map(|m| crate::measure::r3(m.1))),
            }
        })
        .collect())
}

/// memdesc kmalloc objects of a size mix for [`handoff`] (shared with the criterion benches).
pub struct MemdescObjs<'m, 's> {
    /// The machine; each thread claims the CPU it is given.
    pub m: &'m SimMachine,
    /// The sizes, taken in turn.
    pub sizes: &'s [usize],
}

impl Handoff for MemdescObjs<'_, '_> {
    type Obj = KBox;
    type Side<'x>
        = (memdesc::Cpu<'x>, usize)
    where
        Self: 'x;
    fn side(&self, cpu: usize) -> Result<(memdesc::Cpu<'_>, usize)> {
        Ok((self.m.cpus().claim(cpu).ok_or_else(|| anyhow!("CPU {cpu} busy or absent"))?, 0))
    }
    fn alloc(&self, side: &mut (memdesc::Cpu<'_>, usize)) -> Result<KBox> {
        let size = self.sizes[side.1 % self.sizes.len()];
        side.1 += 1;
        let b = self.m.kmalloc(&side.0, size, Gfp::KERNEL).map_err(|e| anyhow!("memdesc kmalloc({size}): {e}"))?;
        // SAFETY: the KBox owns at least `size` >= 1 writable bytes.
        unsafe { b.as_ptr().as_ptr().write(side.1 as u8) };
        Ok(b)
    }
    fn free(&self, side: &mut (memdesc::Cpu<'_>, usize), b: KBox) -> Result<()> {
        self.m.kfree(&side.0, b).map_err(|e| anyhow!("memdesc kfree: {e}"))
    }
}

/// A `GlobalAlloc` peer's objects of a size mix for [`handoff`], handed over as (address,
/// size): `GlobalObjs(MiMalloc, sizes)`, `GlobalObjs(System, sizes)`.
pub struct GlobalObjs<'s, A: GlobalAlloc + Sync>(pub A, pub &'s [usize]);

impl<A: GlobalAlloc + Sync> Handoff for GlobalObjs<'_, A> {
    type Obj = (usize, usize);
    type Side<'x>
        = usize
    where
        Self: 'x;
    fn side(&self, _: usize) -> Result<usize> {
        Ok(0)
    }
    fn alloc(&self, next: &mut usize) -> Result<(usize, usize)> {
        let size = self.1[*next % self.1.len()];
        *next += 1;
        // SAFETY: size >= 1, align 8 is a power of two.
        let p = unsafe { self.0.alloc(Layout::from_size_align_unchecked(size, 8)) };
        anyhow::ensure!(!p.is_null(), "out of memory allocating {size} bytes");
        // SAFETY: p points to at least `size` >= 1 writable bytes.
        unsafe { p.write(*next as u8) };
        Ok((p as usize, size))
    }
    fn free(&self, _: &mut usize, (p, size): (usize, usize)) -> Result<()> {
        // SAFETY: p came from `alloc` with this same layout; the handoff frees each object once.
        unsafe { self.0.dealloc(p as *mut u8, Layout::from_size_align_unchecked(size, 8)) };
        Ok(())
    }
}

/// `slab.cross_cpu`: one warm-up of each allocator, then `reps` rounds (the first allocator
/// rotating); medians.
fn measure_cross(m: &SimMachine, sizes: &[usize], plan: &SlabPlan) -> Result<SlabCross> {
    let (n, batch) = (plan.cross_objects, plan.cross_batch);
    let md = MemdescObjs { m, sizes };
    let (mi, sys) = (GlobalObjs(MiMalloc, sizes), GlobalObjs(System, sizes));
    let run = |w: usize| match w {
        0 => handoff(&md, n, batch),
        1 => handoff(&mi, n, batch),
        2 => handoff(&sys, n, batch),
        _ => handoff(&QueueOnly, n, batch),
    };
    let mut runs: [Vec<ThreadsRun>; 4] = Default::default();
    for w in 0..4 {
        run(w)?;
    }
    for rep in 0..plan.reps.max(1) {
        for k in 0..4 {
            let w = (rep + k) % 4;
            runs[w].push(run(w)?);
        }
    }
    let [m0, m1, m2, q] = runs.map(|r| medians(&r));
    let med = [m0, m1, m2];
    let ns = med.map(|(per_s, _)| if per_s > 0.0 { crate::measure::r3(1e9 / per_s) } else { 0.0 });
    Ok(SlabCross {
        ns_per_object: peers(ns),
        cpu_ns_per_object: peers(med.map(|m| crate::measure::r3(m.1))),
        speedup_vs_mimalloc: speedup(ns[1], ns[0]),
        speedup_vs_system: speedup(ns[2], ns[0]),
        queue_only_ns_per_object: if q.0 > 0.0 { crate::measure::r3(1e9 / q.0) } else { 0.0 },
        queue_only_cpu_ns_per_object: crate::measure::r3(q.1),
        objects: n,
        batch,
    })
}

/// The slab section's machine: 8 GiB flat PC layout, `cpus` CPUs, `debug_checks` off.
pub fn bench_machine(cpus: usize) -> Result<SimMachine> {
    memdesc_host::boot(
        &MemoryLayout::pc(8, MemmapLayout::Flat),
        Config { nr_cpus: cpus, debug_checks: false, ..Config::default() },
    )
    .map_err(|e| anyhow::anyhow!("{e}"))
}

/// Runs the section; `quick` shortens the loops; the scaling runs go up to `threads` threads.
pub fn run(quick: bool, threads: usize, progress: &ProgressBar) -> Result<SlabBench> {
    run_with(&trace_path(), &SlabPlan::new(quick, threads), progress)
}

/// Runs the section on the size mix and kmalloc stream of `path` with `plan`'s sizes.
pub fn run_with(path: &Path, plan: &SlabPlan, progress: &ProgressBar) -> Result<SlabBench> {
    let path = path.to_path_buf();
    let sizes = size_mix(&path, 1 << 20)?;
    let (n, reps) = (plan.pairs, plan.reps.max(1));
    let m = bench_machine(plan.threads.max(2))?;
    progress.set_message("slab: one and two threads");
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let one = |which: &str| -> f64 {
        let cpu = m.cpus().claim(0).expect("cpu 0 is free");
        median(
            (0..reps)
                .map(|_| match which {
                    "memdesc" => pairs(&mut Memdesc { m: &m, cpu: &cpu }, &sizes, n),
                    peer => peer_pair_loop(peer, &sizes, n).expect("the bench names its peers"),
                })
                .collect(),
        )
    };
    let pair_ns = PairNs { memdesc: one("memdesc"), mimalloc: one("mimalloc"), system: one("system") };
    let two = |which: &str| -> f64 {
        let results: Vec<f64> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..2)
                .map(|id| {
                    let (m, sizes) = (&m, &sizes);
                    let which = which.to_string();
                    s.spawn(move || {
                        crate::measure::pin_thread_to_host_cpu(id);
                        let off = &sizes[id * 7919 % sizes.len()..];
                        match which.as_str() {
                            "memdesc" => {
                                let cpu = m.cpus().claim(id).expect("one cpu per thread");
                                pairs(&mut Memdesc { m, cpu: &cpu }, off, n)
                            }
                            peer => peer_pair_loop(peer, off, n).expect("the bench names its peers"),
                        }
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().expect("bench thread")).collect()
        });
        results.iter().sum::<f64>() / results.len() as f64
    };
    let threads2_pair_ns = PairNs { memdesc: two("memdesc"), mimalloc: two("mimalloc"), system: two("system") };
    let scaling = measure_scaling(&m, &sizes, plan, progress)?;
    progress.set_message("slab: cross-CPU objects");
    let cross_cpu = measure_cross(&m, &sizes, plan)?;
    progress.set_message("slab: replay waste");
    let waste = replay_waste(&bench_machine(1)?, &path)?;
    Ok(SlabBench {
        trace: path.display().to_string(),
        sizes: sizes.len(),
        mean_size: sizes.iter().sum::<usize>() as f64 / sizes.len() as f64,
        speedup_vs_mimalloc: pair_ns.mimalloc / pair_ns.memdesc,
        speedup_vs_system: pair_ns.system / pair_ns.memdesc,
        pair_ns,
        threads2_pair_ns,
        scaling,
        cross_cpu,
        waste,
    })
}

struct Live {
    obj: NonNull<u8>,
    req: u64,
    cache: Option<usize>,
}

/// Replays the kmalloc/kmem_cache events of `path` (objects matched by the kernel's hashed
/// pointers) and measures what the live objects cost at the end.
pub fn replay_waste(m: &SimMachine, path: &Path) -> Result<Waste> {
    let cpu = m.cpus().claim(0).context("no cpu")?;
    let mut live: HashMap<u64, Live> = HashMap::new();
    let mut caches: Vec<CacheRef<'_, SimPlatform>> = Vec::new();
    let mut by_name: HashMap<String, usize> = HashMap::new();
    let mut w = Waste::default();
    let mut requested = 0u64;
    let mut err = None;
    let mut step = 0u64;
    // `live` owns every object it holds (by the trace's pointer); each leaves it once, here.
    let free = |m: &SimMachine, caches: &[CacheRef<'_, SimPlatform>], l: Live| match l.cache {
        Some(i) => {
            // SAFETY: `l` was taken out of `live`, the one owner of the object of cache `i`.
            let obj = unsafe { SlabObj::from_raw(&caches[i], l.obj) };
            caches[i].free(&cpu, obj).map_err(|e| anyhow::anyhow!("{e}"))
        }
        // SAFETY: as above, for a kmalloc object.
        None => m.kfree(&cpu, unsafe { KBox::from_raw(m, l.obj) }).map_err(|e| anyhow::anyhow!("{e}")),
    };
    TraceReader::open(path)?.for_each(|r| {
        if err.is_some() {
            return;
        }
        let res: Result<()> = (|| {
            match r.event {
                Event::Kmalloc { ptr, bytes_req, .. } => {
                    if let Some(old) = live.remove(&ptr) {
                        requested -= old.req;
                        free(m, &caches, old)?;
                    }
                    let obj = m.kmalloc(&cpu, bytes_req as usize, Gfp::KERNEL)?.into_raw();
                    live.insert(ptr, Live { obj, req: bytes_req, cache: None });
                    requested += bytes_req;
                    w.allocs += 1;
                }
                Event::KmemCacheAlloc { ptr, name, bytes_req, bytes_alloc, .. } => {
                    let name = name.unwrap_or("unnamed");
                    let idx = match by_name.get(name) {
                        Some(&i) => i,
                        None => {
                            let leaked: &'static str = Box::leak(name.to_string().into_boxed_str());
                            let c = m.create_cache(&cpu, CacheArgs::new(leaked, bytes_alloc.max(8) as usize))?;
                            caches.push(c);
                            by_name.insert(name.to_string(), caches.len() - 1);
                            caches.len() - 1
                        }
                    };
                    if let Some(old) = live.remove(&ptr) {
                        requested -= old.req;
                        free(m, &caches, old)?;
                    }
                    let obj = caches[idx].alloc(&cpu)?.into_raw();
                    live.insert(ptr, Live { obj, req: bytes_req, cache: Some(idx) });
                    requested += bytes_req;
                    w.allocs += 1;
                }
                Event::Kfree { ptr, .. } | Event::KmemCacheFree { ptr, .. } if ptr != 0 => match live.remove(&ptr) {
                    Some(l) => {
                        requested -= l.req;
                        free(m, &caches, l)?;
                        w.frees += 1;
                    }
                    None => w.unmatched_frees += 1,
                },
                _ => {}
            }
            Ok(())
        })();
        if let Err(e) = res {
            err = Some(e);
        }
        step += 1;
        if step.is_multiple_of(20_000) && requested > w.peak_bytes_requested {
            w.peak_bytes_requested = requested;
            w.waste_ratio_at_peak = ratio(pages_used(m, &caches), requested);
        }
    })?;
    if let Some(e) = err {
        return Err(e);
    }
    w.caches = caches.len() as u64;
    w.bytes_requested = requested;
    w.bytes_allocated = live
        .values()
        .map(|l| match l.cache {
            Some(i) => caches[i].cache().usable_size() as u64,
            // SAFETY: `l` is in `live`, so its kmalloc object has not been freed.
            None => unsafe { m.ksize_raw(l.obj) }.unwrap_or(0) as u64,
        })
        .sum();
    w.pages_used = pages_used(m, &caches);
    w.waste_ratio = ratio(w.pages_used, requested);
    Ok(w)
}

fn ratio(pages: u64, requested: u64) -> f64 {
    if requested == 0 {
        return 0.0;
    }
    (pages as f64 * 4096.0 - requested as f64) / requested as f64
}

/// Pages of the kmalloc caches and the replay's caches, plus large kmalloc pages.
fn pages_used(m: &SimMachine, caches: &[CacheRef<'_, SimPlatform>]) -> u64 {
    let mut pages = 0;
    m.for_each_cache(|c| {
        if c.name().starts_with("kmalloc-") {
            let i = m.slab_info(c);
            pages += i.num_slabs * i.pagesperslab as u64;
        }
    });
    for c in caches {
        let i = m.slab_info(c.cache());
        pages += i.num_slabs * i.pagesperslab as u64;
    }
    let mut large = 0;
    for r in m.memmap().regions() {
        m.memmap().walk(m.platform(), r.start, r.end, |v| {
            if let memdesc::memmap::word::PageKind::Undescribed(u) = v.word.kind() {
                if u.subtype == memdesc::memmap::word::Subtype::LargeKmalloc {
                    large += 1u64 << u.order;
                }
            }
        });
    }
    pages + large
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_mix_and_replay_on_the_bundled_sample() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../samples/small/events.txt.zst");
        let sizes = size_mix(&path, 10_000).unwrap();
        assert!(sizes.iter().all(|&s| s >= 1));
        let m = bench_machine(1).unwrap();
        let w = replay_waste(&m, &path).unwrap();
        assert!(w.allocs > 1000 && w.frees > 0);
        assert!(w.bytes_allocated >= w.bytes_requested);
        assert!(w.pages_used * 4096 >= w.bytes_allocated);
        let cpu = m.cpus().claim(0).unwrap();
        let ns = pairs(&mut Memdesc { m: &m, cpu: &cpu }, &sizes, 10_000);
        assert!(ns > 0.0);
    }

    #[test]
    fn scaling_and_cross_cpu_have_every_allocator_and_thread_count() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../samples/small/events.txt.zst");
        let plan = SlabPlan { pairs: 2000, reps: 1, threads: 3, cross_objects: 1000, cross_batch: 64 };
        let r = run_with(&path, &plan, &ProgressBar::hidden()).unwrap();
        let v = serde_json::to_value(&r).unwrap();
        let rows = v["scaling"].as_array().unwrap();
        assert_eq!(rows.len(), 3);
        for (i, row) in rows.iter().enumerate() {
            assert_eq!(row["threads"].as_u64(), Some(i as u64 + 1));
            for k in ["pairs_per_s", "cpu_ns_per_pair"] {
                for a in ["memdesc", "mimalloc", "system"] {
                    assert!(row[k][a].as_f64().unwrap() > 0.0, "scaling[{i}].{k}.{a}");
                }
            }
        }
        for k in ["ns_per_object", "cpu_ns_per_object"] {
            for a in ["memdesc", "mimalloc", "system"] {
                assert!(v["cross_cpu"][k][a].as_f64().unwrap() > 0.0, "cross_cpu.{k}.{a}");
            }
        }
        assert!(r.cross_cpu.speedup_vs_mimalloc > 0.0 && r.cross_cpu.speedup_vs_system > 0.0);
        assert!(r.cross_cpu.queue_only_ns_per_object > 0.0);
        assert_eq!((r.cross_cpu.objects, r.cross_cpu.batch), (1000, 64));
        // The keys issue 14's Must-show list names are still there.
        for k in ["pair_ns", "threads2_pair_ns"] {
            assert!(v[k]["memdesc"].as_f64().unwrap() > 0.0, "{k}.memdesc");
        }
        assert!(r.speedup_vs_mimalloc > 0.0 && r.speedup_vs_system > 0.0);
    }
}
