//! Typed memory descriptors: the [`Descriptor`] trait, the typed pointer [`DescPtr`] a page
//! word decodes to, and the layouts of the descriptor kinds with the offsets the design fixes.
//!
//! Layout contract (checked by `const` assertions below):
//! - **flags first**: every flagged descriptor keeps its page flags in its first word, with the
//!   same bit positions ([`PG_LOCKED`], [`PG_DIRTY`], …), so generic operations work on any;
//! - **mappable kinds** ([`Folio`], [`MappableDesc`], [`VmallocDesc`], [`Netmem`]) keep
//!   refcount at offset 8 and mapcount at offset 12;
//! - anon and file folios are the same [`Folio`] type, so the LRU head is trivially at the same
//!   offset; the assertion still pins it (offset 16);
//! - every descriptor is 16-byte aligned (the word's tag lives in the low four bits).
//!
//! The order-0 folio is 48 bytes: with its 8-byte word, 56 bytes per page against Linux's 64.
//! It gets there by packing `pfn` (40 bits) and `order` (6 bits) into the flags word beside
//! 18 flag bits, by having no `private` (filesystems extend the descriptor instead), and by
//! keeping pincount out of the base descriptor.
//!
//! This module defines data only; the subsystems that allocate and mutate each kind own it.

use core::marker::PhantomData;
use core::ptr::NonNull;

#[cfg(feature = "zsmalloc")]
use crate::base::list::List;
use crate::base::list::{Linked, Links};
use crate::base::rcu::RcuGuard;
use crate::base::sync::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use crate::memmap::tag::Tag;

/// A type that page words may point to.
///
/// # Safety
/// Implementors promise:
/// 1. the type is 16-byte aligned (`align_of::<Self>() >= 16`);
/// 2. every field is safe to read while another CPU writes it (atomics or immutable data), so a
///    shared reference obtained under RCU never observes a data race;
/// 3. instances are only ever allocated from a `TYPESAFE_BY_RCU` descriptor cache of this
///    type, so memory a word pointed to stays an instance of `Self` until a grace period
///    after it was freed.
pub unsafe trait Descriptor: Sync + Sized {
    /// The tag a word pointing to this type carries by default.
    const TAG: Tag;
    /// Every tag a word pointing to this type may carry.
    const TAGS: &'static [Tag];
}

/// A descriptor kind with its own TYPESAFE_BY_RCU cache on every machine.
pub trait CachedDescriptor: Descriptor {
    /// Index of the kind's cache among the machine's descriptor caches.
    const KIND: usize;
    /// The cache's name in slabinfo.
    const CACHE_NAME: &'static str;
    /// Offset of a field the slab may use as a free object's free pointer: one that lockless
    /// readers never trust without first pinning the descriptor.
    const FREEPTR_OFFSET: usize;
}

/// Number of kinds with descriptor caches.
pub const NR_DESC_KINDS: usize = 7;

/// A typed pointer to a descriptor, as decoded from a page word.
///
/// It is only an address: dereference it with [`DescPtr::get`] under an RCU read guard, then
/// revalidate (take a reference and re-read the word) before trusting what you read; see
/// [`crate::memmap::lookup`]. It does *not* guarantee the descriptor is still the page's owner.
pub struct DescPtr<T> {
    ptr: NonNull<T>,
    _marker: PhantomData<*const T>,
}

impl<T> Clone for DescPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for DescPtr<T> {}
impl<T> PartialEq for DescPtr<T> {
    fn eq(&self, other: &Self) -> bool {
        self.ptr == other.ptr
    }
}
impl<T> Eq for DescPtr<T> {}
impl<T> core::fmt::Debug for DescPtr<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "DescPtr({:p})", self.ptr)
    }
}
// SAFETY: a DescPtr is an address; all access goes through `get`, which requires `T: Sync`
// via `Descriptor`.
unsafe impl<T> Send for DescPtr<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for DescPtr<T> {}

impl<T> DescPtr<T> {
    /// The address.
    #[inline]
    pub fn addr(self) -> usize {
        self.ptr.as_ptr() as usize
    }

    /// Builds from an address decoded from a word (non-zero, low bits masked).
    #[inline]
    pub(crate) fn from_word_addr(addr: usize) -> Self {
        debug_assert!(addr != 0 && addr & 0xF == 0);
        // Words only hold addresses that came from `from_ref`, which are non-null.
        let ptr = NonNull::new(addr as *mut T).unwrap_or(NonNull::dangling());
        DescPtr { ptr, _marker: PhantomData }
    }
}

impl<T: Descriptor> DescPtr<T> {
    /// The pointer to a live descriptor.
    #[inline]
    #[cfg(any(test, feature = "slab"))]
    pub(crate) fn from_ref(r: &T) -> Self {
        DescPtr { ptr: NonNull::from(r), _marker: PhantomData }
    }

    /// Reads the descriptor under an RCU read guard.
    ///
    /// The reference is valid for the guard's lifetime because descriptor memory is
    /// `TYPESAFE_BY_RCU` ([`Descriptor`] safety item 3); the descriptor may have been freed and
    /// reused for another page of the same kind meanwhile, so revalidate.
    #[inline]
    pub fn get<'g>(self, _guard: &'g RcuGuard<'_>) -> &'g T {
        // SAFETY: DescPtr values are only created from words, which the crate only ever points
        // at descriptors allocated from TYPESAFE_BY_RCU caches of type T (Descriptor item 3);
        // such memory stays a valid T until a grace period after free, and the guard holds off
        // that grace period. T's fields tolerate concurrent writers (item 2).
        unsafe { self.ptr.as_ref() }
    }
}

/// Page-flag bits, the same in every flagged descriptor's first word (bits 0..18).
pub const PG_LOCKED: u64 = 1 << 0;
/// Data is being written back.
pub const PG_WRITEBACK: u64 = 1 << 1;
/// Recently referenced.
pub const PG_REFERENCED: u64 = 1 << 2;
/// Contents are valid.
pub const PG_UPTODATE: u64 = 1 << 3;
/// Contents differ from backing store.
pub const PG_DIRTY: u64 = 1 << 4;
/// On an LRU list.
pub const PG_LRU: u64 = 1 << 5;
/// On the active LRU list.
pub const PG_ACTIVE: u64 = 1 << 6;
/// Backed by swap (anon).
pub const PG_SWAPBACKED: u64 = 1 << 7;
/// Cannot be reclaimed.
pub const PG_UNEVICTABLE: u64 = 1 << 8;
/// Part of an mlocked range.
pub const PG_MLOCKED: u64 = 1 << 9;
/// Isolated for migration or compaction.
pub const PG_ISOLATED: u64 = 1 << 10;
/// Owner-private flag for filesystems (extended descriptors).
pub const PG_OWNER_PRIV: u64 = 1 << 11;
/// Hardware-poisoned: a folio's memory is retired instead of freed at its last put; a slab
/// hands out no more objects and is retired when empty (see `crate::hwpoison`).
pub const PG_HWPOISON: u64 = 1 << 12;
/// Mask of all flag bits; bits above hold per-kind packed fields.
pub const PG_FLAGS_MASK: u64 = (1 << 18) - 1;

/// The first word of every flagged descriptor: flags in bits 0..18, order in 18..24, pfn in
/// 24..64.
#[repr(transparent)]
pub struct DescFlags(AtomicU64);

impl DescFlags {
    /// A zero word (for descriptors built outside slab memory in tests).
    #[cfg(test)]
    pub(crate) fn zeroed() -> Self {
        DescFlags(AtomicU64::new(0))
    }

    /// (Re)initialises the word of a descriptor being handed out; a store, not a write, since
    /// lockless readers of a TYPESAFE_BY_RCU descriptor may be reading it.
    #[inline]
    #[cfg(feature = "slab")]
    pub(crate) fn init(&self, flags: u64, order: u32, pfn: crate::base::addr::Pfn) {
        self.0.store((flags & PG_FLAGS_MASK) | (order as u64) << 18 | pfn.0 << 24, Ordering::Release)
    }

    /// The flag bits.
    #[inline]
    pub fn flags(&self) -> u64 {
        self.0.load(Ordering::Acquire) & PG_FLAGS_MASK
    }
    /// Order of the memory the descriptor covers.
    #[inline]
    pub fn order(&self) -> u32 {
        ((self.0.load(Ordering::Acquire) >> 18) & 0x3F) as u32
    }
    /// First pfn of the memory the descriptor covers.
    #[inline]
    pub fn pfn(&self) -> crate::base::addr::Pfn {
        crate::base::addr::Pfn(self.0.load(Ordering::Acquire) >> 24)
    }
    /// Sets flag bits; returns the previous flags. Crate-private: flags such as `PG_LRU`,
    /// `PG_LOCKED` and `PG_HWPOISON` carry invariants (list membership, the lock, retirement)
    /// that only the owning subsystem's operations may change (`PhysMem::folio_trylock`,
    /// `lru_add`, …).
    #[inline]
    #[cfg(feature = "slab")]
    #[cfg(feature = "folio")]
    pub(crate) fn set(&self, bits: u64) -> u64 {
        self.0.fetch_or(bits & PG_FLAGS_MASK, Ordering::AcqRel) & PG_FLAGS_MASK
    }
    /// Clears flag bits; returns the previous flags. Crate-private, as `set` is.
    #[inline]
    #[cfg(feature = "slab")]
    #[cfg(feature = "folio")]
    pub(crate) fn clear(&self, bits: u64) -> u64 {
        self.0.fetch_and(!(bits & PG_FLAGS_MASK), Ordering::AcqRel) & PG_FLAGS_MASK
    }
}

/// Refcount and mapcount, at offsets 8 and 12 of every mappable descriptor.
#[repr(C)]
pub struct MapCounts {
    /// References (page-cache slot, one per page-table entry mapping it, pins, transient
    /// gets): `refcount >= mapcount` while mapped.
    pub(crate) refcount: AtomicU32,
    /// Page-table entries mapping this memory: N PTEs count N, a PMD mapping of a 2 MiB folio
    /// counts 1, and splitting that PMD into 512 PTEs adds 511 (see [`crate::pgtable`]).
    pub(crate) mapcount: AtomicU32,
}

impl MapCounts {
    /// Current reference count.
    #[inline]
    pub fn refcount(&self) -> u32 {
        self.refcount.load(Ordering::Acquire)
    }
    /// Current map count.
    #[inline]
    pub fn mapcount(&self) -> u32 {
        self.mapcount.load(Ordering::Acquire)
    }
    /// Takes a reference unless the count is zero (the object is being freed, is free, or is
    /// frozen): the first step of lockless revalidation. Crate-private: outside the crate a
    /// reference is taken through a typed handle (e.g. [`crate::folio::FolioRef`]).
    #[inline]
    pub(crate) fn try_get(&self) -> bool {
        let mut cur = self.refcount.load(Ordering::Relaxed);
        loop {
            if cur == 0 || cur == u32::MAX {
                return false;
            }
            match self.refcount.compare_exchange_weak(cur, cur + 1, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
    }
}

impl MapCounts {
    /// Takes another reference for a caller that holds one: the count is at least 1 and
    /// cannot be frozen meanwhile (a freeze accounts for every holder), so an increment is
    /// enough.
    #[inline]
    #[cfg(feature = "folio")]
    pub(crate) fn get_held(&self) {
        let old = self.refcount.fetch_add(1, Ordering::Relaxed);
        debug_assert!(old != 0, "get of a folio with no reference held");
    }

    /// Drops one reference unless it is the last; returns whether it dropped it. The last
    /// one is the caller's to free (or to keep).
    #[inline]
    #[cfg(feature = "folio")]
    pub(crate) fn put_unless_last(&self) -> bool {
        let mut cur = self.refcount.load(Ordering::Relaxed);
        loop {
            if cur <= 1 {
                return false;
            }
            match self.refcount.compare_exchange_weak(cur, cur - 1, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
    }

    /// Freezes the count: succeeds only if it is exactly `expected` (≥ 1), leaving 0 so that
    /// `try_get` fails until [`MapCounts::unfreeze`] (Linux's `folio_ref_freeze`).
    #[inline]
    #[cfg(feature = "folio")]
    pub(crate) fn freeze(&self, expected: u32) -> bool {
        expected != 0 && self.refcount.compare_exchange(expected, 0, Ordering::Acquire, Ordering::Relaxed).is_ok()
    }

    /// Ends a freeze, publishing `refs` references. A compare-exchange from 0, not a store: a
    /// frozen count cannot change (every holder was accounted for by the freeze and `try_get`
    /// fails on 0), and if the protocol were broken this refuses to overwrite the change.
    #[inline]
    #[cfg(feature = "folio")]
    pub(crate) fn unfreeze(&self, refs: u32) {
        let r = self.refcount.compare_exchange(0, refs, Ordering::Release, Ordering::Relaxed);
        assert!(r.is_ok(), "unfreeze of a count that changed while frozen: {r:?}");
    }
}

/// Intrusive doubly-linked list links (LRU, slab partial lists).
#[repr(C)]
pub struct ListLinks {
    pub(crate) prev: AtomicUsize,
    pub(crate) next: AtomicUsize,
}

/// A folio: anon or file memory of order 0..=MAX_ORDER, mappable, on the LRU.
#[repr(C, align(16))]
pub struct Folio {
    /// Flags, order and pfn.
    pub flags: DescFlags,
    /// Refcount and mapcount.
    pub counts: MapCounts,
    pub(crate) lru: Links,
    pub(crate) mapping: AtomicUsize,
    pub(crate) index: AtomicU64,
}

impl Folio {
    /// The address_space (file) or anon_vma (anon) this folio belongs to, as an address.
    pub fn mapping(&self) -> usize {
        self.mapping.load(Ordering::Acquire)
    }
    /// Index in the file, or the anon page offset.
    pub fn index(&self) -> u64 {
        self.index.load(Ordering::Acquire)
    }

    /// Takes the folio off its LRU list: `list` is the LRU list of the folio's node, locked by
    /// the caller (the folio layer's `lru_of`). Returns false, changing nothing, if the folio
    /// is on no LRU list (`PG_LRU` clear).
    #[cfg(feature = "folio")]
    pub(crate) fn lru_unlink(&self, list: &mut crate::base::list::List<Folio>) -> bool {
        if self.flags.flags() & PG_LRU == 0 {
            return false;
        }
        // SAFETY: `PG_LRU` is set only while the folio is on the LRU list of its node and
        // changes only under that list's lock, which the caller holds as `list`: the folio is
        // on this list (List invariant 3).
        let on = unsafe { list.remove(self) };
        debug_assert!(on, "PG_LRU set on a folio that is on no list");
        self.flags.clear(PG_LRU);
        true
    }

    /// Moves the folio to the back of its LRU list (recently used); `list` as for
    /// [`Folio::lru_unlink`]. Returns false if the folio is on no LRU list.
    #[cfg(feature = "folio")]
    pub(crate) fn lru_move_to_back(&self, list: &mut crate::base::list::List<Folio>) -> bool {
        if self.flags.flags() & PG_LRU == 0 {
            return false;
        }
        // SAFETY: as in `lru_unlink`: with `PG_LRU` set under the caller's lock of its node's
        // list, the folio is on `list` (List invariant 3).
        unsafe { list.move_to_back(self) }
    }
}

/// A filesystem descriptor that embeds a [`Folio`] at offset 0 (requirement 8): the page word
/// points to the embedded folio, and the folio layer recovers the filesystem's type after
/// checking the descriptor came from that filesystem's cache.
///
/// # Safety
/// Implementors promise: `#[repr(C)]` with a `Folio` as the first field; 16-byte aligned; every
/// field safe to read while another CPU writes it (atomics), since the cache is
/// TYPESAFE_BY_RCU; an all-zero value is valid.
pub unsafe trait FolioExt: Sync + Sized {
    /// Cache name.
    const NAME: &'static str;
}

// SAFETY: `links` returns the `lru` field every time (Linked item 1). A folio's descriptor goes
// back to its cache only from its last put, which first takes it off its LRU list under the
// list's lock (`lru_del` in the folio layer's release path, which debug-asserts the links
// unlinked before the free; Linked item 2); the split's chain of new descriptors is a local
// list emptied before any of them is published or freed.
unsafe impl Linked for Folio {
    fn links(&self) -> &Links {
        &self.lru
    }
}

/// Page-table page descriptor (ptdesc): one per page-table page of an [`crate::pgtable::Mm`].
#[repr(C, align(16))]
pub struct PtDesc {
    /// Flags, order (0) and pfn.
    pub flags: DescFlags,
    /// Bit 0: the per-table spin lock, taken around every entry write of this table; bits
    /// 8..12: the level (1 = PTE table, 2 = PMD, 3 = PUD, 4 = PGD).
    pub(crate) lock: AtomicU32,
    /// Present entries in the table (huge PMD entries included, deposits not).
    pub(crate) entries: AtomicU32,
    /// Address of the owning `Mm`.
    pub(crate) mm: AtomicUsize,
    /// PMD tables: `pfn + 1` of the first PTE table deposited for a huge mapping (0: none);
    /// deposited PTE tables: the next one in the chain. Never trusted by lockless readers.
    pub(crate) pmd_huge_pte: AtomicU64,
}

impl PtDesc {
    /// Address of the owning address space.
    pub fn mm(&self) -> usize {
        self.mm.load(Ordering::Acquire)
    }
    /// Page-table level (1 = PTE table … 4 = PGD).
    pub fn level(&self) -> u32 {
        (self.lock.load(Ordering::Acquire) >> 8) & 0xF
    }
    /// Present entries in the table.
    pub fn entries(&self) -> u32 {
        self.entries.load(Ordering::Acquire)
    }
}

/// A vmalloc page's descriptor (one per page of the area).
#[repr(C, align(16))]
pub struct VmallocDesc {
    /// Flags, order (0) and pfn.
    pub flags: DescFlags,
    /// Refcount and mapcount (only a mappable area's pages are ever mapped to user space).
    pub counts: MapCounts,
    pub(crate) area: AtomicUsize,
    pub(crate) index: AtomicU64,
}

/// A page_pool (netmem) page's descriptor.
#[repr(C, align(16))]
pub struct Netmem {
    /// Flags, order and pfn.
    pub flags: DescFlags,
    /// Refcount and mapcount (for zero-copy receive into user mappings).
    pub counts: MapCounts,
    pub(crate) pool: AtomicUsize,
    pub(crate) dma_addr: AtomicU64,
    pub(crate) pp_ref_count: AtomicU64,
}

impl VmallocDesc {
    /// Index of this page in its area.
    pub fn index(&self) -> u64 {
        self.index.load(Ordering::Acquire)
    }
    /// Address of the area's bookkeeping record (identifies the area).
    pub fn area(&self) -> usize {
        self.area.load(Ordering::Acquire)
    }
}

impl Netmem {
    /// The simulated DMA address of the block.
    pub fn dma_addr(&self) -> u64 {
        self.dma_addr.load(Ordering::Acquire)
    }
    /// Address of the owning pool's state.
    pub fn pool(&self) -> usize {
        self.pool.load(Ordering::Acquire)
    }
    /// The page_pool's fragment reference count.
    pub fn pp_ref_count(&self) -> u64 {
        self.pp_ref_count.load(Ordering::Acquire)
    }
}

/// A zspage: 1–8 order-0 pages holding objects of one zsmalloc size class
/// ([`crate::zsmalloc`]). Every component page's word points to it; `pool` leads a pfn
/// scanner from the word alone to the owning pool. Fields other than `flags` change only
/// under the owning pool's lock.
#[repr(C, align(16))]
pub struct Zspage {
    /// Flags (order 0; pfn of the first component page).
    pub flags: DescFlags,
    /// Index of the size class in the pool.
    pub(crate) class: AtomicU32,
    /// Objects in use.
    pub(crate) inuse: AtomicU32,
    /// Index of the first free object (`u32::MAX`: none); free objects link through their
    /// first eight bytes.
    pub(crate) freelist: AtomicU32,
    /// Objects of this zspage mapped right now; migration and compaction leave it alone
    /// while non-zero.
    pub(crate) mapped: AtomicU32,
    /// Address of the owning pool's state.
    pub(crate) pool: AtomicUsize,
    /// Links on the class's partial or full list (pool item P3 below).
    pub(crate) list: Links,
    /// Component pfns (as many as the class's pages per zspage, at most 8). A one-object ("huge")
    /// zspage has one page and keeps its object's header in `pages[1]`.
    pub(crate) pages: [AtomicU64; 8],
}

impl Zspage {
    /// Objects in use.
    pub fn inuse(&self) -> u32 {
        self.inuse.load(Ordering::Acquire)
    }
    /// Index of the size class in the owning pool.
    pub fn class(&self) -> u32 {
        self.class.load(Ordering::Acquire)
    }
    /// Address of the owning pool's state (what a pfn scanner follows from the word).
    pub fn pool_addr(&self) -> usize {
        self.pool.load(Ordering::Acquire)
    }
    /// The `i`-th component pfn (`i < 8`; entries past the class's page count are stale).
    pub fn page(&self, i: usize) -> Option<crate::base::addr::Pfn> {
        self.pages.get(i).map(|p| crate::base::addr::Pfn(p.load(Ordering::Acquire)))
    }
}

/// A z3fold page: up to three objects (first, middle, last) in one order-0 page
/// ([`crate::z3fold`]). Fields other than `flags` change only under the owning pool's lock.
#[repr(C, align(16))]
pub struct Z3foldDesc {
    /// Flags, order (0) and pfn.
    pub flags: DescFlags,
    /// Packed layout: the byte sizes of the first, middle and last objects (13 bits each,
    /// 0 = absent), the middle object's start chunk (7 bits) and the count of mapped objects
    /// (8 bits).
    pub(crate) chunks: AtomicU64,
    /// Address of the owning pool's state.
    pub(crate) pool: AtomicUsize,
    /// Links on the pool's list of pages with room (pool item P3 below).
    pub(crate) list: Links,
    /// Handle-table indices of the first, middle and last objects, 21 bits each (bits
    /// `21 × which`): compaction turning the middle into the first or last rewrites its
    /// handle entry, and migration rewrites the entries of every object on the page.
    pub(crate) handles: AtomicU64,
}

impl Z3foldDesc {
    /// Packed object sizes, the middle object's start chunk and the mapped count.
    pub fn chunks(&self) -> u64 {
        self.chunks.load(Ordering::Acquire)
    }
    /// Address of the owning pool's state.
    pub fn pool_addr(&self) -> usize {
        self.pool.load(Ordering::Acquire)
    }
}

// ---- pool-owned descriptors (zsmalloc, z3fold, vmalloc, page_pool) ----
//
// A [`Zspage`] or [`Z3foldDesc`] belongs to one pool (its `pool` field names the pool's state),
// and a [`VmallocDesc`] to one vmalloc space (its `area` field names the area's record); the
// pool's or space's spin lock guards everything about it but `flags` and the counts. The pools
// layer keeps these invariants, cited as "pool item Pn" by the helpers below, which are the
// pools' only way to turn a descriptor address into a reference without an RCU guard, to
// unlink one, and to reach the bytes of its pages:
// P1. **Alive under the lock.** A pool descriptor named by a page word of the pool, by one of
//     the pool's lists, by one of its allocated handle entries or by a linked area's page is
//     alive; it is freed only by a holder of the pool's lock, or by the owner of an unlinked
//     area (whose record it then holds), after it left every list and before its word is
//     reused.
// P2. **Bytes under the lock or the mapping.** The bytes of a pool's pages are read and
//     written only by a holder of the pool's lock, except an object's bytes while the object is
//     mapped (counted in its descriptor under the lock), which only that mapping touches; a
//     lock holder never touches a mapped object's bytes (compaction and migration skip a
//     descriptor with mappings). A vmalloc area's bytes are touched only under its space's
//     lock.
// P3. **One list, known from state.** A zspage is on its class's partial list while it has a
//     free object and on the class's full list otherwise; a z3fold page is on its pool's
//     list for its room, or on a list the lock holder made while working on it. The lists live
//     behind the pool's lock. A fresh descriptor's links may hold the cache's free pointer
//     (`FREEPTR_OFFSET` is `list`): the pool resets them before linking it.
// P4. **State outlives a grace period.** A pool descriptor's `pool` field holds the address of
//     its pool's state (a zsmalloc pool's for a `Zspage`, a z3fold pool's for a `Z3foldDesc`),
//     set before a word names the descriptor; a pool frees its state only after it reset every
//     word naming its descriptors and then waited for a grace period. So an address read from
//     the field of a descriptor a word named inside an RCU read section is that kind's pool
//     state until the section ends.
// P5. **A block holds its pool.** A page_pool block's [`Netmem`] holds one reference on its
//     pool's core (named by its `pool` field) from the block's first allocation until it is
//     released to the page allocator; the core is freed only when its last reference goes.
//     While a netmem is handed out, in its pool's ring or the pool's current fragment block,
//     the pool or the holder of one of its `pp_ref_count`s keeps it alive.

/// A descriptor owned by a pool (P1–P5 above): [`Zspage`], [`Z3foldDesc`], [`VmallocDesc`],
/// [`Netmem`].
#[cfg(any(feature = "zsmalloc", feature = "vmalloc", feature = "page_pool"))]
pub(crate) trait PoolDesc: Descriptor {}

/// The pool descriptor `p` names, for as long as `held` is borrowed: what keeps the descriptor
/// alive. That is the state behind the owning pool's lock, or its guard, when the caller holds
/// the lock and found `p` in a word, list, ring or handle entry of that pool (pool item P1);
/// the record of an unlinked vmalloc area the caller owns (P1); or a handle holding one of a
/// netmem's references (P5).
#[cfg(any(feature = "zsmalloc", feature = "vmalloc", feature = "page_pool"))]
#[inline]
pub(crate) fn pool_desc_held<T: PoolDesc, G: ?Sized>(p: DescPtr<T>, held: &G) -> &T {
    let _ = held;
    // SAFETY: alive while `held` is (pool items P1 and P5), and the result borrows `held`, so
    // it ends before the lock is released or the reference given up.
    unsafe { p.ptr.as_ref() }
}

/// The pool state at `addr`, read from the `pool` field of a pool descriptor that a page word
/// named inside `rg`'s read section, for that section (pool item P4). `S` is the state type of
/// that descriptor kind's pools.
#[cfg(feature = "zsmalloc")]
#[inline]
pub(crate) fn pool_state<'g, S>(rg: &'g RcuGuard<'_>, addr: usize) -> &'g S {
    let _ = rg;
    debug_assert!(addr != 0 && addr.is_multiple_of(core::mem::align_of::<S>()), "pool state {addr:#x}");
    // SAFETY: a live `S` until the read section ends (pool item P4); the result borrows the
    // guard. Its fields are reached through its lock or atomics.
    unsafe { &*(addr as *const S) }
}

/// The pool state at `addr`, read from the `pool` field of `d`, a descriptor holding a
/// reference on that state, for as long as `d` is borrowed (pool item P5). `S` is the state type
/// of that descriptor kind's pools.
#[cfg(feature = "page_pool")]
#[inline]
pub(crate) fn pool_state_held<S, D: PoolDesc>(d: &D, addr: usize) -> &S {
    let _ = d;
    debug_assert!(addr != 0 && addr.is_multiple_of(core::mem::align_of::<S>()), "pool state {addr:#x}");
    // SAFETY: the descriptor's reference keeps the state alive while the descriptor is
    // borrowed (pool item P5); its fields are atomics or behind its locks.
    unsafe { &*(addr as *const S) }
}

#[cfg(feature = "zsmalloc")]
/// Clears a fresh pool descriptor's links (pool item P3): the cache's free pointer overlaps
/// them. The descriptor was just allocated and no list holds it.
#[inline]
pub(crate) fn pool_desc_fresh<T: PoolDesc + Linked>(d: &T) {
    // SAFETY: a descriptor just taken from its cache is on no list and no list holds its
    // address (pool item P3; list invariant 2).
    unsafe { d.links().reset() }
}

#[cfg(feature = "zsmalloc")]
/// Takes `d` off `list`, which is the one list of its pool it is on (pool item P3: the caller
/// holds the pool lock and knows the list from the descriptor's state). Returns false if `d`
/// was on no list.
#[inline]
pub(crate) fn pool_desc_unlink<T: PoolDesc + Linked>(d: &T, list: &mut List<T>) -> bool {
    // SAFETY: `list` is the list `d` is on, by the caller's pool state (pool item P3), so
    // `remove` unlinks it from its own list under its own lock (list invariant 3).
    unsafe { list.remove(d) }
}

#[cfg(any(feature = "zsmalloc", feature = "vmalloc"))]
/// A window on bytes `start..start + len` of page `pfn` of a pool, for the lock holder (on
/// bytes of no mapped object) or for the mapping of the object those bytes hold (pool item
/// P2). `None` if the range leaves the page or the page has no mapping.
#[inline]
pub(crate) fn pool_window<P: crate::base::platform::Platform>(
    platform: &P,
    pfn: crate::base::addr::Pfn,
    start: usize,
    len: usize,
) -> Option<crate::base::page_access::PageAccess<'_, P>> {
    // SAFETY: the bytes belong to the caller alone for the window's life: the lock holder's
    // (no mapping covers them) or the one mapping's (pool item P2).
    unsafe { crate::base::page_access::PageAccess::new_range(platform, pfn, start, len) }
}

#[cfg(feature = "zsmalloc")]
/// Fills pool page `to`, which replaces pool page `from` (migration, or retirement after a
/// memory error when `zero`): a copy of `from`, or zeroes. The caller holds the pool lock, no
/// object of `from` is mapped, and `to` is a page it just took (pool item P2). False if a
/// page cannot be mapped.
pub(crate) fn pool_page_fill<P: crate::base::platform::Platform>(
    platform: &P,
    from: crate::base::addr::Pfn,
    to: crate::base::addr::Pfn,
    zero: bool,
) -> bool {
    // SAFETY: `to` is the caller's fresh page, and nobody else touches `from` while the pool
    // lock is held with no mapping on it (pool item P2).
    let dst = unsafe { crate::base::page_access::PageAccess::new(platform, to) };
    let Some(mut dst) = dst else { return false };
    if zero {
        dst.zero();
        return true;
    }
    // SAFETY: as above; the old page is only read.
    let src = unsafe { crate::base::page_access::PageAccess::new_read_only(platform, from) };
    src.is_some_and(|src| dst.copy_all_from(&src).is_ok())
}

// SAFETY: `links` returns the `list` field every time (`Linked` item 1); a zspage is freed only
// by its pool's lock holder after it left its list (pool item P1, `Linked` item 2).
unsafe impl Linked for Zspage {
    fn links(&self) -> &Links {
        &self.list
    }
}

// SAFETY: as for Zspage: the `list` field (`Linked` item 1); freed only off-list under the pool
// lock (pool item P1, `Linked` item 2).
unsafe impl Linked for Z3foldDesc {
    fn links(&self) -> &Links {
        &self.list
    }
}

#[cfg(feature = "zsmalloc")]
impl PoolDesc for Zspage {}

#[cfg(feature = "zsmalloc")]
impl PoolDesc for Z3foldDesc {}

#[cfg(feature = "vmalloc")]
impl PoolDesc for VmallocDesc {}

#[cfg(feature = "page_pool")]
impl PoolDesc for Netmem {}

/// Driver memory that may be mapped into user space.
#[repr(C, align(16))]
pub struct MappableDesc {
    /// Flags, order and pfn.
    pub flags: DescFlags,
    /// Refcount and mapcount.
    pub counts: MapCounts,
    pub(crate) owner: AtomicUsize,
}

impl MappableDesc {
    /// Address of the owning driver object.
    pub fn owner(&self) -> usize {
        self.owner.load(Ordering::Acquire)
    }
}

/// A slab: the descriptor every page of a slab points to.
#[repr(C, align(16))]
pub struct Slab {
    /// Flags, order and pfn.
    pub flags: DescFlags,
    pub(crate) cache: AtomicUsize,
    pub(crate) freelist: AtomicUsize,
    pub(crate) inuse: AtomicU32,
    pub(crate) objects: AtomicU32,
    /// Links on a list of its cache's node (slab items S1–S2 below).
    pub(crate) list: Links,
}

// SAFETY: 16-byte aligned (repr), every field atomic, allocated only from the slab-descriptor
// cache, which is TYPESAFE_BY_RCU.
unsafe impl Descriptor for Slab {
    const TAG: Tag = Tag::Slab;
    const TAGS: &'static [Tag] = &[Tag::Slab];
}

#[cfg(not(loom))]
const _: () = assert!(core::mem::size_of::<Slab>() == 48);

impl Slab {
    /// Objects in use (handed out, or sitting in a CPU's sheaf).
    pub fn inuse(&self) -> u32 {
        self.inuse.load(Ordering::Acquire)
    }
    /// Objects the slab holds.
    pub fn objects(&self) -> u32 {
        self.objects.load(Ordering::Acquire)
    }
    /// Address of the owning cache.
    pub fn cache_addr(&self) -> usize {
        self.cache.load(Ordering::Acquire)
    }
}

// ---- slab lists ----
//
// The slab layer keeps its slabs on lists of their cache's per-node state (`CacheNode`, behind
// the node's spin lock) and cites these as "slab item Sn":
// S1. **Own node's lists.** A slab's `list` links are only ever on a list of its own cache and
//     node — the partial list, the list of empty slabs waiting for a grace period — or on a
//     local list that a holder of that node's lock filled from them (slabs being discarded).
//     They change only under that lock or on such a local list.
// S2. **Only empty slabs leave for other lists.** Only an empty slab (`inuse == 0`, no object
//     handed out or in a CPU's sheaf, so no object free can reach it) moves from the partial
//     list to a waiting or local list. So under the node's lock, a linked slab with an object
//     in use is on the node's partial list.
// S3. **Fresh links.** A slab descriptor's links hold the slab-descriptor cache's free
//     pointer while it is free (`FREEPTR_OFFSET` is `list`): the slab layer resets them when it
//     makes a slab, and a descriptor is freed only after it left every list.

#[cfg(feature = "slab")]
impl Slab {
    /// Takes the slab off `partial`, the partial list of its cache's node, locked by the caller;
    /// the slab has an object in use (slab item S2). Returns false, changing nothing, if it was
    /// on no list — or if it has no object in use, when the membership cannot be told.
    pub(crate) fn partial_unlink(&self, partial: &mut crate::base::list::List<Slab>) -> bool {
        if self.inuse.load(Ordering::Relaxed) == 0 {
            debug_assert!(!self.list.is_linked(), "partial_unlink of an empty slab");
            return false;
        }
        // SAFETY: the caller holds the node lock guarding `partial`, and a linked slab with an
        // object in use is on that list (slab item S2), so `remove` unlinks it from its own list
        // under its own lock (List invariant 3).
        unsafe { partial.remove(self) }
    }

    /// Puts a fresh slab descriptor's links in the unlinked state (slab item S3): it was just
    /// taken from the slab-descriptor cache, or is the zeroed first slot of a new self-hosted
    /// slab, and no list holds it.
    pub(crate) fn fresh_links(&self) {
        // SAFETY: a descriptor just taken from its cache is on no list and no list holds its
        // address (slab item S3; List invariant 2).
        unsafe { self.list.reset() }
    }
}

// SAFETY: `links` returns the `list` field every time (Linked item 1); a slab descriptor is
// freed only after it left every list, under its node's lock (slab items S1 and S3; Linked
// item 2).
unsafe impl Linked for Slab {
    fn links(&self) -> &Links {
        &self.list
    }
}

macro_rules! descriptor {
    ($t:ty, $tag:expr, [$($tags:expr),*], $kind:expr, $name:expr, $freeptr:ident) => {
        impl CachedDescriptor for $t {
            const KIND: usize = $kind;
            const CACHE_NAME: &'static str = $name;
            const FREEPTR_OFFSET: usize = core::mem::offset_of!($t, $freeptr);
        }
        // SAFETY: 16-byte aligned (asserted below), every field is atomic, and instances are
        // allocated only from the TYPESAFE_BY_RCU descriptor cache of this type.
        unsafe impl Descriptor for $t {
            const TAG: Tag = $tag;
            const TAGS: &'static [Tag] = &[$($tags),*];
        }
        #[cfg(not(loom))]
        const _: () = assert!(core::mem::align_of::<$t>() == 16);
    };
}

descriptor!(Folio, Tag::AnonFolio, [Tag::AnonFolio, Tag::FileFolio], 0, "folio", index);
descriptor!(PtDesc, Tag::PageTable, [Tag::PageTable], 1, "ptdesc", pmd_huge_pte);
descriptor!(
    VmallocDesc,
    Tag::VmallocUnmappable,
    [Tag::VmallocMappable, Tag::VmallocUnmappable],
    2,
    "vmalloc_desc",
    index
);
descriptor!(Netmem, Tag::NetPool, [Tag::NetPool], 3, "netmem", dma_addr);
descriptor!(Zspage, Tag::Zsmalloc, [Tag::Zsmalloc], 4, "zspage", list);
descriptor!(Z3foldDesc, Tag::Z3fold, [Tag::Z3fold], 5, "z3fold_desc", list);
descriptor!(MappableDesc, Tag::Mappable, [Tag::Mappable], 6, "mappable_desc", owner);

#[cfg(not(loom))]
mod layout {
    use super::*;
    use core::mem::{offset_of, size_of};

    // Flags first, in every flagged descriptor.
    const _: () = assert!(offset_of!(Folio, flags) == 0);
    const _: () = assert!(offset_of!(PtDesc, flags) == 0);
    const _: () = assert!(offset_of!(VmallocDesc, flags) == 0);
    const _: () = assert!(offset_of!(Netmem, flags) == 0);
    const _: () = assert!(offset_of!(Zspage, flags) == 0);
    const _: () = assert!(offset_of!(Z3foldDesc, flags) == 0);
    const _: () = assert!(offset_of!(MappableDesc, flags) == 0);
    const _: () = assert!(offset_of!(Slab, flags) == 0);

    // Refcount and mapcount at the same offsets in every mappable descriptor.
    const REF: usize = offset_of!(Folio, counts) + offset_of!(MapCounts, refcount);
    const MAP: usize = offset_of!(Folio, counts) + offset_of!(MapCounts, mapcount);
    const _: () = assert!(REF == 8 && MAP == 12);
    const _: () = assert!(offset_of!(MappableDesc, counts) + offset_of!(MapCounts, refcount) == REF);
    const _: () = assert!(offset_of!(VmallocDesc, counts) + offset_of!(MapCounts, refcount) == REF);
    const _: () = assert!(offset_of!(Netmem, counts) + offset_of!(MapCounts, refcount) == REF);
    const _: () = assert!(offset_of!(MappableDesc, counts) + offset_of!(MapCounts, mapcount) == MAP);
    const _: () = assert!(offset_of!(VmallocDesc, counts) + offset_of!(MapCounts, mapcount) == MAP);
    const _: () = assert!(offset_of!(Netmem, counts) + offset_of!(MapCounts, mapcount) == MAP);

    // LRU at the same offset for anon and file folios (one type serves both tags).
    const _: () = assert!(offset_of!(Folio, lru) == 16);

    // vmalloc and page_pool descriptors (vmalloc.rs, page_pool.rs): one per page / block.
    const _: () = assert!(size_of::<VmallocDesc>() == 32);
    const _: () = assert!(size_of::<Netmem>() == 48);
    // A page-table page costs its word + 32 bytes (Linux's ptdesc overlays a 64-byte page).
    const _: () = assert!(size_of::<PtDesc>() == 32);

    // The order-0 folio plus its word must not exceed Linux's 64-byte struct page.
    // (With its word: asserted in word.rs, which imports this module and not the reverse.)
    const _: () = assert!(size_of::<Folio>() == 48);

    // zsmalloc: 112-byte zspage (a multiple of the alignment), the owning pool reachable at a
    // fixed offset, and room for eight component pfns.
    const _: () = assert!(size_of::<Zspage>() == 112);
    const _: () = assert!(offset_of!(Zspage, pool) == 24 && offset_of!(Zspage, pages) == 48);
    // z3fold: 48 bytes; the packed layout word right after the flags.
    const _: () = assert!(size_of::<Z3foldDesc>() == 48);
    const _: () = assert!(offset_of!(Z3foldDesc, chunks) == 8);
}
