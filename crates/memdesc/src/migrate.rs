//! Folio migration: moves a folio's memory to other pages while its **descriptor stays**.
//!
//! In memdesc the descriptor, not the page, is a folio's identity: its page-cache slots, its
//! LRU links and every `&Folio` its owners hold point to the descriptor, and the pfn is a
//! field of it. So migrating a folio is: freeze its reference count (1 → 0; a lockless lookup
//! then fails to pin it and retries), copy the data, stamp the new pages' words with the same
//! descriptor, move the descriptor's pfn, retire the old pages' words and free them, unfreeze.
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
//! per entry plus the page cache's (file) or the owner's (anon; an anon folio held by its
//! mappings alone is accepted too). After the copy every entry is pointed at the same page of
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
//! ([`crate::zsmalloc::zs_migrate_page_to`], [`crate::z3fold::z3fold_migrate_page_to`]): the
//! word leads to the descriptor, the descriptor to the pool, whose lock the move is made
//! under; their handles never change.
//!
//! Movable: anon and file folios whose references are only the expected ones, unlocked, not
//! under writeback and not hardware-poisoned (moving a poisoned folio would free the bad
//! page), and zsmalloc / z3fold pages with no object mapped. The one dispatch point is
//! `movable`.
//!
//! Flat regions only. This module touches folio descriptors' flags/pfn/refcount, page words,
//! page-table entries of migrated folios through the rmap, and page contents of the two
//! blocks it copies between.

use crate::addr::{Pfn, PAGE_SIZE};
use crate::cpu::Cpu;
use crate::desc::{DescPtr, Folio, PG_HWPOISON, PG_LOCKED, PG_WRITEBACK};
use crate::gfp::Gfp;
use crate::page_alloc::{AllocError, PhysMem};
use crate::platform::{PageMap, Platform};
use crate::sync::Ordering;
use crate::word::{PageKind, Tag, Word};

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

/// What a movable page is, decoded from its word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Movable {
    /// A folio (mapped or not).
    Folio {
        /// Folio descriptor address.
        folio: usize,
        /// File (page-cache) folio rather than anon.
        file: bool,
    },
    /// A zsmalloc component page (order 0).
    Zsmalloc,
    /// A z3fold page (order 0).
    Z3fold,
}

/// The dispatch point: is the page whose word is `kind` movable, and how?
pub(crate) fn movable(pfn: Pfn, kind: PageKind) -> Result<Movable, MigrateError> {
    match kind {
        PageKind::AnonFolio(d) => Ok(Movable::Folio { folio: d.addr(), file: false }),
        PageKind::FileFolio(d) => Ok(Movable::Folio { folio: d.addr(), file: true }),
        PageKind::Zsmalloc(_) => Ok(Movable::Zsmalloc),
        PageKind::Z3fold(_) => Ok(Movable::Z3fold),
        PageKind::Slab(_) => Err(MigrateError::NotMovable { pfn, tag: Tag::Slab }),
        PageKind::PageTable(_) => Err(MigrateError::NotMovable { pfn, tag: Tag::PageTable }),
        PageKind::Vmalloc { mappable, .. } => Err(MigrateError::NotMovable {
            pfn,
            tag: if mappable { Tag::VmallocMappable } else { Tag::VmallocUnmappable },
        }),
        PageKind::NetPool(_) => Err(MigrateError::NotMovable { pfn, tag: Tag::NetPool }),
        PageKind::Mappable(_) => Err(MigrateError::NotMovable { pfn, tag: Tag::Mappable }),
        PageKind::Undescribed(_) | PageKind::Buddy(_) | PageKind::Invalid(_) => {
            Err(MigrateError::NotMovable { pfn, tag: Tag::Undescribed })
        }
        PageKind::Split(_) => Err(MigrateError::Unsupported(pfn)),
    }
}

impl<P: Platform> PhysMem<P> {
    /// Migrates the folio whose page `pfn` is (any page of it, mapped or not), or the zsmalloc
    /// or z3fold page `pfn`, to newly allocated memory (`gfp` picks where for a folio; use
    /// [`Gfp::MOVABLE`]). Returns the new (first) pfn.
    pub fn migrate_page(&self, cpu: &Cpu<'_>, pfn: Pfn, gfp: Gfp) -> Result<Pfn, MigrateError> {
        let (rm, _) = self.flat_ctx(pfn).map_err(|_| MigrateError::Unsupported(pfn))?;
        let (folio, file) = match movable(pfn, rm.flat_word(pfn).load().kind())? {
            Movable::Folio { folio, file } => (folio, file),
            Movable::Zsmalloc => return self.migrate_pool_page(cpu, pfn, false, None),
            Movable::Z3fold => return self.migrate_pool_page(cpu, pfn, true, None),
        };
        // Held until migrate_to has frozen and revalidated the folio (or given up).
        let _rcu = self.rcu().read_lock(cpu);
        // SAFETY: folio descriptors are TYPESAFE_BY_RCU (always a Folio while the RCU read
        // guard above is held); migrate_to revalidates the word after freezing before trusting
        // anything else.
        let f = unsafe { &*(folio as *const Folio) };
        let order = f.flags.order();
        let new = self.alloc_with(cpu, order, gfp, |_| Word::TAIL).map_err(MigrateError::NoTarget)?;
        match self.migrate_to(cpu, f, file, new) {
            Ok(()) => Ok(new),
            Err(e) => {
                let nrm = self.memmap.region_map(self.memmap.region_index(new).expect("allocated"));
                self.free_claimed(cpu, nrm, new, order);
                Err(e)
            }
        }
    }

    /// Moves folio `f` (decoded from a word; `file` from its tag) to the block at `new`, which
    /// the caller took from the allocator (its words are tail words) and frees on error. The
    /// caller holds an RCU read guard from decoding `f` until this returns.
    pub(crate) fn migrate_to(&self, cpu: &Cpu<'_>, f: &Folio, file: bool, new: Pfn) -> Result<(), MigrateError> {
        let (old, order) = (f.flags.pfn(), f.flags.order());
        let (orm, _) = self.flat_ctx(old).map_err(|_| MigrateError::Unsupported(old))?;
        let (nrm, _) = self.flat_ctx(new).map_err(|_| MigrateError::Unsupported(new))?;
        let tag = if file { Tag::FileFolio } else { Tag::AnonFolio };
        // A mapped folio: its rmap lock, held until the move is done, keeps every entry
        // mapping it (and so its mapcount) stable. A last unmap clears an anon folio's
        // `mapping` and a first map sets it, so a mapped count seen without an rmap to lock may
        // be a map or unmap in flight: look again a few times before calling it rmap-less.
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
        let _mapping_lock = if file {
            match self.pagecache_lock_of(f) {
                Ok(l) => l,
                Err(()) => return Err(MigrateError::Busy(old)),
            }
        } else {
            None
        };
        // One reference per entry, plus the cache's or the owner's; an anon folio only its
        // mappings hold is movable too.
        let refs = f.counts.refcount();
        let expected = refs == m + 1 || (!file && m != 0 && refs == m);
        if !expected || f.counts.refcount.compare_exchange(refs, 0, Ordering::AcqRel, Ordering::Relaxed).is_err() {
            return Err(MigrateError::Busy(old));
        }
        let me = Word::desc_as(DescPtr::from_ref(f), tag).expect("folio tags");
        let unfreeze = || f.counts.refcount.store(refs, Ordering::Release);
        // Revalidate now that the folio cannot be freed: the word still names it, it still
        // covers these pages, and nobody holds its lock or is writing it back.
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
            let (src, dst) = (PageMap::new(&self.platform, old.add(i)), PageMap::new(&self.platform, new.add(i)));
            let (Some(src), Some(dst)) = (src, dst) else {
                f.flags.clear(PG_LOCKED);
                unfreeze();
                return Err(MigrateError::Unsupported(old));
            };
            for k in 0..PAGE_SIZE / 8 {
                dst.word(k).store(src.word(k).load(Ordering::Relaxed), Ordering::Relaxed);
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
        self.free_claimed(cpu, orm, old, order);
        unfreeze();
        Ok(())
    }

    /// Migrates the zsmalloc (`z3 == false`) or z3fold page `pfn` through its pool, to
    /// `target` (an order-0 block the caller took from the allocator, tail word, still the
    /// caller's on error) or, with `None`, to a page the pool allocates. Returns the new pfn.
    pub(crate) fn migrate_pool_page(
        &self,
        cpu: &Cpu<'_>,
        pfn: Pfn,
        z3: bool,
        target: Option<Pfn>,
    ) -> Result<Pfn, MigrateError> {
        use crate::z3fold::{z3fold_migrate_page, z3fold_migrate_page_to};
        use crate::zsmalloc::{zs_migrate_page, zs_migrate_page_to, ZsMigrateError as E};
        if let Some(t) = target {
            // The pools take a raw order-0 allocation as a target.
            let (trm, _) = self.flat_ctx(t).map_err(|_| MigrateError::Unsupported(t))?;
            trm.flat_word(t).store(Self::undesc_word(trm, crate::word::Subtype::Unmappable, 0));
        }
        let r = match (z3, target) {
            (false, None) => zs_migrate_page(self, cpu, pfn),
            // SAFETY: the caller gives a target it owns (this fn's contract, checked by the
            // callers in compaction); it was just restamped as a raw order-0 allocation.
            (false, Some(t)) => unsafe { zs_migrate_page_to(self, cpu, pfn, t) },
            (true, None) => z3fold_migrate_page(self, cpu, pfn),
            // SAFETY: as above.
            (true, Some(t)) => unsafe { z3fold_migrate_page_to(self, cpu, pfn, t) },
        };
        r.map_err(|e| {
            if let Some(t) = target {
                if let Ok((trm, _)) = self.flat_ctx(t) {
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
