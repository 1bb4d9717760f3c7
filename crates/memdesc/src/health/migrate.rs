//! Folio migration: moves a folio's memory to other pages while its **descriptor stays**.
//!
//! In memdesc the descriptor, not the page, is a folio's identity: its page-cache slots, its
//! LRU links and every `&Folio` its owners hold point to the descriptor, and the pfn is a
//! field of it. So migrating a folio is: take a reference of its own (isolation, `try_get`),
//! freeze the count at exactly the **expected** value — its own reference, the page cache's
//! (under the address space's lock) and one per mapping entry (under the rmap lock) — to 0 (a
//! lockless lookup then fails to pin it and retries; any other holder, an owner's
//! [`crate::folio::FolioRef`] or a lookup's pin, makes the freeze fail and migration backs off
//! with [`MigrateError::Busy`]), copy the data, stamp the new pages' words with the same
//! descriptor, move the descriptor's pfn, retire the old pages' words and free them, unfreeze
//! (a compare-exchange from 0, never a store over a count that could have changed), and drop
//! the isolation reference. An owner never lends its reference to a migration: a folio its
//! owner holds does not move (as in Linux, where an extra pin blocks migration).
//! Flags, index, mapping and LRU position are untouched because they never move. A cached file
//! folio is migrated under its address space's lock (so a locked lookup, which trusts the
//! cache's reference, cannot pin it while it is frozen); the tree needs no change, which is
//! the page cache's "replace" reduced to nothing. A reader that pinned the folio before the
//! freeze makes the migration fail with [`MigrateError::Busy`] (as a pin blocks migration in
//! Linux); a reader that decoded an old page's word and pins the descriptor afterwards finds,
//! on revalidation, that the old word no longer names it.
//!
//! **Mapped folios** move the same way, under their reverse-map lock (anon_vma or the file's
//! `i_mmap`, taken first: pgtable.rs's order is rmap lock → page-table lock, and migration
//! puts the address space's lock of a cached file folio between the two): while it is held
//! no entry mapping the folio appears, goes or changes. The expected references are then one
//! per entry plus the page cache's (file) plus migration's own. After the copy every entry is pointed at the same page of
//! the new block (`PhysMem::rmap_move_locked`: a PMD entry to the new 2 MiB block); the
//! descriptor stays, so mapcount and references do not move. The simulated machine has no
//! MMU writing through the entries during the copy (a real kernel would first make them
//! non-present migration entries and flush the TLB). A folio mapped only through pfn VMAs
//! (no reverse map) is not movable. A mapping racing a migration cannot install an entry to
//! the old pages: the mapping path pins the folio before it reads the pfn (pgtable.rs), so the
//! freeze either sees the pin and fails `Busy`, or came first and the mapper waits for the
//! unfreeze and reads the new pfn.
//!
//! **zsmalloc and z3fold pages** go through their pools' own migration
//! (`zs_migrate_page_to`, `z3fold_migrate_page_to`): the
//! word leads to the descriptor, the descriptor to the pool, whose lock the move is made
//! under; their handles never change.
//!
//! Movable: anon and file folios whose references are only the expected ones (not held by an
//! owner outside the page cache and the page tables), unlocked, not
//! under writeback and not hardware-poisoned (moving a poisoned folio would free the bad
//! page), and zsmalloc / z3fold pages with no object mapped. The one dispatch point is
//! `movable`, which asks the page's kind (`health::kinds`, its `MigrateOp`).
//!
//! Flat regions only. This module touches folio descriptors' flags/pfn/refcount, page words,
//! page-table entries of migrated folios through the rmap, and page contents of the two
//! blocks it copies between.

use crate::addr::{Pfn, PAGE_SIZE};
use crate::cpu::Cpu;
use crate::desc::{DescPtr, Folio, PG_HWPOISON, PG_LOCKED, PG_WRITEBACK};
use crate::gfp::Gfp;
use crate::page_access::PageWords;
use crate::page_alloc::AllocError;
use crate::platform::Platform;
use crate::sync::Ordering;
use crate::word::{PageKind, Tag, Word};
use crate::PhysMem;

/// Why a page could not be migrated. Nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MigrateError {
    /// The page is of a kind that never moves (slab, raw kernel memory, reserved, …).
    NotMovable {
        /// The pfn.
        pfn: Pfn,
        /// Its tag.
        tag: Tag,
    },
    /// The folio is mapped only through page tables the reverse map cannot find (pfn VMAs,
    /// or a file folio truncated while mapped): its entries cannot be rewritten.
    NoRmap {
        /// The pfn.
        pfn: Pfn,
        /// Page-table entries mapping it.
        mapcount: u32,
    },
    /// The folio has references besides the expected ones, is locked, under writeback, or
    /// being freed, or the zsmalloc / z3fold page has a mapped object or changed: retry
    /// later.
    Busy(Pfn),
    /// No free memory for the copy.
    NoTarget(AllocError),
    /// The folio is hardware-poisoned (waiting for its last put): its memory must not be
    /// freed by moving it.
    Poisoned(Pfn),
    /// The pfn is in no flat region.
    Unsupported(Pfn),
}

impl core::fmt::Display for MigrateError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MigrateError::NotMovable { pfn, tag } => write!(f, "pfn {pfn} ({tag:?}) never moves"),
            MigrateError::NoRmap { pfn, mapcount } => {
                write!(f, "the folio at pfn {pfn} has {mapcount} mappings the reverse map cannot find")
            }
            MigrateError::Busy(p) => write!(f, "the folio at pfn {p} is busy"),
            MigrateError::NoTarget(e) => write!(f, "no memory to migrate to: {e}"),
            MigrateError::Poisoned(p) => write!(f, "the folio at pfn {p} is hardware-poisoned"),
            MigrateError::Unsupported(p) => write!(f, "pfn {p} is not in a flat region"),
        }
    }
}

impl core::error::Error for MigrateError {}

/// The references a migration freezes a folio at: its own isolation reference, one per
/// mapping entry (held still by the rmap lock) and the page cache's (held still by the address
/// space's lock). Anything more is a holder that migration must not move the folio under.
#[inline]
pub(crate) fn expected_refs(mapcount: u32, cached: bool) -> u32 {
    1 + mapcount + cached as u32
}

/// What a movable page is, decoded from its word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Movable {
    /// A folio (mapped or not).
    Folio {
        /// The folio descriptor the word names.
        folio: DescPtr<Folio>,
        /// File (page-cache) folio rather than anon.
        file: bool,
    },
    /// A zsmalloc component page (order 0).
    Zsmalloc,
    /// A z3fold page (order 0).
    Z3fold,
}

/// The dispatch point: is the page whose word is `word` movable, and how? Its kind's
/// [`MigrateOp`](super::kinds::MigrateOp) says; words naming no descriptor never move.
pub(crate) fn movable(pfn: Pfn, word: Word) -> Result<Movable, MigrateError> {
    use super::kinds::{MigrateOp, Pool};
    let Some(k) = super::kinds::of_word(word) else {
        // The page allocator's own words.
        return Err(match word.kind() {
            PageKind::Split(_) => MigrateError::Unsupported(pfn),
            _ => MigrateError::NotMovable { pfn, tag: Tag::Undescribed },
        });
    };
    match k.migrate {
        MigrateOp::Folio => match crate::memmap::kinds::desc_of::<Folio>(word) {
            Some(folio) => Ok(Movable::Folio { folio, file: word.tag() == Some(Tag::FileFolio) }),
            None => Err(MigrateError::Busy(pfn)),
        },
        MigrateOp::Pool(Pool::Zsmalloc) => Ok(Movable::Zsmalloc),
        MigrateOp::Pool(Pool::Z3fold) => Ok(Movable::Z3fold),
        MigrateOp::Never => Err(MigrateError::NotMovable { pfn, tag: word.tag().unwrap_or(Tag::Undescribed) }),
    }
}

impl<P: Platform> PhysMem<P> {
    /// Migrates the folio whose page `pfn` is (any page of it, mapped or not), or the zsmalloc
    /// or z3fold page `pfn`, to newly allocated memory (`gfp` picks where for a folio; use
    /// [`Gfp::MOVABLE`]). Returns the new (first) pfn.
    pub fn migrate_page(&self, cpu: &Cpu<'_>, pfn: Pfn, gfp: Gfp) -> Result<Pfn, MigrateError> {
        let (rm, _) = self.pages().flat_ctx(pfn).map_err(|_| MigrateError::Unsupported(pfn))?;
        let (folio, file) = match movable(pfn, rm.flat_word(pfn).load())? {
            Movable::Folio { folio, file } => (folio, file),
            Movable::Zsmalloc => return self.migrate_pool_page(cpu, pfn, false, None),
            Movable::Z3fold => return self.migrate_pool_page(cpu, pfn, true, None),
        };
        // Held until migrate_to has frozen and revalidated the folio (or given up): folio
        // descriptors are TYPESAFE_BY_RCU, and migrate_to revalidates the word after freezing
        // before trusting anything else.
        let rcu = self.rcu().read_lock(cpu);
        let f = crate::desc_ref::rcu(&rcu, folio);
        let (fpfn, order) = (f.flags.pfn(), f.flags.order());
        let new = self.pages().alloc_with(cpu, order, gfp, |_| Word::TAIL).map_err(MigrateError::NoTarget)?;
        match self.migrate_to(cpu, f, file, (fpfn, order), new) {
            Ok(()) => Ok(new),
            Err(e) => {
                let nrm = self.memmap().region_map(self.memmap().region_index(new).expect("allocated"));
                self.pages().free_claimed(cpu, nrm, new, order);
                Err(e)
            }
        }
    }

    /// Moves folio `f` (decoded from a word; `file` from its tag) to the block at `new`, which
    /// the caller took from the allocator (its words are tail words) and frees on error. The
    /// caller holds an RCU read guard from decoding `f` until this returns.
    ///
    /// Migration takes its **own** reference first (isolation: `try_get`, which fails on a
    /// free or frozen folio) and drops it when done, so it never borrows anyone else's.
    /// `(pfn, order)` is where the caller found the folio and the size it allocated `new` for:
    /// a descriptor freed and reused meanwhile for another folio is refused (`Busy`) before
    /// anything else of it (its `mapping`, its pages) is used.
    pub(crate) fn migrate_to(
        &self,
        cpu: &Cpu<'_>,
        f: &Folio,
        file: bool,
        (pfn, order): (Pfn, u32),
        new: Pfn,
    ) -> Result<(), MigrateError> {
        if !f.counts.try_get() {
            return Err(MigrateError::Busy(pfn));
        }
        // Pinned now, but the descriptor may have been freed and reused (TYPESAFE_BY_RCU)
        // since the caller decoded it: only the folio the caller sized `new` for moves. Nothing
        // of it, not even its `mapping` (the rmap lock), is used before this check.
        if f.flags.pfn() != pfn || f.flags.order() != order {
            let p = self.folio_put_raw(cpu, f);
            debug_assert!(p.is_ok(), "isolation reference: {p:?}");
            return Err(MigrateError::Busy(pfn));
        }
        let r = self.migrate_isolated(cpu, f, file, new);
        // Our isolation reference; the last one if every other holder let go meanwhile.
        let p = self.folio_put_raw(cpu, f);
        debug_assert!(p.is_ok(), "isolation reference: {p:?}");
        r
    }

    /// [`PhysMem::migrate_to`] with the isolation reference held.
    fn migrate_isolated(&self, cpu: &Cpu<'_>, f: &Folio, file: bool, new: Pfn) -> Result<(), MigrateError> {
        let (old, order) = (f.flags.pfn(), f.flags.order());
        let (orm, _) = self.pages().flat_ctx(old).map_err(|_| MigrateError::Unsupported(old))?;
        let (nrm, _) = self.pages().flat_ctx(new).map_err(|_| MigrateError::Unsupported(new))?;
        let tag = if file { Tag::FileFolio } else { Tag::AnonFolio };
        let me = Word::desc_as(DescPtr::from_ref(f), tag).expect("folio tags");
        // Pinned, so it cannot be freed; check it is still the folio the caller decoded.
        if orm.flat_word(old).load() != me {
            return Err(MigrateError::Busy(old));
        }
        // A mapped folio: its rmap lock, held until the move is done, keeps every entry
        // mapping it (and so its mapcount and the entries' references) stable. A last unmap
        // clears an anon folio's `mapping` and a first map sets it, so a mapped count seen
        // without an rmap to lock may be a map or unmap in flight: look again a few times
        // before calling it rmap-less.
        let mut tries = 0;
        let (rmap, m) = loop {
            let rmap = if f.counts.mapcount() != 0 { self.rmap_lock(cpu, f) } else { None };
            let m = f.counts.mapcount();
            if m == 0 || rmap.is_some() {
                break (rmap, m);
            }
            tries += 1;
            if tries == 16 {
                return Err(MigrateError::NoRmap { pfn: old, mapcount: m });
            }
            crate::sync::spin_hint();
        };
        // A cached file folio: its address space's lock keeps the cache's reference in place
        // and locked lookups (which trust it) out.
        let (mapping_lock, cached) = if file {
            match self.pagecache_lock_of(f) {
                Ok(l) => {
                    let cached = l.is_some();
                    (l, cached)
                }
                Err(()) => return Err(MigrateError::Busy(old)),
            }
        } else {
            (None, false)
        };
        // The expected references: ours, one per mapping entry, the page cache's. Every other
        // holder (an owner, a speculative lookup's pin) makes the freeze fail: we back off.
        let expected = expected_refs(m, cached);
        if expected == 1 {
            // Nobody but us holds it: it is being freed, not migrated.
            return Err(MigrateError::Busy(old));
        }
        if !f.counts.freeze(expected) {
            return Err(MigrateError::Busy(old));
        }
        let unfreeze = || f.counts.unfreeze(expected);
        // Frozen: nobody can take or drop a reference. Revalidate: it still covers these
        // pages, its mapcount is the one we counted, and nobody holds its lock or is writing
        // it back.
        if orm.flat_word(old).load() != me || f.flags.order() != order || f.counts.mapcount() != m {
            unfreeze();
            return Err(MigrateError::Busy(old));
        }
        if f.flags.flags() & PG_HWPOISON != 0 {
            unfreeze();
            return Err(MigrateError::Poisoned(old));
        }
        let flags = f.flags.set(PG_LOCKED);
        if flags & (PG_LOCKED | PG_WRITEBACK) != 0 {
            if flags & PG_LOCKED == 0 {
                f.flags.clear(PG_LOCKED);
            }
            unfreeze();
            return Err(MigrateError::Busy(old));
        }
        for i in 0..1u64 << order {
            let (src, dst) = (PageWords::new(self.platform(), old.add(i)), PageWords::new(self.platform(), new.add(i)));
            let (Some(src), Some(dst)) = (src, dst) else {
                f.flags.clear(PG_LOCKED);
                unfreeze();
                return Err(MigrateError::Unsupported(old));
            };
            for k in 0..PAGE_SIZE / 8 {
                dst.word(k).store(src.word(k).load(Ordering::Relaxed), Ordering::Relaxed);
            }
            #[cfg(test)]
            if i == 0 {
                test_hook::during_copy();
            }
        }
        for i in 0..1u64 << order {
            nrm.flat_word(new.add(i)).store(me);
        }
        if let Some(l) = &rmap {
            let moved = self.rmap_move_locked(l, f, new);
            debug_assert!(moved <= m, "entries moved {moved} > mapcount {m}");
        }
        f.flags.init(flags, order, new);
        for i in 0..1u64 << order {
            orm.flat_word(old.add(i)).store(Word::TAIL);
        }
        self.pages().free_claimed(cpu, orm, old, order);
        unfreeze();
        drop(mapping_lock);
        Ok(())
    }

    /// Without zsmalloc no page is a pool page ([`movable`] names none in a sound memmap).
    #[cfg(not(feature = "zsmalloc"))]
    pub(crate) fn migrate_pool_page(
        &self,
        _cpu: &Cpu<'_>,
        pfn: Pfn,
        _z3: bool,
        _target: Option<Pfn>,
    ) -> Result<Pfn, MigrateError> {
        Err(MigrateError::Unsupported(pfn))
    }

    /// Migrates the zsmalloc (`z3 == false`) or z3fold page `pfn` through its pool, to
    /// `target` (an order-0 block the caller took from the allocator, tail word, still the
    /// caller's on error) or, with `None`, to a page the pool allocates. Returns the new pfn.
    #[cfg(feature = "zsmalloc")]
    pub(crate) fn migrate_pool_page(
        &self,
        cpu: &Cpu<'_>,
        pfn: Pfn,
        z3: bool,
        target: Option<Pfn>,
    ) -> Result<Pfn, MigrateError> {
        #[cfg(feature = "z3fold")]
        use crate::z3fold::{z3fold_migrate_page, z3fold_migrate_page_to};
        use crate::zsmalloc::{zs_migrate_page, zs_migrate_page_to, ZsMigrateError as E};
        if let Some(t) = target {
            // The pools take a raw order-0 allocation as a target.
            let (trm, _) = self.pages().flat_ctx(t).map_err(|_| MigrateError::Unsupported(t))?;
            trm.flat_word(t).store(crate::page_alloc::PageAllocator::<P>::undesc_word(
                trm,
                crate::word::Subtype::Unmappable,
                0,
            ));
        }
        let r = match (z3, target) {
            (false, None) => zs_migrate_page(self, cpu, pfn),
            // The caller gives a target it owns (this fn's contract, checked by the callers in
            // compaction); it was just restamped as a raw order-0 allocation.
            (false, Some(t)) => zs_migrate_page_to(self, cpu, pfn, t),
            #[cfg(feature = "z3fold")]
            (true, None) => z3fold_migrate_page(self, cpu, pfn),
            #[cfg(feature = "z3fold")]
            (true, Some(t)) => z3fold_migrate_page_to(self, cpu, pfn, t),
            // Without z3fold no page is a z3fold page: refused (as Unsupported).
            #[cfg(not(feature = "z3fold"))]
            (true, _) => Err(E::OutOfRange(pfn)),
        };
        r.map_err(|e| {
            if let Some(t) = target {
                if let Ok((trm, _)) = self.pages().flat_ctx(t) {
                    trm.flat_word(t).store(Word::TAIL);
                }
            }
            match e {
                E::OutOfRange(p) => MigrateError::Unsupported(p),
                // Freed or reused meanwhile, or an object is mapped: retry.
                E::NotZsmalloc(p) | E::Busy(p) => MigrateError::Busy(p),
                E::NoMemory(a) => MigrateError::NoTarget(a),
                E::BadTarget(p) => MigrateError::Unsupported(p),
            }
        })
    }
}

/// A hook run by the migrating thread in the middle of a folio's copy (after its first page),
/// while the folio is frozen: the regression tests use it to act as another holder at exactly
/// that point, deterministically. The hook is a `'static` closure in a thread-local slot (the
/// tests share state with it through `Rc`s and a leaked machine).
#[cfg(test)]
pub(crate) mod test_hook {
    use core::cell::RefCell;
    use std::boxed::Box;

    std::thread_local! {
        static HOOK: RefCell<Option<Box<dyn FnMut()>>> = const { RefCell::new(None) };
    }

    /// Runs `body` with `hook` installed for this thread; returns `body`'s result.
    #[cfg_attr(loom, allow(dead_code))] // the loom models do not migrate
    pub(crate) fn with_copy_hook<R>(hook: impl FnMut() + 'static, body: impl FnOnce() -> R) -> R {
        HOOK.with(|h| *h.borrow_mut() = Some(Box::new(hook)));
        let r = body();
        let hook = HOOK.with(|h| h.borrow_mut().take());
        drop(hook);
        r
    }

    /// Called by migration during a copy.
    pub(crate) fn during_copy() {
        // Taken out while it runs, so it is never re-entered; put back after.
        if let Some(mut hook) = HOOK.with(|h| h.borrow_mut().take()) {
            hook();
            HOOK.with(|h| *h.borrow_mut() = Some(hook));
        }
    }
}

/// Regression tests for issue 12's findings 1 and 5: each scenario was reproduced on the old
/// code (where migration froze a folio 1 → 0 borrowing its owner's reference and restored the
/// count with a store, `folio_get` was a blind increment on any `&Folio`, and freeze/unfreeze
/// and split needed no reference or lock) and failed there as each test's comment says.
#[cfg(all(test, not(loom)))]
mod regression_tests {
    use super::test_hook::with_copy_hook;
    use super::*;
    use crate::folio::{FolioError, FolioKind, FolioRef};
    use crate::machine::test_machine::{machine, Buf};
    use crate::MemmapLayout;
    use core::cell::RefCell;
    use std::boxed::Box;
    use std::rc::Rc;

    fn checked<P: Platform>(m: &PhysMem<P>) {
        m.drain_all();
        m.check(|_, _, _| ()).expect("allocator state is consistent");
    }

    type Shared<T> = Rc<RefCell<T>>;

    /// A machine and its CPU for the whole test run, so the `'static` copy hooks can use them.
    fn leaked_machine() -> (&'static PhysMem<Buf>, &'static Cpu<'static>) {
        let m: &'static PhysMem<Buf> = Box::leak(Box::new(machine(4096, MemmapLayout::Flat)));
        (m, Box::leak(Box::new(m.cpus().claim(0).unwrap())))
    }

    /// Finding 1: the owner takes a reference while its folio is being migrated. Old code:
    /// migration froze 1 → 0, the owner's get made it 1, the unfreeze stored 1 over it; the
    /// count ended at 1 with two references held (assertion `refcount == 2` failed), and the
    /// first put freed the folio under the second. Now migration does not borrow the owner's
    /// reference: with an owner holding one, the freeze at the expected count fails (Busy),
    /// and a folio only the page cache holds moves while a speculative `folio_try_get` during
    /// the copy fails instead of taking a reference under the freeze.
    #[test]
    fn regression_migrate_freeze_vs_get() {
        let (m, cpu) = leaked_machine();
        let f = Rc::new(m.folio_alloc(cpu, 0, Gfp::MOVABLE, FolioKind::Anon).unwrap());
        let pfn = f.flags.pfn();
        let extra: Shared<Option<FolioRef<'static>>> = Rc::default();
        let hook = {
            let (f, extra) = (f.clone(), extra.clone());
            move || *extra.borrow_mut() = Some(f.get())
        };
        let r = with_copy_hook(hook, || m.migrate_page(cpu, pfn, Gfp::MOVABLE));
        assert_eq!(r, Err(MigrateError::Busy(pfn)), "an owner's reference blocks migration");
        let f = Rc::into_inner(f).expect("the hook is gone");
        let extra = extra.take().unwrap_or_else(|| f.get());
        assert_eq!(f.counts.refcount(), 2, "two references held, two counted");
        assert_eq!(m.folio_put(cpu, extra), Ok(false));
        assert_eq!(m.folio_put(cpu, f), Ok(true));
        // A new folio gets the descriptor; it must not be freed by anything left over.
        let g = m.folio_alloc(cpu, 0, Gfp::MOVABLE, FolioKind::Anon).unwrap();
        assert_eq!(g.counts.refcount(), 1);
        checked(m);

        // A cached file folio (held by the cache only) migrates; during the copy a
        // speculative lookup cannot pin it.
        let space = m.address_space_create(cpu).unwrap();
        let f = m.folio_alloc(cpu, 0, Gfp::MOVABLE, FolioKind::File).unwrap();
        space.insert(cpu, &f, 3).unwrap();
        let pfn = f.flags.pfn();
        assert_eq!(m.folio_put(cpu, f), Ok(false));
        let seen: Shared<Option<bool>> = Rc::default();
        let hook = {
            let seen = seen.clone();
            move || *seen.borrow_mut() = Some(m.folio_try_get(cpu, pfn).is_some())
        };
        let new = with_copy_hook(hook, || m.migrate_page(cpu, pfn, Gfp::MOVABLE))
            .expect("a folio only its cache holds moves");
        assert_eq!(seen.take(), Some(false), "try_get fails on a frozen folio");
        let f = space.lookup(cpu, 3).expect("still cached");
        assert_eq!((f.flags.pfn(), f.counts.refcount()), (new, 2), "the cache's reference and ours");
        let again = m.folio_try_get(cpu, new).expect("a pfn walker pins it at its new place");
        assert!(FolioRef::ptr_eq(&f, &again));
        assert_eq!(m.folio_put(cpu, again), Ok(false));
        assert_eq!(m.folio_put(cpu, f), Ok(false));
        assert_eq!(space.destroy(cpu).folios, 1);
        assert_eq!(m.folio_put(cpu, g), Ok(true));
        checked(m);
    }

    /// Finding 1: the owner gets and puts during the copy. Old code: the put saw count 1 (the
    /// get on the frozen 0), freed the folio mid-migration; migration still returned `Ok` and
    /// freed the old block again; `check()` reported a broken free-list link. Now the owner's
    /// reference makes migration back off, and the owner's get/put pair is balanced.
    #[test]
    fn regression_migrate_get_put_during_copy() {
        let (m, cpu) = leaked_machine();
        let f = Rc::new(m.folio_alloc(cpu, 1, Gfp::MOVABLE, FolioKind::Anon).unwrap());
        let pfn = f.flags.pfn();
        let getput = |f: &FolioRef<'static>| {
            let g = f.get();
            assert_eq!(m.folio_put(cpu, g), Ok(false), "the owner still holds one");
        };
        let done: Shared<bool> = Rc::default();
        let hook = {
            let (f, done) = (f.clone(), done.clone());
            move || {
                getput(&f);
                *done.borrow_mut() = true;
            }
        };
        let r = with_copy_hook(hook, || m.migrate_page(cpu, pfn.add(1), Gfp::MOVABLE));
        assert_eq!(r, Err(MigrateError::Busy(pfn)));
        let f = Rc::into_inner(f).expect("the hook is gone");
        if !done.take() {
            getput(&f);
        }
        assert_eq!((f.flags.pfn(), f.counts.refcount()), (pfn, 1), "nothing moved, one reference");
        assert_eq!(m.folio_put(cpu, f), Ok(true));
        checked(m);
        // Mapped-only folios move; the entries' references and the mapping are untouched.
        let mms = m.mm_caches(cpu).unwrap();
        let mm = mms.mm_create(cpu, crate::pgtable::MmKind::User).unwrap();
        mm.mmap_anon(cpu, 0x40_0000, 0x40_0000).unwrap();
        let f = m.folio_alloc(cpu, 1, Gfp::MOVABLE, FolioKind::Anon).unwrap();
        let pfn = f.flags.pfn();
        mm.map_folio(cpu, 0x40_0000, &f).unwrap();
        assert_eq!(m.migrate_page(cpu, pfn, Gfp::MOVABLE), Err(MigrateError::Busy(pfn)), "owner holds it");
        assert_eq!(m.folio_put(cpu, f), Ok(false), "the mappings hold it");
        let seen: Shared<Option<bool>> = Rc::default();
        let hook = {
            let seen = seen.clone();
            move || *seen.borrow_mut() = Some(m.folio_try_get(cpu, pfn).is_some())
        };
        let new = with_copy_hook(hook, || m.migrate_page(cpu, pfn, Gfp::MOVABLE))
            .expect("held by its mappings only, it moves");
        assert_eq!(seen.take(), Some(false), "frozen during the copy");
        assert_eq!(mm.translate(0x40_0000).unwrap().0.pfn(), new);
        let f = m.folio_try_get(cpu, new).unwrap();
        assert_eq!((f.counts.refcount(), f.counts.mapcount()), (3, 2));
        assert_eq!(m.folio_put(cpu, f), Ok(false));
        mm.destroy(cpu);
        checked(m);
    }

    /// Finding 1: the sole owner puts during the copy. Old code: the put found the frozen 0
    /// and returned `NoReference` (the owner could not give its folio back). Now migration
    /// never borrows the owner's reference: the put frees the folio.
    #[test]
    fn regression_migrate_sole_owner_put() {
        let (m, cpu) = leaked_machine();
        let f = m.folio_alloc(cpu, 0, Gfp::MOVABLE, FolioKind::Anon).unwrap();
        let pfn = f.flags.pfn();
        let owner: Shared<Option<FolioRef<'static>>> = Rc::new(RefCell::new(Some(f)));
        let put: Shared<Option<Result<bool, FolioError>>> = Rc::default();
        let hook = {
            let (owner, put) = (owner.clone(), put.clone());
            move || *put.borrow_mut() = owner.take().map(|f| m.folio_put(cpu, f))
        };
        let r = with_copy_hook(hook, || m.migrate_page(cpu, pfn, Gfp::MOVABLE));
        assert_eq!(r, Err(MigrateError::Busy(pfn)));
        let put = put.take().unwrap_or_else(|| m.folio_put(cpu, owner.take().unwrap()));
        assert_eq!(put, Ok(true), "the sole owner's put frees it");
        assert!(m.folio_try_get(cpu, pfn).is_none(), "freed");
        checked(m);
    }

    /// Finding 5: count changes without a reference. Old code: `folio_ref_freeze(2)` +
    /// `folio_ref_unfreeze(1)` were safe and made the next put free a folio another holder
    /// had; `folio_get` on a freed `&Folio` then `folio_put` double-freed it; `folio_split`
    /// checked neither the folio lock nor other holders (`assert_eq!(.., Err(NotLocked))`
    /// failed: it split). Now freeze/unfreeze are crate-private, get needs a `FolioRef` (the
    /// compile_fail doctests in `crate::folio`), a freed folio cannot be pinned, and split
    /// needs the lock and no holder besides the caller.
    #[test]
    fn regression_folio_count_without_reference() {
        let m = machine(4096, MemmapLayout::Flat);
        let cpu = m.cpus().claim(0).unwrap();
        let f = m.folio_alloc(&cpu, 2, Gfp::MOVABLE, FolioKind::Anon).unwrap();
        let pfn = f.flags.pfn();
        assert_eq!(m.folio_split(&cpu, &f, 0, |_| panic!("no split")), Err(FolioError::NotLocked));
        assert!(m.folio_trylock(&f));
        let other = f.get();
        assert_eq!(m.folio_split(&cpu, &f, 0, |_| panic!("no split")), Err(FolioError::Busy), "another holder");
        assert_eq!((f.flags.order(), f.counts.refcount()), (2, 2), "nothing changed");
        assert_eq!(m.folio_put(&cpu, other), Ok(false));
        let mut pieces = std::vec::Vec::new();
        m.folio_split(&cpu, &f, 0, |p| pieces.push(p)).unwrap();
        assert_eq!(pieces.len(), 3);
        for p in &pieces {
            assert_eq!((p.counts.refcount(), p.flags.order(), p.flags.flags() & crate::desc::PG_LOCKED), (1, 0, 0));
        }
        m.folio_unlock(&f);
        for p in pieces {
            assert_eq!(m.folio_put(&cpu, p), Ok(true));
        }
        assert_eq!(m.folio_put(&cpu, f), Ok(true));
        // A freed folio cannot be pinned from its pfn; a new one at the same place can.
        assert!(m.folio_try_get(&cpu, pfn).is_none());
        let g = m.folio_alloc(&cpu, 0, Gfp::MOVABLE, FolioKind::Anon).unwrap();
        let gp = g.flags.pfn();
        let h = m.folio_try_get(&cpu, gp).unwrap();
        // Dropping a reference that is not the last releases it without a Cpu.
        drop(h);
        assert_eq!(g.counts.refcount(), 1);
        assert_eq!(m.folio_put(&cpu, g), Ok(true));
        checked(&m);
    }

    /// A pfn walker (offline, compaction, `migrate_page`) decodes a folio under RCU, sizes the
    /// target for it, and only then pins it; meanwhile the descriptor was freed and reused for
    /// a larger folio. Without the `(pfn, order)` check migration pinned the reused folio and
    /// copied its two pages (and stamped two words) into the order-0 target, overwriting the
    /// next block's word. (Before issue 12 it did not even pin the descriptor before locking
    /// the rmap named by its `mapping`: the torture hang in `lock_folio_rmap`.)
    #[test]
    fn regression_migrate_reused_descriptor() {
        let m = machine(4096, MemmapLayout::Flat);
        let cpu = m.cpus().claim(0).unwrap();
        let f = m.folio_alloc(&cpu, 0, Gfp::MOVABLE, FolioKind::File).unwrap();
        let (pfn, desc) = (f.flags.pfn(), DescPtr::from_ref(&*f));
        assert_eq!(m.folio_put(&cpu, f), Ok(true));
        // The descriptor comes back for an order-1 folio (the cache hands out the freed one),
        // which only a page cache holds: movable.
        let mut others = std::vec::Vec::new();
        let g = loop {
            let g = m.folio_alloc(&cpu, 1, Gfp::MOVABLE, FolioKind::File).unwrap();
            if DescPtr::from_ref(&*g) == desc {
                break g;
            }
            assert!(others.len() < 64, "descriptor not reused");
            others.push(g);
        };
        let space = m.address_space_create(&cpu).unwrap();
        space.insert(&cpu, &g, 2).unwrap();
        let gpfn = g.flags.pfn();
        assert_ne!(gpfn, pfn);
        let new = m.pages().alloc_with(&cpu, 0, Gfp::MOVABLE, |_| Word::TAIL).unwrap();
        let r = {
            // The walker's view: the descriptor it decoded earlier (for the order-0 folio at
            // `pfn`), under RCU; it is `g` now.
            let _rcu = m.rcu().read_lock(&cpu);
            m.migrate_to(&cpu, &g, true, (pfn, 0), new)
        };
        assert_eq!(r, Err(MigrateError::Busy(pfn)));
        assert_eq!(m.folio_put(&cpu, g), Ok(false));
        let nrm = m.memmap().region_map(m.memmap().region_index(new).unwrap());
        m.pages().free_claimed(&cpu, nrm, new, 0);
        let g = space.lookup(&cpu, 2).expect("still cached");
        assert_eq!((g.flags.pfn(), g.counts.refcount()), (gpfn, 2), "unmoved; the cache's reference and ours");
        assert_eq!(m.folio_put(&cpu, g), Ok(false));
        assert_eq!(space.destroy(&cpu).folios, 1);
        for o in others {
            assert_eq!(m.folio_put(&cpu, o), Ok(true));
        }
        checked(&m);
    }
}

/// Loom model of migration's reference-count protocol against holders taking and dropping
/// references, driving the real code: `MapCounts::try_get` (what `folio_try_get` and the page
/// cache's lookup use), the count operations a `FolioRef` is made of (`get_held` for `get` and
/// clone, `put_unless_last` for `Drop`), `MapCounts::freeze` at [`expected_refs`] and
/// `MapCounts::unfreeze`. The folio's memory is a [`RaceCell`] that the migrator writes while
/// frozen (the copy) and holders read while they hold a reference, so loom reports any holder
/// that could touch the folio during the move, and the unfreeze's compare-exchange panics on
/// any count that changed while frozen.
///
/// The guards are checked to matter: `loom_migrate_freeze_broken_blind_get` replaces the
/// reader's `try_get` by a blind increment (the old `folio_get` on any `&Folio`), and
/// `loom_migrate_freeze_broken_borrowed_ref` has the migrator borrow the owner's reference
/// instead of taking its own (the old migration); both fail (`should_panic`).
///
/// [`RaceCell`]: crate::sync::RaceCell
#[cfg(all(test, loom))]
mod loom_tests {
    use super::expected_refs;
    use crate::desc::{DescFlags, Folio, MapCounts};
    use crate::list::Links;
    use crate::sync::{AtomicU32, AtomicU64, AtomicUsize, Ordering, RaceCell};
    use loom::sync::Arc;

    struct Shared {
        folio: Folio,
        /// The folio's memory.
        data: RaceCell<u64>,
    }

    fn shared(refs: u32) -> Arc<Shared> {
        Arc::new(Shared {
            folio: Folio {
                flags: DescFlags::zeroed(),
                counts: MapCounts { refcount: AtomicU32::new(refs), mapcount: AtomicU32::new(0) },
                lru: Links::new(),
                mapping: AtomicUsize::new(0),
                index: AtomicU64::new(0),
            },
            data: RaceCell::new(7),
        })
    }

    /// The copy: two writes, so a reader between them sees an even (half-moved) value.
    fn copy(s: &Shared) {
        s.data.update(|v| v + 1);
        s.data.update(|v| v + 1);
    }

    /// A migration of a folio held by the page cache alone (count 1, nobody's `FolioRef`)
    /// while a reader pins it speculatively, clones its reference, reads, and drops both.
    fn cached_folio_vs_reader(blind_get: bool) {
        loom::model(move || {
            let s = shared(1);
            let reader = {
                let s = s.clone();
                loom::thread::spawn(move || {
                    let c = &s.folio.counts;
                    let pinned = if blind_get {
                        c.refcount.fetch_add(1, Ordering::AcqRel);
                        true
                    } else {
                        c.try_get()
                    };
                    if pinned {
                        // The pin as a FolioRef: clone (get_held), read, drop both.
                        c.get_held();
                        assert_eq!(s.data.get() % 2, 1, "read a half-moved folio");
                        c.put_unless_last();
                        c.put_unless_last();
                    }
                })
            };
            // The migrator: its own reference, then the freeze at the expected count.
            let c = &s.folio.counts;
            if c.try_get() {
                let expected = expected_refs(0, true);
                if c.freeze(expected) {
                    // The copy: nobody may hold a reference and read meanwhile.
                    copy(&s);
                    c.unfreeze(expected);
                }
                assert!(c.put_unless_last(), "the cache's reference remains");
            }
            reader.join().unwrap();
            assert_eq!(c.refcount(), 1, "only the cache's reference is left");
        });
    }

    #[test]
    fn loom_migrate_freeze_vs_try_get_clone_drop() {
        cached_folio_vs_reader(false);
    }

    #[test]
    #[should_panic(expected = "Causality violation")]
    fn loom_migrate_freeze_broken_blind_get() {
        cached_folio_vs_reader(true);
    }

    /// The owner holds the folio's only reference and clones and drops it (get/put) while a
    /// migration runs. Correct: the migration's own reference plus the expected count
    /// (nothing else: not cached, not mapped) never matches while the owner holds one, so it
    /// backs off. Broken (`borrow`): the old migration froze 1 → 0 borrowing the owner's
    /// reference; the owner's clone during the copy then increments a frozen count.
    fn owner_vs_migration(borrow: bool) {
        loom::model(move || {
            let s = shared(1);
            let migrator = {
                let s = s.clone();
                loom::thread::spawn(move || {
                    let c = &s.folio.counts;
                    if borrow {
                        if c.freeze(1) {
                            copy(&s);
                            c.unfreeze(1);
                        }
                        return;
                    }
                    if c.try_get() {
                        let expected = expected_refs(0, false);
                        if c.freeze(expected) {
                            copy(&s);
                            c.unfreeze(expected);
                        }
                        // Never the last: the owner holds one throughout.
                        assert!(c.put_unless_last());
                    }
                })
            };
            // The owner's one reference (count 1): it clones it (get_held), reads, and drops
            // the clone.
            let c = &s.folio.counts;
            c.get_held();
            assert_eq!(s.data.get() % 2, 1, "read a half-moved folio");
            c.put_unless_last();
            migrator.join().unwrap();
            assert_eq!(c.refcount(), 1, "the owner's reference is counted");
        });
    }

    #[test]
    fn loom_migrate_freeze_vs_owner_get_put() {
        owner_vs_migration(false);
    }

    #[test]
    #[should_panic(expected = "Causality violation")]
    fn loom_migrate_freeze_broken_borrowed_ref() {
        owner_vs_migration(true);
    }
}
