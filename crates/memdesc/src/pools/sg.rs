//! I/O over pfn ranges: a scatter-gather list of `(pfn range, offset, length)` entries that
//! a device copies through, built from folios of any order or from raw physical ranges that
//! have no per-page word at all.
//!
//! Raw ranges are what lets I/O skip descriptors: a 2 MiB block of a two-level region that was
//! never split has one area word and no per-page words, and memory outside every memmap region
//! (a device's BAR, a pmem window registered for I/O only) has no word at all. The memory
//! layout cannot express a region without a memmap, so the smallest addition is here: an
//! [`IoSpace`] knows the machine's regions plus a few **device ranges** registered at run time
//! (physical ranges outside every region that the platform can map with
//! [`Platform::map_local`]). Every entry is validated against that knowledge when it is added:
//! no arithmetic overflow, offset and length inside the entry's pages, every pfn inside a region
//! or a device range; each failure has its own [`SgError`], and a refused push leaves the list
//! as it was.
//!
//! Lists are also built **from mappings**: [`SgList::push_mapped`] walks the page tables of an
//! address space ([`MmRef::translate`], PTEs and 2 MiB PMD entries) over a virtual range and
//! [`SgList::push_vmalloc`] does the same for a vmalloc area through its space's kernel page
//! tables; runs of physically contiguous pages become one entry each (Linux's
//! `sg_alloc_table_from_pages` merges the same way). The walk is a snapshot: keeping the
//! mapping alive for the transfer is the caller's job, as with real DMA.
//!
//! The list is fixed-capacity (`SgList<N>`, no allocator), like a one-chunk `sg_table`. A
//! device walks it as page-sized [`Chunk`]s, each mapped with `map_local` for the copy (see
//! `memdesc_host::device`). This module reads words (to check a folio entry names its folio)
//! and page-table entries (through the page-table module); it never changes either.

use crate::addr::{Pfn, MAX_PFN, PAGE_SIZE};
use crate::desc::Folio;
use crate::pgtable::{MmRef, PTRS_PER_TABLE};
use crate::platform::Platform;
use crate::pools::{PoolHost, Pools};
use crate::vmalloc::{AreaKind, VmArea, VmallocSpace};
use crate::word::PageKind;

/// Most device ranges an [`IoSpace`] holds.
pub const MAX_DEVICE_RANGES: usize = 8;

/// Why an entry or a device range was refused. Nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SgError {
    /// The list is full.
    Full,
    /// An entry of zero bytes.
    ZeroLength,
    /// Address, pfn or length arithmetic overflows (or passes the largest pfn).
    Overflow,
    /// `offset + len` runs past the entry's pages.
    OutOfPages {
        /// Byte offset in the first page.
        offset: u64,
        /// Length.
        len: u64,
        /// Pages in the entry.
        nr_pages: u64,
    },
    /// This pfn is in no memory region and no device range.
    UnknownMemory(Pfn),
    /// The folio's word does not name it (it was freed, or is not a folio).
    NotFolio(Pfn),
    /// A device range overlaps a memory region or another device range at this pfn.
    Overlaps(Pfn),
    /// The platform cannot map this pfn of a device range.
    Unmappable(Pfn),
    /// More than [`MAX_DEVICE_RANGES`] device ranges.
    TooManyRanges,
    /// This pfn of a region is free (in the page allocator): a device must not touch it.
    FreeMemory(Pfn),
    /// Nothing maps this virtual address (page-aligned) in the address space walked.
    NotMapped(u64),
    /// The vmalloc area was freed (its handle is stale) or the range runs past it.
    BadArea {
        /// Start of the area.
        va: usize,
    },
}

impl core::fmt::Display for SgError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SgError::Full => write!(f, "scatter-gather list is full"),
            SgError::ZeroLength => write!(f, "scatter-gather entry of zero bytes"),
            SgError::Overflow => write!(f, "scatter-gather entry overflows"),
            SgError::OutOfPages { offset, len, nr_pages } => {
                write!(f, "{len} bytes at offset {offset} do not fit {nr_pages} pages")
            }
            SgError::UnknownMemory(p) => write!(f, "pfn {p} is not known physical memory"),
            SgError::NotFolio(p) => write!(f, "pfn {p} does not hold the folio given"),
            SgError::Overlaps(p) => write!(f, "device range overlaps known memory at pfn {p}"),
            SgError::Unmappable(p) => write!(f, "the platform cannot map pfn {p}"),
            SgError::TooManyRanges => write!(f, "too many device ranges"),
            SgError::FreeMemory(p) => write!(f, "pfn {p} is free memory"),
            SgError::NotMapped(va) => write!(f, "nothing is mapped at {va:#x}"),
            SgError::BadArea { va } => write!(f, "the vmalloc area at {va:#x} is freed or too small"),
        }
    }
}

impl core::error::Error for SgError {}

/// Physical memory a device may address: the machine's regions and registered device ranges.
pub struct IoSpace<'m, P: Platform> {
    mem: Pools<'m, P>,
    devices: [(Pfn, Pfn); MAX_DEVICE_RANGES],
    nr_devices: usize,
}

impl<'m, P: Platform> IoSpace<'m, P> {
    /// The machine's regions, no device ranges yet.
    pub fn new(mem: &'m impl PoolHost<P>) -> Self {
        let mem = mem.pools();
        IoSpace { mem, devices: [(Pfn(0), Pfn(0)); MAX_DEVICE_RANGES], nr_devices: 0 }
    }

    /// Registers `[start, end)` as device memory: outside every region and every other device
    /// range, and mappable by the platform at both ends.
    pub fn add_device_range(&mut self, start: Pfn, end: Pfn) -> Result<(), SgError> {
        if start >= end || end.0 > MAX_PFN + 1 {
            return Err(SgError::Overflow);
        }
        if self.nr_devices == MAX_DEVICE_RANGES {
            return Err(SgError::TooManyRanges);
        }
        for r in self.mem.memmap().regions() {
            if r.start < end && start < r.end {
                return Err(SgError::Overlaps(r.start.max(start)));
            }
        }
        for &(s, e) in &self.devices[..self.nr_devices] {
            if s < end && start < e {
                return Err(SgError::Overlaps(s.max(start)));
            }
        }
        for pfn in [start, Pfn(end.0 - 1)] {
            let p = self.mem.platform().map_local(pfn).ok_or(SgError::Unmappable(pfn))?;
            self.mem.platform().unmap_local(pfn, p);
        }
        self.devices[self.nr_devices] = (start, end);
        self.nr_devices += 1;
        Ok(())
    }

    /// The registered device ranges.
    pub fn device_ranges(&self) -> &[(Pfn, Pfn)] {
        &self.devices[..self.nr_devices]
    }

    /// Checks that every pfn of `[start, start + n)` is known memory and that none of it is
    /// free in the page allocator (a device writing a free page would corrupt the free lists
    /// kept in free pages). The free check reads words without locks: it catches a stale or
    /// wrong range at the time of the push, not memory freed afterwards.
    pub fn check_range(&self, start: Pfn, n: u64) -> Result<(), SgError> {
        let end = start.0.checked_add(n).filter(|&e| e <= MAX_PFN + 1).ok_or(SgError::Overflow)?;
        let mut pfn = start;
        while pfn.0 < end {
            if let Some(r) = self.mem.memmap().regions().find(|r| r.start <= pfn && pfn < r.end) {
                let stop = Pfn(r.end.0.min(end));
                while pfn < stop {
                    if self.mem.pages().free_block_containing_pfn(pfn).is_some() {
                        return Err(SgError::FreeMemory(pfn));
                    }
                    // One word may describe a whole 2 MiB area: step over it at once.
                    let v = self.mem.memmap().load(self.mem.platform(), pfn);
                    pfn = v.map_or(pfn.add(1), |v| v.first.add(1 << v.span_order)).max(pfn.add(1));
                }
                continue;
            }
            pfn = self
                .device_ranges()
                .iter()
                .find(|(s, e)| *s <= pfn && pfn < *e)
                .map(|&(_, e)| e)
                .ok_or(SgError::UnknownMemory(pfn))?;
        }
        Ok(())
    }
}

/// One entry: `len` bytes starting `offset` bytes into the first of `nr_pages` pages at `pfn`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SgEntry {
    /// First pfn of the range.
    pub pfn: Pfn,
    /// Pages in the range.
    pub nr_pages: u64,
    /// Byte offset of the data from the start of `pfn`.
    pub offset: u64,
    /// Bytes.
    pub len: u64,
}

impl SgEntry {
    const EMPTY: SgEntry = SgEntry { pfn: Pfn(0), nr_pages: 0, offset: 0, len: 0 };

    /// Physical address of the first byte.
    pub fn phys(&self) -> u64 {
        self.pfn.phys() + self.offset
    }
}

/// A piece of an entry inside one page: what a device maps and copies at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// The page.
    pub pfn: Pfn,
    /// Offset in the page.
    pub offset: usize,
    /// Bytes (`offset + len <= PAGE_SIZE`).
    pub len: usize,
}

/// A scatter-gather list of at most `N` validated entries.
#[derive(Clone, Debug)]
pub struct SgList<const N: usize> {
    entries: [SgEntry; N],
    len: usize,
}

impl<const N: usize> Default for SgList<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> SgList<N> {
    /// An empty list.
    pub const fn new() -> Self {
        SgList { entries: [SgEntry::EMPTY; N], len: 0 }
    }

    /// The entries.
    pub fn entries(&self) -> &[SgEntry] {
        &self.entries[..self.len]
    }

    /// Total bytes.
    pub fn total_len(&self) -> u64 {
        self.entries().iter().map(|e| e.len).sum()
    }

    /// Adds `len` bytes at `offset` into the `nr_pages` pages at `pfn`, validated against `io`.
    pub fn push_pfns<P: Platform>(
        &mut self,
        io: &IoSpace<'_, P>,
        pfn: Pfn,
        nr_pages: u64,
        offset: u64,
        len: u64,
    ) -> Result<(), SgError> {
        if self.len == N {
            return Err(SgError::Full);
        }
        if len == 0 {
            return Err(SgError::ZeroLength);
        }
        let bytes = nr_pages.checked_mul(PAGE_SIZE as u64).ok_or(SgError::Overflow)?;
        let end = offset.checked_add(len).ok_or(SgError::Overflow)?;
        if end > bytes {
            return Err(SgError::OutOfPages { offset, len, nr_pages });
        }
        io.check_range(pfn, nr_pages)?;
        self.entries[self.len] = SgEntry { pfn, nr_pages, offset, len };
        self.len += 1;
        Ok(())
    }

    /// Adds the raw physical range `[phys, phys + len)` (no per-page word needed).
    pub fn push_phys<P: Platform>(&mut self, io: &IoSpace<'_, P>, phys: u64, len: u64) -> Result<(), SgError> {
        let end = phys.checked_add(len).ok_or(SgError::Overflow)?;
        let first = phys / PAGE_SIZE as u64;
        let last = end.div_ceil(PAGE_SIZE as u64);
        self.push_pfns(io, Pfn(first), (last - first).max(1), phys % PAGE_SIZE as u64, len)
    }

    /// Adds `len` bytes at `offset` into a folio of any order; the folio's word must name it.
    pub fn push_folio<P: Platform>(
        &mut self,
        io: &IoSpace<'_, P>,
        folio: &Folio,
        offset: u64,
        len: u64,
    ) -> Result<(), SgError> {
        let pfn = folio.flags.pfn();
        let named = io.mem.memmap().load(io.mem.platform(), pfn).is_some_and(|v| match v.word.kind() {
            PageKind::AnonFolio(d) | PageKind::FileFolio(d) => d.addr() == folio as *const Folio as usize,
            _ => false,
        });
        if !named {
            return Err(SgError::NotFolio(pfn));
        }
        self.push_pfns(io, pfn, 1 << folio.flags.order(), offset, len)
    }

    /// Adds the bytes of `[va, va + len)` of the address space `mm` (user or kernel), found by
    /// walking its page tables: each run of virtually consecutive pages that are also
    /// physically consecutive becomes one entry (validated as [`SgList::push_pfns`] does).
    /// Returns the number of entries added. Refused with [`SgError::NotMapped`] at the first
    /// page nothing maps, or [`SgError::Full`] when the runs do not fit; the list is then
    /// unchanged.
    pub fn push_mapped<P: Platform>(
        &mut self,
        io: &IoSpace<'_, P>,
        mm: &MmRef<'_, P>,
        va: u64,
        len: u64,
    ) -> Result<usize, SgError> {
        if len == 0 {
            return Err(SgError::ZeroLength);
        }
        let end = va.checked_add(len).ok_or(SgError::Overflow)?;
        let saved = self.len;
        let r = self.push_runs(io, mm, va, end);
        if r.is_err() {
            self.len = saved;
        }
        r.map(|()| self.len - saved)
    }

    fn push_runs<P: Platform>(
        &mut self,
        io: &IoSpace<'_, P>,
        mm: &MmRef<'_, P>,
        va: u64,
        end: u64,
    ) -> Result<(), SgError> {
        let page = PAGE_SIZE as u64;
        // The run being built: first pfn, pages, offset in the first page, bytes.
        let mut run: Option<(Pfn, u64, u64, u64)> = None;
        let mut a = va;
        while a < end {
            let page_va = a & !(page - 1);
            let (e, huge) = mm.translate(page_va).ok_or(SgError::NotMapped(page_va))?;
            let pfn = if huge { e.pfn().add((page_va >> 12) & (PTRS_PER_TABLE as u64 - 1)) } else { e.pfn() };
            let off = a - page_va;
            let n = (page - off).min(end - a);
            run = match run {
                Some((p, nr, o, l)) if p.0.checked_add(nr) == Some(pfn.0) => Some((p, nr + 1, o, l + n)),
                Some((p, nr, o, l)) => {
                    self.push_pfns(io, p, nr, o, l)?;
                    Some((pfn, 1, off, n))
                }
                None => Some((pfn, 1, off, n)),
            };
            a += n;
        }
        if let Some((p, nr, o, l)) = run {
            self.push_pfns(io, p, nr, o, l)?;
        }
        Ok(())
    }

    /// Adds `len` bytes at `offset` into the vmalloc area `area` of `space`, walking the
    /// space's kernel page tables (contiguous pages merge, as in [`SgList::push_mapped`]).
    /// Refused with [`SgError::BadArea`] for a freed area or a range past its end.
    pub fn push_vmalloc<P: Platform, K: AreaKind>(
        &mut self,
        io: &IoSpace<'_, P>,
        space: &VmallocSpace<'_, P>,
        area: &VmArea<K>,
        offset: usize,
        len: usize,
    ) -> Result<usize, SgError> {
        let fits = offset.checked_add(len).is_some_and(|e| e <= area.size());
        if !fits || space.pfn_at(area, 0).is_err() {
            return Err(SgError::BadArea { va: area.addr() });
        }
        self.push_mapped(io, space.kernel_mm(), (area.addr() + offset) as u64, len as u64)
    }

    /// Every entry's bytes as page-sized chunks, in order.
    pub fn chunks(&self) -> impl Iterator<Item = Chunk> + '_ {
        self.entries().iter().flat_map(|e| {
            let start = e.phys();
            let end = start + e.len;
            let first = start / PAGE_SIZE as u64;
            let last = end.div_ceil(PAGE_SIZE as u64);
            (first..last).map(move |p| {
                let lo = start.max(p * PAGE_SIZE as u64);
                let hi = end.min((p + 1) * PAGE_SIZE as u64);
                Chunk { pfn: Pfn(p), offset: (lo % PAGE_SIZE as u64) as usize, len: (hi - lo) as usize }
            })
        })
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::base::gfp::Gfp;
    use crate::base::layout::MemmapLayout;
    use crate::folio::FolioKind;
    use crate::machine::test_machine::machine;
    use std::vec::Vec;

    #[test]
    fn entries_are_validated_precisely() {
        let m = machine(4096, MemmapLayout::Flat);
        let cpu = m.cpus().claim(0).unwrap();
        let io = IoSpace::new(&m);
        let mut sg = SgList::<3>::new();
        assert_eq!(sg.push_pfns(&io, Pfn(10), 1, 0, 0), Err(SgError::ZeroLength));
        assert_eq!(
            sg.push_pfns(&io, Pfn(10), 1, 4000, 100),
            Err(SgError::OutOfPages { offset: 4000, len: 100, nr_pages: 1 })
        );
        assert_eq!(sg.push_pfns(&io, Pfn(10), u64::MAX, 0, 1), Err(SgError::Overflow));
        assert_eq!(sg.push_phys(&io, u64::MAX - 10, 100), Err(SgError::Overflow));
        let g = m.alloc_pages(&cpu, 0, Gfp::KERNEL).unwrap();
        let gp = g.pfn();
        m.free_pages(&cpu, g).unwrap();
        let g = gp;
        assert_eq!(sg.push_pfns(&io, g, 1, 0, 1), Err(SgError::FreeMemory(g)), "a free page");
        assert_eq!(sg.push_pfns(&io, Pfn(4096), 2, 0, 8192), Err(SgError::UnknownMemory(Pfn(4096))));
        let rp = m.alloc_pages(&cpu, 1, Gfp::KERNEL).unwrap();
        let r = rp.pfn();
        let f = m.folio_alloc(&cpu, 2, Gfp::KERNEL, FolioKind::File).unwrap();
        sg.push_folio(&io, &f, 5000, 10000).unwrap();
        sg.push_phys(&io, r.phys() + 4000, 200).unwrap();
        sg.push_pfns(&io, r, 1, 0, 1).unwrap();
        assert_eq!(sg.push_pfns(&io, r, 1, 0, 1), Err(SgError::Full));
        assert_eq!(sg.entries().len(), 3);
        assert_eq!(sg.total_len(), 10201);
        let c: Vec<Chunk> = sg.chunks().collect();
        let p = f.flags.pfn();
        assert_eq!(c[0], Chunk { pfn: p.add(1), offset: 904, len: 3192 });
        assert_eq!(c[1], Chunk { pfn: p.add(2), offset: 0, len: 4096 });
        assert_eq!(c[2], Chunk { pfn: p.add(3), offset: 0, len: 10000 - 3192 - 4096 });
        assert_eq!(c[3], Chunk { pfn: r, offset: 4000, len: 96 });
        assert_eq!(c[4], Chunk { pfn: r.add(1), offset: 0, len: 104 });
        assert_eq!(c.iter().map(|c| c.len as u64).sum::<u64>(), sg.total_len());
        let d = crate::desc::DescPtr::<Folio>::from_ref(&f);
        m.folio_put(&cpu, f).unwrap();
        // The descriptor, read after its last put under a read section (it stays a folio).
        let rg = m.rcu().read_lock(&cpu);
        let raw: &Folio = d.get(&rg);
        let mut sg2 = SgList::<1>::new();
        // The descriptor memory stays a folio (TYPESAFE_BY_RCU, and the slab keeps its page).
        assert_eq!(sg2.push_folio(&io, raw, 0, 1), Err(SgError::NotFolio(p)), "a freed folio");
        m.free_pages(&cpu, rp).unwrap();
    }
}
