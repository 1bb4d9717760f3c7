//! CPU tokens are bound to their machine (issue 12, finding 6).

use std::panic::{catch_unwind, AssertUnwindSafe};

use memdesc::{Config, Gfp, MemmapLayout, MemoryLayout};

fn machine() -> memdesc_host::SimMachine {
    memdesc_host::boot(&MemoryLayout::pc(1, MemmapLayout::Flat), Config { nr_cpus: 1, ..Config::default() }).unwrap()
}

/// Issue 12, finding 6: a `Cpu` of one machine was accepted by another. Machine B's "CPU 0"
/// entered machine A's RCU in the slot of A's CPU 0 (two threads doing so at once corrupted the
/// slot's nesting count and let grace periods end under a live reader), and the allocator's
/// check was a `debug_assert!`, gone in release builds. Every entry point must now refuse a
/// foreign token in every build, before it changes anything. (On the old code the RCU entry
/// and, in release builds, every allocator entry accepted B's token.)
#[test]
fn regression_cpu_token_foreign_machine() {
    let (a, b) = (machine(), machine());
    let a0 = a.cpus().claim(0).unwrap();
    let b0 = b.cpus().claim(0).unwrap();
    assert!(!b0.belongs_to(a.cpus()));

    // RCU: a reader of A's CPU 0 is inside its section; B's CPU 0 must not enter A's RCU.
    let reader = a.rcu().read_lock(&a0);
    let cookie = a.rcu().start_grace_period();
    let entered = catch_unwind(AssertUnwindSafe(|| drop(a.rcu().read_lock(&b0)))).is_ok();
    assert!(!entered, "a token of machine B entered machine A's RCU");
    assert!(!a.rcu().poll(cookie), "a grace period ended under a live reader");
    drop(reader);
    assert!(a.rcu().poll(cookie));

    // Allocator entry points: refused before anything changes (a free of A's page with B's
    // token leaves the page A's, so A's own token frees it afterwards).
    let pages = a.alloc_pages(&a0, 0, Gfp::KERNEL).unwrap();
    let pfn = pages.pfn();
    let obj = a.kmalloc(&a0, 64, Gfp::KERNEL).unwrap();
    a.drain_all();
    let free_before = a.nr_free_pages();
    let refused = |what: &str, f: &mut dyn FnMut()| {
        assert!(catch_unwind(AssertUnwindSafe(f)).is_err(), "{what} accepted a token of another machine");
    };
    refused("alloc_pages", &mut || {
        let _ = a.alloc_pages(&b0, 0, Gfp::KERNEL);
    });
    refused("kmalloc", &mut || {
        let _ = a.kmalloc(&b0, 64, Gfp::KERNEL);
    });
    refused("free_pages", &mut || {
        // SAFETY: A's block, owned by `pages`; the call must panic before it frees anything.
        let _ = unsafe { a.free_pages_raw(&b0, pfn, 0) };
    });
    refused("kfree", &mut || {
        // SAFETY: A's object, owned by `obj`; the call must panic before it frees anything.
        let _ = unsafe { a.kfree_raw(&b0, obj.as_ptr()) };
    });
    a.drain_all();
    assert_eq!(a.nr_free_pages(), free_before, "a refused call changed the free page count");
    a.kfree(&a0, obj).unwrap();
    a.free_pages(&a0, pages).unwrap();
    a.check(|_, _, _| ()).expect("machine A is consistent");
}

/// The typed form of the check, for callers that hold tokens of several machines.
#[test]
fn foreign_token_is_a_typed_error_in_try_read_lock() {
    let (a, b) = (machine(), machine());
    let b0 = b.cpus().claim(0).unwrap();
    let err = a.rcu().try_read_lock(&b0).err().expect("refused");
    assert_eq!(err, memdesc::ForeignCpu { id: 0 });
    assert_eq!(err.to_string(), "Cpu token 0 belongs to another machine");
}

/// Tokens move between threads (a thread hands its CPU on) but one CPU is held by one
/// thread at a time: a second claim fails until the first holder releases it.
#[test]
fn one_holder_at_a_time_across_threads() {
    let m = machine();
    let a = &m;
    let cpu = a.cpus().claim(0).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| assert!(a.cpus().claim(0).is_none(), "CPU 0 claimed twice"));
    });
    let cpu = std::thread::scope(|s| {
        s.spawn(move || {
            let p = a.alloc_pages(&cpu, 0, Gfp::KERNEL).unwrap();
            a.free_pages(&cpu, p).unwrap();
            cpu
        })
        .join()
        .unwrap()
    });
    drop(cpu);
    assert!(a.cpus().claim(0).is_some());
}
