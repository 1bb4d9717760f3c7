//! A small driver for instruction counts of the order-0 fast path (issue 14): boots the
//! `page_alloc` bench machine (flat memmap, 64 Ki pages), brings it to the bench's order-0
//! steady state, then runs `N` (first argument, default 1 000 000) alloc+free pairs through
//! the bench's own workload function. Under
//! `valgrind --tool=callgrind --toggle-collect='*memdesc_pairs*'` the collected instructions
//! divided by `N` are the instructions of one pair.

use anyhow::{anyhow, Result};
use memdesc::MemmapLayout;
use memdesc_cli::bench::page_alloc::{boot_bench_machine, memdesc_pairs, memdesc_steady, steady_free_indices};

fn main() -> Result<()> {
    let n: u64 = match std::env::args().nth(1) {
        Some(s) => s.parse().map_err(|e| anyhow!("pair count {s:?}: {e}"))?,
        None => 1_000_000,
    };
    let steady = 4096;
    let m = boot_bench_machine(64 << 10, MemmapLayout::Flat)?;
    let cpu = m.cpus().claim(0).ok_or_else(|| anyhow!("CPU 0 busy"))?;
    let live = memdesc_steady(&m, &cpu, &steady_free_indices(steady), steady)?;
    memdesc_pairs(&m, &cpu, n)?;
    for p in live {
        m.free_pages(&cpu, p).map_err(|e| anyhow!("free: {e}"))?;
    }
    println!("{n} pairs");
    Ok(())
}
