//! THE page-content access type: [`PageAccess`] maps one page through the [`Platform`] (its
//! direct map, or a momentary local mapping like Linux's `kmap_local_page`) and reads,
//! writes, fills, compares and copies its bytes with bounds checks, so that callers (page
//! copies in migration, zeroing, the host's DMA device, the torture's patterns) hold no raw
//! pointer. In the spirit of rust-vmm's volatile slices, but exclusive: the one `unsafe` step
//! is the claim, at construction, that the caller has the page's contents to itself.
//!
//! The atomic word view of a page (buddy and per-CPU list links, two-level word tables, page
//! tables), where several CPUs may touch the same words, is `PageWords` (crate-private): it
//! hands out only atomics, so it needs no claim; [`PageAccess`] never hands out atomics, so
//! the two views never alias within one value.
//!
//! # Invariants
//! 1. **Valid mapping.** `ptr` (the page's base) is valid for reads and writes of
//!    [`PAGE_SIZE`] bytes and page-aligned while the value lives, and the value's window
//!    `start..start + len` lies inside the page: a direct-map pointer for as long as the platform
//!    lives ([`Platform`] item 1), a local mapping until the value's `Drop` unmaps it (item 2).
//! 2. **Exclusive or read-only contents.** While an [`Exclusive`] value lives nobody else
//!    reads or writes the bytes of its window (the whole page, or the range of an object or a
//!    fragment that shares the page with others) ([`PageAccess::new`]'s contract), so byte slices of
//!    it may be handed out: shared ones through `&self`, a unique one through `&mut self`.
//!    While a [`ReadOnly`] value lives nobody writes them ([`PageAccess::new_read_only`]'s
//!    contract; other readers are fine), and it offers no way to write.
//! 3. **One thread.** A local mapping is valid only on the thread that made it, so the value is
//!    neither `Send` nor `Sync` (both types).
//! 4. **Words are atomics.** A `PageWords` maps a whole page as in item 1 and hands out only
//!    `&AtomicU64`s over it (8-aligned, as the page is page-aligned; an `AtomicU64` has the size
//!    and alignment of a `u64` and may be used over any initialised memory that every other
//!    accessor also reaches atomically). Non-atomic access to those words while atomics may be
//!    in use is excluded by item 2: a [`PageAccess`] is only made by a caller that has the bytes
//!    to itself. A direct-map table (`PageWords::direct_table`) lives as long as the
//!    platform borrow, since direct-map memory is valid while the platform lives.
//! 5. **Fresh blocks.** `PageAccess::new_allocated` (crate-private, safe) is called only by
//!    the page allocator, for a page of a block it has just taken off its free lists and not
//!    yet returned to its caller: no handle, descriptor or list names the page, so the caller
//!    has its contents to itself (item 2) without a further claim.
//! 6. **Boot arrays: reserved for the array alone.** A [`BootArray`]'s `ptr` is the direct-map
//!    address of pages the boot allocator handed out for that array only (it never hands a
//!    range out twice, and the page allocator stamps every boot range `Reserved`, so no
//!    allocation ever reaches it); boot memory is never returned.
//! 7. **Boot arrays: mapped and initialised.** Those pages are direct-mapped, linearly
//!    ([`Platform`] item 1), page-aligned (so aligned for any `T` whose alignment is at most
//!    [`PAGE_SIZE`], checked at compile time), large enough for `len` values of `T`, and all
//!    `len` values are written before the array exists. The mapping stays valid while the
//!    platform lives; the array is kept by the structure that keeps its platform
//!    ([`crate::memmap::Memmap`] inside the page allocator, which owns the platform) and is
//!    never read after it. So is every alias of it (`BootArray::alias`, crate-private: a
//!    second array value over the same values, which item 8 makes harmless, as an alias only
//!    reads them too).
//! 8. **Boot arrays: shared only.** The array hands out `&T` and nothing else: no `&mut T`, no
//!    moves out, and its values are never dropped (boot memory lives as long as the machine).
//!    So sharing or sending the array is sharing its values: `Send` and `Sync` need exactly
//!    `T: Sync`.
//! 9. **Direct windows.** A `DirectWindow` (crate-private) is made by `DirectWindow::new`
//!    alone, from a platform and one region's pages whose two ends that platform maps
//!    `pages - 1` pages apart, so by [`Platform`] item 1 page `start + i` lies at
//!    `virt + i * PAGE_SIZE` for every `i < pages`. It is kept beside that platform (in the
//!    memmap, which the page allocator keeps with its platform, as item 7 says of boot
//!    arrays) and its `table` is called with that platform only, so the words it hands out
//!    live as long as the platform borrow, as a direct-map table does (item 4).

use core::marker::PhantomData;
use core::ptr::NonNull;

use crate::base::addr::{Pfn, PAGE_SIZE};
use crate::base::boot::{BootAllocator, BootError};
use crate::base::layout::Region;
use crate::base::platform::Platform;
use crate::base::sync::AtomicU64;

/// A range that does not fit in the page (or the window) it was asked of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfPage {
    /// Offset asked for.
    pub offset: usize,
    /// Length asked for.
    pub len: usize,
}

impl core::fmt::Display for OutOfPage {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} bytes at offset {} do not fit in the page window", self.len, self.offset)
    }
}

/// The byte range `offset..offset + len` of a window of `size` bytes, or why not.
#[inline]
fn range_in(size: usize, offset: usize, len: usize) -> Result<core::ops::Range<usize>, OutOfPage> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(offset..end),
        _ => Err(OutOfPage { offset, len }),
    }
}

/// Mode of a [`PageAccess`] that may write: the caller has the page to itself.
#[derive(Debug)]
pub enum Exclusive {}
/// Mode of a [`PageAccess`] that only reads: nobody writes the page meanwhile.
#[derive(Debug)]
pub enum ReadOnly {}

/// Access to one page's bytes, [`Exclusive`] (the default) or [`ReadOnly`] (see the module
/// header).
#[must_use = "mapping a page does nothing by itself"]
pub struct PageAccess<'p, P: Platform, M = Exclusive> {
    platform: &'p P,
    pfn: Pfn,
    ptr: NonNull<u8>,
    start: usize,
    len: usize,
    local: bool,
    /// Invariant 3: neither Send nor Sync.
    _thread: PhantomData<(*mut u8, M)>,
}

impl<'p, P: Platform, M> PageAccess<'p, P, M> {
    /// Maps window `start..start + len` of `pfn` (direct map first unless `local`); `None` if
    /// the window leaves the page or the page cannot be mapped.
    fn map(platform: &'p P, pfn: Pfn, start: usize, len: usize, local: bool) -> Option<Self> {
        range_in(PAGE_SIZE, start, len).ok()?;
        let (ptr, local) = match (local, platform.direct_map(pfn)) {
            (false, Some(ptr)) => (ptr, false),
            _ => (platform.map_local(pfn)?, true),
        };
        Some(PageAccess { platform, pfn, ptr, start, len, local, _thread: PhantomData })
    }

    /// The page.
    #[inline]
    pub fn pfn(&self) -> Pfn {
        self.pfn
    }

    /// Size of the window in bytes ([`PAGE_SIZE`] for a whole page).
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the window is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Offset of the window in the page.
    #[inline]
    pub fn start(&self) -> usize {
        self.start
    }

    #[inline]
    fn range(&self, offset: usize, len: usize) -> Result<core::ops::Range<usize>, OutOfPage> {
        range_in(self.len, offset, len)
    }

    /// The window's bytes.
    #[inline]
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the window lies inside a mapping valid while `self` lives (invariant 1);
        // nobody writes it meanwhile: not others (invariant 2), and not this value, whose
        // writing methods (Exclusive only) take `&mut self`, excluded by this borrow.
        unsafe { core::slice::from_raw_parts(self.ptr.as_ptr().add(self.start), self.len) }
    }

    /// Narrows the window to `offset..offset + len` of the current one (a claim may shrink,
    /// never grow).
    pub fn narrow(mut self, offset: usize, len: usize) -> Result<Self, OutOfPage> {
        let r = self.range(offset, len)?;
        self.start += r.start;
        self.len = len;
        Ok(self)
    }

    /// Copies `buf.len()` bytes at `offset` into `buf`.
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> Result<(), OutOfPage> {
        buf.copy_from_slice(&self.bytes()[self.range(offset, buf.len())?]);
        Ok(())
    }

    /// Whether the bytes at `offset` equal `data`.
    pub fn compare(&self, offset: usize, data: &[u8]) -> Result<bool, OutOfPage> {
        Ok(&self.bytes()[self.range(offset, data.len())?] == data)
    }
}

impl<'p, P: Platform> PageAccess<'p, P, ReadOnly> {
    /// Maps `pfn` to read it (direct map, else a local mapping); `None` if it cannot be mapped.
    ///
    /// # Safety
    /// For the value's life nobody writes the page's contents (invariant 2): the caller owns
    /// or pins a page whose writers are excluded (an up-to-date page-cache folio it holds a
    /// reference to; its own page).
    pub unsafe fn new_read_only(platform: &'p P, pfn: Pfn) -> Option<Self> {
        Self::map(platform, pfn, 0, PAGE_SIZE, false)
    }

    /// Maps bytes `start..start + len` of `pfn` to read them; `None` if the range leaves the
    /// page or the page cannot be mapped.
    ///
    /// # Safety
    /// For the value's life nobody writes those bytes (invariant 2).
    pub unsafe fn new_range_read_only(platform: &'p P, pfn: Pfn, start: usize, len: usize) -> Option<Self> {
        Self::map(platform, pfn, start, len, false)
    }
}

impl<'p, P: Platform> PageAccess<'p, P, Exclusive> {
    /// Maps `pfn` through its direct map, or a local mapping if it has none; `None` if the
    /// platform cannot map it.
    ///
    /// # Safety
    /// For the value's life, the caller has the page's contents to itself (invariant 2): it
    /// owns the page (allocated and not handed to anyone), or holds it so that nobody else
    /// touches its contents (a frozen and locked folio being migrated, pages of a
    /// scatter-gather list it holds).
    pub unsafe fn new(platform: &'p P, pfn: Pfn) -> Option<Self> {
        Self::map(platform, pfn, 0, PAGE_SIZE, false)
    }

    /// Maps bytes `start..start + len` of `pfn` (an object or a fragment that shares its page
    /// with others); `None` if the range leaves the page or the page cannot be mapped.
    ///
    /// # Safety
    /// For the value's life the caller has those bytes to itself (invariant 2).
    pub unsafe fn new_range(platform: &'p P, pfn: Pfn, start: usize, len: usize) -> Option<Self> {
        Self::map(platform, pfn, start, len, false)
    }

    /// Maps `pfn` through a local mapping even if it has a direct map (a device touching only
    /// what it maps, as behind an IOMMU).
    ///
    /// # Safety
    /// As [`PageAccess::new`].
    pub unsafe fn new_local(platform: &'p P, pfn: Pfn) -> Option<Self> {
        Self::map(platform, pfn, 0, PAGE_SIZE, true)
    }

    /// Maps a page of a block the page allocator has just allocated and not yet handed out
    /// (to zero it); `None` if the page cannot be mapped. Crate-private and safe: its one
    /// caller keeps invariant 5.
    pub(crate) fn new_allocated(platform: &'p P, pfn: Pfn) -> Option<Self> {
        Self::map(platform, pfn, 0, PAGE_SIZE, false)
    }

    /// The window's bytes, writable.
    #[inline]
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: the window lies inside a valid mapping (invariant 1); nobody else touches
        // it (invariant 2) and this is the only borrow of `self`.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.as_ptr().add(self.start), self.len) }
    }

    /// Copies `data` to `offset`.
    pub fn write(&mut self, offset: usize, data: &[u8]) -> Result<(), OutOfPage> {
        let r = self.range(offset, data.len())?;
        self.bytes_mut()[r].copy_from_slice(data);
        Ok(())
    }

    /// Sets `len` bytes at `offset` to `byte`.
    pub fn fill(&mut self, offset: usize, len: usize, byte: u8) -> Result<(), OutOfPage> {
        let r = self.range(offset, len)?;
        self.bytes_mut()[r].fill(byte);
        Ok(())
    }

    /// Zeroes the window.
    pub fn zero(&mut self) {
        self.bytes_mut().fill(0);
    }

    /// Copies `len` bytes from `src` at `src_offset` to this page at `offset` (distinct pages:
    /// two values for one page cannot coexist, invariant 2).
    pub fn copy_from<M>(
        &mut self,
        offset: usize,
        src: &PageAccess<'_, P, M>,
        src_offset: usize,
        len: usize,
    ) -> Result<(), OutOfPage> {
        let (d, s) = (self.range(offset, len)?, src.range(src_offset, len)?);
        self.bytes_mut()[d].copy_from_slice(&src.bytes()[s]);
        Ok(())
    }

    /// Copies the whole of `src` over this window (a migration's page copy); refused unless
    /// the two windows have the same size.
    pub fn copy_all_from<M>(&mut self, src: &PageAccess<'_, P, M>) -> Result<(), OutOfPage> {
        if src.len != self.len {
            return Err(OutOfPage { offset: 0, len: src.len });
        }
        self.bytes_mut().copy_from_slice(src.bytes());
        Ok(())
    }

    /// Copies `len` bytes at `src_offset` to `offset` within this page (ranges may overlap,
    /// like `memmove`).
    pub fn copy_within(&mut self, src_offset: usize, offset: usize, len: usize) -> Result<(), OutOfPage> {
        let s = self.range(src_offset, len)?;
        self.range(offset, len)?;
        self.bytes_mut().copy_within(s, offset);
        Ok(())
    }
}

impl<P: Platform, M> Drop for PageAccess<'_, P, M> {
    #[inline]
    fn drop(&mut self) {
        if self.local {
            self.platform.unmap_local(self.pfn, self.ptr);
        }
    }
}

/// The atomic word view of one page (crate-private): free-list links, two-level word tables,
/// page-table entries. Any CPU may touch these words concurrently, so only atomics are handed
/// out (invariant 4) and making one needs no claim.
pub(crate) struct PageWords<'p, P: Platform> {
    platform: &'p P,
    pfn: Pfn,
    ptr: NonNull<u8>,
    local: bool,
}

/// Words in a page.
const WORDS: usize = PAGE_SIZE / 8;

impl<'p, P: Platform> PageWords<'p, P> {
    /// Maps `pfn`: the direct map if there is one, else a local mapping; `None` if it cannot
    /// be mapped.
    #[inline]
    pub(crate) fn new(platform: &'p P, pfn: Pfn) -> Option<Self> {
        if let Some(ptr) = platform.direct_map(pfn) {
            return Some(PageWords { platform, pfn, ptr, local: false });
        }
        let ptr = platform.map_local(pfn)?;
        Some(PageWords { platform, pfn, ptr, local: true })
    }

    /// The page's 512 words.
    #[inline]
    pub(crate) fn table(&self) -> &[AtomicU64; WORDS] {
        // SAFETY: invariants 1 and 4: the mapping is valid, page-aligned and PAGE_SIZE bytes
        // long while `self` lives, and only atomics are made of it.
        unsafe { words_at(self.ptr) }
    }

    /// The u64 at `index` of the page, as an atomic; panics if `index >= 512`.
    #[inline]
    pub(crate) fn word(&self, index: usize) -> &AtomicU64 {
        &self.table()[index]
    }

    /// The 512 words of a direct-mapped page, for as long as the platform borrow lasts
    /// (invariant 4); `None` if `pfn` has no direct map.
    #[inline]
    pub(crate) fn direct_table(platform: &'p P, pfn: Pfn) -> Option<&'p [AtomicU64; WORDS]> {
        let ptr = platform.direct_map(pfn)?;
        // SAFETY: invariants 1 and 4 for a direct-map pointer: valid, page-aligned and
        // PAGE_SIZE bytes long while the platform lives, which outlasts the borrow `'p`.
        Some(unsafe { words_at(ptr) })
    }
}

/// A linear run of the direct map: the `pages` pages from pfn `start`, the first mapped at
/// `virt` (invariant 9). It reaches the words of a page in it with a subtract, a compare and a
/// shift instead of asking the platform ([`PageWords::direct_table`] for any other pfn).
#[derive(Clone, Copy, Debug)]
pub(crate) struct DirectWindow {
    start: u64,
    pages: u64,
    virt: usize,
}

impl DirectWindow {
    /// The window of the `pages` pages from `start` (one region, so its direct map is linear:
    /// [`Platform`] item 1) when the platform maps both ends of it at addresses `pages - 1`
    /// pages apart; an empty window otherwise.
    pub(crate) fn new<P: Platform>(platform: &P, start: Pfn, pages: u64) -> DirectWindow {
        const EMPTY: DirectWindow = DirectWindow { start: 0, pages: 0, virt: 0 };
        if pages == 0 {
            return EMPTY;
        }
        let Some(span) = usize::try_from(pages - 1).ok().and_then(|n| n.checked_mul(PAGE_SIZE)) else { return EMPTY };
        match (platform.direct_map(start), platform.direct_map(start.add(pages - 1))) {
            (Some(a), Some(b)) if (a.as_ptr() as usize).checked_add(span) == Some(b.as_ptr() as usize) => {
                DirectWindow { start: start.0, pages, virt: a.as_ptr() as usize }
            }
            _ => EMPTY,
        }
    }

    /// The index in the window of the page whose direct-map address holds `addr` (the inverse
    /// of the linear map: a subtract and a shift), unchecked: at least the window's `pages`
    /// when `addr` lies outside it, so a caller indexing an array of exactly `pages` entries
    /// with it checks both at once.
    #[cfg(feature = "slab")]
    #[inline(always)]
    pub(crate) fn page_index(&self, addr: usize) -> usize {
        addr.wrapping_sub(self.virt) / PAGE_SIZE
    }

    /// Pages in the window (0 when the region has no linear direct map).
    #[cfg(feature = "slab")]
    #[inline]
    pub(crate) fn pages(&self) -> u64 {
        self.pages
    }

    /// The 512 words of the direct-mapped page `pfn` of `platform`, the platform the window
    /// was made from (invariant 9); `None` if `pfn` has no direct map.
    #[inline(always)]
    pub(crate) fn table<'p, P: Platform>(&self, platform: &'p P, pfn: Pfn) -> Option<&'p [AtomicU64; WORDS]> {
        let off = pfn.0.wrapping_sub(self.start);
        if off >= self.pages {
            return PageWords::direct_table(platform, pfn);
        }
        // SAFETY: invariant 9: page `off < pages` of the window is `pfn`, mapped linearly at
        // `virt + off * PAGE_SIZE` (Platform item 1: valid, page-aligned, PAGE_SIZE bytes,
        // non-null, while the platform lives, which outlasts `'p`); invariant 4: only
        // atomics are made of it.
        Some(unsafe { words_at(NonNull::new_unchecked((self.virt + off as usize * PAGE_SIZE) as *mut u8)) })
    }
}

/// The words of the page at `ptr`.
///
/// # Safety
/// `ptr` is valid for PAGE_SIZE bytes of reads and writes, page-aligned, for `'a`, and is
/// reached only atomically meanwhile (invariant 4).
#[inline]
unsafe fn words_at<'a>(ptr: NonNull<u8>) -> &'a [AtomicU64; WORDS] {
    // SAFETY: the caller's contract: valid and aligned for 512 u64s, which an AtomicU64
    // array has the layout of (invariant 4).
    unsafe { &*(ptr.as_ptr() as *const [AtomicU64; WORDS]) }
}

impl<P: Platform> Drop for PageWords<'_, P> {
    #[inline]
    fn drop(&mut self) {
        if self.local {
            self.platform.unmap_local(self.pfn, self.ptr);
        }
    }
}

impl<P: Platform, M> core::fmt::Debug for PageAccess<'_, P, M> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PageAccess")
            .field("pfn", &self.pfn)
            .field("start", &self.start)
            .field("len", &self.len)
            .field("local", &self.local)
            .finish()
    }
}

/// An array of `n` values of `T` in boot memory (see the module header, items 6-8): built once by
/// `BootArray::new` (crate-private), then read through shared references for the machine's life.
pub struct BootArray<T> {
    /// Invariants 6 and 7: `len` initialised values, reserved and mapped.
    ptr: NonNull<T>,
    len: usize,
    /// Boot pages the array occupies.
    pages: u64,
    /// Owns `T`s for auto traits and variance (invariant 8 narrows Send/Sync below).
    _values: PhantomData<T>,
}

// SAFETY: invariant 8: the array only ever hands out `&T`, so sending it to another thread
// gives that thread shared access to the values and nothing more, which `T: Sync` allows; the
// memory stays valid wherever the array goes (invariants 6 and 7).
unsafe impl<T: Sync> Send for BootArray<T> {}
// SAFETY: as above: `&BootArray<T>` yields only `&T`.
unsafe impl<T: Sync> Sync for BootArray<T> {}

impl<T> BootArray<T> {
    const ALIGN_OK: () = assert!(core::mem::align_of::<T>() <= PAGE_SIZE, "boot arrays are page-aligned");

    /// Takes boot memory for `n` values of `T` (preferring memory inside `prefer`, the region
    /// they describe) and writes `init(i)` into slot `i`.
    ///
    /// Errors: [`BootError::OutOfMemory`] if no mapped range fits (or the size overflows),
    /// [`BootError::NoDirectMap`] if the platform does not direct-map what it got,
    /// [`BootError::TooManyRanges`] as for [`BootAllocator::alloc`].
    pub(crate) fn new<P: Platform>(
        alloc: &mut BootAllocator,
        platform: &P,
        n: usize,
        prefer: Option<&Region>,
        mut init: impl FnMut(usize) -> T,
    ) -> Result<Self, BootError> {
        let () = Self::ALIGN_OK;
        let bytes = n.checked_mul(core::mem::size_of::<T>()).ok_or(BootError::OutOfMemory { pages: u64::MAX })?;
        let pages = (bytes.div_ceil(PAGE_SIZE) as u64).max(1);
        let pfn = alloc.alloc(pages, 0, prefer)?;
        let base = platform.direct_map(pfn).ok_or(BootError::NoDirectMap(pfn))?.cast::<T>();
        for i in 0..n {
            // SAFETY: invariants 6 and 7 for the array being built: `pages` pages at `pfn` are
            // ours alone, direct-mapped linearly and page-aligned, and `i < n` keeps slot `i`
            // inside them; the slot is written once, before any reference to it exists.
            unsafe { base.as_ptr().add(i).write(init(i)) };
        }
        Ok(BootArray { ptr: base, len: n, pages, _values: PhantomData })
    }

    /// An array of no values, in no memory (a placeholder: the memmap's hot region on a
    /// machine without a flat region).
    pub(crate) const fn empty() -> Self {
        BootArray { ptr: NonNull::dangling(), len: 0, pages: 0, _values: PhantomData }
    }

    /// A second array value over the same values (invariant 7: kept where this one is kept).
    /// It owns no memory of its own: [`BootArray::bytes`] of an alias is 0, so memory counted
    /// from the original is not counted twice.
    pub(crate) fn alias(&self) -> Self {
        BootArray { ptr: self.ptr, len: self.len, pages: 0, _values: PhantomData }
    }

    /// The values, as a slice.
    #[inline]
    pub fn as_slice(&self) -> &[T] {
        // SAFETY: `ptr` holds `len` initialised values that stay valid and are never written
        // through the array while it lives (invariants 6-8).
        unsafe { core::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The value at `i`, if `i < len`.
    #[inline]
    pub fn get(&self, i: usize) -> Option<&T> {
        self.as_slice().get(i)
    }

    /// Number of values.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the array holds no value.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The values in order.
    #[inline]
    pub fn iter(&self) -> core::slice::Iter<'_, T> {
        self.as_slice().iter()
    }

    /// Bytes of boot memory the array occupies (whole pages).
    #[inline]
    pub fn bytes(&self) -> u64 {
        self.pages * PAGE_SIZE as u64
    }
}

impl<T> core::ops::Index<usize> for BootArray<T> {
    type Output = T;
    /// The value at `i`; panics if `i >= len` (use [`BootArray::get`] for a checked read).
    #[inline]
    fn index(&self, i: usize) -> &T {
        &self.as_slice()[i]
    }
}

impl<'a, T> IntoIterator for &'a BootArray<T> {
    type Item = &'a T;
    type IntoIter = core::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<T: core::fmt::Debug> core::fmt::Debug for BootArray<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::base::sync::{AtomicU64, Ordering};
    use std::boxed::Box;
    use std::vec::Vec;

    /// Four pages; pfn 3 has no direct map (a local mapping into the same buffer); pfn 9 is
    /// absent. Counts live local mappings.
    struct Four {
        buf: NonNull<u8>,
        live: AtomicU64,
        maps: AtomicU64,
    }
    // SAFETY: Platform item 3: plain memory; the tests decide who touches which page.
    unsafe impl Send for Four {}
    // SAFETY: as above.
    unsafe impl Sync for Four {}
    // SAFETY: Platform items 1-3: the buffer is 4 pages, page-aligned and leaked; pfns 0..3 are direct-mapped
    // linearly, pfn 3 only locally; nothing else writes it.
    unsafe impl Platform for Four {
        fn direct_map(&self, pfn: Pfn) -> Option<NonNull<u8>> {
            // SAFETY: Platform item 1: pfn < 3 keeps the offset inside the buffer.
            (pfn.0 < 3).then(|| unsafe { NonNull::new_unchecked(self.buf.as_ptr().add(pfn.0 as usize * PAGE_SIZE)) })
        }
        fn virt_to_pfn(&self, _: NonNull<u8>) -> Option<Pfn> {
            None
        }
        fn map_local(&self, pfn: Pfn) -> Option<NonNull<u8>> {
            if pfn.0 >= 4 {
                return None;
            }
            self.live.fetch_add(1, Ordering::Relaxed);
            self.maps.fetch_add(1, Ordering::Relaxed);
            // SAFETY: Platform item 2: pfn < 4 keeps the offset inside the buffer.
            Some(unsafe { NonNull::new_unchecked(self.buf.as_ptr().add(pfn.0 as usize * PAGE_SIZE)) })
        }
        fn unmap_local(&self, _: Pfn, _: NonNull<u8>) {
            self.live.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn four() -> Box<Four> {
        let l = std::alloc::Layout::from_size_align(4 * PAGE_SIZE, PAGE_SIZE).unwrap();
        // SAFETY: non-zero size; leaked on purpose (Platform item 1 for `Four`).
        let buf = NonNull::new(unsafe { std::alloc::alloc_zeroed(l) }).unwrap();
        Box::new(Four { buf, live: AtomicU64::new(0), maps: AtomicU64::new(0) })
    }

    #[test]
    fn read_write_fill_compare_with_bounds() {
        let p = four();
        // SAFETY: invariant 2: the test owns every page and maps each once at a time.
        let mut a = unsafe { PageAccess::new(&*p, Pfn(1)) }.unwrap();
        assert_eq!(a.pfn(), Pfn(1));
        a.write(10, b"hello").unwrap();
        let mut got = [0u8; 5];
        a.read(10, &mut got).unwrap();
        assert_eq!(&got, b"hello");
        assert!(a.compare(10, b"hello").unwrap() && !a.compare(10, b"hellp").unwrap());
        a.fill(PAGE_SIZE - 3, 3, 0xee).unwrap();
        assert_eq!(&a.bytes()[PAGE_SIZE - 4..], &[0, 0xee, 0xee, 0xee]);
        assert_eq!(a.fill(PAGE_SIZE - 3, 4, 1), Err(OutOfPage { offset: PAGE_SIZE - 3, len: 4 }));
        assert_eq!(a.write(usize::MAX, b"x"), Err(OutOfPage { offset: usize::MAX, len: 1 }));
        assert!(a.read(PAGE_SIZE, &mut got).is_err());
        assert!(a.compare(PAGE_SIZE - 1, b"ab").is_err());
        // Nothing was written by the refused calls.
        assert_eq!(a.bytes().iter().filter(|&&b| b != 0).count(), 5 + 3);
        a.zero();
        assert!(a.bytes().iter().all(|&b| b == 0));
    }

    #[test]
    fn copies_between_and_within_pages() {
        let p = four();
        // SAFETY: invariant 2: the test owns pages 0 and 2, mapped once each.
        let (mut s, mut d) = unsafe { (PageAccess::new(&*p, Pfn(0)).unwrap(), PageAccess::new(&*p, Pfn(2)).unwrap()) };
        let pat: Vec<u8> = (0..PAGE_SIZE).map(|i| (i * 7 % 251) as u8).collect();
        s.write(0, &pat).unwrap();
        d.copy_all_from(&s).unwrap();
        assert_eq!(d.bytes(), &pat[..]);
        d.zero();
        d.copy_from(100, &s, 4000, 96).unwrap();
        assert_eq!(&d.bytes()[100..196], &pat[4000..4096]);
        assert!(d.copy_from(4000, &s, 0, 97).is_err() && d.copy_from(0, &s, 4001, 96).is_err());
        s.copy_within(0, 1, 8).unwrap(); // overlapping, like memmove
        assert_eq!(&s.bytes()[1..9], &pat[0..8]);
        assert!(s.copy_within(PAGE_SIZE - 4, 0, 8).is_err());
        drop(s);
        // Two read-only views of one page may coexist, and an exclusive page copies from one.
        // SAFETY: invariant 2: nobody writes page 0 while they live.
        let (r1, r2) = unsafe {
            (PageAccess::new_read_only(&*p, Pfn(0)).unwrap(), PageAccess::new_read_only(&*p, Pfn(0)).unwrap())
        };
        assert!(r1.compare(1, &pat[0..8]).unwrap() && r2.bytes() == r1.bytes());
        let mut b = [0u8; 4];
        r2.read(PAGE_SIZE - 4, &mut b).unwrap();
        assert_eq!(&b[..], &pat[PAGE_SIZE - 4..]);
        d.copy_all_from(&r1).unwrap();
        assert_eq!(d.bytes(), r1.bytes());
    }

    #[test]
    fn windows_are_claims_on_part_of_a_page() {
        let p = four();
        // SAFETY: invariant 2: the test owns page 1; the two windows are disjoint.
        let (mut lo, mut hi) = unsafe {
            (PageAccess::new_range(&*p, Pfn(1), 0, 100).unwrap(), PageAccess::new_range(&*p, Pfn(1), 4000, 96).unwrap())
        };
        assert_eq!((lo.len(), hi.start(), hi.bytes().len()), (100, 4000, 96));
        lo.fill(0, 100, 1).unwrap();
        hi.fill(0, 96, 2).unwrap();
        assert_eq!(hi.write(90, &[0; 7]), Err(OutOfPage { offset: 90, len: 7 }));
        assert!(lo.copy_all_from(&hi).is_err());
        let mut mid = hi.narrow(10, 20).unwrap();
        assert_eq!((mid.start(), mid.len()), (4010, 20));
        assert!(mid.fill(0, 21, 3).is_err() && mid.fill(0, 20, 3).is_ok());
        assert!(mid.narrow(15, 6).is_err());
        drop(lo);
        // SAFETY: invariant 2: the test owns the page; nothing else maps it now.
        let whole = unsafe { PageAccess::new_read_only(&*p, Pfn(1)) }.unwrap();
        assert!(whole.bytes()[..100].iter().all(|&b| b == 1));
        assert!(whole.bytes()[4000..4010].iter().all(|&b| b == 2));
        assert!(whole.bytes()[4010..4030].iter().all(|&b| b == 3));
        assert!(whole.bytes()[4030..].iter().all(|&b| b == 2));
        // SAFETY: as above; these ranges are refused before anything is mapped.
        unsafe {
            assert!(PageAccess::new_range(&*p, Pfn(1), 4000, 97).is_none());
            assert!(PageAccess::new_range_read_only(&*p, Pfn(1), usize::MAX, 2).is_none());
        }
    }

    #[test]
    fn local_mappings_are_unmapped_on_drop_and_absent_pages_refused() {
        let p = four();
        {
            // SAFETY: invariant 2: the test owns page 3.
            let mut a = unsafe { PageAccess::new(&*p, Pfn(3)) }.unwrap();
            a.write(0, &[1, 2, 3]).unwrap();
            assert_eq!(p.live.load(Ordering::Relaxed), 1);
        }
        assert_eq!(p.live.load(Ordering::Relaxed), 0);
        // SAFETY: as above, page 0 (forced local) and the absent page 9.
        unsafe {
            let a = PageAccess::new_local(&*p, Pfn(0)).unwrap();
            assert_eq!((p.live.load(Ordering::Relaxed), p.maps.load(Ordering::Relaxed)), (1, 2));
            drop(a);
            assert!(PageAccess::new(&*p, Pfn(9)).is_none());
        }
        assert_eq!(p.live.load(Ordering::Relaxed), 0);
        // The local mapping of page 3 wrote the same memory the buffer holds.
        // SAFETY: invariant 1 (Platform item 2 for `Four`): page 3 is at offset 3 pages of the leaked buffer, which nobody else touches.
        let raw = unsafe { core::slice::from_raw_parts(p.buf.as_ptr().add(3 * PAGE_SIZE), 3) };
        assert_eq!(raw, &[1, 2, 3]);
    }

    #[test]
    fn page_words_are_atomics_over_the_page_and_local_maps_are_unmapped() {
        let p = four();
        {
            let w = PageWords::new(&*p, Pfn(1)).unwrap();
            w.word(0).store(0x0102_0304_0506_0708, Ordering::Relaxed);
            w.word(511).store(u64::MAX, Ordering::Relaxed);
            assert_eq!(w.table()[511].load(Ordering::Relaxed), u64::MAX);
            // The same bytes through the byte view (nobody else touches page 1 meanwhile).
            drop(w);
            // SAFETY: invariant 2: the test owns page 1 and no word view of it is live.
            let a = unsafe { PageAccess::new_read_only(&*p, Pfn(1)) }.unwrap();
            assert_eq!(a.bytes()[..8], 0x0102_0304_0506_0708u64.to_ne_bytes());
            assert_eq!(a.bytes()[PAGE_SIZE - 8..], [0xff; 8]);
        }
        {
            let w = PageWords::new(&*p, Pfn(3)).unwrap();
            assert_eq!(p.live.load(Ordering::Relaxed), 1, "page 3 has no direct map: a local mapping");
            w.word(2).store(9, Ordering::Relaxed);
        }
        assert_eq!(p.live.load(Ordering::Relaxed), 0, "unmapped on drop");
        assert!(PageWords::new(&*p, Pfn(9)).is_none());
        // Direct tables exist only for direct-mapped pages and last as long as the platform.
        assert!(PageWords::direct_table(&*p, Pfn(3)).is_none());
        let t = PageWords::direct_table(&*p, Pfn(1)).unwrap();
        assert_eq!(t[0].load(Ordering::Relaxed), 0x0102_0304_0506_0708);
    }

    #[test]
    #[should_panic(expected = "index out of bounds")]
    fn page_words_index_is_checked() {
        let p = four();
        let w = PageWords::new(&*p, Pfn(0)).unwrap();
        let _ = w.word(PAGE_SIZE / 8);
    }

    #[test]
    fn allocated_pages_zero_through_the_byte_view() {
        let p = four();
        PageWords::new(&*p, Pfn(2)).unwrap().word(7).store(5, Ordering::Relaxed);
        PageAccess::new_allocated(&*p, Pfn(2)).unwrap().zero();
        assert_eq!(PageWords::new(&*p, Pfn(2)).unwrap().word(7).load(Ordering::Relaxed), 0);
    }

    /// [`BootArray`] (items 6-8).
    mod boot_array {
        use super::super::*;
        use crate::base::layout::{MemmapLayout, MemoryLayout, RegionSpec};
        use crate::base::platform::test_platform::Buf;
        use crate::base::sync::{AtomicU32, Ordering};

        fn one_region_for_boot(pages: u64) -> (MemoryLayout, Buf) {
            let mut l = MemoryLayout::new();
            l.add_region(RegionSpec {
                start: Pfn(0),
                end: Pfn(pages),
                node: 0,
                mapped: true,
                layout: MemmapLayout::Flat,
            })
            .unwrap();
            (l, Buf::leaked(pages))
        }

        #[test]
        fn boot_array_initialises_indexes_and_reserves() {
            let (l, p) = one_region_for_boot(64);
            let mut b = BootAllocator::new(&l).unwrap();
            let a = BootArray::new(&mut b, &p, 1000, None, |i| AtomicU32::new(i as u32 * 3)).unwrap();
            assert_eq!(a.len(), 1000);
            assert!(!a.is_empty());
            assert_eq!(a.bytes(), 4000u64.div_ceil(PAGE_SIZE as u64) * PAGE_SIZE as u64);
            assert_eq!(b.allocated_pages(), 1, "1000 u32s fit one page");
            assert_eq!(a[999].load(Ordering::Relaxed), 2997);
            assert_eq!(a.get(7).map(|v| v.load(Ordering::Relaxed)), Some(21));
            assert!(a.get(1000).is_none(), "out of range is None, not a panic");
            a[5].store(11, Ordering::Relaxed);
            let sum: u64 = a.iter().map(|v| v.load(Ordering::Relaxed) as u64).sum();
            assert_eq!(sum, (0..1000u64).map(|i| i * 3).sum::<u64>() - 15 + 11);
            assert_eq!((&a).into_iter().count(), 1000);
            // The array's pages are reserved: a second array never overlaps it.
            let c = BootArray::new(&mut b, &p, 2 * PAGE_SIZE, None, |i| (i % 251) as u8).unwrap();
            assert_eq!(c.bytes(), 2 * PAGE_SIZE as u64);
            assert_eq!(a[999].load(Ordering::Relaxed), 2997, "the second array did not overwrite the first");
            assert_eq!(c[PAGE_SIZE + 3], ((PAGE_SIZE + 3) % 251) as u8);
        }

        #[test]
        #[should_panic(expected = "index out of bounds")]
        fn boot_array_index_out_of_range_panics() {
            let (l, p) = one_region_for_boot(8);
            let mut b = BootAllocator::new(&l).unwrap();
            let a = BootArray::new(&mut b, &p, 3, None, |i| i as u16).unwrap();
            let _ = a[3];
        }

        #[test]
        fn boot_array_errors_are_typed() {
            let (l, p) = one_region_for_boot(8);
            let mut b = BootAllocator::new(&l).unwrap();
            assert_eq!(
                BootArray::new(&mut b, &p, 9 * PAGE_SIZE, None, |_| 0u8).err(),
                Some(BootError::OutOfMemory { pages: 9 })
            );
            assert_eq!(
                BootArray::new(&mut b, &p, usize::MAX, None, |_| 0u64).err(),
                Some(BootError::OutOfMemory { pages: u64::MAX })
            );
            // Memory the platform does not direct-map.
            let mut l2 = MemoryLayout::new();
            l2.add_region(RegionSpec {
                start: Pfn(0),
                end: Pfn(16),
                node: 0,
                mapped: true,
                layout: MemmapLayout::Flat,
            })
            .unwrap();
            let mut b2 = BootAllocator::new(&l2).unwrap();
            assert_eq!(BootArray::new(&mut b2, &p, 1, None, |_| 0u8).err(), Some(BootError::NoDirectMap(Pfn(15))));
            // An empty array still owns a page (its address is a real one) and reads nothing.
            let e = BootArray::new(&mut b, &p, 0, None, |_| 0u8).unwrap();
            assert!(e.is_empty() && e.get(0).is_none() && e.iter().next().is_none());
        }

        fn assert_send_sync<T: Send + Sync>() {}

        #[test]
        fn boot_array_is_send_and_sync_for_sync_values() {
            assert_send_sync::<BootArray<AtomicU32>>();
            assert_send_sync::<BootArray<crate::base::sync::SpinLock<u64>>>();
        }
    }
}
