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
use std::path::PathBuf;

use anyhow::{Context, Result};
use memdesc_linux::capture::{capture, CaptureConfig};

/// Arguments of `memdesc capture`.
#[derive(clap::Args, Debug, Clone)]
pub struct CaptureArgs {
    /// Output directory (created): README, ring-stats, events.txt.zst, start/, end/.
    #[arg(value_name = "OUTDIR")]
    pub outdir: PathBuf,
    /// The workload to trace, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
    /// Per-CPU ring-buffer size while tracing, in KiB.
    #[arg(long, default_value_t = 131072)]
    pub buffer_size_kb: u64,
    /// Do not sync and drop the page cache before the start snapshot.
    #[arg(long)]
    pub no_drop_caches: bool,
    /// zstd level of the recorded files.
    #[arg(long, default_value_t = 19)]
    pub level: i32,
    /// Where tracefs is, or is to be mounted.
    #[arg(long, default_value = "/sys/kernel/tracing")]
    pub tracefs: PathBuf,
}

impl CaptureArgs {
    /// The library configuration these arguments describe.
    pub fn config(&self) -> CaptureConfig {
        let mut cfg = CaptureConfig::new(&self.outdir, self.command.clone());
        cfg.buffer_size_kb = self.buffer_size_kb;
        cfg.drop_caches = !self.no_drop_caches;
        cfg.level = self.level;
        cfg.tracefs = self.tracefs.clone();
        cfg
    }
}

/// `memdesc capture`.
pub fn run(args: &CaptureArgs) -> Result<()> {
    let s = capture(&args.config()).with_context(|| format!("capturing into {}", args.outdir.display()))?;
    println!(
        "captured {} events in {:.3} s into {} ({:.2} MiB)",
        s.events,
        s.seconds,
        args.outdir.display(),
        s.bytes as f64 / (1u64 << 20) as f64
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
    }
}
