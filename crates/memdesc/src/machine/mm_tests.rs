//! Unit tests of the address-space layer (mappability, rmap, entry encoding) on a booted
//! machine (here, in the machine layer, because they need one: `test_machine`).

use crate::addr::Pfn;
use crate::cpu::Cpu;
use crate::desc::{DescPtr, VmallocDesc};
use crate::folio::FolioKind;
use crate::gfp::Gfp;
use crate::layout::MemmapLayout;
use crate::machine::test_machine::{self, Buf};
use crate::pgtable::*;
use crate::sync::Ordering;
use crate::word::{Tag, Word};
use crate::PhysMem;
use std::boxed::Box;

/// 16 MiB of host memory as a one-region machine.
fn machine() -> &'static PhysMem<Buf> {
    Box::leak(Box::new(test_machine::machine(4096, MemmapLayout::Flat)))
}

/// A raw page described as vmalloc memory of the given variant, as vmalloc stamps it.
fn vmalloc_page<'a>(m: &'a PhysMem<Buf>, cpu: &Cpu<'_>, mappable: bool) -> (Pfn, &'a VmallocDesc) {
    let pfn = m.pages().alloc_internal(cpu, 0, Gfp::KERNEL).unwrap();
    let d = m.slabs().alloc_desc::<VmallocDesc>(cpu).unwrap();
    d.flags.init(0, 0, pfn);
    d.counts.mapcount.store(0, Ordering::Relaxed);
    d.counts.refcount.store(1, Ordering::Release);
    let tag = if mappable { Tag::VmallocMappable } else { Tag::VmallocUnmappable };
    m.pages().stamp_block(pfn, 0, Word::desc_as(DescPtr::from_ref(d), tag).unwrap());
    (pfn, d)
}

fn free_vmalloc_page(m: &PhysMem<Buf>, cpu: &Cpu<'_>, pfn: Pfn, d: &VmallocDesc) {
    assert_eq!(d.counts.refcount(), 1);
    m.pages().stamp_block(pfn, 0, Word::TAIL);
    m.slabs().free_desc(cpu, d);
    let rm = m.memmap().region_map(m.memmap().region_index(pfn).unwrap());
    m.pages().free_claimed(cpu, rm, pfn, 0);
}

#[test]
fn unmappable_vmalloc_never_reaches_user_space() {
    let m = machine();
    let cpu = m.cpus().claim(0).unwrap();
    let (un, ud) = vmalloc_page(m, &cpu, false);
    let (mp, md) = vmalloc_page(m, &cpu, true);
    let mms = m.mm_caches(&cpu).unwrap();
    let user = mms.mm_create(&cpu, MmKind::User).unwrap();
    user.mmap_pfn(&cpu, 0x10_0000, 0x10_0000).unwrap();
    assert_eq!(
        user.map_pfn(&cpu, 0x10_0000, un),
        Err(MapError::Unmappable { pfn: un, kind: UnmappableKind::VmallocUnmappable })
    );
    assert_eq!(ud.counts.mapcount(), 0);
    // The mappable variant maps through the generic (offset 8/12) path.
    user.map_pfn(&cpu, 0x10_0000, mp).unwrap();
    assert_eq!((md.counts.refcount(), md.counts.mapcount()), (2, 1));
    assert_eq!(user.translate(0x10_0000).unwrap().0.pfn(), mp);
    // A kernel address space takes both.
    let kern = mms.mm_create(&cpu, MmKind::Kernel).unwrap();
    kern.mmap_pfn(&cpu, KERNEL_START, 0x10_0000).unwrap();
    kern.map_pfn(&cpu, KERNEL_START, un).unwrap();
    assert_eq!((ud.counts.refcount(), ud.counts.mapcount()), (2, 1));
    kern.destroy(&cpu);
    user.destroy(&cpu);
    assert_eq!((ud.counts.mapcount(), md.counts.mapcount()), (0, 0));
    free_vmalloc_page(m, &cpu, un, ud);
    free_vmalloc_page(m, &cpu, mp, md);
}

#[test]
fn rmap_replace_moves_every_mapping() {
    let m = machine();
    let cpu = m.cpus().claim(0).unwrap();
    let mms = m.mm_caches(&cpu).unwrap();
    let a = mms.mm_create(&cpu, MmKind::User).unwrap();
    let start = 0x40_0000u64;
    a.mmap_anon(&cpu, start, 0x40_0000).unwrap();
    let old = m.folio_alloc(&cpu, 1, Gfp::MOVABLE, FolioKind::Anon).unwrap();
    let new = m.folio_alloc(&cpu, 1, Gfp::MOVABLE, FolioKind::Anon).unwrap();
    a.map_folio(&cpu, start + 0x3000, &old).unwrap();
    let b = a.fork(&cpu).unwrap();
    assert_eq!((old.counts.refcount(), old.counts.mapcount()), (5, 4));
    assert_eq!(m.mms().rmap_replace(&cpu, &old, &new), Ok(4));
    assert_eq!((old.counts.refcount(), old.counts.mapcount()), (1, 0));
    assert_eq!((new.counts.refcount(), new.counts.mapcount()), (5, 4));
    for mm in [&a, &b] {
        assert_eq!(mm.translate(start + 0x4000).unwrap().0.pfn(), new.flags.pfn().add(1));
    }
    assert_eq!(m.rmap_walk(&cpu, &old, |_, _, _| ()), 0);
    assert_eq!(old.mapping(), 0, "an unmapped anon folio leaves its anon_vma");
    assert_eq!(m.rmap_walk(&cpu, &new, |_, _, _| ()), 4);
    // Different orders are refused.
    let small = m.folio_alloc(&cpu, 0, Gfp::MOVABLE, FolioKind::Anon).unwrap();
    assert_eq!(m.mms().rmap_replace(&cpu, &new, &small), Err(MapError::WrongMapping));
    a.destroy(&cpu);
    b.destroy(&cpu);
    for f in [old, new, small] {
        assert_eq!(m.folio_put(&cpu, f), Ok(true));
    }
}
