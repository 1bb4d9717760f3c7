//! Memory offlining: [`PhysMem::offline_range`] takes a whole pfn range away from the
//! allocator (as memory hot-unplug does) and [`PhysMem::online_range`] gives it back.
//!
//! Offlining a range:
//! 1. **isolates** its pageblocks (migratetype [`MigrateType::Isolate`]: the allocator never
//!    allocates from isolate lists and never merges them with other types), drains the
//!    per-CPU lists and moves the range's free blocks onto the isolate lists;
//! 2. walks the range by words and **migrates** every movable page out (to memory outside,
//!    since the range cannot be allocated from): folios, mapped ones included (their
//!    page-table entries follow through the reverse map), and zsmalloc / z3fold pages
//!    (through their pools); the old pages, freed, land on the isolate lists;
//! 3. **takes** every free block of the range off the lists and stamps its head
//!    `Undescribed { Offline, order }` (the other pages keep tail words); the zone's managed
//!    pages shrink by the range.
//!
//! If something in the range cannot move (slab, raw kernel memory, reserved, poisoned or
//! ballooned pages, a folio mapped without reverse map, a busy folio or pool page), offlining **fails cleanly**: the pageblocks
//! get their previous migratetypes back and their free memory returns to those lists (merged
//! again); folios already migrated stay at their new place, so nothing is lost.
//!
//! Ranges must be aligned to `2^max_order` pages (so no free block straddles an edge), lie in
//! one flat region, and span at most [`MAX_OFFLINE_PAGEBLOCKS`] pageblocks (one 128 MiB memory
//! block, like Linux's hot-plug granularity) per call. Offlined pageblocks stay isolated until
//! onlined.
//!
//! This module touches zone free lists (under the zone lock), page words and pageblock bytes of
//! the range, and folios through [`crate::migrate`].

use super::kinds::OfflineOp;
use crate::addr::{Pfn, AREA_PAGES};
use crate::cpu::Cpu;
use crate::gfp::Gfp;
use crate::isolate::IsolateError;
use crate::migrate::{movable, MigrateError, Movable};
use crate::pageblock::MigrateType;
use crate::platform::Platform;
use crate::sync::Ordering;
use crate::word::{PageKind, Subtype, Tag, Word};
use crate::PhysMem;

/// Most pageblocks one `offline_range` call handles (64 × 2 MiB = 128 MiB).
pub const MAX_OFFLINE_PAGEBLOCKS: usize = 64;

/// Why offlining or onlining failed. For `offline_range` the range's previous state is
/// restored (pageblock types, free memory); migrated folios stay migrated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OfflineError {
    /// The range is empty or not aligned to `2^max_order` pages.
    Misaligned {
        /// Start asked for.
        start: Pfn,
        /// End asked for.
        end: Pfn,
    },
    /// The range spans more than [`MAX_OFFLINE_PAGEBLOCKS`] pageblocks.
    TooLarge,
    /// The range is not inside one flat region.
    Region(IsolateError),
    /// Part of the range is already isolated (being offlined, or offline).
    AlreadyIsolated(Pfn),
    /// A page could not be moved out.
    Unmovable {
        /// The page.
        pfn: Pfn,
        /// Why.
        why: MigrateError,
    },
    /// `online_range`: a page of the range is not offline.
    NotOffline(Pfn),
}

impl core::fmt::Display for OfflineError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            OfflineError::Misaligned { start, end } => write!(f, "range {start}..{end} is empty or misaligned"),
            OfflineError::TooLarge => write!(f, "range spans more than {MAX_OFFLINE_PAGEBLOCKS} pageblocks"),
            OfflineError::Region(e) => write!(f, "{e}"),
            OfflineError::AlreadyIsolated(p) => write!(f, "pageblock at {p} is already isolated"),
            OfflineError::Unmovable { pfn, why } => write!(f, "pfn {pfn} cannot be moved: {why}"),
            OfflineError::NotOffline(p) => write!(f, "pfn {p} is not offline"),
        }
    }
}

impl core::error::Error for OfflineError {}

/// What an offlining did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OfflineReport {
    /// Pages now offline.
    pub pages: u64,
    /// Folios migrated out.
    pub migrated_folios: u64,
    /// zsmalloc and z3fold pages migrated out.
    pub migrated_pool_pages: u64,
    /// Pages of those folios.
    pub migrated_pages: u64,
}

impl<P: Platform> PhysMem<P> {
    fn check_range(&self, start: Pfn, end: Pfn) -> Result<(), OfflineError> {
        let mo = self.config().max_order;
        if start >= end || !start.is_aligned(mo) || !end.is_aligned(mo) {
            return Err(OfflineError::Misaligned { start, end });
        }
        if (end.0 - start.0) / AREA_PAGES > MAX_OFFLINE_PAGEBLOCKS as u64 {
            return Err(OfflineError::TooLarge);
        }
        let (rm, _) = self.pages().flat_ctx(start).map_err(OfflineError::Region)?;
        if end > rm.region.end {
            return Err(OfflineError::Region(IsolateError::OutOfRange(end)));
        }
        Ok(())
    }

    /// Takes `[start, end)` offline (see the module docs). On error the range is as before.
    pub fn offline_range(&self, cpu: &Cpu<'_>, start: Pfn, end: Pfn) -> Result<OfflineReport, OfflineError> {
        self.check_range(start, end)?;
        let (rm, zone) = self.pages().flat_ctx(start).map_err(OfflineError::Region)?;
        let nr_pb = ((end.0 - start.0) / AREA_PAGES) as usize;
        let mut saved = [MigrateType::Movable; MAX_OFFLINE_PAGEBLOCKS];
        for (i, s) in saved.iter_mut().enumerate().take(nr_pb) {
            let pb = start.add(i as u64 * AREA_PAGES);
            let mt = MigrateType::from_bits(rm.pageblock(pb).load(Ordering::Relaxed)).unwrap_or(MigrateType::Movable);
            if mt == MigrateType::Isolate {
                return Err(OfflineError::AlreadyIsolated(pb));
            }
            *s = mt;
        }
        self.pages().set_pageblocks(rm, start, end, MigrateType::Isolate);
        self.drain_all();
        self.pages().refile_range(zone, rm, start, end, MigrateType::Isolate);
        let restore = |why: OfflineError| {
            for (i, &mt) in saved.iter().enumerate().take(nr_pb) {
                let pb = start.add(i as u64 * AREA_PAGES);
                rm.pageblock(pb).store(mt as u8, Ordering::Relaxed);
            }
            self.drain_all();
            for (i, &mt) in saved.iter().enumerate().take(nr_pb) {
                let pb = start.add(i as u64 * AREA_PAGES);
                self.pages().refile_range(zone, rm, pb, pb.add(AREA_PAGES), mt);
            }
            Err(why)
        };
        let mut rep = OfflineReport::default();
        let mut pfn = start;
        let mut tries = 0;
        while pfn < end {
            let word = rm.flat_word(pfn).load();
            match word.kind() {
                PageKind::Buddy(b) if b.pcp => {
                    self.drain_all();
                    self.pages().refile_range(zone, rm, start, end, MigrateType::Isolate);
                }
                PageKind::Buddy(b) => pfn = pfn.add(1 << b.order),
                PageKind::Undescribed(u) if u.subtype == Subtype::Tail => pfn = pfn.add(1),
                PageKind::Undescribed(_) => {
                    return restore(OfflineError::Unmovable {
                        pfn,
                        why: MigrateError::NotMovable { pfn, tag: Tag::Undescribed },
                    });
                }
                _ => {
                    // In use: what offlining does with it is its kind's (health::kinds).
                    let refuse = super::kinds::of_word(word).is_some_and(|k| k.offline == OfflineOp::Refuse);
                    let moved = if refuse {
                        Err(MigrateError::NotMovable { pfn, tag: word.tag().unwrap_or(Tag::Undescribed) })
                    } else {
                        movable(pfn, word)
                    };
                    let (folio, file) = match moved {
                        Ok(Movable::Folio { folio, file }) => (folio, file),
                        Ok(mv) => {
                            match self.migrate_pool_page(cpu, pfn, mv == Movable::Z3fold, None) {
                                Ok(_) => {
                                    rep.migrated_pool_pages += 1;
                                    pfn = pfn.add(1);
                                    tries = 0;
                                }
                                Err(MigrateError::Busy(_)) if tries < 3 => tries += 1,
                                Err(why) => return restore(OfflineError::Unmovable { pfn, why }),
                            }
                            continue;
                        }
                        Err(why) => return restore(OfflineError::Unmovable { pfn, why }),
                    };
                    // Folio descriptors are TYPESAFE_BY_RCU; the guard is held until
                    // migrate_to has frozen and revalidated the folio.
                    let rcu = self.rcu().read_lock(cpu);
                    let f = crate::desc_ref::rcu(&rcu, folio);
                    let (fpfn, order) = (f.flags.pfn(), f.flags.order());
                    let r = self
                        .pages()
                        .alloc_with(cpu, order, Gfp::MOVABLE | Gfp::NOWARN, |_| Word::TAIL)
                        .map_err(MigrateError::NoTarget)
                        .and_then(|new| {
                            self.migrate_to(cpu, f, file, (fpfn, order), new).inspect_err(|_| {
                                let nrm = self.memmap().region_map(self.memmap().region_index(new).expect("allocated"));
                                self.pages().free_claimed(cpu, nrm, new, order);
                            })
                        });
                    match r {
                        Ok(()) => {
                            rep.migrated_folios += 1;
                            rep.migrated_pages += 1 << order;
                            pfn = fpfn.add(1 << order).max(pfn.add(1));
                            tries = 0;
                        }
                        Err(MigrateError::Busy(_)) if tries < 3 => tries += 1,
                        Err(why) => return restore(OfflineError::Unmovable { pfn, why }),
                    }
                }
            }
        }
        // Everything in the range is free now (on the isolate lists): take it.
        self.drain_all();
        self.pages().refile_range(zone, rm, start, end, MigrateType::Isolate);
        {
            let buddy = self.pages().buddy();
            let mut fl = zone.lock.lock();
            let mut p = start;
            while p < end {
                match rm.flat_word(p).load().buddy_info() {
                    Some(b) if !b.pcp => p = p.add(1 << b.order),
                    _ => {
                        drop(fl);
                        return restore(OfflineError::Unmovable { pfn: p, why: MigrateError::Busy(p) });
                    }
                }
            }
            p = start;
            while p < end {
                let b = rm.flat_word(p).load().buddy_info().expect("checked free above");
                let k = b.order as u32;
                buddy.list_del(&mut fl, p, k, MigrateType::Isolate);
                fl.free_pages -= 1 << k;
                rm.flat_word(p).store(crate::page_alloc::PageAllocator::<P>::undesc_word(rm, Subtype::Offline, k));
                p = p.add(1 << k);
            }
            zone.free_pages.store(fl.free_pages, Ordering::Relaxed);
        }
        rep.pages = end.0 - start.0;
        zone.managed.fetch_sub(rep.pages, Ordering::Relaxed);
        self.pages().undesc().offline.fetch_add(rep.pages, Ordering::Relaxed);
        Ok(rep)
    }

    /// Brings a range taken offline by [`PhysMem::offline_range`] back: its pages return to the
    /// allocator as movable pageblocks. Fails, changing nothing, unless every page is offline.
    pub fn online_range(&self, start: Pfn, end: Pfn) -> Result<u64, OfflineError> {
        self.check_range(start, end)?;
        let (rm, zone) = self.pages().flat_ctx(start).map_err(OfflineError::Region)?;
        let mut p = start;
        while p < end {
            if !crate::page_alloc::PageAllocator::<P>::pageblock_isolated(rm, p) {
                return Err(OfflineError::NotOffline(p));
            }
            match rm.flat_word(p).load().undescribed_info() {
                Some(u) if u.subtype == Subtype::Offline && p.add(1 << u.order) <= end => p = p.add(1 << u.order),
                _ => return Err(OfflineError::NotOffline(p)),
            }
        }
        // Words first, then the pageblock types: while the range is still isolated nobody
        // else takes an `Offline` order-0 word of it for a balloon page (`Balloon::deflate`
        // skips isolated pageblocks), which it did between the two steps the other way round.
        let buddy = self.pages().buddy();
        let mut fl = zone.lock.lock();
        p = start;
        while p < end {
            let k = rm.flat_word(p).load().undescribed_info().map_or(0, |u| u.order as u32);
            rm.flat_word(p).store(Word::TAIL);
            buddy.free_block(&mut fl, p, k, MigrateType::Movable);
            p = p.add(1 << k);
        }
        zone.free_pages.store(fl.free_pages, Ordering::Relaxed);
        drop(fl);
        self.pages().set_pageblocks(rm, start, end, MigrateType::Movable);
        let pages = end.0 - start.0;
        zone.managed.fetch_add(pages, Ordering::Relaxed);
        self.pages().undesc().offline.fetch_sub(pages, Ordering::Relaxed);
        Ok(pages)
    }
}
