//! Bugs the torture found, each kept as a plain regression test.

use memdesc::{Config, Gfp};
use memdesc_host::torture::torture_layout;

mod common;
#[allow(unused_imports)]
use common::*;

/// A CPU whose home node differs from the node the page allocator serves first refilled its
/// sheaf only from its home node's partial list, so every new slab (placed on the other node)
/// was invisible to it and it made slabs until the other node hit its watermark: one 64-byte
/// kmalloc on CPU 1 of the two-node torture machine took 63 503 pages.
#[test]
fn refill_uses_the_node_the_new_slab_is_on() {
    let m = memdesc_host::boot(&torture_layout(), Config { nr_cpus: 2, ..Config::default() }).unwrap();
    for id in [1, 0] {
        let cpu = m.cpus().claim(id).unwrap();
        let before = m.nr_free_pages();
        let p = m.kmalloc_raw(&cpu, 64, Gfp::KERNEL).unwrap();
        let used = before - m.nr_free_pages();
        assert!(used <= 8, "cpu {id}: one kmalloc took {used} pages");
        kfree_raw(&m, &cpu, p).unwrap();
    }
}

/// `online_range` made the range's pageblocks movable before turning its `Offline` words back
/// into free pages, and `Balloon::deflate` (which takes `Offline` order-0 words outside isolated
/// pageblocks as its own) could take an onlined page in between: the page was freed twice and
/// the balloon's page count underflowed (the 60 s debug torture, seed 21). Offline/online a
/// fragmented range on one CPU while another deflates.
#[test]
fn deflate_never_takes_a_page_being_onlined() {
    use memdesc::health::balloon::Balloon;
    use memdesc::Pfn;
    let m =
        memdesc_host::boot(&torture_layout(), Config { nr_cpus: 2, debug_checks: true, ..Config::default() }).unwrap();
    let (start, end) = (Pfn(0x8000), Pfn(0x8400));
    let b = Balloon::new(&m);
    let base = m.nr_free_pages();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let cpu = m.cpus().claim(1).unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                b.deflate(&cpu, u64::MAX);
            }
        });
        let cpu = m.cpus().claim(0).unwrap();
        for _ in 0..20 {
            // Fragment the range: every other page of it held, then released, so offlining
            // stamps many order-0 `Offline` words.
            let mut held = vec![];
            while let Ok(p) = m.alloc_pages_raw(&cpu, 0, Gfp::MOVABLE) {
                held.push(p);
                if held.len() > 1500 {
                    break;
                }
            }
            for (i, p) in held.iter().enumerate() {
                if i % 2 == 0 || !(start..end).contains(p) {
                    free_raw(&m, &cpu, *p, 0).unwrap();
                }
            }
            held.retain(|p| (start..end).contains(p));
            let mut kept = vec![];
            for (i, p) in held.into_iter().enumerate() {
                if i % 2 == 1 {
                    free_raw(&m, &cpu, p, 0).unwrap();
                } else {
                    kept.push(p);
                }
            }
            // Refused (raw pages in it) or done: both fine; then release and retry whole.
            let _ = m.offline_range(&cpu, start, end);
            let _ = m.online_range(start, end);
            for p in kept {
                free_raw(&m, &cpu, p, 0).unwrap();
            }
            if m.offline_range(&cpu, start, end).is_ok() {
                m.online_range(start, end).unwrap();
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    assert_eq!(b.stats().pages, 0);
    m.drain_all();
    assert_eq!(m.nr_free_pages(), base);
    m.check(|_, _, _| {}).unwrap();
}
