//! The page cache: one [`AddressSpace`] per file maps file indices (in pages) to file folios,
//! with **lockless lookup under RCU** and writers serialised by the address space's lock.
//! The index tree is [`super::xarray`]; truncation is [`super::truncate`].
//!
//! # Lockless lookup and why it is correct
//!
//! Insertions only add to the tree (new slots, new nodes, a taller root), each published with a
//! release store after the folio's `mapping` and `index` and the new node's empty slots are in
//! place. Everything that takes something *out* of the tree — removing a folio, freeing a
//! node, shrinking the root, replacing a folio by its split pieces — runs inside a write
//! section of the address space's sequence counter `seq` (odd while it runs; a relaxed store
//! followed by a release fence on entry, a release store on exit). A reader:
//!
//! 1. reads `seq` (acquire) and waits out an odd value;
//! 2. walks from the root with acquire loads — under its RCU read guard every node address it
//!    loads is node memory and every folio address is folio-descriptor memory, both
//!    `TYPESAFE_BY_RCU`, even if they were freed and reused meanwhile;
//! 3. pins the folio it found with `MapCounts::try_get`
//!    and reads its `mapping`, `index` and order;
//! 4. issues an acquire fence and re-reads `seq`; if it changed, it drops the pin (running the
//!    folio's free path if that was the last reference) and starts over.
//!
//! If `seq` did not change, no removal ran in this address space while the reader looked: its
//! nodes are only freed by removals, so every node the walk visited was a node of *this* tree
//! at that position (a node reused from another file's tree can only be reached through a
//! slot of ours written by an insertion, which initialised it first), and the folio it found
//! was, and still is, cached here at that index. A reader that walked through a node freed
//! and reused in a racing removal — and so may have found another file's folio, or a folio
//! that was freed and reallocated for another index, or nothing where something is cached —
//! read a slot written after the removal's fence, and then its fence makes it see the new
//! `seq`. Because the check is on the sequence and not on the folio's fields, it has no ABA
//! hole (a folio deleted and re-inserted elsewhere while a reader looked still changes `seq`),
//! and a `None` is validated the same way as a hit. As a second line of defence the reader
//! also checks that the `mapping` and `index` it read in step 3 cover the index it asked for
//! (read inside the window, so a removal racing them is caught by the sequence too); the loom
//! models make a mismatch under an unchanged sequence an assertion failure.
//!
//! Writers hold the lock for single-folio windows, so readers rarely retry; after
//! [`LOCKLESS_TRIES`] failed attempts a reader takes the lock and looks up under it (counted
//! by [`AddressSpace::slow_lookups`]), which bounds its work under a storm of removals.
//!
//! # References and the LRU
//!
//! The cache holds one reference on every folio it contains, taken by insert and dropped by
//! delete and truncate. The cache does not put folios on the LRU; a folio leaving the cache is
//! taken off the LRU (if a caller put it there) before the cache's reference is dropped, so the
//! last put can free it.
//!
//! This module touches its tree nodes and address spaces, and the `mapping`/`index` fields of
//! the file folios it caches (only under an address space's lock).

use core::ptr::NonNull;

use crate::addr::Pfn;
use crate::cpu::Cpu;
use crate::desc::Folio;
use crate::fault::FaultSite;
use crate::folio::space::{AddressSpace, PageCacheError};
#[cfg(feature = "health")]
use crate::folio::xarray::Writer;
use crate::folio::xarray::{addr_of, Node, NodeAlloc, PageCacheViolation};
use crate::folio::FolioRef;
use crate::folio::{Folios, PageCacheCaches};
use crate::page_alloc::AllocError;
use crate::platform::Platform;
use crate::rcu::RcuGuard;
use crate::slab::obj::CacheObj;
use crate::slab::{CacheArgs, CacheFamily, SlabCache};
use crate::sync::{fence, spin_hint, Ordering};
use crate::word::PageKind;

/// Lockless attempts before a lookup takes the address space's lock.
pub const LOCKLESS_TRIES: u32 = 8;

impl AddressSpace {
    /// Whether `f`, pinned, is cached here at a range covering `index`.
    #[inline]
    fn covers(&self, f: &Folio, index: u64) -> bool {
        f.mapping() == self.addr() && index.wrapping_sub(f.index()) < 1u64 << f.flags.order()
    }

    /// The lockless lookup (see the module docs): returns the folio cached at `index` with a
    /// reference taken for the caller. `put` drops a reference the reader took on a folio that
    /// failed revalidation, running the folio's free path if it was the last.
    pub(crate) fn lookup_rcu<'k>(
        &'k self,
        guard: &'k RcuGuard<'_>,
        index: u64,
        mut put: impl FnMut(&Folio),
    ) -> Option<&'k Folio> {
        for _ in 0..LOCKLESS_TRIES {
            let s1 = self.seq.load(Ordering::Acquire);
            if s1 & 1 != 0 {
                spin_hint();
                continue;
            }
            let Ok(e) = self.walk(index) else { continue };
            let found = if e == 0 {
                None
            } else {
                // A folio entry loaded under the caller's RCU guard, which keeps it a folio.
                let f = Node::folio_at(guard, e);
                if !f.counts.try_get() {
                    // Free or frozen for a split: the tree is changing under us.
                    continue;
                }
                Some(f)
            };
            // Read inside the section, so the sequence check covers these loads too.
            let ok = found.is_none_or(|f| self.covers(f, index));
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == s1 {
                // Under an unchanged sequence the pinned folio is cached here at `index`; the
                // check is a second line of defence, an assertion in the loom models.
                #[cfg(loom)]
                assert!(ok, "seq-validated lookup pinned a folio not cached at the index");
                debug_assert!(ok, "seq-validated lookup pinned a folio not cached at the index");
                if ok {
                    return found;
                }
            }
            if let Some(f) = found {
                put(f);
            }
        }
        self.lookup_locked(index)
    }

    /// Lookup under the lock: the fallback that guarantees progress.
    fn lookup_locked(&self, index: u64) -> Option<&Folio> {
        self.slow_lookups.fetch_add(1, Ordering::Relaxed);
        let _g = self.lock.lock();
        let e = self.walk(index).ok().filter(|&e| e != 0)?;
        // Loaded under the lock: the folio is cached and the cache's reference keeps it alive
        // until the reference taken here is the caller's.
        let f = Node::folio_at(self, e);
        f.counts.refcount.fetch_add(1, Ordering::AcqRel);
        Some(f)
    }
}

/// Tree nodes from the machine's node cache.
pub(super) struct SlabNodes<'a, 'c, P: Platform> {
    folios: Folios<'a, P>,
    cpu: &'a Cpu<'c>,
}

impl<P: Platform> NodeAlloc for SlabNodes<'_, '_, P> {
    fn alloc_node(&mut self) -> Result<NonNull<Node>, AllocError> {
        let p = self
            .folios
            .slabs
            .cache_alloc_at(self.cpu, self.folios.pagecache_cache(false), FaultSite::PageCacheNode)?
            .cast::<Node>();
        // Objects of the node cache are zero (TYPESAFE_BY_RCU slab pages are zeroed) or former
        // nodes, which are freed empty.
        debug_assert!(Node::at(self, p.as_ptr() as usize).is_empty(), "a node came back from the cache non-empty");
        Ok(p)
    }

    fn free_node(&mut self, node: &Node) {
        debug_assert!(node.is_empty(), "freeing a non-empty node");
        let r = self.folios.slabs.cache_free(self.cpu, self.folios.pagecache_cache(false), NonNull::from(node).cast());
        debug_assert!(r.is_ok(), "node free: {r:?}");
    }
}

/// A handle to one address space of a machine: insert, look up, delete, truncate.
///
/// Not `Clone`: [`AddressSpaceRef::destroy`] consumes it. Dropping it without destroying
/// leaks the address space and the cache's references to its folios, like a leaked inode.
pub struct AddressSpaceRef<'m, P: Platform> {
    pub(super) folios: Folios<'m, P>,
    pub(super) space: CacheObj<'m, AddressSpace>,
}

impl<'a, P: Platform> Folios<'a, P> {
    /// Creates the page cache's slab caches (at boot).
    pub(crate) fn create_pagecache_caches(&self) -> Result<PageCacheCaches, AllocError> {
        let cpu = self.pages.cpus().claim_any().ok_or(AllocError::NoMemory { order: 0 })?;
        let nodes = self.slabs.new_cache_forever(
            &cpu,
            &CacheArgs {
                align: 16,
                typesafe_by_rcu: true,
                freeptr_offset: Some(core::mem::offset_of!(Node, meta)),
                ..CacheArgs::new("radix_tree_node", core::mem::size_of::<Node>())
            },
            CacheFamily::Internal,
        )?;
        let spaces = self.slabs.new_cache_forever(
            &cpu,
            &CacheArgs { align: 16, ..CacheArgs::new("address_space", core::mem::size_of::<AddressSpace>()) },
            CacheFamily::Internal,
        )?;
        Ok(PageCacheCaches { nodes, spaces })
    }

    pub(super) fn pagecache_cache(&self, spaces: bool) -> &'a SlabCache {
        let c = if spaces { &self.state.pagecache.spaces } else { &self.state.pagecache.nodes };
        c.get().expect("page-cache caches exist after boot")
    }

    /// Creates an empty address space (one file's page cache).
    pub(crate) fn address_space_create(&self, cpu: &Cpu<'_>) -> Result<AddressSpaceRef<'a, P>, AllocError> {
        // The cache was made for address spaces at boot: the check cannot fail.
        let cache = self.slabs.obj_cache::<AddressSpace>(self.pagecache_cache(true)).map_err(|e| {
            debug_assert!(false, "{e}");
            AllocError::NoMemory { order: 0 }
        })?;
        let space = self.slabs.obj_alloc(cpu, cache, AddressSpace::new())?;
        Ok(AddressSpaceRef { folios: *self, space })
    }

    /// Tree nodes from the page cache's node cache, for one operation on `cpu`.
    pub(super) fn nodes<'s, 'c>(&'s self, cpu: &'s Cpu<'c>) -> SlabNodes<'s, 'c, P> {
        SlabNodes { folios: *self, cpu }
    }

    /// The file folio whose first page is `pfn` (a piece of a split we own).
    pub(super) fn file_folio_at(&self, pfn: Pfn) -> Option<&'a Folio> {
        match self.pages.memmap().load(self.pages.platform(), pfn)?.word.kind() {
            // The word names a live file folio that the caller holds a reference to.
            PageKind::FileFolio(d) => Some(self.held_desc(d)),
            _ => None,
        }
    }
}

/// The lock of the address space caching a folio, held while migration freezes the folio's
/// reference count (so a locked lookup, which trusts the cache's reference, cannot pin the
/// folio meanwhile).
#[cfg(feature = "health")]
pub(crate) struct MappingLock<'a> {
    _w: Writer<'a>,
}

impl<'a, P: Platform> Folios<'a, P> {
    /// Locks the address space caching `f` if `f` is cached; `Err(())` if `f` has a mapping
    /// but is not (or no longer) cached there, `Ok(None)` if it has no mapping. The caller must
    /// not destroy that address space concurrently.
    #[cfg(feature = "health")]
    pub(crate) fn pagecache_lock_of<'f>(&self, f: &'f Folio) -> Result<Option<MappingLock<'f>>, ()> {
        let Some(space) = self.space_of(f) else {
            return Ok(None);
        };
        let w = space.writer();
        if !w.contains(f) {
            return Err(());
        }
        Ok(Some(MappingLock { _w: w }))
    }
}

impl<'m, P: Platform> AddressSpaceRef<'m, P> {
    /// The address space.
    pub fn space(&self) -> &AddressSpace {
        &self.space
    }

    /// Pages cached.
    pub fn nr_pages(&self) -> u64 {
        self.space.nr_pages()
    }

    /// Folios cached.
    pub fn nr_folios(&self) -> u64 {
        self.space.nr_folios()
    }

    /// Caches `folio` (a file folio the caller holds a reference to) at `index`, which must
    /// be a multiple of its size; a large folio occupies every index it covers. The cache
    /// takes its own reference. Fails, changing nothing, if any index of the range is cached.
    pub fn insert(&self, cpu: &Cpu<'_>, folio: &FolioRef<'_>, index: u64) -> Result<(), PageCacheError> {
        let folio: &Folio = folio;
        match self.folios.pages.memmap().load(self.folios.pages.platform(), folio.flags.pfn()).map(|v| v.word.kind()) {
            Some(PageKind::FileFolio(d)) if d.addr() == addr_of(folio) => {}
            _ => return Err(PageCacheError::NotFileFolio),
        }
        // The cache's reference, taken from the caller's.
        folio.counts.get_held();
        let r = self.space.writer().insert(&mut self.folios.nodes(cpu), folio, index);
        if r.is_err() {
            // Drop the reference taken for the cache (the caller still holds theirs).
            let dropped = folio.counts.put_unless_last();
            debug_assert!(dropped, "the caller's reference remains");
        }
        r
    }

    /// The folio cached at `index`, with a reference taken for the caller (drop it with
    /// [`PhysMem::folio_put`](crate::PhysMem::folio_put)). Lockless: see the module docs. A folio frozen by a migration
    /// is waited out (the retry falls back to the locked lookup, which migration's hold of the
    /// address space's lock serialises with).
    pub fn lookup(&self, cpu: &Cpu<'_>, index: u64) -> Option<FolioRef<'m>> {
        let g = self.folios.pages.rcu().read_lock(cpu);
        let f = self.space.lookup_rcu(&g, index, |f| {
            let r = self.folios.folio_put_raw(cpu, f);
            debug_assert!(r.is_ok(), "dropping a speculative reference: {r:?}");
        })?;
        // lookup_rcu took one reference for us on a folio cached here.
        Some(FolioRef::adopt(self.folios.held(f)))
    }

    /// Removes `folio` from the cache, takes it off the LRU and drops the cache's reference.
    /// Returns whether that freed it.
    pub fn delete(&self, cpu: &Cpu<'_>, folio: &Folio) -> Result<bool, PageCacheError> {
        {
            let mut w = self.space.writer();
            if !w.contains(folio) {
                return Err(PageCacheError::NotCached);
            }
            w.remove(&mut self.folios.nodes(cpu), folio);
        }
        self.folios.lru_del(folio);
        // The cache's reference, which we took out of the tree above.
        self.folios.folio_put_raw(cpu, folio).map_err(PageCacheError::Put)
    }

    /// Calls `cb(index, folio)` for every cached folio in index order, under the address
    /// space's lock (`cb` must not modify this address space).
    pub fn for_each(&self, cb: impl FnMut(u64, &Folio)) {
        self.space.writer().for_each(cb)
    }

    /// Checks the tree: node counts, no empty node, every folio at the level of its order in
    /// every slot it covers with a matching mapping and index, a root that cannot shrink, and
    /// the page and folio counters.
    pub fn verify(&self) -> Result<(), PageCacheViolation> {
        self.space.writer().verify()
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::folio::xarray::test_support::*;
    use crate::folio::xarray::{addr_of, Node};
    use crate::rcu::Rcu;
    use loom::sync::Arc;

    /// Drops a reader's reference; a model has no free path to run.
    fn put(f: &Folio) {
        f.counts.refcount.fetch_sub(1, Ordering::AcqRel);
    }

    /// Truncation as the page cache does it: find the folio under the lock and remove it.
    fn truncate_all(s: &AddressSpace, pool: &mut Pool) -> Option<usize> {
        let mut w = s.writer();
        let f = w.find_next(0, u64::MAX)?;
        w.remove(pool, f);
        Some(addr_of(f))
    }

    /// A reader looks up index 1 of file A while the writer truncates A (freeing A's only
    /// node), drops the cache's reference and — if that was the last — reuses the folio
    /// descriptor for index `reuse_index` of file `reuse_in_b ? B : A`, which reuses A's freed
    /// node too (the pool hands the last freed node out first). The reader gets nothing or the
    /// folio while it is still A's index 1, never the reused one.
    fn lookup_races_truncate_and_reuse(reuse_in_b: bool, reuse_index: u64) {
        loom::model(move || {
            let rcu = Arc::new(Rcu::new(2));
            let nodes = Arc::new([Node::new(), Node::new()]);
            let a = Arc::new(AddressSpace::new());
            let b = Arc::new(AddressSpace::new());
            let f = Arc::new(folio(0, 1));
            let mut pool = Pool::new(&nodes[..]);
            a.writer().insert(&mut pool, &f, 1).unwrap();
            let reader = {
                let (rcu, a, f) = (rcu.clone(), a.clone(), f.clone());
                loom::thread::spawn(move || {
                    let cpu = rcu.cpus().claim(1).unwrap();
                    let g = rcu.read_lock(&cpu);
                    if let Some(got) = a.lookup_rcu(&g, 1, put) {
                        // lookup_rcu asserted (under loom) that the folio was A's index 1
                        // when it validated; our pin has kept it from being reused since,
                        // though the truncation may have removed it meanwhile.
                        assert!(core::ptr::eq(got, &*f));
                        let m = got.mapping();
                        assert!(m == a.addr() || m == 0, "returned a folio reused for another file");
                        assert_eq!(got.index(), 1, "returned a folio reused for another index");
                        put(got);
                    }
                })
            };
            let removed = truncate_all(&a, &mut pool);
            assert_eq!(removed, Some(addr_of(&*f)));
            if f.counts.refcount.fetch_sub(1, Ordering::AcqRel) == 1 {
                // Freed; reuse the descriptor (TYPESAFE_BY_RCU) and the node.
                f.counts.refcount.store(1, Ordering::Release);
                let target = if reuse_in_b { &b } else { &a };
                target.writer().insert(&mut pool, &f, reuse_index).unwrap();
            }
            reader.join().unwrap();
        });
    }

    #[test]
    fn loom_pagecache_lookup_races_truncate_and_reuse_in_other_file() {
        lookup_races_truncate_and_reuse(true, 1);
    }

    #[test]
    fn loom_pagecache_lookup_races_truncate_and_reuse_at_other_index() {
        lookup_races_truncate_and_reuse(false, 2);
    }

    /// File A caches f at index 1 and g at index 64 (height 2). The writer deletes g, which
    /// frees g's leaf and shrinks the tree (freeing the old root), then reuses the old root
    /// for file B with a folio h in slot 0. A reader of A's index 1 — which stays cached the
    /// whole time — must always find f: never nothing, never h.
    #[test]
    fn loom_pagecache_lookup_never_misses_while_tree_shrinks() {
        loom::model(|| {
            let rcu = Arc::new(Rcu::new(2));
            let nodes = Arc::new([Node::new(), Node::new(), Node::new()]);
            let a = Arc::new(AddressSpace::new());
            let b = AddressSpace::new();
            let f = Arc::new(folio(0, 1));
            let (g, h) = (folio(0, 1), folio(0, 1));
            let mut pool = Pool::new(&nodes[..]);
            a.writer().insert(&mut pool, &f, 1).unwrap();
            a.writer().insert(&mut pool, &g, 64).unwrap();
            assert_eq!(a.height(), 2);
            let reader = {
                let (rcu, a, f) = (rcu.clone(), a.clone(), f.clone());
                loom::thread::spawn(move || {
                    let cpu = rcu.cpus().claim(1).unwrap();
                    let guard = rcu.read_lock(&cpu);
                    let got = a.lookup_rcu(&guard, 1, put).expect("index 1 stays cached");
                    assert!(core::ptr::eq(got, &*f), "found another folio");
                    put(got);
                })
            };
            {
                let mut w = a.writer();
                w.remove(&mut pool, &g);
            }
            assert_eq!(a.height(), 1);
            b.writer().insert(&mut pool, &h, 0).unwrap();
            reader.join().unwrap();
        });
    }
}
