//! The page allocator's side of its per-CPU caches: how the per-CPU lists (`pcp.rs`) and the
//! CPU-local areas (`area.rs`) reach the zones and the page words (`ZoneSide`, `DirectLinks`,
//! `AreaSide`, `AreaZone`), the per-CPU entries of a machine, and the drains: the owner's own
//! (`drain_own`, also run when it serves a request at its next operation) and another CPU's
//! (`drain_cpu`, `drain_all`, `drain_all_from`, through `CpuSet::on_cpu`).

use super::area::{AreaMem, CpuAreas};
use super::pcp::{Pcp, PcpLinks, PcpZone};
use super::zone::{Buddy, Zone};
use super::{DrainReport, PageAllocator, DRAIN_SPINS, MAX_ZONE_SLOTS};
use crate::base::addr::{Pfn, AREA_ORDER, AREA_PAGES};
use crate::base::cpu::{Cpu, Remote, Request};
use crate::base::layout::MemmapLayout;
use crate::base::page_access::DirectWindow;
use crate::base::pageblock::MigrateType;
use crate::base::platform::Platform;
use crate::base::sync::{AtomicU32, Ordering};
use crate::memmap::word::{Subtype, Word};

/// The per-CPU lists' links ([`PcpLinks`]): the first word of each listed page, through the
/// direct map (the hot region's window first, `Memmap::hot_window`).
pub(crate) struct DirectLinks<'a, P: Platform> {
    platform: &'a P,
    window: &'a DirectWindow,
}

impl<P: Platform> PcpLinks for DirectLinks<'_, P> {
    #[inline(always)]
    fn next(&self, pfn: u64) -> u64 {
        self.window.table(self.platform, Pfn(pfn)).expect("PCP pages are direct-mapped")[0].load(Ordering::Relaxed)
    }
    #[inline(always)]
    fn set_next(&self, pfn: u64, next: u64) {
        self.window.table(self.platform, Pfn(pfn)).expect("PCP pages are direct-mapped")[0]
            .store(next, Ordering::Relaxed)
    }
}

/// A zone as the per-CPU lists see it ([`PcpZone`]): its lock, its buddy lists, and the word of
/// a block that moves to a per-CPU list.
pub(super) struct ZoneSide<'a, P: Platform> {
    pub(super) mem: &'a PageAllocator<P>,
    pub(super) zone: &'a Zone,
}

impl<P: Platform> PcpZone for ZoneSide<'_, P> {
    type Free = super::zone::FreeLists;

    #[inline]
    fn lock(&self) -> crate::base::sync::SpinGuard<'_, Self::Free> {
        self.zone.lock.lock()
    }

    fn take(&self, z: &mut Self::Free, order: u32, mt: usize) -> Option<u64> {
        let mt = MigrateType::from_bits(mt as u8).unwrap_or(MigrateType::Movable);
        let buddy = self.mem.buddy();
        let pfn = buddy.rmqueue(z, order, mt)?;
        let rm = buddy.rm(pfn);
        self.mem
            .memmap
            .block_word(&self.mem.platform, rm, pfn, order)
            .expect("block word")
            .store(Buddy::<P>::buddy_word(rm, order, mt, true));
        Some(pfn.0)
    }

    fn give(&self, z: &mut Self::Free, pfn: u64, order: u32, mt: usize) {
        self.mem.buddy().free_block(
            z,
            Pfn(pfn),
            order,
            MigrateType::from_bits(mt as u8).unwrap_or(MigrateType::Movable),
        )
    }

    #[inline]
    fn done(&self, z: &Self::Free) {
        self.zone.free_pages.store(z.free_pages, Ordering::Relaxed);
    }
}

/// The page side of the CPU-local areas ([`AreaMem`]): holder words in the allocator's side
/// array, remote-list links in the first word of the claimed block's memory (as the per-CPU
/// lists link theirs), and page words through the memmap (a two-level area is split while
/// held).
pub(super) struct AreaSide<'a, P: Platform>(pub(super) &'a PageAllocator<P>);

impl<P: Platform> AreaSide<'_, P> {
    #[inline]
    fn holder_word(&self, area: u64) -> &AtomicU32 {
        &self.0.area_holder[((area >> AREA_ORDER) - self.0.area_first) as usize]
    }
}

impl<P: Platform> AreaMem for AreaSide<'_, P> {
    #[inline]
    fn holder(&self, area: u64) -> u32 {
        self.holder_word(area).load(Ordering::Relaxed)
    }
    #[inline]
    fn set_holder(&self, area: u64, cpu: u32) {
        self.holder_word(area).store(cpu, Ordering::Relaxed)
    }
    #[inline]
    fn next(&self, pfn: u64) -> u64 {
        self.0.pcp_links().next(pfn)
    }
    #[inline]
    fn set_next(&self, pfn: u64, next: u64) {
        self.0.pcp_links().set_next(pfn, next)
    }
    fn mark_area(&self, area: u64, mt: usize) -> u64 {
        let rm = self.0.region_of(Pfn(area));
        let mt = MigrateType::from_bits(mt as u8).unwrap_or(MigrateType::Movable);
        let free = Buddy::<P>::buddy_word(rm, 0, mt, true);
        if rm.region.layout == MemmapLayout::Flat {
            for i in 0..AREA_PAGES {
                rm.flat_word(Pfn(area + i)).store(free);
            }
            return 0;
        }
        // A two-level area is split as the buddy carves one (zone.rs): its first page becomes
        // its word table. The area is off the buddy lists, so the split area's free count is 0
        // (none of its pages is on a buddy list); the drain's and later frees' blocks count
        // it up, and at 511 the buddy makes the area uniform and frees the table page.
        let table = Buddy::<P>::undescribed(rm, Subtype::Memmap, 0);
        self.0.memmap.split_area(&self.0.platform, rm, Pfn(area), Pfn(area), 0, |i| if i == 0 { table } else { free });
        1
    }
    fn mark_pending(&self, pfn: u64, order: u32, mt: usize) {
        let rm = self.0.region_of(Pfn(pfn));
        let mt = MigrateType::from_bits(mt as u8).unwrap_or(MigrateType::Movable);
        self.0.page_word_of(rm, Pfn(pfn)).store(Buddy::<P>::buddy_word(rm, order, mt, true));
    }
    #[inline]
    fn mark_free(&self, pfn: u64, order: u32, mt: usize) {
        let rm = self.0.region_of(Pfn(pfn));
        let mt = MigrateType::from_bits(mt as u8).unwrap_or(MigrateType::Movable);
        let w = Buddy::<P>::buddy_word(rm, 0, mt, true);
        for i in 0..1u64 << order {
            self.0.page_word_of(rm, Pfn(pfn + i)).store(w);
        }
    }
}

/// The zone as the areas see it: [`ZoneSide`], except that a whole area is taken only while
/// the zone stays above its low watermark after giving it up.
pub(super) struct AreaZone<'a, P: Platform>(pub(super) ZoneSide<'a, P>);

impl<P: Platform> PcpZone for AreaZone<'_, P> {
    type Free = super::zone::FreeLists;
    #[inline]
    fn lock(&self) -> crate::base::sync::SpinGuard<'_, Self::Free> {
        self.0.lock()
    }
    fn take(&self, z: &mut Self::Free, order: u32, mt: usize) -> Option<u64> {
        let low = self.0.zone.wmark[1].load(Ordering::Relaxed);
        if z.free_pages < low + (1 << order) {
            return None;
        }
        self.0.take(z, order, mt)
    }
    fn give(&self, z: &mut Self::Free, pfn: u64, order: u32, mt: usize) {
        // Free pages inside an area carry order-0 words; a run leaves as one block with tails.
        let rm = self.0.mem.region_of(Pfn(pfn));
        if order > 0 && (order < AREA_ORDER || rm.region.layout == MemmapLayout::Flat) {
            for i in 1..1u64 << order {
                self.0.mem.page_word_of(rm, Pfn(pfn + i)).store(Word::TAIL);
            }
        }
        // On the free list of its pageblock's type now (it may have been isolated meanwhile).
        let now = rm.pageblock(Pfn(pfn)).load(Ordering::Relaxed);
        let mt = if MigrateType::from_bits(now).is_some() { now as usize } else { mt };
        self.0.give(z, pfn, order, mt)
    }
    #[inline]
    fn done(&self, z: &Self::Free) {
        self.0.done(z)
    }
}

impl<P: Platform> PageAllocator<P> {
    /// Pages sitting on per-CPU lists and free in CPU-local areas (exact while no CPU
    /// allocates or frees).
    pub(crate) fn pcp_pages(&self) -> u64 {
        let mut n = 0;
        for cpu in 0..self.cpus().nr() {
            for slot in 0..MAX_ZONE_SLOTS {
                if self.zones[slot].is_some() {
                    n += self.pcp_at(cpu, slot).pages() as u64;
                }
                if self.areas_ok[slot] {
                    n += self.areas_at(cpu, slot).free_pages();
                }
            }
        }
        n
    }

    /// The links of the per-CPU lists (and of the areas' remote lists).
    #[inline(always)]
    pub(crate) fn pcp_links(&self) -> DirectLinks<'_, P> {
        DirectLinks { platform: &self.platform, window: self.memmap.hot_window() }
    }

    #[inline]
    pub(crate) fn pcp_at(&self, cpu: usize, slot: usize) -> &Pcp {
        assert!(cpu < self.cpus().nr() && slot < MAX_ZONE_SLOTS);
        &self.pcp[cpu * MAX_ZONE_SLOTS + slot]
    }

    /// Calls `f(pfn, order, migratetype)` for every free block in CPU `cpu`'s areas of zone
    /// `slot` and on its remote list (at a quiescent point: the checker); the page count, or
    /// `Err((counted, recorded))` if a count disagrees.
    pub(crate) fn area_free_pages(
        &self,
        cpu: usize,
        slot: usize,
        f: impl FnMut(u64, u32, usize),
    ) -> Result<u64, (u64, u64)> {
        if !self.areas_ok[slot] {
            return Ok(0);
        }
        self.areas_at(cpu, slot).for_each_free(&AreaSide(self), f)
    }

    #[inline]
    pub(super) fn areas_at(&self, cpu: usize, slot: usize) -> &CpuAreas {
        &self.areas[cpu * MAX_ZONE_SLOTS + slot]
    }

    /// Gives every free page of `cpu`'s areas back to the buddy lists, with its token.
    pub(super) fn drain_areas_of(&self, cpu: &Cpu<'_>) {
        let id = self.cpu_id(cpu);
        for slot in 0..MAX_ZONE_SLOTS {
            let Some(zone) = self.zones[slot].as_ref().filter(|_| self.areas_ok[slot]) else { continue };
            self.areas_at(id, slot).drain(cpu, &AreaSide(self), &AreaZone(ZoneSide { mem: self, zone }));
        }
    }

    /// An allocation of `order <= AREA_MAX_ORDER` from `cpu`'s areas in zone `slot`; the tail
    /// words of the block are stamped here, its head word by the caller.
    #[inline]
    pub(super) fn area_alloc(
        &self,
        cpu: &Cpu<'_>,
        zone: &Zone,
        slot: usize,
        order: u32,
        mt: MigrateType,
    ) -> Option<Pfn> {
        let areas = self.areas_at(self.cpu_id(cpu), slot);
        let pfn =
            Pfn(areas.alloc(cpu, &AreaSide(self), &AreaZone(ZoneSide { mem: self, zone }), order, mt as usize)?);
        if order > 0 {
            let rm = self.region_of(pfn);
            for i in 1..1u64 << order {
                self.page_word_of(rm, pfn.add(i)).store(Word::TAIL);
            }
        }
        Some(pfn)
    }

    /// Serves a drain request another CPU posted for `cpu` (cpu.rs invariant 6): the owner's
    /// check at each allocation and per-CPU or area free, two loads of its own slot.
    #[inline(always)]
    pub(super) fn serve_requests(&self, cpu: &Cpu<'_>) {
        if let Some(asked) = cpu.pending(Request::Pages) {
            self.drain_own(cpu);
            cpu.ack(Request::Pages, asked);
        }
    }

    /// Gives every page on the lists and every free page in the areas of the CPU whose token
    /// is `cpu` (owned or borrowed) back to the buddy lists. Areas are the token holder's
    /// alone (area.rs invariants 2 and 5), so one request ([`Request::Pages`]) drains both.
    #[cold]
    pub(crate) fn drain_own(&self, cpu: &Cpu<'_>) {
        let id = self.cpu_id(cpu);
        if self.areas_ok.iter().any(|&ok| ok) {
            self.drain_areas_of(cpu);
        }
        let links = self.pcp_links();
        for slot in 0..MAX_ZONE_SLOTS {
            let Some(zone) = &self.zones[slot] else { continue };
            self.pcp_at(id, slot).drain_all(cpu, &links, &ZoneSide { mem: self, zone });
        }
    }

    /// Returns every page on CPU `cpu`'s per-CPU lists to the buddy lists, from any CPU: on a
    /// borrowed token if nobody holds CPU `cpu`, else by asking its owner and waiting a bounded
    /// time ([`DrainReport::busy`] if it does not answer). A caller holding CPU `cpu` itself
    /// uses [`PageAllocator::drain_all_from`].
    pub(crate) fn drain_cpu(&self, cpu: usize) -> DrainReport {
        if cpu >= self.cpus().nr() {
            return DrainReport::default();
        }
        match self.cpus().on_cpu(cpu, Request::Pages, DRAIN_SPINS, |t| self.drain_own(t)) {
            Remote::Borrowed | Remote::Acked => DrainReport::default(),
            Remote::Busy => DrainReport { busy: 1 << cpu },
        }
    }

    /// Drains every CPU's lists (before compaction, offlining, or when memory runs short). A
    /// caller holding a CPU token should use [`PageAllocator::drain_all_from`]: its own CPU
    /// would be reported busy here.
    pub(crate) fn drain_all(&self) -> DrainReport {
        let mut r = DrainReport::default();
        for cpu in 0..self.cpus().nr() {
            r.busy |= self.drain_cpu(cpu).busy;
        }
        r
    }

    /// [`PageAllocator::drain_all`] by the holder of `me`: its own lists directly, the others
    /// as `drain_cpu` does.
    pub(crate) fn drain_all_from(&self, me: &Cpu<'_>) -> DrainReport {
        let own = self.cpu_id(me);
        self.drain_own(me);
        let mut r = DrainReport::default();
        for cpu in (0..self.cpus().nr()).filter(|&c| c != own) {
            r.busy |= self.drain_cpu(cpu).busy;
        }
        r
    }

    /// An allocation from the caller's per-CPU list of zone `slot` (a pop, or a batch refill
    /// from the zone).
    #[inline]
    pub(super) fn pcp_alloc(
        &self,
        cpu: &Cpu<'_>,
        zone: &Zone,
        slot: usize,
        order: u32,
        mt: MigrateType,
    ) -> Option<Pfn> {
        let side = ZoneSide { mem: self, zone };
        self.pcp_at(self.cpu_id(cpu), slot).alloc(cpu, &self.pcp_links(), &side, order, mt as usize).map(Pfn)
    }

    /// A free onto the caller's per-CPU list of zone `slot` (its per-CPU free word already
    /// stamped).
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn pcp_free(
        &self,
        cpu: &Cpu<'_>,
        cpu_id: usize,
        zone: &Zone,
        slot: usize,
        pfn: Pfn,
        order: u32,
        mt: MigrateType,
    ) {
        let side = ZoneSide { mem: self, zone };
        self.pcp_at(cpu_id, slot).free(cpu, &self.pcp_links(), &side, pfn.0, order, mt as usize);
    }

    /// The drain that ends a fast per-CPU free ([`Pcp::push_owned`] found CPU `cpu_id`'s list
    /// of zone `slot`, a present zone, above `high`): a batch back to the zone. Out of line, so the fast path
    /// builds no zone side.
    #[cold]
    #[inline(never)]
    pub(super) fn pcp_drain_batch(&self, cpu: &Cpu<'_>, cpu_id: usize, slot: usize) {
        let zone = self.zones[slot].as_ref().expect("the fast paths serve only present zones");
        self.pcp_at(cpu_id, slot).drain_batch(cpu, &self.pcp_links(), &ZoneSide { mem: self, zone });
    }

    /// A free of a block of a CPU-held area back to that area (whichever CPU holds it);
    /// `false` if no CPU holds the block's area.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn area_free(
        &self,
        cpu: &Cpu<'_>,
        cpu_id: usize,
        zone: &Zone,
        slot: usize,
        pfn: Pfn,
        order: u32,
        mt: MigrateType,
    ) -> bool {
        let nr = self.cpus().nr();
        CpuAreas::free(
            self.areas_at(cpu_id, slot),
            cpu,
            |id| (id < nr).then(|| self.areas_at(id, slot)),
            &AreaSide(self),
            &AreaZone(ZoneSide { mem: self, zone }),
            pfn.0,
            order,
            mt as usize,
        )
    }
}
