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
//!   ranges, free lists).
//!
//! `cargo bench -p memdesc-cli` runs them in a few minutes; `cargo test` never runs them.

use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use memdesc::boot::BootAllocator;
use memdesc::memmap::Memmap;
use memdesc::{Config, MemmapLayout, MemoryLayout};
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
        let mut live = Vec::with_capacity(plan.mixed_max_live);
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    bench::memdesc_mixed(&m, &cpu, ops, &mut live).expect("mixed");
                    total += t.elapsed();
                    bench::memdesc_free_all(&m, &cpu, &mut live).expect("free");
                }
                total
            })
        });
    }
    let mut a = bench::bsa_new(plan.machine_pages);
    let mut live = Vec::with_capacity(plan.mixed_max_live);
    g.bench_function("buddy_system_allocator", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                bench::bsa_mixed(&mut a, ops, &mut live).expect("mixed");
                total += t.elapsed();
                bench::bsa_free_all(&mut a, &mut live);
            }
            total
        })
    });
    g.finish();
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
                let mut boot = BootAllocator::new(&l).expect("boot allocator");
                black_box(Memmap::build(&l, &mut boot, &p).expect("memmap"))
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

criterion_group!(benches, order0_pair, mixed, memmap);
criterion_main!(benches);
