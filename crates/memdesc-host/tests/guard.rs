//! Guard pages on the simulated machine: an allocation made with `Gfp::GUARD` is flanked by
//! `Guard` pages that SimPlatform mprotects, so an overrun or underrun faults (shown in a
//! child process that must die of SIGSEGV); freeing restores the guards' accessibility and
//! returns them to the allocator.

use std::os::unix::process::ExitStatusExt;
use std::process::Command;

use memdesc::memmap::word::{PageKind, Subtype};
use memdesc::{Config, FreeError, Gfp, MemmapLayout, MemoryLayout, Pfn, Platform, RegionSpec};
use memdesc_host::{boot, SimMachine};

mod common;
#[allow(unused_imports)]
use common::*;

fn machine() -> SimMachine {
    let mut l = MemoryLayout::new();
    l.add_region(RegionSpec {
        start: Pfn(0x1000),
        end: Pfn(0x3000),
        node: 0,
        mapped: true,
        layout: MemmapLayout::Flat,
    })
    .unwrap();
    boot(&l, Config { nr_cpus: 1, debug_checks: true, ..Config::default() }).unwrap()
}

fn subtype(m: &SimMachine, pfn: Pfn) -> Option<Subtype> {
    match m.memmap().load(m.platform(), pfn)?.word.kind() {
        PageKind::Undescribed(u) => Some(u.subtype),
        _ => None,
    }
}

/// Run only by `overrun_and_underrun_fault_in_a_child`: writes just past (or before) a guarded block.
#[test]
#[ignore = "the child half of overrun_and_underrun_fault_in_a_child"]
fn guard_child() {
    let Ok(dir) = std::env::var("MEMDESC_GUARD_CHILD") else { return };
    let m = machine();
    let cpu = m.cpus().claim(0).unwrap();
    let pfn = m.alloc_pages_raw(&cpu, 1, Gfp::GUARD | Gfp::ZERO).unwrap();
    let p = m.platform().direct_map(pfn).unwrap().as_ptr();
    // SAFETY: the two data pages are ours.
    unsafe { p.add(8191).write_volatile(1) };
    eprintln!("in bounds ok; now {dir}");
    // SAFETY: deliberately out of bounds: the guard page must fault.
    unsafe {
        if dir == "over" {
            p.add(8192).write_volatile(1);
        } else {
            p.sub(1).write_volatile(1);
        }
    }
    eprintln!("NOT FAULTED");
    std::process::exit(0);
}

#[test]
fn overrun_and_underrun_fault_in_a_child() {
    for dir in ["over", "under"] {
        let out = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "guard_child", "--ignored", "--nocapture", "--test-threads=1"])
            .env("MEMDESC_GUARD_CHILD", dir)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("in bounds ok"), "{dir}: the child reached the overrun: {err}");
        assert!(!err.contains("NOT FAULTED"), "{dir}: {err}");
        assert_eq!(out.status.signal(), Some(libc::SIGSEGV), "{dir}: child status {:?}: {err}", out.status);
    }
}

#[test]
fn guards_are_tagged_counted_and_released_on_free() {
    let m = machine();
    let cpu = m.cpus().claim(0).unwrap();
    m.drain_all();
    let free0 = m.nr_free_pages();
    let mut blocks = Vec::new();
    for order in [0u32, 1, 3] {
        let pfn = m.alloc_pages_raw(&cpu, order, Gfp::GUARD).unwrap();
        assert!(pfn.is_aligned(order));
        let after = pfn.add(1 << order);
        assert_eq!(subtype(&m, Pfn(pfn.0 - 1)), Some(Subtype::Guard));
        assert_eq!(subtype(&m, after), Some(Subtype::Guard));
        assert_eq!(subtype(&m, pfn), Some(Subtype::Unmappable));
        blocks.push((pfn, order));
    }
    let c = m.census().unwrap();
    assert_eq!(c.guard, 6);
    assert_eq!(m.undescribed_stats().guard_pages, 6);
    m.drain_all();
    assert_eq!(m.nr_free_pages(), free0 - (1 + 2 + 8) - 6, "only the blocks and their guards stay taken");
    m.check(|_, _, _| ()).unwrap();
    // A wrong free changes nothing, guards included.
    let (p1, _) = blocks[1];
    assert_eq!(free_raw(&m, &cpu, p1, 0), Err(FreeError::WrongOrder { pfn: p1, given: 0, allocated: 1 }));
    assert_eq!(subtype(&m, Pfn(p1.0 - 1)), Some(Subtype::Guard));
    // A guard page is not a free-able allocation.
    assert_eq!(free_raw(&m, &cpu, Pfn(p1.0 - 1), 0), Err(FreeError::NotAllocated(Pfn(p1.0 - 1), Subtype::Guard)));
    let guards: Vec<Pfn> = blocks.iter().flat_map(|&(p, o)| [Pfn(p.0 - 1), p.add(1 << o)]).collect();
    for &(pfn, order) in &blocks {
        free_raw(&m, &cpu, pfn, order).unwrap();
    }
    assert_eq!(m.undescribed_stats().guard_pages, 0);
    assert_eq!(m.census().unwrap().guard, 0);
    m.drain_all();
    assert_eq!(m.nr_free_pages(), free0);
    m.check(|_, _, _| ()).unwrap();
    // The former guards are ordinary memory again: allocated and written.
    let mut all = Vec::new();
    while let Ok(p) = m.alloc_pages_raw(&cpu, 0, Gfp::HIGH | Gfp::NOWARN) {
        all.push(p);
    }
    for g in &guards {
        assert!(all.contains(g), "guard {g} returned to the allocator");
        let p = m.platform().direct_map(*g).unwrap().as_ptr();
        // SAFETY: allocated to us now; faults (failing the test) if still protected.
        unsafe { p.add(4095).write_volatile(7) };
    }
    for p in all {
        free_raw(&m, &cpu, p, 0).unwrap();
    }
    // Folios ignore the flag.
    let f = m.folio_alloc(&cpu, 0, Gfp::MOVABLE | Gfp::GUARD, memdesc::folio::FolioKind::Anon).unwrap();
    assert_eq!(m.undescribed_stats().guard_pages, 0);
    m.folio_put(&cpu, f).unwrap();
}
