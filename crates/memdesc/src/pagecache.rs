//! The page cache: one [`AddressSpace`] per file maps file indices (in pages) to file folios,
//! with **lockless lookup under RCU** and writers serialised by the address space's lock.
//!
//! # The tree
//!
//! A radix tree of 64-way [`Node`]s (`slots: [AtomicUsize; 64]`). The root word packs the root
//! node's address with the tree's height (1..=11 levels; 11 × 6 bits cover every `u64` index);
//! the tree grows a level at a time when an index or a folio does not fit, and shrinks again
//! when removals leave the root with only its first slot in use. A slot holds `0` (nothing
//! cached there), a child node's address with bit 0 set, or a folio descriptor's address
//! (16-byte aligned, low bits clear). Readers never read anything of a node but its slots;
//! a node's one other word (`meta`: the writer's count of used slots, a preallocation link, or
//! the slab's free pointer while free) is writer-only.
//!
//! Nodes come from their own `TYPESAFE_BY_RCU` slab cache and are freed only when empty, so
//! a node that is free or reused still reads as a node whose slots hold only entries a tree
//! stored: never a stale pointer into anything that is not a node or a folio descriptor.
//! The address-space objects come from a plain slab cache (nothing reads them locklessly).
//!
//! # Large folios
//!
//! A folio of order `o` sits at tree level `o / 6` (where one slot covers `64^level` indices)
//! and occupies the `2^(o % 6)` consecutive slots there that its range covers, each holding the
//! folio's own address: an order-2 folio fills 4 leaf slots, an order-9 folio 8 slots of a
//! level-1 node and no leaf node at all. Its index must be aligned to its size. A lookup stops
//! at the first folio entry on its path, so every covered index finds the folio in one walk.
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
//! # Truncation
//!
//! [`AddressSpaceRef::truncate`] removes every folio overlapping an index range. A large folio
//! that straddles a boundary of the range is **split** with [`PhysMem::folio_split`] into the
//! largest pieces whose boundaries fall on the range's boundaries, when the cache's reference
//! is its only one (frozen to 0 for the split, as Linux freezes a folio's refcount), it is not
//! mapped, and the new descriptors and nodes can be allocated; the pieces outside the range
//! stay cached and the ones inside are removed. Otherwise the folio is removed **whole**, and
//! the pages outside the range it drops are reported in [`TruncateStats::dropped_outside`]
//! (dropping clean cache is always allowed). A 2 MiB folio of a two-level region splits too:
//! `folio_split` gives its area a table page from elsewhere.
//!
//! This module touches its tree nodes and address spaces, and the `mapping`/`index` fields of
//! the file folios it caches (only under an address space's lock).

use core::ops::{Bound, RangeBounds};
use core::ptr::NonNull;

use crate::addr::Pfn;
use crate::cpu::Cpu;
use crate::desc::Folio;
use crate::fault::FaultSite;
use crate::folio::{FolioError, FolioRef};
use crate::page_alloc::AllocError;
use crate::platform::Platform;
use crate::rcu::RcuGuard;
use crate::slab::{CacheArgs, SlabCache};
use crate::sync::{fence, spin_hint, AtomicU64, AtomicUsize, Ordering, SpinGuard, SpinLock};
use crate::word::PageKind;
use crate::PhysMem;

/// Index bits consumed per tree level.
const BITS: u32 = 6;
/// Slots per node.
pub const FANOUT: usize = 1 << BITS;
/// Most levels a tree has: 11 × 6 bits cover every `u64` index.
pub const MAX_HEIGHT: u32 = 11;
/// Lockless attempts before a lookup takes the address space's lock.
pub const LOCKLESS_TRIES: u32 = 8;
/// Bit 0 of a slot marks a child node.
const NODE_TAG: usize = 1;
/// Low bits of the root word hold the height; of a slot, the tag.
const LOW_MASK: usize = 0xF;
/// Folios removed per hold of the lock during truncation.
const TRUNCATE_BATCH: usize = 16;

/// A 64-way radix-tree node.
#[repr(C, align(16))]
pub struct Node {
    /// `0`, a child node's address | [`NODE_TAG`], or a folio descriptor's address.
    slots: [AtomicUsize; FANOUT],
    /// Writer-only: used slots while in a tree; the next node while preallocated; the slab's
    /// free pointer while free. Readers never read it.
    meta: AtomicUsize,
}

#[cfg(not(loom))]
const _: () = assert!(core::mem::size_of::<Node>() == 528 && core::mem::align_of::<Node>() == 16);

impl Node {
    /// An empty node outside slab memory (tests and models).
    #[cfg(test)]
    pub(crate) fn new() -> Self {
        Node { slots: core::array::from_fn(|_| AtomicUsize::new(0)), meta: AtomicUsize::new(0) }
    }

    fn is_empty(&self) -> bool {
        self.slots.iter().all(|s| s.load(Ordering::Relaxed) == 0)
    }
}

/// Where tree nodes come from and go back to.
pub(crate) trait NodeAlloc {
    /// A node whose slots are all empty (its `meta` is garbage).
    fn alloc_node(&mut self) -> Result<NonNull<Node>, AllocError>;
    /// Returns an empty node that no tree links to any more (lockless readers may still be
    /// reading it).
    fn free_node(&mut self, node: &Node);
}

/// A node reference from an address.
///
/// # Safety
/// `addr` is the address of a [`Node`] that stays a `Node` for `'a`: one linked into a tree
/// whose lock the caller holds, one the caller allocated and has not freed, or one whose
/// address the caller loaded from a tree under an RCU read guard that lives for `'a` (node
/// memory is `TYPESAFE_BY_RCU`, so it stays a `Node` until a grace period after it is freed).
#[inline]
unsafe fn node_ref<'a>(addr: usize) -> &'a Node {
    // SAFETY: the caller's promise.
    unsafe { &*(addr as *const Node) }
}

/// A folio reference from a slot entry.
///
/// # Safety
/// `addr` was loaded from a folio slot of a tree, either under the tree's lock (the folio is
/// cached, so the cache's reference keeps it alive) or under an RCU read guard that lives for
/// `'a` (folio descriptors are `TYPESAFE_BY_RCU`), or the caller holds a reference to it.
#[inline]
unsafe fn folio_ref<'a>(addr: usize) -> &'a Folio {
    // SAFETY: the caller's promise.
    unsafe { &*(addr as *const Folio) }
}

#[inline]
fn addr_of<T>(r: &T) -> usize {
    r as *const T as usize
}

/// Smallest height (≥ 1) whose tree covers `index`.
#[inline]
fn height_for(index: u64) -> u32 {
    (64 - index.leading_zeros()).div_ceil(BITS).max(1)
}

/// The slot `index` uses in a node at `level`.
#[inline]
fn slot_of(index: u64, level: u32) -> usize {
    ((index >> (BITS * level)) & (FANOUT as u64 - 1)) as usize
}

/// Why a page-cache operation was refused. Nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageCacheError {
    /// The descriptor is not a live file folio (its page word does not name it as one).
    NotFileFolio,
    /// The folio is already in a page cache (this one or another).
    AlreadyCached {
        /// Address of the address space that holds it.
        mapping: usize,
    },
    /// The index is not a multiple of the folio's size.
    Misaligned {
        /// The index asked for.
        index: u64,
        /// The folio's order.
        order: u32,
    },
    /// Part of the folio's range is already cached.
    Occupied {
        /// The first index of the range that is cached.
        index: u64,
    },
    /// The folio is not in this address space.
    NotCached,
    /// Memory for tree nodes could not be allocated.
    NoMemory(AllocError),
    /// The folio could not be split: it has references besides the cache's, is mapped, or
    /// memory for the split ran out.
    Busy,
    /// The folio left the cache, but dropping the cache's reference was refused (for
    /// example: it was the last one and the folio is still mapped); the caller now owns that
    /// reference.
    Put(FolioError),
}

impl core::fmt::Display for PageCacheError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PageCacheError::NotFileFolio => write!(f, "not a live file folio"),
            PageCacheError::AlreadyCached { mapping } => {
                write!(f, "folio already cached by address space {mapping:#x}")
            }
            PageCacheError::Misaligned { index, order } => {
                write!(f, "index {index} is not aligned to the folio's order {order}")
            }
            PageCacheError::Occupied { index } => write!(f, "index {index} is already cached"),
            PageCacheError::NotCached => write!(f, "the folio is not in this address space"),
            PageCacheError::NoMemory(e) => write!(f, "{e}"),
            PageCacheError::Busy => write!(f, "the folio is busy (referenced, mapped) and cannot be split"),
            PageCacheError::Put(e) => write!(f, "folio removed but its reference could not be dropped: {e}"),
        }
    }
}

impl core::error::Error for PageCacheError {}

/// A broken tree invariant found by [`AddressSpaceRef::verify`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageCacheViolation {
    /// What is wrong.
    pub what: &'static str,
    /// The first index of the slot where it was found.
    pub index: u64,
}

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

/// One file's page cache: index → file folio.
///
/// Lives in slab memory at a fixed address (folios' `mapping` field holds it); reached
/// through an [`AddressSpaceRef`]. It does *not* keep folios on the LRU or track dirtiness.
pub struct AddressSpace {
    lock: SpinLock<()>,
    /// Root node address | height, or 0 when empty.
    root: AtomicUsize,
    /// Removal sequence: odd while a writer takes something out of the tree.
    seq: AtomicU64,
    nr_pages: AtomicU64,
    nr_folios: AtomicU64,
    slow_lookups: AtomicU64,
    /// The file VMAs mapping this file (`i_mmap`), for the rmap walk of its folios.
    #[cfg(feature = "pgtable")]
    pub(crate) i_mmap: crate::pgtable::RmapList,
}

impl AddressSpace {
    /// An empty address space.
    pub(crate) fn new() -> Self {
        AddressSpace {
            lock: SpinLock::new(()),
            root: AtomicUsize::new(0),
            seq: AtomicU64::new(0),
            nr_pages: AtomicU64::new(0),
            nr_folios: AtomicU64::new(0),
            slow_lookups: AtomicU64::new(0),
            #[cfg(feature = "pgtable")]
            i_mmap: crate::pgtable::RmapList::new(),
        }
    }

    /// The address folios' `mapping` field holds while cached here.
    #[inline]
    pub fn addr(&self) -> usize {
        addr_of(self)
    }

    /// Pages cached.
    pub fn nr_pages(&self) -> u64 {
        self.nr_pages.load(Ordering::Relaxed)
    }

    /// Folios cached.
    pub fn nr_folios(&self) -> u64 {
        self.nr_folios.load(Ordering::Relaxed)
    }

    /// Tree height (0 when empty).
    pub fn height(&self) -> u32 {
        (self.root.load(Ordering::Acquire) & LOW_MASK) as u32
    }

    /// Lookups that fell back to the lock after [`LOCKLESS_TRIES`] lockless attempts.
    pub fn slow_lookups(&self) -> u64 {
        self.slow_lookups.load(Ordering::Relaxed)
    }

    /// Whether `f`, pinned, is cached here at a range covering `index`.
    #[inline]
    fn covers(&self, f: &Folio, index: u64) -> bool {
        f.mapping() == self.addr() && index.wrapping_sub(f.index()) < 1u64 << f.flags.order()
    }

    /// Walks to the entry for `index`: `Ok(0)` for nothing, `Ok(folio address)`, or `Err` if
    /// the walk met something no consistent tree holds (a reused node; only without the lock).
    ///
    /// The caller holds the lock or an RCU read guard for as long as it uses the result.
    fn walk(&self, index: u64) -> Result<usize, ()> {
        let r = self.root.load(Ordering::Acquire);
        if r == 0 {
            return Ok(0);
        }
        let h = (r & LOW_MASK) as u32;
        if h == 0 || h > MAX_HEIGHT {
            return Err(());
        }
        if height_for(index) > h {
            return Ok(0);
        }
        let (mut node_addr, mut level) = (r & !LOW_MASK, h - 1);
        loop {
            // SAFETY: node_addr came from the root word or a node entry, which only ever hold
            // nodes of the TYPESAFE_BY_RCU node cache (or a model's pool that never frees); the
            // caller holds the lock or an RCU read guard (node_ref's conditions).
            let node = unsafe { node_ref(node_addr) };
            let e = node.slots[slot_of(index, level)].load(Ordering::Acquire);
            if e == 0 || e & NODE_TAG == 0 {
                return Ok(e);
            }
            if level == 0 {
                return Err(());
            }
            node_addr = e & !LOW_MASK;
            level -= 1;
        }
    }

    /// The lockless lookup (see the module docs): returns the folio cached at `index` with a
    /// reference taken for the caller. `put` drops a reference the reader took on a folio that
    /// failed revalidation, running the folio's free path if it was the last.
    pub(crate) fn lookup_rcu<'a>(
        &self,
        _guard: &RcuGuard<'_>,
        index: u64,
        mut put: impl FnMut(&'a Folio),
    ) -> Option<&'a Folio> {
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
                // SAFETY: a folio entry loaded under the caller's RCU guard (folio_ref).
                let f = unsafe { folio_ref::<'a>(e) };
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
    fn lookup_locked<'a>(&self, index: u64) -> Option<&'a Folio> {
        self.slow_lookups.fetch_add(1, Ordering::Relaxed);
        let _g = self.lock.lock();
        let e = self.walk(index).ok().filter(|&e| e != 0)?;
        // SAFETY: loaded under the lock: the folio is cached and the cache's reference keeps it
        // alive (folio_ref).
        let f = unsafe { folio_ref::<'a>(e) };
        f.counts.refcount.fetch_add(1, Ordering::AcqRel);
        Some(f)
    }

    /// Takes the lock for writing.
    pub(crate) fn writer(&self) -> Writer<'_> {
        Writer { s: self, _guard: self.lock.lock() }
    }
}

/// Nodes preallocated for one operation, linked through `meta`, so a tree change never fails
/// halfway.
struct Chain {
    head: usize,
}

impl Chain {
    fn alloc(be: &mut impl NodeAlloc, n: usize) -> Result<Chain, AllocError> {
        let mut c = Chain { head: 0 };
        for _ in 0..n {
            match be.alloc_node() {
                Ok(p) => {
                    // SAFETY: a node just allocated for us (node_ref).
                    let node = unsafe { node_ref(p.as_ptr() as usize) };
                    node.meta.store(c.head, Ordering::Relaxed);
                    c.head = p.as_ptr() as usize;
                }
                Err(e) => {
                    c.release(be);
                    return Err(e);
                }
            }
        }
        Ok(c)
    }

    /// The next preallocated node, its `meta` zeroed. The caller counted right.
    fn take<'a>(&mut self) -> &'a Node {
        assert!(self.head != 0, "page cache: fewer nodes preallocated than used");
        // SAFETY: chain members are nodes we allocated and have not freed or linked.
        let n = unsafe { node_ref::<'a>(self.head) };
        self.head = n.meta.load(Ordering::Relaxed);
        n.meta.store(0, Ordering::Relaxed);
        n
    }

    fn release(mut self, be: &mut impl NodeAlloc) {
        while self.head != 0 {
            let n = self.take();
            be.free_node(n);
        }
    }
}

/// Write access to an address space: holds its lock.
pub(crate) struct Writer<'a> {
    s: &'a AddressSpace,
    _guard: SpinGuard<'a, ()>,
}

impl<'a> Writer<'a> {
    fn root(&self) -> Option<(&'a Node, u32)> {
        let r = self.s.root.load(Ordering::Relaxed);
        // SAFETY: under the lock the root word names a live node of this tree (node_ref).
        (r != 0).then(|| (unsafe { node_ref::<'a>(r & !LOW_MASK) }, (r & LOW_MASK) as u32))
    }

    fn child(e: usize) -> &'a Node {
        debug_assert!(e & NODE_TAG != 0);
        // SAFETY: a node entry of this tree read under its lock (node_ref).
        unsafe { node_ref::<'a>(e & !LOW_MASK) }
    }

    fn seq_begin(&self) {
        let s = self.s.seq.load(Ordering::Relaxed);
        debug_assert!(s & 1 == 0);
        self.s.seq.store(s + 1, Ordering::Relaxed);
        // Any reader that sees a store after this fence and then fences sees the odd value.
        fence(Ordering::Release);
    }

    fn seq_end(&self) {
        let s = self.s.seq.load(Ordering::Relaxed);
        self.s.seq.store(s + 1, Ordering::Release);
    }

    /// Adds to the counters (two's-complement deltas: pass `x.wrapping_neg()` to subtract).
    fn account(&self, pages: u64, folios: u64) {
        let p = self.s.nr_pages.load(Ordering::Relaxed);
        self.s.nr_pages.store(p.wrapping_add(pages), Ordering::Relaxed);
        let f = self.s.nr_folios.load(Ordering::Relaxed);
        self.s.nr_folios.store(f.wrapping_add(folios), Ordering::Relaxed);
    }

    /// Whether `f` is cached in this address space (at its own index).
    pub(crate) fn contains(&self, f: &Folio) -> bool {
        f.mapping.load(Ordering::Acquire) == self.s.addr() && self.s.walk(f.index()) == Ok(addr_of(f))
    }

    /// The first cached folio that overlaps `[first, last]`.
    pub(crate) fn find_next(&self, first: u64, last: u64) -> Option<&'a Folio> {
        let (root, h) = self.root()?;
        if first > last {
            return None;
        }
        Self::next_in(root, h - 1, 0, first, last)
    }

    fn next_in(node: &'a Node, level: u32, base: u128, first: u64, last: u64) -> Option<&'a Folio> {
        let shift = BITS * level;
        let start = ((first as u128).saturating_sub(base) >> shift).min(FANOUT as u128) as usize;
        for s in start..FANOUT {
            let lo = base + ((s as u128) << shift);
            if lo > last as u128 {
                break;
            }
            let e = node.slots[s].load(Ordering::Relaxed);
            if e == 0 {
                continue;
            }
            if e & NODE_TAG == 0 {
                // SAFETY: a folio entry read under the lock (folio_ref).
                return Some(unsafe { folio_ref::<'a>(e) });
            }
            if level == 0 {
                continue;
            }
            let lo64 = lo as u64; // lo <= last, so it fits
            if let Some(f) = Self::next_in(Self::child(e), level - 1, lo, first.max(lo64), last) {
                return Some(f);
            }
        }
        None
    }

    /// How tall the tree must be to hold a folio at `index` at tree `level`, and how many new
    /// nodes that takes (new root levels plus missing nodes on the path). The range is free.
    fn nodes_needed(&self, index: u64, level: u32) -> (u32, usize) {
        let need_h = height_for(index).max(level + 1);
        let Some((root, h)) = self.root() else { return (need_h, (need_h - level) as usize) };
        let height = h.max(need_h);
        let count = (height - h) as usize;
        let mut l = height - 1;
        // New root levels: their slot 0 leads down to the old root.
        while l >= h {
            if l == level {
                return (height, count);
            }
            if slot_of(index, l) != 0 {
                return (height, count + (l - level) as usize);
            }
            l -= 1;
        }
        let mut node = root;
        loop {
            if l == level {
                return (height, count);
            }
            let e = node.slots[slot_of(index, l)].load(Ordering::Relaxed);
            if e == 0 || e & NODE_TAG == 0 {
                return (height, count + (l - level) as usize);
            }
            node = Self::child(e);
            l -= 1;
        }
    }

    /// Adds root levels until the tree is `height` tall (or creates the root).
    fn grow(&mut self, height: u32, chain: &mut Chain) {
        match self.root() {
            None => {
                let n = chain.take();
                self.s.root.store(addr_of(n) | height as usize, Ordering::Release);
            }
            Some((mut top, mut h)) => {
                while h < height {
                    let n = chain.take();
                    n.slots[0].store(addr_of(top) | NODE_TAG, Ordering::Relaxed);
                    n.meta.store(1, Ordering::Relaxed);
                    h += 1;
                    self.s.root.store(addr_of(n) | h as usize, Ordering::Release);
                    top = n;
                }
            }
        }
    }

    /// Stores `entry` in every slot a folio of `order` at `index` covers, creating missing
    /// nodes from `chain`. The tree is tall enough and the slots are empty.
    fn insert_entry(&mut self, entry: usize, index: u64, order: u32, chain: &mut Chain) {
        let (level, n) = (order / BITS, 1usize << (order % BITS));
        let Some((mut node, h)) = self.root() else {
            debug_assert!(false, "insert_entry into an empty tree");
            return;
        };
        let mut l = h - 1;
        while l > level {
            let s = slot_of(index, l);
            let e = node.slots[s].load(Ordering::Relaxed);
            node = if e == 0 {
                let c = chain.take();
                node.slots[s].store(addr_of(c) | NODE_TAG, Ordering::Release);
                node.meta.fetch_add(1, Ordering::Relaxed);
                c
            } else {
                Self::child(e)
            };
            l -= 1;
        }
        let s = slot_of(index, level);
        for slot in &node.slots[s..s + n] {
            debug_assert_eq!(slot.load(Ordering::Relaxed), 0);
            slot.store(entry, Ordering::Release);
        }
        node.meta.fetch_add(n, Ordering::Relaxed);
    }

    /// Inserts `f` (whose cache reference the caller has taken) at `index`.
    pub(crate) fn insert(&mut self, be: &mut impl NodeAlloc, f: &Folio, index: u64) -> Result<(), PageCacheError> {
        let order = f.flags.order();
        let span = 1u64 << order;
        if index & (span - 1) != 0 {
            return Err(PageCacheError::Misaligned { index, order });
        }
        let mapping = f.mapping.load(Ordering::Acquire);
        if mapping != 0 {
            return Err(PageCacheError::AlreadyCached { mapping });
        }
        if let Some(g) = self.find_next(index, index + (span - 1)) {
            return Err(PageCacheError::Occupied { index: g.index().max(index) });
        }
        let level = order / BITS;
        let (height, need) = self.nodes_needed(index, level);
        let mut chain = Chain::alloc(be, need).map_err(PageCacheError::NoMemory)?;
        if let Err(mapping) = f.mapping.compare_exchange(0, self.s.addr(), Ordering::AcqRel, Ordering::Acquire) {
            chain.release(be);
            return Err(PageCacheError::AlreadyCached { mapping });
        }
        // Published to readers by the release stores of the slots.
        f.index.store(index, Ordering::Relaxed);
        self.grow(height, &mut chain);
        self.insert_entry(addr_of(f), index, order, &mut chain);
        debug_assert!(chain.head == 0, "page cache: preallocated more nodes than used");
        chain.release(be);
        self.account(span, 1);
        Ok(())
    }

    /// Empties the slots of a folio of `order` at `index` (inside a write section). Frees
    /// nothing.
    fn clear_entries(&mut self, index: u64, order: u32, expect: usize) {
        let (level, n) = (order / BITS, 1usize << (order % BITS));
        let Some((mut node, h)) = self.root() else { return };
        let mut l = h - 1;
        while l > level {
            let e = node.slots[slot_of(index, l)].load(Ordering::Relaxed);
            if e & NODE_TAG == 0 {
                debug_assert!(false, "clear_entries: no node on the path");
                return;
            }
            node = Self::child(e);
            l -= 1;
        }
        let s = slot_of(index, level);
        for slot in &node.slots[s..s + n] {
            debug_assert_eq!(slot.load(Ordering::Relaxed), expect);
            slot.store(0, Ordering::Release);
        }
        node.meta.fetch_sub(n, Ordering::Relaxed);
    }

    /// Frees the empty nodes on `index`'s path below the root, then an empty root, then
    /// shrinks the tree (inside a write section).
    fn prune(&mut self, be: &mut impl NodeAlloc, index: u64, level: u32) {
        let Some((root, h)) = self.root() else { return };
        let mut path = [0usize; MAX_HEIGHT as usize];
        let mut l = h - 1;
        path[l as usize] = addr_of(root);
        let mut node = root;
        while l > level {
            let e = node.slots[slot_of(index, l)].load(Ordering::Relaxed);
            if e & NODE_TAG == 0 {
                break;
            }
            node = Self::child(e);
            l -= 1;
            path[l as usize] = addr_of(node);
        }
        while l < h - 1 {
            // SAFETY: path holds nodes of this tree, read under the lock (node_ref).
            let n = unsafe { node_ref::<'a>(path[l as usize]) };
            if n.meta.load(Ordering::Relaxed) != 0 {
                break;
            }
            // SAFETY: as above.
            let parent = unsafe { node_ref::<'a>(path[l as usize + 1]) };
            parent.slots[slot_of(index, l + 1)].store(0, Ordering::Release);
            parent.meta.fetch_sub(1, Ordering::Relaxed);
            be.free_node(n);
            l += 1;
        }
        if root.meta.load(Ordering::Relaxed) == 0 {
            self.s.root.store(0, Ordering::Release);
            be.free_node(root);
            return;
        }
        self.shrink(be);
    }

    /// While the root's only entry is a child node in slot 0, makes that child the root.
    fn shrink(&mut self, be: &mut impl NodeAlloc) {
        while let Some((root, h)) = self.root() {
            if h <= 1 || root.meta.load(Ordering::Relaxed) != 1 {
                return;
            }
            let e = root.slots[0].load(Ordering::Relaxed);
            if e & NODE_TAG == 0 {
                return;
            }
            self.s.root.store((e & !LOW_MASK) | (h - 1) as usize, Ordering::Release);
            root.slots[0].store(0, Ordering::Relaxed);
            root.meta.store(0, Ordering::Relaxed);
            be.free_node(root);
        }
    }

    /// Removes `f`, which [`Writer::contains`], from the tree; its cache reference is now the
    /// caller's to drop.
    pub(crate) fn remove(&mut self, be: &mut impl NodeAlloc, f: &Folio) {
        let (index, order) = (f.index.load(Ordering::Relaxed), f.flags.order());
        self.seq_begin();
        self.clear_entries(index, order, addr_of(f));
        f.mapping.store(0, Ordering::Release);
        self.prune(be, index, order / BITS);
        self.seq_end();
        self.account((1u64 << order).wrapping_neg(), 1u64.wrapping_neg());
    }

    /// Calls `cb(index, folio)` for every cached folio in index order.
    pub(crate) fn for_each(&self, mut cb: impl FnMut(u64, &Folio)) {
        fn visit(node: &Node, level: u32, base: u128, cb: &mut dyn FnMut(u64, &Folio)) {
            for (s, slot) in node.slots.iter().enumerate() {
                let lo = base + ((s as u128) << (BITS * level));
                let e = slot.load(Ordering::Relaxed);
                if e == 0 {
                    continue;
                }
                if e & NODE_TAG != 0 {
                    if level > 0 {
                        // SAFETY: a node entry read under the lock (node_ref).
                        visit(unsafe { node_ref(e & !LOW_MASK) }, level - 1, lo, cb);
                    }
                    continue;
                }
                // SAFETY: a folio entry read under the lock (folio_ref).
                let f = unsafe { folio_ref(e) };
                if f.index() as u128 == lo {
                    cb(lo as u64, f);
                }
            }
        }
        if let Some((root, h)) = self.root() {
            visit(root, h - 1, 0, &mut cb);
        }
    }

    /// Checks every tree invariant and the counters.
    pub(crate) fn verify(&self) -> Result<(), PageCacheViolation> {
        fn bad(what: &'static str, index: u128) -> PageCacheViolation {
            PageCacheViolation { what, index: index.min(u64::MAX as u128) as u64 }
        }
        fn visit(
            me: usize,
            node: &Node,
            level: u32,
            base: u128,
            acc: &mut (u64, u64),
        ) -> Result<(), PageCacheViolation> {
            let mut used = 0;
            for (s, slot) in node.slots.iter().enumerate() {
                let lo = base + ((s as u128) << (BITS * level));
                let e = slot.load(Ordering::Relaxed);
                if e == 0 {
                    continue;
                }
                used += 1;
                if lo > u64::MAX as u128 {
                    return Err(bad("entry beyond the index space", lo));
                }
                if e & NODE_TAG != 0 {
                    if level == 0 {
                        return Err(bad("node entry in a leaf", lo));
                    }
                    // SAFETY: a node entry read under the lock (node_ref).
                    let child = unsafe { node_ref(e & !LOW_MASK) };
                    if child.meta.load(Ordering::Relaxed) == 0 {
                        return Err(bad("empty node in the tree", lo));
                    }
                    visit(me, child, level - 1, lo, acc)?;
                    continue;
                }
                // SAFETY: a folio entry read under the lock (folio_ref).
                let f = unsafe { folio_ref(e) };
                let order = f.flags.order();
                if order / BITS != level {
                    return Err(bad("folio at the wrong level for its order", lo));
                }
                if f.mapping() != me {
                    return Err(bad("folio's mapping is not this address space", lo));
                }
                if f.counts.refcount() == 0 {
                    return Err(bad("cached folio with no references", lo));
                }
                let fi = f.index() as u128;
                if lo < fi || lo >= fi + (1u128 << order) {
                    return Err(bad("folio's index does not cover its slot", lo));
                }
                if lo == fi {
                    let n = 1usize << (order % BITS);
                    if s + n > FANOUT || node.slots[s..s + n].iter().any(|x| x.load(Ordering::Relaxed) != e) {
                        return Err(bad("large folio missing from a covered slot", lo));
                    }
                    acc.0 += 1 << order;
                    acc.1 += 1;
                }
            }
            if node.meta.load(Ordering::Relaxed) != used {
                return Err(bad("node's used-slot count is wrong", base));
            }
            Ok(())
        }
        let mut acc = (0, 0);
        if let Some((root, h)) = self.root() {
            if h == 0 || h > MAX_HEIGHT {
                return Err(bad("bad height", 0));
            }
            if root.meta.load(Ordering::Relaxed) == 0 {
                return Err(bad("empty root", 0));
            }
            let e0 = root.slots[0].load(Ordering::Relaxed);
            if h > 1 && root.meta.load(Ordering::Relaxed) == 1 && e0 & NODE_TAG != 0 {
                return Err(bad("root could shrink", 0));
            }
            visit(self.s.addr(), root, h - 1, 0, &mut acc)?;
        }
        if acc != (self.s.nr_pages(), self.s.nr_folios()) {
            return Err(bad("page or folio count is wrong", 0));
        }
        Ok(())
    }
}

/// The slab caches of the page cache: tree nodes (TYPESAFE_BY_RCU) and address spaces.
pub(crate) struct Caches {
    nodes: Option<NonNull<SlabCache>>,
    spaces: Option<NonNull<SlabCache>>,
}

impl Caches {
    /// Before boot creates them.
    pub(crate) const NONE: Caches = Caches { nodes: None, spaces: None };
}

/// Tree nodes from the machine's node cache.
struct SlabNodes<'a, 'c, P: Platform> {
    m: &'a PhysMem<P>,
    cpu: &'a Cpu<'c>,
}

impl<P: Platform> NodeAlloc for SlabNodes<'_, '_, P> {
    fn alloc_node(&mut self) -> Result<NonNull<Node>, AllocError> {
        let p = self
            .m
            .slabs()
            .cache_alloc_at(self.cpu, self.m.pagecache_cache(false), FaultSite::PageCacheNode)?
            .cast::<Node>();
        // SAFETY: objects of the node cache are zero (TYPESAFE_BY_RCU slab pages are zeroed)
        // or former nodes, which are freed empty; both are valid, 16-aligned Nodes.
        debug_assert!(unsafe { p.as_ref() }.is_empty(), "a node came back from the cache non-empty");
        Ok(p)
    }

    fn free_node(&mut self, node: &Node) {
        debug_assert!(node.is_empty(), "freeing a non-empty node");
        let r = self.m.slabs().cache_free(self.cpu, self.m.pagecache_cache(false), NonNull::from(node).cast());
        debug_assert!(r.is_ok(), "node free: {r:?}");
    }
}

/// Pieces of a split folio that truncation removed: `count` folios of `order` from `pfn`.
#[derive(Clone, Copy)]
enum Removed {
    Folio(usize),
    Pieces { pfn: Pfn, count: u64, order: u32 },
}

/// A handle to one address space of a machine: insert, look up, delete, truncate.
///
/// Not `Clone`: [`AddressSpaceRef::destroy`] consumes it. Dropping it without destroying
/// leaks the address space and the cache's references to its folios, like a leaked inode.
pub struct AddressSpaceRef<'m, P: Platform> {
    mem: &'m PhysMem<P>,
    space: &'m AddressSpace,
}

impl<P: Platform> PhysMem<P> {
    /// Creates the page cache's slab caches (at boot).
    pub(crate) fn create_pagecache_caches(&self) -> Result<Caches, AllocError> {
        let cpu = self.cpus().claim_any().ok_or(AllocError::NoMemory { order: 0 })?;
        let nodes = self.slabs().new_cache(
            &cpu,
            &CacheArgs {
                align: 16,
                typesafe_by_rcu: true,
                freeptr_offset: Some(core::mem::offset_of!(Node, meta)),
                ..CacheArgs::new("radix_tree_node", core::mem::size_of::<Node>())
            },
        )?;
        let spaces = self.slabs().new_cache(
            &cpu,
            &CacheArgs { align: 16, ..CacheArgs::new("address_space", core::mem::size_of::<AddressSpace>()) },
        )?;
        Ok(Caches { nodes: Some(NonNull::from(nodes)), spaces: Some(NonNull::from(spaces)) })
    }

    fn pagecache_cache(&self, spaces: bool) -> &SlabCache {
        let c = if spaces { self.folio_state().pagecache.spaces } else { self.folio_state().pagecache.nodes };
        // SAFETY: created at boot, never destroyed.
        unsafe { c.expect("page-cache caches exist after boot").as_ref() }
    }

    /// Creates an empty address space (one file's page cache).
    pub fn address_space_create(&self, cpu: &Cpu<'_>) -> Result<AddressSpaceRef<'_, P>, AllocError> {
        let p = self.slabs().cache_alloc(cpu, self.pagecache_cache(true))?.cast::<AddressSpace>();
        // SAFETY: a fresh object of the address-space cache, sized and aligned for one and
        // owned by us (the cache is not TYPESAFE_BY_RCU: nobody else reads it).
        unsafe { p.as_ptr().write(AddressSpace::new()) };
        // SAFETY: just initialised; lives until destroy frees it.
        Ok(AddressSpaceRef { mem: self, space: unsafe { p.as_ref() } })
    }

    /// The file folio whose first page is `pfn` (a piece of a split we own).
    fn file_folio_at(&self, pfn: Pfn) -> Option<&Folio> {
        match self.memmap().load(self.platform(), pfn)?.word.kind() {
            // SAFETY: the word names a live file folio that the caller holds a reference to.
            PageKind::FileFolio(d) => Some(unsafe { folio_ref(d.addr()) }),
            _ => None,
        }
    }
}

impl<P: Platform> PhysMem<P> {
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
    pub(crate) fn pagecache_take_page<'a>(
        &'a self,
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
        let mapping = f.mapping();
        if mapping == 0 {
            unpin();
            return Err(PageCacheError::NotCached);
        }
        // SAFETY: a cached folio's mapping names its live address space (slab memory that
        // lives until destroy, which the caller does not run concurrently).
        let space = unsafe { &*(mapping as *const AddressSpace) };
        let me = AddressSpaceRef { mem: self, space };
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
        let mut be = me.nodes(cpu);
        if f.flags.order() == 0 {
            w.remove(&mut be, f);
            return Ok((f, false));
        }
        let idx = f.index() + (pfn.0 - f.flags.pfn().0);
        match me.split_for_truncate(cpu, &mut w, &mut be, f, idx, idx) {
            Some(Removed::Pieces { pfn: p, .. }) => {
                let piece = self.file_folio_at(p).ok_or(PageCacheError::NotFileFolio)?;
                Ok((piece, true))
            }
            _ => Err(PageCacheError::Busy),
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

impl<P: Platform> PhysMem<P> {
    /// Locks the address space caching `f` if `f` is cached; `Err(())` if `f` has a mapping
    /// but is not (or no longer) cached there, `Ok(None)` if it has no mapping. The caller must
    /// not destroy that address space concurrently.
    #[cfg(feature = "health")]
    pub(crate) fn pagecache_lock_of<'a>(&self, f: &'a Folio) -> Result<Option<MappingLock<'a>>, ()> {
        let mapping = f.mapping();
        if mapping == 0 {
            return Ok(None);
        }
        // SAFETY: a cached folio's mapping names its live address space (slab memory that
        // lives until destroy, which the caller does not run concurrently).
        let space: &'a AddressSpace = unsafe { &*(mapping as *const AddressSpace) };
        let w = space.writer();
        if !w.contains(f) {
            return Err(());
        }
        Ok(Some(MappingLock { _w: w }))
    }
}

impl<'m, P: Platform> AddressSpaceRef<'m, P> {
    /// The address space.
    pub fn space(&self) -> &'m AddressSpace {
        self.space
    }

    /// Pages cached.
    pub fn nr_pages(&self) -> u64 {
        self.space.nr_pages()
    }

    /// Folios cached.
    pub fn nr_folios(&self) -> u64 {
        self.space.nr_folios()
    }

    fn nodes<'a, 'c>(&'a self, cpu: &'a Cpu<'c>) -> SlabNodes<'a, 'c, P> {
        SlabNodes { m: self.mem, cpu }
    }

    /// Caches `folio` (a file folio the caller holds a reference to) at `index`, which must
    /// be a multiple of its size; a large folio occupies every index it covers. The cache
    /// takes its own reference. Fails, changing nothing, if any index of the range is cached.
    pub fn insert(&self, cpu: &Cpu<'_>, folio: &FolioRef<'_>, index: u64) -> Result<(), PageCacheError> {
        let folio: &Folio = folio;
        match self.mem.memmap().load(self.mem.platform(), folio.flags.pfn()).map(|v| v.word.kind()) {
            Some(PageKind::FileFolio(d)) if d.addr() == addr_of(folio) => {}
            _ => return Err(PageCacheError::NotFileFolio),
        }
        // The cache's reference, taken from the caller's.
        folio.counts.get_held();
        let r = self.space.writer().insert(&mut self.nodes(cpu), folio, index);
        if r.is_err() {
            // Drop the reference taken for the cache (the caller still holds theirs).
            let dropped = folio.counts.put_unless_last();
            debug_assert!(dropped, "the caller's reference remains");
        }
        r
    }

    /// The folio cached at `index`, with a reference taken for the caller (drop it with
    /// [`PhysMem::folio_put`]). Lockless: see the module docs. A folio frozen by a migration
    /// is waited out (the retry falls back to the locked lookup, which migration's hold of the
    /// address space's lock serialises with).
    pub fn lookup(&self, cpu: &Cpu<'_>, index: u64) -> Option<FolioRef<'m>> {
        let g = self.mem.rcu().read_lock(cpu);
        let f = self.space.lookup_rcu(&g, index, |f| {
            let r = self.mem.folio_put_raw(cpu, f);
            debug_assert!(r.is_ok(), "dropping a speculative reference: {r:?}");
        })?;
        // SAFETY: lookup_rcu took one reference for us on a folio cached here.
        Some(unsafe { FolioRef::from_raw(f) })
    }

    /// Removes `folio` from the cache, takes it off the LRU and drops the cache's reference.
    /// Returns whether that freed it.
    pub fn delete(&self, cpu: &Cpu<'_>, folio: &Folio) -> Result<bool, PageCacheError> {
        {
            let mut w = self.space.writer();
            if !w.contains(folio) {
                return Err(PageCacheError::NotCached);
            }
            w.remove(&mut self.nodes(cpu), folio);
        }
        self.mem.lru_del(folio);
        // The cache's reference, which we took out of the tree above.
        self.mem.folio_put_raw(cpu, folio).map_err(PageCacheError::Put)
    }

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
            let mut batch = [Removed::Folio(0); TRUNCATE_BATCH];
            let mut nb = 0;
            {
                let mut w = self.space.writer();
                let mut be = self.nodes(cpu);
                while nb < TRUNCATE_BATCH {
                    let Some(f) = w.find_next(from, last) else {
                        done = true;
                        break;
                    };
                    let (fi, order) = (f.index(), f.flags.order());
                    let fend = fi + ((1u64 << order) - 1);
                    let (a, b) = (fi.max(first), fend.min(last));
                    let straddles = fi < first || fend > last;
                    let pieces = if straddles { self.split_for_truncate(cpu, &mut w, &mut be, f, a, b) } else { None };
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
                    batch[nb] = pieces.unwrap_or(Removed::Folio(addr_of(f)));
                    nb += 1;
                    if fend >= last {
                        done = true;
                        break;
                    }
                    from = fend + 1;
                }
            }
            for r in &batch[..nb] {
                stats.unreleased += self.release(cpu, *r);
            }
        }
        stats
    }

    /// Drops the cache's references to removed folios; returns how many could not be dropped.
    fn release(&self, cpu: &Cpu<'_>, r: Removed) -> u64 {
        let put = |f: &Folio| {
            self.mem.lru_del(f);
            self.mem.folio_put_raw(cpu, f).is_err() as u64
        };
        match r {
            // SAFETY: removed from the tree with its cache reference, which we still hold.
            Removed::Folio(a) => put(unsafe { folio_ref(a) }),
            Removed::Pieces { pfn, count, order } => (0..count)
                .map(|k| match self.mem.file_folio_at(pfn.add(k << order)) {
                    Some(f) => put(f),
                    None => {
                        debug_assert!(false, "a split piece lost its word");
                        1
                    }
                })
                .sum(),
        }
    }

    /// Splits the straddling folio `f` so that `[a, b]` (inside it) is made of whole pieces,
    /// keeps the pieces outside cached and takes the inside ones out. `None` (nothing changed)
    /// if it cannot: other references, mapped, or no memory.
    fn split_for_truncate(
        &self,
        cpu: &Cpu<'_>,
        w: &mut Writer<'_>,
        be: &mut SlabNodes<'_, '_, P>,
        f: &Folio,
        a: u64,
        b: u64,
    ) -> Option<Removed> {
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
        if self.mem.folio_split_counts(cpu, f, Some(1), n, None, |_| ()).is_err() {
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
            let piece = self.mem.file_folio_at(pfn0.add(k << n)).expect("folio_split stamps every piece");
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

    /// Truncates everything and frees the address space.
    pub fn destroy(self, cpu: &Cpu<'_>) -> TruncateStats {
        #[cfg(feature = "pgtable")]
        debug_assert_eq!(self.space.i_mmap.nr_vmas(), 0, "file VMAs must go before their file");
        let stats = self.truncate(cpu, ..);
        debug_assert_eq!(self.space.root.load(Ordering::Relaxed), 0);
        let r = self.mem.slabs().cache_free(cpu, self.mem.pagecache_cache(true), NonNull::from(self.space).cast());
        debug_assert!(r.is_ok(), "address space free: {r:?}");
        stats
    }
}

#[cfg(test)]
mod test_support {
    use super::*;
    use crate::desc::{DescFlags, ListLinks, MapCounts};
    use crate::sync::AtomicU32;
    use std::vec::Vec;

    pub(super) fn folio(order: u32, refs: u32) -> Folio {
        let f = Folio {
            flags: DescFlags::zeroed(),
            counts: MapCounts { refcount: AtomicU32::new(refs), mapcount: AtomicU32::new(0) },
            lru: ListLinks { prev: AtomicUsize::new(0), next: AtomicUsize::new(0) },
            mapping: AtomicUsize::new(0),
            index: AtomicU64::new(0),
        };
        f.flags.init(0, order, Pfn(0));
        f
    }

    /// A node pool that reuses the last freed node first (immediate TYPESAFE reuse).
    #[cfg_attr(loom, allow(dead_code))]
    pub(super) struct Pool {
        pub(super) free: Vec<usize>,
        pub(super) live: usize,
    }

    impl Pool {
        pub(super) fn new(nodes: &[Node]) -> Pool {
            Pool { free: nodes.iter().rev().map(addr_of).collect(), live: 0 }
        }

        /// A pool of `n` leaked nodes.
        #[cfg(not(loom))]
        pub(super) fn boxed(n: usize) -> Pool {
            let nodes: &'static [Node] =
                std::boxed::Box::leak((0..n).map(|_| Node::new()).collect::<Vec<_>>().into_boxed_slice());
            Pool::new(nodes)
        }
    }

    impl NodeAlloc for Pool {
        fn alloc_node(&mut self) -> Result<NonNull<Node>, AllocError> {
            let a = self.free.pop().ok_or(AllocError::NoMemory { order: 0 })?;
            self.live += 1;
            Ok(NonNull::new(a as *mut Node).unwrap())
        }
        fn free_node(&mut self, node: &Node) {
            assert!(node.is_empty());
            self.live -= 1;
            self.free.push(addr_of(node));
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::test_support::*;
    use super::*;
    use crate::rcu::Rcu;
    use std::vec::Vec;

    #[test]
    fn heights_and_slots() {
        assert_eq!(height_for(0), 1);
        assert_eq!(height_for(63), 1);
        assert_eq!(height_for(64), 2);
        assert_eq!(height_for(u64::MAX), MAX_HEIGHT);
        assert_eq!(slot_of(u64::MAX, 10), 15);
    }

    #[test]
    fn tree_grows_shrinks_and_holds_large_folios() {
        let rcu = Rcu::new(1);
        let cpu = rcu.cpus().claim(0).unwrap();
        let s = AddressSpace::new();
        let mut pool = Pool::boxed(64);
        let folios: Vec<(Folio, u64)> = [(0, 5u64), (0, u64::MAX), (2, 8), (9, 1 << 20), (6, 64), (0, 1 << 40)]
            .map(|(o, i)| (folio(o, 1), i))
            .into();
        for (f, i) in &folios {
            s.writer().insert(&mut pool, f, *i).unwrap();
            s.writer().verify().unwrap();
        }
        assert_eq!(s.height(), MAX_HEIGHT);
        assert_eq!(s.nr_folios(), 6);
        let g = rcu.read_lock(&cpu);
        for (f, i) in &folios {
            for x in [*i, *i + ((1u64 << f.flags.order()) - 1)] {
                let got = s.lookup_rcu(&g, x, |_| panic!("no races here")).unwrap();
                assert!(core::ptr::eq(got, f), "index {x}");
                got.counts.refcount.fetch_sub(1, Ordering::Relaxed);
            }
        }
        assert!(s.lookup_rcu(&g, 12, |_| ()).is_none());
        assert!(s.lookup_rcu(&g, 4, |_| ()).is_none());
        drop(g);
        // Overlaps are refused precisely.
        let extra = folio(3, 1);
        assert_eq!(s.writer().insert(&mut pool, &extra, 8), Err(PageCacheError::Occupied { index: 8 }));
        assert_eq!(s.writer().insert(&mut pool, &extra, 3), Err(PageCacheError::Misaligned { index: 3, order: 3 }));
        assert_eq!(
            s.writer().insert(&mut pool, &folios[0].0, 100),
            Err(PageCacheError::AlreadyCached { mapping: s.addr() })
        );
        // Removing the far-away folios shrinks the tree back.
        for (f, _) in folios.iter().rev() {
            let mut w = s.writer();
            assert!(w.contains(f));
            w.remove(&mut pool, f);
            drop(w);
            s.writer().verify().unwrap();
            if core::ptr::eq(f, &folios[1].0) {
                assert_eq!(s.height(), 1, "only index 5 is left");
            }
        }
        assert_eq!(s.height(), 0);
        assert_eq!(pool.live, 0, "every node went back");
    }

    #[test]
    fn find_next_and_for_each_in_order() {
        let s = AddressSpace::new();
        let mut pool = Pool::boxed(64);
        let fs = [(folio(0, 1), 3u64), (folio(6, 1), 128), (folio(1, 1), 70), (folio(0, 1), 1 << 33)];
        for (f, i) in &fs {
            s.writer().insert(&mut pool, f, *i).unwrap();
        }
        let mut seen = Vec::new();
        s.writer().for_each(|i, _| seen.push(i));
        assert_eq!(seen, [3, 70, 128, 1 << 33]);
        let w = s.writer();
        assert!(core::ptr::eq(w.find_next(4, u64::MAX).unwrap(), &fs[2].0));
        assert!(core::ptr::eq(w.find_next(150, 150).unwrap(), &fs[1].0));
        assert!(w.find_next(192, (1 << 33) - 1).is_none());
        assert!(w.find_next(4, 69).is_none());
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::test_support::*;
    use super::*;
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
