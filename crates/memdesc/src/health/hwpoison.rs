//! Hardware memory errors: [`PhysMem::memory_failure`] retires a page the hardware reported
//! as corrupt, doing for each kind of page what a kernel would, and reports what was lost.
//!
//! The handler reads the pfn's **own word** and dispatches on it (it never assumes the pfn
//! heads anything): the page allocator's words here, a descriptor kind through its entry's
//! `PoisonOp` in `health::kinds` (the folio, slab and pool mechanisms are written here once;
//! a kind that is only reported has its report function in its own file there):
//!
//! | word | action |
//! |------|--------|
//! | free (`Buddy`, or a tail inside a free block) | taken out of the buddy lists, splitting the free block around it; the rest is put back. **Recovered.** |
//! | free on a per-CPU list (`Buddy { pcp }`) | the lists are drained, then as above |
//! | anon folio | a large folio is split (a mapped one too: its PMD mappings become PTEs and the counts are shared out) so only the order-0 piece holding the page is lost (unlike `folio_split`, which refuses a folio with holders besides the caller, this split freezes the count it finds and copies every holder's reference onto every piece: a holder's `FolioRef` keeps the first piece and it owns the others' counts raw, as `memory_failure`'s report tells it); that piece is unmapped everywhere through the reverse map (every mm and address reported, see [`PhysMem::memory_failure_with`]), flagged [`PG_HWPOISON`] and taken off the LRU, so its last put retires it instead of freeing it. **Recovered** if that was now, else **Delayed** until its owner drops it |
//! | page-cache folio | a mapped one is first unmapped everywhere (all its pages: the data of the others stays cached, as truncation would leave it); then as above, and the piece is removed from its address space (the rest stays cached) |
//! | folio mapped only where the reverse map cannot see (pfn VMAs, truncated while mapped) | flagged as above; its entries keep their references, and the page is retired when the last goes. **Delayed** |
//! | slab page | the slab is flagged: no more objects come from it, objects freed into it are lost, and when empty its pages are retired. Reports the cache and objects in use. **Delayed** (or Recovered if empty) |
//! | page-table page, reserved, raw kernel memory, memmap, zero page, offline, guard | kernel memory that cannot be recovered: left in place, **Ignored** (counted) |
//! | zsmalloc page | a zeroed page takes its place in the zspage (the descriptor stays); the objects with a byte on it are **lost**: their handles say [`ZsError::Lost`](crate::zsmalloc::ZsError::Lost) when mapped and can still be freed; the headers and free list that lived on the page are rebuilt from the handle table; every other object of the zspage stays readable where it is. Refused with [`PoisonError::Busy`] while an object of the zspage is mapped. **Recovered** |
//! | z3fold page | likewise: its (up to three) objects are lost, the descriptor gets a zeroed page. **Recovered** |
//! | vmalloc page | kernel memory that cannot be recovered (as in Linux): left in place, the area (its record's address) and the page's index reported. **Ignored** |
//! | page_pool page, mappable driver memory | owned by a driver, which would have to be told: left in place, owner and mapcount reported. **Ignored** |
//!
//! A retired page's word becomes `Undescribed { HwPoison }`; it is on no list, never handed
//! out again, and counted in [`UndescribedStats`](crate::isolate::UndescribedStats).
//! [`PhysMem::unpoison`] (for tests) returns it to the allocator.
//!
//! In **two-level regions** the handler reads the pfn's word the same way (a page inside an
//! unsplit 2 MiB area reads the area word) and handles folios — a 2 MiB folio in an unsplit
//! area is split by `folio_split`, which gives the area a table page from the same zone so
//! the poisoned page gets a word of its own — zsmalloc / z3fold pages, and the kinds it only
//! reports; free memory, tails of larger blocks and slab pages there get
//! [`PoisonError::TwoLevel`] (the isolation code is flat-only), and so does `unpoison`. The
//! handler assumes no one
//! concurrently destroys the address space of a file folio it handles, or the slab cache of a
//! slab page it handles.
//!
//! This module touches page words, folio flags/LRU state through the folio API, page-table
//! entries through the reverse map (`rmap_unmap`), the page cache through
//! `pagecache_take_page`, slabs through `poison_slab`, and zsmalloc / z3fold pools through
//! their poison entry points.

use super::kinds::{PoisonOp, Pool};
pub use super::poisoned::PoisonedKind;
use crate::addr::Pfn;
use crate::cpu::Cpu;
use crate::desc::{DescPtr, Folio, PG_HWPOISON};
use crate::folio::FolioError;
use crate::isolate::IsolateError;
use crate::memmap::kinds::desc_of;
use crate::page_alloc::AllocError;
use crate::pagecache::PageCacheError;
use crate::pgtable::Mm;
use crate::platform::Platform;
use crate::sync::Ordering;
use crate::word::{PageKind, Subtype, Tag, Word};
#[cfg(feature = "zsmalloc")]
use crate::zsmalloc::ZsMigrateError;
use crate::PhysMem;

/// A pool's refusal to retire its page, as a poison error.
#[cfg(feature = "zsmalloc")]
fn pool_error(pfn: Pfn, e: ZsMigrateError) -> PoisonError {
    match e {
        ZsMigrateError::OutOfRange(p) => PoisonError::OutOfRange(p),
        ZsMigrateError::NoMemory(a) => PoisonError::NoMemory(a),
        ZsMigrateError::NotZsmalloc(_) | ZsMigrateError::Busy(_) | ZsMigrateError::BadTarget(_) => {
            PoisonError::Busy(pfn)
        }
    }
}

/// What was done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoisonAction {
    /// The page is retired now.
    Recovered,
    /// The page is retired when its owner drops its last reference.
    Delayed,
    /// Kernel memory that cannot be recovered: left in place.
    Ignored,
}

/// The result of [`PhysMem::memory_failure`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoisonReport {
    /// The poisoned pfn.
    pub pfn: Pfn,
    /// What it was.
    pub kind: PoisonedKind,
    /// What was done.
    pub action: PoisonAction,
    /// Pages whose contents are lost (the poisoned page; a whole slab for a slab page).
    pub pages_lost: u64,
    /// Whether a large folio was split so only the poisoned page is lost.
    pub split: bool,
    /// Page-table entries unmapped through the reverse map (a PMD entry counts 1).
    pub unmapped: u32,
}

/// Why `memory_failure` or `unpoison` did nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoisonError {
    /// The pfn is in no region.
    OutOfRange(Pfn),
    /// The pfn is in a two-level region and is free, a tail of a larger block or a slab page
    /// (not handled there), or `unpoison` was asked for a two-level pfn.
    TwoLevel(Pfn),
    /// The page is already poisoned.
    AlreadyPoisoned(Pfn),
    /// The folio is busy (being freed, frozen, locked, or holding references that prevent
    /// the split), or an object of the zsmalloc / z3fold page is mapped: retry later.
    Busy(Pfn),
    /// Splitting the folio needed memory that could not be allocated.
    Folio(FolioError),
    /// Replacing a zsmalloc / z3fold page needed a page that could not be allocated.
    NoMemory(AllocError),
    /// Taking the page out of the page cache failed.
    PageCache(PageCacheError),
    /// The word holds bits no encoder writes.
    Corrupt(Pfn, u64),
    /// `unpoison` of a page that is not poisoned.
    NotPoisoned(Pfn),
}

impl core::fmt::Display for PoisonError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PoisonError::OutOfRange(p) => write!(f, "pfn {p} is not in any memory region"),
            PoisonError::TwoLevel(p) => write!(f, "pfn {p} is in a two-level region (unsupported)"),
            PoisonError::AlreadyPoisoned(p) => write!(f, "pfn {p} is already poisoned"),
            PoisonError::Busy(p) => write!(f, "the folio at pfn {p} is busy"),
            PoisonError::Folio(e) => write!(f, "{e}"),
            PoisonError::NoMemory(e) => write!(f, "no page to replace the poisoned one: {e}"),
            PoisonError::PageCache(e) => write!(f, "{e}"),
            PoisonError::Corrupt(p, w) => write!(f, "pfn {p} holds an invalid word {w:#x}"),
            PoisonError::NotPoisoned(p) => write!(f, "pfn {p} is not poisoned"),
        }
    }
}

impl core::error::Error for PoisonError {}

impl From<IsolateError> for PoisonError {
    fn from(e: IsolateError) -> Self {
        match e {
            IsolateError::TwoLevel(p) => PoisonError::TwoLevel(p),
            // The page stopped being free under us: it is someone's now; retry.
            IsolateError::NotFree(p) => PoisonError::Busy(p),
            IsolateError::OutOfRange(p) | IsolateError::Misaligned(p) => PoisonError::OutOfRange(p),
        }
    }
}

impl<P: Platform> PhysMem<P> {
    /// Handles a hardware memory error at `pfn` (see the module docs for what each kind of
    /// page gets). On `Err` nothing changed.
    pub fn memory_failure(&self, cpu: &Cpu<'_>, pfn: Pfn) -> Result<PoisonReport, PoisonError> {
        self.memory_failure_with(cpu, pfn, &mut |_, _| {})
    }

    /// As [`PhysMem::memory_failure`], telling `unmapped(mm, va)` every address space and
    /// address whose page-table entry was cleared (a mapped folio; with the rmap and
    /// page-table locks held: it must not call back into the page tables).
    pub fn memory_failure_with(
        &self,
        cpu: &Cpu<'_>,
        pfn: Pfn,
        unmapped: &mut dyn FnMut(&Mm, u64),
    ) -> Result<PoisonReport, PoisonError> {
        let two_level = match self.pages().flat_ctx(pfn) {
            Ok(_) => false,
            Err(IsolateError::TwoLevel(_)) => true,
            Err(e) => return Err(e.into()),
        };
        // The pfn's own word: the flat word, a split area's table word, or the area word of
        // an unsplit 2 MiB area of a two-level region.
        let word = |p: Pfn| self.memmap().load(self.platform(), p).map(|v| v.word);
        let mut from_pcp = false;
        for _ in 0..4 {
            let w = word(pfn).ok_or(PoisonError::OutOfRange(pfn))?;
            let Some(k) = super::kinds::of_word(w) else {
                // The page allocator's own words: free, undescribed, split, corrupt. In
                // two-level regions free memory (the isolation code is flat-only) and tails
                // are not handled.
                let r = match w.kind() {
                    PageKind::Buddy(_) | PageKind::Split(_) if two_level => Err(PoisonError::TwoLevel(pfn)),
                    PageKind::Undescribed(u) if two_level && u.subtype == Subtype::Tail => {
                        Err(PoisonError::TwoLevel(pfn))
                    }
                    PageKind::Buddy(b) if b.pcp => {
                        self.drain_all();
                        from_pcp = true;
                        continue;
                    }
                    PageKind::Buddy(_) => self.poison_free(pfn, from_pcp),
                    PageKind::Undescribed(u) => match u.subtype {
                        Subtype::HwPoison => Err(PoisonError::AlreadyPoisoned(pfn)),
                        Subtype::Tail => match self.poison_free(pfn, from_pcp) {
                            Ok(r) => Ok(r),
                            // A tail of raw memory in use: find its head to say what it is.
                            Err(_) if self.free_block_containing_pfn(pfn).is_none() => {
                                if self.pcp_pages() > 0 && !from_pcp {
                                    self.drain_all();
                                    from_pcp = true;
                                    continue;
                                }
                                Ok(self.ignored(pfn, PoisonedKind::Undescribed(self.head_subtype(pfn))))
                            }
                            Err(_) => continue,
                        },
                        s => Ok(self.ignored(pfn, PoisonedKind::Undescribed(s))),
                    },
                    PageKind::Split(_) => Err(PoisonError::TwoLevel(pfn)),
                    _ => Err(PoisonError::Corrupt(pfn, w.raw())),
                };
                return r;
            };
            // A descriptor kind: what to do is its entry's (health::kinds).
            let r = match k.poison {
                PoisonOp::Folio => match desc_of::<Folio>(w) {
                    Some(d) => self.poison_folio(cpu, pfn, d, w.tag() == Some(Tag::FileFolio), unmapped),
                    None => continue,
                },
                // Slab pages in two-level regions are not handled.
                PoisonOp::Slab if two_level => Err(PoisonError::TwoLevel(pfn)),
                PoisonOp::Slab => {
                    let Some(d) = desc_of::<crate::slab::Slab>(w) else { continue };
                    // Slab descriptors come from the TYPESAFE_BY_RCU slab_desc cache (or are
                    // its own self-hosted ones), so under the guard the memory stays a Slab
                    // even if it is freed and reused; poison_slab re-checks it against the
                    // page word under the cache's node lock before changing anything.
                    let rcu = self.rcu().read_lock(cpu);
                    let slab = crate::desc_ref::rcu(&rcu, d);
                    let order = slab.flags.order();
                    match self.slabs().poison_slab(cpu, slab, pfn) {
                        crate::slab::SlabPoison::Poisoned { cache, inuse, objects } => {
                            self.pages().undesc().hwpoison_events.fetch_add(1, Ordering::Relaxed);
                            Ok(PoisonReport {
                                pfn,
                                kind: PoisonedKind::Slab { cache, objects_in_use: inuse, objects },
                                action: if inuse == 0 { PoisonAction::Recovered } else { PoisonAction::Delayed },
                                pages_lost: 1 << order,
                                split: false,
                                unmapped: 0,
                            })
                        }
                        crate::slab::SlabPoison::Already => Err(PoisonError::AlreadyPoisoned(pfn)),
                        // Emptied and freed (or about to be): handle what the page is now.
                        crate::slab::SlabPoison::Gone => continue,
                    }
                }
                #[cfg(feature = "zsmalloc")]
                PoisonOp::Pool(Pool::Zsmalloc) => match crate::zsmalloc::zs_poison_page(self, cpu, pfn) {
                    Ok(z) => Ok(self.recovered_pool_page(
                        pfn,
                        PoisonedKind::Zsmalloc { objects_lost: z.lost, objects_in_use: z.inuse },
                    )),
                    Err(ZsMigrateError::NotZsmalloc(_)) => continue,
                    Err(e) => Err(pool_error(pfn, e)),
                },
                #[cfg(feature = "z3fold")]
                PoisonOp::Pool(Pool::Z3fold) => match crate::z3fold::z3fold_poison_page(self, cpu, pfn) {
                    Ok(lost) => Ok(self.recovered_pool_page(pfn, PoisonedKind::Z3fold { objects_lost: lost })),
                    Err(ZsMigrateError::NotZsmalloc(_)) => continue,
                    Err(e) => Err(pool_error(pfn, e)),
                },
                // Without its pool no page is of its kind: such a word is corrupt.
                #[cfg(not(all(feature = "zsmalloc", feature = "z3fold")))]
                PoisonOp::Pool(pool) => {
                    let _not_built: Pool = pool;
                    Err(PoisonError::Corrupt(pfn, w.raw()))
                }
                PoisonOp::Report(report) => {
                    // Descriptors are TYPESAFE_BY_RCU: read under the guard, then re-check
                    // that the word still names this one.
                    let rcu = self.rcu().read_lock(cpu);
                    let kind = report(&rcu, w);
                    drop(rcu);
                    if word(pfn) != Some(w) {
                        continue;
                    }
                    Ok(self.ignored(pfn, kind))
                }
            };
            return r;
        }
        Err(PoisonError::Busy(pfn))
    }

    #[cfg(feature = "zsmalloc")]
    fn recovered_pool_page(&self, pfn: Pfn, kind: PoisonedKind) -> PoisonReport {
        self.pages().undesc().hwpoison_events.fetch_add(1, Ordering::Relaxed);
        PoisonReport { pfn, kind, action: PoisonAction::Recovered, pages_lost: 1, split: false, unmapped: 0 }
    }

    fn ignored(&self, pfn: Pfn, kind: PoisonedKind) -> PoisonReport {
        self.pages().undesc().hwpoison_events.fetch_add(1, Ordering::Relaxed);
        self.pages().undesc().hwpoison_ignored.fetch_add(1, Ordering::Relaxed);
        PoisonReport { pfn, kind, action: PoisonAction::Ignored, pages_lost: 1, split: false, unmapped: 0 }
    }

    /// The subtype of the raw allocation whose tail `pfn` is.
    fn head_subtype(&self, pfn: Pfn) -> Subtype {
        for o in 1..=self.config().max_order {
            let h = pfn.align_down(o);
            if let Some(v) = self.memmap().load(self.platform(), h) {
                if let PageKind::Undescribed(u) = v.word.kind() {
                    if u.subtype != Subtype::Tail && u.order as u32 >= o {
                        return u.subtype;
                    }
                }
            }
        }
        Subtype::Tail
    }

    fn poison_free(&self, pfn: Pfn, from_pcp: bool) -> Result<PoisonReport, PoisonError> {
        let (rm, _) = self.pages().flat_ctx(pfn)?;
        self.pages().take_free_block(pfn, 0)?;
        rm.flat_word(pfn).store(crate::page_alloc::PageAllocator::<P>::undesc_word(rm, Subtype::HwPoison, 0));
        self.pages().undesc().hwpoison.fetch_add(1, Ordering::Relaxed);
        self.pages().undesc().hwpoison_events.fetch_add(1, Ordering::Relaxed);
        let kind = if from_pcp { PoisonedKind::FreePerCpu } else { PoisonedKind::Free };
        Ok(PoisonReport { pfn, kind, action: PoisonAction::Recovered, pages_lost: 1, split: false, unmapped: 0 })
    }

    fn poison_folio(
        &self,
        cpu: &Cpu<'_>,
        pfn: Pfn,
        d: DescPtr<Folio>,
        file: bool,
        each: &mut dyn FnMut(&Mm, u64),
    ) -> Result<PoisonReport, PoisonError> {
        // Pinned (the lookup takes a reference and re-checks the word): the folio stays live
        // until that reference is put. It must be the one the dispatch decoded.
        let f = self.folio_try_get(cpu, pfn).ok_or(PoisonError::Busy(pfn))?;
        if DescPtr::from_ref(&*f) != d {
            let _ = self.folio_put(cpu, f);
            return Err(PoisonError::Busy(pfn));
        }
        let f = f.into_raw();
        if f.flags.flags() & PG_HWPOISON != 0 {
            // Already poisoned, waiting for its last put.
            let _ = self.folio_put_raw(cpu, f);
            return Err(PoisonError::AlreadyPoisoned(pfn));
        }
        let order = f.flags.order();
        // A mapped file folio is unmapped whole (the page cache keeps the data of its other
        // pages); an anon one is split first, below, so its other pages stay mapped.
        let mut unmapped = 0;
        if f.counts.mapcount() != 0 && (file || order == 0) {
            unmapped += self.rmap_unmap(cpu, f, each);
        }
        let (piece, split, kind) = if file && f.mapping() != 0 {
            let index = f.index() + (pfn.0 - f.flags.pfn().0);
            let mapping = f.mapping();
            // Drops our pin under the address space's lock.
            let (piece, split) = self.pagecache_take_page(cpu, f, pfn, true).map_err(|e| match e {
                PageCacheError::Busy => PoisonError::Busy(pfn),
                e => PoisonError::PageCache(e),
            })?;
            // The cache's reference is now ours: it is the one the put below drops.
            (piece, split, PoisonedKind::FileFolio { order, index, mapping })
        } else {
            let kind = if file {
                PoisonedKind::FileFolio { order, index: f.index() + (pfn.0 - f.flags.pfn().0), mapping: 0 }
            } else {
                PoisonedKind::AnonFolio { order }
            };
            if order == 0 {
                (f, false, kind)
            } else {
                if let Err(e) = self.folio_split_held(cpu, f, None, 0, |_| ()) {
                    let _ = self.folio_put_raw(cpu, f);
                    return Err(PoisonError::Folio(e));
                }
                // Every piece inherited our pin: drop it on all but the poisoned one.
                let first = f.flags.pfn();
                let mut piece = f;
                for i in 0..1u64 << order {
                    let p = first.add(i);
                    // A piece we hold a reference to (inherited from the split); the lookup
                    // takes a second one, put at once, to reach it.
                    let Some(pf) = self.folio_try_get(cpu, p).map(|r| r.into_raw()) else {
                        continue;
                    };
                    let _ = self.folio_put_raw(cpu, pf);
                    if p == pfn {
                        piece = pf;
                    } else {
                        let _ = self.folio_put_raw(cpu, pf);
                    }
                }
                (piece, true, kind)
            }
        };
        if piece.counts.mapcount() != 0 {
            unmapped += self.rmap_unmap(cpu, piece, each);
        }
        self.lru_del(piece);
        piece.flags.set(PG_HWPOISON);
        self.pages().undesc().hwpoison_events.fetch_add(1, Ordering::Relaxed);
        self.pages().undesc().hwpoison_delayed.fetch_add(1, Ordering::Relaxed);
        let freed = self.folio_put_raw(cpu, piece).map_err(PoisonError::Folio)?;
        let action = if freed { PoisonAction::Recovered } else { PoisonAction::Delayed };
        Ok(PoisonReport { pfn, kind, action, pages_lost: 1, split, unmapped })
    }

    /// Returns a poisoned page to the allocator (for tests: the hardware error was injected).
    pub fn unpoison(&self, cpu: &Cpu<'_>, pfn: Pfn) -> Result<(), PoisonError> {
        let (rm, _) = self.pages().flat_ctx(pfn)?;
        let w = rm.flat_word(pfn);
        let cur = w.load();
        match cur.kind() {
            PageKind::Undescribed(u) if u.subtype == Subtype::HwPoison => {}
            _ => return Err(PoisonError::NotPoisoned(pfn)),
        }
        w.compare_exchange(cur, Word::TAIL).map_err(|_| PoisonError::NotPoisoned(pfn))?;
        self.pages().undesc().hwpoison.fetch_sub(1, Ordering::Relaxed);
        self.pages().free_claimed(cpu, rm, pfn, 0);
        Ok(())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::desc::{DescPtr, PtDesc};
    use crate::gfp::Gfp;
    use crate::layout::MemmapLayout;
    use crate::machine::test_machine::Buf;

    /// 16 MiB of host memory as a flat machine.
    fn machine() -> PhysMem<Buf> {
        crate::machine::test_machine::machine(4096, MemmapLayout::Flat)
    }

    #[test]
    fn page_table_page_is_ignored() {
        let m = machine();
        let cpu = m.cpus().claim(0).unwrap();
        let pt = m.slabs().alloc_desc::<PtDesc>(&cpu).unwrap();
        let pfn = m.pages().alloc_with(&cpu, 0, Gfp::KERNEL, |_| Word::desc(DescPtr::from_ref(pt))).unwrap();
        let before = m.memmap().load(m.platform(), pfn).unwrap().word;
        let r = m.memory_failure(&cpu, pfn).unwrap();
        assert_eq!((r.kind, r.action), (PoisonedKind::PageTable, PoisonAction::Ignored));
        assert_eq!(m.memmap().load(m.platform(), pfn).unwrap().word, before, "left in place");
        assert_eq!(m.undescribed_stats().hwpoison_ignored, 1);
    }

    #[test]
    fn folio_mapped_where_the_rmap_cannot_see_is_delayed_until_its_last_entry_goes() {
        let m = machine();
        let cpu = m.cpus().claim(0).unwrap();
        let f = m.folio_alloc(&cpu, 0, Gfp::MOVABLE, crate::folio::FolioKind::Anon).unwrap();
        // One entry the rmap does not know (no anon_vma), as a pfn VMA's: its mapcount, and
        // its reference (`entry`).
        f.counts.mapcount.store(1, Ordering::Relaxed);
        let entry = f.get();
        let pfn = f.flags.pfn();
        let r = m.memory_failure(&cpu, pfn).unwrap();
        assert_eq!((r.kind, r.action, r.unmapped), (PoisonedKind::AnonFolio { order: 0 }, PoisonAction::Delayed, 0));
        assert_eq!(m.memory_failure(&cpu, pfn), Err(PoisonError::AlreadyPoisoned(pfn)));
        // The entry goes (as zap would), then the owner's reference: the page is retired.
        f.counts.mapcount.store(0, Ordering::Relaxed);
        assert_eq!(m.folio_put(&cpu, entry), Ok(false));
        assert_eq!(m.folio_put(&cpu, f), Ok(true));
        assert!(matches!(
            m.memmap().load(m.platform(), pfn).unwrap().word.kind(),
            PageKind::Undescribed(u) if u.subtype == Subtype::HwPoison
        ));
        m.unpoison(&cpu, pfn).unwrap();
    }

    #[test]
    fn migration_refuses_a_folio_mapped_where_the_rmap_cannot_see() {
        use crate::migrate::MigrateError;
        let m = machine();
        let cpu = m.cpus().claim(0).unwrap();
        let f = m.folio_alloc(&cpu, 0, Gfp::MOVABLE, crate::folio::FolioKind::Anon).unwrap();
        f.counts.mapcount.store(1, Ordering::Relaxed);
        let entry = f.get();
        let pfn = f.flags.pfn();
        assert_eq!(m.migrate_page(&cpu, pfn, Gfp::MOVABLE), Err(MigrateError::NoRmap { pfn, mapcount: 1 }));
        assert_eq!((f.flags.pfn(), f.counts.refcount()), (pfn, 2), "nothing changed");
        f.counts.mapcount.store(0, Ordering::Relaxed);
        assert_eq!(m.folio_put(&cpu, entry), Ok(false));
        assert_eq!(m.folio_put(&cpu, f), Ok(true));
    }

    /// Table-driven: every kind the poison handler only reports is left in place with a
    /// report that names it, whatever its entry's report function reads.
    #[test]
    fn reported_kinds_are_left_in_place() {
        use super::super::kinds::{of, PoisonOp};
        let m = machine();
        let cpu = m.cpus().claim(0).unwrap();
        for tag in [Tag::PageTable, Tag::VmallocMappable, Tag::VmallocUnmappable, Tag::NetPool, Tag::Mappable] {
            assert!(matches!(of(tag).unwrap().poison, PoisonOp::Report(_)), "{tag:?}");
        }
        for tag in [Tag::AnonFolio, Tag::FileFolio, Tag::Slab, Tag::Zsmalloc, Tag::Z3fold] {
            assert!(!matches!(of(tag).unwrap().poison, PoisonOp::Report(_)), "{tag:?}");
        }
        // A mappable driver block: reported with its owner and order, left in place.
        let d = m.mappable_alloc(&cpu, 1, Gfp::KERNEL, 0x1234).unwrap();
        let pfn = d.flags.pfn().add(1);
        let before = m.memmap().load(m.platform(), pfn).unwrap().word;
        let r = m.memory_failure(&cpu, pfn).unwrap();
        assert_eq!(r.action, PoisonAction::Ignored);
        assert!(matches!(r.kind, PoisonedKind::Mappable { owner: 0x1234, order: 1, .. }), "{:?}", r.kind);
        assert_eq!(m.memmap().load(m.platform(), pfn).unwrap().word, before, "left in place");
    }
}
