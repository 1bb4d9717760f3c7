//! The folio layer's public API on the machine: one-line forwarders to
//! [`Folios`](crate::folio::Folios) (layer 4), plus the steps that cross layers upward: the
//! split of a folio that may be mapped (the mm layer splits its mappings first) and
//! [`FolioRef::put`], which needs the machine.

use crate::addr::Pfn;
use crate::cpu::Cpu;
use crate::desc::Folio;
use crate::folio::filemap::AddressSpaceRef;
#[cfg(feature = "health")]
use crate::folio::filemap::MappingLock;
#[cfg(feature = "health")]
use crate::folio::space::PageCacheError;
use crate::folio::{FolioError, FolioExt, FolioExtCache, FolioKind, FolioRef};
use crate::gfp::Gfp;
use crate::page_alloc::AllocError;
use crate::platform::Platform;

use super::PhysMem;

impl<P: Platform> PhysMem<P> {
    /// Allocates a folio of `2^order` pages; the returned [`FolioRef`] owns its one reference.
    #[inline]
    pub fn folio_alloc(
        &self,
        cpu: &Cpu<'_>,
        order: u32,
        gfp: Gfp,
        kind: FolioKind,
    ) -> Result<FolioRef<'_>, AllocError> {
        self.folios().folio_alloc(cpu, order, gfp, kind)
    }

    /// Takes another reference on a folio the caller holds one of (Linux's `folio_get`); the
    /// same as [`FolioRef::get`].
    #[inline]
    pub fn folio_get<'a>(&self, f: &FolioRef<'a>) -> FolioRef<'a> {
        self.folios().folio_get(f)
    }

    /// Takes a reference on the folio whose page `pfn` is, if a live folio owns it (Linux's
    /// `folio_try_get` after a speculative pfn walk): under RCU, pins the descriptor the word
    /// names unless its count is zero (free, being freed, or frozen by a migration or split),
    /// then re-reads the word; a pin on a descriptor that no longer owns the page is dropped
    /// (running its free path if that was the last reference). `None` if no live folio owns
    /// `pfn` now; retry later if it was frozen.
    #[inline]
    pub fn folio_try_get(&self, cpu: &Cpu<'_>, pfn: Pfn) -> Option<FolioRef<'_>> {
        self.folios().folio_try_get(cpu, pfn)
    }

    /// Drops the caller's reference; the last one takes the folio off its LRU list and frees it
    /// (a hardware-poisoned folio is retired instead). Returns whether it was freed.
    ///
    /// `Err(FolioError::Mapped)` only if the machine's invariant that every mapping entry holds
    /// a reference is broken (the last reference of a mapped folio): the count is then left to
    /// the mappings and nothing is freed.
    #[inline]
    pub fn folio_put(&self, cpu: &Cpu<'_>, f: FolioRef<'_>) -> Result<bool, FolioError> {
        self.folios().folio_put(cpu, f)
    }

    /// Drops a counted reference the crate holds without a [`FolioRef`] (a page-cache slot, a
    /// mapping entry, a pin taken internally). The caller owns that count.
    #[cfg(feature = "health")]
    #[inline]
    pub(crate) fn folio_put_raw(&self, cpu: &Cpu<'_>, f: &Folio) -> Result<bool, FolioError> {
        self.folios().folio_put_raw(cpu, f)
    }

    /// Takes the folio lock if it is free.
    #[inline]
    pub fn folio_trylock(&self, f: &Folio) -> bool {
        self.folios().folio_trylock(f)
    }

    /// Marks the folio dirty; returns whether it was clean.
    #[inline]
    pub fn folio_mark_dirty(&self, f: &Folio) -> bool {
        self.folios().folio_mark_dirty(f)
    }

    /// Clears dirty and starts writeback; returns false if it was not dirty or already under
    /// writeback.
    #[inline]
    pub fn folio_start_writeback(&self, f: &Folio) -> bool {
        self.folios().folio_start_writeback(f)
    }

    /// Releases the folio lock.
    #[inline]
    pub fn folio_unlock(&self, f: &Folio) {
        self.folios().folio_unlock(f)
    }

    /// Ends writeback.
    #[inline]
    pub fn folio_end_writeback(&self, f: &Folio) {
        self.folios().folio_end_writeback(f)
    }

    /// Creates the cache of an extended folio type.
    #[inline]
    pub fn register_folio_ext<E: FolioExt>(&self, cpu: &Cpu<'_>) -> Result<FolioExtCache<E>, AllocError> {
        self.folios().register_folio_ext(cpu)
    }

    /// Allocates a file folio whose descriptor is an `E`; the returned reference derefs to the
    /// embedded [`Folio`], and [`PhysMem::folio_ext`] gives the `E` around it.
    #[inline]
    pub fn folio_alloc_ext<E: FolioExt>(
        &self,
        cpu: &Cpu<'_>,
        ext: &FolioExtCache<E>,
        order: u32,
        gfp: Gfp,
    ) -> Result<FolioRef<'_>, AllocError> {
        self.folios().folio_alloc_ext(cpu, ext, order, gfp)
    }

    /// The extended descriptor around `f`, if `f` was allocated from `ext`'s cache.
    #[inline]
    pub fn folio_ext<'a, E: FolioExt>(&self, ext: &FolioExtCache<E>, f: &'a Folio) -> Option<&'a E> {
        self.folios().folio_ext(ext, f)
    }

    /// Adds the folio to the tail of its node's LRU list (anon and file share it).
    /// Returns false if it was already on an LRU list.
    #[inline]
    pub fn lru_add(&self, f: &Folio) -> bool {
        self.folios().lru_add(f)
    }

    /// Removes the folio from its LRU list; returns false if it was not on one.
    #[inline]
    pub fn lru_del(&self, f: &Folio) -> bool {
        self.folios().lru_del(f)
    }

    /// Moves the folio to the tail of its LRU list (recently used).
    #[inline]
    pub fn lru_rotate(&self, f: &Folio) -> bool {
        self.folios().lru_rotate(f)
    }

    /// Calls `f` for each folio on `node`'s LRU list, oldest first.
    #[inline]
    pub fn lru_for_each(&self, node: usize, f: impl FnMut(&Folio)) {
        self.folios().lru_for_each(node, f)
    }

    /// Folios on `node`'s LRU list.
    #[inline]
    pub fn lru_len(&self, node: usize) -> u64 {
        self.folios().lru_len(node)
    }

    /// Creates an empty address space (one file's page cache).
    #[inline]
    pub fn address_space_create(&self, cpu: &Cpu<'_>) -> Result<AddressSpaceRef<'_, P>, AllocError> {
        self.folios().address_space_create(cpu)
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
    #[inline]
    pub fn folio_split<'a>(
        &'a self,
        cpu: &Cpu<'_>,
        f: &FolioRef<'a>,
        new_order: u32,
        each: impl FnMut(FolioRef<'a>),
    ) -> Result<(), FolioError> {
        self.folios().folio_split(
            f,
            |folio, pieces| self.folio_split_held(cpu, folio, Some(1), new_order, pieces),
            each,
        )
    }

    /// The split for a caller that holds `holders` references of its own (the only references
    /// besides the mapping entries'): frozen at `holders` plus the mapcount, each piece getting
    /// `holders` plus its entries'. With `None` (hardware poison, which must split a folio
    /// whoever holds it): frozen at the count found, every reference that is not a mapping
    /// entry's copied onto every piece (its holders then own one on each; see
    /// [`crate::hwpoison`]). Calls `each` with every piece, the original (now the first piece)
    /// last.
    ///
    /// Here because it crosses layers upward: a mapped folio's mappings are split and counted
    /// by the mm layer, which then calls the folio layer's split.
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
            return self.mms().folio_split_mapped(cpu, f, holders, new_order, each);
        }
        self.folios().folio_split_counts(cpu, f, holders, new_order, None, each)
    }

    /// For hwpoison: takes the page `pfn` of the cached file folio `f` out of its address
    /// space (see [`Folios::pagecache_take_page`](crate::folio::Folios)).
    #[cfg(feature = "health")]
    #[inline]
    pub(crate) fn pagecache_take_page<'a>(
        &'a self,
        cpu: &Cpu<'_>,
        f: &'a Folio,
        pfn: Pfn,
        drop_pin: bool,
    ) -> Result<(&'a Folio, bool), PageCacheError> {
        self.folios().pagecache_take_page(cpu, f, pfn, drop_pin)
    }

    /// Locks the address space caching `f` if `f` is cached (see
    /// [`Folios::pagecache_lock_of`](crate::folio::Folios)).
    #[cfg(feature = "health")]
    #[inline]
    pub(crate) fn pagecache_lock_of<'f>(&self, f: &'f Folio) -> Result<Option<MappingLock<'f>>, ()> {
        self.folios().pagecache_lock_of(f)
    }
}

impl FolioRef<'_> {
    /// Drops this reference (the same as [`PhysMem::folio_put`]).
    #[inline]
    pub fn put<P: Platform>(self, mem: &PhysMem<P>, cpu: &Cpu<'_>) -> Result<bool, FolioError> {
        mem.folio_put(cpu, self)
    }
}
