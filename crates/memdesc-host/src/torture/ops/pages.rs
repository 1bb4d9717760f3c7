//! Page allocator ops (alloc, free, misuse), per-CPU drains, the exchange of objects between
//! CPUs and freeing anything held.

// Ownership rule the SAFETY comments below cite: see `worker.rs`.
use memdesc::{FreeError, Gfp};

use crate::torture::worker::*;

pub(crate) const GFPS: [Gfp; 9] = [
    Gfp::KERNEL,
    Gfp::MOVABLE,
    Gfp::RECLAIMABLE,
    Gfp::ATOMIC,
    Gfp::HIGH,
    Gfp::DMA32,
    Gfp::DMA,
    Gfp::NOWARN,
    Gfp::HIGHUSER_MOVABLE,
];

pub(crate) fn random_order(w: &mut Worker<'_, '_, '_>) -> u32 {
    match w.below(100) {
        0..=49 => 0,
        50..=79 => 1 + w.below(3) as u32,
        80..=97 => 4 + w.below(5) as u32,
        _ => 9 + w.below(2) as u32,
    }
}

pub(crate) fn op_page_alloc(w: &mut Worker<'_, '_, '_>) -> Outcome {
    let order = random_order(w);
    if w.over_budget(1 << order) {
        return op_free_any(w);
    }
    let mut gfp = GFPS[w.below(GFPS.len() as u64) as usize];
    let zero = w.below(4) == 0;
    if zero {
        gfp = gfp | Gfp::ZERO;
    }
    w.arg(order as u64 | (gfp.bits() as u64) << 8);
    w.alloc_held_pages(order, gfp)
}

pub(crate) fn op_page_free(w: &mut Worker<'_, '_, '_>) -> Outcome {
    match w.take(|l| matches!(l, Live::Pages { .. })) {
        Some(l) => w.release(l),
        None => Outcome::Skipped,
    }
}

/// Refused frees of a held block: wrong order, a tail page. Nothing may change.
pub(crate) fn op_page_misuse(w: &mut Worker<'_, '_, '_>) -> Outcome {
    let Some(l) = w.take(|l| matches!(l, Live::Pages { order, .. } if *order >= 1)) else { return Outcome::Skipped };
    let Live::Pages { pfn, order, .. } = l else { unreachable!("filtered") };
    w.arg(pfn.0);
    // SAFETY: this entry owns the whole block (taken off the list, pushed back below); the
    // wrong order and the tail pfn break only the shape part of the raw free's contract, which
    // its word check refuses before anything changes — what this op asserts.
    let (a, b) = unsafe { (w.m.free_pages_raw(w.cpu, pfn, order - 1), w.m.free_pages_raw(w.cpu, pfn.add(1), 0)) };
    w.push(l);
    match (a, b) {
        (Err(FreeError::WrongOrder { .. }), Err(FreeError::NotHead(_))) => Outcome::Done,
        r => Outcome::Violation(format!("refused frees of {pfn} order {order}: {r:?}")),
    }
}

pub(crate) fn op_drain(w: &mut Worker<'_, '_, '_>) -> Outcome {
    if w.below(8) == 0 {
        // Other CPUs' owners serve the request at their next operation (or are reported busy).
        w.m.drain_all_from(w.cpu);
    } else {
        w.m.drain_local(w.cpu);
    }
    Outcome::Done
}

/// Hands a held object to the exchange and takes one another CPU left there (remote frees).
pub(crate) fn op_exchange(w: &mut Worker<'_, '_, '_>) -> Outcome {
    // Mappings belong to this CPU's mm: they stay.
    let mine = w.take(|l| !matches!(l, Live::Mapped { .. } | Live::MapDev { .. }));
    let theirs = {
        let mut x = w.shared.exchange.lock().unwrap();
        let t = if x.is_empty() { None } else { Some(x.swap_remove(0)) };
        if let Some(l) = mine {
            x.push(l);
        }
        t
    };
    match theirs {
        Some(l) => {
            w.push(l);
            Outcome::Done
        }
        None => Outcome::Skipped,
    }
}

pub(crate) fn op_free_any(w: &mut Worker<'_, '_, '_>) -> Outcome {
    match w.take(|_| true) {
        Some(l) => w.release(l),
        None => Outcome::Skipped,
    }
}
