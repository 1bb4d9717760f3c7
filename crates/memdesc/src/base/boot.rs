//! The boot allocator (like Linux's memblock): hands out physical memory for the memmap and
//! the other early structures before any page allocator exists, top-down from the highest
//! mapped memory, and remembers every range it handed out so the page allocator later treats
//! it as reserved.
//!
//! [`BootArray`] is the typed view of one such allocation: an array of `T` in boot memory
//! (memmap words, pageblock bytes, the section table, the per-CPU lists), built once and then
//! read through shared references only.
//!
//! # Invariants
//! 1. **Reserved for the array alone.** A [`BootArray`]'s `ptr` is the direct-map address of
//!    pages the boot allocator handed out for that array only ([`BootAllocator::alloc`] never
//!    hands a range out twice, and the page allocator stamps every boot range `Reserved`, so no
//!    allocation ever reaches it); boot memory is never returned.
//! 2. **Mapped and initialised.** Those pages are direct-mapped, linearly ([`Platform`] item 1),
//!    page-aligned (so aligned for any `T` whose alignment is at most [`PAGE_SIZE`], checked at
//!    compile time), large enough for `len` values of `T`, and all `len` values are written
//!    before the array exists. The mapping stays valid while the platform lives; the array is
//!    kept by the structure that keeps its platform ([`crate::memmap::Memmap`] inside the page
//!    allocator, which owns the platform) and is never read after it.
//! 3. **Shared only.** The array hands out `&T` and nothing else: no `&mut T`, no moves out,
//!    and its values are never dropped (boot memory lives as long as the machine). So sharing
//!    or sending the array is sharing its values: `Send` and `Sync` need exactly `T: Sync`.
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

use core::marker::PhantomData;
use core::ptr::NonNull;

use crate::base::addr::{Pfn, PAGE_SIZE};
use crate::base::layout::{MemoryLayout, Region};
use crate::base::platform::Platform;

/// Most ranges the boot allocator tracks (firmware reservations plus its own allocations).
pub const MAX_BOOT_RANGES: usize = 512;

/// Why the boot allocator failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootError {
    /// No mapped memory range can hold the request.
    OutOfMemory {
        /// Pages asked for.
        pages: u64,
    },
    /// More reserved ranges than [`MAX_BOOT_RANGES`].
    TooManyRanges,
    /// The platform has no direct map for memory the boot allocator handed out.
    NoDirectMap(Pfn),
}

/// A memblock-like allocator over the mapped regions of a layout.
pub(crate) struct BootAllocator {
    avail: [(Pfn, Pfn); crate::base::layout::MAX_REGIONS],
    nr_avail: usize,
    reserved: [(Pfn, Pfn); MAX_BOOT_RANGES],
    nr_reserved: usize,
    allocated_pages: u64,
}

impl BootAllocator {
    /// Starts with the mapped regions of `layout`, minus its reserved ranges.
    pub fn new(layout: &MemoryLayout) -> Result<Self, BootError> {
        let mut b = BootAllocator {
            avail: [(Pfn(0), Pfn(0)); crate::base::layout::MAX_REGIONS],
            nr_avail: 0,
            reserved: [(Pfn(0), Pfn(0)); MAX_BOOT_RANGES],
            nr_reserved: 0,
            allocated_pages: 0,
        };
        for r in &layout.regions[..layout.nr_regions] {
            if r.mapped {
                b.avail[b.nr_avail] = (r.start, r.end);
                b.nr_avail += 1;
            }
        }
        for &(s, e) in layout.reserved() {
            b.add_reserved(s, e)?;
        }
        Ok(b)
    }

    fn add_reserved(&mut self, s: Pfn, e: Pfn) -> Result<(), BootError> {
        if s >= e {
            return Ok(());
        }
        if self.nr_reserved == MAX_BOOT_RANGES {
            return Err(BootError::TooManyRanges);
        }
        self.reserved[self.nr_reserved] = (s, e);
        self.nr_reserved += 1;
        self.reserved[..self.nr_reserved].sort_unstable_by_key(|r| r.0);
        Ok(())
    }

    /// Allocates `pages` contiguous pages aligned to `2^align_order`, preferring memory inside
    /// `prefer` (the region the structure describes) and otherwise the highest mapped memory.
    pub fn alloc(&mut self, pages: u64, align_order: u32, prefer: Option<&Region>) -> Result<Pfn, BootError> {
        let pages = pages.max(1);
        if let Some(r) = prefer.filter(|r| r.mapped) {
            if let Some(p) = self.find_in(r.start, r.end, pages, align_order) {
                return self.take(p, pages);
            }
        }
        for i in (0..self.nr_avail).rev() {
            let (s, e) = self.avail[i];
            if let Some(p) = self.find_in(s, e, pages, align_order) {
                return self.take(p, pages);
            }
        }
        Err(BootError::OutOfMemory { pages })
    }

    fn take(&mut self, p: Pfn, pages: u64) -> Result<Pfn, BootError> {
        self.add_reserved(p, p.add(pages))?;
        self.allocated_pages += pages;
        Ok(p)
    }

    fn find_in(&self, lo: Pfn, hi: Pfn, pages: u64, align: u32) -> Option<Pfn> {
        // Callers pass ranges inside mapped memory (an avail range or a mapped region).
        let mut end = hi;
        loop {
            let start = Pfn(end.0.checked_sub(pages)?).align_down(align);
            if start < lo {
                return None;
            }
            match self.reserved[..self.nr_reserved].iter().rev().find(|(rs, re)| *rs < start.add(pages) && start < *re)
            {
                Some(&(rs, _)) => end = rs,
                None => return Some(start),
            }
        }
    }

    /// Every reserved range so far: firmware reservations and boot allocations.
    pub fn reserved(&self) -> &[(Pfn, Pfn)] {
        &self.reserved[..self.nr_reserved]
    }

    /// Whether `pfn` is reserved (the unit tests' check of the ranges).
    #[cfg(all(test, not(loom)))]
    pub fn is_reserved(&self, pfn: Pfn) -> bool {
        self.reserved().iter().any(|(s, e)| *s <= pfn && pfn < *e)
    }

    /// Pages handed out by [`BootAllocator::alloc`].
    pub fn allocated_pages(&self) -> u64 {
        self.allocated_pages
    }
}

/// An array of `n` values of `T` in boot memory (see the module header): built once by
/// `BootArray::new` (crate-private), then read through shared references for the machine's life.
pub struct BootArray<T> {
    /// Invariants 1 and 2: `len` initialised values, reserved and mapped.
    ptr: NonNull<T>,
    len: usize,
    /// Boot pages the array occupies.
    pages: u64,
    /// Owns `T`s for auto traits and variance (invariant 3 narrows Send/Sync below).
    _values: PhantomData<T>,
}

// SAFETY: invariant 3: the array only ever hands out `&T`, so sending it to another thread
// gives that thread shared access to the values and nothing more, which `T: Sync` allows; the
// memory stays valid wherever the array goes (invariants 1 and 2).
unsafe impl<T: Sync> Send for BootArray<T> {}
// SAFETY: as above: `&BootArray<T>` yields only `&T`.
unsafe impl<T: Sync> Sync for BootArray<T> {}

impl<T> BootArray<T> {
    const ALIGN_OK: () = assert!(core::mem::align_of::<T>() <= PAGE_SIZE, "boot arrays are page-aligned");

    /// Takes boot memory for `n` values of `T` (preferring memory inside `prefer`, the region
    /// they describe) and writes `init(i)` into slot `i`.
    ///
    /// Errors: [`BootError::OutOfMemory`] if no mapped range fits (or the size overflows),
    /// [`BootError::NoDirectMap`] if the platform does not direct-map what it got,
    /// [`BootError::TooManyRanges`] as for [`BootAllocator::alloc`].
    pub(crate) fn new<P: Platform>(
        alloc: &mut BootAllocator,
        platform: &P,
        n: usize,
        prefer: Option<&Region>,
        mut init: impl FnMut(usize) -> T,
    ) -> Result<Self, BootError> {
        let () = Self::ALIGN_OK;
        let bytes = n.checked_mul(core::mem::size_of::<T>()).ok_or(BootError::OutOfMemory { pages: u64::MAX })?;
        let pages = (bytes.div_ceil(PAGE_SIZE) as u64).max(1);
        let pfn = alloc.alloc(pages, 0, prefer)?;
        let base = platform.direct_map(pfn).ok_or(BootError::NoDirectMap(pfn))?.cast::<T>();
        for i in 0..n {
            // SAFETY: invariants 1 and 2 for the array being built: `pages` pages at `pfn` are
            // ours alone, direct-mapped linearly and page-aligned, and `i < n` keeps slot `i`
            // inside them; the slot is written once, before any reference to it exists.
            unsafe { base.as_ptr().add(i).write(init(i)) };
        }
        Ok(BootArray { ptr: base, len: n, pages, _values: PhantomData })
    }

    /// The values, as a slice.
    #[inline]
    pub fn as_slice(&self) -> &[T] {
        // SAFETY: `ptr` holds `len` initialised values that stay valid and are never written
        // through the array while it lives (invariants 1-3).
        unsafe { core::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The value at `i`, if `i < len`.
    #[inline]
    pub fn get(&self, i: usize) -> Option<&T> {
        self.as_slice().get(i)
    }

    /// Number of values.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the array holds no value.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The values in order.
    #[inline]
    pub fn iter(&self) -> core::slice::Iter<'_, T> {
        self.as_slice().iter()
    }

    /// Bytes of boot memory the array occupies (whole pages).
    #[inline]
    pub fn bytes(&self) -> u64 {
        self.pages * PAGE_SIZE as u64
    }
}

impl<T> core::ops::Index<usize> for BootArray<T> {
    type Output = T;
    /// The value at `i`; panics if `i >= len` (use [`BootArray::get`] for a checked read).
    #[inline]
    fn index(&self, i: usize) -> &T {
        &self.as_slice()[i]
    }
}

impl<'a, T> IntoIterator for &'a BootArray<T> {
    type Item = &'a T;
    type IntoIter = core::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<T: core::fmt::Debug> core::fmt::Debug for BootArray<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::base::layout::{MemmapLayout, RegionSpec};
    use crate::base::platform::test_platform::Buf;
    use crate::base::sync::{AtomicU32, Ordering};

    fn one_region(pages: u64) -> (MemoryLayout, Buf) {
        let mut l = MemoryLayout::new();
        l.add_region(RegionSpec { start: Pfn(0), end: Pfn(pages), node: 0, mapped: true, layout: MemmapLayout::Flat })
            .unwrap();
        (l, Buf::leaked(pages))
    }

    #[test]
    fn boot_array_initialises_indexes_and_reserves() {
        let (l, p) = one_region(64);
        let mut b = BootAllocator::new(&l).unwrap();
        let a = BootArray::new(&mut b, &p, 1000, None, |i| AtomicU32::new(i as u32 * 3)).unwrap();
        assert_eq!(a.len(), 1000);
        assert!(!a.is_empty());
        assert_eq!(a.bytes(), 4000u64.div_ceil(PAGE_SIZE as u64) * PAGE_SIZE as u64);
        assert_eq!(b.allocated_pages(), 1, "1000 u32s fit one page");
        assert_eq!(a[999].load(Ordering::Relaxed), 2997);
        assert_eq!(a.get(7).map(|v| v.load(Ordering::Relaxed)), Some(21));
        assert!(a.get(1000).is_none(), "out of range is None, not a panic");
        a[5].store(11, Ordering::Relaxed);
        let sum: u64 = a.iter().map(|v| v.load(Ordering::Relaxed) as u64).sum();
        assert_eq!(sum, (0..1000u64).map(|i| i * 3).sum::<u64>() - 15 + 11);
        assert_eq!((&a).into_iter().count(), 1000);
        // The array's pages are reserved: a second array never overlaps it.
        let c = BootArray::new(&mut b, &p, 2 * PAGE_SIZE, None, |i| (i % 251) as u8).unwrap();
        assert_eq!(c.bytes(), 2 * PAGE_SIZE as u64);
        assert_eq!(a[999].load(Ordering::Relaxed), 2997, "the second array did not overwrite the first");
        assert_eq!(c[PAGE_SIZE + 3], ((PAGE_SIZE + 3) % 251) as u8);
    }

    #[test]
    #[should_panic(expected = "index out of bounds")]
    fn boot_array_index_out_of_range_panics() {
        let (l, p) = one_region(8);
        let mut b = BootAllocator::new(&l).unwrap();
        let a = BootArray::new(&mut b, &p, 3, None, |i| i as u16).unwrap();
        let _ = a[3];
    }

    #[test]
    fn boot_array_errors_are_typed() {
        let (l, p) = one_region(8);
        let mut b = BootAllocator::new(&l).unwrap();
        assert_eq!(
            BootArray::new(&mut b, &p, 9 * PAGE_SIZE, None, |_| 0u8).err(),
            Some(BootError::OutOfMemory { pages: 9 })
        );
        assert_eq!(
            BootArray::new(&mut b, &p, usize::MAX, None, |_| 0u64).err(),
            Some(BootError::OutOfMemory { pages: u64::MAX })
        );
        // Memory the platform does not direct-map.
        let mut l2 = MemoryLayout::new();
        l2.add_region(RegionSpec { start: Pfn(0), end: Pfn(16), node: 0, mapped: true, layout: MemmapLayout::Flat })
            .unwrap();
        let mut b2 = BootAllocator::new(&l2).unwrap();
        assert_eq!(BootArray::new(&mut b2, &p, 1, None, |_| 0u8).err(), Some(BootError::NoDirectMap(Pfn(15))));
        // An empty array still owns a page (its address is a real one) and reads nothing.
        let e = BootArray::new(&mut b, &p, 0, None, |_| 0u8).unwrap();
        assert!(e.is_empty() && e.get(0).is_none() && e.iter().next().is_none());
    }

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn boot_array_is_send_and_sync_for_sync_values() {
        assert_send_sync::<BootArray<AtomicU32>>();
        assert_send_sync::<BootArray<crate::base::sync::SpinLock<u64>>>();
    }

    #[test]
    fn top_down_aligned_and_never_reserved() {
        let mut l = MemoryLayout::new();
        l.add_region(RegionSpec { start: Pfn(0), end: Pfn(1000), node: 0, mapped: true, layout: MemmapLayout::Flat })
            .unwrap();
        l.add_region(RegionSpec {
            start: Pfn(2000),
            end: Pfn(3000),
            node: 0,
            mapped: false,
            layout: MemmapLayout::Flat,
        })
        .unwrap();
        l.reserve(Pfn(900), Pfn(1000)).unwrap();
        let mut b = BootAllocator::new(&l).unwrap();
        let a = b.alloc(10, 0, None).unwrap();
        assert_eq!(a, Pfn(890), "top-down below the reservation, never in unmapped memory");
        let c = b.alloc(16, 4, None).unwrap();
        assert!(c.is_aligned(4) && c.add(16) <= Pfn(890));
        assert!(b.is_reserved(Pfn(895)) && b.is_reserved(c));
        assert_eq!(b.allocated_pages(), 26);
        assert_eq!(b.alloc(5000, 0, None), Err(BootError::OutOfMemory { pages: 5000 }));
    }
}
