//! A small driver for instruction counts of the mixed-order path (issue 14): boots the
//! `page_alloc` bench machine (flat memmap, 2 Mi pages as the bench's), then runs the bench's
//! mixed sequence of `N` steps (first argument, default 200 000: allocations of orders 0–9
//! and frees of random live blocks) through the bench's own workload function, in two halves
//! so a profile of the second half sees a warm allocator. Under
//! `valgrind --tool=callgrind --toggle-collect='*memdesc_mixed*'` the collected instructions
//! divided by `N` are the instructions of one step.

use anyhow::{anyhow, Result};
use memdesc::MemmapLayout;
use memdesc_cli::bench::page_alloc::{boot_bench_machine, memdesc_free_all, memdesc_mixed, mixed_ops};

fn main() -> Result<()> {
    let n: usize = match std::env::args().nth(1) {
        Some(s) => s.parse().map_err(|e| anyhow!("step count {s:?}: {e}"))?,
        None => 200_000,
    };
    let m = boot_bench_machine(1 << 21, MemmapLayout::Flat)?;
    let cpu = m.cpus().claim(0).ok_or_else(|| anyhow!("CPU 0 busy"))?;
    let (ops, peak) = mixed_ops(n, 4096);
    let mut live = Vec::new();
    memdesc_mixed(&m, &cpu, &ops[..n / 2], &mut live)?;
    memdesc_mixed(&m, &cpu, &ops[n / 2..], &mut live)?;
    memdesc_free_all(&m, &cpu, &mut live)?;
    println!("{n} steps, peak {peak} live blocks");
    Ok(())
}
