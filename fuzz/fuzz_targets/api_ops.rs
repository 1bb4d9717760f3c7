//! The public API as an operation sequence: every byte of the input drives the torture op
//! table (pages of every order and flag, kmalloc, slab caches and bulk, folios with split and
//! LRU, the page cache, lookups under RCU) on one CPU with fault injection, with the invariant
//! and descriptor checkers every 64 ops; any violation, lost page or corrupted byte aborts.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the fault-injection rate: 0, 1/64, ... up to ~0.25.
    let (rate, script) = match data.split_first() {
        Some((&r, rest)) => ((r & 15) as f64 / 64.0, rest),
        None => (0.0, data),
    };
    let r = memdesc_host::torture::run_script(script, rate);
    assert!(
        r.violations == 0 && r.lost_pages == 0 && r.corrupted_bytes == 0,
        "{:#?}\n{}",
        r.messages,
        r.log_tail.join("\n")
    );
});
