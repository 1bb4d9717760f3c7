//! A tiny machine over a leaked host buffer (the one test platform,
//! [`crate::base::platform`]'s `test_platform::Buf`), for the unit tests of subsystems that need a
//! booted machine (kmalloc, vmalloc, page_pool, migration). It lives in the machine layer
//! because it names [`PhysMem`].

use crate::{Config, MemmapLayout, MemoryLayout, Pfn, PhysMem, RegionSpec};

pub(crate) use crate::base::platform::test_platform::Buf;

/// A one-CPU machine of `pages` pages in one region of `layout`.
pub(crate) fn machine(pages: u64, layout: MemmapLayout) -> PhysMem<Buf> {
    let mut map = MemoryLayout::new();
    map.add_region(RegionSpec { start: Pfn(0), end: Pfn(pages), node: 0, mapped: true, layout }).unwrap();
    PhysMem::boot(Buf::leaked(pages), &map, Config { nr_cpus: 1, debug_checks: true, ..Config::default() }).unwrap()
}
