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
//!   [`PhysMem::folio_put`](crate::PhysMem::folio_put) consumes one and frees the folio if it was the last.
//! - **Dropping** a `FolioRef` without `folio_put` releases its count if it is not the last one
//!   (no `Cpu` is needed for that); the last one cannot be freed without a `Cpu`, so it is
//!   *leaked*: the folio stays allocated for good, which is memory-safe (nothing is freed that
//!   someone could still use) but loses the memory. `FolioRef` is `#[must_use]` for that reason.
//!   Soundness never depends on a panic or a debug assertion in `Drop`.
//! - Speculative users that start from a pfn (pfn walkers, the page cache's lockless lookup)
//!   get their reference through [`PhysMem::folio_try_get`](crate::PhysMem::folio_try_get) (or `AddressSpaceRef::lookup`),
//!   which fails on a count of zero: a folio being freed, or one **frozen** by a migration or
//!   a split.
//! - Freezing (count → 0 at an exact expected value) is crate-private (`MapCounts::freeze`):
//!   migration
//!   ([`crate::migrate`]) and split freeze at the count they can account for (their own
//!   reference, the page cache's, the mappings', all of them locked out), so any other holder
//!   makes the freeze fail, and the count is restored by a compare-exchange from zero that
//!   cannot overwrite a concurrent change.
//! - Raw interfaces for C-like callers (in `machine/raw.rs`, with their contracts):
//!   [`FolioRef::from_raw`] and
//!   [`PhysMem::folio_ref_from_pfn`](crate::PhysMem::folio_ref_from_pfn) adopt a count the
//!   caller owns; [`FolioRef::into_raw`] gives the count up to raw code.
//!
//! ```compile_fail
//! # // A FolioRef is moved by `folio_put`: using it afterwards does not compile.
//! # fn f<P: memdesc::Platform>(m: &memdesc::PhysMem<P>, cpu: &memdesc::Cpu<'_>) {
//! let f = m.folio_alloc(cpu, 0, memdesc::Gfp::MOVABLE, memdesc::folio::FolioKind::Anon).unwrap();
//! m.folio_put(cpu, f).unwrap();
//! let _ = f.flags.pfn();
//! # }
//! ```
//!
//! ```compile_fail
//! # // Taking a reference needs one: a `&Folio` alone has no `get`.
//! # fn f(folio: &memdesc::memmap::desc::Folio) {
//! let extra = folio.get();
//! # }
//! ```
//!
//! ```compile_fail
//! # // `folio_get` takes a reference you hold, not a bare `&Folio`.
//! # fn f<P: memdesc::Platform>(m: &memdesc::PhysMem<P>, folio: &memdesc::memmap::desc::Folio) {
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
//!   [`PhysMem::folio_ext`](crate::PhysMem::folio_ext) recovers the filesystem's type after checking the descriptor came
//!   from that filesystem's cache.
//!
//! # Files
//!
//! This file holds the layer's state and view and the folio itself (allocation, references,
//! flags, split, extended descriptors); `lru` the per-node LRU lists; the page cache is
//! [`space`] (the address space's data and the page cache's errors), [`xarray`] (its index
//! tree), [`filemap`] (address spaces: insert, lookup, delete) and [`truncate`].
//!
//! # State and view
//! The layer's state is [`FolioState`] (private fields: the per-node LRU lists and the page
//! cache's caches); its operations are methods of [`Folios`], a `Copy` view that pairs the
//! state with the slab layer's view and the page allocator:
//!
//! ```text
//! Folios<'a, P> { pages: &'a PageAllocator<P>, slabs: Slabs<'a, P>, state: &'a FolioState }
//! ```
//!
//! The machine makes it (`mem.folios()`) and forwards the public API to it
//! (`machine/folio.rs`); a split of a folio that may be mapped is the machine's, since it
//! calls into the mm layer above.
//!
//! # Import rule and unchecked code
//! This layer imports `base`, `memmap`, `page_alloc`, `slab` and itself; `mod.rs` imports
//! none of its children (`space` is the page cache's data, imported by `xarray`, `filemap`
//! and `truncate`). It has no unchecked code: the LRU and the split's descriptor chain are
//! [`List<Folio>`](crate::list::List)s (the one unlink helper is `Folio::lru_unlink` in
//! `memmap/desc.rs`), and the few places that turn an address into a reference (a held
//! folio, a page-cache tree entry, an address space from a folio's `mapping`, an extended
//! descriptor) are crate-private functions of `machine/raw.rs`, folio section, whose
//! invariants F1-F6 state why each is sound.

pub mod filemap;
mod lru;
// transition alias (issue 13), removed when the layers land
pub mod pagecache;
pub mod space;
pub mod truncate;
pub mod xarray;

use core::marker::PhantomData;
use core::ptr::NonNull;

use crate::addr::{Pfn, AREA_ORDER};
use crate::cpu::Cpu;
use crate::desc::{DescPtr, Folio, PG_DIRTY, PG_LOCKED, PG_LRU, PG_WRITEBACK};
use crate::desc_ref::Kept;
use crate::gfp::Gfp;
use crate::layout::{MemmapLayout, ZoneType};
use crate::list::List;
use crate::memmap::RegionMap;
use crate::page_access::PageWords;
use crate::page_alloc::AllocError;
use crate::page_alloc::PageAllocator;
use crate::platform::Platform;
use crate::slab::Slabs;
use crate::slab::{CacheArgs, CacheFamily, SlabCache};
use crate::sync::{Ordering, SpinLock};
use crate::word::{Subtype, Tag, Word};

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
    /// A split needs the folio locked ([`PhysMem::folio_trylock`](crate::PhysMem::folio_trylock)).
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

/// A filesystem descriptor that embeds a [`Folio`] at offset 0 (a layout promise, so it is
/// defined with the descriptor layouts).
pub use crate::desc::FolioExt;

/// The cache of one extended folio type (made at registration, never destroyed).
pub struct FolioExtCache<E: FolioExt> {
    pub(crate) cache: Kept<SlabCache>,
    _marker: PhantomData<fn() -> E>,
}

/// One counted reference to a folio: what [`PhysMem::folio_alloc`](crate::PhysMem::folio_alloc), [`PhysMem::folio_try_get`](crate::PhysMem::folio_try_get)
/// and the page cache's lookup return, and what [`PhysMem::folio_put`](crate::PhysMem::folio_put) consumes.
///
/// Holding one keeps the folio allocated (its descriptor, pages and words), so it derefs to
/// the [`Folio`] for reading its flags, pfn, order and counts. [`FolioRef::get`] (or `clone`)
/// takes another reference. Dropping it without `folio_put` releases the count if it is not the
/// last; the last one is leaked (the folio stays allocated; see the module docs), so give every
/// reference back with [`PhysMem::folio_put`](crate::PhysMem::folio_put).
#[must_use = "a FolioRef owns a reference: give it back with PhysMem::folio_put (dropping the last one leaks the folio)"]
pub struct FolioRef<'a> {
    folio: &'a Folio,
}

impl<'a> FolioRef<'a> {
    /// Adopts a counted reference the crate took (the checked half of the raw
    /// [`FolioRef::from_raw`], in `machine/raw.rs`): the caller owns one reference count on
    /// `folio` (taken and not yet dropped) and hands it to the new `FolioRef`, which will drop
    /// it; `folio` is a live folio of the machine whose lifetime is `'a`.
    pub(crate) fn adopt(folio: &'a Folio) -> Self {
        debug_assert!(folio.counts.refcount() != 0, "adopting a reference on a folio with none");
        FolioRef { folio }
    }

    /// Gives the reference up to raw code without dropping it: the folio stays allocated (the
    /// returned `&Folio` stays valid) until someone adopts the count again with
    /// [`FolioRef::from_raw`] or [`PhysMem::folio_ref_from_pfn`](crate::PhysMem::folio_ref_from_pfn) and puts it.
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

/// The folio layer's part of a machine: the LRU lists and the page cache's slab caches.
/// Private: only this layer's modules touch it, through [`Folios`].
pub struct FolioState {
    lru: [SpinLock<List<Folio>>; crate::layout::MAX_NODES],
    pagecache: PageCacheCaches,
}

impl FolioState {
    /// Empty lists; the caches are created by [`Folios::boot`] and stored with
    /// [`FolioState::set_boot_caches`].
    pub(crate) fn new() -> FolioState {
        FolioState { lru: core::array::from_fn(|_| SpinLock::new(List::new())), pagecache: PageCacheCaches::NONE }
    }

    /// Records the caches [`Folios::boot`] created.
    pub(crate) fn set_boot_caches(&mut self, caches: PageCacheCaches) {
        self.pagecache = caches;
    }
}

/// The slab caches of the page cache, which the folio half of boot creates (see
/// [`Folios::boot`]): tree nodes (TYPESAFE_BY_RCU) and address spaces.
pub(crate) struct PageCacheCaches {
    pub(super) nodes: Kept<SlabCache>,
    pub(super) spaces: Kept<SlabCache>,
}

impl PageCacheCaches {
    /// Before boot creates them.
    const NONE: PageCacheCaches = PageCacheCaches { nodes: Kept::NONE, spaces: Kept::NONE };
}

/// The folio layer seen with the layers below it (the slab layer for descriptors, the page
/// allocator for pages and words): every folio, LRU and page-cache operation is a method of
/// this view (see [`crate::machine`] for the pattern).
pub struct Folios<'a, P: Platform> {
    pages: &'a PageAllocator<P>,
    slabs: Slabs<'a, P>,
    state: &'a FolioState,
}

impl<P: Platform> Clone for Folios<'_, P> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<P: Platform> Copy for Folios<'_, P> {}

impl<'a, P: Platform> Folios<'a, P> {
    /// The view of `state` over the slab layer and the page allocator (the machine makes it).
    #[inline]
    pub(crate) fn new(pages: &'a PageAllocator<P>, slabs: Slabs<'a, P>, state: &'a FolioState) -> Self {
        Folios { pages, slabs, state }
    }

    /// The slab layer's view below this one.
    #[inline]
    pub(crate) fn slabs(&self) -> Slabs<'a, P> {
        self.slabs
    }

    /// The folio half of boot, once the slab layer runs: creates the page cache's caches. The
    /// machine stores them with [`FolioState::set_boot_caches`] (the view only borrows the
    /// state).
    pub(crate) fn boot(&self) -> Result<PageCacheCaches, AllocError> {
        self.create_pagecache_caches()
    }
}

impl<'a, P: Platform> Folios<'a, P> {
    /// The last put of a folio flagged [`PG_HWPOISON`]: its pages become `HwPoison` and its
    /// descriptor goes back to its cache; nothing returns to the allocator.
    pub(crate) fn retire_poisoned_folio(&self, cpu: &Cpu<'_>, f: &Folio) {
        let (pfn, order) = (f.flags.pfn(), f.flags.order());
        self.pages.stamp_block(pfn, order, Word::TAIL);
        self.free_folio_desc(cpu, f);
        self.pages.retire_poisoned_block(pfn, order);
        self.pages.undesc().hwpoison_delayed.fetch_sub(1, Ordering::Relaxed);
    }

    /// Allocates a folio of `2^order` pages; the returned [`FolioRef`] owns its one reference.
    pub(crate) fn folio_alloc(
        &self,
        cpu: &Cpu<'_>,
        order: u32,
        gfp: Gfp,
        kind: FolioKind,
    ) -> Result<FolioRef<'a>, AllocError> {
        let d = self.slabs.alloc_desc::<Folio>(cpu)?;
        let f = self.folio_init(cpu, d, order, gfp, kind).inspect_err(|_| self.slabs.free_desc(cpu, d))?;
        // folio_init published exactly one reference, which nobody else knows of.
        Ok(FolioRef::adopt(f))
    }

    fn folio_init<'f>(
        &self,
        cpu: &Cpu<'_>,
        d: &'f Folio,
        order: u32,
        gfp: Gfp,
        kind: FolioKind,
    ) -> Result<&'f Folio, AllocError> {
        let pfn = self.pages.alloc_internal(cpu, order, gfp)?;
        d.flags.init(0, order, pfn);
        d.counts.mapcount.store(0, Ordering::Relaxed);
        // A descriptor is freed only off every list (Linked for Folio), and fresh cache
        // memory is zero: its LRU links are unlinked.
        debug_assert!(!d.lru.is_linked(), "a new folio descriptor is on a list");
        d.mapping.store(0, Ordering::Relaxed);
        d.index.store(0, Ordering::Relaxed);
        // Publish the reference count last: lockless readers' try_get starts succeeding here.
        d.counts.refcount.store(1, Ordering::Release);
        let w = Word::desc_as(DescPtr::from_ref(d), kind.tag()).expect("folio tags");
        self.pages.stamp_block(pfn, order, w);
        Ok(d)
    }

    /// Takes another reference on a folio the caller holds one of (Linux's `folio_get`); the
    /// same as [`FolioRef::get`].
    pub(crate) fn folio_get<'r>(&self, f: &FolioRef<'r>) -> FolioRef<'r> {
        f.get()
    }

    /// Takes a reference on the folio whose page `pfn` is, if a live folio owns it (Linux's
    /// `folio_try_get` after a speculative pfn walk): under RCU, pins the descriptor the word
    /// names unless its count is zero (free, being freed, or frozen by a migration or split),
    /// then re-reads the word; a pin on a descriptor that no longer owns the page is dropped
    /// (running its free path if that was the last reference). `None` if no live folio owns
    /// `pfn` now; retry later if it was frozen.
    pub(crate) fn folio_try_get(&self, cpu: &Cpu<'_>, pfn: Pfn) -> Option<FolioRef<'a>> {
        let g = self.pages.rcu().read_lock(cpu);
        let f = crate::lookup::try_get_desc(
            &g,
            || self.pages.memmap().load(self.pages.platform(), pfn).map(|v| v.word),
            crate::lookup::folio,
            |f| self.folio_release(cpu, f),
        )?;
        // try_get_desc took one reference for us and re-checked that the word still names the
        // descriptor: it stays a live folio (beyond the guard) until that reference is put,
        // which only the FolioRef can do.
        Some(FolioRef::adopt(self.held(f)))
    }

    /// The folio whose page `pfn` is, for a caller that owns a counted reference on it (the
    /// checked half of the raw [`PhysMem::folio_ref_from_pfn`](crate::PhysMem::folio_ref_from_pfn)).
    /// While the caller holds that reference the folio cannot be freed, so the word at `pfn`
    /// names it (migration changes a folio's pfn only while the count is frozen, which needs
    /// every holder to be accounted for). `None` if the word at `pfn` names no folio.
    pub(crate) fn folio_held_at(&self, pfn: Pfn) -> Option<&'a Folio> {
        let d = crate::lookup::folio(self.pages.memmap().load(self.pages.platform(), pfn)?.word.kind())?;
        Some(self.held_desc(d))
    }

    /// Drops the caller's reference; the last one takes the folio off its LRU list and frees it
    /// (a hardware-poisoned folio is retired instead). Returns whether it was freed.
    ///
    /// `Err(FolioError::Mapped)` only if the machine's invariant that every mapping entry holds
    /// a reference is broken (the last reference of a mapped folio): the count is then left to
    /// the mappings and nothing is freed.
    pub(crate) fn folio_put(&self, cpu: &Cpu<'_>, f: FolioRef<'_>) -> Result<bool, FolioError> {
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
        self.pages.stamp_block(pfn, order, Word::TAIL);
        let rm = self.pages.memmap().region_map(self.pages.memmap().region_index(pfn).expect("folio pfn"));
        self.free_folio_desc(cpu, f);
        self.pages.free_claimed(cpu, rm, pfn, order);
    }

    pub(crate) fn free_folio_desc(&self, cpu: &Cpu<'_>, f: &Folio) {
        let addr = NonNull::from(f).cast::<u8>();
        // An extended folio goes back to its own cache, found from its slab.
        match self.slabs.slab_of(addr.as_ptr() as usize) {
            Ok(slab) => {
                let c = self.slabs.cache_of(slab);
                let r = self.slabs.cache_free(cpu, c, addr);
                debug_assert!(r.is_ok(), "folio descriptor free: {r:?}");
            }
            Err(e) => debug_assert!(false, "folio descriptor outside slab memory: {e}"),
        }
    }

    /// Takes the folio lock if it is free.
    pub(crate) fn folio_trylock(&self, f: &Folio) -> bool {
        f.flags.set(PG_LOCKED) & PG_LOCKED == 0
    }

    /// Releases the folio lock.
    pub(crate) fn folio_unlock(&self, f: &Folio) {
        f.flags.clear(PG_LOCKED);
    }

    /// Marks the folio dirty; returns whether it was clean.
    pub(crate) fn folio_mark_dirty(&self, f: &Folio) -> bool {
        f.flags.set(PG_DIRTY) & PG_DIRTY == 0
    }

    /// Clears dirty and starts writeback; returns false if it was not dirty or already under
    /// writeback.
    pub(crate) fn folio_start_writeback(&self, f: &Folio) -> bool {
        if f.flags.flags() & PG_DIRTY == 0 || f.flags.set(PG_WRITEBACK) & PG_WRITEBACK != 0 {
            return false;
        }
        f.flags.clear(PG_DIRTY);
        true
    }

    /// Ends writeback.
    pub(crate) fn folio_end_writeback(&self, f: &Folio) {
        f.flags.clear(PG_WRITEBACK);
    }

    /// The folio layer's half of [`PhysMem::folio_split`](crate::PhysMem::folio_split): checks
    /// that the caller has locked `f` and that it is not a cached file folio, runs
    /// `split_held` (the machine's split of a folio whose only holder is the caller, which
    /// reaches the mm layer for a mapped folio) and hands the caller a [`FolioRef`] on every
    /// piece but the first.
    pub(crate) fn folio_split(
        &self,
        f: &FolioRef<'a>,
        split_held: impl FnOnce(&'a Folio, &mut dyn FnMut(&Folio)) -> Result<(), FolioError>,
        mut each: impl FnMut(FolioRef<'a>),
    ) -> Result<(), FolioError> {
        let folio: &'a Folio = f.folio;
        if folio.flags.flags() & PG_LOCKED == 0 {
            return Err(FolioError::NotLocked);
        }
        let file = self.pages.memmap().load(self.pages.platform(), folio.flags.pfn()).and_then(|v| v.word.tag())
            == Some(Tag::FileFolio);
        if file && folio.mapping() != 0 {
            return Err(FolioError::Cached);
        }
        split_held(folio, &mut |p| {
            if !core::ptr::eq(p, folio) {
                // A new piece of a split made at our count: it carries the caller's reference
                // (plus its mapping entries'), handed over here.
                each(FolioRef::adopt(self.held(p)))
            }
        })
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
        let rm = self.pages.memmap().region_map(self.pages.memmap().region_index(pfn).expect("folio pfn"));
        let tables_needed =
            if rm.region.layout == MemmapLayout::TwoLevel && order >= AREA_ORDER && new_order < AREA_ORDER {
                1u64 << (order - AREA_ORDER)
            } else {
                0
            };
        let tag = if self
            .pages
            .memmap()
            .load(self.pages.platform(), pfn)
            .is_some_and(|v| v.word.tag() == Some(Tag::FileFolio))
        {
            FolioKind::File
        } else {
            FolioKind::Anon
        };
        // Allocate every new descriptor first, on a local list through their own (unpublished)
        // LRU links, so a failure frees them and leaves the folio untouched.
        let mut chain: List<Folio> = List::new();
        for _ in 1..pieces {
            match self.slabs.alloc_desc::<Folio>(cpu) {
                Ok(d) => {
                    let r = chain.push_back(d);
                    debug_assert!(r.is_ok(), "a new folio descriptor is on a list");
                }
                Err(e) => {
                    self.free_chain(cpu, &mut chain);
                    return Err(FolioError::NoMemory(e));
                }
            }
        }
        // Area tables, chained through their own first word (pfn + 1; 0 ends).
        let mut tables = 0u64;
        for _ in 0..tables_needed {
            match self.alloc_area_table(cpu, rm) {
                Ok(t) => {
                    PageWords::new(self.pages.platform(), t)
                        .expect("area tables are mapped")
                        .word(0)
                        .store(tables, Ordering::Relaxed);
                    tables = t.0 + 1;
                }
                Err(e) => {
                    self.free_area_tables(cpu, tables);
                    self.free_chain(cpu, &mut chain);
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
            self.free_chain(cpu, &mut chain);
            return Err(FolioError::Busy);
        };
        // Split the areas, every per-page word still naming the folio, so lockless readers see
        // no change until each piece is stamped below.
        let whole = Word::desc_as(DescPtr::from_ref(f), tag.tag()).expect("folio tags");
        for a in 0..tables_needed {
            let t = Pfn(tables - 1);
            tables = PageWords::new(self.pages.platform(), t)
                .expect("area tables are mapped")
                .word(0)
                .load(Ordering::Relaxed);
            let trm = self.pages.memmap().region_map(self.pages.memmap().region_index(t).expect("table pfn"));
            self.pages.stamp_block(t, 0, crate::zone::Buddy::<P>::undescribed(trm, Subtype::Memmap, 0));
            self.pages.memmap().split_area(self.pages.platform(), rm, pfn.add(a << AREA_ORDER), t, 0, |_| whole);
        }
        let flags = f.flags.flags();
        let (mapping, index) = (f.mapping.load(Ordering::Relaxed), f.index.load(Ordering::Relaxed));
        // The holders' references are held on every piece; each mapping entry's reference
        // goes to the piece it maps.
        let other = holders;
        for i in 1..pieces {
            let d = chain.pop_front().expect("pieces - 1 descriptors were allocated above");
            let ppfn = pfn.add((i as u64) << new_order);
            // Nobody locked the new pieces.
            d.flags.init(flags & !(PG_LRU | PG_LOCKED), new_order, ppfn);
            d.counts.mapcount.store(count(i), Ordering::Relaxed);
            d.mapping.store(mapping, Ordering::Relaxed);
            d.index.store(index + ((i as u64) << new_order), Ordering::Relaxed);
            d.counts.refcount.store(other + count(i), Ordering::Release);
            let w = Word::desc_as(DescPtr::from_ref(d), tag.tag()).expect("folio tags");
            self.pages.stamp_block(ppfn, new_order, w);
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

    /// Frees the unpublished descriptors a failed split allocated.
    fn free_chain(&self, cpu: &Cpu<'_>, chain: &mut List<Folio>) {
        while let Some(d) = chain.pop_front() {
            self.slabs.free_desc(cpu, d);
        }
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
        let t = self.pages.alloc_internal(cpu, 0, gfp)?;
        let trm = self.pages.memmap().region_map(self.pages.memmap().region_index(t).expect("allocated pfn"));
        let same_zone = trm.region.node == rm.region.node && trm.region.zone == rm.region.zone;
        if !same_zone || self.pages.platform().direct_map(t).is_none() {
            let r = self.pages.free_internal(cpu, t, 0);
            debug_assert!(r.is_ok());
            return Err(AllocError::NoMemory { order: 0 });
        }
        Ok(t)
    }

    fn free_area_tables(&self, cpu: &Cpu<'_>, mut tables: u64) {
        while tables != 0 {
            let t = Pfn(tables - 1);
            tables = PageWords::new(self.pages.platform(), t)
                .expect("area tables are mapped")
                .word(0)
                .load(Ordering::Relaxed);
            let r = self.pages.free_internal(cpu, t, 0);
            debug_assert!(r.is_ok());
        }
    }

    /// Creates the cache of an extended folio type.
    pub(crate) fn register_folio_ext<E: FolioExt>(&self, cpu: &Cpu<'_>) -> Result<FolioExtCache<E>, AllocError> {
        let cache = self.slabs.new_cache_forever(
            cpu,
            &CacheArgs {
                align: 16,
                typesafe_by_rcu: true,
                freeptr_offset: Some(core::mem::offset_of!(Folio, index)),
                ..CacheArgs::new(E::NAME, core::mem::size_of::<E>())
            },
            CacheFamily::Internal,
        )?;
        Ok(FolioExtCache { cache, _marker: PhantomData })
    }

    /// Allocates a file folio whose descriptor is an `E`; the returned reference derefs to the
    /// embedded [`Folio`], and [`PhysMem::folio_ext`](crate::PhysMem::folio_ext) gives the `E` around it.
    pub(crate) fn folio_alloc_ext<E: FolioExt>(
        &self,
        cpu: &Cpu<'_>,
        ext: &FolioExtCache<E>,
        order: u32,
        gfp: Gfp,
    ) -> Result<FolioRef<'a>, AllocError> {
        let f = self.alloc_ext_desc(cpu, ext)?;
        match self.folio_init(cpu, f, order, gfp, FolioKind::File) {
            // folio_init published exactly one reference, which nobody else knows of.
            Ok(f) => Ok(FolioRef::adopt(f)),
            Err(err) => {
                if let Some(c) = ext.cache.get() {
                    let _ = self.slabs.cache_free(cpu, c, NonNull::from(f).cast());
                }
                Err(err)
            }
        }
    }
}
