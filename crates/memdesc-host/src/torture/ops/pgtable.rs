//! Page-table ops: folios mapped into each CPU's address space, forks, `split_pmd`,
//! device mappings.

use memdesc::folio::{FolioError, FolioKind};
use memdesc::mm::pgtable::MapError;

// Ownership rule the SAFETY comments below cite: see `worker.rs`.
use memdesc::Gfp;

use super::pages::*;
use crate::torture::worker::*;

// ---- Page tables: folios mapped into each CPU's address space, forks, split_pmd. ----

pub(crate) fn map_outcome(e: MapError) -> Outcome {
    match e {
        MapError::NoMemory(a) if is_alloc_failure(a) => Outcome::Failed,
        MapError::Split(FolioError::NoMemory(a)) if is_alloc_failure(a) => Outcome::Failed,
        e => Outcome::Violation(format!("unexpected map error {e}")),
    }
}

/// Maps a fresh patterned anon folio into a free 2 MiB slot of this CPU's mm: by PTEs (order
/// 0–4) or by one PMD (order 9).
pub(crate) fn op_mm_map(w: &mut Worker<'_, '_, '_>) -> Outcome {
    let pmd = w.below(8) == 0;
    let order = if pmd { 9 } else { w.below(5) as u32 };
    if w.over_budget(1 << order) {
        return op_free_any(w);
    }
    if w.mm.is_none() || w.slots.is_empty() {
        return Outcome::Skipped;
    }
    let f = match w.m.folio_alloc(w.cpu, order, Gfp::MOVABLE, FolioKind::Anon) {
        Ok(f) => f,
        Err(e) => return alloc_outcome(e),
    };
    let i = w.below(w.slots.len() as u64) as usize;
    let va = w.slots.swap_remove(i);
    w.arg(va | order as u64);
    let id = w.new_id();
    w.lock_folio(&f);
    w.fill_idx(f.flags.pfn(), order, id, 0, false);
    w.unlock_folio(&f);
    let mm = w.mm.as_ref().expect("checked");
    let r = if pmd { mm.map_folio_pmd(w.cpu, va, &f) } else { mm.map_folio(w.cpu, va, &f) };
    match r {
        Ok(()) => {
            // The owner's reference, kept raw in the Live record.
            w.push(Live::Mapped { f: f.into_raw(), va, order, pmd, id });
            Outcome::Done
        }
        Err(e) => {
            w.slots.push(va);
            let put = w.m.folio_put(w.cpu, f);
            match (map_outcome(e), put) {
                (o, Ok(true)) => o,
                (_, r) => Outcome::Violation(format!("put of a folio whose map failed with {e}: {r:?}")),
            }
        }
    }
}

pub(crate) fn op_mm_unmap(w: &mut Worker<'_, '_, '_>) -> Outcome {
    match w.take_scan(|l| matches!(l, Live::Mapped { .. } | Live::MapDev { .. })) {
        Some(l) => w.release(l),
        None => Outcome::Skipped,
    }
}

/// Splits a PMD mapping into 512 PTEs (the folio's mapcount grows by 511).
pub(crate) fn op_mm_split_pmd(w: &mut Worker<'_, '_, '_>) -> Outcome {
    let Some(Live::Mapped { f, va, order, id, .. }) = w.take_scan(|l| matches!(l, Live::Mapped { pmd: true, .. }))
    else {
        return Outcome::Skipped;
    };
    w.arg(va);
    let before = f.counts.mapcount();
    let r = w.mm.as_ref().expect("a mapped folio's mm").split_pmd(va);
    let (pmd, out) = match r {
        // Forks and other CPUs' RCU pins do not change this mm's entries.
        Ok(()) if f.counts.mapcount() == before + 511 => (false, Outcome::Done),
        Ok(()) => (false, Outcome::Violation(format!("split_pmd: mapcount {before} -> {}", f.counts.mapcount()))),
        // Someone split it already: a `memory_failure` whose folio split was then refused
        // (an injected allocation failure) splits the PMD mappings first, as Linux does.
        // Fine if the folio is still mapped here, now by PTEs.
        Err(MapError::NotHuge(_)) => match w.mm.as_ref().expect("a mapped folio's mm").translate(va) {
            Some((e, false)) if e.pfn() == f.flags.pfn() => (false, Outcome::Done),
            other => (false, Outcome::Violation(format!("split_pmd: no PMD at {va:#x}, entry {other:?}"))),
        },
        Err(e) => (true, map_outcome(e)),
    };
    w.push(Live::Mapped { f, va, order, pmd, id });
    out
}

/// Forks this CPU's mm (every mapped folio becomes shared), keeping at most two children.
pub(crate) fn op_mm_fork(w: &mut Worker<'_, '_, '_>) -> Outcome {
    // A fork copies every table of the mm: rarely.
    if w.below(8) != 0 {
        return Outcome::Skipped;
    }
    if w.children.len() >= 2 {
        return op_mm_child_drop(w);
    }
    let Some(mm) = &w.mm else { return Outcome::Skipped };
    match mm.fork(w.cpu) {
        Ok(child) => {
            w.children.push(child);
            Outcome::Done
        }
        Err(e) => map_outcome(e),
    }
}

/// Destroys a fork: the folios it shared drop back to the parent's mappings only.
pub(crate) fn op_mm_child_drop(w: &mut Worker<'_, '_, '_>) -> Outcome {
    if w.children.is_empty() {
        return Outcome::Skipped;
    }
    let i = w.below(w.children.len() as u64) as usize;
    let child = w.children.swap_remove(i);
    child.destroy(w.cpu);
    Outcome::Done
}

/// Mappable driver memory: allocated, patterned, mapped into a slot of the pfn VMA.
pub(crate) fn op_dev_map(w: &mut Worker<'_, '_, '_>) -> Outcome {
    let order = w.below(4) as u32;
    if w.over_budget(1 << order) {
        return op_free_any(w);
    }
    if w.mm.is_none() || w.dev_slots.is_empty() {
        return Outcome::Skipped;
    }
    let d = match w.m.mappable_alloc(w.cpu, order, Gfp::KERNEL, 0x70_0000 + w.cpu.id()) {
        // The Live entry keeps the reference (the torture's ownership rule).
        Ok(d) => d.into_raw(),
        Err(e) => return alloc_outcome(e),
    };
    let i = w.below(w.dev_slots.len() as u64) as usize;
    let va = w.dev_slots.swap_remove(i);
    w.arg(va | order as u64);
    let id = w.new_id();
    w.fill_idx(d.flags.pfn(), order, id, 0, false);
    match w.mm.as_ref().expect("checked").map_mappable(w.cpu, va, d) {
        Ok(()) => {
            w.push(Live::MapDev { d, va, order, id });
            Outcome::Done
        }
        Err(e) => {
            w.dev_slots.push(va);
            // SAFETY: `d` was allocated just above with one reference, ours, and its mapping
            // failed: the reference is given up here.
            match (map_outcome(e), unsafe { w.m.mappable_put_raw(w.cpu, d) }) {
                (o, Ok(true)) => o,
                (_, r) => Outcome::Violation(format!("put of driver memory whose map failed with {e}: {r:?}")),
            }
        }
    }
}
