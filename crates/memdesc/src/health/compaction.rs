//! Memory compaction: builds free high-order blocks by migrating movable folios from the
//! bottom of a zone into free pages at its top.
//!
//! Per flat region of the zone, two scanners walk towards each other:
//! - the **migration scanner** walks pfns upward by their words (never assuming a head page:
//!   a free block is stepped over by its order, a folio by its own order, anything else one
//!   page at a time — a zsmalloc or z3fold page is order 0) and hands every movable page to
//!   [`crate::migrate`]: folios, mapped or not (their page-table entries are rewritten
//!   through the reverse map, page-cache folios keep their slots since the descriptor does
//!   not move), and zsmalloc / z3fold pages (through their pools);
//! - the **free scanner** walks pageblocks downward from the top and takes free blocks out of
//!   the buddy lists as migration targets (`take_free_block`'s splitting take, the
//!   highest aligned piece of the smallest free block that fits), only in movable pageblocks
//!   and skipping pageblocks that are entirely free already (breaking those up would defeat
//!   the purpose).
//!
//! They stop when they meet. The old pages of migrated folios are freed and merge into larger
//! blocks. What never moves is stepped over; movable pages that could not move this time (busy,
//! an object mapped, a folio mapped without reverse map) are counted as **failed**.
//!
//! A run reports pages scanned, folios and pages migrated, failures, and the zone's free-block
//! histogram (per order, all migratetypes) before and after.
//!
//! This module touches page words through the buddy code under the zone lock, and folios
//! through [`crate::migrate`]; two-level regions are skipped.

use crate::addr::{Pfn, AREA_ORDER, AREA_PAGES};
use crate::cpu::Cpu;
use crate::layout::MemmapLayout;
use crate::memmap::RegionMap;
use crate::migrate::{movable, Movable};
use crate::pageblock::MigrateType;
use crate::platform::Platform;
use crate::sync::Ordering;
use crate::word::{PageKind, Subtype};
use crate::zone::{Zone, MAX_ORDER_LIMIT};
use crate::PhysMem;

/// Free blocks per order (all migratetypes), index = order.
pub type FreeHistogram = [u64; MAX_ORDER_LIMIT as usize + 1];

/// What a compaction run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompactReport {
    /// Pages the migration scanner stepped over or examined.
    pub scanned: u64,
    /// Folios migrated.
    pub migrated: u64,
    /// Pages of those folios.
    pub migrated_pages: u64,
    /// Movable pages that could not be migrated (busy, mapped objects, no reverse map).
    pub failed: u64,
    /// Of the migrated, zsmalloc and z3fold pages.
    pub migrated_pool_pages: u64,
    /// Free blocks per order before the run.
    pub free_before: FreeHistogram,
    /// Free blocks per order after the run.
    pub free_after: FreeHistogram,
}

impl CompactReport {
    /// Free blocks of at least `order` after the run.
    pub fn blocks_at_least(&self, order: u32) -> u64 {
        self.free_after.iter().skip(order as usize).sum()
    }
}

/// The free scanner of one region.
struct FreeScanner {
    /// Start of the pageblock being harvested.
    pb: Pfn,
    /// The region's first pfn.
    start: Pfn,
    end: Pfn,
}

impl<P: Platform> PhysMem<P> {
    /// The zone's free-block histogram (buddy lists; per-CPU pages are not blocks).
    pub fn free_histogram(&self, zone: &Zone) -> FreeHistogram {
        let b = self.free_blocks(zone);
        core::array::from_fn(|o| b[o].iter().sum())
    }

    /// Compacts one zone (see the module docs).
    pub fn compact_zone(&self, cpu: &Cpu<'_>, zone: &Zone) -> CompactReport {
        self.drain_all();
        let mut rep = CompactReport { free_before: self.free_histogram(zone), ..CompactReport::default() };
        for ri in 0..self.memmap().regions().count() {
            let rm = self.memmap().region_map(ri);
            let r = rm.region;
            if r.node != zone.node() || r.zone != zone.zone_type() || r.layout != MemmapLayout::Flat {
                continue;
            }
            self.compact_region(cpu, zone, rm, &mut rep);
        }
        self.drain_all();
        rep.free_after = self.free_histogram(zone);
        rep
    }

    /// Compacts every zone; returns the summed report (histograms summed over zones).
    pub fn compact_all(&self, cpu: &Cpu<'_>) -> CompactReport {
        let mut total = CompactReport::default();
        for z in self.zones() {
            let r = self.compact_zone(cpu, z);
            total.scanned += r.scanned;
            total.migrated += r.migrated;
            total.migrated_pages += r.migrated_pages;
            total.failed += r.failed;
            total.migrated_pool_pages += r.migrated_pool_pages;
            for o in 0..total.free_after.len() {
                total.free_before[o] += r.free_before[o];
                total.free_after[o] += r.free_after[o];
            }
        }
        total
    }

    fn compact_region(&self, cpu: &Cpu<'_>, zone: &Zone, rm: &RegionMap, rep: &mut CompactReport) {
        let (start, end) = (rm.region.start, rm.region.end);
        let top = end.add(AREA_PAGES - 1).align_down(AREA_ORDER);
        let mut fs =
            FreeScanner { pb: Pfn(top.0.saturating_sub(AREA_PAGES)).max(start.align_down(AREA_ORDER)), start, end };
        let mut mig = start;
        while mig < fs.pb {
            let word = rm.flat_word(mig).load();
            let step = match word.kind() {
                PageKind::Buddy(b) => 1u64 << b.order,
                PageKind::Undescribed(u) if u.subtype == Subtype::Tail || u.subtype == Subtype::Guard => 1,
                PageKind::Undescribed(u) => 1u64 << u.order,
                _ => match movable(mig, word) {
                    Ok(Movable::Folio { folio, file }) => {
                        // Folio descriptors are TYPESAFE_BY_RCU; the guard is held until
                        // migrate_to has frozen and revalidated the folio.
                        let rcu = self.rcu().read_lock(cpu);
                        let f = crate::desc_ref::rcu(&rcu, folio);
                        let (fpfn, order) = (f.flags.pfn(), f.flags.order());
                        let step =
                            if fpfn <= mig && mig < fpfn.add(1 << order) { fpfn.add(1 << order).0 - mig.0 } else { 1 };
                        if fpfn != mig {
                            // Not at the folio's first page (or the word changed): move on.
                            step
                        } else {
                            let Some(target) = self.free_target(zone, rm, &mut fs, order, mig.add(step)) else {
                                break;
                            };
                            match self.migrate_to(cpu, f, file, (fpfn, order), target) {
                                Ok(()) => {
                                    rep.migrated += 1;
                                    rep.migrated_pages += 1 << order;
                                }
                                Err(_) => {
                                    self.pages().free_claimed(cpu, rm, target, order);
                                    rep.failed += 1;
                                }
                            }
                            step
                        }
                    }
                    Ok(mv @ (Movable::Zsmalloc | Movable::Z3fold)) => {
                        let Some(target) = self.free_target(zone, rm, &mut fs, 0, mig.add(1)) else {
                            break;
                        };
                        match self.migrate_pool_page(cpu, mig, mv == Movable::Z3fold, Some(target)) {
                            Ok(_) => {
                                rep.migrated += 1;
                                rep.migrated_pages += 1;
                                rep.migrated_pool_pages += 1;
                            }
                            Err(_) => {
                                self.pages().free_claimed(cpu, rm, target, 0);
                                rep.failed += 1;
                            }
                        }
                        1
                    }
                    Err(_) => 1,
                },
            };
            rep.scanned += step;
            mig = mig.add(step);
        }
    }

    /// A free block of `order` from the free scanner, above `floor`; `None` when the scanners
    /// meet.
    fn free_target(&self, zone: &Zone, rm: &RegionMap, fs: &mut FreeScanner, order: u32, floor: Pfn) -> Option<Pfn> {
        loop {
            if fs.pb < floor.align_down(AREA_ORDER).add(AREA_PAGES) || fs.pb < fs.start.align_down(AREA_ORDER) {
                return None;
            }
            // Only movable pageblocks take migrated folios (as in Linux), so compaction does
            // not scatter movable memory into unmovable pageblocks; isolated ones never.
            let movable_pb = rm.pageblock(fs.pb.max(fs.start)).load(Ordering::Relaxed) == MigrateType::Movable as u8;
            if movable_pb {
                let mut fl = zone.lock.lock();
                // The smallest free block of at least `order` in this pageblock.
                let (lo, hi) = (fs.pb.max(fs.start), fs.pb.add(AREA_PAGES).min(fs.end));
                let mut best: Option<(Pfn, u32)> = None;
                let mut p = lo;
                while p < hi {
                    match rm.flat_word(p).load().buddy_info() {
                        Some(b) if !b.pcp => {
                            let k = b.order as u32;
                            if k >= AREA_ORDER {
                                break; // an entirely free pageblock: not a target
                            }
                            if k >= order && best.is_none_or(|(_, bk)| k < bk) {
                                best = Some((p, k));
                            }
                            p = p.add(1 << k);
                        }
                        _ => p = p.add(1),
                    }
                }
                if let Some((h, k)) = best {
                    let target = h.add((1 << k) - (1 << order));
                    let ok = self.pages().take_locked(&mut fl, rm, target, order);
                    zone.free_pages.store(fl.free_pages, Ordering::Relaxed);
                    if ok {
                        return Some(target);
                    }
                }
            }
            if fs.pb.0 < AREA_PAGES {
                return None;
            }
            fs.pb = Pfn(fs.pb.0 - AREA_PAGES);
        }
    }
}
