//! A tiny machine over a leaked host buffer, for the unit tests of subsystems that need a
//! booted machine (kmalloc, vmalloc, page_pool, migration). It lives in the machine layer
//! because it names [`PhysMem`].

use crate::{Config, MemmapLayout, MemoryLayout, Pfn, PhysMem, Platform, RegionSpec};
use core::ptr::NonNull;

pub(crate) struct Buf(NonNull<u8>, u64);
// SAFETY: plain memory; the manager decides who touches which page.
unsafe impl Send for Buf {}
// SAFETY: as above.
unsafe impl Sync for Buf {}
// SAFETY: the buffer is `pages` pages, page-aligned, leaked for the test's life, and only
// reached through the manager; direct_map is linear.
unsafe impl Platform for Buf {
    fn direct_map(&self, pfn: Pfn) -> Option<NonNull<u8>> {
        // SAFETY: pfn < pages keeps the offset inside the buffer.
        (pfn.0 < self.1).then(|| unsafe { NonNull::new_unchecked(self.0.as_ptr().add(pfn.0 as usize * 4096)) })
    }
    fn virt_to_pfn(&self, a: NonNull<u8>) -> Option<Pfn> {
        let off = (a.as_ptr() as usize).checked_sub(self.0.as_ptr() as usize)?;
        (off < self.1 as usize * 4096).then_some(Pfn((off / 4096) as u64))
    }
    fn map_local(&self, pfn: Pfn) -> Option<NonNull<u8>> {
        self.direct_map(pfn)
    }
    fn unmap_local(&self, _: Pfn, _: NonNull<u8>) {}
}

/// A one-CPU machine of `pages` pages in one region of `layout`.
pub(crate) fn machine(pages: u64, layout: MemmapLayout) -> PhysMem<Buf> {
    let l = std::alloc::Layout::from_size_align(pages as usize * 4096, 4096).unwrap();
    // SAFETY: non-zero size; leaked on purpose (the machine keeps pointers into it).
    let p = NonNull::new(unsafe { std::alloc::alloc_zeroed(l) }).unwrap();
    let mut map = MemoryLayout::new();
    map.add_region(RegionSpec { start: Pfn(0), end: Pfn(pages), node: 0, mapped: true, layout }).unwrap();
    PhysMem::boot(Buf(p, pages), &map, Config { nr_cpus: 1, debug_checks: true, ..Config::default() }).unwrap()
}
