//! Debug guard pages: a raw page allocation made with [`Gfp::GUARD`] is surrounded by two
//! pages whose words are `Undescribed { Guard }` and which the platform makes inaccessible
//! ([`Platform::protect`]), so an overrun or underrun faults instead of corrupting a
//! neighbour. Freeing the allocation with [`PhysMem::free_pages`](crate::PhysMem::free_pages) makes them accessible again
//! and returns them.
//!
//! Layout: a block of order `o + 2` is allocated (`4 × 2^o` pages, `B`); the data is the
//! aligned block at `B + 2^o`, the guards are the page just below it and the page just after
//! it, and the other pages are freed at once, so each guarded allocation keeps exactly two
//! extra pages. A guard word's order field says which allocation it guards: the page below
//! holds `o`, the page after holds `32 + o`, so a free of a block of order `o` recognises its
//! own guards (an unguarded neighbour's free never takes another allocation's guard: a page
//! below a block holding "guard below, order o" always belongs to that block).
//!
//! This module touches page words and calls [`Platform::protect`]; never page contents except
//! zeroing the data block for [`Gfp::ZERO`].

use crate::base::addr::Pfn;
use crate::base::cpu::Cpu;
use crate::base::gfp::Gfp;
use crate::base::page_access::PageAccess;
use crate::base::platform::Platform;
use crate::base::sync::Ordering;
use crate::memmap::word::{Subtype, Word};
use crate::memmap::RegionMap;
use crate::page_alloc::{AllocError, PageAllocator};

/// Added to the order in the guard word above an allocation.
const AFTER: u32 = 32;

impl<P: Platform> PageAllocator<P> {
    /// [`PhysMem::alloc_pages`](crate::PhysMem::alloc_pages) with [`Gfp::GUARD`].
    pub(crate) fn alloc_guarded(&self, cpu: &Cpu<'_>, order: u32, gfp: Gfp) -> Result<Pfn, AllocError> {
        if order + 2 > self.config().max_order {
            return Err(AllocError::InvalidOrder(order));
        }
        let b = self.alloc_with(cpu, order + 2, gfp.without(Gfp::GUARD).without(Gfp::ZERO), |_| Word::TAIL)?;
        let n = 1u64 << order;
        let (data, before, after) = (b.add(n), b.add(n - 1), b.add(2 * n));
        let rm = self.memmap.region_map(self.memmap.region_index(b).expect("allocated"));
        let (Some(wb), Some(wa)) =
            (self.memmap.page_word(&self.platform, rm, before), self.memmap.page_word(&self.platform, rm, after))
        else {
            // A two-level area holding the block as one word: no per-page words for guards.
            self.free_claimed(cpu, rm, b, order + 2);
            return Err(AllocError::InvalidOrder(order));
        };
        self.memmap
            .block_word(&self.platform, rm, data, order)
            .expect("a small block has a word")
            .store(Self::undesc_word(rm, Subtype::Unmappable, order));
        wb.store(Self::undesc_word(rm, Subtype::Guard, order));
        wa.store(Self::undesc_word(rm, Subtype::Guard, AFTER + order));
        self.free_span(cpu, rm, b, before);
        self.free_span(cpu, rm, after.add(1), b.add(4 * n));
        if gfp.contains(Gfp::ZERO) {
            for i in 0..n {
                PageAccess::new_allocated(&self.platform, data.add(i)).expect("allocated memory is mappable").zero();
            }
        }
        self.platform.protect(before, false);
        self.platform.protect(after, false);
        self.undesc.guard.fetch_add(2, Ordering::Relaxed);
        Ok(data)
    }

    /// Frees `[start, end)` (owned, all tail words) as the largest aligned blocks.
    fn free_span(&self, cpu: &Cpu<'_>, rm: &RegionMap, mut start: Pfn, end: Pfn) {
        while start < end {
            let mut k = start.0.trailing_zeros().min(self.config().max_order);
            while start.add(1 << k) > end {
                k -= 1;
            }
            self.free_claimed(cpu, rm, start, k);
            start = start.add(1 << k);
        }
    }

    /// Called by `free_pages` once the block at `pfn` is claimed: releases its guard pages if
    /// it has them.
    pub(crate) fn release_guards(&self, cpu: &Cpu<'_>, rm: &RegionMap, pfn: Pfn, order: u32) {
        if pfn.0 == 0 || pfn <= rm.region.start || pfn.add(1 << order) >= rm.region.end {
            return;
        }
        let (before, after) = (Pfn(pfn.0 - 1), pfn.add(1 << order));
        // The common case (no guards) costs one word load and one compare.
        let Some(wb) = self.memmap.page_word(&self.platform, rm, before) else { return };
        let vb = Self::undesc_word(rm, Subtype::Guard, order);
        if wb.load() != vb {
            return;
        }
        let va = Self::undesc_word(rm, Subtype::Guard, AFTER + order);
        let Some(wa) = self.memmap.page_word(&self.platform, rm, after).filter(|w| w.load() == va) else { return };
        if wb.compare_exchange(vb, Word::TAIL).is_err() {
            return;
        }
        if wa.compare_exchange(va, Word::TAIL).is_err() {
            wb.store(vb);
            return;
        }
        self.platform.protect(before, true);
        self.platform.protect(after, true);
        self.undesc.guard.fetch_sub(2, Ordering::Relaxed);
        self.free_claimed(cpu, rm, before, 0);
        self.free_claimed(cpu, rm, after, 0);
    }
}
