//! The torture engine in the normal suite: short seeded runs on one and two CPUs with fault
//! injection must end clean, and one CPU replays exactly from its seed.

use memdesc_host::torture::{run, TortureConfig, TortureReport};

fn short(threads: usize, seed: u64, ops: u64, fail_rate: f64) -> TortureReport {
    let cfg = TortureConfig {
        threads,
        seed,
        duration: None,
        max_ops: Some(ops),
        fail_rate,
        check_every: ops / 4,
        max_live_pages: 4096,
        ..TortureConfig::default()
    };
    run(&cfg).unwrap()
}

fn assert_clean(r: &TortureReport) {
    assert_eq!(
        (r.violations, r.lost_pages, r.corrupted_bytes),
        (0, 0, 0),
        "seed {}: {:#?}\nlog tail:\n{}",
        r.seed,
        r.messages,
        r.log_tail.join("\n")
    );
    assert!(r.checks >= 4, "quiescent checks ran: {}", r.checks);
}

#[test]
fn one_cpu_with_fault_injection_is_clean_and_replays() {
    let a = short(1, 11, 8000, 0.02);
    assert_clean(&a);
    assert_eq!(a.ops, 8000);
    assert!(a.injected_failures > 0, "injection ran");
    for op in &a.per_op {
        assert!(op.runs > 0, "{} never ran", op.name);
    }
    let b = short(1, 11, 8000, 0.02);
    assert_eq!(a.log_hash, b.log_hash, "the same seed replays the same sequence");
    assert_eq!(a.log_tail, b.log_tail);
    assert_eq!(a.injected_failures, b.injected_failures);
    let c = short(1, 12, 8000, 0.02);
    assert_ne!(a.log_hash, c.log_hash, "another seed, another sequence");
}

#[test]
fn two_cpus_with_fault_injection_are_clean() {
    let r = short(2, 5, 6000, 0.05);
    assert_clean(&r);
    assert_eq!(r.ops, 12000);
}
