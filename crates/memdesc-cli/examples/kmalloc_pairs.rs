//! A small driver for instruction counts of the kmalloc fast path (issue 14): boots the slab
//! bench machine, reads the bench's size mix (the real kernel's kmalloc sizes from
//! `../shared/data/traces/metadata`, else the bundled sample), then runs `N` (first argument,
//! default 1 000 000) kmalloc+kfree pairs through the bench's own pair loop (a window of 256
//! live objects, each step frees the oldest and allocates the next size). Under
//! `valgrind --tool=callgrind --toggle-collect='*slab_bench::pairs*'` the collected
//! instructions divided by `N` are the instructions of one pair. A second argument,
//! `mimalloc` or `system`, runs the same loop on that peer instead.

use anyhow::{anyhow, Result};
use memdesc_cli::slab_bench::{bench_machine, memdesc_pair_loop, peer_pair_loop, size_mix, trace_path};

fn main() -> Result<()> {
    let n: usize = match std::env::args().nth(1) {
        Some(s) => s.parse().map_err(|e| anyhow!("pair count {s:?}: {e}"))?,
        None => 1_000_000,
    };
    let sizes = size_mix(&trace_path(), 100_000)?;
    if let Some(peer) = std::env::args().nth(2) {
        let ns = peer_pair_loop(&peer, &sizes, n).ok_or_else(|| anyhow!("peer {peer:?}: mimalloc or system"))?;
        println!("{n} pairs over {} sizes on {peer}, {ns:.1} ns per pair", sizes.len());
        return Ok(());
    }
    let m = bench_machine(1)?;
    let cpu = m.cpus().claim(0).ok_or_else(|| anyhow!("CPU 0 busy"))?;
    let ns = memdesc_pair_loop(&m, &cpu, &sizes, n);
    println!("{n} pairs over {} sizes, {ns:.1} ns per pair", sizes.len());
    Ok(())
}
