//! One estimate: reading a snapshot, its census and cost estimate, timed, into a [`Report`]
//! (with the plausibility check that refuses inconsistent snapshots unless forced).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use memdesc_linux::census::{Census, CensusOptions};
use memdesc_linux::cost::{self, DescriptorSizes, Estimate};
use memdesc_linux::plausibility::Plausibility;
use memdesc_linux::Snapshot;

/// The bundled sample's end snapshot, relative to the repository root.
pub const SAMPLE_SNAPSHOT: &str = "samples/small/end";

/// Where the bundled sample is (the lookup of [`crate::data_dirs`]: `$MEMDESC_DATA`, the
/// current directory or a parent, the binary's directory or a parent).
pub fn sample_dir() -> Option<PathBuf> {
    crate::data_dirs::bundled(SAMPLE_SNAPSHOT, "zoneinfo")
}

/// The result of one estimate.
#[derive(Debug, Clone)]
pub struct Report {
    /// What was read (a directory, `/proc`, or the sample with the reason it was used).
    pub source: String,
    /// Kernel release of the snapshot, if known.
    pub kernel: Option<String>,
    /// The census.
    pub census: Census,
    /// The cost estimate.
    pub estimate: Estimate,
    /// Seconds spent reading, classifying and estimating.
    pub seconds: f64,
}

/// Reads `dir`, runs the census and the estimate: the timed unit of `memdesc bench`'s
/// `estimate.seconds` (for the mixA snapshot).
pub fn compute(dir: &Path, sizes: &DescriptorSizes) -> Result<Report> {
    let t = Instant::now();
    let s = Snapshot::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    Ok(report(&s, crate::data_dirs::display(dir), sizes, t))
}

/// [`compute`] and [`report`] behind the plausibility checks: an implausible snapshot is an
/// error naming what failed, or with `force` a warning on stderr.
pub(crate) fn checked_report(
    s: &Snapshot,
    source: String,
    sizes: &DescriptorSizes,
    t: Instant,
    force: bool,
) -> Result<Report> {
    let r = report(s, source, sizes, t);
    let problems = Plausibility::check(s, &r.census).problems();
    if !problems.is_empty() {
        let list: String = problems.iter().map(|p| format!("\n  - {p}")).collect();
        if !force {
            bail!(
                "{} does not look like a Linux kpageflags/kpagecount snapshot:{list}\n\
                 (pass --force to estimate anyway)",
                r.source
            );
        }
        eprintln!("warning: {} does not look like a Linux snapshot (estimating anyway, --force):{list}", r.source);
    }
    Ok(r)
}

pub(crate) fn compute_checked(dir: &Path, sizes: &DescriptorSizes, force: bool) -> Result<Report> {
    let t = Instant::now();
    let s = Snapshot::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    checked_report(&s, crate::data_dirs::display(dir), sizes, t, force)
}

pub(crate) fn report(s: &Snapshot, source: String, sizes: &DescriptorSizes, t: Instant) -> Report {
    let census = Census::from_snapshot(s, CensusOptions::default());
    let estimate = cost::estimate(&census, sizes);
    Report { source, kernel: s.kernel.clone(), census, estimate, seconds: t.elapsed().as_secs_f64() }
}
