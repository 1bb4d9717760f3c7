//! Page tables, address spaces and the reverse map on the simulated machine: a process that
//! maps file and anon folios (order 0 and 2 MiB), forks, splits a PMD and unmaps everything,
//! with every count back to zero and every page (page-table pages and descriptor slabs
//! included) back in the allocator; folios straddling PTE tables; refusal of every unmappable
//! kind; mappable driver memory; kernel address spaces; the mapcount limit (split at map, at
//! fork, and refusal at order 0); splitting mapped folios; and a property test of random
//! map/unmap/split_pmd/fork against a reference model of mapcounts.

use std::collections::BTreeMap;

use memdesc::base::layout::{MemmapLayout, MemoryLayout};
use memdesc::folio::{FolioKind, FolioRef};
use memdesc::memmap::desc::{Folio, MappableDesc};
use memdesc::memmap::word::{PageKind, Subtype, Tag};
use memdesc::mm::pgtable::{
    MapError, Mm, MmKind, MmRef, PtEntry, UnmappableKind, KERNEL_START, PMD_SIZE, PTE_HUGE, PTE_RW, PTE_USER,
};
use memdesc::Cpu;
use memdesc::{Config, Gfp, Pfn, Platform};
use memdesc_host::{boot, SimMachine, SimPlatform};
use proptest::prelude::*;

mod common;
#[allow(unused_imports)]
use common::*;
use memdesc_host::torture::settled_free_pages;

const PAGE: u64 = 4096;

fn machine_with(layout: MemmapLayout, limit: u32) -> SimMachine {
    boot(
        &MemoryLayout::pc(1, layout),
        Config { nr_cpus: 2, debug_checks: true, mapcount_limit: limit, ..Config::default() },
    )
    .unwrap()
}

fn machine(layout: MemmapLayout) -> SimMachine {
    machine_with(layout, Config::default().mapcount_limit)
}

fn assert_all_back(m: &SimMachine, cpu: &Cpu<'_>, base: u64) {
    assert_eq!(settled_free_pages(m, cpu), base, "every page is back in the allocator");
    m.check(|_, _, _| ()).expect("allocator invariants");
}

/// The folio a pfn's word names.
fn folio_at(m: &SimMachine, pfn: Pfn) -> &Folio {
    match m.memmap().load(m.platform(), pfn).unwrap().word.kind() {
        // SAFETY: the tests only ask for pfns of folios they hold references to.
        PageKind::AnonFolio(d) | PageKind::FileFolio(d) => unsafe { &*(d.addr() as *const Folio) },
        k => panic!("pfn {:#x} is {k:?}", pfn.0),
    }
}

/// The test's own reference on the folio at `pfn`, lent as a `FolioRef` (not given up).
///
/// # Safety
/// The test holds a reference on that folio.
unsafe fn lent(m: &SimMachine, pfn: Pfn) -> std::mem::ManuallyDrop<FolioRef<'_>> {
    // SAFETY: the caller's promise; ManuallyDrop keeps the reference the test's.
    std::mem::ManuallyDrop::new(unsafe { m.folio_ref_from_pfn(pfn) }.expect("a folio"))
}

/// Puts the test's own reference on the folio at `pfn`.
///
/// # Safety
/// The test holds a reference on that folio and gives it up.
unsafe fn put_held(m: &SimMachine, cpu: &Cpu<'_>, pfn: Pfn) -> Result<bool, memdesc::folio::FolioError> {
    // SAFETY: the caller's promise: adopted once and put.
    m.folio_put(cpu, unsafe { m.folio_ref_from_pfn(pfn) }.expect("a folio"))
}

fn counts(f: &Folio) -> (u32, u32) {
    (f.counts.refcount(), f.counts.mapcount())
}

fn walk(m: &SimMachine, f: &Folio) -> Vec<(usize, u64, PtEntry)> {
    let mut v = Vec::new();
    let cpu = m.cpus().claim(1).unwrap();
    let n = m.rmap_walk(&cpu, f, |mm: &Mm, va, e| v.push((mm.addr(), va, e)));
    assert_eq!(n as usize, v.len());
    v.sort_by_key(|x| (x.0, x.1));
    v
}

#[test]
fn process_maps_forks_splits_and_unmaps_everything() {
    for layout in [MemmapLayout::Flat, MemmapLayout::TwoLevel] {
        let m = machine(layout);
        let cpu = m.cpus().claim(0).unwrap();
        let mms = m.mm_caches(&cpu).unwrap();
        let base = settled_free_pages(&m, &cpu);

        let file = m.address_space_create(&cpu).unwrap();
        let ff0 = m.folio_alloc(&cpu, 0, Gfp::MOVABLE, FolioKind::File).unwrap();
        let ff9 = m.folio_alloc(&cpu, 9, Gfp::MOVABLE, FolioKind::File).unwrap();
        file.insert(&cpu, &ff0, 3).unwrap();
        file.insert(&cpu, &ff9, 512).unwrap();
        let af0 = m.folio_alloc(&cpu, 0, Gfp::MOVABLE, FolioKind::Anon).unwrap();
        let af9 = m.folio_alloc(&cpu, 9, Gfp::MOVABLE, FolioKind::Anon).unwrap();

        let parent = mms.mm_create(&cpu, MmKind::User).unwrap();
        assert_eq!(parent.mm().pt_pages(), 1, "just the PGD");
        let (anon, fva) = (0x4000_0000u64, 0x8000_0000u64);
        parent.mmap_anon(&cpu, anon, 4 << 20).unwrap();
        parent.mmap_file(&cpu, fva, 4 << 20, file.space(), 0).unwrap();

        parent.map_folio(&cpu, anon + PAGE, &af0).unwrap();
        parent.map_folio_pmd(&cpu, anon + (2 << 20), &af9).unwrap();
        parent.map_folio(&cpu, fva + 3 * PAGE, &ff0).unwrap();
        parent.map_folio_pmd(&cpu, fva + 512 * PAGE, &ff9).unwrap();
        // Each entry holds a reference: caller (+ page cache) + 1.
        assert_eq!(counts(&af0), (2, 1));
        assert_eq!(counts(&af9), (2, 1), "a PMD mapping counts 1");
        assert_eq!(counts(&ff0), (3, 1));
        assert_eq!(counts(&ff9), (3, 1));
        let (e, huge) = parent.translate(anon + (2 << 20) + 5 * PAGE).unwrap();
        assert!(huge && e.0 & PTE_HUGE != 0 && e.0 & PTE_USER != 0);
        assert_eq!(e.pfn(), af9.flags.pfn());
        let (e, huge) = parent.translate(fva + 3 * PAGE).unwrap();
        assert!(!huge && e.present() && e.writable());
        assert_eq!(e.pfn(), ff0.flags.pfn());
        // The table pages are page-table pages of this mm.
        let pgd = parent.mm().pgd();
        match m.memmap().load(m.platform(), pgd).unwrap().word.kind() {
            PageKind::PageTable(d) => {
                let g = m.rcu().read_lock(&cpu);
                let d = d.get(&g);
                assert_eq!((d.level(), d.mm(), d.entries()), (4, parent.mm().addr(), 1), "one PUD table");
            }
            k => panic!("PGD word is {k:?}"),
        }
        // rmap finds every mapping from mapping/index.
        for (f, va) in [(&af0, anon + PAGE), (&af9, anon + (2 << 20)), (&ff0, fva + 3 * PAGE), (&ff9, fva + (2 << 20))]
        {
            let w = walk(&m, f);
            assert_eq!(w.len(), 1);
            assert_eq!((w[0].0, w[0].1), (parent.mm().addr(), va));
        }

        // Fork: every folio is shared, mapcount 2.
        let child = parent.fork(&cpu).unwrap();
        for f in [&af0, &af9, &ff0, &ff9] {
            assert_eq!(f.counts.mapcount(), 2);
            let w = walk(&m, f);
            assert_eq!(w.len(), 2);
            assert_ne!(w[0].0, w[1].0, "one mapping in each mm");
        }
        let (pe, _) = parent.translate(anon + PAGE).unwrap();
        let (ce, _) = child.translate(anon + PAGE).unwrap();
        assert_eq!(pe.0 & PTE_RW, 0, "anon entries are write-protected after fork");
        assert_eq!(pe, ce);

        // Split the child's PMD mapping of the anon 2 MiB folio: +511.
        child.split_pmd(anon + (2 << 20)).unwrap();
        assert_eq!(counts(&af9), (2 + 512, 1 + 512));
        let (e, huge) = child.translate(anon + (2 << 20) + 7 * PAGE).unwrap();
        assert!(!huge);
        assert_eq!(e.pfn(), af9.flags.pfn().add(7));
        assert!(parent.translate(anon + (2 << 20)).unwrap().1, "the parent keeps its PMD");
        assert_eq!(walk(&m, &af9).len(), 513);
        assert_eq!(child.split_pmd(anon + (2 << 20)), Err(MapError::NotHuge(anon + (2 << 20))));

        // Unmap everything.
        let st = parent.unmap(&cpu, anon, 4 << 20).unwrap();
        assert_eq!(st.entries, 2);
        parent.unmap(&cpu, fva, 4 << 20).unwrap();
        assert_eq!(parent.mm().pt_pages(), 1, "emptied tables are freed at once");
        assert_eq!(parent.unmap(&cpu, anon, 4 << 20), Err(MapError::NotMapped(anon)));
        let st = child.destroy(&cpu);
        assert_eq!(st.entries, 1 + 512 + 1 + 1);
        parent.destroy(&cpu);
        assert_eq!(counts(&af0), (1, 0));
        assert_eq!(counts(&af9), (1, 0));
        assert_eq!(af0.mapping(), 0, "an unmapped anon folio leaves its anon_vma");
        assert_eq!(counts(&ff0), (2, 0));
        assert_eq!(counts(&ff9), (2, 0));
        for f in [af0, af9, ff0, ff9] {
            let last = f.mapping() == 0;
            assert_eq!(m.folio_put(&cpu, f), Ok(last));
        }
        file.destroy(&cpu);
        assert_all_back(&m, &cpu, base);
    }
}

#[test]
fn entries_hold_the_last_reference() {
    let m = machine(MemmapLayout::Flat);
    let cpu = m.cpus().claim(0).unwrap();
    let mms = m.mm_caches(&cpu).unwrap();
    let base = settled_free_pages(&m, &cpu);
    let mm = mms.mm_create(&cpu, MmKind::User).unwrap();
    mm.mmap_anon(&cpu, 0x10_0000, 1 << 20).unwrap();
    let f = m.folio_alloc(&cpu, 3, Gfp::MOVABLE, FolioKind::Anon).unwrap();
    mm.map_folio(&cpu, 0x10_0000, &f).unwrap();
    let pfn = f.flags.pfn();
    assert_eq!(m.folio_put(&cpu, f), Ok(false), "the entries still hold it");
    assert_eq!(counts(folio_at(&m, pfn)), (8, 8));
    mm.unmap(&cpu, 0x10_0000, 1 << 20).unwrap();
    // The last entry's reference freed it.
    assert!(!matches!(m.memmap().load(m.platform(), pfn).unwrap().word.kind(), PageKind::AnonFolio(_)));
    mm.destroy(&cpu);
    assert_all_back(&m, &cpu, base);
}

#[test]
fn folio_straddling_two_pte_tables() {
    let m = machine(MemmapLayout::Flat);
    let cpu = m.cpus().claim(0).unwrap();
    let mms = m.mm_caches(&cpu).unwrap();
    let base = settled_free_pages(&m, &cpu);
    let mm = mms.mm_create(&cpu, MmKind::User).unwrap();
    let start = 0x4000_0000u64;
    mm.mmap_anon(&cpu, start, 4 << 20).unwrap();
    let f = m.folio_alloc(&cpu, 2, Gfp::MOVABLE, FolioKind::Anon).unwrap();
    let va = start + PMD_SIZE - 2 * PAGE;
    mm.map_folio(&cpu, va, &f).unwrap();
    assert_eq!(f.counts.mapcount(), 4);
    assert_eq!(mm.mm().pt_pages(), 5, "PGD, PUD, PMD and two PTE tables");
    for i in 0..4 {
        assert_eq!(mm.translate(va + i * PAGE).unwrap().0.pfn(), f.flags.pfn().add(i));
    }
    assert_eq!(walk(&m, &f).len(), 4);
    // Mapping it again, or anything over it, is refused without change.
    assert_eq!(mm.map_folio(&cpu, va, &f), Err(MapError::AlreadyMapped(va)));
    let g = m.folio_alloc(&cpu, 0, Gfp::MOVABLE, FolioKind::Anon).unwrap();
    assert_eq!(mm.map_folio(&cpu, va + PAGE, &g), Err(MapError::AlreadyMapped(va + PAGE)));
    assert_eq!(counts(&g), (1, 0));
    assert_eq!(mm.mm().pt_pages(), 5);
    // The anon folio is bound to its address: elsewhere in the VMA it is refused.
    assert!(matches!(mm.map_folio(&cpu, start, &f), Err(MapError::WrongOffset { .. })));
    // Unmap the second table's half: that table goes.
    mm.unmap(&cpu, start + PMD_SIZE, 2 * PAGE).unwrap();
    assert_eq!(f.counts.mapcount(), 2);
    assert_eq!(mm.mm().pt_pages(), 4);
    mm.unmap(&cpu, va, 2 * PAGE).unwrap();
    assert_eq!(mm.mm().pt_pages(), 1);
    assert_eq!(counts(&f), (1, 0));
    assert_eq!(m.folio_put(&cpu, f), Ok(true));
    assert_eq!(m.folio_put(&cpu, g), Ok(true));
    mm.destroy(&cpu);
    assert_all_back(&m, &cpu, base);
}

#[test]
fn bad_addresses_and_vmas_are_refused() {
    let m = machine(MemmapLayout::Flat);
    let cpu = m.cpus().claim(0).unwrap();
    let mms = m.mm_caches(&cpu).unwrap();
    let mm = mms.mm_create(&cpu, MmKind::User).unwrap();
    let f = m.folio_alloc(&cpu, 0, Gfp::MOVABLE, FolioKind::Anon).unwrap();
    assert_eq!(mm.map_folio(&cpu, 0x1000, &f), Err(MapError::NoVma(0x1000)));
    assert_eq!(mm.mmap_anon(&cpu, 0x1001, 4096), Err(MapError::Misaligned(0x1001)));
    assert_eq!(mm.mmap_anon(&cpu, 1 << 47, 4096), Err(MapError::OutOfRange(1 << 47)));
    assert_eq!(mm.mmap_anon(&cpu, 0x1000, 0), Err(MapError::OutOfRange(0x1000)));
    mm.mmap_anon(&cpu, 0x10000, 0x10000).unwrap();
    assert_eq!(mm.mmap_anon(&cpu, 0x8000, 0x10000), Err(MapError::Overlap(0x10000)));
    assert_eq!(mm.map_folio(&cpu, 0x1f000, &f), Ok(()));
    let big = m.folio_alloc(&cpu, 2, Gfp::MOVABLE, FolioKind::Anon).unwrap();
    assert_eq!(mm.map_folio(&cpu, 0x1e000, &big), Err(MapError::NoVma(0x1e000)), "past the VMA's end");
    assert_eq!(mm.map_folio_pmd(&cpu, 0x10000, &big), Err(MapError::NotPmdSized));
    assert_eq!(mm.split_pmd(0x10000), Err(MapError::Misaligned(0x10000)));
    assert_eq!(mm.munmap(&cpu, 0x12000), Err(MapError::NoVma(0x12000)));
    let file = m.address_space_create(&cpu).unwrap();
    assert_eq!(mm.mmap_file(&cpu, 0x100_0000, 0x2000, file.space(), u64::MAX), Err(MapError::OutOfRange(0x100_0000)));
    // A file folio not cached in the VMA's file is refused.
    let ff = m.folio_alloc(&cpu, 0, Gfp::MOVABLE, FolioKind::File).unwrap();
    mm.mmap_file(&cpu, 0x100_0000, 0x2000, file.space(), 0).unwrap();
    assert_eq!(mm.map_folio(&cpu, 0x100_0000, &ff), Err(MapError::WrongMapping));
    file.insert(&cpu, &ff, 1).unwrap();
    assert_eq!(
        mm.map_folio(&cpu, 0x100_0000, &ff),
        Err(MapError::WrongOffset { va: 0x100_0000, expected: 0x100_1000 })
    );
    mm.map_folio(&cpu, 0x100_1000, &ff).unwrap();
    mm.munmap(&cpu, 0x100_0000).unwrap();
    m.folio_put(&cpu, ff).unwrap();
    file.destroy(&cpu);
    let st = mm.munmap(&cpu, 0x10000).unwrap();
    assert_eq!(st.entries, 1);
    assert_eq!(counts(&f), (1, 0));
    m.folio_put(&cpu, f).unwrap();
    m.folio_put(&cpu, big).unwrap();
    mm.destroy(&cpu);
}

#[test]
fn unmappable_memory_is_refused_by_kind() {
    let m = machine(MemmapLayout::Flat);
    let cpu = m.cpus().claim(0).unwrap();
    let mms = m.mm_caches(&cpu).unwrap();
    let base = settled_free_pages(&m, &cpu);
    let mm = mms.mm_create(&cpu, MmKind::User).unwrap();
    let va = 0x20_0000u64;
    mm.mmap_pfn(&cpu, va, 1 << 20).unwrap();
    let refused = |pfn: Pfn| match mm.map_pfn(&cpu, va, pfn) {
        Err(MapError::Unmappable { pfn: p, kind }) => {
            assert_eq!(p, pfn);
            kind
        }
        r => panic!("pfn {:#x} was not refused: {r:?}", pfn.0),
    };
    // A slab page (kmalloc).
    let obj = m.kmalloc_raw(&cpu, 64, Gfp::KERNEL).unwrap();
    let slab_pfn = m.platform().virt_to_pfn(obj).unwrap();
    assert_eq!(refused(slab_pfn), UnmappableKind::Slab);
    // One of the mm's own page-table pages.
    assert_eq!(refused(mm.mm().pgd()), UnmappableKind::PageTable);
    // Raw page-allocator memory, head and tail.
    let raw = m.alloc_pages_raw(&cpu, 1, Gfp::KERNEL).unwrap();
    assert_eq!(refused(raw), UnmappableKind::Undescribed(Subtype::Unmappable));
    assert_eq!(refused(raw.add(1)), UnmappableKind::Undescribed(Subtype::Tail));
    // Free memory.
    let freed = m.alloc_pages_raw(&cpu, 0, Gfp::KERNEL).unwrap();
    free_raw(&m, &cpu, freed, 0).unwrap();
    m.drain_all_from(&cpu);
    assert_eq!(refused(freed), UnmappableKind::Free);
    // Reserved memory, and a pfn with no word at all.
    let mut reserved = None;
    m.memmap().walk(m.platform(), Pfn(0), Pfn(1 << 18), |v| {
        if reserved.is_none() {
            if let PageKind::Undescribed(u) = v.word.kind() {
                if u.subtype == Subtype::Reserved {
                    reserved = Some(v.first);
                }
            }
        }
    });
    let reserved = reserved.expect("the boot allocator reserves the memmap");
    assert_eq!(refused(reserved), UnmappableKind::Undescribed(Subtype::Reserved));
    assert_eq!(refused(Pfn(0xa0)), UnmappableKind::NoPage, "the PC hole has no memmap");
    // A folio in a pfn VMA, and driver memory in an anon VMA.
    let f = m.folio_alloc(&cpu, 0, Gfp::MOVABLE, FolioKind::Anon).unwrap();
    assert_eq!(refused(f.flags.pfn()), UnmappableKind::WrongVma(Tag::AnonFolio));
    mm.mmap_anon(&cpu, 0x100_0000, 1 << 20).unwrap();
    let d = m.mappable_alloc(&cpu, 0, Gfp::KERNEL, 0).unwrap().into_raw();
    assert_eq!(
        mm.map_mappable(&cpu, 0x100_0000, d),
        Err(MapError::Unmappable { pfn: d.flags.pfn(), kind: UnmappableKind::WrongVma(Tag::Mappable) })
    );
    // Nothing was mapped, no count moved, and every table allocated on the way is gone.
    assert_eq!(mm.mm().pt_pages(), 1);
    assert_eq!(counts(&f), (1, 0));
    m.folio_put(&cpu, f).unwrap();
    assert_eq!(mappable_put(&m, &cpu, d), Ok(true));
    kfree_raw(&m, &cpu, obj).unwrap();
    free_raw(&m, &cpu, raw, 1).unwrap();
    mm.destroy(&cpu);
    assert_all_back(&m, &cpu, base);
}

#[test]
fn mappable_driver_memory() {
    use memdesc::mm::mappable::MappableError;
    for layout in [MemmapLayout::Flat, MemmapLayout::TwoLevel] {
        let m = machine(layout);
        let cpu = m.cpus().claim(0).unwrap();
        let mms = m.mm_caches(&cpu).unwrap();
        let base = settled_free_pages(&m, &cpu);
        let mm = mms.mm_create(&cpu, MmKind::User).unwrap();
        let va = 0x4000_0000u64;
        mm.mmap_pfn(&cpu, va, 8 << 20).unwrap();
        let owner = 0xdead_0000usize;
        let mut descs: Vec<&MappableDesc> = Vec::new();
        for order in [0, 3, 9] {
            let d = m.mappable_alloc(&cpu, order, Gfp::KERNEL, owner).unwrap().into_raw();
            assert_eq!(d.owner(), owner);
            for i in 0..1u64 << order {
                match m.memmap().load(m.platform(), d.flags.pfn().add(i)).unwrap().word.kind() {
                    PageKind::Mappable(p) => assert_eq!(p.addr(), d as *const MappableDesc as usize),
                    k => panic!("{k:?}"),
                }
            }
            descs.push(d);
        }
        mm.map_mappable(&cpu, va, descs[0]).unwrap();
        mm.map_mappable(&cpu, va + (1 << 20), descs[1]).unwrap();
        mm.map_mappable(&cpu, va + (2 << 20), descs[2]).unwrap();
        // The generic path: one page of the order-3 block, by pfn, elsewhere.
        mm.map_pfn(&cpu, va + (6 << 20), descs[1].flags.pfn().add(5)).unwrap();
        assert_eq!(mm.translate(va + (6 << 20)).unwrap().0.pfn(), descs[1].flags.pfn().add(5));
        assert_eq!((descs[0].counts.refcount(), descs[0].counts.mapcount()), (2, 1));
        assert_eq!((descs[1].counts.refcount(), descs[1].counts.mapcount()), (10, 9));
        assert_eq!((descs[2].counts.refcount(), descs[2].counts.mapcount()), (513, 512));
        // The driver drops its references: the mappings keep the memory alive.
        for d in &descs {
            assert_eq!(mappable_put(&m, &cpu, d), Ok(false));
        }
        let _ = m.mappable_get(descs[0]).unwrap().into_raw();
        assert_eq!(mappable_put(&m, &cpu, descs[0]), Ok(false));
        // Unmapping drops the last references and frees the memory.
        mm.unmap(&cpu, va, 8 << 20).unwrap();
        for d in &descs {
            assert_eq!(mappable_put(&m, &cpu, d), Err(MappableError::NoReference));
            assert_eq!(m.mappable_get(d), Err(MappableError::NoReference));
        }
        mm.destroy(&cpu);
        assert_all_back(&m, &cpu, base);
    }
}

#[test]
fn kernel_address_space() {
    let m = machine(MemmapLayout::Flat);
    let cpu = m.cpus().claim(0).unwrap();
    let mms = m.mm_caches(&cpu).unwrap();
    let base = settled_free_pages(&m, &cpu);
    let k = mms.mm_create(&cpu, MmKind::Kernel).unwrap();
    assert_eq!(k.mmap_anon(&cpu, 0x1000, 4096), Err(MapError::OutOfRange(0x1000)));
    let va = KERNEL_START + (1 << 30);
    k.mmap_pfn(&cpu, va, 1 << 20).unwrap();
    let d = m.mappable_alloc(&cpu, 1, Gfp::KERNEL, 0).unwrap().into_raw();
    k.map_mappable(&cpu, va, d).unwrap();
    let (e, _) = k.translate(va + PAGE).unwrap();
    assert_eq!(e.pfn(), d.flags.pfn().add(1));
    assert_eq!(e.0 & PTE_USER, 0, "kernel entries are not user-accessible");
    k.mmap_anon(&cpu, va + (2 << 20), 2 << 20).unwrap();
    let f = m.folio_alloc(&cpu, 9, Gfp::MOVABLE, FolioKind::Anon).unwrap();
    k.map_folio_pmd(&cpu, va + (2 << 20), &f).unwrap();
    assert!(k.translate(va + (3 << 20)).unwrap().1);
    assert_eq!(walk(&m, &f).len(), 1);
    k.destroy(&cpu);
    assert_eq!(counts(&f), (1, 0));
    m.folio_put(&cpu, f).unwrap();
    assert_eq!(mappable_put(&m, &cpu, d), Ok(true));
    assert_all_back(&m, &cpu, base);
}

#[test]
fn splitting_a_mapped_folio_distributes_mapcounts() {
    let m = machine(MemmapLayout::Flat);
    let cpu = m.cpus().claim(0).unwrap();
    let mms = m.mm_caches(&cpu).unwrap();
    let base = settled_free_pages(&m, &cpu);
    let a = mms.mm_create(&cpu, MmKind::User).unwrap();
    let start = 0x4000_0000u64;
    a.mmap_anon(&cpu, start, 4 << 20).unwrap();
    let f = m.folio_alloc(&cpu, 9, Gfp::MOVABLE, FolioKind::Anon).unwrap();
    a.map_folio_pmd(&cpu, start, &f).unwrap();
    let b = a.fork(&cpu).unwrap();
    // B unmaps half of it (its PMD is split on the way).
    b.unmap(&cpu, start + (1 << 20), 1 << 20).unwrap();
    assert_eq!(counts(&f), (1 + 1 + 256, 1 + 256));
    let pfn = f.flags.pfn();
    let mut pieces = vec![];
    assert!(m.folio_trylock(&f));
    m.folio_split(&cpu, &f, 0, |p| pieces.push(p)).unwrap();
    m.folio_unlock(&f);
    assert_eq!(pieces.len(), 511);
    pieces.push(f);
    for i in 0..512u64 {
        let p = folio_at(&m, pfn.add(i));
        let want = if i < 256 { 2 } else { 1 };
        assert_eq!(counts(p), (1 + want, want), "page {i}");
        assert_eq!(p.flags.order(), 0);
        assert_eq!(walk(&m, p).len() as u32, want);
    }
    assert!(!a.translate(start).unwrap().1, "A's PMD was split for the folio split");
    a.destroy(&cpu);
    b.destroy(&cpu);
    for p in pieces {
        assert_eq!(counts(&p), (1, 0));
        assert_eq!(m.folio_put(&cpu, p), Ok(true));
    }
    assert_all_back(&m, &cpu, base);
}

#[test]
fn mapcount_limit_splits_or_refuses() {
    // Limit 5: an order-2 folio mapped once (4) cannot be shared by fork (8): the fork
    // splits it into order-0 folios, each then mapped twice.
    let m = machine_with(MemmapLayout::Flat, 5);
    let cpu = m.cpus().claim(0).unwrap();
    let mms = m.mm_caches(&cpu).unwrap();
    let base = settled_free_pages(&m, &cpu);
    let a = mms.mm_create(&cpu, MmKind::User).unwrap();
    let start = 0x4000_0000u64;
    a.mmap_anon(&cpu, start, 1 << 20).unwrap();
    let f = m.folio_alloc(&cpu, 2, Gfp::MOVABLE, FolioKind::Anon).unwrap();
    let pfn = f.flags.pfn();
    a.map_folio(&cpu, start, &f).unwrap();
    assert_eq!(counts(&f), (5, 4));
    // The fork's split freezes at its own reference and the entries': ours would block it.
    assert_eq!(m.folio_put(&cpu, f), Ok(false), "the entries hold it");
    let b = a.fork(&cpu).unwrap();
    for i in 0..4 {
        let p = folio_at(&m, pfn.add(i));
        assert_eq!(p.flags.order(), 0);
        assert_eq!(counts(p), (2, 2), "two entries");
    }
    // Three more forks reach 5; the next is refused at order 0 and leaves nothing behind.
    let mut kids = vec![b];
    for _ in 0..3 {
        kids.push(a.fork(&cpu).unwrap());
    }
    assert_eq!(folio_at(&m, pfn).counts.mapcount(), 5);
    let pt = settled_free_pages(&m, &cpu);
    assert_eq!(a.fork(&cpu).err(), Some(MapError::MapcountLimit(5)));
    assert_eq!(settled_free_pages(&m, &cpu), pt, "the failed child is gone");
    assert_eq!(folio_at(&m, pfn).counts.mapcount(), 5);
    for k in kids {
        k.destroy(&cpu);
    }
    a.destroy(&cpu);
    for i in 0..4 {
        assert!(m.folio_try_get(&cpu, pfn.add(i)).is_none(), "the last unmap freed piece {i}");
    }

    // Limit 3: mapping an order-2 folio (4 entries) splits it at once.
    let m2 = machine_with(MemmapLayout::Flat, 3);
    let cpu2 = m2.cpus().claim(0).unwrap();
    let mms2 = m2.mm_caches(&cpu2).unwrap();
    let a = mms2.mm_create(&cpu2, MmKind::User).unwrap();
    a.mmap_anon(&cpu2, start, 1 << 20).unwrap();
    let f = m2.folio_alloc(&cpu2, 2, Gfp::MOVABLE, FolioKind::Anon).unwrap();
    let pfn = f.flags.pfn();
    a.map_folio(&cpu2, start, &f).unwrap();
    for i in 0..4 {
        let p = folio_at(&m2, pfn.add(i));
        // The caller's reference stays with the first piece.
        let want = if i == 0 { 2 } else { 1 };
        assert_eq!((p.flags.order(), counts(p)), (0, (want, 1)));
        assert_eq!(a.translate(start + i * PAGE).unwrap().0.pfn(), pfn.add(i));
    }
    a.destroy(&cpu2);
    assert_eq!(m2.folio_put(&cpu2, f), Ok(true));
    drop(cpu);
    let cpu = m.cpus().claim(0).unwrap();
    assert_all_back(&m, &cpu, base);
}

// ---- property test -------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    /// Map the folio now at page `k` of pool folio `f` into mm `mm`, at its fixed address
    /// (PMD for an unsplit 2 MiB folio, PTEs otherwise).
    Map { mm: usize, f: usize, k: u64 },
    /// Unmap pages `[first, first + n)` of the file (`anon == false`) or anon VMA of mm `mm`.
    Unmap { mm: usize, anon: bool, first: u64, n: u64 },
    /// Split the PMD at slot `slot` of the file or anon VMA of mm `mm`.
    SplitPmd { mm: usize, anon: bool, slot: u64 },
    /// Split the anon folio now at the first page of pool folio `f` to order 0 (mapped or not).
    SplitFolio { f: usize },
    /// Fork mm `mm` into a free slot.
    Fork { mm: usize },
    /// Destroy mm `mm` (not the root).
    Destroy { mm: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..3usize, 0..POOL.len(), 0..512u64).prop_map(|(mm, f, k)| Op::Map { mm, f, k }),
        3 => (0..3usize, any::<bool>(), 0..2560u64, 1..700u64)
            .prop_map(|(mm, anon, first, n)| Op::Unmap { mm, anon, first, n }),
        2 => (0..3usize, any::<bool>(), 0..5u64).prop_map(|(mm, anon, slot)| Op::SplitPmd { mm, anon, slot }),
        1 => (0..POOL.len()).prop_map(|f| Op::SplitFolio { f }),
        1 => (0..3usize).prop_map(|mm| Op::Fork { mm }),
        1 => (1..3usize).prop_map(|mm| Op::Destroy { mm }),
    ]
}

/// The model: per mm, virtual page → (pfn it maps, part of a PMD mapping?).
type Model = BTreeMap<u64, (u64, bool)>;

const FILE_VMA: u64 = 0x4000_0000;
const ANON_VMA: u64 = 0x8000_0000;
const VMA_PAGES: u64 = 2560;

/// Pool: (anon?, order, page offset in its VMA = file index for file folios). File folios may
/// be mapped by any mm; anon folios too, because every mm descends from the root by fork and
/// shares its anon_vma, and each anon folio has one fixed address.
const POOL: [(bool, u32, u64); 10] = [
    (false, 0, 5),
    (false, 0, 700),
    (false, 2, 8),
    (false, 3, 1016),
    (false, 9, 1536),
    (false, 9, 2048),
    (true, 0, 3),
    (true, 2, 1020),
    (true, 9, 512),
    (true, 9, 2048),
];

fn vma_base(anon: bool) -> u64 {
    if anon {
        ANON_VMA
    } else {
        FILE_VMA
    }
}

fn run_ops(ops: Vec<Op>) {
    let m = machine(MemmapLayout::Flat);
    let cpu = m.cpus().claim(0).unwrap();
    let mms_c = m.mm_caches(&cpu).unwrap();
    let base = settled_free_pages(&m, &cpu);
    let file = m.address_space_create(&cpu).unwrap();
    // First pfn of each pool folio (pieces of split anon folios are found from it).
    let pfns: Vec<Pfn> = POOL
        .iter()
        .map(|&(anon, order, off)| {
            // The test keeps one reference on every pool folio (and piece) raw, by pfn.
            if anon {
                m.folio_alloc(&cpu, order, Gfp::MOVABLE, FolioKind::Anon).unwrap().into_raw().flags.pfn()
            } else {
                let f = m.folio_alloc(&cpu, order, Gfp::MOVABLE, FolioKind::File).unwrap();
                file.insert(&cpu, &f, off).unwrap();
                f.into_raw().flags.pfn()
            }
        })
        .collect();
    // Every folio now covering a pool folio's pages, with its pool entry.
    let current = || {
        let mut v: Vec<(&Folio, usize)> = Vec::new();
        for (i, &(_, order, _)) in POOL.iter().enumerate() {
            let mut p = 0u64;
            while p < 1 << order {
                let f = folio_at(&m, pfns[i].add(p));
                v.push((f, i));
                p += 1 << f.flags.order();
            }
        }
        v
    };
    let new_mm = || {
        let mm = mms_c.mm_create(&cpu, MmKind::User).unwrap();
        mm.mmap_file(&cpu, FILE_VMA, VMA_PAGES * PAGE, file.space(), 0).unwrap();
        mm.mmap_anon(&cpu, ANON_VMA, VMA_PAGES * PAGE).unwrap();
        mm
    };
    let mut mms: Vec<Option<MmRef<'_, SimPlatform>>> = vec![Some(new_mm()), None, None];
    let mut model: Vec<Model> = vec![Model::new(), Model::new(), Model::new()];
    for op in ops {
        match op {
            Op::Map { mm, f, k } => {
                let Some(r) = &mms[mm] else { continue };
                let (anon, order, off) = POOL[f];
                // SAFETY: the test holds a reference on every piece of a pool folio.
                let piece = unsafe { lent(&m, pfns[f].add(k % (1 << order))) };
                let (ppfn, porder) = (piece.flags.pfn(), piece.flags.order());
                let vpage = (vma_base(anon) >> 12) + off + (ppfn.0 - pfns[f].0);
                let free = (0..1u64 << porder).all(|i| !model[mm].contains_key(&(vpage + i)));
                let huge = porder == 9;
                let va = vpage << 12;
                let res = if huge { r.map_folio_pmd(&cpu, va, &piece) } else { r.map_folio(&cpu, va, &piece) };
                assert_eq!(res.is_ok(), free, "{op:?}: {res:?}");
                if free {
                    for i in 0..1u64 << porder {
                        model[mm].insert(vpage + i, (ppfn.0 + i, huge));
                    }
                }
            }
            Op::Unmap { mm, anon, first, n } => {
                let Some(r) = &mms[mm] else { continue };
                let n = n.min(VMA_PAGES - first);
                let (s, e) = ((vma_base(anon) >> 12) + first, (vma_base(anon) >> 12) + first + n);
                let had = model[mm].range(s..e).count();
                let res = r.unmap(&cpu, s << 12, n * PAGE);
                assert_eq!(res.is_ok(), had > 0, "{op:?}: {res:?}");
                // Huge mappings cut by the range become PTEs.
                let cut: Vec<u64> = model[mm]
                    .iter()
                    .filter(|(&p, &(_, h))| h && (p < s || p >= e) && (p & !511) < e && s < (p & !511) + 512)
                    .map(|(&p, _)| p)
                    .collect();
                for p in cut {
                    model[mm].get_mut(&p).unwrap().1 = false;
                }
                for p in s..e {
                    model[mm].remove(&p);
                }
            }
            Op::SplitPmd { mm, anon, slot } => {
                let Some(r) = &mms[mm] else { continue };
                let p = (vma_base(anon) >> 12) + slot * 512;
                let huge = model[mm].get(&p).is_some_and(|&(_, h)| h);
                let res = r.split_pmd(p << 12);
                assert_eq!(res.is_ok(), huge, "{op:?}: {res:?}");
                if huge {
                    for i in 0..512 {
                        model[mm].get_mut(&(p + i)).unwrap().1 = false;
                    }
                }
            }
            Op::SplitFolio { f } => {
                let (anon, order, _) = POOL[f];
                if !anon || order == 0 {
                    continue;
                }
                // SAFETY: as above.
                let piece = unsafe { lent(&m, pfns[f]) };
                let (p0, n) = (piece.flags.pfn().0, 1u64 << piece.flags.order());
                assert!(m.folio_trylock(&piece));
                // The test's reference on each new piece is kept raw like the others.
                let res = m.folio_split(&cpu, &piece, 0, |p| {
                    let _ = p.into_raw();
                });
                m.folio_unlock(&piece);
                assert_eq!(res.is_ok(), n > 1, "{op:?}: {res:?}");
                // Its PMD mappings were split to PTEs.
                for md in model.iter_mut() {
                    for (_, (pfn, h)) in md.iter_mut() {
                        if (p0..p0 + n).contains(pfn) {
                            *h = false;
                        }
                    }
                }
            }
            Op::Fork { mm } => {
                let Some(slot) = mms.iter().position(|x| x.is_none()) else { continue };
                let Some(r) = &mms[mm] else { continue };
                let child = r.fork(&cpu).unwrap();
                mms[slot] = Some(child);
                model[slot] = model[mm].clone();
            }
            Op::Destroy { mm } => {
                if let Some(r) = mms[mm].take() {
                    r.destroy(&cpu);
                    model[mm].clear();
                }
            }
        }
        // Mapcounts: one per PTE, one per PMD mapping (counted at its head page); one
        // reference per entry besides the caller's (and the page cache's).
        for (folio, i) in current() {
            let (p0, n) = (folio.flags.pfn().0, 1u64 << folio.flags.order());
            let mut want = 0u32;
            for md in &model {
                for &(pfn, h) in md.values() {
                    if (!h && (p0..p0 + n).contains(&pfn)) || (h && pfn == p0) {
                        want += 1;
                    }
                }
            }
            let other = if POOL[i].0 { 1 } else { 2 };
            assert_eq!(counts(folio), (other + want, want), "pool folio {i} piece at {p0:#x}");
            assert_eq!(m.rmap_walk(&cpu, folio, |_, _, _| ()), want);
        }
    }
    for r in mms.into_iter().flatten() {
        r.destroy(&cpu);
    }
    for (f, i) in current() {
        let other = if POOL[i].0 { 1 } else { 2 };
        assert_eq!(counts(f), (other, 0));
        // SAFETY: the test's reference on this piece, given up.
        unsafe { put_held(&m, &cpu, f.flags.pfn()) }.unwrap();
    }
    file.destroy(&cpu);
    assert_all_back(&m, &cpu, base);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn random_map_unmap_split_fork_match_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        run_ops(ops);
    }
}

#[test]
fn rmap_walk_races_fork_teardown_and_anon_vma_reuse() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let m = machine(MemmapLayout::Flat);
    let cpu = m.cpus().claim(0).unwrap();
    let mms = m.mm_caches(&cpu).unwrap();
    let base = settled_free_pages(&m, &cpu);
    let f = m.folio_alloc(&cpu, 1, Gfp::MOVABLE, FolioKind::Anon).unwrap();
    let pfn = f.flags.pfn();
    let (stop, walking) = (AtomicBool::new(false), AtomicBool::new(false));
    let walks = std::thread::scope(|s| {
        let walker = s.spawn(|| {
            let cpu1 = m.cpus().claim(1).unwrap();
            let (mut walks, mut found) = (0u64, 0u64);
            while walks == 0 || !stop.load(Ordering::Relaxed) {
                let n = m.rmap_walk(&cpu1, &f, |_, _, e| {
                    assert!(e.pfn() == pfn || e.pfn() == pfn.add(1), "an entry of another folio");
                });
                assert!(n <= 4, "at most two mms map it, two pages each");
                walks += 1;
                found += n as u64;
                walking.store(true, Ordering::Relaxed);
            }
            (walks, found)
        });
        // The rounds start once the walker walks (a loaded host could otherwise run all of
        // them before its first walk).
        while !walking.load(Ordering::Relaxed) {
            std::hint::spin_loop();
        }
        // Every round frees the anon_vma (TYPESAFE_BY_RCU) and the next reuses it, at another
        // address each time, while the walker chases the folio's mapping.
        for i in 0..300u64 {
            let mm = mms.mm_create(&cpu, MmKind::User).unwrap();
            mm.mmap_anon(&cpu, 0x10_0000, 1 << 20).unwrap();
            mm.map_folio(&cpu, 0x10_0000 + (i % 16) * PAGE, &f).unwrap();
            let child = mm.fork(&cpu).unwrap();
            if i % 2 == 0 {
                child.unmap(&cpu, 0x10_0000, 1 << 20).unwrap();
            }
            child.destroy(&cpu);
            mm.destroy(&cpu);
        }
        stop.store(true, Ordering::Relaxed);
        walker.join().unwrap()
    });
    assert!(walks.0 > 0);
    assert_eq!(counts(&f), (1, 0));
    m.folio_put(&cpu, f).unwrap();
    assert_all_back(&m, &cpu, base);
}

#[test]
fn two_level_large_folios_split_with_a_table_from_elsewhere() {
    let m = machine(MemmapLayout::TwoLevel);
    let cpu = m.cpus().claim(0).unwrap();
    let mms = m.mm_caches(&cpu).unwrap();
    let base = settled_free_pages(&m, &cpu);
    let areas0 = m.memmap().split_areas();
    for order in [9u32, 10] {
        let f = m.folio_alloc(&cpu, order, Gfp::MOVABLE, FolioKind::Anon).unwrap();
        let pfn = f.flags.pfn();
        let n = 1u64 << order;
        assert_eq!(m.memmap().load(m.platform(), pfn.add(3)).unwrap().span_order, 9, "one area word");
        let a = mms.mm_create(&cpu, MmKind::User).unwrap();
        a.mmap_anon(&cpu, 0x4000_0000, 4 << 20).unwrap();
        if order == 9 {
            a.map_folio_pmd(&cpu, 0x4000_0000, &f).unwrap();
        } else {
            a.map_folio(&cpu, 0x4000_0000, &f).unwrap();
        }
        let b = a.fork(&cpu).unwrap();
        let before = m.memmap().split_areas();
        let mut pieces = vec![];
        assert!(m.folio_trylock(&f));
        m.folio_split(&cpu, &f, 0, |p| pieces.push(p)).unwrap();
        m.folio_unlock(&f);
        pieces.insert(0, f);
        assert_eq!(m.memmap().split_areas(), before + (n >> 9), "each area got a table");
        for i in 0..n {
            let v = m.memmap().load(m.platform(), pfn.add(i)).unwrap();
            assert_eq!(v.span_order, 0, "per-page words now");
            let p = folio_at(&m, pfn.add(i));
            assert_eq!((p.flags.order(), p.flags.pfn()), (0, pfn.add(i)));
            assert_eq!(counts(p), (3, 2), "caller + one entry in each mm");
            assert_eq!(p.index(), (0x4000_0000 >> 12) + i);
        }
        assert!(!a.translate(0x4000_0000).unwrap().1, "PMD split for the folio split");
        a.destroy(&cpu);
        b.destroy(&cpu);
        for p in pieces {
            assert_eq!(m.folio_put(&cpu, p), Ok(true));
        }
        m.drain_all_from(&cpu);
        // Every page of the areas is free again: each is whole, and its table page freed.
        for a in 0..n >> 9 {
            let v = m.memmap().load(m.platform(), pfn.add(a << 9)).unwrap();
            assert!(v.span_order >= 9, "area {a} is uniform again: {:?}", v.word);
        }
    }
    assert_eq!(m.memmap().split_areas(), areas0);
    assert_all_back(&m, &cpu, base);
}

#[test]
fn racing_first_mappings_into_unrelated_anon_vmas_have_one_winner() {
    let m = machine(MemmapLayout::Flat);
    let cpu = m.cpus().claim(0).unwrap();
    let mms = m.mm_caches(&cpu).unwrap();
    let base = settled_free_pages(&m, &cpu);
    let va = 0x4000_0000u64;
    let a = mms.mm_create(&cpu, MmKind::User).unwrap();
    let b = mms.mm_create(&cpu, MmKind::User).unwrap();
    a.mmap_anon(&cpu, va, 1 << 20).unwrap();
    b.mmap_anon(&cpu, va, 1 << 20).unwrap();
    for _ in 0..200 {
        let f = m.folio_alloc(&cpu, 0, Gfp::MOVABLE, FolioKind::Anon).unwrap();
        let (ra, rb) = std::thread::scope(|s| {
            let h = s.spawn(|| {
                let c1 = m.cpus().claim(1).unwrap();
                b.map_folio(&c1, va, &f)
            });
            let ra = a.map_folio(&cpu, va, &f);
            (ra, h.join().unwrap())
        });
        assert!(ra.is_ok() != rb.is_ok(), "exactly one wins: {ra:?} {rb:?}");
        assert_eq!(ra.err().or(rb.err()), Some(MapError::WrongMapping));
        assert_eq!(counts(&f), (2, 1));
        assert_eq!(walk(&m, &f).len(), 1);
        let winner = if ra.is_ok() { &a } else { &b };
        winner.unmap(&cpu, va, PAGE).unwrap();
        assert_eq!(m.folio_put(&cpu, f), Ok(true));
    }
    a.destroy(&cpu);
    b.destroy(&cpu);
    assert_all_back(&m, &cpu, base);
}
