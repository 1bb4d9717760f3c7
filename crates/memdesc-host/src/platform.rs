//! The simulated platform: host mappings standing in for physical memory.
//!
//! All `unsafe` of the host crate lives here: `mmap`/`munmap` of the physical-memory window,
//! the memfd behind unmapped regions, and the pointer arithmetic of the direct map.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use memdesc::{MemoryLayout, Pfn, Platform, PAGE_SIZE};

/// Why the simulated memory could not be set up.
#[derive(Debug)]
pub struct SimError(pub String);

impl std::fmt::Display for SimError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SimError {}

struct Unmapped {
    start: u64,
    end: u64,
    fd: i32,
}

/// Which window pages the host held at one moment ([`SimPlatform::residency`]).
#[derive(Debug, Clone)]
pub struct Residency {
    start: u64,
    resident: Vec<bool>,
}

impl Residency {
    /// Pages of the snapshot's range that were resident.
    pub fn resident_pages(&self) -> u64 {
        self.resident.iter().filter(|r| **r).count() as u64
    }
}

/// Physical memory of a simulated machine.
pub struct SimPlatform {
    base: NonNull<u8>,
    len: usize,
    end_pfn: u64,
    unmapped: Vec<Unmapped>,
    local_maps: AtomicU64,
    huge_pages: AtomicU64,
}

// SAFETY: the mapping is plain memory shared by all threads; the memory manager decides who
// touches which page. The memfds are only used through thread-safe syscalls.
unsafe impl Send for SimPlatform {}
// SAFETY: as above; the counter is atomic.
unsafe impl Sync for SimPlatform {}

fn last_os_error(what: &str) -> SimError {
    SimError(format!("{what}: {}", std::io::Error::last_os_error()))
}

impl SimPlatform {
    /// Reserves host address space for every pfn below the layout's end (holes included,
    /// never touched) and a memfd for each unmapped region.
    pub fn new(layout: &MemoryLayout) -> Result<Self, SimError> {
        let end_pfn = layout.end_pfn().0;
        let len = (end_pfn as usize)
            .checked_mul(PAGE_SIZE)
            .ok_or_else(|| SimError("layout too large".into()))?
            .max(PAGE_SIZE);
        // SAFETY: a fresh anonymous private mapping; no existing memory is affected.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(last_os_error("mmap of simulated physical memory"));
        }
        let base = NonNull::new(ptr as *mut u8).ok_or_else(|| SimError("mmap returned null".into()))?;
        let mut sim = SimPlatform {
            base,
            len,
            end_pfn,
            unmapped: Vec::new(),
            local_maps: AtomicU64::new(0),
            huge_pages: AtomicU64::new(0),
        };
        let mut err = None;
        let _ = layout.normalise(|r| {
            if !r.mapped && err.is_none() {
                match memfd(r.pages() as usize * PAGE_SIZE) {
                    Ok(fd) => sim.unmapped.push(Unmapped { start: r.start.0, end: r.end.0, fd }),
                    Err(e) => err = Some(e),
                }
            }
            Ok(())
        });
        match err {
            Some(e) => Err(e),
            None => Ok(sim),
        }
    }

    /// How many local (temporary) mappings were made: the cost of memory without a direct map.
    pub fn local_maps(&self) -> u64 {
        self.local_maps.load(Ordering::Relaxed)
    }

    /// Asks the host to back the window's pages `start..end` with 2 MiB pages, as a kernel
    /// maps its memmap (`vmemmap`) and direct map with large pages: without this every word
    /// of a flat memmap of gigabytes costs the simulation a 4 KiB TLB entry that the real
    /// machine does not pay. Only 2 MiB chunks that lie wholly in the range and that the host
    /// already holds page by page (all resident: the memmap and the other boot arrays, which
    /// boot wrote in full) are collapsed, so no untouched memory is made resident. Best
    /// effort (`MADV_COLLAPSE`, Linux 6.1; a host without it, or without a free huge page,
    /// keeps 4 KiB pages and nothing else changes): returns the chunks collapsed, which
    /// [`SimPlatform::huge_pages`] also counts.
    pub fn back_with_huge_pages(&self, start: Pfn, end: Pfn) -> u64 {
        const CHUNK_PAGES: u64 = 512;
        let end = end.0.min(self.end_pfn);
        let mut collapsed = 0;
        let mut chunk = start.0.next_multiple_of(CHUNK_PAGES);
        // Window pages of regions without a direct map are never touched (their memory is the
        // memfd's), so the residency test leaves them out too.
        while chunk + CHUNK_PAGES <= end {
            if self.resident_pages(Pfn(chunk), Pfn(chunk + CHUNK_PAGES)) == CHUNK_PAGES
                && Self::advise_huge(self.window_page(chunk), CHUNK_PAGES as usize * PAGE_SIZE)
            {
                collapsed += 1;
            }
            chunk += CHUNK_PAGES;
        }
        self.huge_pages.fetch_add(collapsed, Ordering::Relaxed);
        collapsed
    }

    /// How many of the window's pages `start..end` the host holds in memory now (`mincore`):
    /// the simulation's cost in host RAM for that range.
    pub fn resident_pages(&self, start: Pfn, end: Pfn) -> u64 {
        let mut n = 0;
        self.for_each_residency(start, end, |_, resident| n += u64::from(resident));
        n
    }

    /// Which of the window's pages `start..end` the host holds in memory now: a snapshot to
    /// compare a later state with ([`SimPlatform::populate_touched_since`]).
    pub fn residency(&self, start: Pfn, end: Pfn) -> Residency {
        let mut resident = Vec::with_capacity(end.0.min(self.end_pfn).saturating_sub(start.0) as usize);
        self.for_each_residency(start, end, |_, r| resident.push(r));
        Residency { start: start.0, resident }
    }

    /// Pre-faults the memory a run is about to touch again, so that a benchmark times the
    /// allocator and not the host's first-touch faults on simulated RAM (a real machine's
    /// memory is there before the allocator writes it; the host backs the simulation's
    /// window lazily, 1.5 to 9 us per first write on the 2-CPU machines). Every aligned
    /// chunk of `chunk_pages` pages (a power of two) of `before`'s range that holds a page
    /// the host has made resident since `before` was taken is made resident in full
    /// (`MADV_POPULATE_WRITE`, Linux 5.14: present pages keep their contents, absent ones
    /// become zeroed pages, exactly what a first write would have found). Chunks overlapping
    /// a region without a direct map are left alone (their window pages are never touched).
    /// Returns the pages made resident, or `Err` with the host's error.
    pub fn populate_touched_since(&self, before: &Residency, chunk_pages: u64) -> Result<u64, SimError> {
        assert!(chunk_pages.is_power_of_two(), "chunk_pages {chunk_pages} is not a power of two");
        let end = before.start + before.resident.len() as u64;
        // Per chunk of the range, in order: (first pfn, resident pages now, whether any of
        // them became resident since `before`), from one pass of `mincore`.
        let mut chunks: Vec<(u64, u64, bool)> = Vec::new();
        self.for_each_residency(Pfn(before.start), Pfn(end), |pfn, resident| {
            let chunk = pfn & !(chunk_pages - 1);
            if chunks.last().is_none_or(|c| c.0 != chunk) {
                chunks.push((chunk, 0, false));
            }
            let c = chunks.last_mut().expect("pushed above");
            c.1 += u64::from(resident);
            c.2 |= resident && !before.resident[(pfn - before.start) as usize];
        });
        let mut populated = 0;
        for (chunk, resident, touched) in chunks {
            let (lo, hi) = (chunk.max(before.start), (chunk + chunk_pages).min(end));
            if !touched || self.unmapped.iter().any(|u| u.start < hi && lo < u.end) {
                continue;
            }
            populated += hi - lo - resident;
            let addr = self.window_page(lo).as_ptr() as *mut libc::c_void;
            // SAFETY: `lo..hi` lies inside the window (`hi <= end <= end_pfn`), our own private
            // read-write mapping with no unmapped region in it (checked above);
            // MADV_POPULATE_WRITE faults its pages in as a write would, keeping the contents
            // of those present (madvise(2)), so the core's accesses see the same memory.
            if unsafe { libc::madvise(addr, (hi - lo) as usize * PAGE_SIZE, libc::MADV_POPULATE_WRITE) } != 0 {
                return Err(last_os_error("madvise(MADV_POPULATE_WRITE)"));
            }
        }
        Ok(populated)
    }

    /// `f(pfn, resident)` for each window page of `start..end` (`end` clipped to the window),
    /// in order, from `mincore`; pages it cannot report count as not resident.
    fn for_each_residency(&self, start: Pfn, end: Pfn, mut f: impl FnMut(u64, bool)) {
        let end = end.0.min(self.end_pfn);
        let mut pfn = start.0;
        let mut vec = [0u8; 512];
        while pfn < end {
            let pages = (end - pfn).min(512);
            let addr = self.window_page(pfn).as_ptr() as *mut libc::c_void;
            // SAFETY: mincore reads the residency of `pages` pages of our own mapping (`pfn +
            // pages <= end_pfn`) into `vec`, one byte per page (`pages <= 512`); it changes
            // nothing.
            if unsafe { libc::mincore(addr, pages as usize * PAGE_SIZE, vec.as_mut_ptr()) } != 0 {
                vec.fill(0);
            }
            for (i, r) in vec[..pages as usize].iter().enumerate() {
                f(pfn + i as u64, r & 1 != 0);
            }
            pfn += pages;
        }
    }

    /// The window address of page `pfn`; panics if `pfn` is not below `end_pfn` (every caller
    /// has checked that already, so the compare folds into theirs).
    #[inline]
    fn window_page(&self, pfn: u64) -> NonNull<u8> {
        assert!(pfn < self.end_pfn, "pfn {pfn} outside the window");
        // SAFETY: pfn < end_pfn (checked above), so the offset is inside the mapping of len
        // bytes, which is not null.
        unsafe { NonNull::new_unchecked(self.base.as_ptr().add(pfn as usize * PAGE_SIZE)) }
    }

    /// `MADV_HUGEPAGE` then `MADV_COLLAPSE` over `len` bytes at `page`, a 2 MiB chunk of the
    /// window; whether both succeeded.
    fn advise_huge(page: NonNull<u8>, len: usize) -> bool {
        const MADV_COLLAPSE: libc::c_int = 25;
        let addr = page.as_ptr() as *mut libc::c_void;
        // SAFETY: `addr..addr + len` is a chunk of our own private anonymous mapping (the
        // caller's); MADV_HUGEPAGE changes how the host may back it, never its contents.
        if unsafe { libc::madvise(addr, len, libc::MADV_HUGEPAGE) } != 0 {
            return false;
        }
        // SAFETY: as above; MADV_COLLAPSE copies the resident pages into one huge page and
        // remaps it in place, keeping every byte (Linux's madvise(2)), so the core's
        // accesses, atomic or not, see the same memory before, during and after.
        unsafe { libc::madvise(addr, len, MADV_COLLAPSE) == 0 }
    }

    /// 2 MiB chunks of the window the host backs with huge pages at this platform's request
    /// ([`SimPlatform::back_with_huge_pages`]).
    pub fn huge_pages(&self) -> u64 {
        self.huge_pages.load(Ordering::Relaxed)
    }

    /// Host bytes of the physical-memory window (virtual; only touched pages use RAM).
    pub fn window_bytes(&self) -> usize {
        self.len
    }

    fn unmapped_of(&self, pfn: u64) -> Option<&Unmapped> {
        self.unmapped.iter().find(|u| u.start <= pfn && pfn < u.end)
    }
}

fn memfd(bytes: usize) -> Result<i32, SimError> {
    // SAFETY: the name is a valid NUL-terminated string; the fd is owned by SimPlatform.
    let fd = unsafe { libc::memfd_create(c"memdesc-unmapped".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(last_os_error("memfd_create"));
    }
    // SAFETY: fd is a valid memfd we own.
    if unsafe { libc::ftruncate(fd, bytes as libc::off_t) } != 0 {
        return Err(last_os_error("ftruncate"));
    }
    Ok(fd)
}

// SAFETY: (1) direct_map returns base + pfn*4096 inside the live mapping for pfns below
// end_pfn outside unmapped regions: valid, page-aligned, non-aliasing, linear; the mapping
// lives as long as self. (2) map_local maps one page of the memfd fresh for the caller and
// unmap_local unmaps exactly that. (3) Nothing else writes the window.
unsafe impl Platform for SimPlatform {
    #[inline]
    fn direct_map(&self, pfn: Pfn) -> Option<NonNull<u8>> {
        if pfn.0 >= self.end_pfn || (!self.unmapped.is_empty() && self.unmapped_of(pfn.0).is_some()) {
            return None;
        }
        Some(self.window_page(pfn.0))
    }

    #[inline]
    fn virt_to_pfn(&self, addr: NonNull<u8>) -> Option<Pfn> {
        let off = (addr.as_ptr() as usize).checked_sub(self.base.as_ptr() as usize)?;
        let pfn = (off / PAGE_SIZE) as u64;
        (off < self.len && (self.unmapped.is_empty() || self.unmapped_of(pfn).is_none())).then_some(Pfn(pfn))
    }

    fn map_local(&self, pfn: Pfn) -> Option<NonNull<u8>> {
        let Some(u) = self.unmapped_of(pfn.0) else { return self.direct_map(pfn) };
        let off = ((pfn.0 - u.start) as usize * PAGE_SIZE) as libc::off_t;
        // SAFETY: maps one page of our memfd at a fresh address; off is inside the file.
        let p = unsafe {
            libc::mmap(std::ptr::null_mut(), PAGE_SIZE, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, u.fd, off)
        };
        if p == libc::MAP_FAILED {
            return None;
        }
        self.local_maps.fetch_add(1, Ordering::Relaxed);
        NonNull::new(p as *mut u8)
    }

    fn unmap_local(&self, pfn: Pfn, addr: NonNull<u8>) {
        if self.unmapped_of(pfn.0).is_some() {
            // SAFETY: addr came from map_local's mmap of one page for this pfn.
            unsafe { libc::munmap(addr.as_ptr() as *mut libc::c_void, PAGE_SIZE) };
        }
    }

    /// Guard pages: `mprotect`s the page of the window to no access, or back to read-write.
    /// Pages of unmapped regions (reached only through fresh local mappings) are left alone.
    fn protect(&self, pfn: Pfn, accessible: bool) {
        let Some(p) = self.direct_map(pfn) else { return };
        let prot = if accessible { libc::PROT_READ | libc::PROT_WRITE } else { libc::PROT_NONE };
        // SAFETY: p is one page-aligned page inside our own anonymous mapping; changing its
        // protection affects no memory outside the window. The core touches no protected page.
        let r = unsafe { libc::mprotect(p.as_ptr() as *mut libc::c_void, PAGE_SIZE, prot) };
        debug_assert_eq!(r, 0, "mprotect: {}", std::io::Error::last_os_error());
    }
}

impl Drop for SimPlatform {
    fn drop(&mut self) {
        // SAFETY: base/len are the mapping made in new(); nothing uses it after drop.
        unsafe { libc::munmap(self.base.as_ptr() as *mut libc::c_void, self.len) };
        for u in &self.unmapped {
            // SAFETY: fds we own.
            unsafe { libc::close(u.fd) };
        }
    }
}
