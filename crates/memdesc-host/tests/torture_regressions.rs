//! Bugs the torture found, each kept as a plain regression test.

use memdesc::{Config, Gfp};
use memdesc_host::torture::torture_layout;

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
        let p = m.kmalloc(&cpu, 64, Gfp::KERNEL).unwrap();
        let used = before - m.nr_free_pages();
        assert!(used <= 8, "cpu {id}: one kmalloc took {used} pages");
        m.kfree(&cpu, p).unwrap();
    }
}
