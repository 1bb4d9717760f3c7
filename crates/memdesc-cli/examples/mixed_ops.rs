//! A small driver for instruction counts of the mixed-order path (issue 14): boots the
//! `page_alloc` bench machine (flat memmap, 2 Mi pages as the bench's), then runs the bench's
//! mixed sequence of `N` steps (first argument, default 200 000: allocations of orders 0–9
//! and frees of random live blocks) through the bench's own workload function, in two halves
//! so a profile of the second half sees a warm allocator. Under
//! `valgrind --tool=callgrind --toggle-collect='*memdesc_mixed*'` the collected instructions
//! divided by `N` are the instructions of one step. A second argument, `two-level`, boots
//! the two-level memmap instead; the run prints the second half's nanoseconds per step.

use anyhow::{anyhow, Result};
use memdesc::MemmapLayout;
use memdesc_cli::bench::page_alloc::{boot_bench_machine, memdesc_free_all, memdesc_mixed, mixed_ops};

fn main() -> Result<()> {
    let n: usize = match std::env::args().nth(1) {
        Some(s) => s.parse().map_err(|e| anyhow!("step count {s:?}: {e}"))?,
        None => 200_000,
    };
    let layout = match std::env::args().nth(2).as_deref() {
        None | Some("flat") => MemmapLayout::Flat,
        Some("two-level") => MemmapLayout::TwoLevel,
        Some(other) => return Err(anyhow!("layout {other:?}: flat or two-level")),
    };
    let m = boot_bench_machine(1 << 21, layout)?;
    let cpu = m.cpus().claim(0).ok_or_else(|| anyhow!("CPU 0 busy"))?;
    let (ops, peak) = mixed_ops(n, 4096);
    let mut live = Vec::new();
    memdesc_mixed(&m, &cpu, &ops[..n / 2], &mut live)?;
    let t = std::time::Instant::now();
    memdesc_mixed(&m, &cpu, &ops[n / 2..], &mut live)?;
    let ns = t.elapsed().as_nanos() as f64 / (n - n / 2) as f64;
    memdesc_free_all(&m, &cpu, &mut live)?;
    println!("{n} steps, peak {peak} live blocks, {layout:?}: {ns:.1} ns per step (second half)");
    Ok(())
}
