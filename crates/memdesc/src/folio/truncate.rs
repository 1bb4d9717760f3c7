//! Truncation: taking folios out of an address space by index range (all of them when it is
//! destroyed), and one page out for hwpoison.
//!
//! [`AddressSpaceRef::truncate`] removes every folio overlapping an index range. A large folio
//! that straddles a boundary of the range is **split** with [`PhysMem::folio_split`](crate::PhysMem::folio_split) into the
//! largest pieces whose boundaries fall on the range's boundaries, when the cache's reference
//! is its only one (frozen to 0 for the split, as Linux freezes a folio's refcount), it is not
//! mapped, and the new descriptors and nodes can be allocated; the pieces outside the range
//! stay cached and the ones inside are removed. Otherwise the folio is removed **whole**, and
//! the pages outside the range it drops are reported in [`TruncateStats::dropped_outside`]
//! (dropping clean cache is always allowed). A 2 MiB folio of a two-level region splits too:
//! `folio_split` gives its area a table page from elsewhere.
//!
//! This module touches the `mapping` field of the file folios it removes (only under an
//! address space's lock).

use core::ops::{Bound, RangeBounds};

use crate::addr::Pfn;
use crate::cpu::Cpu;
use crate::desc::Folio;
use crate::folio::filemap::{AddressSpaceRef, SlabNodes};
#[cfg(feature = "health")]
use crate::folio::space::PageCacheError;
use crate::folio::xarray::{addr_of, Chain, Writer, BITS};
use crate::folio::Folios;
use crate::platform::Platform;
use crate::sync::Ordering;

/// Folios removed per hold of the lock during truncation.
const TRUNCATE_BATCH: usize = 16;

/// What a truncation did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TruncateStats {
    /// Folios removed from the cache (whole folios and pieces split off straddling ones).
    pub folios: u64,
    /// Pages removed from the cache.
    pub pages: u64,
    /// Straddling folios split at the range's boundary (their outside pieces stay cached).
    pub split: u64,
    /// Pages outside the range removed with straddling folios that could not be split.
    pub dropped_outside: u64,
    /// Removed folios whose cache reference could not be dropped (the last reference of a
    /// folio still mapped); they are out of the cache and that reference is leaked.
    pub unreleased: u64,
}

/// Pieces of a split folio that truncation removed: `count` folios of `order` from `pfn`.
#[derive(Clone, Copy)]
enum Removed<'f> {
    Folio(&'f Folio),
    Pieces { pfn: Pfn, count: u64, order: u32 },
}

impl<'a, P: Platform> Folios<'a, P> {
    /// For hwpoison: takes the page `pfn` of the cached file folio `f` out of its address
    /// space. A large folio is split (as truncation splits a straddling folio) so that only an
    /// order-0 piece holding `pfn` leaves the cache and the rest stays cached. Returns that
    /// piece, whose cache reference is now the caller's, and whether a split happened.
    ///
    /// `drop_pin`: the caller holds one extra reference on `f`, dropped here once the address
    /// space's lock keeps `f` cached (a split needs the cache's reference to be the only one).
    /// On error nothing changed except that the pin was dropped.
    ///
    /// The caller must not destroy `f`'s address space concurrently (like Linux, which holds
    /// the folio lock to keep `mapping` stable).
    #[cfg(feature = "health")]
    pub(crate) fn pagecache_take_page(
        &self,
        cpu: &Cpu<'_>,
        f: &'a Folio,
        pfn: Pfn,
        drop_pin: bool,
    ) -> Result<(&'a Folio, bool), PageCacheError> {
        let unpin = || {
            if drop_pin {
                let r = self.folio_put_raw(cpu, f);
                debug_assert!(r.is_ok(), "{r:?}");
            }
        };
        let Some(space) = self.space_of(f) else {
            unpin();
            return Err(PageCacheError::NotCached);
        };
        let mut w = space.writer();
        if !w.contains(f) {
            drop(w);
            unpin();
            return Err(PageCacheError::NotCached);
        }
        if drop_pin {
            // The cache still holds its reference under the lock, so this is not the last.
            f.counts.refcount.fetch_sub(1, Ordering::AcqRel);
        }
        let mut be = self.nodes(cpu);
        if f.flags.order() == 0 {
            w.remove(&mut be, f);
            return Ok((f, false));
        }
        let idx = f.index() + (pfn.0 - f.flags.pfn().0);
        match self.split_for_truncate(cpu, &mut w, &mut be, f, idx, idx) {
            Some(Removed::Pieces { pfn: p, .. }) => {
                let piece = self.file_folio_at(p).ok_or(PageCacheError::NotFileFolio)?;
                Ok((piece, true))
            }
            _ => Err(PageCacheError::Busy),
        }
    }
}

impl<'a, P: Platform> Folios<'a, P> {
    /// Splits the straddling folio `f` so that `[a, b]` (inside it) is made of whole pieces,
    /// keeps the pieces outside cached and takes the inside ones out. `None` (nothing changed)
    /// if it cannot: other references, mapped, or no memory.
    fn split_for_truncate<'r>(
        &self,
        cpu: &Cpu<'_>,
        w: &mut Writer<'_>,
        be: &mut SlabNodes<'_, '_, P>,
        f: &Folio,
        a: u64,
        b: u64,
    ) -> Option<Removed<'r>> {
        let (fi, order) = (f.index(), f.flags.order());
        let fend = fi + ((1u64 << order) - 1);
        let mut n = order;
        if a > fi {
            n = n.min((a - fi).trailing_zeros());
        }
        if b < fend {
            n = n.min((b + 1 - fi).trailing_zeros());
        }
        if n >= order || f.counts.mapcount() != 0 {
            return None;
        }
        // Nodes for the kept pieces at levels below the folio's.
        let (lo, ln) = (order / BITS, n / BITS);
        let kept = [(a > fi).then(|| (fi, a - 1)), (b < fend).then(|| (b + 1, fend))];
        let mut need = 0u64;
        for l in ln..lo {
            let sh = BITS * (l + 1);
            for (p, q) in kept.into_iter().flatten() {
                need += (q >> sh) - (p >> sh) + 1;
            }
            // Both sides of the hole may share a node.
            if let [Some((_, q)), Some((p, _))] = kept {
                need -= (q >> sh == p >> sh) as u64;
            }
        }
        let mut chain = Chain::alloc(be, need as usize).ok()?;
        // The split freezes the count at the cache's reference (the only one allowed: a
        // holder's would be copied into every piece) and publishes each piece with one.
        w.seq_begin();
        if self.folio_split_counts(cpu, f, Some(1), n, None, |_| ()).is_err() {
            w.seq_end();
            chain.release(be);
            return None;
        }
        w.clear_entries(fi, order, addr_of(f));
        let pfn0 = f.flags.pfn();
        let total = 1u64 << (order - n);
        let mut removed = 0;
        for k in 0..total {
            let pi = fi + (k << n);
            let piece = self.file_folio_at(pfn0.add(k << n)).expect("folio_split stamps every piece");
            // Each piece holds the cache's reference (from the split).
            if (a..=b).contains(&pi) {
                piece.mapping.store(0, Ordering::Release);
                removed += 1;
            } else {
                w.insert_entry(addr_of(piece), pi, n, &mut chain);
            }
        }
        // A root that held only the folio may now hold only the node of its kept pieces.
        w.shrink(be);
        w.seq_end();
        debug_assert!(chain.head == 0, "page cache: preallocated more nodes than used");
        chain.release(be);
        w.account((b - a + 1).wrapping_neg(), (total - removed).wrapping_sub(1));
        Some(Removed::Pieces { pfn: pfn0.add(a - fi), count: removed, order: n })
    }
}

impl<'m, P: Platform> AddressSpaceRef<'m, P> {
    /// Removes every folio that overlaps `range` (indices) and drops the cache's references.
    /// Straddling large folios are split at the boundary when possible, else removed whole
    /// (see the module docs).
    pub fn truncate(&self, cpu: &Cpu<'_>, range: impl RangeBounds<u64>) -> TruncateStats {
        let mut stats = TruncateStats::default();
        let first = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => match s.checked_add(1) {
                Some(s) => s,
                None => return stats,
            },
            Bound::Unbounded => 0,
        };
        let last = match range.end_bound() {
            Bound::Included(&e) => e,
            Bound::Excluded(&e) => match e.checked_sub(1) {
                Some(e) => e,
                None => return stats,
            },
            Bound::Unbounded => u64::MAX,
        };
        if first > last {
            return stats;
        }
        let mut from = first;
        let mut done = false;
        while !done {
            let mut batch: [Option<Removed<'_>>; TRUNCATE_BATCH] = [None; TRUNCATE_BATCH];
            let mut nb = 0;
            {
                let mut w = self.space.writer();
                let mut be = self.folios.nodes(cpu);
                while nb < TRUNCATE_BATCH {
                    let Some(f) = w.find_next(from, last) else {
                        done = true;
                        break;
                    };
                    let (fi, order) = (f.index(), f.flags.order());
                    let fend = fi + ((1u64 << order) - 1);
                    let (a, b) = (fi.max(first), fend.min(last));
                    let straddles = fi < first || fend > last;
                    let pieces =
                        if straddles { self.folios.split_for_truncate(cpu, &mut w, &mut be, f, a, b) } else { None };
                    if let Some(Removed::Pieces { count, .. }) = pieces {
                        stats.split += 1;
                        stats.folios += count;
                        stats.pages += b - a + 1;
                    } else {
                        w.remove(&mut be, f);
                        stats.folios += 1;
                        stats.pages += 1 << order;
                        stats.dropped_outside += (1 << order) - (b - a + 1);
                    }
                    batch[nb] = Some(pieces.unwrap_or(Removed::Folio(f)));
                    nb += 1;
                    if fend >= last {
                        done = true;
                        break;
                    }
                    from = fend + 1;
                }
            }
            for r in batch[..nb].iter().flatten() {
                stats.unreleased += self.release(cpu, *r);
            }
        }
        stats
    }

    /// Drops the cache's references to removed folios; returns how many could not be dropped.
    fn release(&self, cpu: &Cpu<'_>, r: Removed<'_>) -> u64 {
        let put = |f: &Folio| {
            self.folios.lru_del(f);
            self.folios.folio_put_raw(cpu, f).is_err() as u64
        };
        match r {
            // Removed from the tree with its cache reference, which we still hold.
            Removed::Folio(f) => put(f),
            Removed::Pieces { pfn, count, order } => (0..count)
                .map(|k| match self.folios.file_folio_at(pfn.add(k << order)) {
                    Some(f) => put(f),
                    None => {
                        debug_assert!(false, "a split piece lost its word");
                        1
                    }
                })
                .sum(),
        }
    }

    /// Truncates everything and frees the address space. While file VMAs still map it (they
    /// must go first) it is truncated but not freed: leaked, since the VMAs keep its `i_mmap`.
    pub fn destroy(self, cpu: &Cpu<'_>) -> TruncateStats {
        let stats = self.truncate(cpu, ..);
        #[cfg(feature = "pgtable")]
        if self.space.i_mmap.nr_vmas() != 0 {
            debug_assert!(false, "file VMAs must go before their file");
            return stats;
        }
        debug_assert_eq!(self.space.root.load(Ordering::Relaxed), 0);
        let AddressSpaceRef { folios, space } = self;
        folios.slabs.obj_free(cpu, space);
        stats
    }
}
