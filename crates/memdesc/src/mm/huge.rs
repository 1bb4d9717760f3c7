//! Huge (PMD) mappings (Linux's `mm/huge_memory.c`): mapping a 2 MiB folio by one PMD entry,
//! the deposited PTE table, splitting a PMD mapping into 512 PTEs, and splitting a mapped
//! folio.
//!
//! A PMD mapping counts 1 in the folio's mapcount and holds one reference. It deposits a
//! preallocated PTE table in the PMD table's ptdesc, so [`MmRef::split_pmd`] (and a zap that
//! cuts the mapping) needs no allocation: it withdraws the table, fills it with 512 PTEs and
//! adds 511 to the folio's mapcount and refcount. Splitting a mapped folio splits its PMD
//! mappings first, then counts each piece's entries through the rmap.

use super::Mms;
use crate::addr::{Pfn, AREA_ORDER, PAGE_SIZE};
use crate::cpu::Cpu;
use crate::desc::Folio;
use crate::folio::{FolioError, FolioRef};
use crate::platform::Platform;
use crate::sync::Ordering;
use crate::word::Tag;

use super::mmap::MmRef;
use super::pgtable::{MapError, PtEntry, TableLock, PMD_SIZE, PTE_PRESENT, PTE_RW, PTE_USER, PTRS_PER_TABLE};

impl<'a, P: Platform> Mms<'a, P> {
    pub(super) fn deposit(&self, pmd_table: Pfn, pte_table: Pfn) {
        let pd = self.ptdesc(pmd_table);
        let _l = TableLock::new(pd);
        let head = pd.pmd_huge_pte.load(Ordering::Relaxed);
        self.ptdesc(pte_table).pmd_huge_pte.store(head, Ordering::Relaxed);
        pd.pmd_huge_pte.store(pte_table.0 + 1, Ordering::Relaxed);
    }

    pub(super) fn withdraw(&self, pmd_table: Pfn) -> Pfn {
        let pd = self.ptdesc(pmd_table);
        let _l = TableLock::new(pd);
        let head = pd.pmd_huge_pte.load(Ordering::Relaxed);
        assert!(head != 0, "a huge PMD entry always has a deposited table");
        let t = Pfn(head - 1);
        let td = self.ptdesc(t);
        pd.pmd_huge_pte.store(td.pmd_huge_pte.load(Ordering::Relaxed), Ordering::Relaxed);
        td.pmd_huge_pte.store(0, Ordering::Relaxed);
        t
    }

    /// Replaces the huge entry `pmd_table[idx]` by the deposited PTE table filled with 512
    /// PTEs; the folio's mapcount and refcount grow by 511. Page-table lock held.
    pub(super) fn split_pmd_locked(&self, pmd_table: Pfn, idx: usize) {
        let ent = self.load_entry(pmd_table, idx);
        let t = self.withdraw(pmd_table);
        let flags = ent.0 & (PTE_PRESENT | PTE_RW | PTE_USER);
        {
            let td = self.ptdesc(t);
            let _l = TableLock::new(td);
            let map = self.table_map(t);
            for i in 0..PTRS_PER_TABLE {
                map.word(i).store(PtEntry::new(ent.pfn().add(i as u64), flags).0, Ordering::Relaxed);
            }
            td.entries.store(PTRS_PER_TABLE as u32, Ordering::Release);
        }
        let c = self.target_of(ent.pfn());
        c.counts().mapcount.fetch_add(PTRS_PER_TABLE as u32 - 1, Ordering::AcqRel);
        c.counts().refcount.fetch_add(PTRS_PER_TABLE as u32 - 1, Ordering::AcqRel);
        self.store_entry(pmd_table, idx, PtEntry::new(t, PTE_PRESENT | PTE_RW | (ent.0 & PTE_USER)));
    }

    /// The split for a caller that holds `holders` references of its own (see
    /// `PhysMem::folio_split_held`): a mapped folio's mappings are split and counted here
    /// first ([`Mms::folio_split_mapped`]), an unmapped one goes straight to the folio layer.
    pub(crate) fn folio_split_held(
        &self,
        cpu: &Cpu<'_>,
        f: &Folio,
        holders: Option<u32>,
        new_order: u32,
        each: impl FnMut(&Folio),
    ) -> Result<(), FolioError> {
        if f.counts.mapcount() != 0 {
            return self.folio_split_mapped(cpu, f, holders, new_order, each);
        }
        self.folios.folio_split_counts(cpu, f, holders, new_order, None, each)
    }

    /// Splits a mapped folio (the mapped half of [`PhysMem::folio_split`](crate::PhysMem::folio_split)): every PMD mapping
    /// is split into PTEs, then the entries mapping each piece are counted by the rmap walk
    /// and the counts distributed, all under the folio's rmap lock.
    pub(crate) fn folio_split_mapped(
        &self,
        cpu: &Cpu<'_>,
        f: &Folio,
        holders: Option<u32>,
        new_order: u32,
        each: impl FnMut(&Folio),
    ) -> Result<(), FolioError> {
        let order = f.flags.order();
        if new_order >= order {
            return Err(FolioError::BadOrder);
        }
        // A cached file folio is split by its page cache (which must re-point its slots):
        // refused here.
        if self.pages.memmap().load(self.pages.platform(), f.flags.pfn()).and_then(|v| v.word.tag())
            != Some(Tag::AnonFolio)
        {
            return Err(FolioError::Mapped(f.counts.mapcount()));
        }
        let pieces = 1usize << (order - new_order);
        let mut buf = self.slabs.karray(cpu, pieces, 0u32).map_err(FolioError::NoMemory)?;
        let counts = buf.as_mut_slice();
        let r = {
            let Some(list) = self.lock_folio_rmap(cpu, f) else {
                self.slabs.karray_free(cpu, buf);
                return Err(FolioError::Mapped(f.counts.mapcount()));
            };
            // Split PMD mappings first (no allocation: the tables are deposited).
            self.walk_mappings_locked(&list, f, &mut |_, _, _, level, table, idx, _| {
                if level == 2 {
                    self.split_pmd_locked(table, idx);
                }
            });
            let pfn0 = f.flags.pfn();
            self.walk_mappings_locked(&list, f, &mut |_, _, _, _, _, _, e| {
                counts[((e.pfn().0 - pfn0.0) >> new_order) as usize] += 1;
            });
            let anon = self
                .pages
                .memmap()
                .load(self.pages.platform(), pfn0)
                .is_some_and(|v| v.word.tag() == Some(Tag::AnonFolio));
            let mut each = each;
            self.folios.folio_split_counts(cpu, f, holders, new_order, Some(counts), |p| {
                if anon && p.counts.mapcount() == 0 {
                    p.mapping.store(0, Ordering::Release);
                }
                each(p)
            })
        };
        self.slabs.karray_free(cpu, buf);
        r
    }
}

impl<'m, P: Platform> MmRef<'m, P> {
    /// Maps a 2 MiB folio by one PMD entry at a 2 MiB-aligned `va` (mapcount +1, one
    /// reference). A PTE table is preallocated and deposited for a later [`MmRef::split_pmd`].
    pub fn map_folio_pmd(&self, cpu: &Cpu<'_>, va: u64, folio: &FolioRef<'_>) -> Result<(), MapError> {
        let folio: &Folio = folio;
        if folio.flags.order() != AREA_ORDER {
            return Err(MapError::NotPmdSized);
        }
        let t = self.live_folio(folio)?;
        self.map_target(cpu, va, t, 0, PTRS_PER_TABLE as u64, true)
    }

    /// Splits the PMD mapping at `va` (2 MiB-aligned) into 512 PTEs in the deposited table:
    /// the folio's mapcount and refcount grow by 511. Allocates nothing.
    pub fn split_pmd(&self, va: u64) -> Result<(), MapError> {
        self.check_range(va, PAGE_SIZE as u64)?;
        if !va.is_multiple_of(PMD_SIZE) {
            return Err(MapError::Misaligned(va));
        }
        let g = self.mm.lock();
        let v = g.find(va).ok_or(MapError::NoVma(va))?;
        let _rl = v.rmap().map(|r| r.lock());
        let _pt = self.mm.pt_lock.lock();
        match self.mem.lookup(&self.mm, va) {
            Some((2, table, idx)) => {
                self.mem.split_pmd_locked(table, idx);
                Ok(())
            }
            _ => Err(MapError::NotHuge(va)),
        }
    }
}
