//! x86-64 4-level page tables, address spaces ([`Mm`]), VMAs and the reverse map.
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
//! [`MmRef::split_pmd`] turns it into 512 PTEs and adds 511. **Every entry also holds one
//! reference**, so `refcount >= mapcount` always and unmapping drops exactly what mapping took;
//! the last unmap of a folio nobody else holds frees it. A PMD mapping deposits a preallocated
//! PTE table in the PMD table's ptdesc, so splitting it needs no allocation. A mapping that
//! would push a mapcount past [`crate::Config::mapcount_limit`] splits a large folio to order
//! 0 and maps the pieces (each with its own, smaller count); an order-0 folio at the limit is
//! refused with [`MapError::MapcountLimit`].
//!
//! **What can be mapped.** The typed API maps `&Folio` (anon or file) and `&MappableDesc`; the
//! generic [`MmRef::map_pfn`] maps a pfn whose word is one of the mappable tags (anon/file
//! folio, `Mappable`, `VmallocMappable`, `NetPool`; a kernel `Mm` also takes
//! `VmallocUnmappable`), all of which keep refcount and mapcount at offsets 8 and 12
//! (asserted in `desc.rs`), so one generic path counts them. Anything else — slab, page-table,
//! zsmalloc, z3fold, unmappable vmalloc, raw, reserved or free memory — is refused with
//! [`MapError::Unmappable`] naming the kind. That decision is made in one place,
//! [`mappability`], from the page's word; [`PhysMem::user_page_of`] and
//! [`MmRef::map_user_page`] (the [`UserPage`] token, which mappable vmalloc handles also
//! make), vmalloc's kernel and user mappings and page_pool pages all go through it.
//!
//! **VMAs and rmap** (Linux's model, no per-folio lists). Anon VMAs point to an anon_vma
//! ([`RmapList`]) that [`MmRef::fork`] shares with the child's copy; file VMAs are linked on
//! their [`AddressSpace`]'s `i_mmap` list. An anon folio's `mapping` is its anon_vma (set when
//! first mapped, cleared when its mapcount returns to 0) and its `index` the page offset
//! (`va >> 12` of its first page, which stays valid in a fork child); a file folio's are its
//! address space and file index. [`PhysMem::rmap_walk`] goes from the folio to that list, and
//! for every VMA computes the address each page would have and checks that mm's entry there.
//! Pages mapped through [`VmaKind::Pfn`] VMAs (driver memory, vmalloc, netmem) have no rmap,
//! as in Linux. Not modelled: VMA split/merge, copy-on-write faults, and unmapping a file
//! folio when truncation takes it out of the page cache (its entries stay, holding their
//! references, until unmapped; the rmap no longer finds them).
//!
//! **Kernel objects** ([`Mm`], VMAs, anon_vmas) live in the machine's own memory, in slab
//! caches that [`PhysMem::mm_caches`] creates (`mm_struct`, `vm_area`, and `anon_vma`, which
//! is TYPESAFE_BY_RCU); [`MmCaches::mm_create`] makes address spaces.
//!
//! **Locking**, outermost first: the mm's lock (its VMA list; one operation per mm at a
//! time) → the VMA's rmap lock (anon_vma or `i_mmap`; every entry mapping a folio changes
//! under it, so a walk that holds it sees a folio's mappings stable) → the mm's page-table
//! lock (table allocation, freeing and walking) → a table's ptdesc lock (around each entry
//! write). The rmap walk takes the rmap lock, then one mm's page-table lock at a time.
//! Migration (`migrate.rs`) holds a folio's rmap lock (`rmap_lock`) across its
//! freeze, copy and entry rewrite (`rmap_move_locked`), with a cached file folio's address
//! space lock nested between the rmap and page-table locks (this module never takes a page
//! cache lock); hwpoison unmaps through `rmap_unmap`. The mapping path takes a temporary
//! reference with `try_get` (waiting while a migration has the folio frozen) before it reads
//! the folio's pfn, so it never writes an entry to pages a migration is leaving.
//! An anon_vma is freed with its last VMA while unmapped folios may still name it, so the walk
//! reads a folio's `mapping` under RCU, locks the anon_vma it names (TYPESAFE_BY_RCU: still an
//! anon_vma, with a lock that is never reinitialised) and re-reads `mapping` under the lock;
//! `mapping` changes only under that lock (set by the first mapping, cleared by the last
//! unmap), so an equal value proves the anon_vma is the folio's and alive. A file's
//! `i_mmap` lives in its address space, which must outlive its VMAs.
//!
//! This module touches page-table pages, its own kernel objects, the counts, `mapping` and
//! `index` of the folios it maps, and the words of the tables it allocates.

use core::ptr::NonNull;

use crate::addr::{Pfn, AREA_ORDER, PAGE_SHIFT, PAGE_SIZE};
use crate::cpu::Cpu;
use crate::desc::{DescPtr, Folio, MapCounts, MappableDesc, PtDesc};
use crate::folio::{FolioError, FolioRef};
use crate::gfp::Gfp;
use crate::page_alloc::AllocError;
use crate::pagecache::AddressSpace;
use crate::platform::{PageMap, Platform};
use crate::slab::{CacheArgs, SlabCache, SlabError};
use crate::sync::{AtomicU32, AtomicU64, AtomicUsize, Ordering, SpinGuard, SpinLock};
use crate::word::{PageKind, Subtype, Tag, Word};
use crate::PhysMem;

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
    fn new(pfn: Pfn, flags: u64) -> PtEntry {
        PtEntry((pfn.0 << PAGE_SHIFT) & PTE_PFN_MASK | flags)
    }
}

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

/// The kind of memory a refused mapping named.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnmappableKind {
    /// No word: outside every memmap region.
    NoPage,
    /// A page of slab memory.
    Slab,
    /// A page-table page.
    PageTable,
    /// Unmappable vmalloc memory.
    VmallocUnmappable,
    /// A zsmalloc page.
    Zsmalloc,
    /// A z3fold page.
    Z3fold,
    /// Free memory.
    Free,
    /// Undescribed memory of this subtype (raw, reserved, tail of a raw block, …).
    Undescribed(Subtype),
    /// A split two-level area word or corrupt bits.
    Invalid,
    /// A mappable kind that this VMA does not take (e.g. a folio in a pfn VMA).
    WrongVma(Tag),
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

/// A list of VMAs under a lock: an anon_vma, or a file's `i_mmap`.
///
/// Anon_vmas come from a TYPESAFE_BY_RCU cache and their lock is never reinitialised, so an
/// rmap walker that read a folio's `mapping` under RCU may lock an anon_vma that was freed (or
/// reused) meanwhile, and then finds out by re-reading the folio's `mapping` under the lock.
#[repr(C)]
pub struct RmapList {
    lock: SpinLock<()>,
    head: AtomicUsize,
    nr: AtomicU32,
}

impl RmapList {
    /// An empty list.
    pub(crate) fn new() -> Self {
        RmapList { lock: SpinLock::new(()), head: AtomicUsize::new(0), nr: AtomicU32::new(0) }
    }

    /// VMAs on the list.
    pub fn nr_vmas(&self) -> u32 {
        self.nr.load(Ordering::Relaxed)
    }

    /// Links `v` (under the list lock).
    fn link(&self, v: &Vma) {
        let me = v as *const Vma as usize;
        let head = self.head.load(Ordering::Relaxed);
        v.rmap_prev.store(0, Ordering::Relaxed);
        v.rmap_next.store(head, Ordering::Relaxed);
        if head != 0 {
            vma_at(head).rmap_prev.store(me, Ordering::Relaxed);
        }
        self.head.store(me, Ordering::Relaxed);
        self.nr.fetch_add(1, Ordering::Relaxed);
    }

    /// Unlinks `v` (under the list lock); returns the VMAs left.
    fn unlink(&self, v: &Vma) -> u32 {
        let (prev, next) = (v.rmap_prev.load(Ordering::Relaxed), v.rmap_next.load(Ordering::Relaxed));
        if prev == 0 {
            self.head.store(next, Ordering::Relaxed);
        } else {
            vma_at(prev).rmap_next.store(next, Ordering::Relaxed);
        }
        if next != 0 {
            vma_at(next).rmap_prev.store(prev, Ordering::Relaxed);
        }
        self.nr.fetch_sub(1, Ordering::Relaxed) - 1
    }
}

/// A virtual memory area of an [`Mm`]: a page-aligned range mapping one kind of memory.
/// Lives in kmalloc memory; immutable but for its list links.
pub struct Vma {
    mm: usize,
    start: u64,
    end: u64,
    pgoff: u64,
    kind: VmaKind,
    /// The anon_vma (`Anon`) or the address space (`File`); 0 for `Pfn`.
    owner: usize,
    next: AtomicUsize,
    rmap_prev: AtomicUsize,
    rmap_next: AtomicUsize,
}

impl Vma {
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
    fn rmap(&self) -> Option<&RmapList> {
        match self.kind {
            // SAFETY: an anon VMA's owner is a live anon_vma (freed after its last VMA).
            VmaKind::Anon => Some(unsafe { &*(self.owner as *const RmapList) }),
            // SAFETY: a file VMA's owner is a live address space (file VMAs are unmapped
            // before their file is destroyed).
            VmaKind::File => Some(&unsafe { &*(self.owner as *const AddressSpace) }.i_mmap),
            VmaKind::Pfn => None,
        }
    }
    fn mm(&self) -> &Mm {
        // SAFETY: a VMA is freed before its mm.
        unsafe { &*(self.mm as *const Mm) }
    }
    /// The address page `index` of the mapped object has in this VMA, if it falls inside.
    fn va_of(&self, index: u64) -> Option<u64> {
        let off = index.checked_sub(self.pgoff)?;
        let va = self.start.checked_add(off.checked_mul(PAGE_SIZE as u64)?)?;
        (va < self.end).then_some(va)
    }
}

fn vma_at<'a>(addr: usize) -> &'a Vma {
    // SAFETY: list links only ever hold addresses of live VMAs (unlinked before freed).
    unsafe { &*(addr as *const Vma) }
}

/// An address space: a PGD, the VMAs, and two locks. Lives in kmalloc memory; reached
/// through an [`MmRef`]. The rmap walk hands `&Mm` to its callback.
pub struct Mm {
    lock: SpinLock<()>,
    pt_lock: SpinLock<()>,
    kind: MmKind,
    pgd: Pfn,
    vmas: AtomicUsize,
    pt_pages: AtomicU64,
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
    fn range(&self) -> (u64, u64) {
        match self.kind {
            MmKind::User => (0, USER_END),
            MmKind::Kernel => (KERNEL_START, KERNEL_END),
        }
    }
    fn leaf_flags(&self) -> u64 {
        match self.kind {
            MmKind::User => PTE_PRESENT | PTE_RW | PTE_USER,
            MmKind::Kernel => PTE_PRESENT | PTE_RW,
        }
    }
    fn find_vma(&self, va: u64) -> Option<&Vma> {
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
    fn for_each_vma(&self, mut f: impl FnMut(&Vma)) {
        let mut cur = self.vmas.load(Ordering::Relaxed);
        while cur != 0 {
            let v = vma_at(cur);
            cur = v.next.load(Ordering::Relaxed);
            f(v);
        }
    }
}

/// A folio's rmap list, locked ([`PhysMem::rmap_lock`]): while it is held no entry mapping
/// the folio appears, goes or changes except through the holder.
#[cfg(feature = "health")]
pub(crate) struct RmapLocked<'a> {
    list: &'a RmapList,
    _g: SpinGuard<'a, ()>,
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
enum Target<'a> {
    Folio(&'a Folio, Tag),
    Mappable(&'a MappableDesc),
    Other(&'a MapCounts, Pfn),
}

impl Target<'_> {
    fn counts(&self) -> &MapCounts {
        match self {
            Target::Folio(f, _) => &f.counts,
            Target::Mappable(d) => &d.counts,
            Target::Other(c, _) => c,
        }
    }
}

/// A handle to one address space: VMAs, mapping, unmapping, PMD split, fork, teardown.
///
/// Not `Clone`: [`MmRef::destroy`] consumes it; dropping it without destroying leaks the
/// address space (and the references its entries hold).
pub struct MmRef<'m, P: Platform> {
    mem: &'m PhysMem<P>,
    caches: &'m MmCaches<'m, P>,
    mm: &'m Mm,
}

/// The slab caches of address spaces, VMAs and anon_vmas; creates [`MmRef`]s.
pub struct MmCaches<'m, P: Platform> {
    mem: &'m PhysMem<P>,
    mm: &'m SlabCache,
    vma: &'m SlabCache,
    anon_vma: &'m SlabCache,
}

impl<'m, P: Platform> MmCaches<'m, P> {
    /// Creates an empty address space with its PGD.
    pub fn mm_create<'c>(&'c self, cpu: &Cpu<'_>, kind: MmKind) -> Result<MmRef<'c, P>, AllocError> {
        let mem = self.mem;
        let p = mem.slabs().cache_alloc(cpu, self.mm)?.cast::<Mm>();
        let pgd = match mem.alloc_table_for(cpu, p.as_ptr() as usize, 4) {
            Ok(pgd) => pgd,
            Err(e) => {
                let r = mem.slabs().cache_free(cpu, self.mm, p.cast());
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

    fn alloc_anon_vma(&self, cpu: &Cpu<'_>) -> Result<&'m RmapList, AllocError> {
        let p = self.mem.slabs().cache_alloc(cpu, self.anon_vma)?.cast::<RmapList>();
        // SAFETY: an object of the TYPESAFE_BY_RCU anon_vma cache: zeroed (a valid, unlocked,
        // empty RmapList) or a former anon_vma. Its lock is never reinitialised, because a
        // walker that raced with its free may still hold it.
        let r = unsafe { p.as_ref() };
        let _l = r.lock.lock();
        r.head.store(0, Ordering::Relaxed);
        r.nr.store(0, Ordering::Relaxed);
        drop(_l);
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
            self.mem.destroy_cache(cpu, self.mem.slabs().cache_ref_internal(c))?;
        }
        Ok(())
    }
}

/// A per-table lock guard (the ptdesc's spin lock).
struct TableLock<'a>(&'a PtDesc);

impl<'a> TableLock<'a> {
    fn new(d: &'a PtDesc) -> Self {
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

fn shift_of(level: u32) -> u32 {
    PAGE_SHIFT + 9 * (level - 1)
}

fn index_of(va: u64, level: u32) -> usize {
    ((va >> shift_of(level)) & (PTRS_PER_TABLE as u64 - 1)) as usize
}

/// **The one mappability rule**: may a page whose word is `word` be mapped into an address
/// space of kind `space`? Every path that installs an entry for a page by pfn
/// ([`MmRef::map_pfn`], [`MmRef::map_user_page`], [`PhysMem::user_page_of`], vmalloc's kernel
/// and user mappings) decides through this function, and nothing else does.
///
/// Accepted (the returned tag): anon and file folios, mappable driver memory, mappable vmalloc
/// pages and page-pool (netmem) pages — every kind with refcount and mapcount at the shared
/// offsets — and, in a kernel space only, unmappable vmalloc pages. Refused, with the kind:
/// slab, page-table, unmappable vmalloc (user space), zsmalloc and z3fold pages, free blocks,
/// every undescribed subtype, split area words and corrupt words.
///
/// ```
/// use memdesc::pgtable::{mappability, MmKind, UnmappableKind};
/// use memdesc::word::Word;
/// // A tail word (a page inside a raw block) is never mappable.
/// assert!(matches!(mappability(Word::TAIL, MmKind::User), Err(UnmappableKind::Undescribed(_))));
/// ```
pub fn mappability(word: Word, space: MmKind) -> Result<Tag, UnmappableKind> {
    match word.kind() {
        PageKind::AnonFolio(_) => Ok(Tag::AnonFolio),
        PageKind::FileFolio(_) => Ok(Tag::FileFolio),
        PageKind::Mappable(_) => Ok(Tag::Mappable),
        PageKind::NetPool(_) => Ok(Tag::NetPool),
        PageKind::Vmalloc { mappable: true, .. } => Ok(Tag::VmallocMappable),
        PageKind::Vmalloc { mappable: false, .. } if space == MmKind::Kernel => Ok(Tag::VmallocUnmappable),
        PageKind::Vmalloc { mappable: false, .. } => Err(UnmappableKind::VmallocUnmappable),
        PageKind::Slab(_) => Err(UnmappableKind::Slab),
        PageKind::PageTable(_) => Err(UnmappableKind::PageTable),
        PageKind::Zsmalloc(_) => Err(UnmappableKind::Zsmalloc),
        PageKind::Z3fold(_) => Err(UnmappableKind::Z3fold),
        PageKind::Buddy(_) => Err(UnmappableKind::Free),
        PageKind::Undescribed(u) => Err(UnmappableKind::Undescribed(u.subtype)),
        PageKind::Split(_) | PageKind::Invalid(_) => Err(UnmappableKind::Invalid),
    }
}

/// Proof that a page passed [`mappability`] for user space when it was made: the token
/// [`MmRef::map_user_page`] takes. Made only by [`PhysMem::user_page_of`] (from the word) and
/// by `VmArea<Mappable>::user_page` (from the handle's type; an unmappable area has no such
/// method). The mapping re-checks the word, so a token kept past its page's free is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserPage {
    pfn: Pfn,
    tag: Tag,
}

impl UserPage {
    /// A token for a page whose kind is known from a typed handle (crate-internal).
    #[cfg(feature = "vmalloc")]
    pub(crate) fn new(pfn: Pfn, tag: Tag) -> Self {
        UserPage { pfn, tag }
    }
    /// The page.
    pub fn pfn(&self) -> Pfn {
        self.pfn
    }
    /// The kind of memory it is.
    pub fn tag(&self) -> Tag {
        self.tag
    }
}

impl<P: Platform> PhysMem<P> {
    /// Decides by [`mappability`] whether the page at `pfn` may be mapped into user space, and
    /// returns the token for [`MmRef::map_user_page`]; refused with
    /// [`MapError::Unmappable`] naming the kind (a free tail is reported as `Free`).
    pub fn user_page_of(&self, pfn: Pfn) -> Result<UserPage, MapError> {
        let (_, tag) = self.classify_page(MmKind::User, pfn)?;
        Ok(UserPage { pfn, tag })
    }
}

impl<P: Platform> PhysMem<P> {
    // ---- kernel objects -------------------------------------------------------------------

    fn kobj_alloc<T>(&self, cpu: &Cpu<'_>, cache: &SlabCache, value: T) -> Result<&T, AllocError> {
        debug_assert!(cache.object_size() >= core::mem::size_of::<T>());
        let p = self.slabs().cache_alloc(cpu, cache)?.cast::<T>();
        // SAFETY: a fresh object of a cache made for T (size and alignment), owned by us.
        unsafe { p.as_ptr().write(value) };
        // SAFETY: just initialised; lives until kobj_free.
        Ok(unsafe { p.as_ref() })
    }

    fn kobj_free<T>(&self, cpu: &Cpu<'_>, cache: &SlabCache, r: &T) {
        let res = self.slabs().cache_free(cpu, cache, NonNull::from(r).cast());
        debug_assert!(res.is_ok(), "kernel object free: {res:?}");
    }

    // ---- tables ---------------------------------------------------------------------------

    fn table_map(&self, table: Pfn) -> PageMap<'_, P> {
        PageMap::new(self.platform(), table).expect("page-table pages are mappable memory")
    }

    fn ptdesc(&self, table: Pfn) -> &PtDesc {
        match self.memmap().load(self.platform(), table).map(|v| v.word.kind()) {
            // SAFETY: the word of a live table (we hold its mm's page-table lock) names its
            // live ptdesc.
            Some(PageKind::PageTable(d)) => unsafe { &*(d.addr() as *const PtDesc) },
            other => panic!("pfn {:#x} is not a page table: {other:?}", table.0),
        }
    }

    fn alloc_table(&self, cpu: &Cpu<'_>, mm: &Mm, level: u32) -> Result<Pfn, AllocError> {
        let pfn = self.alloc_table_for(cpu, mm.addr(), level)?;
        mm.pt_pages.fetch_add(1, Ordering::Relaxed);
        Ok(pfn)
    }

    fn alloc_table_for(&self, cpu: &Cpu<'_>, mm: usize, level: u32) -> Result<Pfn, AllocError> {
        let d = self.slabs().alloc_desc::<PtDesc>(cpu)?;
        let pfn = match self.pages().alloc_internal(cpu, 0, Gfp::KERNEL | Gfp::ZERO) {
            Ok(p) => p,
            Err(e) => {
                self.slabs().free_desc(cpu, d);
                return Err(e);
            }
        };
        d.flags.init(0, 0, pfn);
        d.lock.store(level << 8, Ordering::Relaxed);
        d.mm.store(mm, Ordering::Relaxed);
        d.pmd_huge_pte.store(0, Ordering::Relaxed);
        d.entries.store(0, Ordering::Relaxed);
        self.pages().stamp_block(pfn, 0, Word::desc(DescPtr::from_ref(d)));
        Ok(pfn)
    }

    fn free_table(&self, cpu: &Cpu<'_>, mm: &Mm, table: Pfn) {
        let d = self.ptdesc(table);
        debug_assert_eq!(d.entries(), 0);
        debug_assert_eq!(d.pmd_huge_pte.load(Ordering::Relaxed), 0);
        self.pages().stamp_block(table, 0, Word::TAIL);
        self.slabs().free_desc(cpu, d);
        let rm = self.memmap().region_map(self.memmap().region_index(table).expect("table pfn"));
        self.pages().free_claimed(cpu, rm, table, 0);
        mm.pt_pages.fetch_sub(1, Ordering::Relaxed);
    }

    fn load_entry(&self, table: Pfn, idx: usize) -> PtEntry {
        PtEntry(self.table_map(table).word(idx).load(Ordering::Acquire))
    }

    fn store_entry(&self, table: Pfn, idx: usize, e: PtEntry) {
        let _l = TableLock::new(self.ptdesc(table));
        self.table_map(table).word(idx).store(e.0, Ordering::Release);
    }

    fn deposit(&self, pmd_table: Pfn, pte_table: Pfn) {
        let pd = self.ptdesc(pmd_table);
        let _l = TableLock::new(pd);
        let head = pd.pmd_huge_pte.load(Ordering::Relaxed);
        self.ptdesc(pte_table).pmd_huge_pte.store(head, Ordering::Relaxed);
        pd.pmd_huge_pte.store(pte_table.0 + 1, Ordering::Relaxed);
    }

    fn withdraw(&self, pmd_table: Pfn) -> Pfn {
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

    /// Walks to the table of `level` covering `va`, allocating missing tables; refuses to go
    /// through a huge entry.
    fn walk_alloc(&self, cpu: &Cpu<'_>, mm: &Mm, va: u64, level: u32) -> Result<(Pfn, usize), MapError> {
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
    fn lookup(&self, mm: &Mm, va: u64) -> Option<(u32, Pfn, usize)> {
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
    fn classify(&self, space: MmKind, kind: VmaKind, pfn: Pfn) -> Result<Target<'_>, MapError> {
        let (t, tag) = self.classify_page(space, pfn)?;
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
    fn classify_page(&self, space: MmKind, pfn: Pfn) -> Result<(Target<'_>, Tag), MapError> {
        let bad = |kind| Err(MapError::Unmappable { pfn, kind });
        let Some(v) = self.memmap().load(self.platform(), pfn) else { return bad(UnmappableKind::NoPage) };
        let tag = match mappability(v.word, space) {
            Ok(tag) => tag,
            // A tail of a free buddy block is free memory.
            Err(UnmappableKind::Undescribed(Subtype::Tail)) if self.free_block_containing_pfn(pfn).is_some() => {
                return bad(UnmappableKind::Free)
            }
            Err(k) => return bad(k),
        };
        let addr = v.word.desc_addr().unwrap_or(0);
        let t = match tag {
            // SAFETY: the word names a live folio descriptor (TYPESAFE_BY_RCU memory that
            // stays a Folio); its refcount is checked before it is trusted.
            Tag::AnonFolio | Tag::FileFolio => Target::Folio(unsafe { &*(addr as *const Folio) }, tag),
            // SAFETY: as above, for a MappableDesc.
            Tag::Mappable => Target::Mappable(unsafe { &*(addr as *const MappableDesc) }),
            // SAFETY: every other kind `mappability` accepts (netmem, vmalloc) keeps its
            // MapCounts at offset 8 (desc.rs asserts it), and the word names a live descriptor.
            _ => Target::Other(unsafe { &*((addr + 8) as *const MapCounts) }, pfn),
        };
        Ok((t, tag))
    }

    fn target_of(&self, pfn: Pfn) -> Target<'_> {
        let v = self.memmap().load(self.platform(), pfn).expect("mapped pfn has a word");
        let addr = v.word.desc_addr().expect("mapped pages are described");
        match v.word.kind() {
            // SAFETY: a mapped page's entry holds a reference, so its descriptor is live.
            PageKind::AnonFolio(_) => Target::Folio(unsafe { &*(addr as *const Folio) }, Tag::AnonFolio),
            // SAFETY: as above.
            PageKind::FileFolio(_) => Target::Folio(unsafe { &*(addr as *const Folio) }, Tag::FileFolio),
            // SAFETY: as above.
            PageKind::Mappable(_) => Target::Mappable(unsafe { &*(addr as *const MappableDesc) }),
            // SAFETY: as above; MapCounts at offset 8 in every mappable kind.
            _ => Target::Other(unsafe { &*((addr + 8) as *const MapCounts) }, pfn),
        }
    }

    /// Drops one entry's mapcount and reference.
    fn put_entry(&self, cpu: &Cpu<'_>, pfn: Pfn) {
        match self.target_of(pfn) {
            Target::Folio(f, tag) => {
                if f.counts.mapcount.fetch_sub(1, Ordering::AcqRel) == 1 && tag == Tag::AnonFolio {
                    f.mapping.store(0, Ordering::Release);
                }
                let r = self.folio_put_raw(cpu, f);
                debug_assert!(r.is_ok(), "entry reference: {r:?}");
            }
            Target::Mappable(d) => {
                d.counts.mapcount.fetch_sub(1, Ordering::AcqRel);
                // SAFETY: the entry being removed held one reference to `d` (taken when it
                // was mapped), which is given up here.
                let r = unsafe { self.mappable_put_raw(cpu, d) };
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
    fn zap(&self, cpu: &Cpu<'_>, mm: &Mm, table: Pfn, level: u32, s: u64, e: u64, clear: bool, st: &mut ZapStats) {
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

    /// Replaces the huge entry `pmd_table[idx]` by the deposited PTE table filled with 512
    /// PTEs; the folio's mapcount and refcount grow by 511. Page-table lock held.
    fn split_pmd_locked(&self, pmd_table: Pfn, idx: usize) {
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

    // ---- address spaces -------------------------------------------------------------------

    /// Creates the slab caches address spaces live in (`mm_struct`, `vm_area`, and the
    /// TYPESAFE_BY_RCU `anon_vma`); every [`MmRef`] is created through them.
    pub fn mm_caches(&self, cpu: &Cpu<'_>) -> Result<MmCaches<'_, P>, AllocError> {
        let mm = self
            .slabs()
            .new_cache(cpu, &CacheArgs { align: 16, ..CacheArgs::new("mm_struct", core::mem::size_of::<Mm>()) })?;
        let vma = match self
            .slabs()
            .new_cache(cpu, &CacheArgs { align: 16, ..CacheArgs::new("vm_area", core::mem::size_of::<Vma>()) })
        {
            Ok(c) => c,
            Err(e) => {
                let _ = self.destroy_cache(cpu, self.slabs().cache_ref_internal(mm));
                return Err(e);
            }
        };
        let anon = CacheArgs {
            align: 16,
            typesafe_by_rcu: true,
            freeptr_offset: Some(core::mem::offset_of!(RmapList, head)),
            ..CacheArgs::new("anon_vma", core::mem::size_of::<RmapList>())
        };
        let anon_vma = match self.slabs().new_cache(cpu, &anon) {
            Ok(c) => c,
            Err(e) => {
                let _ = self.destroy_cache(cpu, self.slabs().cache_ref_internal(mm));
                let _ = self.destroy_cache(cpu, self.slabs().cache_ref_internal(vma));
                return Err(e);
            }
        };
        Ok(MmCaches { mem: self, mm, vma, anon_vma })
    }

    /// Whether the word at `f`'s pfn names `f` (a live folio, possibly frozen by a migration).
    fn word_names_folio(&self, f: &Folio) -> bool {
        loop {
            let pfn = f.flags.pfn();
            if self.memmap().load(self.platform(), pfn).and_then(|v| v.word.desc_addr())
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

    // ---- rmap -----------------------------------------------------------------------------

    /// Locks the rmap list of a folio (its anon_vma or its file's `i_mmap`), if it has one,
    /// and returns it with the guard. The `mapping` is read under RCU and re-checked under
    /// the lock: an anon_vma freed and reused meanwhile (TYPESAFE_BY_RCU) is noticed there.
    ///
    /// The caller holds a reference on `f`, so `f` stays this folio: its tag (read from its
    /// word) and its `mapping` belong to the same folio. On a descriptor that is not pinned
    /// (freed and reused between the two reads) an anon_vma could be taken for an address
    /// space or the reverse, and the "lock" spun on would be memory that is no lock at all:
    /// the torture hang in `offline_range → migrate_to → rmap_lock` before migration took its
    /// own reference first.
    fn lock_folio_rmap<'a>(&'a self, cpu: &Cpu<'_>, f: &Folio) -> Option<(&'a RmapList, SpinGuard<'a, ()>)> {
        let tag = self.memmap().load(self.platform(), f.flags.pfn())?.word.tag()?;
        let _rcu = self.rcu().read_lock(cpu);
        loop {
            let mapping = f.mapping();
            if mapping == 0 {
                return None;
            }
            let list: &'a RmapList = match tag {
                // SAFETY: an anon folio's mapping is an anon_vma from the TYPESAFE_BY_RCU
                // anon_vma cache: under RCU the memory stays an RmapList (with a valid lock)
                // even if it was freed; it is trusted only after the re-check below.
                Tag::AnonFolio => unsafe { &*(mapping as *const RmapList) },
                // SAFETY: a file folio's mapping is its address space, which outlives its
                // cached folios and its VMAs.
                Tag::FileFolio => &unsafe { &*(mapping as *const AddressSpace) }.i_mmap,
                _ => return None,
            };
            let g = list.lock.lock();
            // `mapping` only changes under this lock (first map, last unmap).
            if f.mapping() == mapping {
                return Some((list, g));
            }
        }
    }

    /// Calls `cb(mm, vma, va, level, table, idx, entry)` for every entry mapping `f`, with the
    /// rmap lock held by the caller and each mm's page-table lock held around its VMAs.
    #[allow(clippy::type_complexity)]
    fn walk_mappings_locked(
        &self,
        list: &RmapList,
        f: &Folio,
        cb: &mut dyn FnMut(&Mm, &Vma, u64, u32, Pfn, usize, PtEntry),
    ) -> u32 {
        let (index, n, pfn0) = (f.index(), 1u64 << f.flags.order(), f.flags.pfn());
        let mut found = 0;
        let mut cur = list.head.load(Ordering::Relaxed);
        while cur != 0 {
            let v = vma_at(cur);
            cur = v.rmap_next.load(Ordering::Relaxed);
            let mm = v.mm();
            let _pt = mm.pt_lock.lock();
            let mut i = 0u64;
            while i < n {
                let Some(va) = v.va_of(index + i) else {
                    i += 1;
                    continue;
                };
                match self.lookup(mm, va) {
                    Some((2, table, idx)) => {
                        let e = self.load_entry(table, idx);
                        let hva = va & !(PMD_SIZE - 1);
                        if e.pfn() == pfn0 && va == hva && i == 0 {
                            cb(mm, v, hva, 2, table, idx, e);
                            found += 1;
                        }
                        i += ((hva + PMD_SIZE - va) >> PAGE_SHIFT).max(1);
                    }
                    Some((1, table, idx)) => {
                        let e = self.load_entry(table, idx);
                        if e.pfn() == pfn0.add(i) {
                            cb(mm, v, va, 1, table, idx, e);
                            found += 1;
                        }
                        i += 1;
                    }
                    _ => i += 1,
                }
            }
        }
        found
    }

    /// Calls `f(mm, va, entry)` for every page-table entry that maps `folio`, found from the
    /// folio's `mapping` and `index` (anon_vma or file `i_mmap`) the Linux way. Returns the
    /// number of entries found, which equals the folio's mapcount when nothing races.
    ///
    /// The callback runs with the rmap lock and that mm's page-table lock held: it must not
    /// call back into the page tables.
    pub fn rmap_walk(&self, cpu: &Cpu<'_>, folio: &Folio, mut f: impl FnMut(&Mm, u64, PtEntry)) -> u32 {
        let Some((list, _l)) = self.lock_folio_rmap(cpu, folio) else { return 0 };
        self.walk_mappings_locked(list, folio, &mut |mm, _, va, _, _, _, e| f(mm, va, e))
    }

    /// Splits a mapped folio (the mapped half of [`PhysMem::folio_split`]): every PMD mapping
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
        if self.memmap().load(self.platform(), f.flags.pfn()).and_then(|v| v.word.tag()) != Some(Tag::AnonFolio) {
            return Err(FolioError::Mapped(f.counts.mapcount()));
        }
        let pieces = 1usize << (order - new_order);
        let buf = self.kmalloc(cpu, pieces * 4, Gfp::ZERO).map_err(FolioError::NoMemory)?;
        // SAFETY: a fresh zeroed kmalloc object of `pieces` u32s, ours until the kfree below.
        let counts = unsafe { core::slice::from_raw_parts_mut(buf.as_ptr().as_ptr() as *mut u32, pieces) };
        let r = {
            let Some((list, _l)) = self.lock_folio_rmap(cpu, f) else {
                let fr = self.kfree(cpu, buf);
                debug_assert!(fr.is_ok());
                return Err(FolioError::Mapped(f.counts.mapcount()));
            };
            // Split PMD mappings first (no allocation: the tables are deposited).
            self.walk_mappings_locked(list, f, &mut |_, _, _, level, table, idx, _| {
                if level == 2 {
                    self.split_pmd_locked(table, idx);
                }
            });
            let pfn0 = f.flags.pfn();
            self.walk_mappings_locked(list, f, &mut |_, _, _, _, _, _, e| {
                counts[((e.pfn().0 - pfn0.0) >> new_order) as usize] += 1;
            });
            let anon = self.memmap().load(self.platform(), pfn0).is_some_and(|v| v.word.tag() == Some(Tag::AnonFolio));
            let mut each = each;
            self.folio_split_counts(cpu, f, holders, new_order, Some(counts), |p| {
                if anon && p.counts.mapcount() == 0 {
                    p.mapping.store(0, Ordering::Release);
                }
                each(p)
            })
        };
        let fr = self.kfree(cpu, buf);
        debug_assert!(fr.is_ok());
        r
    }

    /// Locks `f`'s rmap list (anon_vma or `i_mmap`) for a caller that must keep every entry
    /// mapping `f` stable across several steps (migration); `None` if `f` has no rmap.
    #[cfg(feature = "health")]
    pub(crate) fn rmap_lock<'a>(&'a self, cpu: &Cpu<'_>, f: &Folio) -> Option<RmapLocked<'a>> {
        self.lock_folio_rmap(cpu, f).map(|(list, g)| RmapLocked { list, _g: g })
    }

    /// With `f`'s rmap lock held (`l`), points every entry mapping `f` at the same page of the
    /// block at `new` instead: the descriptor stays, so mapcount and references are
    /// unchanged. Takes each mm's page-table lock in turn. Returns the entries rewritten. For
    /// migration, between the copy and the switch of `f`'s pfn.
    #[cfg(feature = "health")]
    pub(crate) fn rmap_move_locked(&self, l: &RmapLocked<'_>, f: &Folio, new: Pfn) -> u32 {
        let old = f.flags.pfn();
        self.walk_mappings_locked(l.list, f, &mut |_, _, _, _, table, idx, e| {
            let flags = e.0 & !PTE_PFN_MASK;
            self.store_entry(table, idx, PtEntry::new(new.add(e.pfn().0 - old.0), flags));
        })
    }

    /// Unmaps every entry mapping `f` (Linux's `try_to_unmap`), found through the rmap; each
    /// entry's mapcount and reference are dropped and emptied tables freed, as
    /// [`MmRef::unmap`] does. `each(mm, va)` is told every address unmapped (with the rmap
    /// and page-table locks held: it must not call back into the page tables). The caller
    /// holds a reference on `f`. Returns the entries cleared.
    #[cfg(feature = "health")]
    pub(crate) fn rmap_unmap(&self, cpu: &Cpu<'_>, f: &Folio, each: &mut dyn FnMut(&Mm, u64)) -> u32 {
        let Some((list, _l)) = self.lock_folio_rmap(cpu, f) else { return 0 };
        self.walk_mappings_locked(list, f, &mut |mm, _, va, level, _, _, _| {
            let len = if level == 2 { PMD_SIZE } else { PAGE_SIZE as u64 };
            let mut st = ZapStats::default();
            self.zap(cpu, mm, mm.pgd, 4, va, va + len, true, &mut st);
            each(mm, va);
        })
    }

    /// Replaces every mapping of folio `old` by the same page of `new` (same order, not
    /// mapped, held by the caller): each entry's pfn changes, and the entries' mapcount and
    /// references move from `old` to `new`, which also takes `old`'s mapping and index.
    /// Returns the entries moved. For migration and compaction.
    #[allow(dead_code)]
    pub(crate) fn rmap_replace(&self, cpu: &Cpu<'_>, old: &Folio, new: &Folio) -> Result<u32, MapError> {
        if old.flags.order() != new.flags.order() {
            return Err(MapError::WrongMapping);
        }
        if new.counts.mapcount() != 0 {
            return Err(MapError::AlreadyMapped(0));
        }
        let Some((list, _l)) = self.lock_folio_rmap(cpu, old) else { return Ok(0) };
        let (po, pn) = (old.flags.pfn(), new.flags.pfn());
        new.mapping.store(old.mapping(), Ordering::Release);
        new.index.store(old.index(), Ordering::Release);
        let n = self.walk_mappings_locked(list, old, &mut |_, _, _, _, table, idx, e| {
            let off = e.pfn().0 - po.0;
            let flags = e.0 & !PTE_PFN_MASK;
            self.store_entry(table, idx, PtEntry::new(pn.add(off), flags));
        });
        new.counts.mapcount.fetch_add(n, Ordering::AcqRel);
        new.counts.refcount.fetch_add(n, Ordering::AcqRel);
        old.counts.mapcount.fetch_sub(n, Ordering::AcqRel);
        old.counts.refcount.fetch_sub(n, Ordering::AcqRel);
        if old.counts.mapcount() == 0
            && self.memmap().load(self.platform(), po).and_then(|v| v.word.tag()) == Some(Tag::AnonFolio)
        {
            old.mapping.store(0, Ordering::Release);
        }
        Ok(n)
    }
}

impl<'m, P: Platform> MmRef<'m, P> {
    /// The address space.
    pub fn mm(&self) -> &'m Mm {
        self.mm
    }

    fn check_range(&self, start: u64, len: u64) -> Result<u64, MapError> {
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

    fn add_vma(&self, cpu: &Cpu<'_>, v: Vma) -> Result<(), MapError> {
        let _g = self.mm.lock.lock();
        self.insert_vma_locked(cpu, v).map(|_| ())
    }

    fn insert_vma_locked(&self, cpu: &Cpu<'_>, v: Vma) -> Result<&'m Vma, MapError> {
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
            let _l = r.lock.lock();
            r.link(new);
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
        let v = Vma {
            mm: self.mm.addr(),
            start,
            end,
            pgoff: start >> PAGE_SHIFT,
            kind: VmaKind::Anon,
            owner: av as *const RmapList as usize,
            next: AtomicUsize::new(0),
            rmap_prev: AtomicUsize::new(0),
            rmap_next: AtomicUsize::new(0),
        };
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
        self.add_vma(
            cpu,
            Vma {
                mm: self.mm.addr(),
                start,
                end,
                pgoff,
                kind: VmaKind::File,
                owner: file as *const AddressSpace as usize,
                next: AtomicUsize::new(0),
                rmap_prev: AtomicUsize::new(0),
                rmap_next: AtomicUsize::new(0),
            },
        )
    }

    /// Creates a VMA for pages mapped by pfn (driver memory, mappable vmalloc, netmem).
    pub fn mmap_pfn(&self, cpu: &Cpu<'_>, start: u64, len: u64) -> Result<(), MapError> {
        let end = self.check_range(start, len)?;
        self.add_vma(
            cpu,
            Vma {
                mm: self.mm.addr(),
                start,
                end,
                pgoff: start >> PAGE_SHIFT,
                kind: VmaKind::Pfn,
                owner: 0,
                next: AtomicUsize::new(0),
                rmap_prev: AtomicUsize::new(0),
                rmap_next: AtomicUsize::new(0),
            },
        )
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
    fn remove_vma(&self, cpu: &Cpu<'_>, v: &Vma) -> ZapStats {
        let mut st = ZapStats::default();
        let r = v.rmap();
        let lg = r.map(|r| r.lock.lock());
        {
            let _pt = self.mm.pt_lock.lock();
            self.mem.zap(cpu, self.mm, self.mm.pgd, 4, v.start, v.end, true, &mut st);
        }
        let left = r.map(|r| r.unlink(v));
        drop(lg);
        if v.kind == VmaKind::Anon && left == Some(0) {
            if let Some(r) = r {
                self.mem.kobj_free(cpu, self.caches.anon_vma, r);
            }
        }
        self.mem.kobj_free(cpu, self.caches.vma, v);
        st
    }

    /// Checks a folio or descriptor mapping of `n` pages at `va`, takes the rmap lock, then
    /// the page-table lock, and maps. `first` is the first page of `t` to map.
    fn map_target(
        &self,
        cpu: &Cpu<'_>,
        va: u64,
        t: Target<'_>,
        first: u64,
        n: u64,
        huge: bool,
    ) -> Result<(), MapError> {
        let _g = self.mm.lock.lock();
        self.map_locked(cpu, va, t, first, n, huge)
    }

    fn map_locked(
        &self,
        cpu: &Cpu<'_>,
        va: u64,
        t: Target<'_>,
        first: u64,
        n: u64,
        huge: bool,
    ) -> Result<(), MapError> {
        let end = self.check_range(va, n * PAGE_SIZE as u64)?;
        if huge && !va.is_multiple_of(PMD_SIZE) {
            return Err(MapError::Misaligned(va));
        }
        let v = self.mm.find_vma(va).filter(|v| end <= v.end).ok_or(MapError::NoVma(va))?;
        let _rl = v.rmap().map(|r| r.lock.lock());
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
        if m as u64 + add as u64 > self.mem.config().mapcount_limit as u64 {
            return Err(MapError::MapcountLimit(m));
        }
        let _pt = self.mm.pt_lock.lock();
        // Allocate every table first, then check every slot, then write.
        let level = if huge { 2 } else { 1 };
        let mut deposit = None;
        let mut a = va;
        let mut fail = None;
        while a < end {
            if let Err(e) = self.mem.walk_alloc(cpu, self.mm, a, level) {
                fail = Some(e);
                break;
            }
            a = if huge { end } else { (a & !(PMD_SIZE - 1)) + PMD_SIZE };
        }
        if fail.is_none() && huge {
            match self.mem.alloc_table(cpu, self.mm, 1) {
                Ok(t) => deposit = Some(t),
                Err(e) => fail = Some(e.into()),
            }
        }
        if fail.is_none() && huge {
            let (table, idx) = self.mem.walk_alloc(cpu, self.mm, va, 2).expect("allocated above");
            if self.mem.load_entry(table, idx).present() {
                fail = Some(MapError::AlreadyMapped(va));
            }
        } else if fail.is_none() {
            let mut p = 0;
            while p < add as u64 {
                let a = va + p * PAGE_SIZE as u64;
                if self.mem.lookup(self.mm, a).is_some() {
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
                self.mem.free_table(cpu, self.mm, d);
            }
            let mut st = ZapStats::default();
            self.mem.zap(cpu, self.mm, self.mm.pgd, 4, va, end, false, &mut st);
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
            let (table, idx) = self.mem.walk_alloc(cpu, self.mm, va, 2).expect("allocated above");
            self.mem.deposit(table, deposit.expect("allocated above"));
            self.mem.store_entry(table, idx, PtEntry::new(pfn0, flags | PTE_HUGE));
            self.mem.ptdesc(table).entries.fetch_add(1, Ordering::Relaxed);
        } else {
            for p in 0..n {
                let a = va + p * PAGE_SIZE as u64;
                let (table, idx) = self.mem.walk_alloc(cpu, self.mm, a, 1).expect("allocated above");
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

    fn live_folio<'f>(&self, f: &'f Folio) -> Result<Target<'f>, MapError> {
        loop {
            let pfn = f.flags.pfn();
            match self.mem.memmap().load(self.mem.platform(), pfn).map(|v| v.word) {
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
        let _g = self.mm.lock.lock();
        match self.map_locked(cpu, va, t, 0, n, false) {
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
                            let r = self.mem.folio_put_raw(cpu, p);
                            debug_assert!(r.is_ok(), "{r:?}");
                        }
                    }
                };
                for i in 0..n {
                    let r = match self.mem.target_of(pfn.add(i)) {
                        t @ Target::Folio(..) => self.map_locked(cpu, va + i * PAGE_SIZE as u64, t, 0, 1, false),
                        _ => Err(MapError::NoReference),
                    };
                    if let Err(e) = r {
                        // Roll back the pages mapped so far.
                        let v = self.mm.find_vma(va).expect("checked");
                        let _rl = v.rmap().map(|r| r.lock.lock());
                        let _pt = self.mm.pt_lock.lock();
                        let mut st = ZapStats::default();
                        self.mem.zap(cpu, self.mm, self.mm.pgd, 4, va, va + i * PAGE_SIZE as u64, true, &mut st);
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

    /// Maps every page of driver memory `d` by PTEs from `va`, in a pfn VMA.
    pub fn map_mappable(&self, cpu: &Cpu<'_>, va: u64, d: &MappableDesc) -> Result<(), MapError> {
        match self.mem.memmap().load(self.mem.platform(), d.flags.pfn()).map(|v| v.word.desc_addr()) {
            Some(Some(a)) if a == d as *const MappableDesc as usize => {}
            _ => return Err(MapError::NoReference),
        }
        self.map_target(cpu, va, Target::Mappable(d), 0, 1u64 << d.flags.order(), false)
    }

    /// Maps the one page `pfn` at `va`, whatever mappable kind its word names (see the module
    /// docs); everything else is refused with [`MapError::Unmappable`]. A folio page goes to
    /// the address its index gives in an anon or file VMA; other kinds need a pfn VMA.
    pub fn map_pfn(&self, cpu: &Cpu<'_>, va: u64, pfn: Pfn) -> Result<(), MapError> {
        let _g = self.mm.lock.lock();
        self.check_range(va, PAGE_SIZE as u64)?;
        let kind = self.mm.find_vma(va).map_or(VmaKind::Pfn, |v| v.kind);
        let t = self.mem.classify(self.mm.kind, kind, pfn)?;
        let first = match t {
            Target::Folio(f, _) => pfn.0.wrapping_sub(f.flags.pfn().0),
            Target::Mappable(d) => pfn.0.wrapping_sub(d.flags.pfn().0),
            Target::Other(..) => 0,
        };
        self.map_locked(cpu, va, t, first, 1, false)
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
        let _g = self.mm.lock.lock();
        let mut st = ZapStats::default();
        self.mm.for_each_vma(|v| {
            let (s, e) = (v.start.max(start), v.end.min(end));
            if s < e {
                let _rl = v.rmap().map(|r| r.lock.lock());
                let _pt = self.mm.pt_lock.lock();
                self.mem.zap(cpu, self.mm, self.mm.pgd, 4, s, e, true, &mut st);
            }
        });
        if st.entries == 0 {
            return Err(MapError::NotMapped(start));
        }
        Ok(st)
    }

    /// Splits the PMD mapping at `va` (2 MiB-aligned) into 512 PTEs in the deposited table:
    /// the folio's mapcount and refcount grow by 511. Allocates nothing.
    pub fn split_pmd(&self, va: u64) -> Result<(), MapError> {
        self.check_range(va, PAGE_SIZE as u64)?;
        if !va.is_multiple_of(PMD_SIZE) {
            return Err(MapError::Misaligned(va));
        }
        let _g = self.mm.lock.lock();
        let v = self.mm.find_vma(va).ok_or(MapError::NoVma(va))?;
        let _rl = v.rmap().map(|r| r.lock.lock());
        let _pt = self.mm.pt_lock.lock();
        match self.mem.lookup(self.mm, va) {
            Some((2, table, idx)) => {
                self.mem.split_pmd_locked(table, idx);
                Ok(())
            }
            _ => Err(MapError::NotHuge(va)),
        }
    }

    /// The entry mapping `va`, and whether it is a PMD (huge) entry.
    pub fn translate(&self, va: u64) -> Option<(PtEntry, bool)> {
        let (lo, hi) = self.mm.range();
        if va < lo || va >= hi {
            return None;
        }
        let _pt = self.mm.pt_lock.lock();
        let (level, table, idx) = self.mem.lookup(self.mm, va)?;
        Some((self.mem.load_entry(table, idx), level == 2))
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
    fn fork_victim(&self, v: &Vma) -> Option<&'m Folio> {
        if v.kind != VmaKind::Anon {
            return None;
        }
        let limit = self.mem.config().mapcount_limit as u64;
        let _rl = v.rmap().map(|r| r.lock.lock());
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

    fn fork_vma(&self, cpu: &Cpu<'_>, child: &MmRef<'m, P>, v: &Vma) -> Result<(), MapError> {
        // Large folios that the copy would push past the mapcount limit are split first.
        while let Some(f) = self.fork_victim(v) {
            let (pfn, order) = (f.flags.pfn(), f.flags.order());
            if let Err(e) = self.mem.folio_split_held(cpu, f, Some(1), 0, |_| {}) {
                let pr = self.mem.folio_put_raw(cpu, f);
                debug_assert!(pr.is_ok(), "{pr:?}");
                return Err(MapError::Split(e));
            }
            // The reference fork_victim took is now held on every piece: drop each.
            for i in 0..1u64 << order {
                if let Target::Folio(piece, _) = self.mem.target_of(pfn.add(i)) {
                    let pr = self.mem.folio_put_raw(cpu, piece);
                    debug_assert!(pr.is_ok(), "{pr:?}");
                }
            }
        }
        {
            let _cg = child.mm.lock.lock();
            child.insert_vma_locked(
                cpu,
                Vma {
                    mm: child.mm.addr(),
                    start: v.start,
                    end: v.end,
                    pgoff: v.pgoff,
                    kind: v.kind,
                    owner: v.owner,
                    next: AtomicUsize::new(0),
                    rmap_prev: AtomicUsize::new(0),
                    rmap_next: AtomicUsize::new(0),
                },
            )?;
        }
        let _rl = v.rmap().map(|r| r.lock.lock());
        let _pt = self.mm.pt_lock.lock();
        let _cpt = child.mm.pt_lock.lock();
        let limit = self.mem.config().mapcount_limit;
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

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::desc::VmallocDesc;
    use crate::folio::FolioKind;
    use crate::layout::{MemmapLayout, MemoryLayout, RegionSpec};
    use crate::Config;
    use std::boxed::Box;

    /// 16 MiB of host memory as a one-region machine.
    struct Buf(NonNull<u8>);
    // SAFETY: the buffer is only reached through the memory manager.
    unsafe impl Send for Buf {}
    // SAFETY: as above.
    unsafe impl Sync for Buf {}
    const PAGES: u64 = 4096;
    // SAFETY: the buffer is PAGES pages, page-aligned, leaked, linear, and only reached through
    // the manager.
    unsafe impl Platform for Buf {
        fn direct_map(&self, pfn: Pfn) -> Option<NonNull<u8>> {
            // SAFETY: in bounds of the buffer.
            (pfn.0 < PAGES).then(|| unsafe { NonNull::new_unchecked(self.0.as_ptr().add(pfn.0 as usize * PAGE_SIZE)) })
        }
        fn virt_to_pfn(&self, a: NonNull<u8>) -> Option<Pfn> {
            let off = (a.as_ptr() as usize).checked_sub(self.0.as_ptr() as usize)?;
            (off < PAGES as usize * PAGE_SIZE).then_some(Pfn((off / PAGE_SIZE) as u64))
        }
        fn map_local(&self, pfn: Pfn) -> Option<NonNull<u8>> {
            self.direct_map(pfn)
        }
        fn unmap_local(&self, _: Pfn, _: NonNull<u8>) {}
    }

    fn machine() -> &'static PhysMem<Buf> {
        let layout = std::alloc::Layout::from_size_align(PAGES as usize * PAGE_SIZE, PAGE_SIZE).unwrap();
        // SAFETY: a non-zero-sized layout.
        let buf = Buf(NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) }).unwrap());
        let mut map = MemoryLayout::new();
        map.add_region(RegionSpec {
            start: Pfn(0),
            end: Pfn(PAGES),
            node: 0,
            mapped: true,
            layout: MemmapLayout::Flat,
        })
        .unwrap();
        Box::leak(Box::new(PhysMem::boot(buf, &map, Config { nr_cpus: 1, ..Config::default() }).unwrap()))
    }

    /// A raw page described as vmalloc memory of the given variant, as vmalloc stamps it.
    fn vmalloc_page<'a>(m: &'a PhysMem<Buf>, cpu: &Cpu<'_>, mappable: bool) -> (Pfn, &'a VmallocDesc) {
        let pfn = m.pages().alloc_internal(cpu, 0, Gfp::KERNEL).unwrap();
        let d = m.slabs().alloc_desc::<VmallocDesc>(cpu).unwrap();
        d.flags.init(0, 0, pfn);
        d.counts.mapcount.store(0, Ordering::Relaxed);
        d.counts.refcount.store(1, Ordering::Release);
        let tag = if mappable { Tag::VmallocMappable } else { Tag::VmallocUnmappable };
        m.pages().stamp_block(pfn, 0, Word::desc_as(DescPtr::from_ref(d), tag).unwrap());
        (pfn, d)
    }

    fn free_vmalloc_page(m: &PhysMem<Buf>, cpu: &Cpu<'_>, pfn: Pfn, d: &VmallocDesc) {
        assert_eq!(d.counts.refcount(), 1);
        m.pages().stamp_block(pfn, 0, Word::TAIL);
        m.slabs().free_desc(cpu, d);
        let rm = m.memmap().region_map(m.memmap().region_index(pfn).unwrap());
        m.pages().free_claimed(cpu, rm, pfn, 0);
    }

    #[test]
    fn unmappable_vmalloc_never_reaches_user_space() {
        let m = machine();
        let cpu = m.cpus().claim(0).unwrap();
        let (un, ud) = vmalloc_page(m, &cpu, false);
        let (mp, md) = vmalloc_page(m, &cpu, true);
        let mms = m.mm_caches(&cpu).unwrap();
        let user = mms.mm_create(&cpu, MmKind::User).unwrap();
        user.mmap_pfn(&cpu, 0x10_0000, 0x10_0000).unwrap();
        assert_eq!(
            user.map_pfn(&cpu, 0x10_0000, un),
            Err(MapError::Unmappable { pfn: un, kind: UnmappableKind::VmallocUnmappable })
        );
        assert_eq!(ud.counts.mapcount(), 0);
        // The mappable variant maps through the generic (offset 8/12) path.
        user.map_pfn(&cpu, 0x10_0000, mp).unwrap();
        assert_eq!((md.counts.refcount(), md.counts.mapcount()), (2, 1));
        assert_eq!(user.translate(0x10_0000).unwrap().0.pfn(), mp);
        // A kernel address space takes both.
        let kern = mms.mm_create(&cpu, MmKind::Kernel).unwrap();
        kern.mmap_pfn(&cpu, KERNEL_START, 0x10_0000).unwrap();
        kern.map_pfn(&cpu, KERNEL_START, un).unwrap();
        assert_eq!((ud.counts.refcount(), ud.counts.mapcount()), (2, 1));
        kern.destroy(&cpu);
        user.destroy(&cpu);
        assert_eq!((ud.counts.mapcount(), md.counts.mapcount()), (0, 0));
        free_vmalloc_page(m, &cpu, un, ud);
        free_vmalloc_page(m, &cpu, mp, md);
    }

    #[test]
    fn rmap_replace_moves_every_mapping() {
        let m = machine();
        let cpu = m.cpus().claim(0).unwrap();
        let mms = m.mm_caches(&cpu).unwrap();
        let a = mms.mm_create(&cpu, MmKind::User).unwrap();
        let start = 0x40_0000u64;
        a.mmap_anon(&cpu, start, 0x40_0000).unwrap();
        let old = m.folio_alloc(&cpu, 1, Gfp::MOVABLE, FolioKind::Anon).unwrap();
        let new = m.folio_alloc(&cpu, 1, Gfp::MOVABLE, FolioKind::Anon).unwrap();
        a.map_folio(&cpu, start + 0x3000, &old).unwrap();
        let b = a.fork(&cpu).unwrap();
        assert_eq!((old.counts.refcount(), old.counts.mapcount()), (5, 4));
        assert_eq!(m.rmap_replace(&cpu, &old, &new), Ok(4));
        assert_eq!((old.counts.refcount(), old.counts.mapcount()), (1, 0));
        assert_eq!((new.counts.refcount(), new.counts.mapcount()), (5, 4));
        for mm in [&a, &b] {
            assert_eq!(mm.translate(start + 0x4000).unwrap().0.pfn(), new.flags.pfn().add(1));
        }
        assert_eq!(m.rmap_walk(&cpu, &old, |_, _, _| ()), 0);
        assert_eq!(old.mapping(), 0, "an unmapped anon folio leaves its anon_vma");
        assert_eq!(m.rmap_walk(&cpu, &new, |_, _, _| ()), 4);
        // Different orders are refused.
        let small = m.folio_alloc(&cpu, 0, Gfp::MOVABLE, FolioKind::Anon).unwrap();
        assert_eq!(m.rmap_replace(&cpu, &new, &small), Err(MapError::WrongMapping));
        a.destroy(&cpu);
        b.destroy(&cpu);
        for f in [old, new, small] {
            assert_eq!(m.folio_put(&cpu, f), Ok(true));
        }
    }

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
