//! A simulated DMA device that copies data into and out of scatter-gather lists
//! ([`memdesc::sg::SgList`]) and between two of them, touching memory only through the
//! platform's mapping of each page ([`Platform::map_local`]), as a device behind an IOMMU
//! touches only what the list names.

use std::sync::atomic::{AtomicU64, Ordering};

use memdesc::sg::{Chunk, SgList};
use memdesc::{Pfn, Platform};

use crate::SimMachine;

/// Why a transfer was refused. No byte was copied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DmaError {
    /// The list holds fewer bytes than the transfer needs.
    ShortList {
        /// Bytes needed.
        need: u64,
        /// Bytes the list holds.
        have: u64,
    },
    /// The platform could not map a page of the list.
    Unmappable(Pfn),
}

impl std::fmt::Display for DmaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DmaError::ShortList { need, have } => write!(f, "transfer of {need} bytes into a list of {have}"),
            DmaError::Unmappable(p) => write!(f, "pfn {p} cannot be mapped"),
        }
    }
}

impl std::error::Error for DmaError {}

/// A DMA engine of a simulated machine.
pub struct SimDevice<'m> {
    mem: &'m SimMachine,
    bytes: AtomicU64,
    chunks: AtomicU64,
}

impl<'m> SimDevice<'m> {
    /// A device on `mem`.
    pub fn new(mem: &'m SimMachine) -> Self {
        SimDevice { mem, bytes: AtomicU64::new(0), chunks: AtomicU64::new(0) }
    }

    /// Bytes transferred so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Page-sized chunks transferred so far (each one a `map_local`).
    pub fn chunks(&self) -> u64 {
        self.chunks.load(Ordering::Relaxed)
    }

    fn check<const N: usize>(sg: &SgList<N>, need: u64) -> Result<(), DmaError> {
        let have = sg.total_len();
        if have < need {
            return Err(DmaError::ShortList { need, have });
        }
        Ok(())
    }

    fn mappable<const N: usize>(&self, sg: &SgList<N>, len: u64) -> Result<(), DmaError> {
        let mut left = len;
        for c in sg.chunks() {
            if left == 0 {
                break;
            }
            let p = self.mem.platform().map_local(c.pfn).ok_or(DmaError::Unmappable(c.pfn))?;
            self.mem.platform().unmap_local(c.pfn, p);
            left = left.saturating_sub(c.len as u64);
        }
        Ok(())
    }

    /// Runs `f(page_ptr_at_chunk_offset, len)` for each chunk, mapping the page around it.
    fn with_chunk(&self, c: Chunk, f: impl FnOnce(*mut u8)) -> Result<(), DmaError> {
        let p = self.mem.platform().map_local(c.pfn).ok_or(DmaError::Unmappable(c.pfn))?;
        // SAFETY: map_local gives PAGE_SIZE valid bytes and c.offset + c.len <= PAGE_SIZE.
        f(unsafe { p.as_ptr().add(c.offset) });
        self.mem.platform().unmap_local(c.pfn, p);
        self.chunks.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(c.len as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Device write: copies `data` into the memory the list names, in order.
    pub fn write_to<const N: usize>(&self, sg: &SgList<N>, data: &[u8]) -> Result<(), DmaError> {
        Self::check(sg, data.len() as u64)?;
        self.mappable(sg, data.len() as u64)?;
        let mut done = 0;
        for c in sg.chunks() {
            if done == data.len() {
                break;
            }
            let c = Chunk { len: c.len.min(data.len() - done), ..c };
            self.with_chunk(c, |dst| {
                // SAFETY: dst is valid for c.len bytes (with_chunk); data[done..done + c.len]
                // is in bounds; the two do not overlap (host slice vs simulated memory).
                unsafe { std::ptr::copy_nonoverlapping(data.as_ptr().add(done), dst, c.len) }
            })?;
            done += c.len;
        }
        Ok(())
    }

    /// Device read: copies the first `buf.len()` bytes the list names into `buf`.
    pub fn read_from<const N: usize>(&self, sg: &SgList<N>, buf: &mut [u8]) -> Result<(), DmaError> {
        Self::check(sg, buf.len() as u64)?;
        self.mappable(sg, buf.len() as u64)?;
        let mut done = 0;
        for c in sg.chunks() {
            if done == buf.len() {
                break;
            }
            let c = Chunk { len: c.len.min(buf.len() - done), ..c };
            self.with_chunk(c, |src| {
                // SAFETY: as in write_to, with the roles swapped.
                unsafe { std::ptr::copy_nonoverlapping(src, buf.as_mut_ptr().add(done), c.len) }
            })?;
            done += c.len;
        }
        Ok(())
    }

    /// Copies `len` bytes from the memory `src` names to the memory `dst` names, chunk against
    /// chunk (each side mapped one page at a time). Overlapping lists are allowed; the bytes
    /// of an overlap are then those of a chunk-by-chunk forward copy.
    pub fn copy<const A: usize, const B: usize>(
        &self,
        src: &SgList<A>,
        dst: &SgList<B>,
        len: u64,
    ) -> Result<(), DmaError> {
        Self::check(src, len)?;
        Self::check(dst, len)?;
        self.mappable(src, len)?;
        self.mappable(dst, len)?;
        let (mut si, mut di) = (src.chunks(), dst.chunks());
        let (mut s, mut d) = (si.next(), di.next());
        let mut left = len as usize;
        while left > 0 {
            let (Some(sc), Some(dc)) = (s, d) else { break };
            let n = sc.len.min(dc.len).min(left);
            let sp = self.mem.platform().map_local(sc.pfn).ok_or(DmaError::Unmappable(sc.pfn))?;
            let dp = self.mem.platform().map_local(dc.pfn).ok_or(DmaError::Unmappable(dc.pfn))?;
            // SAFETY: both mappings are valid for PAGE_SIZE bytes and offset + n stays inside
            // each chunk; `copy` (memmove) is defined even if the two lists overlap.
            unsafe { std::ptr::copy(sp.as_ptr().add(sc.offset), dp.as_ptr().add(dc.offset), n) };
            self.mem.platform().unmap_local(dc.pfn, dp);
            self.mem.platform().unmap_local(sc.pfn, sp);
            self.chunks.fetch_add(1, Ordering::Relaxed);
            self.bytes.fetch_add(n as u64, Ordering::Relaxed);
            left -= n;
            s = if n == sc.len { si.next() } else { Some(Chunk { offset: sc.offset + n, len: sc.len - n, ..sc }) };
            d = if n == dc.len { di.next() } else { Some(Chunk { offset: dc.offset + n, len: dc.len - n, ..dc }) };
        }
        Ok(())
    }
}
