//! The [`Platform`] trait: what the core needs from the machine it manages, and nothing more.
//!
//! The core never assumes how physical memory is reached: a page either has a permanent
//! kernel mapping ([`Platform::direct_map`]) or can be mapped for a moment
//! ([`Platform::map_local`], like Linux's `kmap_local_page`) — highmem, or a pmem region
//! registered without a direct map. [`PageMap`] hides the difference for the few places that
//! must touch page contents (buddy free-list links, zeroing).

use core::ptr::NonNull;

use crate::addr::{Pfn, PAGE_SIZE};

/// The machine underneath the memory manager.
///
/// # Safety
/// Implementors promise, for every pfn of memory they report as present:
/// 1. a pointer returned by `direct_map` is valid for reads and writes of [`PAGE_SIZE`] bytes,
///    page-aligned, for as long as the platform value lives, and distinct pfns never alias;
///    within one registered region the direct map is linear (`direct_map(pfn + i)` is
///    `direct_map(pfn)` plus `i` pages), so a multi-page boot allocation is one array;
/// 2. a pointer returned by `map_local` is valid in the same way until the matching
///    `unmap_local`, and only the calling thread uses it;
/// 3. nothing outside the memory manager writes that memory unless the manager handed it out.
pub unsafe trait Platform: Send + Sync {
    /// The permanent kernel-virtual address of a page, or `None` if it has none.
    fn direct_map(&self, pfn: Pfn) -> Option<NonNull<u8>>;

    /// The pfn whose direct-map page holds `addr` (the inverse of [`Platform::direct_map`]);
    /// `None` for addresses outside the direct map.
    fn virt_to_pfn(&self, addr: NonNull<u8>) -> Option<Pfn>;

    /// Maps one page for a moment (for memory with no permanent mapping); `None` if the pfn
    /// cannot be mapped at all.
    fn map_local(&self, pfn: Pfn) -> Option<NonNull<u8>>;

    /// Ends a [`Platform::map_local`] mapping.
    fn unmap_local(&self, pfn: Pfn, addr: NonNull<u8>);

    /// Called while spinning (waiting for a lock or a grace period).
    fn relax(&self) {
        core::hint::spin_loop();
    }

    /// Makes a page's direct mapping inaccessible (`accessible == false`) or accessible again,
    /// for debug guard pages ([`Gfp::GUARD`](crate::Gfp::GUARD)). The manager never touches the
    /// contents of a page while it is protected. The default does nothing (a platform that
    /// cannot protect pages still gets guard pages tagged `Guard` in the memmap).
    fn protect(&self, pfn: Pfn, accessible: bool) {
        let _ = (pfn, accessible);
    }
}

/// Access to one page's contents through whichever mapping the platform offers.
pub(crate) struct PageMap<'p, P: Platform> {
    platform: &'p P,
    pfn: Pfn,
    ptr: NonNull<u8>,
    local: bool,
}

impl<'p, P: Platform> PageMap<'p, P> {
    /// Maps `pfn`: the direct map if there is one, else a local mapping.
    #[inline]
    pub(crate) fn new(platform: &'p P, pfn: Pfn) -> Option<Self> {
        if let Some(ptr) = platform.direct_map(pfn) {
            return Some(PageMap { platform, pfn, ptr, local: false });
        }
        let ptr = platform.map_local(pfn)?;
        Some(PageMap { platform, pfn, ptr, local: true })
    }

    /// The u64 at `index` (0..512) of the page, as an atomic.
    #[inline]
    pub(crate) fn word(&self, index: usize) -> &crate::sync::AtomicU64 {
        assert!(index < PAGE_SIZE / 8);
        // SAFETY: the mapping is valid for PAGE_SIZE bytes while `self` lives (Platform items
        // 1 and 2), the offset is in bounds and 8-aligned (pages are page-aligned), and an
        // AtomicU64 has the size and alignment of a u64.
        unsafe { &*(self.ptr.as_ptr().add(index * 8) as *const crate::sync::AtomicU64) }
    }

    /// Fills the page with zeroes.
    pub(crate) fn zero(&self) {
        // SAFETY: valid for PAGE_SIZE bytes of writes (Platform items 1 and 2); the caller
        // owns the page (it was just allocated), so no one else reads it concurrently.
        unsafe { core::ptr::write_bytes(self.ptr.as_ptr(), 0, PAGE_SIZE) }
    }
}

impl<P: Platform> Drop for PageMap<'_, P> {
    #[inline]
    fn drop(&mut self) {
        if self.local {
            self.platform.unmap_local(self.pfn, self.ptr);
        }
    }
}
