//! The reverse map (Linux's `mm/rmap.c`): from a folio to every page-table entry mapping it,
//! with no per-folio lists.
//!
//! An anon folio's `mapping` is its anon_vma ([`RmapList`]; set when first mapped, cleared
//! when its mapcount returns to 0) and its `index` the page offset (`va >> 12` of its first
//! page, which stays valid in a fork child); a file folio's are its address space (whose
//! `i_mmap` is an [`RmapList`]) and file index. [`PhysMem::rmap_walk`](crate::PhysMem::rmap_walk) goes from the folio to
//! that list, and for every VMA computes the address each page would have and checks that
//! mm's entry there. Pages mapped through pfn VMAs (driver memory, vmalloc, netmem) have no
//! rmap, as in Linux. Not modelled: unmapping a file folio when truncation takes it out of
//! the page cache (its entries stay, holding their references, until unmapped; the rmap no
//! longer finds them).
//!
//! An anon_vma is freed with its last VMA while unmapped folios may still name it, so the walk
//! reads a folio's `mapping` under RCU, locks the anon_vma it names (TYPESAFE_BY_RCU: still an
//! anon_vma, with a lock that is never reinitialised) and re-reads `mapping` under the lock;
//! `mapping` changes only under that lock (set by the first mapping, cleared by the last
//! unmap), so an equal value proves the anon_vma is the folio's and alive. A file's
//! `i_mmap` lives in its address space, which must outlive its VMAs. Migration
//! (`migrate.rs`) holds a folio's rmap lock (`rmap_lock`) across its freeze, copy and entry
//! rewrite (`rmap_move_locked`); hwpoison unmaps through `rmap_unmap`.

use super::Mms;
#[cfg(feature = "health")]
use crate::addr::PAGE_SIZE;
use crate::addr::{Pfn, PAGE_SHIFT};
use crate::cpu::Cpu;
use crate::desc::Folio;
use crate::list::List;
use crate::platform::Platform;
use crate::sync::{Ordering, SpinGuard};
use crate::word::Tag;

use super::mmap::{Mm, Vma};
#[cfg(feature = "health")]
use super::pgtable::ZapStats;
use super::pgtable::{MapError, PtEntry, PMD_SIZE, PTE_PFN_MASK};

/// The list type lives with the address space that holds one (folio layer).
pub use crate::folio::space::{RmapLink, RmapList};

impl RmapList {
    /// Locks the list.
    pub(crate) fn lock(&self) -> RmapGuard<'_> {
        RmapGuard { list: self, vmas: self.lock.lock() }
    }
}

/// An rmap list, locked ([`RmapList::lock`], [`PhysMem::rmap_lock`](crate::PhysMem::rmap_lock)): while it is held no
/// entry mapping a folio of the list's VMAs appears, goes or changes except through the
/// holder. A VMA is linked only on its own rmap list ([`Vma`]'s owner), through
/// [`RmapGuard::link`]; the one unlink (`Vma::rmap_unlink`, in `machine/raw.rs`) relies on it.
pub(crate) struct RmapGuard<'a> {
    list: &'a RmapList,
    vmas: SpinGuard<'a, List<RmapLink>>,
}

impl<'a> RmapGuard<'a> {
    /// The VMAs, first to last, for a walk.
    pub(super) fn vmas(&self) -> impl Iterator<Item = &Vma> {
        self.vmas.iter().map(Vma::of_link)
    }

    /// Whether no VMA is on the list.
    pub(super) fn is_empty(&self) -> bool {
        self.vmas.is_empty()
    }

    /// Links `v` at the front; refused (`false`) if this is not `v`'s own rmap list or `v`
    /// is linked already.
    pub(super) fn link(&mut self, v: &Vma) -> bool {
        if !v.rmap().is_some_and(|r| core::ptr::eq(r, self.list)) {
            return false;
        }
        let ok = self.vmas.push_front(v.rmap_link()).is_ok();
        self.count();
        ok
    }

    /// Copies the list's length to `nr` (after a link or an unlink); returns it.
    pub(crate) fn count(&self) -> usize {
        let n = self.vmas.len();
        self.list.nr.store(n, Ordering::Relaxed);
        n
    }

    /// The list and its VMAs, for `Vma::rmap_unlink` in `machine/raw.rs` (the one unlink);
    /// nothing else may link through the `&mut`.
    pub(crate) fn raw_parts(&mut self) -> (&'a RmapList, &mut List<RmapLink>) {
        (self.list, &mut *self.vmas)
    }
}

/// A folio's rmap list, locked (for migration).
#[cfg(feature = "health")]
pub(crate) type RmapLocked<'a> = RmapGuard<'a>;

impl<'a, P: Platform> Mms<'a, P> {
    // ---- rmap -----------------------------------------------------------------------------

    /// Locks the rmap list of a folio (its anon_vma or its file's `i_mmap`), if it has one,
    /// and returns it with the guard. The `mapping` is read under RCU and re-checked under
    /// the lock: an anon_vma freed and reused meanwhile (TYPESAFE_BY_RCU) is noticed there.
    ///
    /// The caller holds a reference on `f`, so `f` stays this folio: its tag (read from its
    /// word) and its `mapping` belong to the same folio. On a descriptor that is not pinned
    /// (freed and reused between the two reads) an anon_vma could be taken for an address
    /// space or the reverse, and the "lock" spun on would be memory that is no lock at all:
    /// the torture hang in `offline_range → migrate_to → rmap_lock` before migration took its
    /// own reference first.
    pub(super) fn lock_folio_rmap(&self, cpu: &Cpu<'_>, f: &Folio) -> Option<RmapGuard<'a>> {
        let tag = self.pages.memmap().load(self.pages.platform(), f.flags.pfn())?.word.tag()?;
        let rcu = self.pages.rcu().read_lock(cpu);
        self.lock_mapping_rmap(&rcu, tag, f)
    }

    /// Calls `cb(mm, vma, va, level, table, idx, entry)` for every entry mapping `f`, with the
    /// rmap lock held by the caller and each mm's page-table lock held around its VMAs.
    #[allow(clippy::type_complexity)]
    pub(super) fn walk_mappings_locked(
        &self,
        list: &RmapGuard<'_>,
        f: &Folio,
        cb: &mut dyn FnMut(&Mm, &Vma, u64, u32, Pfn, usize, PtEntry),
    ) -> u32 {
        let (index, n, pfn0) = (f.index(), 1u64 << f.flags.order(), f.flags.pfn());
        let mut found = 0;
        for v in list.vmas() {
            let mm = v.mm();
            let _pt = mm.pt_lock.lock();
            let mut i = 0u64;
            while i < n {
                let Some(va) = v.va_of(index + i) else {
                    i += 1;
                    continue;
                };
                match self.lookup(mm, va) {
                    Some((2, table, idx)) => {
                        let e = self.load_entry(table, idx);
                        let hva = va & !(PMD_SIZE - 1);
                        if e.pfn() == pfn0 && va == hva && i == 0 {
                            cb(mm, v, hva, 2, table, idx, e);
                            found += 1;
                        }
                        i += ((hva + PMD_SIZE - va) >> PAGE_SHIFT).max(1);
                    }
                    Some((1, table, idx)) => {
                        let e = self.load_entry(table, idx);
                        if e.pfn() == pfn0.add(i) {
                            cb(mm, v, va, 1, table, idx, e);
                            found += 1;
                        }
                        i += 1;
                    }
                    _ => i += 1,
                }
            }
        }
        found
    }

    /// Calls `f(mm, va, entry)` for every page-table entry that maps `folio`, found from the
    /// folio's `mapping` and `index` (anon_vma or file `i_mmap`) the Linux way. Returns the
    /// number of entries found, which equals the folio's mapcount when nothing races.
    ///
    /// The callback runs with the rmap lock and that mm's page-table lock held: it must not
    /// call back into the page tables.
    pub(crate) fn rmap_walk(&self, cpu: &Cpu<'_>, folio: &Folio, mut f: impl FnMut(&Mm, u64, PtEntry)) -> u32 {
        let Some(list) = self.lock_folio_rmap(cpu, folio) else { return 0 };
        self.walk_mappings_locked(&list, folio, &mut |mm, _, va, _, _, _, e| f(mm, va, e))
    }

    /// Locks `f`'s rmap list (anon_vma or `i_mmap`) for a caller that must keep every entry
    /// mapping `f` stable across several steps (migration); `None` if `f` has no rmap.
    #[cfg(feature = "health")]
    pub(crate) fn rmap_lock(&self, cpu: &Cpu<'_>, f: &Folio) -> Option<RmapLocked<'a>> {
        self.lock_folio_rmap(cpu, f)
    }

    /// With `f`'s rmap lock held (`l`), points every entry mapping `f` at the same page of the
    /// block at `new` instead: the descriptor stays, so mapcount and references are
    /// unchanged. Takes each mm's page-table lock in turn. Returns the entries rewritten. For
    /// migration, between the copy and the switch of `f`'s pfn.
    #[cfg(feature = "health")]
    pub(crate) fn rmap_move_locked(&self, l: &RmapLocked<'_>, f: &Folio, new: Pfn) -> u32 {
        let old = f.flags.pfn();
        self.walk_mappings_locked(l, f, &mut |_, _, _, _, table, idx, e| {
            let flags = e.0 & !PTE_PFN_MASK;
            self.store_entry(table, idx, PtEntry::new(new.add(e.pfn().0 - old.0), flags));
        })
    }

    /// Unmaps every entry mapping `f` (Linux's `try_to_unmap`), found through the rmap; each
    /// entry's mapcount and reference are dropped and emptied tables freed, as
    /// [`MmRef::unmap`] does. `each(mm, va)` is told every address unmapped (with the rmap
    /// and page-table locks held: it must not call back into the page tables). The caller
    /// holds a reference on `f`. Returns the entries cleared.
    #[cfg(feature = "health")]
    pub(crate) fn rmap_unmap(&self, cpu: &Cpu<'_>, f: &Folio, each: &mut dyn FnMut(&Mm, u64)) -> u32 {
        let Some(list) = self.lock_folio_rmap(cpu, f) else { return 0 };
        self.walk_mappings_locked(&list, f, &mut |mm, _, va, level, _, _, _| {
            let len = if level == 2 { PMD_SIZE } else { PAGE_SIZE as u64 };
            let mut st = ZapStats::default();
            self.zap(cpu, mm, mm.pgd, 4, va, va + len, true, &mut st);
            each(mm, va);
        })
    }

    /// Replaces every mapping of folio `old` by the same page of `new` (same order, not
    /// mapped, held by the caller): each entry's pfn changes, and the entries' mapcount and
    /// references move from `old` to `new`, which also takes `old`'s mapping and index.
    /// Returns the entries moved. For migration and compaction.
    #[allow(dead_code)]
    pub(crate) fn rmap_replace(&self, cpu: &Cpu<'_>, old: &Folio, new: &Folio) -> Result<u32, MapError> {
        if old.flags.order() != new.flags.order() {
            return Err(MapError::WrongMapping);
        }
        if new.counts.mapcount() != 0 {
            return Err(MapError::AlreadyMapped(0));
        }
        let Some(list) = self.lock_folio_rmap(cpu, old) else { return Ok(0) };
        let (po, pn) = (old.flags.pfn(), new.flags.pfn());
        new.mapping.store(old.mapping(), Ordering::Release);
        new.index.store(old.index(), Ordering::Release);
        let n = self.walk_mappings_locked(&list, old, &mut |_, _, _, _, table, idx, e| {
            let off = e.pfn().0 - po.0;
            let flags = e.0 & !PTE_PFN_MASK;
            self.store_entry(table, idx, PtEntry::new(pn.add(off), flags));
        });
        new.counts.mapcount.fetch_add(n, Ordering::AcqRel);
        new.counts.refcount.fetch_add(n, Ordering::AcqRel);
        old.counts.mapcount.fetch_sub(n, Ordering::AcqRel);
        old.counts.refcount.fetch_sub(n, Ordering::AcqRel);
        if old.counts.mapcount() == 0
            && self.pages.memmap().load(self.pages.platform(), po).and_then(|v| v.word.tag()) == Some(Tag::AnonFolio)
        {
            old.mapping.store(0, Ordering::Release);
        }
        Ok(n)
    }
}
