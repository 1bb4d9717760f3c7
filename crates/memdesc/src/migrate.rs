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
//! Movable: unmapped anon folios and file folios whose only reference is the one expected (the
//! owner's or the page cache's), unlocked, not under writeback and not hardware-poisoned
//! (moving a poisoned folio would free the bad page). The kinds other subsystems
//! own go through one dispatch point, `movable`, which returns
//! [`MigrateError::NotYetMovable`] for mapped folios (they need the reverse map to rewrite
//! page-table entries) and zsmalloc / z3fold pages until their migration is wired in.
//!
//! Flat regions only. This module touches folio descriptors' flags/pfn/refcount, page words,
//! and page contents of the two blocks it copies between.

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
    /// The page is of a kind whose migration is not wired in yet: a mapped folio (needs the
    /// reverse map) or a zsmalloc / z3fold page.
    NotYetMovable {
        /// The pfn.
        pfn: Pfn,
        /// Its tag.
        tag: Tag,
        /// Page-table entries mapping it (for a folio), else 0.
        mapcount: u32,
    },
    /// The folio has references besides the expected one, is locked, under writeback, or
    /// being freed: retry later.
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
            MigrateError::NotYetMovable { pfn, tag, mapcount } => {
                write!(f, "pfn {pfn} ({tag:?}, mapcount {mapcount}) is not movable yet")
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
pub(crate) struct Movable {
    /// Folio descriptor address.
    pub(crate) folio: usize,
    /// File (page-cache) folio rather than anon.
    pub(crate) file: bool,
}

/// The dispatch point: is the page whose word is `kind` movable, and how?
///
/// Folios are movable here when unmapped; everything else either never moves or belongs to a
/// subsystem whose migration is not wired in yet. **Wire other helpers' kinds here**: mapped
/// folios (page tables + rmap), zsmalloc and z3fold component pages.
pub(crate) fn movable(pfn: Pfn, kind: PageKind) -> Result<Movable, MigrateError> {
    match kind {
        PageKind::AnonFolio(d) => Ok(Movable { folio: d.addr(), file: false }),
        PageKind::FileFolio(d) => Ok(Movable { folio: d.addr(), file: true }),
        PageKind::Zsmalloc(_) => Err(MigrateError::NotYetMovable { pfn, tag: Tag::Zsmalloc, mapcount: 0 }),
        PageKind::Z3fold(_) => Err(MigrateError::NotYetMovable { pfn, tag: Tag::Z3fold, mapcount: 0 }),
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
    /// Migrates the folio whose page `pfn` is (any page of it) to newly allocated memory
    /// (`gfp` picks where; use [`Gfp::MOVABLE`]). Returns the folio's new first pfn.
    pub fn migrate_page(&self, cpu: &Cpu<'_>, pfn: Pfn, gfp: Gfp) -> Result<Pfn, MigrateError> {
        let (rm, _) = self.flat_ctx(pfn).map_err(|_| MigrateError::Unsupported(pfn))?;
        let mv = movable(pfn, rm.flat_word(pfn).load().kind())?;
        // Held until migrate_to has frozen and revalidated the folio (or given up).
        let _rcu = self.rcu().read_lock(cpu);
        // SAFETY: folio descriptors are TYPESAFE_BY_RCU (always a Folio while the RCU read
        // guard above is held); migrate_to revalidates the word after freezing before trusting
        // anything else.
        let f = unsafe { &*(mv.folio as *const Folio) };
        let order = f.flags.order();
        let new = self.alloc_with(cpu, order, gfp, |_| Word::TAIL).map_err(MigrateError::NoTarget)?;
        match self.migrate_to(cpu, f, mv.file, new) {
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
        let m = f.counts.mapcount();
        if m != 0 {
            // ---- Dispatch point: mapped folios need the reverse map (page tables) to
            // unmap/remap every PTE; wire it here. ----
            return Err(MigrateError::NotYetMovable { pfn: old, tag, mapcount: m });
        }
        let _mapping_lock = if file {
            match self.pagecache_lock_of(f) {
                Ok(l) => l,
                Err(()) => return Err(MigrateError::Busy(old)),
            }
        } else {
            None
        };
        if f.counts.refcount.compare_exchange(1, 0, Ordering::AcqRel, Ordering::Relaxed).is_err() {
            return Err(MigrateError::Busy(old));
        }
        let me = Word::desc_as(DescPtr::from_ref(f), tag).expect("folio tags");
        let unfreeze = || f.counts.refcount.store(1, Ordering::Release);
        // Revalidate now that the folio cannot be freed: the word still names it, it still
        // covers these pages, and nobody holds its lock or is writing it back.
        if orm.flat_word(old).load() != me || f.flags.order() != order || f.counts.mapcount() != 0 {
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
        f.flags.init(flags, order, new);
        for i in 0..1u64 << order {
            orm.flat_word(old.add(i)).store(Word::TAIL);
        }
        self.free_claimed(cpu, orm, old, order);
        unfreeze();
        Ok(())
    }
}
