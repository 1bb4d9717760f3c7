//! A short torture run for the sanitizer builds (`scripts/sanitize.sh`), which cannot build the
//! CLI cheaply: `cargo run -p memdesc-host --example short_torture -- SECONDS THREADS FAIL POISON
//! [SEED]`. Exits non-zero unless violations, lost pages and corrupted bytes are all 0.

use std::time::Duration;

use memdesc_host::torture::{run, TortureConfig};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.to_string());
    let seconds: u64 = arg(0, "10").parse().expect("SECONDS");
    let threads: usize = arg(1, "2").parse().expect("THREADS");
    let fail_rate: f64 = arg(2, "0.01").parse().expect("FAIL");
    let poison_rate: f64 = arg(3, "0.0001").parse().expect("POISON");
    let seed: u64 = arg(4, "1").parse().expect("SEED");
    let cfg = TortureConfig {
        threads,
        seed,
        duration: Some(Duration::from_secs(seconds)),
        fail_rate,
        poison_rate,
        check_every: 2_000,
        ..TortureConfig::default()
    };
    let r = run(&cfg).unwrap_or_else(|e| panic!("torture could not start: {e}"));
    println!(
        "torture: seed {} threads {threads} ops {} checks {} injected {} poisoned {} violations {} lost_pages {} corrupted_bytes {}",
        r.seed, r.ops, r.checks, r.injected_failures, r.poisoned_pages, r.violations, r.lost_pages, r.corrupted_bytes
    );
    if (r.violations, r.lost_pages, r.corrupted_bytes) != (0, 0, 0) {
        eprintln!("{:#?}\nlog tail:\n{}", r.messages, r.log_tail.join("\n"));
        std::process::exit(1);
    }
}
