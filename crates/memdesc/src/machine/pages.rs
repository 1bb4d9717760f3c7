//! The page allocator's public API on the machine: one-line forwarders to
//! [`PageAllocator`](crate::page_alloc::PageAllocator) (layer 2). The raw entry points
//! ([`PhysMem::free_pages_raw`], [`Pages::from_raw`]) live in `machine/raw.rs`.

use core::fmt;

use crate::base::addr::Pfn;
use crate::base::cpu::{Cpu, CpuSet};
use crate::base::gfp::Gfp;
use crate::base::pageblock::{MigrateType, NR_MIGRATETYPES};
use crate::base::platform::Platform;
use crate::base::rcu::Rcu;
use crate::memmap::Memmap;
use crate::page_alloc::isolate::UndescribedStats;
use crate::page_alloc::pages::Pages;
use crate::page_alloc::zone::{Zone, MAX_ORDER_LIMIT};
use crate::page_alloc::{AllocCounters, AllocError, FreeError};

use super::{Config, PhysMem};

impl<P: Platform> PhysMem<P> {
    /// The platform.
    #[inline]
    pub fn platform(&self) -> &P {
        self.pages.platform()
    }

    /// The memmap.
    #[inline]
    pub fn memmap(&self) -> &Memmap {
        self.pages.memmap()
    }

    /// The CPUs; claim one to allocate. Every entry point taking a [`Cpu`] accepts only
    /// tokens of this set and panics on a token of another machine (cpu.rs invariant 3).
    #[inline]
    pub fn cpus(&self) -> &CpuSet {
        self.pages.cpus()
    }

    /// The machine's RCU.
    #[inline]
    pub fn rcu(&self) -> &Rcu {
        self.pages.rcu()
    }

    /// The machine's fault injector (disabled at boot): see [`crate::base::fault`].
    #[inline]
    pub fn fault(&self) -> &crate::base::fault::FaultInjector {
        self.pages.fault()
    }

    /// The configuration.
    #[inline]
    pub fn config(&self) -> &Config {
        self.pages.config()
    }

    /// All zones, by node then zone type.
    #[inline]
    pub fn zones(&self) -> impl Iterator<Item = &Zone> {
        self.pages.zones()
    }

    /// Pages the boot allocator took (memmap, per-CPU areas).
    #[inline]
    pub fn boot_pages(&self) -> u64 {
        self.pages.boot_pages()
    }

    /// Pages reserved at boot (firmware ranges and boot allocations).
    #[inline]
    pub fn reserved_pages(&self) -> u64 {
        self.pages.reserved_pages()
    }

    /// Free pages in buddy lists plus per-CPU lists, all zones.
    #[inline]
    pub fn nr_free_pages(&self) -> u64 {
        self.pages.nr_free_pages()
    }

    /// Pages sitting on per-CPU lists.
    #[inline]
    pub fn pcp_pages(&self) -> u64 {
        self.pages.pcp_pages()
    }

    /// Allocation counters.
    #[inline]
    pub fn counters(&self) -> AllocCounters {
        self.pages.counters()
    }

    /// This machine's identity (unique among machines booted by this process): handles carry
    /// it so that one machine never frees another's memory.
    #[inline]
    pub(crate) fn machine_id(&self) -> u32 {
        self.pages.machine_id()
    }

    /// The free block (head, order) that contains `pfn`, if any: looks at every aligned
    /// candidate head below it, as a pfn walker must since tails do not name their head.
    #[inline]
    pub fn free_block_containing_pfn(&self, pfn: Pfn) -> Option<(Pfn, u32)> {
        self.pages.free_block_containing_pfn(pfn)
    }

    /// Returns every page on CPU `cpu`'s per-CPU lists to the buddy lists. Any CPU may call
    /// this (it takes that CPU's list locks).
    #[inline]
    pub fn drain_cpu(&self, cpu: usize) {
        self.pages.drain_cpu(cpu)
    }

    /// Drains every CPU's lists (before compaction, offlining, or when memory runs short).
    #[inline]
    pub fn drain_all(&self) {
        self.pages.drain_all()
    }

    /// Free blocks per order and migratetype of one zone (buddy lists only).
    #[inline]
    pub fn free_blocks(&self, zone: &Zone) -> [[u64; NR_MIGRATETYPES]; MAX_ORDER_LIMIT as usize + 1] {
        self.pages.free_blocks(zone)
    }

    /// Writes the free-block table in the format of Linux's /proc/buddyinfo.
    #[inline]
    pub fn write_buddyinfo(&self, out: &mut impl fmt::Write) -> fmt::Result {
        self.pages.write_buddyinfo(out)
    }

    /// Writes the per-migratetype table in the format of Linux's /proc/pagetypeinfo.
    #[inline]
    pub fn write_pagetypeinfo(&self, out: &mut impl fmt::Write) -> fmt::Result {
        self.pages.write_pagetypeinfo(out)
    }

    /// Allocates `2^order` contiguous pages of raw (unmappable) memory.
    ///
    /// The head word becomes `Undescribed { Unmappable, order }`. The returned [`Pages`] owns
    /// the block; free it with [`PhysMem::free_pages`].
    #[inline]
    pub fn alloc_pages(&self, cpu: &Cpu<'_>, order: u32, gfp: Gfp) -> Result<Pages, AllocError> {
        self.pages.alloc_pages(cpu, order, gfp)
    }

    /// As [`PhysMem::alloc_pages`], returning the first pfn instead of a handle, for callers
    /// that keep pfns (C interfaces, page tables, trace replay).
    ///
    /// Safe: allocating cannot free anything another owner holds; the caller now owns the
    /// block and gives it back with [`PhysMem::free_pages_raw`] or wraps it with
    /// [`Pages::from_raw`]. Losing the pfn leaks the block.
    #[inline]
    pub fn alloc_pages_raw(&self, cpu: &Cpu<'_>, order: u32, gfp: Gfp) -> Result<Pfn, AllocError> {
        self.pages.alloc_pages_raw(cpu, order, gfp)
    }

    /// Frees a block from [`PhysMem::alloc_pages`], consuming its handle.
    ///
    /// A handle of another machine is refused with [`FreeError::ForeignMachine`]. The page word
    /// is still checked (see [`FreeError`]); a refused free leaves the allocator unchanged and
    /// the block allocated (leaked).
    #[inline]
    pub fn free_pages(&self, cpu: &Cpu<'_>, pages: Pages) -> Result<(), FreeError> {
        self.pages.free_pages(cpu, pages)
    }

    /// The counters of poisoned, offline and guard pages.
    #[inline]
    pub fn undescribed_stats(&self) -> UndescribedStats {
        self.pages.undescribed_stats()
    }

    /// Calls `f(start, end)` for every maximal run of `Reserved` pages (firmware ranges and
    /// boot allocations: memmap, per-CPU areas, slab bootstrap), in pfn order; returns the
    /// number of reserved pages. These pages are never on a free list and never allocated.
    #[inline]
    pub fn reserved_ranges(&self, f: impl FnMut(Pfn, Pfn)) -> u64 {
        self.pages.reserved_ranges(f)
    }

    /// The migratetype of the pageblock holding `pfn`.
    #[inline]
    pub fn pageblock_migratetype(&self, pfn: Pfn) -> Option<MigrateType> {
        self.pages.pageblock_migratetype(pfn)
    }
}
