//! A simulated DMA device that copies data into and out of scatter-gather lists
//! ([`memdesc::sg::SgList`]) and between two of them, touching memory only through the
//! platform's mapping of each page ([`memdesc::Platform::map_local`], through
//! [`PageAccess`]), as a device behind an IOMMU
//! touches only what the list names.

use std::sync::atomic::{AtomicU64, Ordering};

use memdesc::base::page_access::PageAccess;
use memdesc::sg::{Chunk, SgList};
use memdesc::Pfn;

use crate::{SimMachine, SimPlatform};

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
            drop(self.map(c.pfn)?);
            left = left.saturating_sub(c.len as u64);
        }
        Ok(())
    }

    /// Maps chunk `c`'s page for the device (a local mapping, as behind an IOMMU).
    fn map(&self, pfn: Pfn) -> Result<PageAccess<'m, SimPlatform>, DmaError> {
        // SAFETY: the pages a scatter-gather list names are held by its owner, who lends them
        // to the device for the transfer; nothing else touches their contents meanwhile, and
        // the device maps one page once at a time (a page both lists name is mapped once, in
        // `copy`).
        unsafe { PageAccess::new_local(self.mem.platform(), pfn) }.ok_or(DmaError::Unmappable(pfn))
    }

    /// Runs `f` on chunk `c`'s page, mapped around the call, and counts the chunk.
    fn with_chunk(&self, c: Chunk, f: impl FnOnce(&mut PageAccess<'m, SimPlatform>)) -> Result<(), DmaError> {
        f(&mut self.map(c.pfn)?);
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
            self.with_chunk(c, |page| {
                page.write(c.offset, &data[done..done + c.len]).expect("an sg chunk lies inside its page")
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
            self.with_chunk(c, |page| {
                page.read(c.offset, &mut buf[done..done + c.len]).expect("an sg chunk lies inside its page")
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
            let inside = "an sg chunk lies inside its page";
            if sc.pfn == dc.pfn {
                // Overlapping lists: one mapping, a memmove within the page.
                self.map(sc.pfn)?.copy_within(sc.offset, dc.offset, n).expect(inside);
            } else {
                let sp = self.map(sc.pfn)?;
                self.map(dc.pfn)?.copy_from(dc.offset, &sp, sc.offset, n).expect(inside);
            }
            self.chunks.fetch_add(1, Ordering::Relaxed);
            self.bytes.fetch_add(n as u64, Ordering::Relaxed);
            left -= n;
            s = if n == sc.len { si.next() } else { Some(Chunk { offset: sc.offset + n, len: sc.len - n, ..sc }) };
            d = if n == dc.len { di.next() } else { Some(Chunk { offset: dc.offset + n, len: dc.len - n, ..dc }) };
        }
        Ok(())
    }
}
