//! Page-cache ops: insert, lookup, delete, truncate, RCU lookups.

use memdesc::folio::FolioKind;
use memdesc::memmap::desc::Folio;
use memdesc::pagecache::PageCacheError;

// Ownership rule the SAFETY comments below cite: see `worker.rs`.
use memdesc::base::page_access::PageAccess;
use memdesc::{Gfp, Pfn};

use super::pages::*;
use crate::torture::pattern::*;
use crate::torture::worker::*;

/// Indices a torture file uses (small, so inserts collide and lookups hit).
pub(crate) const FILE_INDICES: u64 = 2048;

pub(crate) fn pc_order(w: &mut Worker<'_, '_, '_>) -> u32 {
    match w.below(100) {
        0..=69 => 0,
        70..=98 => 1 + w.below(3) as u32,
        _ => 6,
    }
}

/// Inserts a fresh file folio, its pages patterned by (file, index), and drops the caller's
/// reference: the cache holds the only one.
pub(crate) fn op_pc_insert(w: &mut Worker<'_, '_, '_>) -> Outcome {
    let order = pc_order(w);
    if w.over_budget(1 << order) {
        return op_free_any(w);
    }
    let index = (w.below(FILE_INDICES) >> order) << order;
    let (fid, space) = {
        let f = w.file();
        (f.id, f.space.space() as *const _)
    };
    w.arg(index | (order as u64) << 56);
    let f = match w.m.folio_alloc(w.cpu, order, Gfp::MOVABLE, FolioKind::File) {
        Ok(f) => f,
        Err(e) => return alloc_outcome(e),
    };
    let pfn = f.flags.pfn();
    for i in 0..1u64 << order {
        let q = pfn.add(i);
        let k = Worker::key(fid, index + i);
        // SAFETY: a page of our fresh folio.
        unsafe { w.with_page(q, |a| fill(a.bytes_mut(), k)) };
    }
    let file = w.file_by_space(space);
    let r = file.space.insert(w.cpu, &f, index);
    let put = w.m.folio_put(w.cpu, f);
    match (r, put) {
        (Ok(()), Ok(false)) => Outcome::Done,
        (Err(PageCacheError::Occupied { .. }), Ok(true)) => Outcome::Skipped,
        (Err(PageCacheError::NoMemory(e)), Ok(true)) if is_alloc_failure(e) => Outcome::Failed,
        r => Outcome::Violation(format!("insert at {index} order {order}: {r:?}")),
    }
}

impl<'m> Worker<'m, '_, '_> {
    pub(crate) fn file_by_space(&self, space: *const memdesc::pagecache::AddressSpace) -> &File<'m> {
        if std::ptr::eq(self.shared.shared_file.space.space(), space) {
            &self.shared.shared_file
        } else {
            self.files.iter().find(|f| std::ptr::eq(f.space.space(), space)).expect("a file of this CPU")
        }
    }

    /// Verifies the pages of a cached folio that the caller pins.
    pub(crate) fn verify_cached(&mut self, fid: u64, f: &Folio) -> u64 {
        let (pfn, order, index) = (f.flags.pfn(), f.flags.order(), f.index());
        let mut bad = 0;
        for i in 0..1u64 << order {
            let k = Self::key(fid, index + i);
            // SAFETY: a page of an up-to-date folio we pin: nobody writes it meanwhile.
            bad += unsafe { self.with_page_ro(pfn.add(i), |a| verify(a.bytes(), k)) };
        }
        self.corrupted += bad;
        bad
    }
}

pub(crate) fn op_pc_lookup(w: &mut Worker<'_, '_, '_>) -> Outcome {
    let index = w.below(FILE_INDICES);
    let (fid, space) = {
        let f = w.file();
        (f.id, f.space.space() as *const _)
    };
    w.arg(index);
    let found = w.file_by_space(space).space.lookup(w.cpu, index);
    let Some(f) = found else { return Outcome::Skipped };
    let (fi, order) = (f.index(), f.flags.order());
    let mut out = Outcome::Done;
    if !(fi..fi + (1 << order)).contains(&index) {
        out = Outcome::Violation(format!("lookup({index}) found a folio at {fi} of order {order}"));
    }
    w.verify_cached(fid, &f);
    if let Err(e) = w.m.folio_put(w.cpu, f) {
        out = Outcome::Violation(format!("put of a lookup reference: {e}"));
    }
    out
}

pub(crate) fn op_pc_delete(w: &mut Worker<'_, '_, '_>) -> Outcome {
    let index = w.below(FILE_INDICES);
    let (fid, space) = {
        let f = w.file();
        (f.id, f.space.space() as *const _)
    };
    w.arg(index);
    let file = w.file_by_space(space);
    let Some(f) = file.space.lookup(w.cpu, index) else { return Outcome::Skipped };
    let r = file.space.delete(w.cpu, &f);
    w.verify_cached(fid, &f);
    let shared = w.shared.threads > 1;
    let put = w.m.folio_put(w.cpu, f);
    match (r, put) {
        (Ok(false), Ok(_)) => Outcome::Done,
        // Another CPU deleted or truncated it first.
        (Err(PageCacheError::NotCached), Ok(_)) if shared => Outcome::Skipped,
        r => Outcome::Violation(format!("delete at {index}: {r:?}")),
    }
}

pub(crate) fn op_pc_truncate(w: &mut Worker<'_, '_, '_>) -> Outcome {
    let start = w.below(FILE_INDICES);
    let len = 1 + w.below(256);
    let (fid, space) = {
        let f = w.file();
        (f.id, f.space.space() as *const _)
    };
    w.arg(start | len << 32);
    let file = w.file_by_space(space);
    // Verify what is about to go (under the file's lock: nothing removes it meanwhile).
    let mut bad = 0;
    let m = w.m;
    file.space.for_each(|i, f| {
        let order = f.flags.order();
        if i + (1 << order) > start && i < start + len {
            for k in 0..1u64 << order {
                let key = Worker::key(fid, i + k);
                let q = f.flags.pfn().add(k);
                // SAFETY: a page of a cached, up-to-date folio; the cache's reference keeps it
                // and nobody writes it meanwhile.
                let page = unsafe { PageAccess::new_read_only(m.platform(), q) }.expect("mappable");
                bad += verify(page.bytes(), key);
            }
        }
    });
    w.corrupted += bad;
    let file = w.file_by_space(space);
    let st = file.space.truncate(w.cpu, start..start + len);
    if st.unreleased != 0 {
        return Outcome::Violation(format!("truncate left {} references unreleased", st.unreleased));
    }
    if st.folios == 0 {
        Outcome::Skipped
    } else {
        Outcome::Done
    }
}

/// Descriptor lookup from a random pfn, as a pfn walker does: `folio_try_get` (under RCU: pin
/// the folio the word names unless its count is zero or frozen, re-check the word), read it,
/// clone and drop the reference, and put it (which frees the folio if its owner let go
/// meanwhile).
pub(crate) fn op_rcu_lookup(w: &mut Worker<'_, '_, '_>) -> Outcome {
    let m = w.m;
    let regions: Vec<(Pfn, Pfn)> = m.memmap().regions().map(|r| (r.start, r.end)).collect();
    let (start, end) = regions[w.below(regions.len() as u64) as usize];
    let pfn = start.add(w.below(end.0 - start.0));
    w.arg(pfn.0);
    let Some(f) = m.folio_try_get(w.cpu, pfn) else { return Outcome::Skipped };
    let mut out = Outcome::Done;
    let (fp, order) = (f.flags.pfn(), f.flags.order());
    if pfn < fp || pfn >= fp.add(1 << order) {
        out = Outcome::Violation(format!("pfn {pfn} names a pinned folio covering {fp}+{order}"));
    }
    let extra = f.clone();
    if f.counts.refcount() < 2 {
        out = Outcome::Violation(format!("two references held on {fp}, refcount {}", f.counts.refcount()));
    }
    drop(extra);
    if let Err(e) = m.folio_put(w.cpu, f) {
        out = Outcome::Violation(format!("dropping a pfn walker's reference: {e}"));
    }
    out
}
