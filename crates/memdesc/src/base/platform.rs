//! The [`Platform`] trait: what the core needs from the machine it manages, and nothing more.
//!
//! The core never assumes how physical memory is reached: a page either has a permanent
//! kernel mapping ([`Platform::direct_map`]) or can be mapped for a moment
//! ([`Platform::map_local`], like Linux's `kmap_local_page`) — highmem, or a pmem region
//! registered without a direct map. [`crate::base::page_access`] hides the difference for the few
//! places that must touch page contents (buddy free-list links, zeroing, copies).
//!
//! This module also holds the one test platform of the unit tests (`test_platform::Buf`),
//! so that no test module needs an `unsafe impl` of its own.
//!
//! # Invariants
//! The numbered items of [`Platform`]'s `# Safety` section: every `unsafe` block of the core
//! that touches platform memory cites them, and the test platform's `unsafe impl` proves them.

use core::ptr::NonNull;

use crate::base::addr::Pfn;

/// The machine underneath the memory manager.
///
/// # Safety
/// Implementors promise, for every pfn of memory they report as present:
/// 1. a pointer returned by `direct_map` is valid for reads and writes of
///    [`PAGE_SIZE`](crate::base::addr::PAGE_SIZE) bytes, page-aligned, for as long as the platform
///    value lives, and distinct pfns never alias (the core keeps what it builds in that memory,
///    such as the memmap's boot arrays, beside the platform and never uses it after the
///    platform is gone); within one registered region the direct map is linear (`direct_map(pfn + i)` is
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

    /// Makes a page's direct mapping inaccessible (`accessible == false`) or accessible again,
    /// for debug guard pages ([`Gfp::GUARD`](crate::Gfp::GUARD)). The manager never touches the
    /// contents of a page while it is protected. The default does nothing (a platform that
    /// cannot protect pages still gets guard pages tagged `Guard` in the memmap).
    fn protect(&self, pfn: Pfn, accessible: bool) {
        let _ = (pfn, accessible);
    }
}

/// The one test platform of the crate's unit tests: a leaked, page-aligned host buffer,
/// direct-mapped linearly from pfn 0 (`map_local` returns the same address).
#[cfg(all(test, not(loom)))]
pub(crate) mod test_platform {
    use super::*;
    use crate::base::addr::PAGE_SIZE;

    /// A platform over `pages` pages of leaked host memory.
    pub(crate) struct Buf(NonNull<u8>, u64);

    // SAFETY: plain memory; the manager decides who touches which page (Platform item 3).
    unsafe impl Send for Buf {}
    // SAFETY: as above.
    unsafe impl Sync for Buf {}

    // SAFETY: items 1-3: the buffer is `pages` pages, page-aligned, zeroed, leaked (valid for
    // the rest of the process, so longer than any platform value), and only reached through
    // the manager; `direct_map` is linear and distinct pfns never alias; `map_local` hands out
    // the same valid address.
    unsafe impl Platform for Buf {
        fn direct_map(&self, pfn: Pfn) -> Option<NonNull<u8>> {
            // SAFETY: item 1: pfn < pages keeps the offset inside the buffer, so the result is
            // non-null.
            (pfn.0 < self.1).then(|| unsafe { NonNull::new_unchecked(self.0.as_ptr().add(pfn.0 as usize * PAGE_SIZE)) })
        }
        fn virt_to_pfn(&self, a: NonNull<u8>) -> Option<Pfn> {
            let off = (a.as_ptr() as usize).checked_sub(self.0.as_ptr() as usize)?;
            (off < self.1 as usize * PAGE_SIZE).then_some(Pfn((off / PAGE_SIZE) as u64))
        }
        fn map_local(&self, pfn: Pfn) -> Option<NonNull<u8>> {
            self.direct_map(pfn)
        }
        fn unmap_local(&self, _: Pfn, _: NonNull<u8>) {}
    }

    impl Buf {
        /// `pages` zeroed pages of leaked host memory.
        pub(crate) fn leaked(pages: u64) -> Buf {
            let l = std::alloc::Layout::from_size_align(pages.max(1) as usize * PAGE_SIZE, PAGE_SIZE).unwrap();
            // SAFETY: the size is non-zero; the buffer is leaked on purpose (item 1: the machine
            // keeps pointers into it).
            let p = NonNull::new(unsafe { std::alloc::alloc_zeroed(l) }).expect("host memory");
            Buf(p, pages)
        }
    }
}
