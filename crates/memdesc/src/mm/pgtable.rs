//! x86-64 4-level page tables: table pages, entries, the walk, and mapping and unmapping of
//! PTEs (Linux's `mm/memory.c` and `pgtable` helpers).
//!
//! **Tables.** Every PGD, PUD, PMD and PTE table is an order-0 page from the page allocator
//! whose word is `Tag::PageTable`, pointing to a [`PtDesc`] from the ptdesc descriptor cache
//! (level, owning mm, per-table spin lock, deposit chain, live-entry count). Entries are real
//! x86-64 entries ([`PtEntry`]: present, RW, USER, PS, pfn in bits 12..52) stored in the table
//! page and written through the platform's mapping of it. A table whose last entry goes is
//! freed at once (up to, not including, the PGD); teardown frees everything.
//!
//! **Mapcount and refcount** (DESIGN.md requirement 7). A folio's mapcount is the number of
//! page-table entries that map it: N PTEs count N (a folio may be mapped at any page-aligned
//! address, straddling PTE tables), a PMD mapping of a 2 MiB folio counts 1, and
//! [`MmRef::split_pmd`] turns it into 512 PTEs and adds 511 (see [`super::huge`]). **Every
//! entry also holds one reference**, so `refcount >= mapcount` always and unmapping drops
//! exactly what mapping took; the last unmap of a folio nobody else holds frees it. A mapping
//! that would push a mapcount past [`crate::Config::mapcount_limit`] splits a large folio to
//! order 0 and maps the pieces (each with its own, smaller count); an order-0 folio at the
//! limit is refused with [`MapError::MapcountLimit`].
//!
//! **What can be mapped.** The typed API maps `&Folio` (anon or file) and `&MappableDesc`; the
//! generic [`MmRef::map_pfn`] maps a pfn whose word is one of the mappable tags, decided by
//! [`mappability`] (in [`super::mappable`]). All of them keep refcount and mapcount at offsets
//! 8 and 12 (asserted in `desc.rs`), so one generic path counts them.
//!
//! The address-space objects ([`Mm`], [`MmRef`], VMAs) are in [`super::mmap`], the reverse
//! map in [`super::rmap`]; their items are re-exported here so `pgtable::X` paths keep
//! working. Locking order: see [`super`].

use super::Mms;
use crate::addr::{Pfn, PAGE_SHIFT, PAGE_SIZE};
use crate::cpu::Cpu;
use crate::desc::{DescPtr, Folio, MapCounts, MappableDesc, PtDesc};
use crate::folio::{FolioError, FolioRef};
use crate::gfp::Gfp;
use crate::page_access::PageWords;
use crate::page_alloc::AllocError;
use crate::platform::Platform;
use crate::rcu::RcuGuard;
use crate::sync::Ordering;
use crate::word::{PageKind, Subtype, Tag, Word};

pub use super::mappable::{mappability, UnmappableKind, UserPage};
pub(crate) use super::mmap::VmaGuard;
pub use super::mmap::{Mm, MmCaches, MmKind, MmRef, Vma, VmaKind};
pub use super::rmap::RmapList;

/// Entry bit: present.
pub const PTE_PRESENT: u64 = 1 << 0;
/// Entry bit: writable.
pub const PTE_RW: u64 = 1 << 1;
/// Entry bit: user-accessible.
pub const PTE_USER: u64 = 1 << 2;
/// Entry bit (PMD/PUD level): maps a huge page instead of pointing to a table.
pub const PTE_HUGE: u64 = 1 << 7;
/// The physical-address bits of an entry (12..52).
pub const PTE_PFN_MASK: u64 = ((1u64 << 52) - 1) & !((1u64 << PAGE_SHIFT) - 1);
/// Entries per table.
pub const PTRS_PER_TABLE: usize = 512;
/// Bytes mapped by one PMD entry.
pub const PMD_SIZE: u64 = 1 << 21;
/// End (exclusive) of user addresses (the lower canonical half).
pub const USER_END: u64 = 1 << 47;
/// Start of kernel addresses (the upper canonical half).
pub const KERNEL_START: u64 = 0xffff_8000_0000_0000;
/// End (exclusive) of the kernel addresses an [`Mm`] manages (the top 2 MiB are left out).
pub const KERNEL_END: u64 = 0xffff_ffff_ffe0_0000;

#[cfg(not(loom))]
const _: () = {
    // The generic mapping path reads refcount and mapcount of every mappable kind at these
    // offsets (desc.rs asserts them for each kind).
    assert!(core::mem::offset_of!(Folio, counts) == 8);
    assert!(core::mem::offset_of!(MapCounts, mapcount) == 4);
};

/// One x86-64 page-table entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PtEntry(pub u64);

impl PtEntry {
    /// Present bit.
    pub fn present(self) -> bool {
        self.0 & PTE_PRESENT != 0
    }
    /// PS bit: a huge mapping at PMD level.
    pub fn huge(self) -> bool {
        self.0 & PTE_HUGE != 0
    }
    /// Writable bit.
    pub fn writable(self) -> bool {
        self.0 & PTE_RW != 0
    }
    /// User bit.
    pub fn user(self) -> bool {
        self.0 & PTE_USER != 0
    }
    /// The pfn the entry points to.
    pub fn pfn(self) -> Pfn {
        Pfn((self.0 & PTE_PFN_MASK) >> PAGE_SHIFT)
    }
    pub(super) fn new(pfn: Pfn, flags: u64) -> PtEntry {
        PtEntry((pfn.0 << PAGE_SHIFT) & PTE_PFN_MASK | flags)
    }
}

/// Why a mapping operation was refused. Nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// The address (or length) is not page-aligned (2 MiB-aligned for a PMD mapping).
    Misaligned(u64),
    /// The range lies outside the address space's half, or is empty.
    OutOfRange(u64),
    /// No VMA covers the whole range starting at this address.
    NoVma(u64),
    /// A new VMA would overlap an existing one at this address.
    Overlap(u64),
    /// The page at this pfn may not be mapped here.
    Unmappable {
        /// The page.
        pfn: Pfn,
        /// What it is.
        kind: UnmappableKind,
    },
    /// The folio or descriptor has no reference (freed or being freed).
    NoReference,
    /// The folio belongs to another anon_vma or file than the VMA's.
    WrongMapping,
    /// The folio's index puts it at another address in this VMA.
    WrongOffset {
        /// Where it was asked to go.
        va: u64,
        /// Where its index puts it.
        expected: u64,
    },
    /// Something is already mapped at this address.
    AlreadyMapped(u64),
    /// Nothing is mapped in the range starting at this address.
    NotMapped(u64),
    /// No huge PMD mapping at this address.
    NotHuge(u64),
    /// A PMD mapping needs a folio of exactly 2 MiB.
    NotPmdSized,
    /// The mapcount would pass the limit and the folio cannot be split further.
    MapcountLimit(u32),
    /// A split needed for the operation was refused.
    Split(FolioError),
    /// Out of memory for tables or kernel objects.
    NoMemory(AllocError),
}

impl core::fmt::Display for MapError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MapError::Misaligned(a) => write!(f, "address {a:#x} is misaligned"),
            MapError::OutOfRange(a) => write!(f, "address {a:#x} is outside the address space"),
            MapError::NoVma(a) => write!(f, "no VMA covers the range at {a:#x}"),
            MapError::Overlap(a) => write!(f, "VMA would overlap another at {a:#x}"),
            MapError::Unmappable { pfn, kind } => write!(f, "pfn {:#x} is {kind:?} memory, not mappable here", pfn.0),
            MapError::NoReference => write!(f, "descriptor has no reference"),
            MapError::WrongMapping => write!(f, "folio belongs to another anon_vma or file"),
            MapError::WrongOffset { va, expected } => {
                write!(f, "folio cannot be mapped at {va:#x}; its index puts it at {expected:#x}")
            }
            MapError::AlreadyMapped(a) => write!(f, "address {a:#x} is already mapped"),
            MapError::NotMapped(a) => write!(f, "nothing mapped in the range at {a:#x}"),
            MapError::NotHuge(a) => write!(f, "no PMD mapping at {a:#x}"),
            MapError::NotPmdSized => write!(f, "a PMD mapping needs a 2 MiB folio"),
            MapError::MapcountLimit(n) => write!(f, "mapcount {n} is at the limit"),
            MapError::Split(e) => write!(f, "split refused: {e}"),
            MapError::NoMemory(e) => write!(f, "{e}"),
        }
    }
}

impl core::error::Error for MapError {}

impl From<AllocError> for MapError {
    fn from(e: AllocError) -> Self {
        MapError::NoMemory(e)
    }
}

/// The mapping path's temporary reference, dropped on every return (never the last: the
/// caller holds one).
struct MapPin<'a>(&'a MapCounts);

impl Drop for MapPin<'_> {
    fn drop(&mut self) {
        self.0.refcount.fetch_sub(1, Ordering::Release);
    }
}

/// Counts an [`MmRef::unmap`] or teardown reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ZapStats {
    /// Entries cleared (a PMD mapping counts 1).
    pub entries: u64,
    /// Pages those entries mapped.
    pub pages: u64,
    /// Page-table pages freed (deposits included).
    pub tables_freed: u64,
    /// PMD mappings split because the range cut them.
    pub pmd_splits: u64,
}

/// What an entry maps, for counting.
#[derive(Clone, Copy)]
pub(super) enum Target<'a> {
    Folio(&'a Folio, Tag),
    Mappable(&'a MappableDesc),
    Other(&'a MapCounts, Pfn),
}

impl Target<'_> {
    pub(super) fn counts(&self) -> &MapCounts {
        match self {
            Target::Folio(f, _) => &f.counts,
            Target::Mappable(d) => &d.counts,
            Target::Other(c, _) => c,
        }
    }
}

/// A per-table lock guard (the ptdesc's spin lock).
pub(super) struct TableLock<'a>(&'a PtDesc);

impl<'a> TableLock<'a> {
    pub(super) fn new(d: &'a PtDesc) -> Self {
        while d.lock.fetch_or(1, Ordering::Acquire) & 1 != 0 {
            crate::sync::spin_hint();
        }
        TableLock(d)
    }
}

impl Drop for TableLock<'_> {
    fn drop(&mut self) {
        self.0.lock.fetch_and(!1, Ordering::Release);
    }
}

pub(super) fn shift_of(level: u32) -> u32 {
    PAGE_SHIFT + 9 * (level - 1)
}

pub(super) fn index_of(va: u64, level: u32) -> usize {
    ((va >> shift_of(level)) & (PTRS_PER_TABLE as u64 - 1)) as usize
}

impl<'a, P: Platform> Mms<'a, P> {
    // ---- tables ---------------------------------------------------------------------------

    pub(super) fn table_map(&self, table: Pfn) -> PageWords<'a, P> {
        PageWords::new(self.pages.platform(), table).expect("page-table pages are mappable memory")
    }

    pub(super) fn ptdesc(&self, table: Pfn) -> &'a PtDesc {
        match self.pages.memmap().load(self.pages.platform(), table).map(|v| v.word.kind()) {
            // The word of a live table (its mm's page-table lock is held) names its ptdesc.
            Some(PageKind::PageTable(d)) => self.mm_desc(d),
            other => panic!("pfn {:#x} is not a page table: {other:?}", table.0),
        }
    }

    pub(super) fn alloc_table(&self, cpu: &Cpu<'_>, mm: &Mm, level: u32) -> Result<Pfn, AllocError> {
        let pfn = self.alloc_table_for(cpu, mm.addr(), level)?;
        mm.pt_pages.fetch_add(1, Ordering::Relaxed);
        Ok(pfn)
    }

    pub(super) fn alloc_table_for(&self, cpu: &Cpu<'_>, mm: usize, level: u32) -> Result<Pfn, AllocError> {
        let d = self.slabs.alloc_desc::<PtDesc>(cpu)?;
        let pfn = match self.pages.alloc_internal(cpu, 0, Gfp::KERNEL | Gfp::ZERO) {
            Ok(p) => p,
            Err(e) => {
                self.slabs.free_desc(cpu, d);
                return Err(e);
            }
        };
        d.flags.init(0, 0, pfn);
        d.lock.store(level << 8, Ordering::Relaxed);
        d.mm.store(mm, Ordering::Relaxed);
        d.pmd_huge_pte.store(0, Ordering::Relaxed);
        d.entries.store(0, Ordering::Relaxed);
        self.pages.stamp_block(pfn, 0, Word::desc(DescPtr::from_ref(d)));
        Ok(pfn)
    }

    pub(super) fn free_table(&self, cpu: &Cpu<'_>, mm: &Mm, table: Pfn) {
        let d = self.ptdesc(table);
        debug_assert_eq!(d.entries(), 0);
        debug_assert_eq!(d.pmd_huge_pte.load(Ordering::Relaxed), 0);
        self.pages.stamp_block(table, 0, Word::TAIL);
        self.slabs.free_desc(cpu, d);
        let rm = self.pages.memmap().region_map(self.pages.memmap().region_index(table).expect("table pfn"));
        self.pages.free_claimed(cpu, rm, table, 0);
        mm.pt_pages.fetch_sub(1, Ordering::Relaxed);
    }

    pub(super) fn load_entry(&self, table: Pfn, idx: usize) -> PtEntry {
        PtEntry(self.table_map(table).word(idx).load(Ordering::Acquire))
    }

    pub(super) fn store_entry(&self, table: Pfn, idx: usize, e: PtEntry) {
        let _l = TableLock::new(self.ptdesc(table));
        self.table_map(table).word(idx).store(e.0, Ordering::Release);
    }

    /// Walks to the table of `level` covering `va`, allocating missing tables; refuses to go
    /// through a huge entry.
    pub(super) fn walk_alloc(&self, cpu: &Cpu<'_>, mm: &Mm, va: u64, level: u32) -> Result<(Pfn, usize), MapError> {
        let mut table = mm.pgd;
        let mut l = 4;
        while l > level {
            let idx = index_of(va, l);
            let e = self.load_entry(table, idx);
            if !e.present() {
                let t = self.alloc_table(cpu, mm, l - 1)?;
                let flags = mm.leaf_flags();
                self.store_entry(table, idx, PtEntry::new(t, flags));
                self.ptdesc(table).entries.fetch_add(1, Ordering::Relaxed);
                table = t;
            } else if e.huge() {
                return Err(MapError::AlreadyMapped(va));
            } else {
                table = e.pfn();
            }
            l -= 1;
        }
        Ok((table, index_of(va, level)))
    }

    /// The entry mapping `va`: (level, table, index, entry), the level being 2 for a huge
    /// mapping.
    pub(super) fn lookup(&self, mm: &Mm, va: u64) -> Option<(u32, Pfn, usize)> {
        let mut table = mm.pgd;
        let mut l = 4;
        loop {
            let idx = index_of(va, l);
            let e = self.load_entry(table, idx);
            if !e.present() {
                return None;
            }
            if l == 1 || e.huge() {
                return Some((l, table, idx));
            }
            table = e.pfn();
            l -= 1;
        }
    }

    // ---- what a pfn is --------------------------------------------------------------------

    /// Classifies the page at `pfn` for mapping into a VMA of `kind` in an address space of
    /// `space`, by [`mappability`] (the one rule), refining a free tail's error.
    ///
    /// The target's descriptor is read under the caller's read section `_rcu`, which must last
    /// until the mapping path pins it (`map_locked`): only then is the memory sure to still be a
    /// descriptor (TYPESAFE_BY_RCU).
    pub(super) fn classify(
        &self,
        _rcu: &RcuGuard<'_>,
        space: MmKind,
        kind: VmaKind,
        pfn: Pfn,
    ) -> Result<Target<'a>, MapError> {
        let (word, tag) = self.classify_page(space, pfn)?;
        let t =
            self.target_of_kind(word.kind(), pfn).ok_or(MapError::Unmappable { pfn, kind: UnmappableKind::Invalid })?;
        let ok = matches!(
            (&t, kind),
            (Target::Folio(_, Tag::AnonFolio), VmaKind::Anon)
                | (Target::Folio(_, Tag::FileFolio), VmaKind::File)
                | (Target::Mappable(_) | Target::Other(..), VmaKind::Pfn)
        );
        if !ok {
            return Err(MapError::Unmappable { pfn, kind: UnmappableKind::WrongVma(tag) });
        }
        Ok(t)
    }

    /// The page at `pfn` as a mapping target for an address space of kind `space`, decided by
    /// [`mappability`] (a free tail's error refined to `Free`).
    pub(super) fn classify_page(&self, space: MmKind, pfn: Pfn) -> Result<(Word, Tag), MapError> {
        let bad = |kind| Err(MapError::Unmappable { pfn, kind });
        let Some(v) = self.pages.memmap().load(self.pages.platform(), pfn) else { return bad(UnmappableKind::NoPage) };
        let tag = match mappability(v.word, space) {
            Ok(tag) => tag,
            // A tail of a free buddy block is free memory.
            Err(UnmappableKind::Undescribed(Subtype::Tail)) if self.pages.free_block_containing_pfn(pfn).is_some() => {
                return bad(UnmappableKind::Free)
            }
            Err(k) => return bad(k),
        };
        Ok((v.word, tag))
    }

    pub(super) fn target_of(&self, pfn: Pfn) -> Target<'a> {
        // A mapped page's entry holds a reference, so its descriptor is live.
        let v = self.pages.memmap().load(self.pages.platform(), pfn).expect("mapped pfn has a word");
        self.target_of_kind(v.word.kind(), pfn).expect("mapped pages are of a mappable kind")
    }

    /// The mapping target a page word's kind names (`None` for kinds that are never mapped).
    fn target_of_kind(&self, kind: PageKind, pfn: Pfn) -> Option<Target<'a>> {
        Some(match kind {
            PageKind::AnonFolio(d) => Target::Folio(self.mm_desc(d), Tag::AnonFolio),
            PageKind::FileFolio(d) => Target::Folio(self.mm_desc(d), Tag::FileFolio),
            PageKind::Mappable(d) => Target::Mappable(self.mm_desc(d)),
            PageKind::NetPool(d) => Target::Other(&self.mm_desc(d).counts, pfn),
            PageKind::Vmalloc { desc, .. } => Target::Other(&self.mm_desc(desc).counts, pfn),
            _ => return None,
        })
    }

    /// Drops one entry's mapcount and reference.
    pub(super) fn put_entry(&self, cpu: &Cpu<'_>, pfn: Pfn) {
        match self.target_of(pfn) {
            Target::Folio(f, tag) => {
                if f.counts.mapcount.fetch_sub(1, Ordering::AcqRel) == 1 && tag == Tag::AnonFolio {
                    f.mapping.store(0, Ordering::Release);
                }
                let r = self.folios.folio_put_raw(cpu, f);
                debug_assert!(r.is_ok(), "entry reference: {r:?}");
            }
            Target::Mappable(d) => {
                d.counts.mapcount.fetch_sub(1, Ordering::AcqRel);
                // The entry being removed held one reference to `d` (taken when it was
                // mapped), which is given up here.
                let r = self.mappable_put_owned(cpu, d);
                debug_assert!(r.is_ok(), "entry reference: {r:?}");
            }
            Target::Other(c, _) => {
                c.mapcount.fetch_sub(1, Ordering::AcqRel);
                c.refcount.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    // ---- zap ------------------------------------------------------------------------------

    /// Clears the entries of `[s, e)` below `table` (of `level`) when `clear`, and frees every
    /// child table that is (or becomes) empty. Never allocates.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn zap(
        &self,
        cpu: &Cpu<'_>,
        mm: &Mm,
        table: Pfn,
        level: u32,
        s: u64,
        e: u64,
        clear: bool,
        st: &mut ZapStats,
    ) {
        let span = 1u64 << shift_of(level);
        let d = self.ptdesc(table);
        let mut va = s;
        while va < e {
            let next = (va & !(span - 1)).checked_add(span).map_or(e, |n| n.min(e));
            let idx = index_of(va, level);
            let ent = self.load_entry(table, idx);
            if ent.present() {
                if level == 1 {
                    if clear {
                        self.store_entry(table, idx, PtEntry(0));
                        d.entries.fetch_sub(1, Ordering::Relaxed);
                        self.put_entry(cpu, ent.pfn());
                        st.entries += 1;
                        st.pages += 1;
                    }
                } else if ent.huge() {
                    if clear && va & (span - 1) == 0 && next - va == span {
                        self.store_entry(table, idx, PtEntry(0));
                        d.entries.fetch_sub(1, Ordering::Relaxed);
                        let dep = self.withdraw(table);
                        self.free_table(cpu, mm, dep);
                        st.tables_freed += 1;
                        self.put_entry(cpu, ent.pfn());
                        st.entries += 1;
                        st.pages += PTRS_PER_TABLE as u64;
                    } else if clear {
                        self.split_pmd_locked(table, idx);
                        st.pmd_splits += 1;
                        continue; // again, now through the PTE table
                    }
                } else {
                    let child = ent.pfn();
                    self.zap(cpu, mm, child, level - 1, va, next, clear, st);
                    if self.ptdesc(child).entries() == 0 {
                        self.store_entry(table, idx, PtEntry(0));
                        d.entries.fetch_sub(1, Ordering::Relaxed);
                        self.free_table(cpu, mm, child);
                        st.tables_freed += 1;
                    }
                }
            }
            va = next;
        }
    }

    /// Whether the word at `f`'s pfn names `f` (a live folio, possibly frozen by a migration).
    pub(super) fn word_names_folio(&self, f: &Folio) -> bool {
        loop {
            let pfn = f.flags.pfn();
            if self.pages.memmap().load(self.pages.platform(), pfn).and_then(|v| v.word.desc_addr())
                == Some(f as *const Folio as usize)
            {
                return true;
            }
            // Moved between the two reads (the pfn moves before the old words are retired).
            if f.flags.pfn() == pfn {
                return false;
            }
        }
    }
}

impl<'m, P: Platform> MmRef<'m, P> {
    /// Checks a folio or descriptor mapping of `n` pages at `va`, takes the rmap lock, then
    /// the page-table lock, and maps. `first` is the first page of `t` to map.
    pub(super) fn map_target(
        &self,
        cpu: &Cpu<'_>,
        va: u64,
        t: Target<'_>,
        first: u64,
        n: u64,
        huge: bool,
    ) -> Result<(), MapError> {
        let g = self.mm.lock();
        self.map_locked(&g, cpu, va, t, first, n, huge, None)
    }

    /// `rcu`: the read section `t` was read under ([`Mms::classify`]), ended once `t` is
    /// pinned; `None` for a target the caller holds a reference on.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn map_locked(
        &self,
        g: &VmaGuard<'_>,
        cpu: &Cpu<'_>,
        va: u64,
        t: Target<'_>,
        first: u64,
        n: u64,
        huge: bool,
        rcu: Option<RcuGuard<'_>>,
    ) -> Result<(), MapError> {
        let end = self.check_range(va, n * PAGE_SIZE as u64)?;
        if huge && !va.is_multiple_of(PMD_SIZE) {
            return Err(MapError::Misaligned(va));
        }
        let v = g.find(va).filter(|v| end <= v.end).ok_or(MapError::NoVma(va))?;
        let _rl = v.rmap().map(|r| r.lock());
        // A temporary reference for the whole mapping, taken before the pfn is read: a folio
        // migration (migrate.rs) either sees it and backs off, or has frozen the folio (count
        // 0 while a word still names it), which we wait out; the pfn read below is then the
        // folio's new one. A zero count with no word naming the folio is a freed one.
        let c = t.counts();
        while !c.try_get() {
            match t {
                Target::Folio(f, _) if self.mem.word_names_folio(f) => crate::sync::spin_hint(),
                _ => return Err(MapError::NoReference),
            }
        }
        let _pin = MapPin(c);
        drop(rcu);
        let (pfn0, tag) = match t {
            Target::Folio(f, tag) => (f.flags.pfn(), Some(tag)),
            Target::Mappable(d) => (d.flags.pfn(), None),
            Target::Other(_, pfn) => (pfn, None),
        };
        let kind_ok = matches!(
            (tag, v.kind),
            (Some(Tag::AnonFolio), VmaKind::Anon) | (Some(Tag::FileFolio), VmaKind::File) | (None, VmaKind::Pfn)
        );
        if !kind_ok {
            let wk = tag.unwrap_or(Tag::Mappable);
            return Err(MapError::Unmappable { pfn: pfn0.add(first), kind: UnmappableKind::WrongVma(wk) });
        }
        let add = if huge { 1 } else { n as u32 };
        // The folio's place in the VMA.
        let mut set_anon = None;
        if let Target::Folio(f, tag) = t {
            let want_index = v.pgoff + ((va - v.start) >> PAGE_SHIFT);
            let idx0 = want_index.wrapping_sub(first);
            match tag {
                Tag::AnonFolio if f.mapping() == 0 => {
                    if first > want_index {
                        return Err(MapError::WrongOffset { va, expected: 0 });
                    }
                    set_anon = Some(idx0)
                }
                Tag::AnonFolio | Tag::FileFolio => {
                    if f.mapping() != v.owner {
                        return Err(MapError::WrongMapping);
                    }
                    if f.index() != idx0 {
                        let expected = v.va_of(f.index() + first).unwrap_or(0);
                        return Err(MapError::WrongOffset { va, expected });
                    }
                }
                _ => {}
            }
        }
        let m = c.mapcount();
        if m as u64 + add as u64 > self.mem.pages.config().mapcount_limit as u64 {
            return Err(MapError::MapcountLimit(m));
        }
        let _pt = self.mm.pt_lock.lock();
        // Allocate every table first, then check every slot, then write.
        let level = if huge { 2 } else { 1 };
        let mut deposit = None;
        let mut a = va;
        let mut fail = None;
        while a < end {
            if let Err(e) = self.mem.walk_alloc(cpu, &self.mm, a, level) {
                fail = Some(e);
                break;
            }
            a = if huge { end } else { (a & !(PMD_SIZE - 1)) + PMD_SIZE };
        }
        if fail.is_none() && huge {
            match self.mem.alloc_table(cpu, &self.mm, 1) {
                Ok(t) => deposit = Some(t),
                Err(e) => fail = Some(e.into()),
            }
        }
        if fail.is_none() && huge {
            let (table, idx) = self.mem.walk_alloc(cpu, &self.mm, va, 2).expect("allocated above");
            if self.mem.load_entry(table, idx).present() {
                fail = Some(MapError::AlreadyMapped(va));
            }
        } else if fail.is_none() {
            let mut p = 0;
            while p < add as u64 {
                let a = va + p * PAGE_SIZE as u64;
                if self.mem.lookup(&self.mm, a).is_some() {
                    fail = Some(MapError::AlreadyMapped(a));
                    break;
                }
                p += 1;
            }
        }
        // An unmapped anon folio joins this VMA's anon_vma; a racing first mapping into an
        // unrelated anon_vma (under another rmap lock) loses here.
        if let (None, Target::Folio(f, _), Some(_)) = (fail, t, set_anon) {
            if f.mapping.compare_exchange(0, v.owner, Ordering::AcqRel, Ordering::Acquire).is_err() {
                fail = Some(MapError::WrongMapping);
            }
        }
        if let Some(e) = fail {
            if let Some(d) = deposit {
                self.mem.free_table(cpu, &self.mm, d);
            }
            let mut st = ZapStats::default();
            self.mem.zap(cpu, &self.mm, self.mm.pgd, 4, va, end, false, &mut st);
            return Err(e);
        }
        if let (Target::Folio(f, _), Some(idx)) = (t, set_anon) {
            // Walkers read the index only under this VMA's rmap lock, which we hold.
            f.index.store(idx, Ordering::Release);
        }
        c.refcount.fetch_add(add, Ordering::AcqRel);
        c.mapcount.fetch_add(add, Ordering::AcqRel);
        let flags = self.mm.leaf_flags();
        if huge {
            let (table, idx) = self.mem.walk_alloc(cpu, &self.mm, va, 2).expect("allocated above");
            self.mem.deposit(table, deposit.expect("allocated above"));
            self.mem.store_entry(table, idx, PtEntry::new(pfn0, flags | PTE_HUGE));
            self.mem.ptdesc(table).entries.fetch_add(1, Ordering::Relaxed);
        } else {
            for p in 0..n {
                let a = va + p * PAGE_SIZE as u64;
                let (table, idx) = self.mem.walk_alloc(cpu, &self.mm, a, 1).expect("allocated above");
                let pfn = match t {
                    Target::Other(..) => pfn0,
                    _ => pfn0.add(first + p),
                };
                self.mem.store_entry(table, idx, PtEntry::new(pfn, flags));
                self.mem.ptdesc(table).entries.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    pub(super) fn live_folio<'f>(&self, f: &'f Folio) -> Result<Target<'f>, MapError> {
        loop {
            let pfn = f.flags.pfn();
            match self.mem.pages.memmap().load(self.mem.pages.platform(), pfn).map(|v| v.word) {
                Some(w) if w.desc_addr() == Some(f as *const Folio as usize) => {
                    return Ok(Target::Folio(f, w.tag().expect("described")))
                }
                // A migration moved the folio between the two reads (its pfn moves before its
                // old words are retired): look again at the new place.
                _ if f.flags.pfn() != pfn => continue,
                _ => return Err(MapError::NoReference),
            }
        }
    }

    /// Maps every page of `folio` (any order; a reference the caller holds) by PTEs from `va`,
    /// in an anon VMA (anon folio) or a file VMA of the folio's file at the folio's index.
    /// Each entry takes a reference and a mapcount. If the mapcount would pass the limit, a
    /// large anon folio is split to order 0 (which needs the caller's reference and the
    /// mappings' to be its only ones, else `MapError::Split(FolioError::Busy)`) and its pages
    /// mapped one by one; the caller's reference then stays with the first piece.
    pub fn map_folio(&self, cpu: &Cpu<'_>, va: u64, folio: &FolioRef<'_>) -> Result<(), MapError> {
        let folio: &Folio = folio;
        let t = self.live_folio(folio)?;
        let n = 1u64 << folio.flags.order();
        let g = self.mm.lock();
        match self.map_locked(&g, cpu, va, t, 0, n, false, None) {
            Err(MapError::MapcountLimit(_))
                if folio.flags.order() > 0 && matches!(t, Target::Folio(_, Tag::AnonFolio)) =>
            {
                let pfn = folio.flags.pfn();
                self.mem.folio_split_held(cpu, folio, Some(1), 0, |_| {}).map_err(MapError::Split)?;
                // The caller's reference was copied into every piece: it keeps the first; the
                // others' are dropped once their pages are mapped (their entries hold them).
                let drop_copies = || {
                    for i in 1..n {
                        if let Target::Folio(p, _) = self.mem.target_of(pfn.add(i)) {
                            let r = self.mem.folios.folio_put_raw(cpu, p);
                            debug_assert!(r.is_ok(), "{r:?}");
                        }
                    }
                };
                for i in 0..n {
                    let r = match self.mem.target_of(pfn.add(i)) {
                        t @ Target::Folio(..) => {
                            self.map_locked(&g, cpu, va + i * PAGE_SIZE as u64, t, 0, 1, false, None)
                        }
                        _ => Err(MapError::NoReference),
                    };
                    if let Err(e) = r {
                        // Roll back the pages mapped so far.
                        let v = g.find(va).expect("checked");
                        let _rl = v.rmap().map(|r| r.lock());
                        let _pt = self.mm.pt_lock.lock();
                        let mut st = ZapStats::default();
                        self.mem.zap(cpu, &self.mm, self.mm.pgd, 4, va, va + i * PAGE_SIZE as u64, true, &mut st);
                        drop_copies();
                        return Err(e);
                    }
                }
                drop_copies();
                Ok(())
            }
            r => r,
        }
    }

    /// Maps every page of driver memory `d` by PTEs from `va`, in a pfn VMA.
    pub fn map_mappable(&self, cpu: &Cpu<'_>, va: u64, d: &MappableDesc) -> Result<(), MapError> {
        match self.mem.pages.memmap().load(self.mem.pages.platform(), d.flags.pfn()).map(|v| v.word.desc_addr()) {
            Some(Some(a)) if a == d as *const MappableDesc as usize => {}
            _ => return Err(MapError::NoReference),
        }
        self.map_target(cpu, va, Target::Mappable(d), 0, 1u64 << d.flags.order(), false)
    }

    /// Maps the one page `pfn` at `va`, whatever mappable kind its word names (see the module
    /// docs); everything else is refused with [`MapError::Unmappable`]. A folio page goes to
    /// the address its index gives in an anon or file VMA; other kinds need a pfn VMA.
    pub fn map_pfn(&self, cpu: &Cpu<'_>, va: u64, pfn: Pfn) -> Result<(), MapError> {
        let g = self.mm.lock();
        self.check_range(va, PAGE_SIZE as u64)?;
        let kind = g.find(va).map_or(VmaKind::Pfn, |v| v.kind);
        // Read under RCU until map_locked pins it (the descriptor is not held yet).
        let rcu = self.mem.pages.rcu().read_lock(cpu);
        let t = self.mem.classify(&rcu, self.mm.kind, kind, pfn)?;
        let first = match t {
            Target::Folio(f, _) => pfn.0.wrapping_sub(f.flags.pfn().0),
            Target::Mappable(d) => pfn.0.wrapping_sub(d.flags.pfn().0),
            Target::Other(..) => 0,
        };
        self.map_locked(&g, cpu, va, t, first, 1, false, Some(rcu))
    }

    /// Maps the page a [`UserPage`] token names at `va` of a user address space (a kernel one
    /// refuses it with [`MapError::OutOfRange`]: tokens are for user space). The word is
    /// checked again by [`mappability`], so a stale token is refused like any unmappable pfn.
    pub fn map_user_page(&self, cpu: &Cpu<'_>, va: u64, page: UserPage) -> Result<(), MapError> {
        if self.mm.kind != MmKind::User {
            return Err(MapError::OutOfRange(va));
        }
        self.map_pfn(cpu, va, page.pfn)
    }

    /// Unmaps every entry in `[start, start + len)` (splitting a PMD mapping the range cuts),
    /// dropping each entry's mapcount and reference and freeing emptied tables. VMAs stay.
    /// Refused with [`MapError::NotMapped`] if nothing in the range was mapped.
    pub fn unmap(&self, cpu: &Cpu<'_>, start: u64, len: u64) -> Result<ZapStats, MapError> {
        let end = self.check_range(start, len)?;
        let g = self.mm.lock();
        let mut st = ZapStats::default();
        g.iter().for_each(|v| {
            let (s, e) = (v.start.max(start), v.end.min(end));
            if s < e {
                let _rl = v.rmap().map(|r| r.lock());
                let _pt = self.mm.pt_lock.lock();
                self.mem.zap(cpu, &self.mm, self.mm.pgd, 4, s, e, true, &mut st);
            }
        });
        if st.entries == 0 {
            return Err(MapError::NotMapped(start));
        }
        Ok(st)
    }

    /// The entry mapping `va`, and whether it is a PMD (huge) entry.
    pub fn translate(&self, va: u64) -> Option<(PtEntry, bool)> {
        let (lo, hi) = self.mm.range();
        if va < lo || va >= hi {
            return None;
        }
        let _pt = self.mm.pt_lock.lock();
        let (level, table, idx) = self.mem.lookup(&self.mm, va)?;
        Some((self.mem.load_entry(table, idx), level == 2))
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn entry_encoding() {
        let e = PtEntry::new(Pfn(0x12345), PTE_PRESENT | PTE_RW | PTE_USER | PTE_HUGE);
        assert_eq!(e.0, 0x1234_5000 | 0x87);
        assert!(e.present() && e.writable() && e.user() && e.huge());
        assert_eq!(e.pfn(), Pfn(0x12345));
        assert_eq!(index_of(0xffff_8000_0000_0000, 4), 256);
        assert_eq!(index_of(0x20_1000, 1), 1);
        assert_eq!(index_of(0x20_1000, 2), 1);
    }
}
