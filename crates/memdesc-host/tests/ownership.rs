//! Issue 12, findings 2–4: what safe (and documented raw) code can free. Each test reproduces a
//! misuse that corrupted the allocator before the fix, through the public API only.
//!
//! - `regression_free_internal_pages`: the crate's own blocks (per-CPU sheaf arrays, …) were
//!   raw `Unmappable` blocks, so `free_pages(pfn, order)` of a scanned pfn freed them (22 after
//!   boot) while their caches kept using them. Now they are `Internal`, and the raw free refuses
//!   them with [`FreeError::Internal`].
//! - `regression_kfree_descriptor`: `kfree` of a live descriptor (a folio's, a slab's) returned
//!   `Ok` and the next allocation handed the descriptor out again. Now only kmalloc objects are
//!   accepted ([`SlabError::NotKmalloc`]); the safe `kfree` takes a `KBox`, which only kmalloc
//!   makes.
//! - `regression_double_kfree_cross_cpu`: with debug checks off (release builds), a kfree on
//!   CPU 0 and again on CPU 1 both returned `Ok` and the next two kmallocs returned the same
//!   pointer. Now the always-on free-pointer check refuses the second free.

use std::collections::HashSet;
use std::ptr::NonNull;

use memdesc::base::layout::{MemmapLayout, MemoryLayout};
use memdesc::folio::FolioKind;
use memdesc::memmap::word::{PageKind, Subtype};
use memdesc::{CacheArgs, Config, FreeError, Gfp, Pfn, SlabError};
use memdesc_host::{boot, SimMachine};

mod common;
use common::mappable_put;

fn machine(layout: MemmapLayout, debug_checks: bool) -> SimMachine {
    boot(&MemoryLayout::pc(1, layout), Config { nr_cpus: 2, debug_checks, ..Config::default() }).unwrap()
}

/// Every head word that is not free, a tail or memory the machine never hands out: what a
/// pfn scanner would try to free.
fn allocated_heads(m: &SimMachine) -> Vec<(Pfn, u32, Subtype)> {
    let mut out = vec![];
    for r in m.memmap().regions() {
        m.memmap().walk(m.platform(), r.start, r.end, |v| {
            if let PageKind::Undescribed(u) = v.word.kind() {
                if !matches!(u.subtype, Subtype::Tail | Subtype::Reserved | Subtype::Uninit) {
                    out.push((v.first, u.order as u32, u.subtype));
                }
            }
        });
    }
    out
}

#[test]
fn regression_free_internal_pages() {
    for layout in [MemmapLayout::Flat, MemmapLayout::TwoLevel] {
        for debug_checks in [false, true] {
            let m = machine(layout, debug_checks);
            let cpu = m.cpus().claim(0).unwrap();
            // Make more of the crate's own blocks: a user cache (its sheaf arrays), page tables,
            // vmalloc pages, a page_pool block.
            let c = m.create_cache(&cpu, CacheArgs::new("scan_me", 72)).unwrap();
            let o = c.alloc(&cpu).unwrap();
            let free0 = m.nr_free_pages();
            let heads = allocated_heads(&m);
            let internal = heads.iter().filter(|h| h.2 == Subtype::Internal).count();
            // One sheaf array per cache at least: the kmalloc caches, the descriptor caches and ours.
            assert!(internal >= 14, "{layout:?}: only {internal} internal blocks after boot");
            let mut freed = vec![];
            for &(pfn, order, subtype) in &heads {
                // SAFETY: deliberately not ours: this is the adversarial scan of the finding. Right
                // after boot no block belongs to a caller, so every head is the crate's own (or
                // memory it never hands out) and the word check must refuse each before anything
                // changes; a success is the bug under test (and fails the test below).
                let r = unsafe { m.free_pages_raw(&cpu, pfn, order) };
                match (subtype, r) {
                    (Subtype::Internal, Err(FreeError::Internal(p))) => assert_eq!(p, pfn),
                    (_, Err(_)) => {}
                    (s, Ok(())) => freed.push((pfn, order, s)),
                }
            }
            assert!(freed.is_empty(), "{layout:?}: a scan freed the crate's own blocks {freed:?}");
            assert_eq!(m.nr_free_pages(), free0, "refused frees change nothing");
            // The caches still work on their own memory, and the machine is consistent.
            let more: Vec<_> = (0..500).map(|_| c.alloc(&cpu).unwrap()).collect();
            for x in more {
                c.free(&cpu, x).unwrap();
            }
            c.free(&cpu, o).unwrap();
            for size in [8, 96, 1000, 8192] {
                let b = m.kmalloc(&cpu, size, Gfp::KERNEL).unwrap();
                m.kfree(&cpu, b).unwrap();
            }
            m.destroy_cache(&cpu, c).unwrap();
            m.check(|_, _, _| {}).unwrap_or_else(|v| panic!("{layout:?}: {v}"));
            m.check_descriptors(&cpu).unwrap();
        }
    }
}

/// A raw block handed out by `alloc_pages` is freed by the raw free; an internal block is not,
/// and the owned handle of another machine is refused.
#[test]
fn owned_pages_free_once_and_only_on_their_machine() {
    let m = machine(MemmapLayout::Flat, false);
    let other = machine(MemmapLayout::Flat, false);
    let cpu = m.cpus().claim(0).unwrap();
    let ocpu = other.cpus().claim(0).unwrap();
    let p = m.alloc_pages(&cpu, 3, Gfp::KERNEL).unwrap();
    let q = other.alloc_pages(&ocpu, 3, Gfp::KERNEL).unwrap();
    let (pfn, order) = (p.pfn(), p.order());
    assert_eq!((order, p.nr_pages()), (3, 8));
    let free = m.nr_free_pages();
    // Another machine's handle is refused even though a block may sit at the same pfn here.
    let qpfn = q.pfn();
    assert_eq!(m.free_pages(&cpu, q), Err(FreeError::ForeignMachine(qpfn)));
    assert_eq!(m.nr_free_pages(), free);
    m.free_pages(&cpu, p).unwrap();
    // SAFETY: the block was freed just above: the raw free must refuse it (nobody else can
    // own it meanwhile; this test is single-threaded and allocates nothing in between).
    assert_eq!(unsafe { m.free_pages_raw(&cpu, pfn, order) }, Err(FreeError::DoubleFree(pfn)));
    // Round trip through the raw form.
    let (rp, ro) = m.alloc_pages(&cpu, 1, Gfp::KERNEL).unwrap().into_raw();
    // SAFETY: (rp, ro) came from into_raw just above and is used once.
    m.free_pages(&cpu, unsafe { memdesc::Pages::from_raw(&m, rp, ro) }).unwrap();
    // The refused foreign handle stayed allocated on its machine: free it there by pfn.
    // SAFETY: `q` was ours on `other` and its free on `m` was refused, so it is still ours.
    unsafe { other.free_pages_raw(&ocpu, qpfn, 3) }.unwrap();
    m.check(|_, _, _| {}).unwrap();
    other.check(|_, _, _| {}).unwrap();
}

#[test]
fn regression_kfree_descriptor() {
    for debug_checks in [false, true] {
        let m = machine(MemmapLayout::Flat, debug_checks);
        let cpu = m.cpus().claim(0).unwrap();
        // A folio descriptor (the finding): refused, and the descriptor is not handed out again.
        let f = m.folio_alloc(&cpu, 0, Gfp::MOVABLE, FolioKind::Anon).unwrap();
        let fd = NonNull::from(&*f).cast::<u8>();
        // SAFETY: deliberately not a kmalloc object: the misuse of the finding, which the raw
        // kfree must refuse before anything changes.
        let r = unsafe { m.kfree_raw(&cpu, fd) };
        assert!(matches!(r, Err(SlabError::NotKmalloc { cache, .. }) if cache == "folio"), "{r:?}");
        let g = m.folio_alloc(&cpu, 0, Gfp::MOVABLE, FolioKind::Anon).unwrap();
        assert!(!std::ptr::eq(&*f, &*g), "the live folio's descriptor was handed out again");
        // A slab descriptor, found from a kmalloc object's page word.
        let b = m.kmalloc(&cpu, 64, Gfp::KERNEL).unwrap();
        let pfn = memdesc::Platform::virt_to_pfn(m.platform(), b.as_ptr()).unwrap();
        let PageKind::Slab(d) = m.memmap().load(m.platform(), pfn).unwrap().word.kind() else { panic!("not a slab") };
        let sd = NonNull::new(d.addr() as *mut u8).unwrap();
        // SAFETY: as above.
        let r = unsafe { m.kfree_raw(&cpu, sd) };
        assert!(matches!(r, Err(SlabError::NotKmalloc { cache: "slab_desc", .. })), "{r:?}");
        // A mappable driver block's descriptor, and an object of a user cache.
        let md = m.mappable_alloc(&cpu, 0, Gfp::KERNEL, 0).unwrap().into_raw();
        // SAFETY: as above.
        let r = unsafe { m.kfree_raw(&cpu, NonNull::from(md).cast()) };
        assert!(matches!(r, Err(SlabError::NotKmalloc { .. })), "{r:?}");
        let c = m.create_cache(&cpu, CacheArgs::new("user_objs", 64)).unwrap();
        let o = c.alloc(&cpu).unwrap();
        // SAFETY: as above: a user cache's object is freed through its cache, not kfree.
        let r = unsafe { m.kfree_raw(&cpu, o.as_ptr()) };
        assert!(matches!(r, Err(SlabError::NotKmalloc { cache: "user_objs", .. })), "{r:?}");
        // Internal and kmalloc caches cannot be reached (or destroyed) through a CacheRef.
        let mut names = vec![];
        m.for_each_cache(|c| names.push((c.name(), c as *const memdesc::SlabCache)));
        for (name, c) in names {
            // SAFETY: caches listed by for_each_cache live until destroyed, which nothing does
            // here; the handle is only looked at and dropped at once.
            let r = unsafe { m.cache_ref(&*c) };
            assert_eq!(r.is_ok(), name == "user_objs", "{name}");
        }
        // Everything still works and is consistent.
        c.free(&cpu, o).unwrap();
        m.destroy_cache(&cpu, c).unwrap();
        assert_eq!(mappable_put(&m, &cpu, md), Ok(true));
        m.kfree(&cpu, b).unwrap();
        m.folio_put(&cpu, g).unwrap();
        m.folio_put(&cpu, f).unwrap();
        m.check(|_, _, _| {}).unwrap();
        m.check_descriptors(&cpu).unwrap();
    }
}

#[test]
fn regression_double_kfree_cross_cpu() {
    for debug_checks in [false, true] {
        for size in [8usize, 64, 96, 512, 4096] {
            let m = machine(MemmapLayout::Flat, debug_checks);
            let cpu0 = m.cpus().claim(0).unwrap();
            let cpu1 = m.cpus().claim(1).unwrap();
            // The finding: free on CPU 0 (into its sheaf), then again on CPU 1.
            let p = m.kmalloc(&cpu0, size, Gfp::KERNEL).unwrap().into_raw();
            // SAFETY: `p` is ours, freed once here.
            unsafe { m.kfree_raw(&cpu0, p) }.unwrap();
            // SAFETY: the second free is the misuse under test; the check must refuse it
            // before anything changes (nothing allocates in between).
            let r = unsafe { m.kfree_raw(&cpu1, p) };
            assert_eq!(r, Err(SlabError::DoubleFree(p.as_ptr() as usize)), "size {size} debug {debug_checks}");
            // And on the same CPU.
            // SAFETY: as above.
            assert_eq!(unsafe { m.kfree_raw(&cpu0, p) }, Err(SlabError::DoubleFree(p.as_ptr() as usize)));
            let a = m.kmalloc(&cpu0, size, Gfp::KERNEL).unwrap();
            let b = m.kmalloc(&cpu0, size, Gfp::KERNEL).unwrap();
            assert_ne!(a.as_ptr(), b.as_ptr(), "size {size}: one object handed out twice");
            m.kfree(&cpu0, a).unwrap();
            m.kfree(&cpu1, b).unwrap();

            // Objects that went home to their slab's free list (flushed sheaves) and objects
            // still in either CPU's sheaves: every second free is refused, wherever the first
            // one left the object.
            let n = 400;
            let objs: Vec<NonNull<u8>> = (0..n)
                .map(|i| m.kmalloc(if i % 2 == 0 { &cpu0 } else { &cpu1 }, size, Gfp::ZERO).unwrap().into_raw())
                .collect();
            for (i, &o) in objs.iter().enumerate() {
                // SAFETY: each object is ours and freed once here.
                unsafe { m.kfree_raw(if i % 3 == 0 { &cpu1 } else { &cpu0 }, o) }.unwrap();
            }
            for (i, &o) in objs.iter().enumerate() {
                // SAFETY: the second free is the misuse under test (nothing allocated since).
                let r = unsafe { m.kfree_raw(if i % 2 == 0 { &cpu1 } else { &cpu0 }, o) };
                // In a slab's sheaf or free list: a double free. In a slab that emptied and went
                // back to the page allocator: no longer slab memory. Refused either way.
                let ok = matches!(r, Err(SlabError::DoubleFree(a)) if a == o.as_ptr() as usize)
                    || matches!(r, Err(SlabError::NotSlab(..)));
                assert!(ok, "size {size} object {i}: {r:?}");
            }
            // Nothing was lost or duplicated: 2n fresh objects are all distinct.
            let again: Vec<_> = (0..2 * n).map(|_| m.kmalloc(&cpu0, size, Gfp::KERNEL).unwrap()).collect();
            let set: HashSet<usize> = again.iter().map(|b| b.as_ptr().as_ptr() as usize).collect();
            assert_eq!(set.len(), 2 * n, "size {size}: an object was handed out twice");
            for b in again {
                m.kfree(&cpu0, b).unwrap();
            }
            m.check(|_, _, _| {}).unwrap();
        }
    }
}

/// An object whose first word happens to hold an arbitrary value (here: what a free list
/// would store) is still freed: the check looks at the key-encoded slot, not at plain values.
#[test]
fn live_contents_do_not_look_free() {
    let m = machine(MemmapLayout::Flat, false);
    let cpu = m.cpus().claim(0).unwrap();
    let objs: Vec<_> = (0..64).map(|_| m.kmalloc(&cpu, 32, Gfp::KERNEL).unwrap()).collect();
    for (i, b) in objs.iter().enumerate() {
        // Store 0, a neighbour's address, or its own address in the first word.
        let v = match i % 3 {
            0 => 0usize,
            1 => objs[(i + 1) % objs.len()].as_ptr().as_ptr() as usize,
            _ => b.as_ptr().as_ptr() as usize,
        };
        // SAFETY: a live 32-byte kmalloc object of ours.
        unsafe { b.as_ptr().cast::<usize>().as_ptr().write(v) };
    }
    for b in objs {
        m.kfree(&cpu, b).unwrap();
    }
    m.check(|_, _, _| {}).unwrap();
}

/// Mappable driver memory through its owned references: the last `mappable_put` frees it, and
/// a reference given up as raw is put with the `unsafe` raw put.
#[test]
fn mappable_references_are_owned() {
    let m = machine(MemmapLayout::Flat, false);
    let cpu = m.cpus().claim(0).unwrap();
    let a = m.mappable_alloc(&cpu, 2, Gfp::KERNEL, 7).unwrap();
    let pfn = a.flags.pfn();
    assert_eq!((a.owner(), a.counts.refcount()), (7, 1));
    let b = m.mappable_get(a.desc()).unwrap();
    assert_eq!(a, b, "two references to one block");
    assert_eq!(a.counts.refcount(), 2);
    let raw = b.into_raw();
    assert_eq!(m.mappable_put(&cpu, a), Ok(false));
    // SAFETY: `raw` is the reference `b` held, given up above and put once here.
    assert_eq!(unsafe { m.mappable_put_raw(&cpu, raw) }, Ok(true));
    assert_eq!(m.mappable_get(raw), Err(memdesc::mappable::MappableError::NoReference), "freed");
    m.drain_all();
    assert!(m.free_block_containing_pfn(pfn).is_some(), "the block went back to the buddy lists");
    m.check(|_, _, _| {}).unwrap();
}
