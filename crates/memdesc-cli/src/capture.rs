//! `memdesc capture OUTDIR -- COMMAND...`: records what a real Linux kernel does with its page
//! frames while COMMAND runs — start and end snapshots of `/proc/kpageflags`,
//! `/proc/kpagecount` and the /proc tables, and the ftrace text stream of the memory events —
//! in the layout of `../shared/data/traces`.
//!
//! Needs root and tracefs (mounted at `/sys/kernel/tracing` if it is not); refuses with a
//! message that says which is missing. The work is done by `memdesc_linux::capture`; this
//! module parses the arguments and reports. Self-contained (names only external crates), so
//! it can also be built as its own test target.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use memdesc_linux::capture::{capture_with, CaptureConfig, Observer, Restored, DEFAULT_LEVEL};

/// Arguments of `memdesc capture`.
#[derive(clap::Args, Debug, Clone)]
pub struct CaptureArgs {
    /// Output directory: README, ring-stats, events.txt.zst, start/, end/. Created if missing;
    /// an existing non-empty one is refused unless --force.
    #[arg(value_name = "OUTDIR")]
    pub outdir: PathBuf,
    /// The workload to trace, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
    /// Per-CPU ring-buffer size while tracing, in KiB.
    #[arg(long, default_value_t = 131072)]
    pub buffer_size_kb: u64,
    /// Do not sync and drop the page cache (of the whole machine) before the start snapshot.
    #[arg(long)]
    pub no_drop_caches: bool,
    /// zstd level of the recorded files. 9 is about 30 % larger than 19 (which the shared
    /// data used) and a hundred times faster: level 19 takes minutes per 100 MB of trace.
    #[arg(long, default_value_t = DEFAULT_LEVEL, value_parser = crate::args::zstd_level, allow_negative_numbers = true)]
    pub level: i32,
    /// Replace the capture files in an existing non-empty OUTDIR.
    #[arg(long)]
    pub force: bool,
    /// Where tracefs is, or is to be mounted.
    #[arg(long, default_value = "/sys/kernel/tracing")]
    pub tracefs: PathBuf,
    /// Where procfs is (kpageflags, kpagecount and the tables are read there); for tests
    /// against a fake /proc.
    #[arg(long, default_value = "/proc")]
    pub proc: PathBuf,
}

impl CaptureArgs {
    /// The library configuration these arguments describe.
    pub fn config(&self) -> CaptureConfig {
        let mut cfg = CaptureConfig::new(&self.outdir, self.command.clone());
        cfg.buffer_size_kb = self.buffer_size_kb;
        cfg.drop_caches = !self.no_drop_caches;
        cfg.level = self.level;
        cfg.tracefs = self.tracefs.clone();
        cfg.proc = self.proc.clone();
        cfg.force = self.force;
        cfg
    }
}

/// Progress on stderr (a bar while recording and compressing, when stderr is a terminal) and
/// the restoration of tracefs (always).
struct Progress {
    bar: ProgressBar,
    shown: bool,
}

impl Progress {
    fn new() -> Self {
        let shown = std::io::stderr().is_terminal();
        let bar = if shown {
            ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        bar.enable_steady_tick(Duration::from_millis(200));
        Progress { bar, shown }
    }

    fn note(&self, line: &str) {
        if self.shown {
            self.bar.suspend(|| eprintln!("{line}"));
        } else {
            eprintln!("{line}");
        }
    }
}

fn mib(b: u64) -> f64 {
    b as f64 / (1u64 << 20) as f64
}

impl Observer for Progress {
    fn phase(&self, what: &str) {
        let style = match what {
            "compressing" => ProgressStyle::with_template(
                "{spinner} compressing the trace [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({binary_bytes_per_sec}, eta {eta})",
            ),
            "recording" => ProgressStyle::with_template("{spinner} recording [{elapsed_precise}] {msg}"),
            _ => ProgressStyle::with_template("{spinner} {msg} [{elapsed_precise}]"),
        };
        self.bar.set_style(style.unwrap_or_else(|_| ProgressStyle::default_spinner()));
        self.bar.reset_elapsed();
        self.bar.set_message(what.to_owned());
        if !self.shown {
            eprintln!("capture: {what}");
        }
    }

    fn recording(&self, lines: u64, bytes: u64, elapsed: Duration) {
        let secs = elapsed.as_secs_f64().max(1e-3);
        self.bar.set_message(format!(
            "{lines} events, {:.1} MiB of trace text ({:.0} events/s)",
            mib(bytes),
            lines as f64 / secs
        ));
    }

    fn compressing(&self, done: u64, total: u64) {
        self.bar.set_length(total.max(done));
        self.bar.set_position(done);
    }

    fn restored(&self, r: &Restored) {
        let names: Vec<String> =
            r.rewritten.iter().map(|p| p.strip_prefix(&r.root).unwrap_or(p).display().to_string()).collect();
        let shown = if names.len() > 6 {
            format!("{} and {} more", names[..6].join(", "), names.len() - 6)
        } else if names.is_empty() {
            "nothing had changed".to_owned()
        } else {
            names.join(", ")
        };
        let mut line = format!(
            "capture: tracefs at {} restored as it was found (rewritten: {shown}){}",
            crate::data_dirs::display(&r.root),
            if r.unmounted { "; unmounted again" } else { "" }
        );
        if !r.inexact.is_empty() {
            line.push_str("; NOT exactly as found:");
            for i in &r.inexact {
                line.push_str("\n  ");
                line.push_str(i);
            }
        }
        self.note(&line);
    }
}

/// `memdesc capture`. SIGINT, SIGTERM and SIGHUP stop it: the workload gets SIGTERM,
/// tracefs is put back, the partial output is removed, and the command fails saying so.
pub fn run(args: &CaptureArgs) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM, signal_hook::consts::SIGHUP] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).context("installing the signal handlers")?;
    }
    let progress = Progress::new();
    let r = capture_with(&args.config(), &stop, &progress);
    progress.bar.finish_and_clear();
    let s = r.with_context(|| {
        let sig =
            if stop.load(Ordering::Relaxed) { " (stopped by a signal; the partial output was removed)" } else { "" };
        format!("capturing into {}{sig}", args.outdir.display())
    })?;
    println!(
        "captured {} events in {:.3} s into {} ({:.2} MiB)",
        s.events,
        s.seconds,
        crate::data_dirs::display(&args.outdir),
        mib(s.bytes)
    );
    for l in &s.ring_stats {
        println!("  {l}");
    }
    if !s.missing_events.is_empty() {
        let names: Vec<_> = s.missing_events.iter().map(|e| e.tracefs_path()).collect();
        eprintln!("note: not in this kernel, not recorded: {}", names.join(" "));
    }
    if s.exit_code != Some(0) {
        eprintln!("note: the workload exited with {:?}", s.exit_code);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: CaptureArgs,
    }

    #[test]
    fn arguments_after_double_dash_are_the_workload() {
        let cli = Cli::try_parse_from(["capture", "out", "--level", "3", "--", "ls", "-l", "/"]).unwrap();
        assert_eq!(cli.args.outdir, PathBuf::from("out"));
        assert_eq!(cli.args.command, vec!["ls", "-l", "/"]);
        let cfg = cli.args.config();
        assert_eq!(cfg.level, 3);
        assert!(cfg.drop_caches);
        assert!(Cli::try_parse_from(["capture", "out"]).is_err());
        // zstd's range only.
        for bad in ["99", "23", "x"] {
            assert!(Cli::try_parse_from(["capture", "out", "--level", bad, "--", "true"]).is_err(), "--level {bad}");
        }
        assert_eq!(Cli::try_parse_from(["capture", "out", "--", "true"]).unwrap().args.level, DEFAULT_LEVEL);
    }

    #[test]
    fn refuses_clearly_without_tracefs() {
        let cli =
            Cli::try_parse_from(["capture", "/nonexistent/out", "--tracefs", "/nonexistent/tracing", "--", "true"])
                .unwrap();
        let e = run(&cli.args).unwrap_err();
        let msg = format!("{e:#}");
        // As root the tracefs check fails; as another user the root check fails first.
        assert!(msg.contains("tracefs is not available") || msg.contains("needs root"), "{msg}");
        assert!(!std::path::Path::new("/nonexistent/out").exists());
    }
}
