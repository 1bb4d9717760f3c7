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
use crate::page_alloc::AllocError;
use crate::pagecache::AddressSpace;
use crate::platform::Platform;
use crate::slab::{CacheArgs, SlabCache, SlabError};
use crate::sync::{AtomicU64, AtomicUsize, Ordering, SpinLock};

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
/// Lives in kmalloc memory; immutable but for its list links.
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
    pub(super) next: AtomicUsize,
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
            next: AtomicUsize::new(0),
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
            next: AtomicUsize::new(0),
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

pub(super) fn vma_at<'a>(addr: usize) -> &'a Vma {
    // SAFETY: list links only ever hold addresses of live VMAs (unlinked before freed).
    unsafe { &*(addr as *const Vma) }
}

/// An address space: a PGD, the VMAs, and two locks. Lives in kmalloc memory; reached
/// through an [`MmRef`]. The rmap walk hands `&Mm` to its callback.
pub struct Mm {
    pub(super) lock: SpinLock<()>,
    pub(super) pt_lock: SpinLock<()>,
    pub(super) kind: MmKind,
    pub(super) pgd: Pfn,
    pub(super) vmas: AtomicUsize,
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
    pub(super) fn find_vma(&self, va: u64) -> Option<&Vma> {
        let mut cur = self.vmas.load(Ordering::Relaxed);
        while cur != 0 {
            let v = vma_at(cur);
            if va < v.start {
                return None;
            }
            if va < v.end {
                return Some(v);
            }
            cur = v.next.load(Ordering::Relaxed);
        }
        None
    }
    pub(super) fn for_each_vma(&self, mut f: impl FnMut(&Vma)) {
        let mut cur = self.vmas.load(Ordering::Relaxed);
        while cur != 0 {
            let v = vma_at(cur);
            cur = v.next.load(Ordering::Relaxed);
            f(v);
        }
    }
}

/// A handle to one address space: VMAs, mapping, unmapping, PMD split, fork, teardown.
///
/// Not `Clone`: [`MmRef::destroy`] consumes it; dropping it without destroying leaks the
/// address space (and the references its entries hold).
pub struct MmRef<'m, P: Platform> {
    pub(super) mem: Mms<'m, P>,
    pub(super) caches: &'m MmCaches<'m, P>,
    pub(super) mm: &'m Mm,
}

/// The slab caches of address spaces, VMAs and anon_vmas; creates [`MmRef`]s.
pub struct MmCaches<'m, P: Platform> {
    pub(super) mem: Mms<'m, P>,
    pub(super) mm: &'m SlabCache,
    pub(super) vma: &'m SlabCache,
    pub(super) anon_vma: &'m SlabCache,
}

impl<'m, P: Platform> MmCaches<'m, P> {
    /// Creates an empty address space with its PGD.
    pub fn mm_create<'c>(&'c self, cpu: &Cpu<'_>, kind: MmKind) -> Result<MmRef<'c, P>, AllocError> {
        let mem = self.mem;
        let p = mem.slabs.cache_alloc(cpu, self.mm)?.cast::<Mm>();
        let pgd = match mem.alloc_table_for(cpu, p.as_ptr() as usize, 4) {
            Ok(pgd) => pgd,
            Err(e) => {
                let r = mem.slabs.cache_free(cpu, self.mm, p.cast());
                debug_assert!(r.is_ok());
                return Err(e);
            }
        };
        let mm = Mm {
            lock: SpinLock::new(()),
            pt_lock: SpinLock::new(()),
            kind,
            pgd,
            vmas: AtomicUsize::new(0),
            pt_pages: AtomicU64::new(1),
        };
        // SAFETY: a fresh object of the mm cache (sized and aligned for an Mm), owned by us.
        unsafe { p.as_ptr().write(mm) };
        // SAFETY: just initialised; lives until destroy frees it.
        Ok(MmRef { mem, caches: self, mm: unsafe { p.as_ref() } })
    }

    pub(super) fn alloc_anon_vma(&self, cpu: &Cpu<'_>) -> Result<&'m RmapList, AllocError> {
        let p = self.mem.slabs.cache_alloc(cpu, self.anon_vma)?.cast::<RmapList>();
        // SAFETY: an object of the TYPESAFE_BY_RCU anon_vma cache: zeroed (a valid, unlocked,
        // empty RmapList) or a former anon_vma. Its lock is never reinitialised, because a
        // walker that raced with its free may still hold it.
        let r = unsafe { p.as_ref() };
        let g = r.lock();
        // Freed with its last VMA: the list is empty; `nr` held the free pointer.
        debug_assert!(g.is_empty());
        g.count();
        drop(g);
        Ok(r)
    }

    /// Destroys the caches; refused while any address space, VMA or anon_vma is live.
    pub fn destroy(self, cpu: &Cpu<'_>) -> Result<(), SlabError> {
        for c in [self.mm, self.vma, self.anon_vma] {
            if c.live_objects() != 0 {
                return Err(SlabError::Busy(c.live_objects()));
            }
        }
        for c in [self.mm, self.vma, self.anon_vma] {
            self.mem.slabs.destroy_cache(cpu, self.mem.slabs.cache_ref_internal(c))?;
        }
        Ok(())
    }
}

impl<'a, P: Platform> Mms<'a, P> {
    // ---- kernel objects -------------------------------------------------------------------

    pub(super) fn kobj_alloc<T>(&self, cpu: &Cpu<'_>, cache: &SlabCache, value: T) -> Result<&'a T, AllocError> {
        debug_assert!(cache.object_size() >= core::mem::size_of::<T>());
        let p = self.slabs.cache_alloc(cpu, cache)?.cast::<T>();
        // SAFETY: a fresh object of a cache made for T (size and alignment), owned by us.
        unsafe { p.as_ptr().write(value) };
        // SAFETY: just initialised; lives until kobj_free.
        Ok(unsafe { p.as_ref() })
    }

    pub(super) fn kobj_free<T>(&self, cpu: &Cpu<'_>, cache: &SlabCache, r: &T) {
        let res = self.slabs.cache_free(cpu, cache, NonNull::from(r).cast());
        debug_assert!(res.is_ok(), "kernel object free: {res:?}");
    }

    /// Creates the slab caches address spaces live in (`mm_struct`, `vm_area`, and the
    /// TYPESAFE_BY_RCU `anon_vma`); every [`MmRef`] is created through them.
    pub(crate) fn mm_caches(&self, cpu: &Cpu<'_>) -> Result<MmCaches<'a, P>, AllocError> {
        let mm = self
            .slabs
            .new_cache(cpu, &CacheArgs { align: 16, ..CacheArgs::new("mm_struct", core::mem::size_of::<Mm>()) })?;
        let vma = match self
            .slabs
            .new_cache(cpu, &CacheArgs { align: 16, ..CacheArgs::new("vm_area", core::mem::size_of::<Vma>()) })
        {
            Ok(c) => c,
            Err(e) => {
                let _ = self.slabs.destroy_cache(cpu, self.slabs.cache_ref_internal(mm));
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
                let _ = self.slabs.destroy_cache(cpu, self.slabs.cache_ref_internal(mm));
                let _ = self.slabs.destroy_cache(cpu, self.slabs.cache_ref_internal(vma));
                return Err(e);
            }
        };
        Ok(MmCaches { mem: *self, mm, vma, anon_vma })
    }
}

impl<'m, P: Platform> MmRef<'m, P> {
    /// The address space.
    pub fn mm(&self) -> &'m Mm {
        self.mm
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
        let _g = self.mm.lock.lock();
        self.insert_vma_locked(cpu, v).map(|_| ())
    }

    pub(super) fn insert_vma_locked(&self, cpu: &Cpu<'_>, v: Vma) -> Result<&'m Vma, MapError> {
        // Sorted list: find the predecessor, refuse overlaps.
        let mut prev = 0usize;
        let mut cur = self.mm.vmas.load(Ordering::Relaxed);
        while cur != 0 {
            let c = vma_at(cur);
            if c.start < v.end && v.start < c.end {
                return Err(MapError::Overlap(v.start.max(c.start)));
            }
            if c.start >= v.end {
                break;
            }
            prev = cur;
            cur = c.next.load(Ordering::Relaxed);
        }
        let new = self.mem.kobj_alloc(cpu, self.caches.vma, v)?;
        new.next.store(cur, Ordering::Relaxed);
        if let Some(r) = new.rmap() {
            let linked = r.lock().link(new);
            debug_assert!(linked, "a fresh VMA joins its own rmap list");
        }
        if prev == 0 {
            self.mm.vmas.store(new as *const Vma as usize, Ordering::Relaxed);
        } else {
            vma_at(prev).next.store(new as *const Vma as usize, Ordering::Relaxed);
        }
        Ok(new)
    }

    /// Creates an anonymous VMA over `[start, start + len)` with a fresh anon_vma.
    pub fn mmap_anon(&self, cpu: &Cpu<'_>, start: u64, len: u64) -> Result<(), MapError> {
        let end = self.check_range(start, len)?;
        let av = self.caches.alloc_anon_vma(cpu)?;
        let v = Vma::new(self.mm, start, end, start >> PAGE_SHIFT, VmaOwner::Anon(av));
        self.add_vma(cpu, v).inspect_err(|_| self.mem.kobj_free(cpu, self.caches.anon_vma, av))
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
        self.add_vma(cpu, Vma::new(self.mm, start, end, pgoff, VmaOwner::File(file)))
    }

    /// Creates a VMA for pages mapped by pfn (driver memory, mappable vmalloc, netmem).
    pub fn mmap_pfn(&self, cpu: &Cpu<'_>, start: u64, len: u64) -> Result<(), MapError> {
        let end = self.check_range(start, len)?;
        self.add_vma(cpu, Vma::new(self.mm, start, end, start >> PAGE_SHIFT, VmaOwner::Pfn))
    }

    /// Removes the VMA that starts at `start`, unmapping everything in it.
    pub fn munmap(&self, cpu: &Cpu<'_>, start: u64) -> Result<ZapStats, MapError> {
        let _g = self.mm.lock.lock();
        let mut prev = 0usize;
        let mut cur = self.mm.vmas.load(Ordering::Relaxed);
        while cur != 0 && vma_at(cur).start != start {
            prev = cur;
            cur = vma_at(cur).next.load(Ordering::Relaxed);
        }
        if cur == 0 {
            return Err(MapError::NoVma(start));
        }
        let v = vma_at(cur);
        let next = v.next.load(Ordering::Relaxed);
        if prev == 0 {
            self.mm.vmas.store(next, Ordering::Relaxed);
        } else {
            vma_at(prev).next.store(next, Ordering::Relaxed);
        }
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
            self.mem.zap(cpu, self.mm, self.mm.pgd, 4, v.start, v.end, true, &mut st);
        }
        let left = lg.as_mut().and_then(|g| v.rmap_unlink(g));
        drop(lg);
        debug_assert!(!v.rmap.0.is_linked(), "a VMA is freed off its rmap list");
        if v.kind == VmaKind::Anon && left == Some(0) {
            if let Some(r) = r {
                self.mem.kobj_free(cpu, self.caches.anon_vma, r);
            }
        }
        self.mem.kobj_free(cpu, self.caches.vma, v);
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
        let _g = self.mm.lock.lock();
        let mut res = Ok(());
        let mut cur = self.mm.vmas.load(Ordering::Relaxed);
        while cur != 0 && res.is_ok() {
            let v = vma_at(cur);
            cur = v.next.load(Ordering::Relaxed);
            res = self.fork_vma(cpu, &child, v);
        }
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
            let Some((level, table, idx)) = self.mem.lookup(self.mm, va) else {
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
            let _cg = child.mm.lock.lock();
            child.insert_vma_locked(cpu, v.copy_for(child.mm))?;
        }
        let _rl = v.rmap().map(|r| r.lock());
        let _pt = self.mm.pt_lock.lock();
        let _cpt = child.mm.pt_lock.lock();
        let limit = self.mem.pages.config().mapcount_limit;
        let mut va = v.start;
        while va < v.end {
            let Some((level, table, idx)) = self.mem.lookup(self.mm, va) else {
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
                let dep = self.mem.alloc_table(cpu, child.mm, 1)?;
                let (ct, ci) = match self.mem.walk_alloc(cpu, child.mm, va, 2) {
                    Ok(x) => x,
                    Err(err) => {
                        self.mem.free_table(cpu, child.mm, dep);
                        return Err(err);
                    }
                };
                self.mem.deposit(ct, dep);
                self.mem.store_entry(ct, ci, e);
                self.mem.ptdesc(ct).entries.fetch_add(1, Ordering::Relaxed);
                va += PMD_SIZE;
            } else {
                let (ct, ci) = self.mem.walk_alloc(cpu, child.mm, va, 1)?;
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
            let _g = self.mm.lock.lock();
            loop {
                let cur = self.mm.vmas.load(Ordering::Relaxed);
                if cur == 0 {
                    break;
                }
                let v = vma_at(cur);
                self.mm.vmas.store(v.next.load(Ordering::Relaxed), Ordering::Relaxed);
                let st = self.remove_vma(cpu, v);
                total.entries += st.entries;
                total.pages += st.pages;
                total.tables_freed += st.tables_freed;
                total.pmd_splits += st.pmd_splits;
            }
            let _pt = self.mm.pt_lock.lock();
            // Tables left by a failed fork are empty; free them, then the PGD.
            let (lo, hi) = self.mm.range();
            self.mem.zap(cpu, self.mm, self.mm.pgd, 4, lo, hi, false, &mut total);
            self.mem.free_table(cpu, self.mm, self.mm.pgd);
            total.tables_freed += 1;
        }
        self.mem.kobj_free(cpu, self.caches.mm, self.mm);
        total
    }
}
