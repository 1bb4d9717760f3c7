//! Criterion benches of the page allocator and the memmap, on the workloads of
//! `memdesc bench` (the same functions, from the CLI library's `bench` module):
//!
//! - `order0_pair/{memdesc,memdesc_two_level,buddy_system_allocator}`: one order-0 alloc+free
//!   pair in the steady state after 1 GiB of order-0 pages was allocated and a random half freed;
//! - `mixed/{…}`: a 16384-step slice of the mixed sequence (random orders 0–9, at most 4096
//!   live blocks, alloc or free with probability ½), throughput in operations;
//! - `memmap_init/{flat_4g,two_level_64g}`: placing and initialising the memmap alone, on host
//!   memory already touched;
//! - `boot/{flat_4g,two_level_64g}`: the whole boot on fresh host memory (memmap, reserved
//!   ranges, free lists);
//! - `mixed_full/{memdesc,buddy_system_allocator}` (issue 14): the `mixed` slice on a machine
//!   first filled to 75 % with blocks of random orders 0–9 (`bench::fill_orders`);
//! - `scaling_2t/{memdesc,buddy_system_allocator}`: the order-0 pair loop on two threads at once
//!   (memdesc: each thread on its own claimed CPU; the peer behind its spin lock), throughput
//!   in pairs of both threads (thread start-up is inside each sample: samples are long);
//! - `cross_cpu_page/{memdesc,buddy_system_allocator,mimalloc}` and
//!   `cross_cpu_kmalloc/{memdesc,mimalloc,system}`: objects allocated on CPU 0 and freed on CPU 1,
//!   handed over in batches of 64 (`bench::handoff`), throughput in objects.
//!
//! `cargo bench -p memdesc-cli` runs them in a few minutes; `cargo test` never runs them.

use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{black_box, criterion_group, criterion_main, BatchSize, BenchmarkGroup, Criterion, Throughput};
use memdesc::memmap::Memmap;
use memdesc::Cpu;
use memdesc::PhysMem;
use memdesc::{Config, MemmapLayout, MemoryLayout};
use memdesc_cli::slab_bench;
use memdesc_host::SimPlatform;

use bench::{Op, Plan};
use memdesc_cli::bench;

/// Steps of the mixed sequence per criterion iteration.
const MIXED_STEPS: usize = 16384;

fn order0_pair(c: &mut Criterion) {
    let plan = Plan::new(true);
    let free_idx = bench::steady_free_indices(plan.steady_pages);
    let mut g = c.benchmark_group("order0_pair");
    g.throughput(Throughput::Elements(1));
    for (name, layout) in [("memdesc", MemmapLayout::Flat), ("memdesc_two_level", MemmapLayout::TwoLevel)] {
        let m = bench::boot_bench_machine(plan.machine_pages, layout).expect("boot");
        let cpu = m.cpus().claim(0).expect("cpu 0");
        let held = bench::memdesc_steady(&m, &cpu, &free_idx, plan.steady_pages).expect("steady state");
        g.bench_function(name, |b| b.iter(|| bench::memdesc_pairs(&m, &cpu, 1).expect("pair")));
        drop(held);
    }
    let mut a = bench::bsa_new(plan.machine_pages);
    let held = bench::bsa_steady(&mut a, &free_idx, plan.steady_pages).expect("steady state");
    g.bench_function("buddy_system_allocator", |b| b.iter(|| bench::bsa_pairs(&mut a, 1).expect("pair")));
    drop(held);
    g.finish();
}

fn mixed(c: &mut Criterion) {
    let plan = Plan::new(true);
    let (ops, _) = bench::mixed_ops(MIXED_STEPS, plan.mixed_max_live);
    let ops: &[Op] = &ops;
    let mut g = c.benchmark_group("mixed");
    g.throughput(Throughput::Elements(ops.len() as u64));
    for (name, layout) in [("memdesc", MemmapLayout::Flat), ("memdesc_two_level", MemmapLayout::TwoLevel)] {
        let m = bench::boot_bench_machine(plan.machine_pages, layout).expect("boot");
        let cpu = m.cpus().claim(0).expect("cpu 0");
        bench_memdesc_mixed(&mut g, name, &m, &cpu, ops, plan.mixed_max_live);
    }
    let mut a = bench::bsa_new(plan.machine_pages);
    bench_bsa_mixed(&mut g, &mut a, ops, plan.mixed_max_live);
    g.finish();
}

/// One criterion case: the timed mixed slice on `m`, everything it left freed untimed.
fn bench_memdesc_mixed(
    g: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    m: &PhysMem<SimPlatform>,
    cpu: &Cpu<'_>,
    ops: &[Op],
    max_live: usize,
) {
    let mut live = Vec::with_capacity(max_live);
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                bench::memdesc_mixed(m, cpu, ops, &mut live).expect("mixed");
                total += t.elapsed();
                bench::memdesc_free_all(m, cpu, &mut live).expect("free");
            }
            total
        })
    });
}

/// The same case for buddy_system_allocator.
fn bench_bsa_mixed(g: &mut BenchmarkGroup<'_, WallTime>, a: &mut bench::Bsa, ops: &[Op], max_live: usize) {
    let mut live = Vec::with_capacity(max_live);
    g.bench_function("buddy_system_allocator", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                bench::bsa_mixed(a, ops, &mut live).expect("mixed");
                total += t.elapsed();
                bench::bsa_free_all(a, &mut live);
            }
            total
        })
    });
}

fn memmap(c: &mut Criterion) {
    let machines = [("flat_4g", 4, MemmapLayout::Flat), ("two_level_64g", 64, MemmapLayout::TwoLevel)];
    let mut g = c.benchmark_group("memmap_init");
    g.sample_size(20);
    for (name, gib, layout) in machines {
        let l = MemoryLayout::pc(gib, layout);
        let p = SimPlatform::new(&l).expect("simulated memory");
        g.bench_function(name, |b| {
            b.iter(|| {
                // SAFETY: `p` is this benchmark's own simulated memory, no machine runs on it,
                // and each iteration's memmap is dropped before the next one is built.
                black_box(unsafe { Memmap::build_alone(&l, &p) }.expect("memmap"))
            })
        });
    }
    g.finish();
    let mut g = c.benchmark_group("boot");
    g.sample_size(10);
    for (name, gib, layout) in machines {
        let l = MemoryLayout::pc(gib, layout);
        let config = Config { debug_checks: false, ..Config::default() };
        g.bench_function(name, |b| {
            b.iter_batched(|| (), |()| memdesc_host::boot(&l, config).expect("boot"), BatchSize::PerIteration)
        });
    }
    g.finish();
}

/// Wall-clock time of `items` items of a multi-thread run.
fn wall(r: bench::ThreadsRun, items: u64) -> Duration {
    Duration::from_secs_f64(items as f64 / r.per_s.max(1e-9))
}

fn mixed_full(c: &mut Criterion) {
    let plan = Plan::new(true);
    let (ops, _) = bench::mixed_ops(MIXED_STEPS, plan.mixed_max_live);
    let ops: &[Op] = &ops;
    let orders = bench::fill_orders(plan.machine_pages, bench::MIXED_FULL_FILL_PCT);
    let mut g = c.benchmark_group("mixed_full");
    g.throughput(Throughput::Elements(ops.len() as u64));
    let m = bench::boot_bench_machine(plan.machine_pages, MemmapLayout::Flat).expect("boot");
    let cpu = m.cpus().claim(0).expect("cpu 0");
    let mut fill = bench::memdesc_fill(&m, &cpu, &orders).expect("fill");
    bench_memdesc_mixed(&mut g, "memdesc", &m, &cpu, ops, plan.mixed_max_live);
    bench::memdesc_free_all(&m, &cpu, &mut fill).expect("free the fill");
    let mut a = bench::bsa_new(plan.machine_pages);
    let _fill = bench::bsa_fill(&mut a, &orders).expect("fill");
    bench_bsa_mixed(&mut g, &mut a, ops, plan.mixed_max_live);
    g.finish();
}

fn scaling_2t(c: &mut Criterion) {
    let plan = Plan::new(true);
    let steady = bench::memdesc_steady_machine(&plan, MemmapLayout::Flat).expect("steady state");
    let a = bench::locked_bsa_new(plan.machine_pages);
    let free_idx = bench::steady_free_indices(plan.steady_pages);
    let _held = bench::bsa_steady(&mut a.lock(), &free_idx, plan.steady_pages).expect("steady state");
    let mut g = c.benchmark_group("scaling_2t");
    g.throughput(Throughput::Elements(2));
    g.bench_function("memdesc", |b| {
        b.iter_custom(|iters| wall(bench::memdesc_pairs_on_threads(&steady.m, 2, iters).expect("pairs"), 2 * iters))
    });
    g.bench_function("buddy_system_allocator", |b| {
        b.iter_custom(|iters| wall(bench::bsa_pairs_on_threads(&a, 2, iters).expect("pairs"), 2 * iters))
    });
    g.finish();
}

fn cross_cpu(c: &mut Criterion) {
    let plan = Plan::new(true);
    let batch = bench::HANDOFF_BATCH;
    let steady = bench::memdesc_steady_machine(&plan, MemmapLayout::Flat).expect("steady state");
    let a = bench::locked_bsa_new(plan.machine_pages);
    let free_idx = bench::steady_free_indices(plan.steady_pages);
    let _held = bench::bsa_steady(&mut a.lock(), &free_idx, plan.steady_pages).expect("steady state");
    let mut g = c.benchmark_group("cross_cpu_page");
    g.throughput(Throughput::Elements(1));
    let md = bench::MemdescPages(&steady.m);
    g.bench_function("memdesc", |b| b.iter_custom(|n| wall(bench::handoff(&md, n, batch).expect("handoff"), n)));
    let peer = bench::BsaPages(&a);
    g.bench_function("buddy_system_allocator", |b| {
        b.iter_custom(|n| wall(bench::handoff(&peer, n, batch).expect("handoff"), n))
    });
    g.bench_function("mimalloc", |b| {
        b.iter_custom(|n| wall(bench::handoff(&bench::MimallocPages, n, batch).expect("handoff"), n))
    });
    g.finish();

    let sizes = slab_bench::size_mix(&slab_bench::trace_path(), 1 << 20).expect("size mix");
    let m = slab_bench::bench_machine(2).expect("boot");
    let mut g = c.benchmark_group("cross_cpu_kmalloc");
    g.throughput(Throughput::Elements(1));
    let md = slab_bench::MemdescObjs { m: &m, sizes: &sizes };
    g.bench_function("memdesc", |b| b.iter_custom(|n| wall(bench::handoff(&md, n, batch).expect("handoff"), n)));
    let mi = slab_bench::GlobalObjs(mimalloc::MiMalloc, &sizes);
    g.bench_function("mimalloc", |b| b.iter_custom(|n| wall(bench::handoff(&mi, n, batch).expect("handoff"), n)));
    let sys = slab_bench::GlobalObjs(std::alloc::System, &sizes);
    g.bench_function("system", |b| b.iter_custom(|n| wall(bench::handoff(&sys, n, batch).expect("handoff"), n)));
    g.finish();
}

criterion_group!(benches, order0_pair, mixed, memmap, mixed_full, scaling_2t, cross_cpu);
criterion_main!(benches);
