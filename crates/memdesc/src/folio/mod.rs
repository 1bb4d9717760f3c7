//! Folios: anon and file memory of any order, described by one [`Folio`] descriptor that every
//! page word of the folio points to; and the per-kind TYPESAFE_BY_RCU descriptor caches they
//! (and the other descriptor kinds) are allocated from.
//!
//! - **Allocate** stamps every page word (or, for a 2 MiB folio in a two-level region, the one
//!   area word) with the folio and returns a [`FolioRef`]; **put** of the last reference takes
//!   the folio off its LRU list, resets the words to tails, returns the descriptor to its cache
//!   and the pages to the buddy allocator.
//!
//! # Ownership of references
//!
//! Safe code changes a folio's reference count only through a reference it holds:
//!
//! - a [`FolioRef`] owns exactly one count. [`FolioRef::get`] (and `Clone`) takes another one
//!   (a plain increment: holding a reference means the count is at least one and not frozen);
//!   [`PhysMem::folio_put`] consumes one and frees the folio if it was the last.
//! - **Dropping** a `FolioRef` without `folio_put` releases its count if it is not the last one
//!   (no `Cpu` is needed for that); the last one cannot be freed without a `Cpu`, so it is
//!   *leaked*: the folio stays allocated for good, which is memory-safe (nothing is freed that
//!   someone could still use) but loses the memory. `FolioRef` is `#[must_use]` for that reason.
//!   Soundness never depends on a panic or a debug assertion in `Drop`.
//! - Speculative users that start from a pfn (pfn walkers, the page cache's lockless lookup)
//!   get their reference through [`PhysMem::folio_try_get`] (or `AddressSpaceRef::lookup`),
//!   which fails on a count of zero: a folio being freed, or one **frozen** by a migration or
//!   a split.
//! - Freezing (count → 0 at an exact expected value) is crate-private (`MapCounts::freeze`):
//!   migration
//!   ([`crate::migrate`]) and split freeze at the count they can account for (their own
//!   reference, the page cache's, the mappings', all of them locked out), so any other holder
//!   makes the freeze fail, and the count is restored by a compare-exchange from zero that
//!   cannot overwrite a concurrent change.
//! - Raw interfaces for C-like callers are `unsafe fn`s: [`FolioRef::from_raw`] and
//!   [`PhysMem::folio_ref_from_pfn`] adopt a count the caller owns; [`FolioRef::into_raw`]
//!   gives the count up to raw code.
//!
//! ```compile_fail
//! # // A FolioRef is moved by `folio_put`: using it afterwards does not compile.
//! # fn f<P: memdesc::Platform>(m: &memdesc::PhysMem<P>, cpu: &memdesc::cpu::Cpu<'_>) {
//! let f = m.folio_alloc(cpu, 0, memdesc::Gfp::MOVABLE, memdesc::folio::FolioKind::Anon).unwrap();
//! m.folio_put(cpu, f).unwrap();
//! let _ = f.flags.pfn();
//! # }
//! ```
//!
//! ```compile_fail
//! # // Taking a reference needs one: a `&Folio` alone has no `get`.
//! # fn f(folio: &memdesc::desc::Folio) {
//! let extra = folio.get();
//! # }
//! ```
//!
//! ```compile_fail
//! # // `folio_get` takes a reference you hold, not a bare `&Folio`.
//! # fn f<P: memdesc::Platform>(m: &memdesc::PhysMem<P>, folio: &memdesc::desc::Folio) {
//! let extra = m.folio_get(folio);
//! # }
//! ```
//! - **Flags** (locked, dirty, writeback, LRU, …) are the shared page-flag bits of the
//!   descriptor's first word.
//! - **LRU**: one list per node holds anon and file folios alike (the LRU links are at the
//!   same offset in both, because they are one type).
//! - **Split** of a folio into folios of a smaller order re-stamps the words; a descriptor for
//!   every new piece is allocated first, so a failure changes nothing. A mapped folio's
//!   mapcount is distributed per piece by the rmap walk ([`crate::pgtable`]).
//! - **Extended descriptors** ([`FolioExt`]): a filesystem embeds a `Folio` at the start of its
//!   own descriptor type with its own cache; the page word points to the embedded folio, and
//!   [`PhysMem::folio_ext`] recovers the filesystem's type after checking the descriptor came
//!   from that filesystem's cache.
//!
//! # Files
//!
//! This file holds the folio itself (allocation, references, flags, split, extended
//! descriptors); `lru` the per-node LRU lists; the page cache is [`xarray`] (its index tree),
//! [`filemap`] (address spaces: insert, lookup, delete) and [`truncate`].

pub mod filemap;
mod lru;
// transition alias (issue 13), removed when the layers land
pub mod pagecache;
pub mod truncate;
pub mod xarray;

use core::marker::PhantomData;
use core::ptr::NonNull;

use crate::addr::{Pfn, AREA_ORDER};
use crate::cpu::Cpu;
use crate::desc::{DescPtr, Folio, PG_DIRTY, PG_LOCKED, PG_LRU, PG_WRITEBACK};
use crate::gfp::Gfp;
use crate::layout::{MemmapLayout, ZoneType};
use crate::memmap::RegionMap;
use crate::page_access::PageWords;
use crate::page_alloc::AllocError;
use crate::platform::Platform;
use crate::slab::{CacheArgs, SlabCache};
use crate::sync::Ordering;
use crate::word::{Subtype, Tag, Word};
use crate::PhysMem;
use lru::LruList;

/// Anonymous or page-cache memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FolioKind {
    /// Anonymous memory (tag `AnonFolio`).
    Anon,
    /// Page-cache memory (tag `FileFolio`).
    File,
}

impl FolioKind {
    fn tag(self) -> Tag {
        match self {
            FolioKind::Anon => Tag::AnonFolio,
            FolioKind::File => Tag::FileFolio,
        }
    }
}

/// Why a folio operation was refused. Nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FolioError {
    /// A put on a folio with no references.
    NoReference,
    /// The folio has references besides the ones the operation can account for (a split
    /// freezes the count at the caller's reference plus one per mapping entry).
    Busy,
    /// A split needs the folio locked ([`PhysMem::folio_trylock`]).
    NotLocked,
    /// A cached file folio is split by its page cache (truncation), which re-points its slots.
    Cached,
    /// The folio is mapped by page tables: its last reference cannot go, and a mapped file
    /// folio cannot be split here (its page cache splits it).
    Mapped(u32),
    /// The new order is not smaller than the folio's.
    BadOrder,
    /// Memory for new descriptors could not be allocated.
    NoMemory(AllocError),
}

impl core::fmt::Display for FolioError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FolioError::NoReference => write!(f, "put of a folio with no references"),
            FolioError::Busy => write!(f, "the folio has other references"),
            FolioError::NotLocked => write!(f, "the folio is not locked"),
            FolioError::Cached => write!(f, "a cached file folio is split by its page cache"),
            FolioError::Mapped(n) => write!(f, "folio is mapped by {n} page-table entries"),
            FolioError::BadOrder => write!(f, "split order must be smaller than the folio's"),
            FolioError::NoMemory(e) => write!(f, "{e}"),
        }
    }
}

impl core::error::Error for FolioError {}

/// A filesystem descriptor that embeds a [`Folio`] at offset 0 (requirement 8).
///
/// # Safety
/// Implementors promise: `#[repr(C)]` with a `Folio` as the first field; 16-byte aligned; every
/// field safe to read while another CPU writes it (atomics), since the cache is
/// TYPESAFE_BY_RCU; an all-zero value is valid.
pub unsafe trait FolioExt: Sync + Sized {
    /// Cache name.
    const NAME: &'static str;
}

/// The cache of one extended folio type.
pub struct FolioExtCache<E: FolioExt> {
    cache: NonNull<SlabCache>,
    _marker: PhantomData<E>,
}

// SAFETY: a pointer to a cache that lives as long as its machine; all mutation is internal.
unsafe impl<E: FolioExt> Send for FolioExtCache<E> {}
// SAFETY: as above.
unsafe impl<E: FolioExt> Sync for FolioExtCache<E> {}

/// One counted reference to a folio: what [`PhysMem::folio_alloc`], [`PhysMem::folio_try_get`]
/// and the page cache's lookup return, and what [`PhysMem::folio_put`] consumes.
///
/// Holding one keeps the folio allocated (its descriptor, pages and words), so it derefs to
/// the [`Folio`] for reading its flags, pfn, order and counts. [`FolioRef::get`] (or `clone`)
/// takes another reference. Dropping it without `folio_put` releases the count if it is not the
/// last; the last one is leaked (the folio stays allocated; see the module docs), so give every
/// reference back with [`PhysMem::folio_put`].
#[must_use = "a FolioRef owns a reference: give it back with PhysMem::folio_put (dropping the last one leaks the folio)"]
pub struct FolioRef<'a> {
    folio: &'a Folio,
}

impl<'a> FolioRef<'a> {
    /// Adopts a counted reference.
    ///
    /// # Safety
    /// The caller owns one reference count on `folio` (taken and not yet dropped, e.g. given up
    /// by [`FolioRef::into_raw`]) and hands it to the new `FolioRef`, which will drop it: the
    /// caller must not drop it again. `folio` is a live folio of the machine whose lifetime is
    /// `'a`.
    pub unsafe fn from_raw(folio: &'a Folio) -> Self {
        debug_assert!(folio.counts.refcount() != 0, "adopting a reference on a folio with none");
        FolioRef { folio }
    }

    /// Gives the reference up to raw code without dropping it: the folio stays allocated (the
    /// returned `&Folio` stays valid) until someone adopts the count again with
    /// [`FolioRef::from_raw`] or [`PhysMem::folio_ref_from_pfn`] and puts it.
    pub fn into_raw(self) -> &'a Folio {
        let f = self.folio;
        core::mem::forget(self);
        f
    }

    /// Takes another reference (Linux's `folio_get`). The count is at least our one and cannot
    /// be frozen meanwhile (a freeze accounts for every holder), so a plain increment is right.
    pub fn get(&self) -> FolioRef<'a> {
        self.folio.counts.get_held();
        FolioRef { folio: self.folio }
    }

    /// Drops this reference (the same as [`PhysMem::folio_put`]).
    pub fn put<P: Platform>(self, mem: &PhysMem<P>, cpu: &Cpu<'_>) -> Result<bool, FolioError> {
        mem.folio_put(cpu, self)
    }

    /// Whether two references are to the same folio.
    pub fn ptr_eq(a: &FolioRef<'_>, b: &FolioRef<'_>) -> bool {
        core::ptr::eq(a.folio, b.folio)
    }
}

impl core::ops::Deref for FolioRef<'_> {
    type Target = Folio;
    fn deref(&self) -> &Folio {
        self.folio
    }
}

impl Clone for FolioRef<'_> {
    fn clone(&self) -> Self {
        self.get()
    }
}

impl Drop for FolioRef<'_> {
    /// Releases the count unless it is the last one, which needs a `Cpu` to free the folio and
    /// is leaked instead (see the module docs).
    fn drop(&mut self) {
        self.folio.counts.put_unless_last();
    }
}

impl core::fmt::Debug for FolioRef<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "FolioRef({:p}, pfn {}, order {})", self.folio, self.folio.flags.pfn(), self.folio.flags.order())
    }
}

impl PartialEq for FolioRef<'_> {
    fn eq(&self, other: &Self) -> bool {
        FolioRef::ptr_eq(self, other)
    }
}
impl Eq for FolioRef<'_> {}

/// The folio layer's part of a machine ([`PhysMem`]): the LRU lists and the page cache's
/// slab caches.
pub(crate) struct FolioState {
    pub(crate) lru: [crate::sync::SpinLock<LruList>; crate::layout::MAX_NODES],
    pub(crate) pagecache: filemap::Caches,
}

// SAFETY: the page cache's cache pointers name slab caches that live as long as the machine
// (created at boot, never destroyed); every mutable part is behind a lock or an atomic. (Until
// issue 13 this was covered by the machine's own `unsafe impl Send/Sync`.)
unsafe impl Send for FolioState {}
// SAFETY: as above.
unsafe impl Sync for FolioState {}

impl FolioState {
    /// Empty lists; the caches are created by [`PhysMem::boot_folio`].
    pub(crate) fn new() -> FolioState {
        FolioState {
            lru: core::array::from_fn(|_| crate::sync::SpinLock::new(LruList::EMPTY)),
            pagecache: filemap::Caches::NONE,
        }
    }
}

impl<P: Platform> PhysMem<P> {
    /// The folio half of boot, once the slab layer runs: creates the page cache's caches.
    pub(crate) fn boot_folio(&mut self) -> Result<(), AllocError> {
        let caches = self.create_pagecache_caches()?;
        self.folio_state_mut().pagecache = caches;
        Ok(())
    }
}

impl<P: Platform> PhysMem<P> {
    /// The last put of a folio flagged [`PG_HWPOISON`]: its pages become `HwPoison` and its
    /// descriptor goes back to its cache; nothing returns to the allocator.
    pub(crate) fn retire_poisoned_folio(&self, cpu: &Cpu<'_>, f: &Folio) {
        let (pfn, order) = (f.flags.pfn(), f.flags.order());
        self.pages().stamp_block(pfn, order, Word::TAIL);
        self.free_folio_desc(cpu, f);
        self.pages().retire_poisoned_block(pfn, order);
        self.pages().undesc().hwpoison_delayed.fetch_sub(1, Ordering::Relaxed);
    }

    /// Allocates a folio of `2^order` pages; the returned [`FolioRef`] owns its one reference.
    pub fn folio_alloc(
        &self,
        cpu: &Cpu<'_>,
        order: u32,
        gfp: Gfp,
        kind: FolioKind,
    ) -> Result<FolioRef<'_>, AllocError> {
        let d = self.slabs().alloc_desc::<Folio>(cpu)?;
        let f = self.folio_init(cpu, d, order, gfp, kind).inspect_err(|_| self.slabs().free_desc(cpu, d))?;
        // SAFETY: folio_init published exactly one reference, which nobody else knows of.
        Ok(unsafe { FolioRef::from_raw(f) })
    }

    fn folio_init<'a>(
        &self,
        cpu: &Cpu<'_>,
        d: &'a Folio,
        order: u32,
        gfp: Gfp,
        kind: FolioKind,
    ) -> Result<&'a Folio, AllocError> {
        let pfn = self.pages().alloc_internal(cpu, order, gfp)?;
        d.flags.init(0, order, pfn);
        d.counts.mapcount.store(0, Ordering::Relaxed);
        d.lru.prev.store(0, Ordering::Relaxed);
        d.lru.next.store(0, Ordering::Relaxed);
        d.mapping.store(0, Ordering::Relaxed);
        d.index.store(0, Ordering::Relaxed);
        // Publish the reference count last: lockless readers' try_get starts succeeding here.
        d.counts.refcount.store(1, Ordering::Release);
        let w = Word::desc_as(DescPtr::from_ref(d), kind.tag()).expect("folio tags");
        self.pages().stamp_block(pfn, order, w);
        Ok(d)
    }

    /// Takes another reference on a folio the caller holds one of (Linux's `folio_get`); the
    /// same as [`FolioRef::get`].
    pub fn folio_get<'a>(&self, f: &FolioRef<'a>) -> FolioRef<'a> {
        f.get()
    }

    /// Takes a reference on the folio whose page `pfn` is, if a live folio owns it (Linux's
    /// `folio_try_get` after a speculative pfn walk): under RCU, pins the descriptor the word
    /// names unless its count is zero (free, being freed, or frozen by a migration or split),
    /// then re-reads the word; a pin on a descriptor that no longer owns the page is dropped
    /// (running its free path if that was the last reference). `None` if no live folio owns
    /// `pfn` now; retry later if it was frozen.
    pub fn folio_try_get(&self, cpu: &Cpu<'_>, pfn: Pfn) -> Option<FolioRef<'_>> {
        let g = self.rcu().read_lock(cpu);
        let f = crate::lookup::try_get_desc(
            &g,
            || self.memmap().load(self.platform(), pfn).map(|v| v.word),
            crate::lookup::folio,
            |f| self.folio_release(cpu, f),
        )?;
        // SAFETY: try_get_desc took one reference for us and re-checked that the word still
        // names the descriptor: it stays a live folio (beyond the guard) until that reference
        // is put, which only the FolioRef can do.
        Some(unsafe { FolioRef::from_raw(&*(f as *const Folio)) })
    }

    /// Adopts a reference the caller owns on the folio whose page `pfn` is (for page-table
    /// code and C-like callers that keep pfns). `None` if the word at `pfn` names no folio.
    ///
    /// # Safety
    /// The caller owns one counted reference on the folio that owns `pfn` (one it took and
    /// has not dropped, e.g. through [`FolioRef::into_raw`]), and gives it to the returned
    /// `FolioRef`; it must not use that count again. While the caller holds it, the folio cannot
    /// be freed, so the word at `pfn` names it (migration changes a folio's pfn only while the
    /// count is frozen, which needs every holder to be accounted for).
    pub unsafe fn folio_ref_from_pfn(&self, pfn: Pfn) -> Option<FolioRef<'_>> {
        let d = crate::lookup::folio(self.memmap().load(self.platform(), pfn)?.word.kind())?;
        // SAFETY: the caller owns a reference on this live folio (the function's contract),
        // so the descriptor stays a Folio as long as the returned FolioRef exists.
        Some(unsafe { FolioRef::from_raw(&*(d.addr() as *const Folio)) })
    }

    /// Drops the caller's reference; the last one takes the folio off its LRU list and frees it
    /// (a hardware-poisoned folio is retired instead). Returns whether it was freed.
    ///
    /// `Err(FolioError::Mapped)` only if the machine's invariant that every mapping entry holds
    /// a reference is broken (the last reference of a mapped folio): the count is then left to
    /// the mappings and nothing is freed.
    pub fn folio_put(&self, cpu: &Cpu<'_>, f: FolioRef<'_>) -> Result<bool, FolioError> {
        self.folio_put_raw(cpu, f.into_raw())
    }

    /// Drops a counted reference the crate holds without a [`FolioRef`] (a page-cache slot, a
    /// mapping entry, a pin taken internally). The caller owns that count.
    pub(crate) fn folio_put_raw(&self, cpu: &Cpu<'_>, f: &Folio) -> Result<bool, FolioError> {
        let mut cur = f.counts.refcount.load(Ordering::Acquire);
        loop {
            if cur == 0 {
                return Err(FolioError::NoReference);
            }
            if cur == 1 {
                let m = f.counts.mapcount();
                if m != 0 {
                    return Err(FolioError::Mapped(m));
                }
            }
            match f.counts.refcount.compare_exchange_weak(cur, cur - 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        if cur > 1 {
            return Ok(false);
        }
        self.folio_release(cpu, f);
        Ok(true)
    }

    /// Frees a folio whose count has just dropped to zero.
    pub(crate) fn folio_release(&self, cpu: &Cpu<'_>, f: &Folio) {
        if f.flags.flags() & PG_LRU != 0 {
            // Linux's last put takes the folio off the LRU too; nobody can find it through the
            // LRU after this (walkers hold the LRU lock).
            self.lru_del(f);
        }
        if f.flags.flags() & crate::desc::PG_HWPOISON != 0 {
            // Poisoned while referenced (crate::hwpoison): retired, never freed.
            self.retire_poisoned_folio(cpu, f);
            return;
        }
        let (pfn, order) = (f.flags.pfn(), f.flags.order());
        self.pages().stamp_block(pfn, order, Word::TAIL);
        let rm = self.memmap().region_map(self.memmap().region_index(pfn).expect("folio pfn"));
        self.free_folio_desc(cpu, f);
        self.pages().free_claimed(cpu, rm, pfn, order);
    }

    pub(crate) fn free_folio_desc(&self, cpu: &Cpu<'_>, f: &Folio) {
        let addr = NonNull::from(f).cast::<u8>();
        // An extended folio goes back to its own cache, found from its slab.
        match self.slabs().slab_of(addr.as_ptr() as usize) {
            Ok(slab) => {
                // SAFETY: a slab names its live cache.
                let c = unsafe { &*(slab.cache_addr() as *const SlabCache) };
                let r = self.slabs().cache_free(cpu, c, addr);
                debug_assert!(r.is_ok(), "folio descriptor free: {r:?}");
            }
            Err(e) => debug_assert!(false, "folio descriptor outside slab memory: {e}"),
        }
    }

    /// Takes the folio lock if it is free.
    pub fn folio_trylock(&self, f: &Folio) -> bool {
        f.flags.set(PG_LOCKED) & PG_LOCKED == 0
    }

    /// Releases the folio lock.
    pub fn folio_unlock(&self, f: &Folio) {
        f.flags.clear(PG_LOCKED);
    }

    /// Marks the folio dirty; returns whether it was clean.
    pub fn folio_mark_dirty(&self, f: &Folio) -> bool {
        f.flags.set(PG_DIRTY) & PG_DIRTY == 0
    }

    /// Clears dirty and starts writeback; returns false if it was not dirty or already under
    /// writeback.
    pub fn folio_start_writeback(&self, f: &Folio) -> bool {
        if f.flags.flags() & PG_DIRTY == 0 || f.flags.set(PG_WRITEBACK) & PG_WRITEBACK != 0 {
            return false;
        }
        f.flags.clear(PG_DIRTY);
        true
    }

    /// Ends writeback.
    pub fn folio_end_writeback(&self, f: &Folio) {
        f.flags.clear(PG_WRITEBACK);
    }

    /// Splits a folio the caller holds a reference to **and has locked**
    /// ([`PhysMem::folio_trylock`]) into folios of `new_order`. Every piece keeps the
    /// original's flags (new pieces unlocked), mapping and consecutive indices, and follows it
    /// on the LRU. The caller's reference stays with `f`, now the first piece; `each` receives
    /// a reference of the caller's on every other piece.
    ///
    /// The count is frozen at exactly the caller's reference plus one per mapping entry: any
    /// other holder makes the split fail with [`FolioError::Busy`], changing nothing (as Linux
    /// refuses to split a folio with extra pins). A **mapped** anon folio is split too: its
    /// PMD mappings are split into PTEs first, then the rmap walk counts the entries that map
    /// each piece, and each piece gets exactly that mapcount plus one reference per entry (see
    /// [`crate::pgtable`]). A cached file folio is split only by its page cache
    /// ([`FolioError::Cached`]).
    pub fn folio_split<'a>(
        &'a self,
        cpu: &Cpu<'_>,
        f: &FolioRef<'a>,
        new_order: u32,
        mut each: impl FnMut(FolioRef<'a>),
    ) -> Result<(), FolioError> {
        let folio: &'a Folio = f.folio;
        if folio.flags.flags() & PG_LOCKED == 0 {
            return Err(FolioError::NotLocked);
        }
        let file =
            self.memmap().load(self.platform(), folio.flags.pfn()).and_then(|v| v.word.tag()) == Some(Tag::FileFolio);
        if file && folio.mapping() != 0 {
            return Err(FolioError::Cached);
        }
        self.folio_split_held(cpu, folio, Some(1), new_order, |p| {
            if !core::ptr::eq(p, folio) {
                // SAFETY: a new piece of a split made at our count: it carries the caller's
                // reference (plus its mapping entries'), handed over here.
                each(unsafe { FolioRef::from_raw(&*(p as *const Folio)) })
            }
        })
    }

    /// The split for a caller that holds `holders` references of its own (the only references
    /// besides the mapping entries'): frozen at `holders` plus the mapcount, each piece getting
    /// `holders` plus its entries'. With `None` (hardware poison, which must split a folio
    /// whoever holds it): frozen at the count found, every reference that is not a mapping
    /// entry's copied onto every piece (its holders then own one on each; see
    /// [`crate::hwpoison`]). Calls `each` with every piece, the original (now the first piece)
    /// last.
    pub(crate) fn folio_split_held(
        &self,
        cpu: &Cpu<'_>,
        f: &Folio,
        holders: Option<u32>,
        new_order: u32,
        each: impl FnMut(&Folio),
    ) -> Result<(), FolioError> {
        #[cfg(feature = "pgtable")]
        if f.counts.mapcount() != 0 {
            return self.folio_split_mapped(cpu, f, holders, new_order, each);
        }
        self.folio_split_counts(cpu, f, holders, new_order, None, each)
    }

    /// The split itself. With `counts` (one mapcount per piece, summing to the folio's
    /// mapcount, computed by the caller under the folio's rmap lock) a mapped folio is split;
    /// without, a mapped folio is refused. The count is frozen at `holders` plus the mapcount
    /// (else [`FolioError::Busy`]) after everything is allocated, and every piece is published
    /// with `holders` plus its own mapcount.
    pub(crate) fn folio_split_counts(
        &self,
        cpu: &Cpu<'_>,
        f: &Folio,
        holders: Option<u32>,
        new_order: u32,
        counts: Option<&[u32]>,
        mut each: impl FnMut(&Folio),
    ) -> Result<(), FolioError> {
        let order = f.flags.order();
        if new_order >= order {
            return Err(FolioError::BadOrder);
        }
        let m = f.counts.mapcount();
        let pieces = 1usize << (order - new_order);
        match counts {
            None if m != 0 => return Err(FolioError::Mapped(m)),
            Some(c) if c.len() != pieces || c.iter().map(|&x| x as u64).sum::<u64>() != m as u64 => {
                return Err(FolioError::Mapped(m))
            }
            _ => {}
        }
        let count = |i: usize| counts.map_or(0, |c| c[i]);
        // Splitting a folio of 2 MiB or more in a two-level region below 2 MiB needs per-page
        // words for each of its areas: a table page from elsewhere (the area is all folio),
        // allocated below with the descriptors.
        let pfn = f.flags.pfn();
        let rm = self.memmap().region_map(self.memmap().region_index(pfn).expect("folio pfn"));
        let tables_needed =
            if rm.region.layout == MemmapLayout::TwoLevel && order >= AREA_ORDER && new_order < AREA_ORDER {
                1u64 << (order - AREA_ORDER)
            } else {
                0
            };
        let tag = if self.memmap().load(self.platform(), pfn).is_some_and(|v| v.word.tag() == Some(Tag::FileFolio)) {
            FolioKind::File
        } else {
            FolioKind::Anon
        };
        // Allocate every new descriptor first, chained through their own (unpublished) LRU
        // links, so a failure frees them and leaves the folio untouched.
        let mut chain = 0usize;
        for _ in 1..pieces {
            match self.slabs().alloc_desc::<Folio>(cpu) {
                Ok(d) => {
                    d.lru.next.store(chain, Ordering::Relaxed);
                    chain = d as *const Folio as usize;
                }
                Err(e) => {
                    while chain != 0 {
                        // SAFETY: the chain holds descriptors we just allocated.
                        let d = unsafe { &*(chain as *const Folio) };
                        chain = d.lru.next.load(Ordering::Relaxed);
                        self.slabs().free_desc(cpu, d);
                    }
                    return Err(FolioError::NoMemory(e));
                }
            }
        }
        // Area tables, chained through their own first word (pfn + 1; 0 ends).
        let mut tables = 0u64;
        for _ in 0..tables_needed {
            match self.alloc_area_table(cpu, rm) {
                Ok(t) => {
                    PageWords::new(self.platform(), t)
                        .expect("area tables are mapped")
                        .word(0)
                        .store(tables, Ordering::Relaxed);
                    tables = t.0 + 1;
                }
                Err(e) => {
                    self.free_area_tables(cpu, tables);
                    while chain != 0 {
                        // SAFETY: the chain holds descriptors we just allocated.
                        let d = unsafe { &*(chain as *const Folio) };
                        chain = d.lru.next.load(Ordering::Relaxed);
                        self.slabs().free_desc(cpu, d);
                    }
                    return Err(FolioError::NoMemory(e));
                }
            }
        }
        // Freeze at the references we account for: the holders' and one per mapping entry
        // (their map/unmap is locked out by the caller's rmap lock). Anyone else's makes it
        // fail, and lockless readers' try_get fails until every piece is published.
        let frozen = match holders {
            Some(h) => f.counts.freeze(h + m).then_some(h),
            None => {
                let refs = f.counts.refcount();
                (refs > m && f.counts.freeze(refs)).then(|| refs - m)
            }
        };
        let Some(holders) = frozen else {
            self.free_area_tables(cpu, tables);
            while chain != 0 {
                // SAFETY: the chain holds descriptors we just allocated.
                let d = unsafe { &*(chain as *const Folio) };
                chain = d.lru.next.load(Ordering::Relaxed);
                self.slabs().free_desc(cpu, d);
            }
            return Err(FolioError::Busy);
        };
        // Split the areas, every per-page word still naming the folio, so lockless readers see
        // no change until each piece is stamped below.
        let whole = Word::desc_as(DescPtr::from_ref(f), tag.tag()).expect("folio tags");
        for a in 0..tables_needed {
            let t = Pfn(tables - 1);
            tables =
                PageWords::new(self.platform(), t).expect("area tables are mapped").word(0).load(Ordering::Relaxed);
            let trm = self.memmap().region_map(self.memmap().region_index(t).expect("table pfn"));
            self.pages().stamp_block(t, 0, crate::zone::Buddy::<P>::undescribed(trm, Subtype::Memmap, 0));
            self.memmap().split_area(self.platform(), rm, pfn.add(a << AREA_ORDER), t, 0, |_| whole);
        }
        let flags = f.flags.flags();
        let (mapping, index) = (f.mapping.load(Ordering::Relaxed), f.index.load(Ordering::Relaxed));
        // The holders' references are held on every piece; each mapping entry's reference
        // goes to the piece it maps.
        let other = holders;
        for i in 1..pieces {
            // SAFETY: pieces - 1 descriptors were chained above.
            let d = unsafe { &*(chain as *const Folio) };
            chain = d.lru.next.load(Ordering::Relaxed);
            let ppfn = pfn.add((i as u64) << new_order);
            // Nobody locked the new pieces.
            d.flags.init(flags & !(PG_LRU | PG_LOCKED), new_order, ppfn);
            d.counts.mapcount.store(count(i), Ordering::Relaxed);
            d.lru.prev.store(0, Ordering::Relaxed);
            d.lru.next.store(0, Ordering::Relaxed);
            d.mapping.store(mapping, Ordering::Relaxed);
            d.index.store(index + ((i as u64) << new_order), Ordering::Relaxed);
            d.counts.refcount.store(other + count(i), Ordering::Release);
            let w = Word::desc_as(DescPtr::from_ref(d), tag.tag()).expect("folio tags");
            self.pages().stamp_block(ppfn, new_order, w);
            if flags & PG_LRU != 0 {
                self.lru_add(d);
            }
            each(d);
        }
        // Finally the original shrinks to the first piece; its other pages are re-stamped.
        f.counts.mapcount.store(count(0), Ordering::Relaxed);
        f.flags.init(flags, new_order, pfn);
        f.counts.unfreeze(other + count(0));
        each(f);
        Ok(())
    }

    /// A page for the per-page words of an area of `rm` that a split folio fills: from the
    /// same zone (so the buddy allocator can free it under that zone's lock when the area is
    /// whole and free again) and direct-mapped.
    fn alloc_area_table(&self, cpu: &Cpu<'_>, rm: &RegionMap) -> Result<Pfn, AllocError> {
        let gfp = match rm.region.zone {
            ZoneType::Dma => Gfp::DMA,
            ZoneType::Dma32 => Gfp::DMA32,
            ZoneType::Normal => Gfp::KERNEL,
            ZoneType::Movable => Gfp::MOVABLE,
        };
        let t = self.pages().alloc_internal(cpu, 0, gfp)?;
        let trm = self.memmap().region_map(self.memmap().region_index(t).expect("allocated pfn"));
        let same_zone = trm.region.node == rm.region.node && trm.region.zone == rm.region.zone;
        if !same_zone || self.platform().direct_map(t).is_none() {
            let r = self.pages().free_internal(cpu, t, 0);
            debug_assert!(r.is_ok());
            return Err(AllocError::NoMemory { order: 0 });
        }
        Ok(t)
    }

    fn free_area_tables(&self, cpu: &Cpu<'_>, mut tables: u64) {
        while tables != 0 {
            let t = Pfn(tables - 1);
            tables =
                PageWords::new(self.platform(), t).expect("area tables are mapped").word(0).load(Ordering::Relaxed);
            let r = self.pages().free_internal(cpu, t, 0);
            debug_assert!(r.is_ok());
        }
    }

    /// Creates the cache of an extended folio type.
    pub fn register_folio_ext<E: FolioExt>(&self, cpu: &Cpu<'_>) -> Result<FolioExtCache<E>, AllocError> {
        let c = self.slabs().new_cache(
            cpu,
            &CacheArgs {
                align: 16,
                typesafe_by_rcu: true,
                freeptr_offset: Some(core::mem::offset_of!(Folio, index)),
                ..CacheArgs::new(E::NAME, core::mem::size_of::<E>())
            },
        )?;
        Ok(FolioExtCache { cache: NonNull::from(c), _marker: PhantomData })
    }

    /// Allocates a file folio whose descriptor is an `E`; the returned reference derefs to the
    /// embedded [`Folio`], and [`PhysMem::folio_ext`] gives the `E` around it.
    pub fn folio_alloc_ext<'a, E: FolioExt>(
        &'a self,
        cpu: &Cpu<'_>,
        ext: &FolioExtCache<E>,
        order: u32,
        gfp: Gfp,
    ) -> Result<FolioRef<'a>, AllocError> {
        // SAFETY: the cache lives as long as the machine.
        let c = unsafe { ext.cache.as_ref() };
        let p = self.slabs().cache_alloc_at(cpu, c, crate::fault::FaultSite::Desc)?;
        // SAFETY: FolioExt guarantees a Folio at offset 0 of a valid (zero or former) E.
        let f = unsafe { &*(p.as_ptr() as *const Folio) };
        match self.folio_init(cpu, f, order, gfp, FolioKind::File) {
            // SAFETY: folio_init published exactly one reference, which nobody else knows of.
            Ok(f) => Ok(unsafe { FolioRef::from_raw(f) }),
            Err(err) => {
                let _ = self.slabs().cache_free(cpu, c, p);
                Err(err)
            }
        }
    }

    /// The extended descriptor around `f`, if `f` was allocated from `ext`'s cache.
    pub fn folio_ext<'a, E: FolioExt>(&self, ext: &FolioExtCache<E>, f: &'a Folio) -> Option<&'a E> {
        let slab = self.slabs().slab_of(f as *const Folio as usize).ok()?;
        (slab.cache_addr() == ext.cache.as_ptr() as usize).then(|| {
            // SAFETY: f is an object of E's cache, and E has its Folio at offset 0.
            unsafe { &*(f as *const Folio as *const E) }
        })
    }
}
