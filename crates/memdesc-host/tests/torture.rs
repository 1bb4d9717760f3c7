//! The torture engine in the normal suite: short seeded runs on one and two CPUs with fault
//! injection (and hwpoison injection) must end clean, and one CPU replays exactly from its seed.

use memdesc_host::torture::{run, TortureConfig, TortureReport};

mod common;
use common::mappable_put;

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
    let a = short(1, 11, 5000, 0.02);
    assert_clean(&a);
    assert_eq!(a.ops, 5000);
    assert!(a.injected_failures > 0, "injection ran");
    for op in &a.per_op {
        assert!(op.runs > 0, "{} never ran", op.name);
    }
    let b = short(1, 11, 5000, 0.02);
    assert_eq!(a.log_hash, b.log_hash, "the same seed replays the same sequence");
    assert_eq!(a.log_tail, b.log_tail);
    assert_eq!(a.injected_failures, b.injected_failures);
    let c = short(1, 12, 5000, 0.02);
    assert_ne!(a.log_hash, c.log_hash, "another seed, another sequence");
}

#[test]
fn two_cpus_with_fault_injection_are_clean() {
    let r = short(2, 5, 6000, 0.05);
    assert_clean(&r);
    assert_eq!(r.ops, 12000);
}

#[test]
fn hwpoison_injection_drops_hit_objects_and_accounts_every_page() {
    // One CPU is deterministic for a seed, so the "held objects hit" assertion is made on that
    // run (seed 1 loses 6 objects with today's op table); with two CPUs the interleaving, and so
    // whether poison meets a held object, depends on scheduling.
    for threads in [1, 2] {
        let cfg = TortureConfig {
            threads,
            seed: 1,
            duration: None,
            max_ops: Some(4000),
            fail_rate: 0.01,
            poison_rate: 0.1,
            check_every: 500,
            max_live_pages: 4096,
            ..TortureConfig::default()
        };
        let r = run(&cfg).unwrap();
        assert_clean(&r);
        assert!(r.poisoned_pages > 0, "{threads} CPUs: pages were poisoned");
        assert!(r.poison_refused > 0, "two-level pfns are refused, not violations");
        assert!(r.hwpoison_pages > 0 && r.hwpoison_pages <= r.poisoned_pages, "{r:?}");
        if threads == 1 {
            assert!(r.poison_lost_objects > 0, "poison hit held objects, which were dropped as lost");
        }
    }
}

/// The descriptor checker counts page-table, vmalloc, page_pool and mappable blocks, and they
/// go when freed.
#[test]
fn check_descriptors_covers_every_block_kind() {
    use memdesc::page_pool::{PagePool, PoolParams};
    use memdesc::pgtable::MmKind;
    use memdesc::vmalloc::{Unmappable, VmallocSpace};
    use memdesc::{Config, Gfp};
    let m = memdesc_host::boot(
        &memdesc_host::torture::torture_layout(),
        Config { nr_cpus: 1, debug_checks: true, ..Config::default() },
    )
    .unwrap();
    let cpu = m.cpus().claim(0).unwrap();
    let before = m.check_descriptors(&cpu).unwrap().others;
    let mms = m.mm_caches(&cpu).unwrap();
    let kmm = mms.mm_create(&cpu, MmKind::Kernel).unwrap();
    let vm = VmallocSpace::new(&m, &cpu, &kmm).unwrap();
    let area = vm.vmalloc::<Unmappable>(&cpu, 3 * 4096, Gfp::KERNEL).unwrap();
    let pool = PagePool::new(&m, &cpu, PoolParams::default()).unwrap();
    let n = pool.alloc(&cpu).unwrap();
    let d = m.mappable_alloc(&cpu, 2, Gfp::KERNEL, 1).unwrap().into_raw();
    let r = m.check_descriptors(&cpu).unwrap();
    // 3 vmalloc pages, a page_pool block, a mappable block, and page tables of kmm.
    assert!(r.others >= before + 6, "{r:?}");
    assert!(r.other_pages >= 9, "{r:?}");
    pp_put_raw(&m, &cpu, n.into_raw()).unwrap();
    assert_eq!(mappable_put(&m, &cpu, d), Ok(true));
    vm.vfree_area(&cpu, area).unwrap();
    assert_eq!(pool.destroy(&cpu), memdesc::page_pool::Destroyed::Now);
    vm.destroy(&cpu).map_err(|(_, e)| e).unwrap();
    kmm.destroy(&cpu);
    mms.destroy(&cpu).unwrap();
    assert_eq!(m.check_descriptors(&cpu).unwrap().others, before, "all gone");
}

mod op_sequences {
    use memdesc_host::torture::run_script;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]
        /// Arbitrary op sequences (the `api_ops` fuzz target's body) end clean, with and
        /// without fault injection.
        #[test]
        fn arbitrary_op_sequences_end_clean(bytes in proptest::collection::vec(any::<u8>(), 0..3000), inject in any::<bool>()) {
            let r = run_script(&bytes, if inject { 0.1 } else { 0.0 });
            assert_clean_script(&r);
        }
    }

    fn assert_clean_script(r: &memdesc_host::torture::TortureReport) {
        assert_eq!(
            (r.violations, r.lost_pages, r.corrupted_bytes),
            (0, 0, 0),
            "{:#?}\n{}",
            r.messages,
            r.log_tail.join("\n")
        );
    }
}

/// The raw put by pfn. The tests put only references they hold (a `NetmemRef` given up
/// after a refused `pp_put`, or one from `into_raw`) or assert refusals of pages that hold no
/// pool reference (the count check refuses them before anything changes), on a machine only
/// the test uses: `pp_put_pfn`'s contract holds at each call.
#[allow(dead_code)]
fn pp_put_raw<P: memdesc::Platform>(
    m: &memdesc::PhysMem<P>,
    cpu: &memdesc::Cpu<'_>,
    pfn: memdesc::Pfn,
) -> Result<(), memdesc::page_pool::PoolError> {
    // SAFETY: see above.
    unsafe { m.pp_put_pfn(cpu, pfn) }
}

/// A worker that panics ends the run with an error naming the panic; before, the other
/// workers waited at the next quiescent-point barrier forever (a hung CI job).
#[test]
fn regression_worker_panic_fails_the_run() {
    let cfg = TortureConfig {
        threads: 2,
        seed: 5,
        duration: None,
        max_ops: Some(2_000),
        check_every: 500,
        max_live_pages: 4096,
        inject_panic: Some((1, 700)),
        ..TortureConfig::default()
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(run(&cfg).map(|r| r.ops)));
    let r = rx.recv_timeout(std::time::Duration::from_secs(120)).expect("the run ended instead of hanging");
    let e = r.expect_err("a worker panic is a failed run");
    assert!(e.contains("CPU 1") && e.contains("injected worker panic"), "{e}");
}
