//! Issue 2's large machines: a 1 TiB two-level machine and a 64 GiB flat machine boot on a
//! small host because only touched memory costs, and their memmaps are the sizes the design
//! promises (measured from the allocator's own state).

use memdesc::base::layout::{MemmapLayout, MemoryLayout};
use memdesc::{Config, Gfp};
use memdesc_host::boot;

mod common;
#[allow(unused_imports)]
use common::*;

fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    s.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) * 4096
}

#[test]
fn one_tib_two_level_and_64_gib_flat() {
    let t = std::time::Instant::now();
    let rss0 = rss_bytes();
    let big =
        boot(&MemoryLayout::pc(1024, MemmapLayout::TwoLevel), Config { debug_checks: false, ..Config::default() })
            .unwrap();
    let boot_time = t.elapsed();
    let bytes = big.memmap().bytes();
    // 1 TiB of 2 MiB areas is 512 Ki words = 4 MiB, plus pageblock bytes, sections and the
    // few split areas: a few MiB, against 2 GiB for a flat memmap.
    assert!(bytes < 8 << 20, "two-level memmap of 1 TiB is {bytes} bytes");
    assert!(bytes >= 4 << 20);
    let cpu = big.cpus().claim(0).unwrap();
    let p = big.alloc_pages_raw(&cpu, 0, Gfp::KERNEL).unwrap();
    free_raw(&big, &cpu, p, 0).unwrap();
    assert!(big.nr_free_pages() > (1000u64 << 18), "nearly all of 1 TiB is free");
    let rss = rss_bytes().saturating_sub(rss0);
    assert!(rss < 4 << 30, "a 1 TiB machine costs {rss} bytes of host memory");
    eprintln!("1 TiB two-level: boot {boot_time:?}, memmap {bytes} B, host RSS +{rss} B");
    drop(cpu);
    drop(big);

    let t = std::time::Instant::now();
    let flat =
        boot(&MemoryLayout::pc(64, MemmapLayout::Flat), Config { debug_checks: false, ..Config::default() }).unwrap();
    let bytes = flat.memmap().bytes();
    // One word per 4 KiB page: 64 GiB -> 16 Mi words = 128 MiB (minus the PCI hole).
    assert!(bytes > 120 << 20 && bytes < 136 << 20, "flat memmap of 64 GiB is {bytes} bytes");
    eprintln!("64 GiB flat: boot {:?}, memmap {bytes} B", t.elapsed());
}
