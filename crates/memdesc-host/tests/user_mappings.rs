//! One mappability rule (`memdesc::pgtable::mappability`) for every page that may reach user
//! space: a mappable vmalloc page and a page-pool (netmem) page are mapped into a user address
//! space through the page-table API and unmapped, with refcount and mapcount at the shared
//! offsets going up and down (and `vfree` / the last pool put refused while mapped); an
//! unmappable vmalloc page, a slab page, a page-table page and undescribed pages are each
//! refused with a precise error.

use memdesc::base::layout::{MemmapLayout, MemoryLayout};
use memdesc::memmap::desc::MapCounts;
use memdesc::memmap::word::{PageKind, Subtype, Tag};
use memdesc::page_pool::{pp_put, PagePool, PoolError, PoolParams};
use memdesc::pgtable::{mappability, MapError, MmCaches, MmKind, MmRef, UnmappableKind};
use memdesc::vmalloc::{Mappable, Unmappable, VmallocError, VmallocSpace};
use memdesc::Cpu;
use memdesc::{Config, Gfp, Pfn, Platform, PAGE_SIZE};
use memdesc_host::{boot, SimMachine, SimPlatform};

mod common;
#[allow(unused_imports)]
use common::*;

const UVA: u64 = 0x7f00_0000_0000;

fn machine() -> SimMachine {
    boot(&MemoryLayout::pc(1, MemmapLayout::Flat), Config { nr_cpus: 1, debug_checks: true, ..Config::default() })
        .unwrap()
}

/// The refcount and mapcount of the descriptor the page's word names, read at the offsets
/// every mappable kind shares.
fn counts(m: &SimMachine, pfn: Pfn) -> (u32, u32) {
    let v = m.memmap().load(m.platform(), pfn).unwrap();
    let addr = v.word.desc_addr().unwrap();
    // SAFETY: the test holds the page (a live area or block), so its descriptor is live, and
    // every mappable descriptor keeps its MapCounts at offset 8 (asserted in desc.rs).
    let c = unsafe { &*((addr + 8) as *const MapCounts) };
    (c.refcount(), c.mapcount())
}

/// A user address space with a pfn VMA of 16 pages at `UVA`.
fn user_mm<'c>(mms: &'c MmCaches<'c, SimPlatform>, cpu: &Cpu<'_>) -> MmRef<'c, SimPlatform> {
    let u = mms.mm_create(cpu, MmKind::User).unwrap();
    u.mmap_pfn(cpu, UVA, 16 * PAGE_SIZE as u64).unwrap();
    u
}

fn refused(pfn: Pfn, kind: UnmappableKind) -> MapError {
    MapError::Unmappable { pfn, kind }
}

#[test]
fn mappable_vmalloc_page_maps_to_user_space_and_back() {
    let m = machine();
    let cpu = m.cpus().claim(0).unwrap();
    let mms = m.mm_caches(&cpu).unwrap();
    let kmm = mms.mm_create(&cpu, MmKind::Kernel).unwrap();
    let s = VmallocSpace::new(&m, &cpu, &kmm).unwrap();
    let user = user_mm(&mms, &cpu);
    let a = s.vmalloc::<Mappable>(&cpu, 2 * PAGE_SIZE, Gfp::ZERO).unwrap();
    s.write_area(&a, PAGE_SIZE, b"shared with user space").unwrap();
    let pfn = s.pfn_at(&a, 1).unwrap();
    assert_eq!(counts(&m, pfn), (2, 1), "the page's own reference and its kernel PTE");
    s.map_user(&cpu, &user, UVA, &a, 1).unwrap();
    // The token path maps the same page a second time, elsewhere.
    user.map_user_page(&cpu, UVA + 0x1000, a.user_page(&s, 1).unwrap()).unwrap();
    assert_eq!(counts(&m, pfn), (4, 3), "each user PTE holds a reference and a mapcount");
    let (e, _) = user.translate(UVA).unwrap();
    assert!(e.user() && e.pfn() == pfn);
    // SAFETY: `a` is ours; the free by address is refused while a page is mapped (what this
    // asserts), and `a` stays ours.
    assert_eq!(unsafe { s.vfree(&cpu, a.addr()) }, Err(VmallocError::Mapped { va: a.addr(), index: 1 }));
    assert_eq!(s.stats().areas, 1, "the refused vfree changed nothing");
    assert_eq!(
        s.map_user(&cpu, &user, UVA + 0x2000, &a, 2),
        Err(VmallocError::OutOfBounds { va: a.addr(), len: 3 * PAGE_SIZE })
    );
    assert_eq!(s.map_user(&cpu, &user, UVA, &a, 0), Err(VmallocError::PageTable(MapError::AlreadyMapped(UVA))));
    assert_eq!(user.unmap(&cpu, UVA, 2 * PAGE_SIZE as u64).unwrap().entries, 2);
    assert_eq!(counts(&m, pfn), (2, 1), "back to the kernel PTE alone: no user mapping is left");
    let mut b = [0u8; 6];
    s.read_area(&a, PAGE_SIZE, &mut b).unwrap();
    assert_eq!(&b, b"shared");
    let area = a.addr();
    s.vfree_area(&cpu, a).unwrap();
    assert_eq!(kmm.translate(area as u64), None);
    // A freed page is not mappable any more: the token path re-checks the word.
    assert!(matches!(user.map_pfn(&cpu, UVA, pfn), Err(MapError::Unmappable { .. })));
    user.destroy(&cpu);
    assert!(s.destroy(&cpu).is_ok());
    kmm.destroy(&cpu);
}

#[test]
fn netmem_page_maps_to_user_space_and_back() {
    let m = machine();
    let cpu = m.cpus().claim(0).unwrap();
    let mms = m.mm_caches(&cpu).unwrap();
    let user = user_mm(&mms, &cpu);
    let pool = PagePool::new(&m, &cpu, PoolParams { ring_size: 4, ..Default::default() }).unwrap();
    let n = pool.alloc(&cpu).unwrap();
    let pfn = n.pfn();
    assert_eq!(mappability(m.memmap().load(m.platform(), pfn).unwrap().word, MmKind::User), Ok(Tag::NetPool));
    assert_eq!(counts(&m, pfn), (1, 0));
    user.map_pfn(&cpu, UVA, pfn).unwrap();
    assert_eq!(counts(&m, pfn), (2, 1));
    assert_eq!(n.netmem().pp_ref_count(), 1, "mapping does not touch the pool's count");
    // The last pool reference cannot go while the page is mapped; the reference stays held.
    assert_eq!(pp_put(&m, &cpu, n), Err(PoolError::Mapped(pfn, 1)));
    assert_eq!((pool.stats().live, pool.stats().recycled), (1, 0));
    assert_eq!(user.unmap(&cpu, UVA, PAGE_SIZE as u64).unwrap().entries, 1);
    assert_eq!(counts(&m, pfn), (1, 0), "user mapping gone");
    pp_put_raw(&m, &cpu, pfn).unwrap();
    // In the ring the block is nobody's: its shared refcount is 0 and it cannot be mapped.
    assert_eq!(counts(&m, pfn), (0, 0));
    assert_eq!(user.map_pfn(&cpu, UVA, pfn), Err(MapError::NoReference));
    let again = pool.alloc(&cpu).unwrap();
    assert_eq!(again.pfn(), pfn, "recycled from the ring");
    assert_eq!(counts(&m, pfn), (1, 0));
    pp_put(&m, &cpu, again).unwrap();
    user.destroy(&cpu);
    pool.try_destroy(&cpu).map_err(|(_, e)| e).unwrap();
}

#[test]
fn unmappable_vmalloc_page_is_refused() {
    let m = machine();
    let cpu = m.cpus().claim(0).unwrap();
    let mms = m.mm_caches(&cpu).unwrap();
    let kmm = mms.mm_create(&cpu, MmKind::Kernel).unwrap();
    let s = VmallocSpace::new(&m, &cpu, &kmm).unwrap();
    let user = user_mm(&mms, &cpu);
    let a = s.vmalloc::<Unmappable>(&cpu, PAGE_SIZE, Gfp::KERNEL).unwrap();
    let pfn = s.pfn_at(&a, 0).unwrap();
    // (Through a handle it does not compile: see the compile_fail doctest in vmalloc.rs.)
    assert_eq!(user.map_pfn(&cpu, UVA, pfn), Err(refused(pfn, UnmappableKind::VmallocUnmappable)));
    assert_eq!(m.user_page_of(pfn), Err(refused(pfn, UnmappableKind::VmallocUnmappable)));
    assert_eq!(counts(&m, pfn), (2, 1), "only the kernel PTE");
    assert_eq!(user.translate(UVA), None);
    s.vfree_area(&cpu, a).unwrap();
    user.destroy(&cpu);
}

#[test]
fn slab_page_is_refused() {
    let m = machine();
    let cpu = m.cpus().claim(0).unwrap();
    let mms = m.mm_caches(&cpu).unwrap();
    let user = user_mm(&mms, &cpu);
    let obj = m.kmalloc_raw(&cpu, 64, Gfp::KERNEL).unwrap();
    let pfn = m.platform().virt_to_pfn(obj).unwrap();
    assert_eq!(user.map_pfn(&cpu, UVA, pfn), Err(refused(pfn, UnmappableKind::Slab)));
    assert_eq!(m.user_page_of(pfn), Err(refused(pfn, UnmappableKind::Slab)));
    assert_eq!(user.translate(UVA), None);
    kfree_raw(&m, &cpu, obj).unwrap();
    user.destroy(&cpu);
}

#[test]
fn page_table_page_is_refused() {
    let m = machine();
    let cpu = m.cpus().claim(0).unwrap();
    let mms = m.mm_caches(&cpu).unwrap();
    let user = user_mm(&mms, &cpu);
    let other = mms.mm_create(&cpu, MmKind::User).unwrap();
    for pfn in [user.mm().pgd(), other.mm().pgd()] {
        assert!(matches!(m.memmap().load(m.platform(), pfn).unwrap().word.kind(), PageKind::PageTable(_)));
        assert_eq!(user.map_pfn(&cpu, UVA, pfn), Err(refused(pfn, UnmappableKind::PageTable)));
        assert_eq!(m.user_page_of(pfn), Err(refused(pfn, UnmappableKind::PageTable)));
    }
    assert_eq!(user.mm().pt_pages(), 1, "the refused mapping left no table behind");
    other.destroy(&cpu);
    user.destroy(&cpu);
}

#[test]
fn undescribed_pages_are_refused() {
    let m = machine();
    let cpu = m.cpus().claim(0).unwrap();
    let mms = m.mm_caches(&cpu).unwrap();
    let user = user_mm(&mms, &cpu);
    // Raw page-allocator memory, a tail page inside a raw block, a free page, and a pfn no
    // region covers.
    let raw = m.alloc_pages_raw(&cpu, 1, Gfp::KERNEL).unwrap();
    assert_eq!(user.map_pfn(&cpu, UVA, raw), Err(refused(raw, UnmappableKind::Undescribed(Subtype::Unmappable))));
    assert_eq!(
        user.map_pfn(&cpu, UVA, raw.add(1)),
        Err(refused(raw.add(1), UnmappableKind::Undescribed(Subtype::Tail)))
    );
    assert_eq!(m.user_page_of(raw), Err(refused(raw, UnmappableKind::Undescribed(Subtype::Unmappable))));
    free_raw(&m, &cpu, raw, 1).unwrap();
    m.drain_all();
    assert_eq!(user.map_pfn(&cpu, UVA, raw), Err(refused(raw, UnmappableKind::Free)));
    let hole = Pfn(1 << 39);
    assert_eq!(user.map_pfn(&cpu, UVA, hole), Err(refused(hole, UnmappableKind::NoPage)));
    assert_eq!(m.user_page_of(hole), Err(refused(hole, UnmappableKind::NoPage)));
    assert_eq!(user.translate(UVA), None);
    assert_eq!(user.mm().pt_pages(), 1);
    user.destroy(&cpu);
}
