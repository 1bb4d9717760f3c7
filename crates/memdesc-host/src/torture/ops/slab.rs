//! Slab and kmalloc ops: kmalloc/kfree, named caches, bulk alloc/free, shrink.

// Ownership rule the SAFETY comments below cite: see `worker.rs`.
use memdesc::slab::SlabObj;
use memdesc::Gfp;

use super::pages::*;
use crate::torture::worker::*;

pub(crate) fn kmalloc_size(w: &mut Worker<'_, '_, '_>) -> usize {
    match w.below(100) {
        0..=69 => 1 + w.below(256) as usize,
        70..=96 => 1 + w.below(8192) as usize,
        _ => 8193 + w.below(65536 - 8192) as usize,
    }
}

pub(crate) fn op_kmalloc(w: &mut Worker<'_, '_, '_>) -> Outcome {
    let size = kmalloc_size(w);
    if w.over_budget(16) {
        return op_free_any(w);
    }
    let zero = w.below(4) == 0;
    w.arg(size as u64);
    match w.m.kmalloc(w.cpu, size, if zero { Gfp::ZERO } else { Gfp::KERNEL }) {
        Ok(b) => {
            let ksize = w.m.ksize(&b);
            let ptr = b.into_raw();
            match ksize {
                Ok(k) if k >= size => {}
                r => return Outcome::Violation(format!("ksize of a {size}-byte kmalloc: {r:?}")),
            }
            let id = w.new_id();
            w.fill(ptr, size, id, zero);
            w.push(Live::Kmalloc { ptr, size, id });
            Outcome::Done
        }
        Err(e) => alloc_outcome(e),
    }
}

pub(crate) fn op_kfree(w: &mut Worker<'_, '_, '_>) -> Outcome {
    match w.take(|l| matches!(l, Live::Kmalloc { .. })) {
        Some(l) => w.release(l),
        None => Outcome::Skipped,
    }
}

pub(crate) fn op_cache_alloc(w: &mut Worker<'_, '_, '_>) -> Outcome {
    let cache = w.below(w.shared.caches.len() as u64) as usize;
    w.arg(cache as u64);
    match w.shared.caches[cache].alloc(w.cpu) {
        Ok(o) => {
            let ptr = o.into_raw();
            let id = w.new_id();
            w.fill(ptr, w.shared.sizes[cache], id, false);
            w.push(Live::Obj { cache, ptr, id });
            Outcome::Done
        }
        Err(e) => alloc_outcome(e),
    }
}

pub(crate) fn op_cache_free(w: &mut Worker<'_, '_, '_>) -> Outcome {
    match w.take(|l| matches!(l, Live::Obj { .. })) {
        Some(l) => w.release(l),
        None => Outcome::Skipped,
    }
}

pub(crate) fn op_cache_alloc_bulk(w: &mut Worker<'_, '_, '_>) -> Outcome {
    let cache = w.below(w.shared.caches.len() as u64) as usize;
    let n = 1 + w.below(16) as usize;
    w.arg(cache as u64 | (n as u64) << 8);
    let mut out: Vec<Option<SlabObj>> = (0..n).map(|_| None).collect();
    match w.shared.caches[cache].alloc_bulk(w.cpu, &mut out) {
        Ok(()) => {
            for o in out {
                let Some(o) = o else { return Outcome::Violation("alloc_bulk left a slot empty".into()) };
                let ptr = o.into_raw();
                let id = w.new_id();
                w.fill(ptr, w.shared.sizes[cache], id, false);
                w.push(Live::Obj { cache, ptr, id });
            }
            Outcome::Done
        }
        Err(e) => {
            if out.iter().any(Option::is_some) {
                return Outcome::Violation("a failed alloc_bulk kept objects".into());
            }
            alloc_outcome(e)
        }
    }
}

pub(crate) fn op_cache_free_bulk(w: &mut Worker<'_, '_, '_>) -> Outcome {
    let Some(first) = w.take(|l| matches!(l, Live::Obj { .. })) else { return Outcome::Skipped };
    let Live::Obj { cache, .. } = first else { unreachable!("filtered") };
    let mut objs = vec![first];
    for _ in 0..w.below(16) {
        match w.take(|l| matches!(l, Live::Obj { cache: c, .. } if *c == cache)) {
            Some(l) => objs.push(l),
            None => break,
        }
    }
    w.arg(cache as u64 | (objs.len() as u64) << 8);
    let size = w.shared.sizes[cache];
    let mut ptrs = vec![];
    let c = &w.shared.caches[cache];
    for l in objs {
        if let Live::Obj { ptr, id, .. } = l {
            w.verify(ptr, size, id);
            // SAFETY: the entry owned the object and was taken off the list.
            ptrs.push(Some(unsafe { SlabObj::from_raw(c, ptr) }));
        }
    }
    match w.shared.caches[cache].free_bulk(w.cpu, &mut ptrs) {
        Ok(()) => Outcome::Done,
        Err((i, e)) => Outcome::Violation(format!("free_bulk refused live object {i}: {e}")),
    }
}

pub(crate) fn op_cache_shrink(w: &mut Worker<'_, '_, '_>) -> Outcome {
    let cache = w.below(w.shared.caches.len() as u64) as usize;
    w.arg(cache as u64);
    w.m.shrink_cache(w.cpu, &w.shared.caches[cache]);
    Outcome::Done
}
