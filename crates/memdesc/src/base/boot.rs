//! The boot allocator (like Linux's memblock): hands out physical memory for the memmap and
//! the other early structures before any page allocator exists, top-down from the highest
//! mapped memory, and remembers every range it handed out so the page allocator later treats
//! it as reserved.
//!
//! Typed arrays in the memory it hands out are [`crate::base::page_access::BootArray`].

use crate::base::addr::Pfn;
use crate::base::layout::{MemoryLayout, Region};

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

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::base::layout::{MemmapLayout, RegionSpec};

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
