//! `memdesc bench` through the built binary: the JSON the issues name, the table, and errors on
//! bad arguments.
//!
//! The memmap section boots the real 64 GiB flat and 1 TiB two-level machines (a few seconds
//! even in a debug build). The full `--quick` run adds the page allocator workloads, which take
//! about 15 s unoptimised, so that test is ignored by default:
//! `cargo test --release -p memdesc-cli --test bench_cli -- --ignored`.

use std::process::{Command, Output};

use serde_json::Value;

fn memdesc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_memdesc")).args(args).output().expect("run memdesc")
}

fn json(args: &[&str]) -> Value {
    let out = memdesc(args);
    assert!(out.status.success(), "memdesc {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("memdesc {args:?} printed invalid JSON ({e}):\n{}", String::from_utf8_lossy(&out.stdout))
    })
}

fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |v, k| v.get(k).unwrap_or_else(|| panic!("missing key {path} in {v}")))
}

fn positive(v: &Value, path: &str) -> f64 {
    let x = at(v, path).as_f64().unwrap_or_else(|| panic!("{path} is not a number"));
    assert!(x > 0.0, "{path} = {x}");
    x
}

#[test]
fn quick_json_has_the_memmap_keys() {
    let v = json(&["bench", "--quick", "--json", "--only", "memmap"]);
    positive(&v, "memmap.flat_64g.init_ms");
    positive(&v, "memmap.two_level_1t.init_ms");
    let flat = positive(&v, "memmap.flat_64g.bytes");
    let two = positive(&v, "memmap.two_level_1t.bytes");
    // One word per 4 KiB page: 64 GiB flat is 128 MiB of words plus small tables.
    assert!((128.0 * 1024.0 * 1024.0..136.0 * 1024.0 * 1024.0).contains(&flat), "flat_64g.bytes = {flat}");
    // One word per 2 MiB area: 1 TiB two-level is a few MiB.
    assert!(two < 16.0 * 1024.0 * 1024.0, "two_level_1t.bytes = {two}");
    assert!(at(&v, "memmap.two_level_1t.host_rss_bytes").is_u64());
    assert!(v.get("page_alloc").is_none(), "--only memmap");
    // Descriptor sizes are always reported (size_of of the real types).
    for k in ["folio_order0", "slab", "ptdesc", "zspage", "netmem", "vmalloc", "mappable"] {
        let b = positive(&v, &format!("descriptors.{k}_bytes"));
        assert!((b as u64).is_multiple_of(16) && b <= 128.0, "descriptors.{k}_bytes = {b}");
    }
    assert!(positive(&v, "descriptors.folio_order0_plus_word_bytes") <= 64.0, "no more than Linux's struct page");
}

#[test]
fn quick_json_has_the_compaction_keys() {
    let v = json(&["bench", "--quick", "--json", "--only", "compaction"]);
    assert!(at(&v, "compaction.order9_blocks_after").as_u64().unwrap() > 0);
    assert_eq!(at(&v, "compaction.order9_blocks_before").as_u64(), Some(0));
    positive(&v, "compaction.migrated_per_sec");
    positive(&v, "compaction.mapped_migrated_per_sec");
    positive(&v, "compaction.mapped_to_unmapped_rate");
    assert!(at(&v, "compaction.mapped_order9_blocks_after").as_u64().unwrap() > 0);
    assert!(v.get("page_alloc").is_none(), "--only compaction");
}

#[test]
#[ignore = "about 20 s in a debug build; run with --release -- --ignored"]
fn quick_json_has_every_key() {
    let v = json(&["bench", "--quick", "--json"]);
    for k in ["memmap.flat_64g", "memmap.two_level_1t"] {
        positive(&v, &format!("{k}.init_ms"));
        positive(&v, &format!("{k}.bytes"));
        positive(&v, &format!("{k}.boot_ms"));
    }
    for k in [
        "page_alloc.order0_pair_ns.memdesc",
        "page_alloc.order0_pair_ns.buddy_system_allocator",
        "page_alloc.mixed_ns.memdesc",
        "page_alloc.mixed_ns.buddy_system_allocator",
        "page_alloc.threads2_speedup",
        "page_alloc.order0_speedup_vs_bsa",
        "page_alloc.mixed_speedup_vs_bsa",
        "page_alloc.threads.one_thread_cpu_ns_per_pair",
        "page_alloc.threads.two_threads_cpu_ns_per_pair",
        "page_alloc.mixed_full_ns.memdesc",
        "page_alloc.mixed_full_ns.buddy_system_allocator",
        "page_alloc.mixed_full_speedup_vs_bsa",
        "page_alloc.cross_cpu.ns_per_object.memdesc",
        "page_alloc.cross_cpu.ns_per_object.buddy_system_allocator",
        "page_alloc.cross_cpu.ns_per_object.mimalloc",
        "slab.pair_ns.memdesc",
        "slab.threads2_pair_ns.memdesc",
        "slab.speedup_vs_mimalloc",
        "slab.speedup_vs_system",
        "slab.cross_cpu.ns_per_object.memdesc",
        "slab.cross_cpu.ns_per_object.mimalloc",
        "slab.cross_cpu.ns_per_object.system",
        "replay.split_areas_peak.default",
        "compaction.migrated_per_sec",
        "compaction.order9_blocks_after",
        "replay.events_per_sec",
        "replay.events_per_cpu_sec",
        "replay.parse_events_per_sec",
        "estimate.seconds",
        "zsmalloc.pool_bytes",
        "zsmalloc.stored_bytes",
        "zsmalloc.overhead_ratio_before_compaction",
        "zsmalloc.overhead_ratio_after_compaction",
        "z3fold.overhead_ratio_after_compaction",
    ] {
        positive(&v, k);
    }
    assert_eq!(at(&v, "replay.alloc_failures").as_u64(), Some(0));
    // Counts that may be zero (a host without huge pages, a run without first touches).
    for k in [
        "page_alloc.mixed_host_faults_per_op.memdesc",
        "page_alloc.mixed_host_faults_per_op.memdesc_two_level",
        "page_alloc.mixed_full_host_faults_per_op.memdesc",
        "page_alloc.params.memmap_host_huge_pages",
        "page_alloc.params.mixed_prefaulted_pages.memdesc",
        "page_alloc.params.mixed_prefaulted_pages.memdesc_two_level",
        "page_alloc.params.mixed_full_prefaulted_pages.memdesc",
        "page_alloc.params.mixed_full_prefaulted_pages.memdesc_two_level",
    ] {
        let x = at(&v, k).as_f64().unwrap_or_else(|| panic!("{k} is a number"));
        assert!(x.is_finite() && x >= 0.0, "{k} = {x}");
    }
    // One scaling row per thread count, 1 and 2 by default.
    for k in ["page_alloc.scaling", "slab.scaling"] {
        let rows = at(&v, k).as_array().unwrap_or_else(|| panic!("{k} is a list"));
        let threads: Vec<_> = rows.iter().map(|r| r["threads"].as_u64()).collect();
        assert_eq!(threads, [Some(1), Some(2)], "{k}");
        for r in rows {
            positive(r, "pairs_per_s.memdesc");
            positive(r, "cpu_ns_per_pair.memdesc");
        }
    }
}

#[test]
fn quick_json_has_the_zsmalloc_keys() {
    let v = json(&["bench", "--quick", "--json", "--only", "zsmalloc"]);
    let pool = positive(&v, "zsmalloc.pool_bytes");
    let stored = positive(&v, "zsmalloc.stored_bytes");
    assert!(pool >= stored, "pages hold at least the objects: {pool} < {stored}");
    let before = positive(&v, "zsmalloc.overhead_ratio_before_compaction");
    let after = positive(&v, "zsmalloc.overhead_ratio_after_compaction");
    assert!((1.0..=before).contains(&after), "after compaction {after}, before {before}");
    for k in ["pool_bytes", "stored_bytes", "overhead_ratio_before_compaction", "overhead_ratio_after_compaction"] {
        positive(&v, &format!("z3fold.{k}"));
    }
    assert_eq!(at(&v, "zsmalloc.detail.verified_objects"), at(&v, "zsmalloc.detail.stored_objects"));
    assert!(v.get("page_alloc").is_none(), "--only zsmalloc");
}

#[test]
fn bad_section_is_an_error_not_a_panic() {
    let out = memdesc(&["bench", "--only", "nonsense"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("memmap") && err.contains("page_alloc"), "names the sections: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_threads_is_an_error_not_a_panic() {
    for n in ["0", "65", "two"] {
        let out = memdesc(&["bench", "--threads", n, "--only", "memmap"]);
        assert!(!out.status.success(), "--threads {n}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--threads") && !err.contains("panicked"), "--threads {n}: {err}");
    }
}

#[test]
fn help_names_the_options() {
    let out = memdesc(&["bench", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for opt in ["--quick", "--json", "--only", "--threads"] {
        assert!(help.contains(opt), "{opt} in {help}");
    }
}
