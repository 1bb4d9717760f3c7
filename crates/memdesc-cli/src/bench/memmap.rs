//! The `memmap` section (issue 2): building the memmap and booting a machine of each size and
//! layout, timed, with the bytes the memmap uses and what the host's resident set grew.

use std::hint::black_box;
use std::time::Instant;

use anyhow::{anyhow, Result};
use indicatif::ProgressBar;
use memdesc::memmap::Memmap;
use memdesc::{Config, MemmapLayout, MemoryLayout};
use memdesc_host::SimPlatform;
use serde::Serialize;

use super::plan::*;
use crate::measure::*;

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

/// Boots a bench machine on the heap. Out of line: an unoptimised build moves a machine
/// (tens of KiB) through several stack temporaries, which then stay in this function's frame
/// instead of the caller's loop (the test thread's 2 MiB stack overflowed there).
#[inline(never)]
fn boot_boxed(layout: &memdesc::MemoryLayout) -> Result<Box<memdesc_host::SimMachine>, memdesc_host::HostError> {
    memdesc_host::boot(layout, Config { debug_checks: false, nr_cpus: 2, ..Config::default() }).map(Box::new)
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
            let t = Instant::now();
            // SAFETY: `platform` is this loop's own simulated memory: no machine runs on it, and
            // the memmap of the previous pass was dropped at the end of that pass.
            let memmap =
                unsafe { Memmap::build_alone(&layout, &platform) }.map_err(|e| anyhow!("memmap of {key}: {e:?}"))?;
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
        let m = boot_boxed(&layout).map_err(|e| anyhow!("booting {key}: {e}"))?;
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
