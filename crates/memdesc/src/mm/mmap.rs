//! Address spaces and their VMAs (Linux's `mm/mmap.c` and `kernel/fork.c`): [`Mm`], the
//! [`MmRef`] handle, the slab caches they live in ([`MmCaches`]), VMA creation and removal,
//! fork and teardown.
//!
//! **Kernel objects** ([`Mm`], VMAs, anon_vmas) live in the machine's own memory, in slab
//! caches that [`PhysMem::mm_caches`](crate::PhysMem::mm_caches) creates (`mm_struct`, `vm_area`, and `anon_vma`, which
//! is TYPESAFE_BY_RCU); [`MmCaches::mm_create`] makes address spaces. An `Mm` holds its PGD
//! and a sorted list of VMAs. Anon VMAs point to an anon_vma ([`RmapList`]) that
//! [`MmRef::fork`] shares with the child's copy; file VMAs are linked on their
//! [`AddressSpace`]'s `i_mmap` list. Not modelled: VMA split/merge and copy-on-write faults.

use core::ptr::NonNull;

use super::Mms;
use crate::addr::{Pfn, PAGE_SHIFT, PAGE_SIZE};
use crate::cpu::Cpu;
use crate::desc::Folio;
use crate::desc_ref::Kept;
use crate::list::{Links, List};
use crate::page_alloc::AllocError;
use crate::pagecache::AddressSpace;
use crate::platform::Platform;
use crate::slab::{CacheArgs, SlabCache, SlabError};
use crate::slab::{CacheObj, ObjCache};
use crate::sync::{AtomicU64, Ordering, SpinGuard, SpinLock};

use super::pgtable::{
    MapError, PtEntry, Target, ZapStats, KERNEL_END, KERNEL_START, PMD_SIZE, PTE_PRESENT, PTE_RW, PTE_USER, USER_END,
};
use super::rmap::{RmapLink, RmapList};

/// User or kernel address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmKind {
    /// Addresses `0..USER_END`, entries carry the USER bit.
    User,
    /// Addresses `KERNEL_START..KERNEL_END`, no USER bit.
    Kernel,
}

/// What a VMA maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmaKind {
    /// Anonymous folios, reverse-mapped through an anon_vma.
    Anon,
    /// File folios of one address space, reverse-mapped through its `i_mmap`.
    File,
    /// Driver, vmalloc and netmem pages by pfn (no rmap).
    Pfn,
}

/// A virtual memory area of an [`Mm`]: a page-aligned range mapping one kind of memory.
/// Lives in an object of its [`MmCaches`]' `vm_area` cache, on its mm's chain and (anon and file
/// VMAs) its rmap list; immutable but for the links of those two lists.
#[repr(C)]
pub struct Vma {
    /// Links on the rmap list (`rmap()`), first (`Vma::of_link` relies on it): only ever
    /// that one list.
    pub(super) rmap: RmapLink,
    mm: Kept<Mm>,
    pub(super) start: u64,
    pub(super) end: u64,
    pub(super) pgoff: u64,
    pub(super) kind: VmaKind,
    /// The address of the anon_vma (`Anon`) or of the address space (`File`): the `mapping`
    /// of the folios it maps; 0 for `Pfn`. Compared, never dereferenced.
    pub(super) owner: usize,
    /// The rmap list: the anon_vma, or the address space's `i_mmap`; none for `Pfn`.
    list: Kept<RmapList>,
    /// Links on its mm's VMA chain (sorted by address; `Linked` in `machine/raw.rs`).
    chain: Links,
}

// `Vma::of_link` (machine/raw.rs) turns a link back into its VMA: the link is first.
#[cfg(not(loom))]
const _: () = assert!(core::mem::offset_of!(Vma, rmap) == 0);

/// What a new VMA maps, with the object that reverse-maps it.
pub(super) enum VmaOwner<'a> {
    /// Anonymous memory of this anon_vma.
    Anon(&'a RmapList),
    /// The pages of this file.
    File(&'a AddressSpace),
    /// Pages by pfn.
    Pfn,
}

impl Vma {
    /// A VMA of `mm` over `[start, end)` (unlinked, not yet on `mm`'s list).
    pub(super) fn new(mm: &Mm, start: u64, end: u64, pgoff: u64, owner: VmaOwner<'_>) -> Vma {
        let (kind, addr, list) = match owner {
            VmaOwner::Anon(av) => (VmaKind::Anon, av as *const RmapList as usize, av.kept()),
            VmaOwner::File(f) => (VmaKind::File, f as *const AddressSpace as usize, f.i_mmap.kept()),
            VmaOwner::Pfn => (VmaKind::Pfn, 0, Kept::NONE),
        };
        Vma {
            mm: mm.kept(),
            start,
            end,
            pgoff,
            kind,
            owner: addr,
            list,
            chain: Links::new(),
            rmap: RmapLink::default(),
        }
    }

    /// A copy of this VMA for `mm` (fork): same range, offset and rmap list.
    pub(super) fn copy_for(&self, mm: &Mm) -> Vma {
        Vma {
            mm: mm.kept(),
            start: self.start,
            end: self.end,
            pgoff: self.pgoff,
            kind: self.kind,
            owner: self.owner,
            list: self.list.get().map_or(Kept::NONE, |l| l.kept()),
            chain: Links::new(),
            rmap: RmapLink::default(),
        }
    }

    /// First address.
    pub fn start(&self) -> u64 {
        self.start
    }
    /// End address (exclusive).
    pub fn end(&self) -> u64 {
        self.end
    }
    /// Page offset of `start` (file index for file VMAs, `start >> 12` for anon VMAs).
    pub fn pgoff(&self) -> u64 {
        self.pgoff
    }
    /// What it maps.
    pub fn kind(&self) -> VmaKind {
        self.kind
    }
    /// The links of the rmap list.
    pub(crate) fn rmap_link(&self) -> &RmapLink {
        &self.rmap
    }
    /// The links of the mm's VMA chain (for `Linked`, in `machine/raw.rs`).
    pub(crate) fn chain_links(&self) -> &Links {
        &self.chain
    }
    /// The rmap list (anon_vma or `i_mmap`), for anon and file VMAs.
    pub(crate) fn rmap(&self) -> Option<&RmapList> {
        self.list.get()
    }
    pub(super) fn mm(&self) -> &Mm {
        self.mm.get().expect("a VMA keeps its mm")
    }
    /// The address page `index` of the mapped object has in this VMA, if it falls inside.
    pub(super) fn va_of(&self, index: u64) -> Option<u64> {
        let off = index.checked_sub(self.pgoff)?;
        let va = self.start.checked_add(off.checked_mul(PAGE_SIZE as u64)?)?;
        (va < self.end).then_some(va)
    }
}

/// An address space: a PGD, the VMAs, and two locks. Lives in an object of its
/// [`MmCaches`]' `mm_struct` cache, owned by its [`MmRef`]. The rmap walk hands `&Mm` to its
/// callback.
pub struct Mm {
    /// The VMAs, sorted by address; the lock is the mm's (one VMA or mapping operation per mm
    /// at a time).
    vmas: SpinLock<List<Vma>>,
    pub(super) pt_lock: SpinLock<()>,
    pub(super) kind: MmKind,
    pub(super) pgd: Pfn,
    pub(super) pt_pages: AtomicU64,
}

impl Mm {
    /// User or kernel.
    pub fn kind(&self) -> MmKind {
        self.kind
    }
    /// Address of the object (what ptdescs' `mm` fields hold).
    pub fn addr(&self) -> usize {
        self as *const Mm as usize
    }
    /// Pfn of the PGD table.
    pub fn pgd(&self) -> Pfn {
        self.pgd
    }
    /// Page-table pages in use, the PGD and deposited tables included.
    pub fn pt_pages(&self) -> u64 {
        self.pt_pages.load(Ordering::Relaxed)
    }
    pub(super) fn range(&self) -> (u64, u64) {
        match self.kind {
            MmKind::User => (0, USER_END),
            MmKind::Kernel => (KERNEL_START, KERNEL_END),
        }
    }
    pub(super) fn leaf_flags(&self) -> u64 {
        match self.kind {
            MmKind::User => PTE_PRESENT | PTE_RW | PTE_USER,
            MmKind::Kernel => PTE_PRESENT | PTE_RW,
        }
    }
    /// Takes the mm's lock: its VMA chain.
    pub(super) fn lock(&self) -> VmaGuard<'_> {
        VmaGuard { mm: self, vmas: self.vmas.lock() }
    }
}

/// An mm's lock held, with its VMA chain. A VMA is linked only on its own mm's chain
/// ([`VmaGuard::insert`] checks it); the one unlink (`VmaGuard::take`, in `machine/raw.rs`)
/// relies on it.
pub(crate) struct VmaGuard<'a> {
    mm: &'a Mm,
    vmas: SpinGuard<'a, List<Vma>>,
}

impl<'a> VmaGuard<'a> {
    /// The VMAs, by address.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Vma> {
        self.vmas.iter()
    }

    /// The VMA containing `va`.
    pub(super) fn find(&self, va: u64) -> Option<&Vma> {
        self.vmas.iter().take_while(|v| v.start <= va).find(|v| va < v.end)
    }

    /// The VMA overlapping `[start, end)` first, if any.
    pub(super) fn overlap(&self, start: u64, end: u64) -> Option<&Vma> {
        self.vmas.iter().find(|c| c.start < end && start < c.end)
    }

    /// Links `v` (a VMA of this mm, overlapping none on the chain) in address order; refused
    /// (`false`) for another mm's VMA or a linked one.
    pub(super) fn insert(&mut self, v: &Vma) -> bool {
        if !core::ptr::eq(v.mm(), self.mm) || v.chain.is_linked() {
            return false;
        }
        // Move the VMAs above `v` aside, link it last, and put them back after it.
        let mut above = List::new();
        while self.vmas.back().is_some_and(|l| l.start >= v.end) {
            let l = self.vmas.pop_back().expect("a last VMA");
            let moved = above.push_front(l);
            debug_assert!(moved.is_ok());
        }
        let ok = self.vmas.push_back(v).is_ok();
        self.vmas.append(&mut above);
        ok
    }

    /// The mm and its chain, for `VmaGuard::take` in `machine/raw.rs` (the one unlink);
    /// nothing else may link through the `&mut`.
    pub(crate) fn raw_parts(&mut self) -> (&'a Mm, &mut List<Vma>) {
        (self.mm, &mut *self.vmas)
    }
}

/// A handle to one address space: VMAs, mapping, unmapping, PMD split, fork, teardown.
///
/// Not `Clone`: [`MmRef::destroy`] consumes it; dropping it without destroying leaks the
/// address space (and the references its entries hold).
pub struct MmRef<'m, P: Platform> {
    pub(super) mem: Mms<'m, P>,
    pub(super) caches: &'m MmCaches<'m, P>,
    pub(super) mm: CacheObj<'m, Mm>,
}

/// The slab caches of address spaces, VMAs and anon_vmas; creates [`MmRef`]s.
pub struct MmCaches<'m, P: Platform> {
    pub(super) mem: Mms<'m, P>,
    pub(super) mm: ObjCache<'m, Mm>,
    pub(super) vma: ObjCache<'m, Vma>,
    pub(super) anon_vma: &'m SlabCache,
}

impl<'m, P: Platform> MmCaches<'m, P> {
    /// Creates an empty address space with its PGD.
    pub fn mm_create<'c>(&'c self, cpu: &Cpu<'_>, kind: MmKind) -> Result<MmRef<'c, P>, AllocError> {
        let mem = self.mem;
        let mm = Mm {
            vmas: SpinLock::new(List::new()),
            pt_lock: SpinLock::new(()),
            kind,
            pgd: Pfn(0),
            pt_pages: AtomicU64::new(1),
        };
        let mut mm = mem.slabs.obj_alloc(cpu, self.mm, mm)?;
        // The PGD's ptdesc names the mm: allocated once the mm has its address.
        match mem.alloc_table_for(cpu, mm.addr(), 4) {
            Ok(pgd) => mm.pgd = pgd,
            Err(e) => {
                mem.slabs.obj_free(cpu, mm);
                return Err(e);
            }
        }
        Ok(MmRef { mem, caches: self, mm })
    }

    /// The anon_vma cache (for `Mms::anon_vma_alloc`).
    pub(crate) fn anon_vma_cache(&self) -> &'m SlabCache {
        self.anon_vma
    }

    pub(super) fn alloc_anon_vma(&self, cpu: &Cpu<'_>) -> Result<&'m RmapList, AllocError> {
        let r = self.mem.anon_vma_alloc(cpu, self)?;
        let g = r.lock();
        // Freed with its last VMA: the list is empty; `nr` held the free pointer.
        debug_assert!(g.is_empty());
        g.count();
        drop(g);
        Ok(r)
    }

    /// Destroys the caches; refused while any address space, VMA or anon_vma is live.
    pub fn destroy(self, cpu: &Cpu<'_>) -> Result<(), SlabError> {
        let caches = [self.mm.cache(), self.vma.cache(), self.anon_vma];
        for c in caches {
            if c.live_objects() != 0 {
                return Err(SlabError::Busy(c.live_objects()));
            }
        }
        for c in caches {
            self.mem.slabs.destroy_cache(cpu, self.mem.slabs.cache_ref_internal(c))?;
        }
        Ok(())
    }
}

impl<'a, P: Platform> Mms<'a, P> {
    // ---- kernel objects -------------------------------------------------------------------

    /// Frees a VMA taken off its mm's chain and its rmap list (`Mms::vma_alloc` made it).
    pub(super) fn vma_free(&self, cpu: &Cpu<'_>, cache: ObjCache<'_, Vma>, v: &Vma) {
        debug_assert!(!v.chain.is_linked() && !v.rmap.0.is_linked(), "a VMA is freed off its lists");
        let res = self.slabs.cache_free(cpu, cache.cache(), NonNull::from(v).cast());
        debug_assert!(res.is_ok(), "VMA free: {res:?}");
    }

    /// Frees an anon_vma whose last VMA went (`Mms::anon_vma_alloc` made it).
    pub(super) fn anon_vma_free(&self, cpu: &Cpu<'_>, cache: &SlabCache, r: &RmapList) {
        let res = self.slabs.cache_free(cpu, cache, NonNull::from(r).cast());
        debug_assert!(res.is_ok(), "anon_vma free: {res:?}");
    }

    /// Creates the slab caches address spaces live in (`mm_struct`, `vm_area`, and the
    /// TYPESAFE_BY_RCU `anon_vma`); every [`MmRef`] is created through them.
    pub(crate) fn mm_caches(&self, cpu: &Cpu<'_>) -> Result<MmCaches<'a, P>, AllocError> {
        let mm = self.slabs.new_obj_cache::<Mm>(cpu, CacheArgs { align: 16, ..CacheArgs::new("mm_struct", 0) })?;
        let vma = match self.slabs.new_obj_cache::<Vma>(cpu, CacheArgs { align: 16, ..CacheArgs::new("vm_area", 0) }) {
            Ok(c) => c,
            Err(e) => {
                let _ = self.slabs.destroy_cache(cpu, self.slabs.cache_ref_internal(mm.cache()));
                return Err(e);
            }
        };
        let anon = CacheArgs {
            align: 16,
            typesafe_by_rcu: true,
            freeptr_offset: Some(RmapList::FREEPTR_OFFSET),
            ..CacheArgs::new("anon_vma", core::mem::size_of::<RmapList>())
        };
        let anon_vma = match self.slabs.new_cache(cpu, &anon) {
            Ok(c) => c,
            Err(e) => {
                let _ = self.slabs.destroy_cache(cpu, self.slabs.cache_ref_internal(mm.cache()));
                let _ = self.slabs.destroy_cache(cpu, self.slabs.cache_ref_internal(vma.cache()));
                return Err(e);
            }
        };
        Ok(MmCaches { mem: *self, mm, vma, anon_vma })
    }
}

impl<'m, P: Platform> MmRef<'m, P> {
    /// The address space.
    pub fn mm(&self) -> &Mm {
        &self.mm
    }

    pub(super) fn check_range(&self, start: u64, len: u64) -> Result<u64, MapError> {
        if !start.is_multiple_of(PAGE_SIZE as u64) || !len.is_multiple_of(PAGE_SIZE as u64) {
            return Err(MapError::Misaligned(start));
        }
        let (lo, hi) = self.mm.range();
        let end = start.checked_add(len).ok_or(MapError::OutOfRange(start))?;
        if len == 0 || start < lo || end > hi {
            return Err(MapError::OutOfRange(start));
        }
        Ok(end)
    }

    pub(super) fn add_vma(&self, cpu: &Cpu<'_>, v: Vma) -> Result<(), MapError> {
        let mut g = self.mm.lock();
        self.insert_vma_locked(&mut g, cpu, v)
    }

    /// Allocates `v` and links it on its rmap list and on this mm's chain (`g`), in address
    /// order; an overlap is refused.
    pub(super) fn insert_vma_locked(&self, g: &mut VmaGuard<'_>, cpu: &Cpu<'_>, v: Vma) -> Result<(), MapError> {
        if let Some(c) = g.overlap(v.start, v.end) {
            return Err(MapError::Overlap(v.start.max(c.start)));
        }
        let new = self.mem.vma_alloc(cpu, self.caches.vma, v)?;
        if let Some(r) = new.rmap() {
            let linked = r.lock().link(new);
            debug_assert!(linked, "a fresh VMA joins its own rmap list");
        }
        let linked = g.insert(new);
        debug_assert!(linked, "a fresh VMA joins its own mm's chain");
        Ok(())
    }

    /// Creates an anonymous VMA over `[start, start + len)` with a fresh anon_vma.
    pub fn mmap_anon(&self, cpu: &Cpu<'_>, start: u64, len: u64) -> Result<(), MapError> {
        let end = self.check_range(start, len)?;
        let av = self.caches.alloc_anon_vma(cpu)?;
        let v = Vma::new(&self.mm, start, end, start >> PAGE_SHIFT, VmaOwner::Anon(av));
        self.add_vma(cpu, v).inspect_err(|_| self.mem.anon_vma_free(cpu, self.caches.anon_vma, av))
    }

    /// Creates a VMA mapping `file` from page `pgoff` over `[start, start + len)`. File VMAs
    /// must be removed before the file's address space is destroyed.
    pub fn mmap_file(
        &self,
        cpu: &Cpu<'_>,
        start: u64,
        len: u64,
        file: &AddressSpace,
        pgoff: u64,
    ) -> Result<(), MapError> {
        let end = self.check_range(start, len)?;
        if pgoff.checked_add(len >> PAGE_SHIFT).is_none() {
            return Err(MapError::OutOfRange(start));
        }
        self.add_vma(cpu, Vma::new(&self.mm, start, end, pgoff, VmaOwner::File(file)))
    }

    /// Creates a VMA for pages mapped by pfn (driver memory, mappable vmalloc, netmem).
    pub fn mmap_pfn(&self, cpu: &Cpu<'_>, start: u64, len: u64) -> Result<(), MapError> {
        let end = self.check_range(start, len)?;
        self.add_vma(cpu, Vma::new(&self.mm, start, end, start >> PAGE_SHIFT, VmaOwner::Pfn))
    }

    /// Removes the VMA that starts at `start`, unmapping everything in it.
    pub fn munmap(&self, cpu: &Cpu<'_>, start: u64) -> Result<ZapStats, MapError> {
        let mut g = self.mm.lock();
        let v = g.take(Some(start)).ok_or(MapError::NoVma(start))?;
        Ok(self.remove_vma(cpu, v))
    }

    /// Zaps a VMA (already off the mm's list), unlinks it from its rmap list and frees it
    /// (and its anon_vma with the last VMA). Mm lock held.
    pub(super) fn remove_vma(&self, cpu: &Cpu<'_>, v: &Vma) -> ZapStats {
        let mut st = ZapStats::default();
        let r = v.rmap();
        let mut lg = r.map(|r| r.lock());
        {
            let _pt = self.mm.pt_lock.lock();
            self.mem.zap(cpu, &self.mm, self.mm.pgd, 4, v.start, v.end, true, &mut st);
        }
        let left = lg.as_mut().and_then(|g| v.rmap_unlink(g));
        drop(lg);
        if v.kind == VmaKind::Anon && left == Some(0) {
            if let Some(r) = r {
                self.mem.anon_vma_free(cpu, self.caches.anon_vma, r);
            }
        }
        self.mem.vma_free(cpu, self.caches.vma, v);
        st
    }

    /// Fork-style copy: a new address space with a copy of every VMA (anon VMAs share the
    /// parent's anon_vma, file VMAs join the file's `i_mmap`) and of every entry, each taking
    /// its own reference and mapcount (a shared folio's mapcount becomes 2 per page). Anon
    /// entries are write-protected in both (copy-on-write; the write fault is not modelled).
    /// On failure the child is torn down and the parent is unchanged but for that
    /// write-protection.
    pub fn fork(&self, cpu: &Cpu<'_>) -> Result<MmRef<'m, P>, MapError> {
        let child = self.caches.mm_create(cpu, self.mm.kind)?;
        let g = self.mm.lock();
        let res = g.iter().try_for_each(|v| self.fork_vma(cpu, &child, v));
        drop(g);
        match res {
            Ok(()) => Ok(child),
            Err(e) => {
                child.destroy(cpu);
                Err(e)
            }
        }
    }

    /// A large anon folio mapped in `v` whose mapcount the copy of `v` would push past the
    /// limit, with a reference taken for the caller.
    pub(super) fn fork_victim(&self, v: &Vma) -> Option<&'m Folio> {
        if v.kind != VmaKind::Anon {
            return None;
        }
        let limit = self.mem.pages.config().mapcount_limit as u64;
        let _rl = v.rmap().map(|r| r.lock());
        let _pt = self.mm.pt_lock.lock();
        let mut va = v.start;
        while va < v.end {
            let Some((level, table, idx)) = self.mem.lookup(&self.mm, va) else {
                va += PAGE_SIZE as u64;
                continue;
            };
            let e = self.mem.load_entry(table, idx);
            if let Target::Folio(f, _) = self.mem.target_of(e.pfn()) {
                let order = f.flags.order();
                let adds = if level == 2 { 1 } else { 1u64 << order };
                // A migration may have it frozen: then it is not taken this time.
                if order > 0 && f.counts.mapcount() as u64 + adds > limit && f.counts.try_get() {
                    return Some(f);
                }
            }
            va += if level == 2 { PMD_SIZE } else { PAGE_SIZE as u64 };
        }
        None
    }

    pub(super) fn fork_vma(&self, cpu: &Cpu<'_>, child: &MmRef<'m, P>, v: &Vma) -> Result<(), MapError> {
        // Large folios that the copy would push past the mapcount limit are split first.
        while let Some(f) = self.fork_victim(v) {
            let (pfn, order) = (f.flags.pfn(), f.flags.order());
            if let Err(e) = self.mem.folio_split_held(cpu, f, Some(1), 0, |_| {}) {
                let pr = self.mem.folios.folio_put_raw(cpu, f);
                debug_assert!(pr.is_ok(), "{pr:?}");
                return Err(MapError::Split(e));
            }
            // The reference fork_victim took is now held on every piece: drop each.
            for i in 0..1u64 << order {
                if let Target::Folio(piece, _) = self.mem.target_of(pfn.add(i)) {
                    let pr = self.mem.folios.folio_put_raw(cpu, piece);
                    debug_assert!(pr.is_ok(), "{pr:?}");
                }
            }
        }
        {
            let mut cg = child.mm.lock();
            child.insert_vma_locked(&mut cg, cpu, v.copy_for(&child.mm))?;
        }
        let _rl = v.rmap().map(|r| r.lock());
        let _pt = self.mm.pt_lock.lock();
        let _cpt = child.mm.pt_lock.lock();
        let limit = self.mem.pages.config().mapcount_limit;
        let mut va = v.start;
        while va < v.end {
            let Some((level, table, idx)) = self.mem.lookup(&self.mm, va) else {
                va += PAGE_SIZE as u64;
                continue;
            };
            let mut e = self.mem.load_entry(table, idx);
            let t = self.mem.target_of(e.pfn());
            if t.counts().mapcount() >= limit {
                return Err(MapError::MapcountLimit(t.counts().mapcount()));
            }
            if v.kind == VmaKind::Anon && e.writable() {
                e = PtEntry(e.0 & !PTE_RW);
                self.mem.store_entry(table, idx, e);
            }
            if level == 2 {
                let dep = self.mem.alloc_table(cpu, &child.mm, 1)?;
                let (ct, ci) = match self.mem.walk_alloc(cpu, &child.mm, va, 2) {
                    Ok(x) => x,
                    Err(err) => {
                        self.mem.free_table(cpu, &child.mm, dep);
                        return Err(err);
                    }
                };
                self.mem.deposit(ct, dep);
                self.mem.store_entry(ct, ci, e);
                self.mem.ptdesc(ct).entries.fetch_add(1, Ordering::Relaxed);
                va += PMD_SIZE;
            } else {
                let (ct, ci) = self.mem.walk_alloc(cpu, &child.mm, va, 1)?;
                self.mem.store_entry(ct, ci, e);
                self.mem.ptdesc(ct).entries.fetch_add(1, Ordering::Relaxed);
                va += PAGE_SIZE as u64;
            }
            t.counts().refcount.fetch_add(1, Ordering::AcqRel);
            t.counts().mapcount.fetch_add(1, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Tears the address space down: every VMA is unmapped and freed, every page-table page
    /// returns to the allocator, and the [`Mm`] object is freed.
    pub fn destroy(self, cpu: &Cpu<'_>) -> ZapStats {
        let mut total = ZapStats::default();
        {
            let mut g = self.mm.lock();
            while let Some(v) = g.take(None) {
                let st = self.remove_vma(cpu, v);
                total.entries += st.entries;
                total.pages += st.pages;
                total.tables_freed += st.tables_freed;
                total.pmd_splits += st.pmd_splits;
            }
            let _pt = self.mm.pt_lock.lock();
            // Tables left by a failed fork are empty; free them, then the PGD.
            let (lo, hi) = self.mm.range();
            self.mem.zap(cpu, &self.mm, self.mm.pgd, 4, lo, hi, false, &mut total);
            self.mem.free_table(cpu, &self.mm, self.mm.pgd);
            total.tables_freed += 1;
        }
        self.mem.slabs.obj_free(cpu, self.mm);
        total
    }
}
