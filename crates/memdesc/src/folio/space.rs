//! The address space: one file's page cache as data — the root of its index tree (with the
//! tree's lock, removal sequence and counters), the list of the file's VMAs (`i_mmap`, with
//! the mm layer) — and the page cache's error type. The tree's operations are in
//! [`super::xarray`], lookup, insert and delete in [`super::filemap`], removal by range in
//! [`super::truncate`]; this module imports none of them.

use crate::folio::FolioError;
#[cfg(feature = "pgtable")]
use crate::list::{Links, List};
use crate::page_alloc::AllocError;
use crate::sync::{AtomicU64, AtomicUsize, Ordering, SpinLock};

/// Low bits of the root word hold the height; of a slot, the tag.
pub(super) const LOW_MASK: usize = 0xF;

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

/// One file's page cache: index → file folio.
///
/// Lives in slab memory at a fixed address (folios' `mapping` field holds it); reached
/// through an [`AddressSpaceRef`](super::filemap::AddressSpaceRef). It does *not* keep folios on the LRU or track dirtiness.
pub struct AddressSpace {
    pub(super) lock: SpinLock<()>,
    /// Root node address | height, or 0 when empty.
    pub(super) root: AtomicUsize,
    /// Removal sequence: odd while a writer takes something out of the tree.
    pub(super) seq: AtomicU64,
    pub(super) nr_pages: AtomicU64,
    pub(super) nr_folios: AtomicU64,
    pub(super) slow_lookups: AtomicU64,
    /// The file VMAs mapping this file (`i_mmap`), for the rmap walk of its folios.
    #[cfg(feature = "pgtable")]
    pub(crate) i_mmap: RmapList,
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
            i_mmap: RmapList::new(),
        }
    }

    /// The address folios' `mapping` field holds while cached here.
    #[inline]
    pub fn addr(&self) -> usize {
        self as *const AddressSpace as usize
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

    /// Lookups that fell back to the lock after
    /// [`LOCKLESS_TRIES`](super::filemap::LOCKLESS_TRIES) lockless attempts.
    pub fn slow_lookups(&self) -> u64 {
        self.slow_lookups.load(Ordering::Relaxed)
    }
}

/// A list of VMAs under a lock: an anon_vma, or a file's `i_mmap`.
///
/// Defined here because an [`AddressSpace`] holds one (its file VMAs); the list's operations
/// (link, unlink, the rmap walk) belong to the mm layer (`mm/rmap.rs`), which owns the VMAs.
///
/// Anon_vmas come from a TYPESAFE_BY_RCU cache and their lock is never reinitialised, so an
/// rmap walker that read a folio's `mapping` under RCU may lock an anon_vma that was freed (or
/// reused) meanwhile, and then finds out by re-reading the folio's `mapping` under the lock.
/// The cache's free pointer lies over `nr` (never trusted without the lock); the list, behind
/// the lock, is empty whenever an anon_vma is freed (it goes with its last VMA).
#[cfg(feature = "pgtable")]
#[repr(C)]
pub struct RmapList {
    /// The VMAs, by the [`RmapLink`] each embeds.
    pub(crate) lock: SpinLock<List<RmapLink>>,
    /// VMAs on the list (a copy of the list's length, readable without the lock).
    pub(crate) nr: AtomicUsize,
}

#[cfg(feature = "pgtable")]
impl RmapList {
    /// An empty list.
    pub(crate) fn new() -> Self {
        RmapList { lock: SpinLock::new(List::new()), nr: AtomicUsize::new(0) }
    }

    /// VMAs on the list.
    pub fn nr_vmas(&self) -> u32 {
        self.nr.load(Ordering::Relaxed) as u32
    }

    /// Where a TYPESAFE_BY_RCU cache of anon_vmas keeps its free pointer (over `nr`).
    pub const FREEPTR_OFFSET: usize = core::mem::offset_of!(RmapList, nr);
}

/// The links a VMA embeds, as its first field, for its [`RmapList`]: the list threads these,
/// and the mm layer, which makes and links them, turns one back into its VMA.
#[cfg(feature = "pgtable")]
#[derive(Debug, Default)]
pub struct RmapLink(pub(crate) Links);
