//! Folio ops: alloc, put, references, flags, split, clone, migrate, the hot-folio race.

use memdesc::folio::{FolioError, FolioKind, FolioRef};
use memdesc::memmap::desc::PG_LRU;
use memdesc::migrate::MigrateError;
use memdesc::pagecache::PageCacheError;

// Ownership rule the SAFETY comments below cite: see `worker.rs`.
use memdesc::{Gfp, Pfn};

use super::pagecache::*;
use super::pages::*;
use crate::torture::pattern::*;
use crate::torture::worker::*;

pub(crate) fn op_folio_alloc(w: &mut Worker<'_, '_, '_>) -> Outcome {
    let order = match w.below(100) {
        0..=59 => 0,
        60..=97 => 1 + w.below(4) as u32,
        _ => 9,
    };
    if w.over_budget(1 << order) {
        return op_free_any(w);
    }
    let kind = if w.below(2) == 0 { FolioKind::Anon } else { FolioKind::File };
    let zero = w.below(4) == 0;
    w.arg(order as u64);
    let gfp = if zero { Gfp::MOVABLE | Gfp::ZERO } else { Gfp::MOVABLE };
    match w.m.folio_alloc(w.cpu, order, gfp, kind) {
        Ok(f) => {
            // Kept raw in the Live record (see the module docs).
            let f = f.into_raw();
            if f.counts.refcount() != 1 || f.flags.order() != order {
                return Outcome::Violation(format!("fresh folio: refcount {} order {}", f.counts.refcount(), order));
            }
            let id = w.new_id();
            w.lock_folio(f);
            w.fill_idx(f.flags.pfn(), order, id, 0, zero);
            w.unlock_folio(f);
            if w.below(2) == 0 {
                w.m.lru_add(f);
            }
            w.push(Live::Folio { f, refs: 1, order, id, off: 0 });
            Outcome::Done
        }
        Err(e) => alloc_outcome(e),
    }
}

pub(crate) fn op_folio_put(w: &mut Worker<'_, '_, '_>) -> Outcome {
    match w.take(|l| matches!(l, Live::Folio { .. })) {
        Some(l) => w.release(l),
        None => Outcome::Skipped,
    }
}

/// Takes or drops an extra reference.
pub(crate) fn op_folio_ref(w: &mut Worker<'_, '_, '_>) -> Outcome {
    let Some(Live::Folio { f, refs, order, id, off }) = w.take(|l| matches!(l, Live::Folio { .. })) else {
        return Outcome::Skipped;
    };
    w.arg(f.flags.pfn().0);
    let refs = if refs > 1 && w.below(2) == 0 {
        // SAFETY: one of the `refs` this CPU holds.
        match unsafe { w.put_owned(f) } {
            Ok(false) => refs - 1,
            r => return Outcome::Violation(format!("put of one of {refs} references: {r:?}")),
        }
    } else if refs < 4 {
        // SAFETY: this CPU holds `refs` ≥ 1.
        unsafe { w.get_owned(f) };
        refs + 1
    } else {
        refs
    };
    w.push(Live::Folio { f, refs, order, id, off });
    Outcome::Done
}

/// LRU add/delete/rotate and the flag operations.
pub(crate) fn op_folio_flags(w: &mut Worker<'_, '_, '_>) -> Outcome {
    let Some(l @ Live::Folio { f, .. }) = w.take(|l| matches!(l, Live::Folio { .. })) else {
        return Outcome::Skipped;
    };
    let what = w.below(5);
    w.arg(f.flags.pfn().0 | what << 56);
    let on = f.flags.flags() & PG_LRU != 0;
    let ok = match what {
        0 => w.m.lru_add(f) != on,
        1 => w.m.lru_del(f) == on,
        2 => w.m.lru_rotate(f) == on,
        3 => {
            // Migration may hold the lock for a moment: wait for it.
            w.lock_folio(f);
            let again = w.m.folio_trylock(f);
            w.m.folio_unlock(f);
            !again
        }
        _ => {
            w.m.folio_mark_dirty(f);
            if w.m.folio_start_writeback(f) {
                w.m.folio_end_writeback(f);
            }
            true
        }
    };
    w.push(l);
    if ok {
        Outcome::Done
    } else {
        Outcome::Violation(format!("folio flag op {what} on {} (lru {on})", f.flags.pfn()))
    }
}

/// Splits a held folio under its lock: the split freezes the count at the caller's one
/// reference, so this CPU first gives back its extra ones; another CPU's pin (a pfn walker's
/// `folio_try_get`) makes it refuse with `Busy`.
pub(crate) fn op_folio_split(w: &mut Worker<'_, '_, '_>) -> Outcome {
    let Some(l) = w.take(|l| matches!(l, Live::Folio { f, .. } if f.flags.order() >= 1)) else {
        return Outcome::Skipped;
    };
    let Live::Folio { f, refs, id, off, order: budget } = l else { unreachable!("filtered") };
    let order = f.flags.order();
    let new_order = w.below(order as u64) as u32;
    w.arg(f.flags.pfn().0 | (new_order as u64) << 56);
    for i in 1..refs {
        // SAFETY: one of the `refs` this CPU holds; the last stays.
        if let Err(e) = unsafe { w.put_owned(f) } {
            return Outcome::Violation(format!("put {i} of {refs} before a split: {e}"));
        }
    }
    w.lock_folio(f);
    // SAFETY: the one reference this CPU now holds.
    let held = unsafe { Worker::held(f) };
    let mut pieces = vec![];
    let r = w.m.folio_split(w.cpu, &held, new_order, |p| pieces.push(p.into_raw()));
    w.unlock_folio(f);
    match r {
        Ok(()) => {
            if pieces.len() + 1 != 1 << (order - new_order) {
                return Outcome::Violation(format!("split into {} pieces", pieces.len() + 1));
            }
            // Held by us, the pieces do not move.
            let first = f.flags.pfn();
            w.push(Live::Folio { f, refs: 1, order: new_order, id, off });
            for p in pieces {
                if p.counts.refcount() == 0 || p.flags.flags() & memdesc::memmap::desc::PG_LOCKED != 0 {
                    return Outcome::Violation(format!("split piece at {}: refcount 0 or locked", p.flags.pfn()));
                }
                let poff = off + (p.flags.pfn().0 - first.0);
                w.push(Live::Folio { f: p, refs: 1, order: new_order, id, off: poff });
            }
            Outcome::Done
        }
        Err(e) => {
            w.push(Live::Folio { f, refs: 1, order: budget, id, off });
            match e {
                FolioError::NoMemory(a) if is_alloc_failure(a) => Outcome::Failed,
                // Splitting a 2 MiB folio of a two-level region below 2 MiB is refused; another
                // CPU's transient pin makes the freeze fail.
                FolioError::BadOrder | FolioError::Busy => Outcome::Skipped,
                e => Outcome::Violation(format!("split of order {order} to {new_order}: {e}")),
            }
        }
    }
}

/// Takes and drops references on a held folio through `FolioRef`s: clones (`folio_get`), some
/// dropped (a drop that is not the last releases its count) and some put, while other CPUs
/// migrate, split (their own) and compact around it.
pub(crate) fn op_folio_clone(w: &mut Worker<'_, '_, '_>) -> Outcome {
    let Some(l @ Live::Folio { f, refs, .. }) = w.take(|l| matches!(l, Live::Folio { .. })) else {
        return Outcome::Skipped;
    };
    w.arg(f.flags.pfn().0);
    let n = 1 + w.below(4) as u32;
    // SAFETY: this CPU holds `refs` ≥ 1 references on f.
    let held = unsafe { Worker::held(f) };
    let clones: Vec<FolioRef<'_>> = (0..n).map(|_| FolioRef::clone(&held)).collect();
    let mut out = Outcome::Done;
    // Other CPUs' pins may add to it, never take from it.
    if f.counts.refcount() < refs + n {
        out = Outcome::Violation(format!("{refs} held + {n} clones, refcount {}", f.counts.refcount()));
    }
    for (i, c) in clones.into_iter().enumerate() {
        if !FolioRef::ptr_eq(&c, &held) {
            out = Outcome::Violation("a clone names another folio".into());
        }
        if i % 2 == 0 {
            drop(c);
        } else if let Err(e) = w.m.folio_put(w.cpu, c) {
            out = Outcome::Violation(format!("put of a clone: {e}"));
        }
    }
    w.push(l);
    out
}

/// Migrates a folio to new memory, as compaction and offlining do, while its holders get and
/// put it on other CPUs: the folio at a random pfn (if its word names one), or a folio cached
/// in a file (the shared file's are looked up by every CPU meanwhile). A folio held by anyone
/// but its page cache and mappings is refused (`Busy`).
pub(crate) fn op_folio_migrate(w: &mut Worker<'_, '_, '_>) -> Outcome {
    let m = w.m;
    let pfn = if w.below(2) == 0 {
        let regions: Vec<(Pfn, Pfn)> = m.memmap().regions().map(|r| (r.start, r.end)).collect();
        let (start, end) = regions[w.below(regions.len() as u64) as usize];
        start.add(w.below(end.0 - start.0))
    } else {
        let index = w.below(FILE_INDICES);
        let space = w.file().space.space() as *const _;
        let Some(f) = w.file_by_space(space).space.lookup(w.cpu, index) else { return Outcome::Skipped };
        let pfn = f.flags.pfn();
        if let Err(e) = m.folio_put(w.cpu, f) {
            return Outcome::Violation(format!("put of a lookup reference: {e}"));
        }
        pfn
    };
    w.arg(pfn.0);
    let Some(v) = m.memmap().load(m.platform(), pfn) else { return Outcome::Skipped };
    if memdesc::memmap::lookup::folio(v.word.kind()).is_none() {
        return Outcome::Skipped;
    }
    match m.migrate_page(w.cpu, pfn, Gfp::MOVABLE) {
        Ok(_) => Outcome::Done,
        Err(MigrateError::NoTarget(a)) if is_alloc_failure(a) => Outcome::Failed,
        Err(MigrateError::NoTarget(a)) => Outcome::Violation(format!("migrate_page({pfn}): {a}")),
        Err(_) => Outcome::Skipped,
    }
}

/// The shared file's index of the "hot" folio every CPU hammers with `folio_hot`, beyond the
/// indices the page-cache ops touch (so only the final destroy removes it).
pub(crate) const HOT_INDEX: u64 = 1 << 20;

/// One order-0 folio of the shared file that every CPU either reads through references (lookup,
/// clone, verify, drop one and put the other) or migrates, so reference gets and puts meet
/// migration's freeze on the same folio all the time. A migration that borrowed a holder's
/// reference, or froze while one is held, shows as a count the quiescent check rejects, a
/// refused or early-freeing put, or corrupted bytes.
pub(crate) fn op_folio_hot(w: &mut Worker<'_, '_, '_>) -> Outcome {
    let m = w.m;
    let fid = w.shared.shared_file.id;
    let space = &w.shared.shared_file.space;
    let f = match space.lookup(w.cpu, HOT_INDEX) {
        Some(f) => f,
        None => {
            let f = match m.folio_alloc(w.cpu, 0, Gfp::MOVABLE, FolioKind::File) {
                Ok(f) => f,
                Err(e) => return alloc_outcome(e),
            };
            let k = Worker::key(fid, HOT_INDEX);
            // SAFETY: the page of our fresh folio.
            unsafe { w.with_page(f.flags.pfn(), |a| fill(a.bytes_mut(), k)) };
            let r = w.shared.shared_file.space.insert(w.cpu, &f, HOT_INDEX);
            return match (r, m.folio_put(w.cpu, f)) {
                (Ok(()), Ok(false)) => Outcome::Done,
                // Another CPU inserted it first.
                (Err(PageCacheError::Occupied { .. }), Ok(true)) => Outcome::Skipped,
                (Err(PageCacheError::NoMemory(e)), Ok(true)) if is_alloc_failure(e) => Outcome::Failed,
                r => Outcome::Violation(format!("insert of the hot folio: {r:?}")),
            };
        }
    };
    w.arg(f.flags.pfn().0);
    if w.below(2) == 0 {
        let pfn = f.flags.pfn();
        if let Err(e) = m.folio_put(w.cpu, f) {
            return Outcome::Violation(format!("put of a lookup reference: {e}"));
        }
        // Migration by pfn holds no reference until it pins what it finds: between the put
        // and the pin another CPU may have migrated the folio away (or truncated it) and the
        // pfn been freed and reused as something that never moves. That is the race this op
        // exists to provoke, not a violation.
        return match m.migrate_page(w.cpu, pfn, Gfp::MOVABLE) {
            Ok(_) | Err(MigrateError::Busy(_)) => Outcome::Done,
            Err(MigrateError::NotMovable { .. }) => Outcome::Skipped,
            Err(MigrateError::NoTarget(a)) if is_alloc_failure(a) => Outcome::Failed,
            Err(e) => Outcome::Violation(format!("migrate_page of the hot folio: {e}")),
        };
    }
    let mut out = Outcome::Done;
    // Several get/put rounds, each verifying the data, so they keep meeting the other CPUs'
    // migrations of this folio.
    for _ in 0..8 {
        w.verify_cached(fid, &f);
        let extra = f.clone();
        w.verify_cached(fid, &extra);
        if f.counts.refcount() < 3 {
            out = Outcome::Violation(format!("the cache + two references held, refcount {}", f.counts.refcount()));
        }
        if w.below(2) == 0 {
            drop(extra);
        } else if let Err(e) = m.folio_put(w.cpu, extra) {
            out = Outcome::Violation(format!("put of a clone of the hot folio: {e}"));
        }
    }
    match m.folio_put(w.cpu, f) {
        Ok(false) => out,
        r => Outcome::Violation(format!("put of the hot folio with the cache holding it: {r:?}")),
    }
}
