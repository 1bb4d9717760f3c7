//! The `memdesc` command: measures the memdesc design on real Linux data and on the simulated
//! machine. Each subcommand lives in its own module; this file only parses arguments and
//! dispatches.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use memdesc_cli::{bench, capture, estimate, replay, sizes, torture};

/// memdesc: a physical memory manager with one 8-byte word per 4 KiB page.
///
/// Every page is described by one tagged word that points to a typed memory descriptor
/// (folio, slab, page table, …) instead of a 64-byte struct page. These commands measure what
/// that design costs and how fast it is, on a simulated machine and on real Linux data.
#[derive(Parser)]
#[command(name = "memdesc", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Benchmark the memmap, the page allocator and the descriptors against peers measured in
    /// the same run; prints a table, or JSON with --json.
    Bench(bench::BenchArgs),
    /// Census of a kpageflags/kpagecount snapshot and what its page metadata costs in Linux and
    /// in memdesc (flat and two-level memmap). Without --snapshot: this machine's /proc, else
    /// the bundled sample.
    Estimate(estimate::EstimateArgs),
    /// Record snapshots and the kernel's page/slab/page-cache event stream while a command runs
    /// (Linux, root, tracefs), in the layout of ../shared/data/traces.
    Capture(capture::CaptureArgs),
    /// Replay a captured trace (default: the bundled sample) through the allocators of a
    /// simulated machine as large as the traced one, from its start snapshot; reports what
    /// was replayed, the end state against the end snapshot, and metadata bytes over time.
    Replay(replay::ReplayArgs),
    /// Every CPU of a simulated machine runs random mixes of every operation, with fault
    /// injection (by default 1 % of allocations fail and 0.01 % of operations poison a page;
    /// --fail-rate 0 --poison-rate 0 turns it off), pattern-checked memory and invariant checks
    /// at quiescent points; fails on any violation, lost page or corrupted byte and prints the
    /// seed to replay it.
    Torture(torture::TortureArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Capture(_)) {
        // A reader that goes away (`memdesc replay | head`) ends a command that only reads, as
        // it ends any Unix tool, instead of a panic in `println!`. Not for `capture`: it must
        // live to restore tracefs, so it keeps Rust's default (SIGPIPE ignored, EPIPE errors).
        // SAFETY: setting a signal's disposition to its default, before any thread starts.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let r = match cli.command {
        Command::Bench(args) => bench::run(&args),
        Command::Estimate(args) => estimate::run(&args, &sizes::descriptor_sizes()),
        Command::Capture(args) => capture::run(&args),
        Command::Replay(args) => replay::run(&args),
        Command::Torture(args) => torture::run(&args),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Each message once: `anyhow`'s `Error:`/`Caused by:` form repeats the text of
            // errors whose message already includes their source's.
            eprintln!("{}", memdesc_cli::args::error_text(&e));
            ExitCode::FAILURE
        }
    }
}
