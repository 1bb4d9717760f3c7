//! Raw-interface helpers shared by the integration tests (issue 12).
//! These tests model the allocator by raw (pfn, order) pairs and object addresses and assert
//! the raw interface's checks, refused frees included. Every free below passes a block or
//! object the test allocated and still owns, or, where a refusal is asserted (wrong order, a
//! tail, a reserved page, a double free, a foreign object), one the word check refuses before
//! anything changes, on a machine only this test uses: the ownership contract of the `unsafe`
//! raw frees holds at each call.
#![allow(dead_code)]

pub fn free_raw<P: memdesc::Platform>(
    m: &memdesc::PhysMem<P>,
    cpu: &memdesc::Cpu<'_>,
    pfn: memdesc::Pfn,
    order: u32,
) -> Result<(), memdesc::FreeError> {
    // SAFETY: see the module header.
    unsafe { m.free_pages_raw(cpu, pfn, order) }
}

pub fn kfree_raw<P: memdesc::Platform>(
    m: &memdesc::PhysMem<P>,
    cpu: &memdesc::Cpu<'_>,
    p: core::ptr::NonNull<u8>,
) -> Result<(), memdesc::SlabError> {
    // SAFETY: see the module header.
    unsafe { m.kfree_raw(cpu, p) }
}

pub fn cache_free_raw<P: memdesc::Platform>(
    c: &memdesc::CacheRef<'_, P>,
    cpu: &memdesc::Cpu<'_>,
    p: core::ptr::NonNull<u8>,
) -> Result<(), memdesc::SlabError> {
    // SAFETY: see the module header.
    unsafe { c.free_raw(cpu, p) }
}

/// The raw put of a mappable block's reference. The tests put only references they hold (from
/// `mappable_alloc`/`mappable_get`) or assert the refusal of a put with none left (the count
/// check refuses it before anything changes), on a machine only the test uses: the contract
/// of `mappable_put` holds at each call.
pub fn mappable_put<P: memdesc::Platform>(
    m: &memdesc::PhysMem<P>,
    cpu: &memdesc::Cpu<'_>,
    d: &memdesc::memmap::desc::MappableDesc,
) -> Result<bool, memdesc::mappable::MappableError> {
    // SAFETY: see above.
    unsafe { m.mappable_put_raw(cpu, d) }
}

/// The raw put by pfn. The tests put only references they hold (a `NetmemRef` given up
/// after a refused `pp_put`, or one from `into_raw`) or assert refusals of pages that hold no
/// pool reference (the count check refuses them before anything changes), on a machine only
/// the test uses: `pp_put_pfn`'s contract holds at each call.
pub fn pp_put_raw<P: memdesc::Platform>(
    m: &memdesc::PhysMem<P>,
    cpu: &memdesc::Cpu<'_>,
    pfn: memdesc::Pfn,
) -> Result<(), memdesc::page_pool::PoolError> {
    // SAFETY: see above.
    unsafe { m.pp_put_pfn(cpu, pfn) }
}

/// The raw free of a vmalloc area by address. The tests free only areas they allocated and
/// own, or assert refusals of addresses that start no live area (checked before anything
/// changes), on a machine only the test uses: the contract of `vfree` holds at each call.
pub fn vfree<P: memdesc::Platform>(
    s: &memdesc::vmalloc::VmallocSpace<'_, P>,
    cpu: &memdesc::Cpu<'_>,
    va: usize,
) -> Result<(), memdesc::vmalloc::VmallocError> {
    // SAFETY: see above.
    unsafe { s.vfree(cpu, va) }
}

/// A handle rebuilt from a raw value, to probe the pool's checks: the tests pass only values
/// they know the pool refuses (never issued, another pool's, freed, stale) or a copy of a live
/// handle whose refusal (mapped) they assert, so no object changes owner.
pub fn probe(raw: u64) -> memdesc::zsmalloc::Handle {
    // SAFETY: see above.
    unsafe { memdesc::zsmalloc::Handle::from_raw(raw) }
}
