//! Real Linux data for memdesc: readers for `/proc/kpageflags` and `/proc/kpagecount`
//! snapshots, the `/proc` text tables, ftrace text traces, the page census, the Linux-versus-
//! memdesc cost model, and the capture of new traces.
//!
//! * [`snapshot`] — [`KpageSnapshot`] (about 3 bytes per pfn) and [`Snapshot`] directories;
//! * [`tables`] — `meminfo`, `buddyinfo`, `zoneinfo`, `pagetypeinfo`, `slabinfo`, `vmstat`;
//! * [`trace`] — the streaming ftrace text parser ([`TraceReader`], [`Event`]);
//! * [`census`](mod@census) — every pfn classified once ([`Census`]);
//! * [`cost`] — what the memmap costs in Linux and in memdesc ([`Estimate`]);
//! * [`capture`] — recording a new trace on a live machine;
//! * [`kpf`] — the kpageflags bit numbers.
//!
//! Nothing here panics on input: every parser returns an [`Error`] naming the file, line and
//! field, and property tests feed arbitrary bytes to each.
#![deny(missing_docs)]

pub mod capture;
pub mod census;
pub mod cost;
pub mod error;
pub mod fuzzing;
pub mod kpf;
pub mod plausibility;
pub mod snapshot;
pub mod tables;
pub mod trace;

pub use census::{census, census_runs, BuddyMode, Census, CensusOptions, Kind, KindCounts, Run};
pub use cost::{estimate, DescriptorSizes, Estimate};
pub use error::{Error, FieldError, ParseError, Result};
pub use snapshot::{KpageSnapshot, Snapshot};
pub use trace::{Event, EventKind, Record, TraceReader, TraceStats};

/// Reads the snapshot directory `dir`, runs the census and the estimate: the whole
/// `memdesc estimate --snapshot DIR` computation, for timing.
pub fn estimate_dir(dir: &std::path::Path, sizes: &DescriptorSizes) -> Result<(Snapshot, Census, Estimate)> {
    let s = Snapshot::read_dir(dir)?;
    let c = Census::from_snapshot(&s, CensusOptions::default());
    let e = estimate(&c, sizes);
    Ok((s, c, e))
}
