//! `memdesc estimate [--snapshot DIR] [--json] [--svg FILE]`: how much memory the memdesc
//! memmap needs on a real machine, against Linux's 64-byte `struct page`.
//!
//! The snapshot is a directory in the layout of `../shared/data` (kpageflags, kpagecount,
//! zoneinfo and the other /proc tables); without `--snapshot` the live machine's `/proc` is
//! read (kpageflags needs root), and if that is not possible the project's bundled sample
//! (`samples/small/end`) is used, with a note saying why. The census and the cost model live
//! in `memdesc_linux::{census, cost}`; this module only picks the input, formats the result
//! (a table, stable JSON, an SVG stacked bar chart) and times the work.//!
//! # Files
//! This file is the command (its arguments, [`load`] picking the input, [`run`]). Below it:
//! [`report`] (JSON and table) and [`svg`] (the chart) over [`compute`](mod@compute) (one
//! estimate of a snapshot, which `memdesc bench` times); [`crate::data_dirs`] at the bottom.
//! No module here imports this one.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use memdesc_linux::cost::DescriptorSizes;
use memdesc_linux::{Error as LinuxError, Snapshot};

pub mod compute;
pub mod report;
pub mod svg;

pub use compute::*;
pub use report::*;
pub use svg::*;

/// Arguments of `memdesc estimate`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct EstimateArgs {
    /// A snapshot directory (kpageflags[.zst], kpagecount[.zst], zoneinfo, buddyinfo, ...).
    /// Without it: the live /proc (needs root), else the bundled sample.
    #[arg(long, value_name = "DIR")]
    pub snapshot: Option<PathBuf>,
    /// Print stable JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Write a stacked bar chart of Linux vs memdesc (flat and two-level) to FILE (SVG).
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// Estimate even from a snapshot that fails the plausibility checks (flags Linux does not
    /// define or cannot combine, mass HWPOISON, free pages far from buddyinfo: see
    /// `memdesc_linux::plausibility`); without it such a snapshot is refused.
    #[arg(long)]
    pub force: bool,
}

/// Picks the input as described in the module documentation and computes the report.
pub fn load(args: &EstimateArgs, sizes: &DescriptorSizes) -> Result<Report> {
    if let Some(dir) = &args.snapshot {
        return compute_checked(dir, sizes, args.force);
    }
    let t = Instant::now();
    let why = match Snapshot::read_live() {
        Ok(s) => return checked_report(&s, "/proc (live)".into(), sizes, t, args.force),
        Err(LinuxError::PermissionDenied { path, .. }) => {
            format!("{} is not readable without root (CAP_SYS_ADMIN)", path.display())
        }
        Err(e) => format!("the live /proc could not be read: {e}"),
    };
    let Some(dir) = sample_dir() else {
        bail!(
            "{why}, and the bundled sample ({SAMPLE_SNAPSHOT}) was not found; pass --snapshot DIR, or {}",
            crate::data_dirs::lookup_hint()
        );
    };
    eprintln!(
        "note: {why}; using the bundled sample {} (run as root for this machine, or pass --snapshot DIR)",
        dir.display()
    );
    let mut r = compute_checked(&dir, sizes, args.force)?;
    r.source = format!("{} (bundled sample)", dir.display());
    Ok(r)
}

/// `memdesc estimate`.
pub fn run(args: &EstimateArgs, sizes: &DescriptorSizes) -> Result<()> {
    let r = load(args, sizes)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&to_json(&r))?);
    } else {
        print!("{}", table(&r));
    }
    if let Some(path) = &args.svg {
        // After the report: a chart that cannot be written does not throw it away.
        crate::data_dirs::write_chart(path, |p| write_svg(&r, p))?;
        if !args.json {
            println!("chart written to {}", path.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {

    use std::path::{Path, PathBuf};

    use memdesc_linux::census::Kind;
    use memdesc_linux::cost::DescriptorSizes;

    use serde_json::Value;

    use super::*;

    const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data");

    /// Test-only sizes; the binary passes `size_of` of the core crate's types.
    const SIZES: DescriptorSizes = DescriptorSizes {
        word: 8,
        folio: 64,
        large_folio: 128,
        slab: 64,
        ptdesc: 32,
        zspage: 48,
        netmem: 48,
        vmalloc: 32,
        mappable: 32,
        parity_folio: 64,
        parity_large_folio: 112,
        storage: None,
    };

    #[test]
    fn json_has_the_stable_keys_and_adds_up() {
        let r = compute(&Path::new(DATA).join("traces/pagecache/start"), &SIZES).unwrap();
        let j = to_json(&r);
        for k in ["total", "free", "slab", "page_table", "reserved", "anon", "file", "other"] {
            assert!(j["pages"][k].is_u64(), "pages.{k}");
        }
        for k in ["linux", "memdesc_flat", "memdesc_two_level"] {
            assert!(j["bytes"][k].is_u64(), "bytes.{k}");
        }
        assert!(j["folios_by_order"]["0"].as_u64().unwrap() > 1000);
        let total = j["pages"]["total"].as_u64().unwrap();
        assert_eq!(j["bytes"]["linux"].as_u64().unwrap(), total * 64);
        let kinds: u64 = Kind::ALL.iter().map(|k| j["pages"][k.name()].as_u64().unwrap()).sum();
        assert_eq!(kinds, total);
        // memdesc is far below Linux on this mostly-free machine.
        assert!(j["ratios"]["flat_vs_linux"].as_f64().unwrap() < 0.2);
        let t = table(&r);
        assert!(t.contains("worst case") && t.contains("slab"), "{t}");
    }

    #[test]
    fn svg_is_written() {
        let r = compute(&Path::new(DATA).join("snapshots/mixA"), &SIZES).unwrap();
        let p = std::env::temp_dir().join(format!("memdesc-estimate-{}.svg", std::process::id()));
        write_svg(&r, &p).unwrap();
        let svg = std::fs::read_to_string(&p).unwrap();
        let _ = std::fs::remove_file(&p);
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        assert!(svg.contains("memdesc, two-level memmap"));
        assert!(svg.contains("anon (") && svg.contains("file ("));
        assert!(svg.matches("<rect").count() > 10);
    }

    #[test]
    fn run_with_a_snapshot_and_json() {
        let args = EstimateArgs {
            snapshot: Some(Path::new(DATA).join("traces/anon/end")),
            json: true,
            ..EstimateArgs::default()
        };
        run(&args, &SIZES).unwrap();
        let bad = EstimateArgs { snapshot: Some(PathBuf::from("/nonexistent/snapshot")), ..EstimateArgs::default() };
        let e = run(&bad, &SIZES).unwrap_err();
        assert!(format!("{e:#}").contains("/nonexistent/snapshot"), "{e:#}");
    }

    #[test]
    fn without_a_snapshot_reads_proc_or_falls_back_to_the_sample() {
        // As root on Linux this reads the live /proc; otherwise it uses samples/small/end.
        let r = load(&EstimateArgs::default(), &SIZES).unwrap();
        assert!(r.source == "/proc (live)" || r.source.ends_with("(bundled sample)"), "{}", r.source);
        assert!(r.census.total > 0);
        assert_eq!(r.census.pages.sum(), r.census.total);
    }

    /// The in-use, storage and parity figures, with the real sizes and cache geometry.
    fn check_in_use_and_parity(j: &Value, name: &str) {
        let n = |p: &str| {
            p.split('.').fold(j, |v, k| &v[k]).as_u64().unwrap_or_else(|| panic!("{name}: {p} is not an integer"))
        };
        let f = |p: &str| p.split('.').fold(j, |v, k| &v[k]).as_f64().unwrap_or_else(|| panic!("{name}: {p}"));
        let in_use = n("pages.in_use");
        let idle = n("pages.free") + n("pages.uninit") + n("pages.hole");
        assert_eq!(in_use + idle, n("pages.total"), "{name}: in use = all but free, uninit, holes");
        assert_eq!(n("bytes.in_use.pages"), in_use);
        assert_eq!(n("bytes.in_use.linux"), in_use * 64, "{name}");
        // In use, memdesc flat pays a word per page plus descriptors and their storage.
        let flat = n("bytes.in_use.memdesc_flat");
        assert!(flat > in_use * 8 && flat < n("bytes.memdesc_flat"), "{name}: in-use flat {flat}");
        // The two-level in-use figure is its whole cost (an upper bound).
        assert_eq!(n("bytes.in_use.memdesc_two_level"), n("bytes.memdesc_two_level"));
        assert!((f("ratios.in_use.flat_vs_linux") - flat as f64 / (in_use * 64) as f64).abs() < 1e-12);
        // On memory in use the ratio is far above the all-pfns one, which idle memory drives down.
        assert!(f("ratios.in_use.flat_vs_linux") > 2.0 * f("ratios.flat_vs_linux"), "{name}");
        // Descriptor storage is charged, from the core's real caches.
        assert!(n("bytes.descriptor_storage") > 0, "{name}: storage");
        assert_eq!(j["sizes"]["storage"]["folio"]["stride"].as_u64(), Some(48));
        let kinds: u64 = j["kinds"].as_array().unwrap().iter().map(|k| k["flat_bytes"].as_u64().unwrap()).sum();
        assert_eq!(kinds, n("bytes.memdesc_flat"));
        let desc_plus: u64 = j["kinds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["descriptor_bytes"].as_u64().unwrap() + k["storage_bytes"].as_u64().unwrap())
            .sum();
        assert_eq!(desc_plus, n("bytes.descriptors") + n("bytes.descriptor_storage"));
        // Parity folios: 64 B order-0, 112 B large; more than memdesc's own, per folio page.
        assert_eq!(n("bytes.parity.folio"), 64);
        assert_eq!(n("bytes.parity.large_folio"), 112);
        let folios = n("descriptors.folios");
        let parity = n("bytes.parity.memdesc_flat");
        assert!(parity >= n("bytes.memdesc_flat") + folios * 16, "{name}: parity {parity}");
        assert!(n("bytes.parity.in_use.memdesc_flat") > flat);
        for k in j["kinds"].as_array().unwrap() {
            assert!(k["driver"].as_str().is_some_and(|d| !d.is_empty()), "{name}: driver of {}", k["kind"]);
            assert!(k["ratios"]["flat_vs_linux"].is_f64());
        }
        assert!(j["includes"]["memdesc"].as_str().unwrap().contains("slab descriptors"));
    }

    #[test]
    fn in_use_storage_and_parity_on_the_sample() {
        let dir = sample_dir().expect("bundled sample");
        let r = compute(&dir, &crate::sizes::descriptor_sizes()).unwrap();
        let j = to_json(&r);
        check_in_use_and_parity(&j, "sample");
        let t = table(&r);
        assert!(t.contains("IN USE") && t.contains("parity flat") && t.contains("what drives each row"), "{t}");
    }

    #[test]
    fn in_use_storage_and_parity_on_mixa() {
        let r = compute(&Path::new(DATA).join("snapshots/mixA"), &crate::sizes::descriptor_sizes()).unwrap();
        let j = to_json(&r);
        check_in_use_and_parity(&j, "mixA");
        // mixA: anon and file pages are almost all order-0 folios: 56 B (+ storage) of 64.
        let anon = j["kinds"].as_array().unwrap().iter().find(|k| k["kind"] == "anon").unwrap();
        let ratio = anon["ratios"]["flat_vs_linux"].as_f64().unwrap();
        assert!(ratio > 0.875 && ratio < 0.9, "anon {ratio}");
        let parity = anon["ratios"]["parity_flat_vs_linux"].as_f64().unwrap();
        assert!(parity > 72.0 / 64.0 && parity < 1.15, "anon parity {parity}");
    }

    #[test]
    fn svg_labels_every_row() {
        let dir = sample_dir().expect("bundled sample");
        let r = compute(&dir, &crate::sizes::descriptor_sizes()).unwrap();
        let p = std::env::temp_dir().join(format!("memdesc-estimate-rows-{}.svg", std::process::id()));
        write_svg(&r, &p).unwrap();
        let svg = std::fs::read_to_string(&p).unwrap();
        let _ = std::fs::remove_file(&p);
        for row in r.estimate.rows.iter().filter(|r| r.pages > 0 && r.kind != "memmap") {
            assert!(svg.contains(&format!("{} ({} pages)", row.kind, row.pages)), "row {} unlabelled", row.kind);
        }
        assert!(svg.contains("in use") && svg.contains("parity folio") && svg.contains("logarithmic"));
    }

    #[test]
    fn mixa_estimate_is_fast_enough_to_time() {
        // Not a timing assertion (debug build); checks the timed unit runs and reports time.
        let r = compute(&Path::new(DATA).join("snapshots/mixA"), &SIZES).unwrap();
        assert!(r.seconds > 0.0);
        assert_eq!(r.census.total, 6_553_599);
    }
}
