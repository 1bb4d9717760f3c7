//! The engine of a torture run: boots the machine, runs one [`Worker`] per CPU until the time
//! or op budget is spent, stops them all at quiescent points (exchange, poison injection, the
//! global check), then verifies and frees everything and checks that no page was lost.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use memdesc::base::fault::{FaultConfig, FaultSites};
use memdesc::health::balloon::Balloon;
use memdesc::memmap::desc::Folio;
use memdesc::mm::pgtable::MmKind;
use memdesc::pools::page_pool::{PagePool, PoolParams};
use memdesc::pools::vmalloc::VmallocSpace;
use memdesc::pools::z3fold::Z3foldPool;
use memdesc::pools::zsmalloc::ZsPool;
use memdesc::Cpu;

// Ownership rule the SAFETY comments below cite: see `worker.rs`.
use memdesc::{CacheArgs, Config, MemmapLayout, MemoryLayout, Pfn, RegionSpec, SlabCache};

use crate::torture::config::*;
use crate::torture::ops::*;
use crate::torture::pattern::*;
use crate::torture::worker::*;
use crate::SimMachine;

/// The torture machine: 448 MiB over two nodes mixing both memmap layouts, DMA/DMA32 zones,
/// firmware holes and reserved ranges, and 64 MiB of Movable memory without a direct map.
pub fn torture_layout() -> MemoryLayout {
    let mut l = MemoryLayout::new();
    let spec = |s: u64, e: u64, node, mapped, layout| RegionSpec { start: Pfn(s), end: Pfn(e), node, mapped, layout };
    l.add_region(spec(1, 0x9f, 0, true, MemmapLayout::Flat)).expect("layout");
    l.add_region(spec(0x100, 0x10000, 0, true, MemmapLayout::Flat)).expect("layout");
    l.add_region(spec(0x10000, 0x18000, 1, true, MemmapLayout::TwoLevel)).expect("layout");
    l.add_region(spec(0x10_0000, 0x10_4000, 1, false, MemmapLayout::Flat)).expect("layout");
    l.movable_from(Pfn(0x10_0000));
    l.reserve(Pfn(0x100), Pfn(0x200)).expect("layout");
    l.reserve(Pfn(0x1000), Pfn(0x1400)).expect("layout");
    l.reserve(Pfn(0x2345), Pfn(0x2350)).expect("layout");
    l
}

/// Runs the op table driven by `script` (every choice is drawn from its bytes) on one CPU of
/// the torture machine, with invariant checks every 64 ops and at the end, and fault injection
/// at `fail_rate`: the body of the `api_ops` fuzz target and of the suite's property test.
/// Any input must end clean (no violation, lost page or corrupted byte).
pub fn run_script(script: &[u8], fail_rate: f64) -> TortureReport {
    let cfg = TortureConfig {
        threads: 1,
        seed: 0x5C41,
        duration: None,
        max_ops: None,
        fail_rate,
        check_every: 64,
        max_live_pages: 4096,
        script: Some(script.to_vec()),
        ..TortureConfig::default()
    };
    run(&cfg).expect("the torture machine boots")
}

/// Free pages with every cache shrunk (after a grace period for TYPESAFE_BY_RCU caches) and
/// every per-CPU list drained: the figure that must come back after everything is freed.
pub fn settled_free_pages(m: &SimMachine, cpu: &Cpu<'_>) -> u64 {
    let mut last = u64::MAX;
    // Shrinking one cache frees slab descriptors into another: repeat until nothing moves.
    for _ in 0..8 {
        let mut caches = Vec::new();
        m.for_each_cache(|c| caches.push(c as *const SlabCache));
        for c in caches {
            // SAFETY: caches live until destroyed, which only their creators do, not while
            // this runs (the caller holds the machine quiescent).
            m.shrink_any_cache(cpu, unsafe { &*c });
        }
        m.drain_all_from(cpu);
        let now = m.nr_free_pages();
        if now == last {
            break;
        }
        last = now;
    }
    last
}

/// Live slab objects in every cache of the machine.
pub fn live_slab_objects(m: &SimMachine) -> u64 {
    let mut n = 0;
    m.for_each_cache(|c| n += c.live_objects());
    n
}

pub(crate) fn per_cache_objects(m: &SimMachine) -> Vec<(&'static str, u64)> {
    let mut v = vec![];
    m.for_each_cache(|c| v.push((c.name(), c.live_objects())));
    v
}

pub(crate) fn ctor_pattern(p: NonNull<u8>) {
    // SAFETY: a fresh object slot of the 192-byte cache.
    unsafe { p.as_ptr().write_bytes(0x5a, 8) };
}

/// The quiescent-point barrier: like `std::sync::Barrier`, but a worker that panics aborts
/// it ([`AbortOnPanic`]), and every wait, then or later, returns `Err(Aborted)` instead of
/// waiting forever for a CPU that will never arrive.
struct QuiescentBarrier {
    n: usize,
    state: Mutex<BarrierState>,
    cv: Condvar,
}

#[derive(Default)]
struct BarrierState {
    arrived: usize,
    generation: u64,
    aborted: bool,
}

/// Another worker panicked: the run is over.
struct Aborted;

impl QuiescentBarrier {
    fn new(n: usize) -> Self {
        QuiescentBarrier { n, state: Mutex::new(BarrierState::default()), cv: Condvar::new() }
    }

    /// Waits for every worker; `Ok(true)` for one of them (the leader).
    fn wait(&self) -> Result<bool, Aborted> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.aborted {
            return Err(Aborted);
        }
        st.arrived += 1;
        if st.arrived == self.n {
            st.arrived = 0;
            st.generation += 1;
            self.cv.notify_all();
            return Ok(true);
        }
        let gen = st.generation;
        while st.generation == gen && !st.aborted {
            st = self.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        if st.generation == gen {
            return Err(Aborted);
        }
        Ok(false)
    }

    fn is_aborted(&self) -> bool {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).aborted
    }

    fn abort(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).aborted = true;
        self.cv.notify_all();
    }
}

/// Aborts the barrier if dropped while its worker unwinds from a panic.
struct AbortOnPanic<'a>(&'a QuiescentBarrier);

impl Drop for AbortOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.abort();
        }
    }
}

/// The message of a worker's panic payload.
fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_string()
    }
}

/// Runs a torture (see the module docs).
///
/// A worker that panics ends the run: the others leave at their next quiescent point (their
/// barrier is aborted) without tearing down, and this returns `Err` with the panic message
/// and the seed.
pub fn run(cfg: &TortureConfig) -> Result<TortureReport, String> {
    let threads = if cfg.script.is_some() { 1 } else { cfg.threads.clamp(1, memdesc::MAX_CPUS) };
    let m = crate::boot(
        &torture_layout(),
        Config { nr_cpus: threads, debug_checks: true, cpu_areas: cfg.cpu_areas, ..Config::default() },
    )
    .map_err(|e| e.to_string())?;
    let boot_cpu = m.cpus().claim(0).expect("cpu 0");
    let caches_args = [
        CacheArgs::new("torture-24", 24),
        CacheArgs { ctor: Some(ctor_pattern), ..CacheArgs::new("torture-192-ctor", 192) },
        CacheArgs { typesafe_by_rcu: true, ..CacheArgs::new("torture-1000-rcu", 1000) },
        CacheArgs { reclaimable: true, ..CacheArgs::new("torture-3000", 3000) },
    ];
    // Baselines with the caches created and every cache settled.
    let mut caches = vec![];
    let mut sizes = vec![];
    for a in caches_args {
        sizes.push(a.size);
        caches.push(m.create_cache(&boot_cpu, a).map_err(|e| format!("torture setup: {e}"))?);
    }
    // Page tables' caches, the kernel address space and the vmalloc space over it live
    // through the baselines (their caches are settled like the others).
    let setup = |e: &dyn std::fmt::Display| format!("torture setup: {e}");
    let mms = m.mm_caches(&boot_cpu).map_err(|e| setup(&e))?;
    let kmm = mms.mm_create(&boot_cpu, MmKind::Kernel).map_err(|e| setup(&e))?;
    let vm = VmallocSpace::new(&m, &boot_cpu, &kmm).map_err(|e| setup(&e))?;
    let free0 = settled_free_pages(&m, &boot_cpu);
    let objs0 = live_slab_objects(&m);
    let per_cache0 = per_cache_objects(&m);
    let shared_space = m.address_space_create(&boot_cpu).map_err(|e| format!("torture setup: {e}"))?;
    let pool = PagePool::new(&m, &boot_cpu, PoolParams::default()).map_err(|e| setup(&e))?;
    let zs = ZsPool::new(&m, &boot_cpu).map_err(|e| setup(&e))?;
    let z3 = Z3foldPool::new(&m, &boot_cpu).map_err(|e| setup(&e))?;
    drop(boot_cpu);
    let shared = Shared {
        caches,
        sizes,
        exchange: Mutex::new(Vec::new()),
        shared_file: File { id: mix(cfg.seed ^ 0xF11E), space: shared_space },
        mms: &mms,
        vm,
        pool,
        zs,
        z3,
        balloon: Balloon::new(&m),
        offlined: Mutex::new(Vec::new()),
        poison_events: Mutex::new(Vec::new()),
        stop: AtomicBool::new(false),
        threads,
        seed: cfg.seed,
    };
    if cfg.fail_rate > 0.0 {
        m.fault().configure(FaultConfig { rate: cfg.fail_rate, seed: cfg.seed, sites: FaultSites::ALL });
    }
    let weights: Vec<u32> = OPS
        .iter()
        .map(|o| if cfg.only.is_empty() || cfg.only.iter().any(|n| n == o.name) { o.weight } else { 0 })
        .collect();
    let total_weight: u64 = weights.iter().map(|&w| w as u64).sum();
    if total_weight == 0 {
        return Err(format!("no operation named {:?}", cfg.only));
    }
    let weights = &weights;
    let barrier = QuiescentBarrier::new(threads);
    let checks = AtomicU64::new(0);
    let global_violations = Mutex::new((0u64, Vec::<String>::new()));
    let start = Instant::now();
    let elapsed = Mutex::new(Duration::ZERO);
    let poison_rate = cfg.poison_rate;
    let threshold = (poison_rate.clamp(0.0, 1.0) * u64::MAX as f64) as u64;
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|id| {
                let (shared, barrier, checks, gv, elapsed, m) =
                    (&shared, &barrier, &checks, &global_violations, &elapsed, &m);
                let progress = cfg.progress.clone();
                s.spawn(move || {
                    let _abort = AbortOnPanic(barrier);
                    let cpu = m.cpus().claim(id).expect("one CPU per thread");
                    let mut w = Worker::new(m, &cpu, shared, cfg.seed, cfg.max_live_pages, OPS);
                    if let Some(script) = &cfg.script {
                        w.script = script;
                        w.scripted = true;
                    }
                    for k in 0..2 {
                        match m.address_space_create(&cpu) {
                            Ok(space) => w.files.push(File { id: mix(cfg.seed ^ mix((id * 2 + k) as u64 + 7)), space }),
                            Err(e) if is_alloc_failure(e) => {}
                            Err(e) => w.violation(format!("address_space_create: {e}")),
                        }
                    }
                    w.setup_mm();
                    let mut done = 0u64;
                    // Err: another worker panicked; leave without tearing down.
                    let wait = || barrier.wait().map_err(|Aborted| ());
                    'run: loop {
                        let mut n = cfg.check_every.max(1);
                        if let Some(max) = cfg.max_ops {
                            n = n.min(max.saturating_sub(done));
                        }
                        for i in 0..n {
                            if w.exhausted() {
                                break;
                            }
                            if threshold != 0 && w.rand() < threshold {
                                w.pending_poison += 1;
                            }
                            w.run_one(OPS, weights, total_weight);
                            if cfg.inject_panic == Some((id, done + i + 1)) {
                                panic!("injected worker panic (TortureConfig::inject_panic)");
                            }
                            if i % 1024 == 1023 {
                                if let Some(p) = &progress {
                                    p.fetch_add(1024, Ordering::Relaxed);
                                }
                            }
                        }
                        if let Some(p) = &progress {
                            p.fetch_add(n % 1024, Ordering::Relaxed);
                        }
                        done += n;
                        // Quiescent point: every CPU stops, checks its own state, then the
                        // leader checks the machine and decides whether to go on.
                        let Ok(_) = wait() else { break 'run };
                        if let Some(hook) = POISON_HOOK.filter(|_| threshold != 0) {
                            // One CPU at a time injects what it drew, the others stopped, so
                            // every owner of a hit object learns of it before touching it.
                            for k in 0..threads {
                                if k == id {
                                    for _ in 0..std::mem::take(&mut w.pending_poison) {
                                        match hook(&mut w) {
                                            Ok(p) => w.poisoned += p,
                                            Err(e) => w.violation(format!("hwpoison: {e}")),
                                        }
                                    }
                                }
                                let Ok(_) = wait() else { break 'run };
                            }
                            w.drop_poisoned_own();
                            if id == 0 {
                                let mut x = std::mem::take(&mut *shared.exchange.lock().unwrap());
                                w.drop_poisoned(&mut x);
                                *shared.exchange.lock().unwrap() = x;
                            }
                            let Ok(_) = wait() else { break 'run };
                        }
                        w.local_check();
                        let Ok(leader) = wait() else { break 'run };
                        if leader {
                            shared.poison_events.lock().unwrap().clear();
                            global_check(m, &cpu, gv);
                            if let Err(v) = shared.zs.verify() {
                                let mut o = gv.lock().unwrap();
                                o.0 += 1;
                                o.1.push(format!("zsmalloc verify: {v:?}"));
                            }
                            checks.fetch_add(1, Ordering::Relaxed);
                            let out_of_time = cfg.duration.is_some_and(|d| start.elapsed() >= d);
                            let out_of_ops = cfg.max_ops.is_some_and(|max| done >= max) || w.exhausted();
                            if out_of_time
                                || out_of_ops
                                || (cfg.duration.is_none() && cfg.max_ops.is_none() && cfg.script.is_none())
                            {
                                shared.stop.store(true, Ordering::Relaxed);
                                *elapsed.lock().unwrap() = start.elapsed();
                            }
                        }
                        let Ok(_) = wait() else { break 'run };
                        if shared.stop.load(Ordering::Relaxed) {
                            break;
                        }
                    }
                    if barrier.is_aborted() {
                        return w.result();
                    }
                    // Tear down: free everything this CPU holds, its mms and its files.
                    while let Some(l) = w.live.pop() {
                        if let Outcome::Violation(msg) = w.release(l) {
                            w.violation(format!("teardown: {msg}"));
                        }
                    }
                    for c in std::mem::take(&mut w.children) {
                        c.destroy(&cpu);
                    }
                    if let Some(mm) = w.mm.take() {
                        mm.destroy(&cpu);
                    }
                    for f in std::mem::take(&mut w.files) {
                        let fid = f.id;
                        let mut cached = vec![];
                        f.space.for_each(|_, folio| cached.push(folio as *const Folio));
                        for c in cached {
                            // SAFETY: cached folios live while cached; nobody else uses this file now.
                            w.verify_cached(fid, unsafe { &*c });
                        }
                        let st = f.space.destroy(&cpu);
                        if st.unreleased != 0 {
                            w.violation(format!("destroy left {} references", st.unreleased));
                        }
                    }
                    w.live_pages = 0;
                    w.result()
                })
            })
            .collect();
        // Every worker is joined (a panicked one too), so the scope itself does not panic.
        handles.into_iter().enumerate().map(|(id, h)| h.join().map_err(|p| (id, panic_message(&*p)))).collect()
    });
    let panics: Vec<String> =
        results.iter().filter_map(|r| r.as_ref().err()).map(|(id, msg)| format!("CPU {id}: {msg}")).collect();
    if !panics.is_empty() {
        return Err(format!("torture worker panicked (seed {}): {}", cfg.seed, panics.join("; ")));
    }
    let results: Vec<WorkerResult> = results.into_iter().flatten().collect();
    let elapsed = *elapsed.lock().unwrap();
    m.fault().disable();
    let cpu = m.cpus().claim(0).expect("cpu 0");
    let mut report = TortureReport {
        seed: cfg.seed,
        threads,
        elapsed,
        checks: checks.load(Ordering::Relaxed),
        injected_failures: m.fault().injected(),
        poison_available: POISON_HOOK.is_some(),
        per_op: OPS.iter().map(|o| OpStat { name: o.name, ..OpStat::default() }).collect(),
        ..TortureReport::default()
    };
    let (gv, gmsgs) = std::mem::take(&mut *global_violations.lock().unwrap());
    report.violations += gv;
    report.messages.extend(gmsgs);
    for w in &results {
        report.ops += w.ops;
        report.violations += w.violations;
        report.corrupted_bytes += w.corrupted;
        report.poisoned_pages += w.poisoned;
        report.poison_ignored += w.poison_ignored;
        report.poison_refused += w.poison_refused;
        report.poison_lost_objects += w.poison_lost;
        report.messages.extend(w.messages.iter().cloned());
        for (a, b) in report.per_op.iter_mut().zip(&w.stats) {
            a.runs += b.runs;
            a.failed += b.failed;
            a.skipped += b.skipped;
        }
        if report.log_tail.is_empty() {
            if let Some(t) = &w.first_violation_log {
                report.log_tail = t.clone();
            }
        }
    }
    report.log_hash = results[0].log_hash;
    if report.log_tail.is_empty() {
        report.log_tail = results[0].log_tail.clone();
    }
    // What CPUs left in the exchange, then the shared file, then the torture's caches.
    {
        let mut last = Worker::new(&m, &cpu, &shared, cfg.seed, u64::MAX, OPS);
        let left: Vec<_> = std::mem::take(&mut *shared.exchange.lock().unwrap());
        for l in left {
            if let Outcome::Violation(msg) = last.release(l) {
                last.violation(format!("teardown: {msg}"));
            }
        }
        report.corrupted_bytes += last.corrupted;
        report.violations += last.violations;
        report.messages.extend(last.messages.iter().cloned());
    }
    let Shared { caches, shared_file, vm, pool, zs, z3, balloon, offlined, .. } = shared;
    let st = shared_file.space.destroy(&cpu);
    if st.unreleased != 0 {
        report.violations += 1;
        report.messages.push(format!("destroy of the shared file left {} references", st.unreleased));
    }
    let mut teardown = |what: String| {
        report.violations += 1;
        report.messages.push(format!("teardown: {what}"));
    };
    for (s, e) in offlined.into_inner().unwrap() {
        if let Err(err) = m.online_range(s, e) {
            teardown(format!("online_range({s}, {e}): {err}"));
        }
    }
    while balloon.stats().pages > 0 {
        if balloon.deflate(&cpu, u64::MAX) == 0 {
            teardown(format!("balloon keeps {} pages", balloon.stats().pages));
            break;
        }
    }
    zs.destroy(&cpu);
    z3.destroy(&cpu);
    if let Err((_, e)) = pool.try_destroy(&cpu) {
        teardown(format!("page_pool destroy: {e}"));
    }

    let free_end = settled_free_pages(&m, &cpu);
    let objs_end = live_slab_objects(&m);
    if objs_end != objs0 {
        report.violations += 1;
        let now = per_cache_objects(&m);
        let diff: Vec<_> = now
            .iter()
            .filter(|(n, c)| per_cache0.iter().find(|(n0, _)| n0 == n).map_or(0, |x| x.1) != *c)
            .map(|(n, c)| format!("{n}: {} -> {c}", per_cache0.iter().find(|(n0, _)| n0 == n).map_or(0, |x| x.1)))
            .collect();
        report.messages.push(format!("slab objects: {objs0} live at the start, {objs_end} at the end ({diff:?})"));
    }
    // Poisoned pages never come back: they are accounted apart from lost ones.
    report.hwpoison_pages = m.undescribed_stats().hwpoison_pages;
    report.lost_pages = free0.saturating_sub(free_end).saturating_sub(report.hwpoison_pages);
    if free_end > free0 {
        report.violations += 1;
        report.messages.push(format!("{} more pages free at the end than at the start", free_end - free0));
    }
    let mut gvm = Mutex::new((0u64, Vec::new()));
    global_check(&m, &cpu, &gvm);
    let (gv, gmsgs) = std::mem::take(gvm.get_mut().unwrap());
    report.violations += gv;
    report.messages.extend(gmsgs);
    for c in caches {
        if let Err(e) = m.destroy_cache(&cpu, c) {
            report.violations += 1;
            report.messages.push(format!("destroy_cache: {e}"));
        }
    }
    if let Err((_, e)) = vm.destroy(&cpu) {
        report.violations += 1;
        report.messages.push(format!("vmalloc space destroy: {e}"));
    }
    kmm.destroy(&cpu);
    if let Err(e) = mms.destroy(&cpu) {
        report.violations += 1;
        report.messages.push(format!("mm caches destroy: {e}"));
    }
    Ok(report)
}

/// The machine-wide checks at a quiescent point: the allocator and every descriptor.
pub(crate) fn global_check(m: &SimMachine, cpu: &Cpu<'_>, out: &Mutex<(u64, Vec<String>)>) {
    let mut o = out.lock().unwrap();
    if let Err(v) = m.check(|_, _, _| {}) {
        o.0 += 1;
        if o.1.len() < 8 {
            o.1.push(format!("check: {v}"));
        }
    }
    if let Err(v) = m.check_descriptors(cpu) {
        o.0 += 1;
        if o.1.len() < 8 {
            o.1.push(format!("check_descriptors: {v}"));
        }
    }
}
