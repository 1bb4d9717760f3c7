//! Memory-health ops: compaction, balloon, offlining, guard pages, and hwpoison injection
//! with the dropping of what a poison destroyed.

use memdesc::hwpoison::{PoisonAction, PoisonError, PoisonReport, PoisonedKind};
use memdesc::memmap::desc::{Folio, PG_LRU};
use memdesc::offline::OfflineError;
use memdesc::pgtable::{MmKind, PMD_SIZE};

// Ownership rule the SAFETY comments below cite: see `worker.rs`.
use memdesc::kmalloc::KBox;
use memdesc::slab::SlabObj;
use memdesc::{Gfp, Pfn, Platform};

use super::pages::*;
use crate::torture::worker::*;

// ---- compaction, balloon, offlining, guard pages ----

/// Compacts a random zone: folios only their page cache and mappings hold move; held ones are
/// skipped (`Busy`).
pub(crate) fn op_compact(w: &mut Worker<'_, '_, '_>) -> Outcome {
    // A whole-zone scan: rarely.
    if w.below(64) != 0 {
        return Outcome::Skipped;
    }
    let m = w.m;
    let n = m.zones().count() as u64;
    let i = w.below(n) as usize;
    w.arg(i as u64);
    let zone = m.zones().nth(i).expect("in range");
    m.compact_zone(w.cpu, zone);
    Outcome::Done
}

pub(crate) fn op_balloon(w: &mut Worker<'_, '_, '_>) -> Outcome {
    let n = 1 + w.below(64);
    w.arg(n);
    let b = &w.shared.balloon;
    if w.below(2) == 0 && b.stats().pages < 4096 {
        b.inflate(w.cpu, n);
    } else {
        b.deflate(w.cpu, n);
    }
    Outcome::Done
}

/// The flat regions offlining may take (aligned to `2^max_order` pages).
pub(crate) const OFFLINE_RANGES: [(u64, u64); 2] = [(0x8000, 0x10000), (0x10_0000, 0x10_4000)];

/// Offlines 1–2 max-order blocks of a flat region (at most two ranges offline at a time), or
/// onlines one. Something unmovable in the range is a clean failure, not a violation.
pub(crate) fn op_offline(w: &mut Worker<'_, '_, '_>) -> Outcome {
    let m = w.m;
    let block = 1u64 << m.config().max_order;
    let online = w.below(2) == 0;
    let mut list = w.shared.offlined.lock().unwrap();
    if online || list.len() >= 2 {
        if list.is_empty() {
            return Outcome::Skipped;
        }
        let i = w.below(list.len() as u64) as usize;
        let (s, e) = list.swap_remove(i);
        w.arg(s.0 | 1 << 63);
        return match m.online_range(s, e) {
            Ok(_) => Outcome::Done,
            Err(err) => Outcome::Violation(format!("online_range({s}, {e}) of an offline range: {err}")),
        };
    }
    let (rs, re) = OFFLINE_RANGES[w.below(2) as usize];
    let len = block * (1 + w.below(2));
    let start = Pfn(rs + w.below((re - rs - len) / block + 1) * block);
    let end = start.add(len);
    w.arg(start.0);
    if list.iter().any(|&(s, e)| s < end && start < e) {
        return Outcome::Skipped;
    }
    match m.offline_range(w.cpu, start, end) {
        Ok(_) => {
            list.push((start, end));
            Outcome::Done
        }
        Err(OfflineError::Unmovable { .. } | OfflineError::AlreadyIsolated(_)) => Outcome::Failed,
        Err(e) => Outcome::Violation(format!("offline_range({start}, {end}): {e}")),
    }
}

/// A raw allocation between two guard pages; freed by `page_free` like any block.
pub(crate) fn op_guard_alloc(w: &mut Worker<'_, '_, '_>) -> Outcome {
    let order = w.below(4) as u32;
    if w.over_budget(1 << order) {
        return op_free_any(w);
    }
    let zero = w.below(4) == 0;
    w.arg(order as u64);
    let gfp = if zero { Gfp::KERNEL | Gfp::GUARD | Gfp::ZERO } else { Gfp::KERNEL | Gfp::GUARD };
    w.alloc_held_pages(order, gfp)
}

impl<'m> Worker<'m, '_, '_> {
    /// Creates this CPU's mm with its anon and pfn VMAs (retrying injected failures).
    pub(crate) fn setup_mm(&mut self) {
        for _ in 0..64 {
            let Ok(mm) = self.shared.mms.mm_create(self.cpu, MmKind::User) else { continue };
            if mm.mmap_anon(self.cpu, ANON_BASE, ANON_SLOTS * PMD_SIZE).is_ok()
                && mm.mmap_pfn(self.cpu, DEV_BASE, DEV_SLOTS * PMD_SIZE).is_ok()
            {
                self.mm = Some(mm);
                self.slots = (0..ANON_SLOTS).rev().map(|i| ANON_BASE + i * PMD_SIZE).collect();
                self.dev_slots = (0..DEV_SLOTS).rev().map(|i| DEV_BASE + i * PMD_SIZE).collect();
                return;
            }
            mm.destroy(self.cpu);
        }
    }

    /// The folio whose word page `pfn` holds; the caller holds a reference to it.
    pub(crate) fn folio_at(&self, pfn: Pfn) -> Option<&'m Folio> {
        let m = self.m;
        let word = m.memmap().load(m.platform(), pfn)?.word;
        let d = memdesc::memmap::lookup::folio(word.kind())?;
        let g = m.rcu().read_lock(self.cpu);
        let f = d.get(&g);
        // SAFETY: the caller holds a reference: the descriptor stays this folio beyond the guard.
        Some(unsafe { &*(f as *const Folio) })
    }

    /// Drops a folio allocation hit by poison at `bad` as lost: every piece the handler split
    /// it into loses `refs` references (the poisoned piece's last put retires it); the other
    /// pieces' pages are verified first (their contents survive).
    pub(crate) fn drop_lost_folio(&mut self, start: Pfn, order: u32, refs: u32, id: u64, off: u64, bad: Pfn) {
        let mut i = 0;
        while i < 1u64 << order {
            let p = start.add(i);
            let Some(piece) = self.folio_at(p) else {
                self.violation(format!("page {p} of a poisoned held folio is no folio"));
                return;
            };
            let po = piece.flags.order();
            if !(p..p.add(1 << po)).contains(&bad) {
                self.verify_idx(p, po, id, off + i);
            }
            if piece.flags.flags() & PG_LRU != 0 {
                self.m.lru_del(piece);
            }
            for _ in 0..refs {
                // SAFETY: the split copied each of this CPU's `refs` references onto every
                // piece (memory_failure's split keeps every holder's).
                if let Err(e) = unsafe { self.put_owned(piece) } {
                    self.violation(format!("put of a poisoned folio's piece {p}: {e}"));
                }
            }
            i += 1 << po;
        }
    }

    /// Drops from `list` the objects this quiescent point's poison events destroyed.
    pub(crate) fn drop_poisoned(&mut self, list: &mut Vec<Live<'m>>) {
        let events: Vec<PoisonReport> = self.shared.poison_events.lock().unwrap().clone();
        for ev in events {
            if ev.action == PoisonAction::Ignored {
                continue;
            }
            let bad = ev.pfn;
            let slab = match ev.kind {
                PoisonedKind::Slab { .. } => {
                    let o = ev.pages_lost.trailing_zeros();
                    Some((bad.align_down(o), bad.align_down(o).add(1 << o)))
                }
                _ => None,
            };
            let p = self.m.platform();
            let mut k = 0;
            while k < list.len() {
                let hit = match list[k] {
                    Live::Folio { f, order, .. } | Live::Mapped { f, order, .. } => {
                        let s = f.flags.pfn();
                        (s..s.add(1 << order)).contains(&bad)
                    }
                    Live::Kmalloc { ptr, .. } | Live::Obj { ptr, .. } => match (slab, p.virt_to_pfn(ptr)) {
                        (Some((s, e)), Some(q)) => s <= q && q < e,
                        _ => false,
                    },
                    _ => false,
                };
                if !hit {
                    k += 1;
                    continue;
                }
                let l = list.swap_remove(k);
                self.poison_lost += 1;
                match l {
                    Live::Folio { f, refs, order, id, off } => {
                        self.drop_lost_folio(f.flags.pfn(), order, refs, id, off, bad);
                    }
                    Live::Mapped { f, va, order, id, .. } => {
                        // Whatever the handler did to the mapping, this slot goes.
                        if let Some(mm) = &self.mm {
                            let _ = mm.unmap(self.cpu, va, PMD_SIZE);
                        }
                        self.slots.push(va);
                        self.drop_lost_folio(f.flags.pfn(), order, 1, id, 0, bad);
                    }
                    // Objects of a poisoned slab: their contents are lost; freeing them is
                    // how the slab empties and retires.
                    Live::Kmalloc { ptr, .. } => {
                        // SAFETY: the entry owned the object and was taken off the list.
                        if let Err(e) = self.m.kfree(self.cpu, unsafe { KBox::from_raw(self.m, ptr) }) {
                            self.violation(format!("kfree of an object of a poisoned slab: {e}"));
                        }
                    }
                    Live::Obj { cache, ptr, .. } => {
                        let c = &self.shared.caches[cache];
                        // SAFETY: as above.
                        if let Err(e) = c.free(self.cpu, unsafe { SlabObj::from_raw(c, ptr) }) {
                            self.violation(format!("free of an object of a poisoned slab: {e}"));
                        }
                    }
                    _ => unreachable!("only hit kinds are taken"),
                }
            }
        }
    }

    /// [`Worker::drop_poisoned`] on this CPU's own objects.
    pub(crate) fn drop_poisoned_own(&mut self) {
        let mut live = std::mem::take(&mut self.live);
        self.drop_poisoned(&mut live);
        self.live_pages = live.iter().map(Live::pages).sum();
        self.live = live;
    }
}

/// The hwpoison hook: a machine check at a uniformly random pfn of the machine's regions.
pub(crate) fn poison_random_pfn(w: &mut Worker<'_, '_, '_>) -> Result<u64, String> {
    let m = w.m;
    let regions: Vec<(Pfn, Pfn)> = m.memmap().regions().map(|r| (r.start, r.end)).collect();
    let total: u64 = regions.iter().map(|(s, e)| e.0 - s.0).sum();
    let mut r = w.below(total);
    let mut pfn = regions[0].0;
    for (s, e) in regions {
        if r < e.0 - s.0 {
            pfn = s.add(r);
            break;
        }
        r -= e.0 - s.0;
    }
    w.arg(pfn.0);
    match m.memory_failure(w.cpu, pfn) {
        Ok(rep) => {
            w.shared.poison_events.lock().unwrap().push(rep);
            if rep.action == PoisonAction::Ignored {
                w.poison_ignored += 1;
                Ok(0)
            } else {
                Ok(rep.pages_lost)
            }
        }
        Err(e @ (PoisonError::Corrupt(..) | PoisonError::OutOfRange(_) | PoisonError::NotPoisoned(_))) => {
            Err(format!("memory_failure({pfn}): {e}"))
        }
        Err(_) => {
            w.poison_refused += 1;
            Ok(0)
        }
    }
}
