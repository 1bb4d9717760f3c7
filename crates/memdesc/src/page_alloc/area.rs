//! CPU-local 2 MiB areas: a CPU takes whole free order-9 blocks ("areas", one pageblock) of one
//! migratetype from the buddy lists and serves its small allocations (orders
//! 0..=[`AREA_MAX_ORDER`]) inside them with nothing shared with other CPUs.
//!
//! Each CPU has [`SLOTS_PER_TYPE`] area slots per per-CPU migratetype (`CpuAreas`). A slot
//! holds the area's first pfn and a 512-bit free map (one bit per page, set = free) with its
//! count. The map is the per-area order-0 state of issue 14 item 2: it is 64 bytes on the
//! owner's own cache lines, placed at boot with the per-CPU data, so a running allocator
//! allocates nothing to track free memory, and an allocation is a find-first-set over at most
//! eight words instead of a walk of cold free pages (a list through the free pages, the other
//! choice, touches a cold page per pop and cannot find an aligned run of order 1..=3 without a
//! search).
//!
//! Invariants:
//! 1. An area is held by at most one CPU. It is taken from and given back to the buddy lists
//!    under the zone lock, and only by the holder of that CPU's token (its owner or a
//!    borrower, cpu.rs invariant 5); the holder records itself in the area's holder word
//!    (`AreaMem::set_holder`) after taking it and clears it before giving it back.
//! 2. A slot (its area, free map and count) is read and written only by the holder of its
//!    CPU's token, with plain relaxed loads and stores of its own lines: no lock, no
//!    read-modify-write. The token is the lock (cpu.rs invariants 4-5); borrows and claims are
//!    acquire/release, so a borrower sees the owner's last write.
//! 3. A free by any other CPU pushes the block onto the holder's remote list with a
//!    compare-and-swap of the list head (the only atomic other CPUs touch, on a line of its
//!    own). The token holder takes the whole list with one swap, so the list has one consumer
//!    and no ABA. The block's link lives in its own first word; the block is claimed by the
//!    freer (its page word is a tail word), so nothing else writes it meanwhile.
//! 4. The holder that takes a block off its remote list looks at its own slots: a block of an
//!    area it still holds becomes free in that area's map; any other block (its area was
//!    drained meanwhile) goes to the buddy lists.
//! 5. An area whose map becomes wholly free while another area of its migratetype is held goes
//!    back to the buddy lists as one order-9 block. A drain (`CpuAreas::drain`: memory
//!    pressure, compaction, offlining; run by the token holder through cpu.rs's request and
//!    borrow protocol) empties the remote list, gives every free run of every area to the buddy
//!    lists in maximal aligned blocks, and forgets the areas; pages still allocated from a
//!    drained area are freed to the buddy lists later (3, 4).
//! 6. When no held area of a migratetype can serve an allocation and every slot of that type
//!    is taken, the holder takes a new area from the buddy lists and, under the same zone lock,
//!    retires the fullest of them: as a drain of that one area (5), its free runs go to the
//!    buddy lists and its holder word is cleared, so its pages still allocated are freed to the
//!    buddy lists later. A CPU whose areas filled with long-lived pages keeps allocating from
//!    areas (without this, two full areas per type would end area allocation for good). If the
//!    zone has no free area, nothing is retired and the allocation falls back.

use crate::base::addr::{AREA_ORDER, AREA_PAGES};
use crate::base::cpu::Cpu;
use crate::base::pageblock::NR_PCP_TYPES;
use crate::base::sync::{AtomicU32, AtomicU64, Ordering};

use super::pcp::PcpZone;

/// Highest order served from CPU-local areas.
pub const AREA_MAX_ORDER: u32 = 3;
/// Areas a CPU holds at most per migratetype.
pub const SLOTS_PER_TYPE: usize = 2;
/// The holder word of an area no CPU holds.
pub(crate) const NO_CPU: u32 = u32::MAX;

const WORDS: usize = (AREA_PAGES / 64) as usize;
const EMPTY: u64 = u64::MAX;

/// The page side of the areas: holder words, links of blocks on remote lists, and the page
/// words of blocks that become free inside an area. The page allocator implements it over the
/// memmap; the tests and loom models over stand-ins.
pub(crate) trait AreaMem {
    /// The CPU holding the area that starts at `area`, or [`NO_CPU`].
    fn holder(&self, area: u64) -> u32;
    /// Records the holder of the area at `area` (invariant 1: only the token holder writes).
    fn set_holder(&self, area: u64, cpu: u32);
    /// The link stored in the first word of the claimed block at `pfn`.
    fn next(&self, pfn: u64) -> u64;
    /// Stores a link in the first word of the claimed block at `pfn`.
    fn set_next(&self, pfn: u64, next: u64);
    /// The block `[pfn, pfn + 2^order)` of migratetype `mt` became free inside its CPU's area:
    /// stamp its words.
    fn mark_free(&self, pfn: u64, order: u32, mt: usize);
    /// A CPU just took the area at `area` for migratetype `mt`: stamp every page of it free
    /// inside the area (a two-level area is split first, its word table taking its first
    /// page). Returns how many leading pages the area's own word table took (0 or 1).
    fn mark_area(&self, area: u64, mt: usize) -> u64;
    /// The claimed block `[pfn, pfn + 2^order)` is about to go onto its holder's remote list:
    /// stamp its head word free (so a second free of it is a double free at once).
    fn mark_pending(&self, pfn: u64, order: u32, mt: usize);
}

/// One held area: its first pfn ([`EMPTY`] if none), free pages and free map (invariant 2).
#[repr(align(128))]
struct Slot {
    base: AtomicU64,
    free: AtomicU32,
    /// Pages of the area it can serve (512, less a word table at its start).
    cap: AtomicU32,
    map: [AtomicU64; WORDS],
}

/// The remote-free list head of one CPU and the pages on it, on a line of its own
/// (invariant 3). A pusher adds its pages before its push and the token holder subtracts them
/// after taking the list, so the count is never below the list's pages.
#[repr(align(128))]
struct RemoteHead {
    head: AtomicU64,
    pages: AtomicU64,
}

/// One CPU's areas, per migratetype, and its remote-free list.
pub(crate) struct CpuAreas {
    id: u32,
    slots: [[Slot; SLOTS_PER_TYPE]; NR_PCP_TYPES],
    /// Allocations from and frees by this CPU through its areas (owner-local, invariant 2).
    allocs: AtomicU64,
    frees: AtomicU64,
    remote: RemoteHead,
}

/// An owner-local count: a load and a store, no read-modify-write (invariant 2).
#[inline]
fn bump(c: &AtomicU64) {
    c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

/// A remote-list entry: pfn, migratetype and order in one word (0 = end of list).
#[inline]
fn enc(pfn: u64, order: u32, mt: usize) -> u64 {
    ((pfn + 1) << 5) | ((mt as u64 & 7) << 2) | order as u64
}

#[inline]
fn dec(v: u64) -> (u64, u32, usize) {
    ((v >> 5) - 1, (v & 3) as u32, ((v >> 2) & 7) as usize)
}

/// Bits `i` with `i % 2^order == 0` whose run `[i, i + 2^order)` is all set in `w`.
#[inline]
fn runs(w: u64, order: u32) -> u64 {
    const ALIGNED: [u64; 4] = [!0, 0x5555_5555_5555_5555, 0x1111_1111_1111_1111, 0x0101_0101_0101_0101];
    let mut m = w;
    let mut s = 1;
    while s < 1 << order {
        m &= m >> s;
        s <<= 1;
    }
    m & ALIGNED[order as usize]
}

impl Slot {
    fn new() -> Self {
        Slot {
            base: AtomicU64::new(EMPTY),
            free: AtomicU32::new(0),
            cap: AtomicU32::new(0),
            map: core::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    #[inline]
    fn base(&self) -> u64 {
        self.base.load(Ordering::Relaxed)
    }

    /// Takes an aligned free run of `order` from the map; its offset in the area.
    #[inline]
    fn take(&self, order: u32) -> Option<u64> {
        if self.free.load(Ordering::Relaxed) < 1 << order {
            return None;
        }
        for (i, word) in self.map.iter().enumerate() {
            let w = word.load(Ordering::Relaxed);
            let r = runs(w, order);
            if r != 0 {
                let bit = r.trailing_zeros();
                let mask = (u64::MAX >> (64 - (1u32 << order))) << bit;
                word.store(w & !mask, Ordering::Relaxed);
                self.free.store(self.free.load(Ordering::Relaxed) - (1 << order), Ordering::Relaxed);
                return Some(i as u64 * 64 + bit as u64);
            }
        }
        None
    }

    /// Marks the run at offset `off` of `order` free; the free count after.
    #[inline]
    fn put(&self, off: u64, order: u32) -> u32 {
        let (i, bit) = ((off / 64) as usize, off % 64);
        let mask = (u64::MAX >> (64 - (1u32 << order))) << bit;
        let w = self.map[i].load(Ordering::Relaxed);
        debug_assert_eq!(w & mask, 0, "a page freed twice into its area");
        self.map[i].store(w | mask, Ordering::Relaxed);
        let free = self.free.load(Ordering::Relaxed) + (1 << order);
        self.free.store(free, Ordering::Relaxed);
        free
    }

    /// Whether pages `[off, off + 2^order)` are all free.
    fn all_free(&self, off: u64, order: u32) -> bool {
        if order >= 6 {
            let (first, n) = ((off / 64) as usize, 1usize << (order - 6));
            return self.map[first..first + n].iter().all(|w| w.load(Ordering::Relaxed) == u64::MAX);
        }
        let mask = (u64::MAX >> (64 - (1u32 << order))) << (off % 64);
        self.map[(off / 64) as usize].load(Ordering::Relaxed) & mask == mask
    }

    /// Calls `f(offset, order)` for the free pages in maximal aligned blocks, then empties the
    /// slot.
    fn drain(&self, mut f: impl FnMut(u64, u32)) {
        let mut off = 0;
        while off < AREA_PAGES {
            if !self.all_free(off, 0) {
                off += 1;
                continue;
            }
            let mut order = off.trailing_zeros().min(AREA_ORDER);
            while order > 0 && !self.all_free(off, order) {
                order -= 1;
            }
            f(off, order);
            off += 1 << order;
        }
        self.clear();
    }

    fn clear(&self) {
        for w in &self.map {
            w.store(0, Ordering::Relaxed);
        }
        self.free.store(0, Ordering::Relaxed);
        self.cap.store(0, Ordering::Relaxed);
        self.base.store(EMPTY, Ordering::Relaxed);
    }
}

impl CpuAreas {
    /// The areas of CPU `id`, none held yet.
    pub(crate) fn new(id: usize) -> Self {
        CpuAreas {
            id: id as u32,
            slots: core::array::from_fn(|_| core::array::from_fn(|_| Slot::new())),
            allocs: AtomicU64::new(0),
            frees: AtomicU64::new(0),
            remote: RemoteHead { head: AtomicU64::new(0), pages: AtomicU64::new(0) },
        }
    }

    #[inline]
    fn check(&self, cpu: &Cpu<'_>) {
        assert_eq!(cpu.id() as u32, self.id, "areas of another CPU");
    }

    /// Allocates a block of `order` (at most [`AREA_MAX_ORDER`]) and migratetype `mt` from this
    /// CPU's areas, taking a new area from `zone` if none has room (into an empty slot, or
    /// retiring the fullest area: invariant 6). `None` if the zone has no free area: the caller
    /// falls back to the per-CPU lists and the buddy lists.
    #[inline]
    pub(crate) fn alloc(
        &self,
        cpu: &Cpu<'_>,
        mem: &impl AreaMem,
        zone: &impl PcpZone,
        order: u32,
        mt: usize,
    ) -> Option<u64> {
        self.check(cpu);
        debug_assert!(order <= AREA_MAX_ORDER && mt < NR_PCP_TYPES);
        self.take_remote(mem, zone);
        let slots = &self.slots[mt];
        for s in slots {
            if s.base() != EMPTY {
                if let Some(off) = s.take(order) {
                    bump(&self.allocs);
                    return Some(s.base() + off);
                }
            }
        }
        // An empty slot, else the fullest area is retired for a new one (invariant 6).
        let s = match slots.iter().find(|s| s.base() == EMPTY) {
            Some(s) => s,
            None => slots.iter().min_by_key(|s| s.free.load(Ordering::Relaxed))?,
        };
        let base = {
            let mut z = zone.lock();
            let base = zone.take(&mut z, AREA_ORDER, mt);
            if base.is_some() && s.base() != EMPTY {
                let old = s.base();
                mem.set_holder(old, NO_CPU);
                s.drain(|off, order| zone.give(&mut z, old + off, order, mt));
            }
            zone.done(&z);
            base?
        };
        mem.set_holder(base, self.id);
        let table = mem.mark_area(base, mt).min(64);
        for w in &s.map {
            w.store(u64::MAX, Ordering::Relaxed);
        }
        s.map[0].store(u64::MAX.checked_shl(table as u32).unwrap_or(0), Ordering::Relaxed);
        let cap = (AREA_PAGES - table) as u32;
        s.free.store(cap, Ordering::Relaxed);
        s.cap.store(cap, Ordering::Relaxed);
        s.base.store(base, Ordering::Relaxed);
        let off = s.take(order)?;
        bump(&self.allocs);
        Some(base + off)
    }

    /// Frees the claimed block `pfn` of `order` from CPU `cpu` (`mt`: its pageblock's
    /// migratetype now, any type; a held area's pages go back to its slot whatever it is), whose
    /// areas are `mine`; `of(id)` gives CPU `id`'s areas. Returns `false` if no CPU holds the
    /// block's area: the caller frees it to the buddy lists.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn free<'a>(
        mine: &'a CpuAreas,
        cpu: &Cpu<'_>,
        of: impl Fn(usize) -> Option<&'a CpuAreas>,
        mem: &impl AreaMem,
        zone: &impl PcpZone,
        pfn: u64,
        order: u32,
        mt: usize,
    ) -> bool {
        mine.check(cpu);
        let area = pfn & !(AREA_PAGES - 1);
        if let Some((smt, s)) = mine.find(area) {
            mem.mark_free(pfn, order, smt);
            mine.put_back(s, mem, zone, pfn - area, order, smt);
            bump(&mine.frees);
            return true;
        }
        let holder = mem.holder(area);
        if holder == NO_CPU || holder == mine.id {
            // Held by nobody (this CPU's own holder words are exact for it: invariant 1).
            return false;
        }
        let Some(target) = of(holder as usize) else { return false };
        target.push_remote(mem, pfn, order, mt);
        bump(&mine.frees);
        true
    }

    /// The slot holding the area at `area`, with its migratetype.
    #[inline]
    fn find(&self, area: u64) -> Option<(usize, &Slot)> {
        self.slots.iter().enumerate().find_map(|(mt, ss)| ss.iter().find(|s| s.base() == area).map(|s| (mt, s)))
    }

    /// Marks a run free in `s`; gives the area back whole if it became wholly free and another
    /// area of its type is held (invariant 5).
    #[inline]
    fn put_back(&self, s: &Slot, mem: &impl AreaMem, zone: &impl PcpZone, off: u64, order: u32, mt: usize) {
        if s.put(off, order) == s.cap.load(Ordering::Relaxed)
            && self.slots[mt].iter().any(|o| !core::ptr::eq(o, s) && o.base() != EMPTY)
        {
            // Wholly free: one order-9 block (a flat area), or its 511 pages, which the buddy
            // merges and unsplits (a two-level area).
            let base = s.base();
            mem.set_holder(base, NO_CPU);
            let mut z = zone.lock();
            s.drain(|off, order| zone.give(&mut z, base + off, order, mt));
            zone.done(&z);
        }
    }

    /// Pushes a claimed block onto this CPU's remote list (invariant 3). Any CPU may call it.
    fn push_remote(&self, mem: &impl AreaMem, pfn: u64, order: u32, mt: usize) {
        let e = enc(pfn, order, mt);
        let head = &self.remote.head;
        mem.mark_pending(pfn, order, mt);
        self.remote.pages.fetch_add(1 << order, Ordering::Relaxed);
        #[cfg(all(test, loom))]
        if crate::base::sync::mutation::active(crate::base::sync::Mutation::AreaPushNoCas) {
            // The broken push the model must catch: load, link, store.
            let h = head.load(Ordering::Acquire);
            mem.set_next(pfn, h);
            head.store(e, Ordering::Release);
            return;
        }
        let mut h = head.load(Ordering::Relaxed);
        loop {
            mem.set_next(pfn, h);
            match head.compare_exchange_weak(h, e, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return,
                Err(now) => h = now,
            }
        }
    }

    /// Takes this CPU's remote list (one load when empty) and frees its blocks (invariant 4).
    /// Called by the token holder.
    #[inline]
    fn take_remote(&self, mem: &impl AreaMem, zone: &impl PcpZone) {
        if self.remote.head.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut e = self.remote.head.swap(0, Ordering::Acquire);
        let mut pages = 0;
        while e != 0 {
            let (pfn, order, mt) = dec(e);
            pages += 1 << order;
            e = mem.next(pfn);
            let area = pfn & !(AREA_PAGES - 1);
            if let Some((smt, s)) = self.find(area) {
                mem.mark_free(pfn, order, smt);
                self.put_back(s, mem, zone, pfn - area, order, smt);
            } else {
                let mut z = zone.lock();
                zone.give(&mut z, pfn, order, mt);
                zone.done(&z);
            }
        }
        self.remote.pages.fetch_sub(pages, Ordering::Relaxed);
    }

    /// Gives everything back to the buddy lists (invariant 5): the remote list, then every free
    /// run of every held area. Called with this CPU's token (the owner, or a borrower through
    /// `CpuSet::on_cpu`).
    pub(crate) fn drain(&self, cpu: &Cpu<'_>, mem: &impl AreaMem, zone: &impl PcpZone) {
        self.check(cpu);
        self.take_remote(mem, zone);
        for (mt, slots) in self.slots.iter().enumerate() {
            for s in slots {
                let base = s.base();
                if base == EMPTY {
                    continue;
                }
                mem.set_holder(base, NO_CPU);
                let mut z = zone.lock();
                s.drain(|off, order| zone.give(&mut z, base + off, order, mt));
                zone.done(&z);
            }
        }
    }

    /// Free pages in this CPU's areas and on its remote list (a snapshot: exact only for the
    /// token holder). The word table of a held two-level area is not free memory: it is a
    /// split area's table like any other (the memmap counts it), and becomes free only when
    /// the buddy makes the area uniform again, which a drain does only if no page of the area
    /// is still allocated.
    pub(crate) fn free_pages(&self) -> u64 {
        let remote = self.remote.pages.load(Ordering::Relaxed);
        self.slots.iter().flatten().map(|s| s.free.load(Ordering::Relaxed) as u64).sum::<u64>() + remote
    }

    /// Calls `f(pfn, order, migratetype)` for every free page in this CPU's areas and every
    /// block on its remote list, and returns how many pages there were; `Err((counted,
    /// recorded))` for an area or list whose count disagrees. Only at a quiescent point (the
    /// list is walked through the blocks' links).
    pub(crate) fn for_each_free(
        &self,
        mem: &impl AreaMem,
        mut f: impl FnMut(u64, u32, usize),
    ) -> Result<u64, (u64, u64)> {
        let mut n = 0;
        let (mut e, mut listed) = (self.remote.head.load(Ordering::Acquire), 0);
        while e != 0 {
            let (pfn, order, mt) = dec(e);
            f(pfn, order, mt);
            listed += 1u64 << order;
            e = mem.next(pfn);
        }
        let recorded = self.remote.pages.load(Ordering::Relaxed);
        if listed != recorded {
            return Err((listed, recorded));
        }
        n += listed;
        for (mt, slots) in self.slots.iter().enumerate() {
            for s in slots {
                let (base, mut here) = (s.base(), 0u64);
                for (i, w) in s.map.iter().enumerate() {
                    let mut w = w.load(Ordering::Relaxed);
                    while w != 0 {
                        f(base + i as u64 * 64 + w.trailing_zeros() as u64, 0, mt);
                        w &= w - 1;
                        here += 1;
                    }
                }
                n += here;
                let recorded = s.free.load(Ordering::Relaxed) as u64;
                if here != recorded {
                    return Err((here, recorded));
                }
            }
        }
        Ok(n)
    }

    /// Allocations from and frees by this CPU through areas (a snapshot).
    pub(crate) fn counts(&self) -> (u64, u64) {
        (self.allocs.load(Ordering::Relaxed), self.frees.load(Ordering::Relaxed))
    }

    /// Areas this CPU holds now (a snapshot).
    #[cfg(all(test, not(loom)))]
    pub(crate) fn held(&self) -> usize {
        self.slots.iter().flatten().filter(|s| s.base() != EMPTY).count()
    }
}

/// A stand-in zone for the tests and loom models: free blocks as (pfn, order) behind a real
/// spin lock; giving a block that overlaps a free one panics ("freed twice").
#[cfg(test)]
pub(crate) mod stand_in {
    use super::PcpZone;
    use crate::base::sync::{SpinGuard, SpinLock};
    use std::vec::Vec;

    pub(crate) struct RangeZone(pub(crate) SpinLock<Vec<(u64, u32)>>);
    impl RangeZone {
        pub(crate) fn new(free: &[(u64, u32)]) -> Self {
            RangeZone(SpinLock::new(free.to_vec()))
        }
    }
    impl PcpZone for RangeZone {
        type Free = Vec<(u64, u32)>;
        fn lock(&self) -> SpinGuard<'_, Self::Free> {
            self.0.lock()
        }
        fn take(&self, z: &mut Self::Free, order: u32, _: usize) -> Option<u64> {
            let i = z.iter().rposition(|&(_, o)| o == order)?;
            Some(z.swap_remove(i).0)
        }
        fn give(&self, z: &mut Self::Free, pfn: u64, order: u32, _: usize) {
            let end = pfn + (1 << order);
            assert!(
                !z.iter().any(|&(p, o)| p < end && pfn < p + (1 << o)),
                "page {pfn} (order {order}) freed twice into the zone"
            );
            z.push((pfn, order));
        }
        fn done(&self, _: &Self::Free) {}
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::stand_in::RangeZone;
    use super::*;
    use crate::base::cpu::CpuSet;
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::vec::Vec;

    #[derive(Default)]
    struct Mem {
        holder: RefCell<HashMap<u64, u32>>,
        links: RefCell<HashMap<u64, u64>>,
    }
    impl AreaMem for Mem {
        fn holder(&self, area: u64) -> u32 {
            *self.holder.borrow().get(&area).unwrap_or(&NO_CPU)
        }
        fn set_holder(&self, area: u64, cpu: u32) {
            self.holder.borrow_mut().insert(area, cpu);
        }
        fn next(&self, pfn: u64) -> u64 {
            self.links.borrow()[&pfn]
        }
        fn set_next(&self, pfn: u64, next: u64) {
            self.links.borrow_mut().insert(pfn, next);
        }
        fn mark_free(&self, _: u64, _: u32, _: usize) {}
        fn mark_pending(&self, _: u64, _: u32, _: usize) {}
        fn mark_area(&self, _: u64, _: usize) -> u64 {
            0
        }
    }

    #[test]
    fn runs_find_aligned_free_blocks() {
        assert_eq!(runs(0b1110, 1), 0b0100);
        assert_eq!(runs(0xF0, 2), 0x10);
        assert_eq!(runs(0x7F << 1, 3), 0);
        assert_eq!(runs(0xFF << 8, 3), 1 << 8);
        assert!(enc(0, 0, 0) != 0);
        assert_eq!(dec(enc(12345, 3, 4)), (12345, 3, 4));
    }

    #[test]
    fn owner_allocates_frees_and_returns_a_whole_area() {
        let set = CpuSet::new(2);
        let cpu = set.claim(0).unwrap();
        let (mem, zone) = (Mem::default(), RangeZone::new(&[(0, 9), (512, 9)]));
        let a = CpuAreas::new(0);
        let of = |_| None;
        // Orders 3, 0 and 1 from one area, aligned and disjoint.
        let p3 = a.alloc(&cpu, &mem, &zone, 3, 0).unwrap();
        let p0 = a.alloc(&cpu, &mem, &zone, 0, 0).unwrap();
        let p1 = a.alloc(&cpu, &mem, &zone, 1, 0).unwrap();
        assert_eq!(p3 % 8, 0);
        assert_eq!(p1 % 2, 0);
        assert_eq!(p3 & !511, p0 & !511, "one area serves all small orders");
        assert!(p0 < p3 || p0 >= p3 + 8);
        assert_eq!(a.held(), 1);
        assert_eq!(mem.holder(p0 & !511), 0);
        assert_eq!(a.free_pages(), 512 - 11);
        for (p, o) in [(p3, 3), (p0, 0), (p1, 1)] {
            assert!(CpuAreas::free(&a, &cpu, of, &mem, &zone, p, o, 0));
        }
        // The only area of its type stays held (no ping-pong) and wholly free.
        assert_eq!((a.held(), a.free_pages()), (1, 512));
        a.drain(&cpu, &mem, &zone);
        assert_eq!(a.held(), 0);
        let z = zone.0.lock();
        assert!(z.contains(&(0, 9)) || z.contains(&(512, 9)), "a wholly free area goes back as order 9: {:?}", &z[..]);
        assert_eq!(z.iter().map(|&(_, o)| 1u64 << o).sum::<u64>(), 1024);
    }

    #[test]
    fn drain_gives_maximal_blocks_and_later_frees_reach_the_buddy() {
        let set = CpuSet::new(2);
        let (c0, c1) = (set.claim(0).unwrap(), set.claim(1).unwrap());
        let (mem, zone) = (Mem::default(), RangeZone::new(&[(1024, 9)]));
        let (a0, a1) = (CpuAreas::new(0), CpuAreas::new(1));
        let of = |id: usize| Some(if id == 0 { &a0 } else { &a1 });
        let got: Vec<u64> = (0..3).map(|_| a0.alloc(&c0, &mem, &zone, 0, 1).unwrap()).collect();
        assert_eq!(got, [1024, 1025, 1026]);
        // CPU 1 frees one of CPU 0's pages: it goes on CPU 0's remote list.
        assert!(CpuAreas::free(&a1, &c1, of, &mem, &zone, 1025, 0, 1));
        assert_eq!(a0.free_pages(), 510, "counted free while on the remote list");
        assert_eq!(a0.slots[1][0].free.load(Ordering::Relaxed), 509, "applied at the owner's next operation");
        a0.drain(&c0, &mem, &zone);
        {
            let mut z = zone.0.lock();
            z.sort_unstable();
            // 1025 is back; 1024 and 1026 are still allocated.
            assert_eq!(
                &z[..],
                &[(1025, 0), (1027, 0), (1028, 2), (1032, 3), (1040, 4), (1056, 5), (1088, 6), (1152, 7), (1280, 8)]
            );
        }
        assert_eq!(mem.holder(1024), NO_CPU);
        // A free after the drain is not kept by any CPU.
        assert!(!CpuAreas::free(&a1, &c1, of, &mem, &zone, 1024, 0, 1));
    }

    #[test]
    fn full_areas_are_retired_for_new_ones() {
        let set = CpuSet::new(1);
        let cpu = set.claim(0).unwrap();
        let (mem, zone) = (Mem::default(), RangeZone::new(&[(0, 9), (512, 9), (1024, 9)]));
        let a = CpuAreas::new(0);
        let of = |_| None;
        // Two slots per type: the third area's pages come from the areas all the same.
        let got: Vec<u64> = (0..3 * 512).map(|_| a.alloc(&cpu, &mem, &zone, 0, 0).unwrap()).collect();
        assert_eq!(a.counts().0, 3 * 512);
        assert_eq!(a.held(), 2);
        let mut sorted = got.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 3 * 512, "every page once");
        // The retired area (full: nothing went back to the zone) has no holder: its pages are
        // freed to the buddy lists, not into an area.
        let retired = (0..3u64).map(|i| i * 512).find(|&b| mem.holder(b) == NO_CPU).expect("one area retired");
        assert!(zone.0.lock().is_empty());
        assert!(!CpuAreas::free(&a, &cpu, of, &mem, &zone, retired + 7, 0, 0));
        // A retired area with free pages gives them back: free a page of each held area, use up
        // the zone, then ask for an order-3 block (no held area has an aligned run of 8).
        let held: Vec<u64> = (0..3u64).map(|i| i * 512).filter(|&b| mem.holder(b) == 0).collect();
        for &b in &held {
            assert!(CpuAreas::free(&a, &cpu, of, &mem, &zone, b + 9, 0, 0));
        }
        assert!(a.alloc(&cpu, &mem, &zone, 3, 0).is_none(), "no free area: nothing retired");
        assert_eq!(a.held(), 2);
        zone.0.lock().push((2048, 9));
        let p = a.alloc(&cpu, &mem, &zone, 3, 0).unwrap();
        assert_eq!(p & !511, 2048);
        assert_eq!(a.held(), 2);
        // The retired one (fewest free pages: both had one, the first found) gave its page back.
        assert_eq!(zone.0.lock().iter().map(|&(_, o)| 1u64 << o).sum::<u64>(), 1);
        assert_eq!(held.iter().filter(|&&b| mem.holder(b) == NO_CPU).count(), 1);
    }

    #[test]
    fn a_second_wholly_free_area_goes_back() {
        let set = CpuSet::new(1);
        let cpu = set.claim(0).unwrap();
        let (mem, zone) = (Mem::default(), RangeZone::new(&[(0, 9), (512, 9)]));
        let a = CpuAreas::new(0);
        let of = |_| None;
        let first: Vec<u64> = (0..64).map(|_| a.alloc(&cpu, &mem, &zone, 3, 2).unwrap()).collect();
        let second = a.alloc(&cpu, &mem, &zone, 3, 2).unwrap();
        assert_eq!(a.held(), 2);
        assert_ne!(second & !511, first[0] & !511);
        assert!(a.alloc(&cpu, &mem, &zone, 0, 0).is_none(), "another type's area needs memory the zone lacks");
        for p in first {
            assert!(CpuAreas::free(&a, &cpu, of, &mem, &zone, p, 3, 2));
        }
        assert_eq!(a.held(), 1, "the wholly free area went back");
        assert_eq!(zone.0.lock().len(), 1);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::stand_in::RangeZone;
    use super::*;
    use crate::base::cpu::{CpuSet, Remote, Request};
    use crate::base::sync::{mutation, Mutation};
    use loom::sync::Arc;
    use std::vec::Vec;

    /// Holder words and links in loom atomics (links of the pages of one area, holders of two).
    struct Mem {
        holder: [AtomicU32; 2],
        links: [AtomicU64; 4],
    }
    impl AreaMem for Mem {
        fn holder(&self, area: u64) -> u32 {
            self.holder[(area / 512) as usize].load(Ordering::Relaxed)
        }
        fn set_holder(&self, area: u64, cpu: u32) {
            self.holder[(area / 512) as usize].store(cpu, Ordering::Relaxed)
        }
        fn next(&self, pfn: u64) -> u64 {
            self.links[pfn as usize].load(Ordering::Relaxed)
        }
        fn set_next(&self, pfn: u64, next: u64) {
            self.links[pfn as usize].store(next, Ordering::Relaxed)
        }
        fn mark_free(&self, _: u64, _: u32, _: usize) {}
        fn mark_pending(&self, _: u64, _: u32, _: usize) {}
        fn mark_area(&self, _: u64, _: usize) -> u64 {
            0
        }
    }

    /// CPU 0's owner allocates and frees in its area and answers drain requests; CPU 1 frees two
    /// of CPU 0's pages (remote frees); a third context drains CPU 0 through `on_cpu`. At the end
    /// CPU 0 drains once more and frees what it still has: the zone must hold all 512 pages, each
    /// once (the stand-in zone panics on a page given twice).
    fn owner_remote_free_and_drain() {
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(3);
        b.check(|| {
            let set = Arc::new(CpuSet::new(2));
            let mem = Arc::new(Mem {
                holder: core::array::from_fn(|_| AtomicU32::new(NO_CPU)),
                links: core::array::from_fn(|_| AtomicU64::new(0)),
            });
            let zone = Arc::new(RangeZone::new(&[(0, 9)]));
            let areas = Arc::new([CpuAreas::new(0), CpuAreas::new(1)]);
            let cpu = set.claim(0).unwrap();
            let a = areas[0].alloc(&cpu, &*mem, &*zone, 0, 0).unwrap();
            let r1 = areas[0].alloc(&cpu, &*mem, &*zone, 0, 0).unwrap();
            let r2 = areas[0].alloc(&cpu, &*mem, &*zone, 0, 0).unwrap();
            let remote = {
                let (set, mem, zone, areas) = (set.clone(), mem.clone(), zone.clone(), areas.clone());
                loom::thread::spawn(move || {
                    let c1 = set.claim(1).unwrap();
                    let of = |id: usize| areas.get(id);
                    for p in [r1, r2] {
                        if !CpuAreas::free(&areas[1], &c1, of, &*mem, &*zone, p, 0, 0) {
                            let mut z = zone.lock();
                            zone.give(&mut z, p, 0, 0);
                        }
                    }
                })
            };
            let drainer = {
                let (set, mem, zone, areas) = (set.clone(), mem.clone(), zone.clone(), areas.clone());
                loom::thread::spawn(move || set.on_cpu(0, Request::Pages, 1, |c| areas[0].drain(c, &*mem, &*zone)))
            };
            // The owner: free locally, allocate, answer a drain request, allocate again.
            let of = |id: usize| areas.get(id);
            let mut mine: Vec<u64> = Vec::new();
            if !CpuAreas::free(&areas[0], &cpu, of, &*mem, &*zone, a, 0, 0) {
                let mut z = zone.lock();
                zone.give(&mut z, a, 0, 0);
            }
            if let Some(asked) = cpu.pending(Request::Pages) {
                areas[0].drain(&cpu, &*mem, &*zone);
                cpu.ack(Request::Pages, asked);
            }
            mine.extend(areas[0].alloc(&cpu, &*mem, &*zone, 0, 0));
            drop(cpu);
            remote.join().unwrap();
            let r = drainer.join().unwrap();
            assert!(matches!(r, Remote::Borrowed | Remote::Acked | Remote::Busy));
            let cpu = set.claim(0).unwrap();
            areas[0].drain(&cpu, &*mem, &*zone);
            for p in mine {
                if !CpuAreas::free(&areas[0], &cpu, of, &*mem, &*zone, p, 0, 0) {
                    let mut z = zone.lock();
                    zone.give(&mut z, p, 0, 0);
                }
            }
            areas[0].drain(&cpu, &*mem, &*zone);
            let pages: u64 = zone.0.lock().iter().map(|&(_, o)| 1u64 << o).sum();
            assert_eq!(pages, 512, "a page was lost");
        });
    }

    #[test]
    fn loom_area_owner_remote_free_and_drain() {
        owner_remote_free_and_drain();
    }

    /// The same model with the remote push done as load, link, store must fail: a block the
    /// owner already took off the list comes back onto it and is freed twice, or one is lost.
    #[test]
    #[should_panic(expected = "page")]
    fn loom_area_fails_when_remote_push_is_not_a_cas() {
        mutation::with(Mutation::AreaPushNoCas, owner_remote_free_and_drain);
    }
}
