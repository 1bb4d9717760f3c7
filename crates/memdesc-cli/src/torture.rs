//! `memdesc torture`: runs the torture engine ([`memdesc_host::torture`]) on a simulated
//! machine for a while and reports what it found, as a table or JSON. Exits with an error
//! when a violation, a lost page or a corrupted byte was found, after printing the seed and
//! the op-log tail to replay it (`--threads 1 --seed S` replays one CPU's sequence exactly).
//! It touches only the simulated machine the engine boots.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use memdesc_host::torture::{run as run_torture, TortureConfig, TortureReport};
use serde::Serialize;

/// Arguments of `memdesc torture`.
#[derive(Args, Debug)]
pub struct TortureArgs {
    /// How long to run, in seconds (stops at the next quiescent point after this); greater
    /// than 0 and at most one week.
    #[arg(long, default_value_t = 10.0, value_parser = crate::args::seconds, allow_negative_numbers = true)]
    pub seconds: f64,
    /// CPUs of the simulated machine, one thread each.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Seed of the operation sequence and of fault injection.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Fraction of allocations that fail by injection, at every allocation site (0..=1; the
    /// default is the CI run's; 0 turns fault injection off).
    #[arg(long, default_value_t = 0.01, value_parser = crate::args::fraction, allow_negative_numbers = true)]
    pub fail_rate: f64,
    /// Fraction of operations that draw a hardware memory error (hwpoison) at a random pfn,
    /// injected at the next quiescent point with `memory_failure` (0..=1; the default is the
    /// CI run's; 0 turns it off).
    #[arg(long, default_value_t = 0.0001, value_parser = crate::args::fraction, allow_negative_numbers = true)]
    pub poison_rate: f64,
    /// Boot the machine with CPU-local 2 MiB areas (`Config::cpu_areas`).
    #[arg(long)]
    pub cpu_areas: bool,
    /// Stop after this many operations per CPU instead of (or before) --seconds.
    #[arg(long)]
    pub ops: Option<u64>,
    /// Operations per CPU between quiescent invariant checks.
    #[arg(long, default_value_t = 50_000)]
    pub check_every: u64,
    /// Run only these operations (default all): names separated by spaces or commas, as
    /// `bench --only` takes its sections (`--only page_alloc,page_free` or `--only page_alloc
    /// page_free`).
    #[arg(long, value_delimiter = ',', num_args = 1.., value_name = "OP")]
    pub only: Vec<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct OpJson {
    name: &'static str,
    runs: u64,
    failed: u64,
    skipped: u64,
}

#[derive(Serialize)]
struct Json<'a> {
    seed: u64,
    threads: usize,
    seconds: f64,
    ops: u64,
    ops_per_sec: f64,
    violations: u64,
    lost_pages: u64,
    corrupted_bytes: u64,
    injected_failures: u64,
    poisoned_pages: u64,
    poison_ignored: u64,
    poison_refused: u64,
    hwpoison_pages: u64,
    poison_lost_objects: u64,
    poison_available: bool,
    fail_rate: f64,
    poison_rate: f64,
    checks: u64,
    per_op: Vec<OpJson>,
    messages: &'a [String],
    log_tail: &'a [String],
}

fn clean(r: &TortureReport) -> bool {
    r.violations == 0 && r.lost_pages == 0 && r.corrupted_bytes == 0
}

/// Runs the subcommand.
pub fn run(args: &TortureArgs) -> Result<()> {
    // The parsers check these for the command line; this is for callers of the library.
    crate::args::fraction(&args.fail_rate.to_string()).map_err(|e| anyhow::anyhow!("--fail-rate {e}"))?;
    crate::args::fraction(&args.poison_rate.to_string()).map_err(|e| anyhow::anyhow!("--poison-rate {e}"))?;
    crate::args::seconds(&args.seconds.to_string()).map_err(|e| anyhow::anyhow!("--seconds {e}"))?;
    if args.threads == 0 || args.threads > memdesc::MAX_CPUS {
        bail!("--threads must be 1..={}", memdesc::MAX_CPUS);
    }
    let counter = Arc::new(AtomicU64::new(0));
    let cfg = TortureConfig {
        threads: args.threads,
        seed: args.seed,
        duration: Some(Duration::from_secs_f64(args.seconds)),
        max_ops: args.ops,
        fail_rate: args.fail_rate,
        poison_rate: args.poison_rate,
        check_every: args.check_every.max(1),
        progress: Some(counter.clone()),
        only: args.only.clone(),
        cpu_areas: args.cpu_areas,
        ..TortureConfig::default()
    };
    let progress = if args.json || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        let style =
            ProgressStyle::with_template("{spinner} torture [{elapsed_precise}] {wide_bar} {pos}/{len} s {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar());
        ProgressBar::with_draw_target(Some(args.seconds.ceil() as u64), ProgressDrawTarget::stderr()).with_style(style)
    };
    let done = AtomicBool::new(false);
    let report = std::thread::scope(|s| {
        let (progress, counter, done) = (&progress, &counter, &done);
        s.spawn(move || {
            let start = std::time::Instant::now();
            while !done.load(Ordering::Relaxed) {
                progress.set_position(start.elapsed().as_secs());
                progress.set_message(format!("{} ops", counter.load(Ordering::Relaxed)));
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let r = run_torture(&cfg);
        done.store(true, Ordering::Relaxed);
        r
    });
    progress.finish_and_clear();
    let r = report.map_err(|e| anyhow::anyhow!(e))?;
    let secs = r.elapsed.as_secs_f64();
    let ops_per_sec = if secs > 0.0 { r.ops as f64 / secs } else { 0.0 };
    if args.json {
        let j = Json {
            seed: r.seed,
            threads: r.threads,
            seconds: secs,
            ops: r.ops,
            ops_per_sec,
            violations: r.violations,
            lost_pages: r.lost_pages,
            corrupted_bytes: r.corrupted_bytes,
            injected_failures: r.injected_failures,
            poisoned_pages: r.poisoned_pages,
            poison_ignored: r.poison_ignored,
            poison_refused: r.poison_refused,
            hwpoison_pages: r.hwpoison_pages,
            poison_lost_objects: r.poison_lost_objects,
            poison_available: r.poison_available,
            fail_rate: args.fail_rate,
            poison_rate: args.poison_rate,
            checks: r.checks,
            per_op: r
                .per_op
                .iter()
                .map(|o| OpJson { name: o.name, runs: o.runs, failed: o.failed, skipped: o.skipped })
                .collect(),
            messages: &r.messages,
            log_tail: if clean(&r) { &[] } else { &r.log_tail },
        };
        println!("{}", serde_json::to_string_pretty(&j)?);
    } else {
        print_table(&r, args, ops_per_sec);
    }
    if !clean(&r) {
        eprint!("{}", failure_text(&r, args.fail_rate, args.poison_rate));
        bail!("{} violations, {} lost pages, {} corrupted bytes", r.violations, r.lost_pages, r.corrupted_bytes);
    }
    Ok(())
}

/// What a failed run prints: the seed, how to replay it, the violations and the op-log tail.
fn failure_text(r: &TortureReport, fail_rate: f64, poison_rate: f64) -> String {
    let mut out = format!(
        "torture FAILED with seed {}: replay with `memdesc torture --threads 1 --seed {} --fail-rate {fail_rate} \
         --poison-rate {poison_rate}`\n",
        r.seed, r.seed,
    );
    for m in &r.messages {
        out += &format!("  {m}\n");
    }
    out += "op-log tail:\n";
    for l in &r.log_tail {
        out += &format!("  {l}\n");
    }
    out
}

fn print_table(r: &TortureReport, args: &TortureArgs, ops_per_sec: f64) {
    println!("memdesc torture: seed {}, {} CPUs, {:.1} s", r.seed, r.threads, r.elapsed.as_secs_f64());
    println!("{:<18} {:>12} {:>10} {:>10}", "op", "runs", "failed", "skipped");
    for o in &r.per_op {
        if o.runs > 0 {
            println!("{:<18} {:>12} {:>10} {:>10}", o.name, o.runs, o.failed, o.skipped);
        }
    }
    println!();
    println!("ops: {} ({:.0}/s)", r.ops, ops_per_sec);
    println!("checks: {}", r.checks);
    println!("injected_failures: {} (fail rate {})", r.injected_failures, args.fail_rate);
    let avail = if r.poison_available { "" } else { ", hwpoison not plugged in yet" };
    println!(
        "poisoned_pages: {} (poison rate {}{avail}; {} left in place, {} refused; {} held objects lost; {} HwPoison pages at the end)",
        r.poisoned_pages, args.poison_rate, r.poison_ignored, r.poison_refused, r.poison_lost_objects, r.hwpoison_pages
    );
    println!("violations: {}", r.violations);
    println!("lost_pages: {}", r.lost_pages);
    println!("corrupted_bytes: {}", r.corrupted_bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_names_the_seed_and_the_op_log_tail() {
        let r = TortureReport {
            seed: 77,
            violations: 1,
            messages: vec!["cpu 0: page_free: free_pages of a live block: double free".into()],
            log_tail: vec!["cpu 0 #41 page_free arg=0x1234 -> !".into()],
            ..TortureReport::default()
        };
        assert!(!clean(&r));
        let t = failure_text(&r, 0.01, 0.0001);
        assert!(t.contains("--threads 1 --seed 77 --fail-rate 0.01 --poison-rate 0.0001"), "{t}");
        assert!(t.contains("double free") && t.contains("#41 page_free"), "{t}");
    }

    #[test]
    fn a_short_run_is_clean() {
        for cpu_areas in [false, true] {
            let args = TortureArgs {
                seconds: 60.0,
                threads: 2,
                seed: 3,
                fail_rate: 0.01,
                poison_rate: 0.0001,
                cpu_areas,
                ops: Some(2000),
                check_every: 500,
                only: vec![],
                json: true,
            };
            run(&args).unwrap();
        }
    }
}
