//! Quick start: boot a machine over a host buffer, allocate and free pages and a kmalloc
//! object, and see the raw interface refuse a double free.
//!
//! Run it with `cargo run -p memdesc --example quickstart`. A real kernel implements
//! [`Platform`] over its direct map (the `memdesc-host` crate has a full simulated one); here a
//! tiny one over a leaked, page-aligned buffer is enough.

use core::ptr::NonNull;

use memdesc::{Config, Gfp, MemmapLayout, MemoryLayout, Pfn, PhysMem, Platform, RegionSpec, PAGE_SIZE};

/// Pages of the example machine (16 MiB).
const PAGES: u64 = 4096;

/// A platform over `PAGES` pages of leaked host memory, direct-mapped linearly from pfn 0.
struct Buf(NonNull<u8>);

// SAFETY: plain memory; the memory manager decides who touches which page.
unsafe impl Send for Buf {}
// SAFETY: as above.
unsafe impl Sync for Buf {}

// SAFETY: the buffer is PAGES pages, page-aligned, zeroed and leaked (valid for the rest of the
// process), and only reached through the manager; the direct map is linear, distinct pfns never
// alias, and `map_local` hands out the same valid address.
unsafe impl Platform for Buf {
    fn direct_map(&self, pfn: Pfn) -> Option<NonNull<u8>> {
        // SAFETY: pfn < PAGES keeps the offset inside the buffer, so the result is non-null.
        (pfn.0 < PAGES).then(|| unsafe { NonNull::new_unchecked(self.0.as_ptr().add(pfn.0 as usize * PAGE_SIZE)) })
    }
    fn virt_to_pfn(&self, a: NonNull<u8>) -> Option<Pfn> {
        let off = (a.as_ptr() as usize).checked_sub(self.0.as_ptr() as usize)?;
        (off < PAGES as usize * PAGE_SIZE).then_some(Pfn((off / PAGE_SIZE) as u64))
    }
    fn map_local(&self, pfn: Pfn) -> Option<NonNull<u8>> {
        self.direct_map(pfn)
    }
    fn unmap_local(&self, _: Pfn, _: NonNull<u8>) {}
}

fn main() {
    let layout = std::alloc::Layout::from_size_align(PAGES as usize * PAGE_SIZE, PAGE_SIZE).unwrap();
    // SAFETY: the size is non-zero; the buffer is leaked on purpose (the machine keeps pointers
    // into it for the rest of the process).
    let buf = Buf(NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) }).expect("host memory"));

    let mut map = MemoryLayout::new();
    map.add_region(RegionSpec { start: Pfn(0), end: Pfn(PAGES), node: 0, mapped: true, layout: MemmapLayout::Flat })
        .unwrap();
    let mem = PhysMem::boot(buf, &map, Config { nr_cpus: 1, ..Config::default() }).unwrap();
    let cpu = mem.cpus().claim(0).unwrap();

    // An owned handle: freeing consumes it, so a second free does not compile.
    let pages = mem.alloc_pages(&cpu, 2, Gfp::KERNEL).unwrap();
    let pfn = pages.pfn();
    println!("allocated 4 pages at pfn {pfn}");
    mem.free_pages(&cpu, pages).unwrap();

    // The raw interface is unsafe (the caller vouches for ownership) but still checked: a
    // double free is refused with a typed error.
    // SAFETY: the block was freed above, so nobody owns it: the free must be refused, and a
    // refused free changes nothing.
    let again = unsafe { mem.free_pages_raw(&cpu, pfn, 2) };
    println!("second free by pfn: {again:?}");
    assert!(again.is_err());

    // kmalloc rounds up to its size classes.
    let obj = mem.kmalloc(&cpu, 100, Gfp::ZERO).unwrap();
    assert_eq!(mem.ksize(obj.as_ptr()).unwrap(), 128);
    println!("kmalloc(100) gave a {}-byte object", mem.ksize(obj.as_ptr()).unwrap());
    mem.kfree(&cpu, obj).unwrap();

    println!("free pages: {} of {PAGES}", mem.nr_free_pages());
}
