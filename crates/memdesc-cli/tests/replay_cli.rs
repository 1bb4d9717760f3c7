//! `memdesc replay` through the built binary, on the bundled sample and on every trace in
//! `../shared/data/traces`: each finishes with no allocation failure, no error from the
//! simulated allocators, and every line of the trace accounted for (replayed, skipped with a
//! reason, or a header/blank/lost marker).
//!
//! About 30 s in all in a debug build; the replays run one at a time (each simulates a 24 GiB
//! machine and holds about 1 GiB of host memory).

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

use serde_json::Value;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const TRACES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data/traces");

fn replay(args: &[&str]) -> Value {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let out = Command::new(env!("CARGO_BIN_EXE_memdesc"))
        .arg("replay")
        .args(args)
        .arg("--json")
        .output()
        .expect("run memdesc");
    assert!(out.status.success(), "memdesc replay {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("invalid JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |v, k| v.get(k).unwrap_or_else(|| panic!("missing key {path}")))
}

fn num(v: &Value, path: &str) -> u64 {
    at(v, path).as_u64().unwrap_or_else(|| panic!("{path} is not an integer: {}", at(v, path)))
}

/// The checks every trace must pass.
fn check(v: &Value, name: &str) {
    assert_eq!(num(v, "alloc_failures"), 0, "{name}: allocation failures");
    assert_eq!(
        at(v, "sim_errors").as_object().map(|m| m.len()),
        Some(0),
        "{name}: allocator errors {}",
        at(v, "sim_errors")
    );
    let lines = num(v, "lines.total");
    assert!(lines > 0, "{name}: empty trace");
    assert_eq!(num(v, "lines.accounted"), lines, "{name}: every line accounted for");
    assert_eq!(
        num(v, "events.replayed") + num(v, "skipped.total"),
        num(v, "events.total"),
        "{name}: every event replayed or skipped"
    );
    let reasons: u64 = at(v, "skipped.by_reason").as_object().unwrap().values().map(|x| x.as_u64().unwrap()).sum();
    assert_eq!(reasons, num(v, "skipped.total"), "{name}: every skip has a reason");
    let by_type: u64 = at(v, "events.by_type")
        .as_object()
        .unwrap()
        .values()
        .map(|t| t["replayed"].as_u64().unwrap() + t["skipped"].as_u64().unwrap())
        .sum();
    assert_eq!(by_type + num(v, "lines.unknown"), num(v, "events.total"), "{name}: per-type counts");
    // Most of the stream is replayed, not skipped.
    assert!(num(v, "events.replayed") * 10 >= num(v, "events.total") * 8, "{name}: replayed {}", at(v, "events"));
    assert!(at(v, "events_per_sec").as_f64().unwrap() > 0.0);
    let linux = num(v, "bytes.peak_linux");
    let memdesc = num(v, "bytes.peak_memdesc");
    assert!(memdesc > 0 && memdesc < linux, "{name}: memdesc {memdesc} B vs Linux {linux} B");
    for k in ["free", "anon", "file", "slab", "page_table", "reserved", "other"] {
        num(v, &format!("end.pages.{k}.replay"));
        num(v, &format!("end.pages.{k}.end_snapshot"));
    }
    assert!(num(v, "end.pages.free.replay") > 0);
    assert!(!at(v, "end.free_blocks_by_order.replay").as_array().unwrap().is_empty());
    // The SLUB signature picks out pages the end snapshot flags SLAB.
    let live = num(v, "end.linux_slab_signature.live_pages");
    let slab = num(v, "end.linux_slab_signature.end_snapshot_slab");
    assert!(slab * 10 >= live * 9, "{name}: {slab} of {live} signature pages are slab at the end");
    // The two-level cost of the traced placement, whatever the simulated memmap.
    let areas = num(v, "two_level.areas");
    let traced = num(v, "split_areas_peak.traced_placement");
    assert!(traced > 0 && traced <= areas, "{name}: traced split areas {traced} of {areas}");
    assert_eq!(num(v, "two_level.traced_placement.split_areas_peak"), traced);
    let traced_bytes = num(v, "bytes.peak_memdesc_two_level_traced_placement");
    assert!(traced_bytes >= areas * 8 + traced * 4096 && traced_bytes < linux, "{name}: {traced_bytes}");
    // The descriptor caches with their real geometry; their slabs are what memdesc is charged.
    let caches = at(v, "descriptor_caches").as_array().unwrap();
    let folio = caches.iter().find(|c| c["name"] == "folio").unwrap_or_else(|| panic!("{name}: no folio cache"));
    assert_eq!(folio["object_bytes"].as_u64(), Some(48));
    let (slabs, order) = (folio["slabs"].as_u64().unwrap(), folio["slab_order"].as_u64().unwrap());
    assert_eq!(folio["bytes"].as_u64(), Some(slabs * (4096 << order)));
    assert!(caches.iter().any(|c| c["name"] == "slab_desc"));
    assert!(at(v, "bytes.memdesc_includes").as_str().unwrap().contains("slab_desc"));
    if at(v, "memmap") == "flat" {
        assert!(at(v, "split_areas_peak.memdesc_placement").is_null(), "{name}");
        assert!(at(v, "bytes.two_level_placement").is_null());
    }
}

/// `memdesc estimate --json` of a snapshot directory.
fn estimate(dir: &Path) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_memdesc"))
        .args(["estimate", "--json", "--snapshot", dir.to_str().unwrap()])
        .output()
        .expect("run memdesc");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn bundled_sample() {
    let v = replay(&[]);
    check(&v, "sample");
    assert!(at(&v, "source").as_str().unwrap().ends_with("samples/small"));
    assert!(num(&v, "events.total") > 60_000);
}

#[test]
fn bundled_sample_two_level_and_svg() {
    let svg = std::env::temp_dir().join(format!("memdesc-replay-{}.svg", std::process::id()));
    let v = replay(&["--memmap", "two-level", "--svg", svg.to_str().unwrap()]);
    check(&v, "sample (two-level)");
    assert_eq!(at(&v, "memmap"), "two_level");
    // Both placements, labelled: the bytes use memdesc's own, which packs allocations into
    // fewer 2 MiB areas than Linux's placement splits.
    assert_eq!(at(&v, "bytes.two_level_placement"), "memdesc");
    let own = num(&v, "split_areas_peak.memdesc_placement");
    let traced = num(&v, "split_areas_peak.traced_placement");
    assert!(own > 0 && own < traced, "own {own}, traced {traced}");
    // At the start the traced placement is the start snapshot's: `estimate` counts the same
    // split areas, plus areas that mix free and not-yet-initialised pages.
    let sample = Path::new(at(&v, "source").as_str().unwrap()).to_path_buf();
    let e = estimate(&sample.join("start"));
    let census = num(&e, "two_level.split_areas");
    let start = num(&v, "two_level.traced_placement.split_areas_start");
    assert!(start <= census && start * 10 >= census * 9, "traced start {start}, estimate {census}");
    let text = std::fs::read_to_string(&svg).expect("svg written");
    let _ = std::fs::remove_file(&svg);
    assert!(text.starts_with("<svg") && text.contains("memdesc") && text.contains("Linux"));
}

#[test]
fn table_output() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let out = Command::new(env!("CARGO_BIN_EXE_memdesc")).arg("replay").output().expect("run memdesc");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "all accounted for",
        "allocation failures 0",
        "mm_page_alloc",
        "end state",
        "free blocks by order",
        "metadata:",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

#[test]
fn missing_directory_is_an_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_memdesc")).args(["replay", "/nonexistent/trace"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/trace"));
}

fn shared(name: &str) {
    let dir = Path::new(TRACES).join(name);
    let v = replay(&[dir.to_str().unwrap()]);
    check(&v, name);
}

#[test]
fn shared_anon() {
    shared("anon");
}

#[test]
fn shared_metadata() {
    shared("metadata");
}

#[test]
fn shared_pagecache() {
    shared("pagecache");
}
