//! The one adapter between this kernel and memdesc: every call into the core goes through
//! this module, so a change of the core's API is absorbed here.
//!
//! It provides the [`Platform`] for real hardware (the kernel's direct map, a fixmap for
//! `map_local`, the CPU count from ACPI), turns the PVH memory map into a [`MemoryLayout`],
//! boots [`PhysMem`] into a static, and wraps the operations the self-test, torture and
//! benchmark use in small kernel-side types that carry what freeing needs.
//!
//! Invariants (cited by `SAFETY` comments):
//! 1. `MEM` is written once, by the BSP in [`boot`], before `READY` is set (Release); every
//!    reader checks `READY` (Acquire) first, and nothing moves or drops it afterwards, so
//!    `&'static` references to it are valid.
//! 2. The direct map is the identity map of every RAM page from pfn 1 to `ram_end`, except the
//!    unmapped region `hole`, which the kernel's page tables no longer map (arch.rs
//!    `direct_map_remove`); pages are 4 KiB, page-aligned, and distinct pfns never alias.
//! 3. `map_local` uses the calling CPU's own fixmap slots (arch.rs invariant 3), valid until
//!    the matching `unmap_local` on the same CPU.
//! 4. Memory handed to memdesc (regions minus reservations) is used by nothing else: the
//!    kernel image, the low 1 MiB (firmware data, the boot information, the AP trampoline) and
//!    everything outside usable e820 entries are reserved or absent.

use core::mem::MaybeUninit;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, Ordering};

use memdesc::base::rcu::GpCookie;
use memdesc::folio::FolioKind;
use memdesc::kmalloc::KBox;
use memdesc::pagecache::AddressSpaceRef;
use memdesc::pgtable::{MmCaches, MmKind, MmRef};
use memdesc::slab::SlabObj;
use memdesc::{CacheArgs, CacheRef, Config, Gfp, MemmapLayout, MemoryLayout, Pfn, PhysMem, Platform, RegionSpec};

use crate::arch;
use crate::bootinfo::{BootInfo, BootInfoError, Layout, E820_RAM, MIN_RAM_MIB};
use crate::util::FmtBuf;

/// The platform of this kernel.
pub struct KPlatform {
    ram_end: u64,
    hole: (u64, u64),
}

// SAFETY: invariant 2 (direct map: identity, linear, non-aliasing, valid while the kernel
// runs), invariant 3 (local mappings) and invariant 4 (nothing else writes managed memory).
unsafe impl Platform for KPlatform {
    #[inline]
    fn direct_map(&self, pfn: Pfn) -> Option<NonNull<u8>> {
        if pfn.0 == 0 || pfn.0 >= self.ram_end || (self.hole.0 <= pfn.0 && pfn.0 < self.hole.1) {
            return None;
        }
        NonNull::new((pfn.0 << 12) as *mut u8)
    }

    #[inline]
    fn virt_to_pfn(&self, addr: NonNull<u8>) -> Option<Pfn> {
        let pfn = addr.as_ptr() as u64 >> 12;
        self.direct_map(Pfn(pfn)).map(|_| Pfn(pfn))
    }

    fn map_local(&self, pfn: Pfn) -> Option<NonNull<u8>> {
        NonNull::new(arch::fixmap_map(pfn.0 << 12)? as *mut u8)
    }

    fn unmap_local(&self, _pfn: Pfn, addr: NonNull<u8>) {
        arch::fixmap_unmap(addr.as_ptr() as u64);
    }

    fn protect(&self, pfn: Pfn, accessible: bool) {
        if self.direct_map(pfn).is_some() && !arch::protect_4k(pfn.0 << 12, accessible) {
            PROTECT_FAILED.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Guard-page protections the page tables could not apply (split-table pool used up).
pub static PROTECT_FAILED: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

type Mem = PhysMem<KPlatform>;

static mut MEM: MaybeUninit<Mem> = MaybeUninit::uninit();
static READY: AtomicBool = AtomicBool::new(false);
static mut MM_CACHES: MaybeUninit<MmCaches<'static, KPlatform>> = MaybeUninit::uninit();
static MM_READY: AtomicBool = AtomicBool::new(false);

fn mem() -> &'static Mem {
    assert!(READY.load(Ordering::Acquire), "memdesc used before boot");
    // SAFETY: invariant 1.
    unsafe { (*core::ptr::addr_of!(MEM)).assume_init_ref() }
}

/// An error from the core, as text.
#[derive(Clone, Copy, Debug)]
pub struct MmError {
    /// Out of memory (as opposed to a refused operation).
    pub oom: bool,
    /// The order is not one the allocator can serve (for a guarded block: also a two-level
    /// area that has no per-page words for guards).
    pub invalid_order: bool,
    /// What the core said.
    pub msg: FmtBuf,
}

impl core::fmt::Display for MmError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.msg.as_str())
    }
}

/// The core's error types, and which of their values mean "out of memory".
trait CoreError: core::fmt::Debug {
    fn oom(&self) -> bool {
        false
    }
    fn invalid_order(&self) -> bool {
        false
    }
}
impl CoreError for memdesc::AllocError {
    fn oom(&self) -> bool {
        matches!(self, memdesc::AllocError::NoMemory { .. })
    }
    fn invalid_order(&self) -> bool {
        matches!(self, memdesc::AllocError::InvalidOrder(_))
    }
}
impl CoreError for memdesc::pagecache::PageCacheError {
    fn oom(&self) -> bool {
        matches!(self, memdesc::pagecache::PageCacheError::NoMemory(_))
    }
}
impl CoreError for memdesc::pgtable::MapError {
    fn oom(&self) -> bool {
        matches!(self, memdesc::pgtable::MapError::NoMemory(_))
    }
}
impl CoreError for memdesc::FreeError {}
impl CoreError for memdesc::SlabError {}
impl CoreError for memdesc::folio::FolioError {}
impl CoreError for memdesc::pagecache::PageCacheViolation {}
impl CoreError for memdesc::machine::check::Violation {}

fn err(e: impl CoreError) -> MmError {
    MmError { oom: e.oom(), invalid_order: e.invalid_order(), msg: FmtBuf::from_args(format_args!("{e:?}")) }
}

/// Why memdesc could not boot on this machine.
pub enum BootError {
    /// The boot information was refused.
    Input(BootInfoError),
    /// The layout was refused by the core.
    Layout(FmtBuf),
    /// The core's boot failed.
    Boot(FmtBuf),
}

/// What boot measured.
pub struct BootStats {
    /// Bytes of memmap words.
    pub memmap_bytes: u64,
    /// TSC ticks `PhysMem::boot` took (memmap build, reserved stamping, buddy population).
    pub boot_ticks: u64,
    /// The unmapped region `[start, end)` in pfns (empty when none).
    pub hole: (u64, u64),
    /// Pages free after boot.
    pub free_pages: u64,
    /// Pages the boot allocator took (memmap, per-CPU lists, bootstrap caches).
    pub boot_pages: u64,
}

/// Builds the layout from the checked memory map and boots memdesc (BSP only, once).
pub fn boot(bi: &BootInfo, nr_cpus: usize) -> Result<BootStats, BootError> {
    let opts = &bi.opts;
    let layout = match opts.layout {
        Layout::Flat => MemmapLayout::Flat,
        Layout::TwoLevel => MemmapLayout::TwoLevel,
    };
    // Linker symbols; only their addresses are used.
    let (kstart, kend) = (
        core::ptr::addr_of!(crate::boot::__kernel_start) as u64,
        core::ptr::addr_of!(crate::boot::__kernel_end) as u64,
    );
    let kpfns = (kstart >> 12, kend.div_ceil(4096));
    let ram_end = bi.ram_end();
    // The unmapped region: the top `unmapped_mib` of the highest usable entry, 2 MiB-aligned,
    // if that entry keeps at least 16 MiB below it and lies above the kernel.
    let mut hole = (0u64, 0u64);
    if opts.unmapped_mib > 0 {
        if let Some(top) = bi.entries().iter().filter(|e| e.kind == E820_RAM).max_by_key(|e| e.addr) {
            let end = top.end() & !((2 << 20) - 1);
            let start = end.saturating_sub(opts.unmapped_mib << 20);
            if start >= top.addr.next_multiple_of(2 << 20) + (16 << 20) && start >= kend {
                hole = (start >> 12, end >> 12);
            }
        }
    }
    let hole_mib = (hole.1 - hole.0) >> 8;
    let low_and_kernel = 256 + (kpfns.1 - kpfns.0);
    let usable_pages = (bi.usable_bytes() >> 12).saturating_sub(low_and_kernel).saturating_sub(hole.1 - hole.0);
    if usable_pages >> 8 < MIN_RAM_MIB {
        return Err(BootError::Input(BootInfoError::TooLittleRam { usable_mib: usable_pages >> 8 }));
    }
    if !arch::direct_map_extend(ram_end) {
        return Err(BootError::Input(BootInfoError::TooMuchRam(ram_end)));
    }
    let mut l = MemoryLayout::new();
    let lerr = |e| BootError::Layout(FmtBuf::from_args(format_args!("{e:?}")));
    for e in bi.entries().iter().filter(|e| e.kind == E820_RAM) {
        let (s, t) = (e.addr >> 12, e.end() >> 12);
        // Split around the unmapped region.
        let pieces = [(s, t.min(hole.0).max(s)), (s.max(hole.1), t)];
        for (a, b) in if hole.0 < hole.1 && s <= hole.0 && hole.1 <= t { pieces } else { [(s, t), (0, 0)] } {
            if a < b {
                l.add_region(RegionSpec { start: Pfn(a), end: Pfn(b), node: 0, mapped: true, layout }).map_err(lerr)?;
            }
        }
    }
    if hole.0 < hole.1 {
        // A second node, so it is used after node 0's memory and its zone has no per-CPU lists.
        l.add_region(RegionSpec {
            start: Pfn(hole.0),
            end: Pfn(hole.1),
            node: 1,
            mapped: false,
            layout: MemmapLayout::Flat,
        })
        .map_err(lerr)?;
        arch::direct_map_remove(hole.0 << 12, hole.1 << 12);
        crate::kprintln!(
            "unmapped region: [{:#x}, {:#x}) ({hole_mib} MiB, node 1, reached only through map_local)",
            hole.0 << 12,
            hole.1 << 12
        );
    }
    l.reserve(Pfn(0), Pfn(256)).map_err(lerr)?;
    l.reserve(Pfn(kpfns.0), Pfn(kpfns.1)).map_err(lerr)?;
    let platform = KPlatform { ram_end: ram_end >> 12, hole };
    let config = Config { nr_cpus, ..Config::default() };
    let t0 = arch::rdtsc();
    let m =
        PhysMem::boot(platform, &l, config).map_err(|e| BootError::Boot(FmtBuf::from_args(format_args!("{e:?}"))))?;
    let boot_ticks = arch::rdtsc() - t0;
    // SAFETY: invariant 1: the BSP writes MEM once, before READY.
    unsafe { (*core::ptr::addr_of_mut!(MEM)).write(m) };
    READY.store(true, Ordering::Release);
    let m = mem();
    Ok(BootStats {
        memmap_bytes: m.memmap().bytes(),
        boot_ticks,
        hole,
        free_pages: m.nr_free_pages(),
        boot_pages: m.boot_pages(),
    })
}

/// Prints the zones and the buddy free lists.
pub fn print_zones() {
    let m = mem();
    for z in m.zones() {
        crate::kprintln!(
            "  node {} zone {:<7} present {:>8} managed {:>8} free {:>8} pages",
            z.node(),
            z.zone_type().name(),
            z.present_pages(),
            z.managed_pages(),
            z.free_pages()
        );
    }
}

/// Pages free in the buddy lists.
pub fn nr_free_pages() -> u64 {
    mem().nr_free_pages()
}

/// Largest order the allocator serves.
pub fn max_order() -> u32 {
    mem().config().max_order
}

/// Empties every CPU's per-CPU page lists.
pub fn drain_all() {
    mem().drain_all();
}

// ---------------------------------------------------------------------------------------------
// CPUs.

/// This CPU's token (proof the holder runs on it).
pub struct Cpu(memdesc::Cpu<'static>);

impl Cpu {
    /// The CPU number.
    pub fn id(&self) -> usize {
        self.0.id()
    }
}

/// Claims CPU `id` for the calling CPU (once per CPU).
pub fn claim_cpu(id: usize) -> Option<Cpu> {
    mem().cpus().claim(id).map(Cpu)
}

// ---------------------------------------------------------------------------------------------
// Pages.

/// Allocation flags.
#[derive(Clone, Copy, Debug, Default)]
pub struct Flags {
    /// Zero the memory.
    pub zero: bool,
    /// Movable memory (may come from the Movable zone).
    pub movable: bool,
    /// Only below 4 GiB.
    pub dma32: bool,
    /// May dip into reserves, and a failure is expected (no warning).
    pub atomic: bool,
    /// Surround the block with two inaccessible guard pages (debug).
    pub guard: bool,
}

fn gfp(f: Flags) -> Gfp {
    let mut g = Gfp::KERNEL;
    if f.zero {
        g = g | Gfp::ZERO;
    }
    if f.movable {
        g = g | Gfp::MOVABLE;
    }
    if f.dma32 {
        g = g | Gfp::DMA32;
    }
    if f.atomic {
        g = g | Gfp::ATOMIC;
    }
    if f.guard {
        g = g | Gfp::GUARD;
    }
    g
}

/// `2^order` pages from the page allocator, owned until passed to [`free_pages`] (the core's
/// owned handle, which carries the machine, pfn and order).
#[must_use = "dropping the handle leaks the pages"]
pub struct Pages(memdesc::Pages);

impl Pages {
    /// First pfn.
    pub fn pfn(&self) -> u64 {
        self.0.pfn().0
    }
    /// Order.
    pub fn order(&self) -> u32 {
        self.0.order()
    }
    /// Gives up the handle, returning (pfn, order); the pages stay allocated.
    pub fn into_raw(self) -> (u64, u32) {
        let (pfn, order) = self.0.into_raw();
        (pfn.0, order)
    }
    /// Rebuilds a handle from [`Pages::into_raw`].
    ///
    /// # Safety
    /// `(pfn, order)` came from `into_raw` of a handle whose pages were not freed since, and
    /// no other handle to them exists.
    pub unsafe fn from_raw(pfn: u64, order: u32) -> Pages {
        // SAFETY: the caller's contract is the core's (`memdesc::Pages::from_raw`).
        Pages(unsafe { memdesc::Pages::from_raw(mem(), Pfn(pfn), order) })
    }
}

/// Allocates `2^order` pages.
pub fn alloc_pages(cpu: &Cpu, order: u32, f: Flags) -> Result<Pages, MmError> {
    mem().alloc_pages(&cpu.0, order, gfp(f)).map(Pages).map_err(err)
}

/// Frees pages.
pub fn free_pages(cpu: &Cpu, p: Pages) -> Result<(), MmError> {
    mem().free_pages(&cpu.0, p.0).map_err(err)
}

/// Frees `2^order` pages at `pfn` by number.
///
/// # Safety
/// Either the caller owns that block (it came from [`Pages::into_raw`] and no handle to it
/// remains), or the call is one the core refuses without changing anything (the block is
/// already free, `pfn` is not the head of an allocation, or `order` is not its order) — which
/// is what the self-test checks with it.
pub unsafe fn free_raw(cpu: &Cpu, pfn: u64, order: u32) -> Result<(), MmError> {
    // SAFETY: the caller's contract (an owned block, or a call the core refuses unchanged).
    unsafe { mem().free_pages_raw(&cpu.0, Pfn(pfn), order) }.map_err(err)
}

/// Whether page `pfn` has a direct mapping.
pub fn is_direct_mapped(pfn: u64) -> bool {
    mem().platform().direct_map(Pfn(pfn)).is_some()
}

/// A block of memory its holder may read: pages it owns, or a folio it holds a reference to.
pub trait Block {
    /// First pfn.
    fn first_pfn(&self) -> u64;
    /// Order.
    fn block_order(&self) -> u32;
}

impl Block for Pages {
    fn first_pfn(&self) -> u64 {
        self.pfn()
    }
    fn block_order(&self) -> u32 {
        self.order()
    }
}

impl Block for FolioRef {
    fn first_pfn(&self) -> u64 {
        self.pfn()
    }
    fn block_order(&self) -> u32 {
        self.order()
    }
}

/// Runs `f` with page `pfn` mapped (direct map, or a local mapping for unmapped memory).
///
/// # Safety
/// The page is memory the caller may access this way: it holds the allocation containing it
/// and, for the `&mut`, no one else reads or writes the page while `f` runs.
pub unsafe fn with_page_raw<R>(pfn: u64, f: impl FnOnce(&mut [u64; 512]) -> R) -> R {
    let p = mem().platform();
    let (ptr, local) = match p.direct_map(Pfn(pfn)) {
        Some(a) => (a, false),
        None => (p.map_local(Pfn(pfn)).expect("a fixmap slot is free"), true),
    };
    // SAFETY: invariants 2 and 3: the mapping is valid for 4 KiB; exclusivity is the caller's
    // contract.
    let r = f(unsafe { &mut *ptr.as_ptr().cast::<[u64; 512]>() });
    if local {
        p.unmap_local(Pfn(pfn), ptr);
    }
    r
}

/// Reads page `i` of a block the caller holds.
pub fn read_page<R>(b: &impl Block, i: u64, f: impl FnOnce(&[u64; 512]) -> R) -> R {
    assert!(i < 1 << b.block_order(), "page {i} is outside the block");
    // SAFETY: the caller holds the block (a `Block` is an owning handle or a reference); the
    // access is shared, and nobody writes a held block except through `write_page` (which
    // needs the unique `&mut Pages`) or `write_folio_page` (whose contract excludes readers).
    unsafe { with_page_raw(b.first_pfn() + i, |w| f(w)) }
}

/// Writes page `i` of pages the caller owns (the `&mut` handle makes the access exclusive).
pub fn write_page<R>(p: &mut Pages, i: u64, f: impl FnOnce(&mut [u64; 512]) -> R) -> R {
    assert!(i < 1 << p.order(), "page {i} is outside the block");
    // SAFETY: `Pages` is the only handle to its block and it is borrowed mutably.
    unsafe { with_page_raw(p.pfn() + i, f) }
}

/// Writes page `i` of a folio the caller holds a reference to.
///
/// # Safety
/// No one else reads or writes the folio's memory meanwhile: it is not yet published (in a
/// page cache) or mapped anywhere another CPU uses, and no other reference was handed out.
pub unsafe fn write_folio_page<R>(fo: &FolioRef, i: u64, f: impl FnOnce(&mut [u64; 512]) -> R) -> R {
    assert!(i < 1 << fo.order(), "page {i} is outside the folio");
    // SAFETY: the caller's contract.
    unsafe { with_page_raw(fo.pfn() + i, f) }
}

// ---------------------------------------------------------------------------------------------
// kmalloc and slab caches.

/// A kmalloc object or an object of a slab cache, owned until passed to [`kfree`] or
/// [`Cache::free`] (the core's owned handles).
#[must_use = "dropping the handle leaks the object"]
pub enum Obj {
    /// From [`kmalloc`].
    Kmalloc(KBox),
    /// From [`Cache::alloc`].
    Cache(SlabObj),
}

impl Obj {
    /// The object's address.
    pub fn ptr(&self) -> *mut u8 {
        self.nonnull().as_ptr()
    }
    fn nonnull(&self) -> NonNull<u8> {
        match self {
            Obj::Kmalloc(k) => k.as_ptr(),
            Obj::Cache(o) => o.as_ptr(),
        }
    }
}

fn wrong_obj(what: &str) -> MmError {
    MmError { oom: false, invalid_order: false, msg: FmtBuf::from_args(format_args!("{what}")) }
}

/// Allocates `size` bytes.
pub fn kmalloc(cpu: &Cpu, size: usize, zero: bool) -> Result<Obj, MmError> {
    let g = if zero { Gfp::ZERO } else { Gfp::KERNEL };
    mem().kmalloc(&cpu.0, size, g).map(Obj::Kmalloc).map_err(err)
}

/// Frees a kmalloc object.
pub fn kfree(cpu: &Cpu, o: Obj) -> Result<(), MmError> {
    match o {
        Obj::Kmalloc(k) => mem().kfree(&cpu.0, k).map_err(err),
        Obj::Cache(c) => {
            let _ = c.into_raw();
            Err(wrong_obj("kfree of a slab-cache object (leaked)"))
        }
    }
}

/// Bytes usable in a kmalloc object.
pub fn ksize(o: &Obj) -> Result<usize, MmError> {
    mem().ksize(o.nonnull()).map_err(err)
}

/// A slab cache of fixed-size objects.
pub struct Cache(CacheRef<'static, KPlatform>);

/// Creates a slab cache.
pub fn cache_create(cpu: &Cpu, name: &'static str, size: usize) -> Result<Cache, MmError> {
    mem().create_cache(&cpu.0, CacheArgs::new(name, size)).map(Cache).map_err(err)
}

impl Cache {
    /// Allocates an object.
    pub fn alloc(&self, cpu: &Cpu) -> Result<Obj, MmError> {
        self.0.alloc(&cpu.0).map(Obj::Cache).map_err(err)
    }
    /// Frees an object of this cache.
    pub fn free(&self, cpu: &Cpu, o: Obj) -> Result<(), MmError> {
        match o {
            Obj::Cache(c) => self.0.free(&cpu.0, c).map_err(err),
            Obj::Kmalloc(k) => {
                let _ = k.into_raw();
                Err(wrong_obj("cache free of a kmalloc object (leaked)"))
            }
        }
    }
    /// Objects allocated and not freed.
    pub fn live(&self) -> u64 {
        self.0.cache().live_objects()
    }
    /// Destroys the (empty) cache.
    pub fn destroy(self, cpu: &Cpu) -> Result<(), MmError> {
        mem().destroy_cache(&cpu.0, self.0).map_err(err)
    }
}

// ---------------------------------------------------------------------------------------------
// Folios and the page cache.

/// One reference to a folio, owned until passed to [`folio_put`] (the core's `FolioRef`).
#[must_use = "dropping the handle leaks a reference"]
pub struct FolioRef(memdesc::folio::FolioRef<'static>);

impl FolioRef {
    /// First pfn.
    pub fn pfn(&self) -> u64 {
        self.0.flags.pfn().0
    }
    /// Order.
    pub fn order(&self) -> u32 {
        self.0.flags.order()
    }
    /// Current reference count.
    pub fn refcount(&self) -> u32 {
        self.0.counts.refcount()
    }
    /// Current map count.
    pub fn mapcount(&self) -> u32 {
        self.0.counts.mapcount()
    }
    /// Whether two handles name one folio.
    pub fn same(&self, o: &FolioRef) -> bool {
        memdesc::folio::FolioRef::ptr_eq(&self.0, &o.0)
    }
}

/// Allocates a folio (anonymous, or a file folio for the page cache) with one reference.
pub fn folio_alloc(cpu: &Cpu, order: u32, file: bool, f: Flags) -> Result<FolioRef, MmError> {
    let kind = if file { FolioKind::File } else { FolioKind::Anon };
    mem().folio_alloc(&cpu.0, order, gfp(f), kind).map(FolioRef).map_err(err)
}

/// Takes another reference.
pub fn folio_get(f: &FolioRef) -> FolioRef {
    FolioRef(mem().folio_get(&f.0))
}

/// Drops a reference; returns whether it was the last (the folio was freed).
pub fn folio_put(cpu: &Cpu, f: FolioRef) -> Result<bool, MmError> {
    mem().folio_put(&cpu.0, f.0).map_err(err)
}

/// One file's page cache.
pub struct FileSpace(AddressSpaceRef<'static, KPlatform>);

/// Creates an empty page cache.
pub fn file_create(cpu: &Cpu) -> Result<FileSpace, MmError> {
    mem().address_space_create(&cpu.0).map(FileSpace).map_err(err)
}

impl FileSpace {
    /// Caches `f` (a file folio) at `index`; the cache takes its own reference.
    pub fn insert(&self, cpu: &Cpu, f: &FolioRef, index: u64) -> Result<(), MmError> {
        self.0.insert(&cpu.0, &f.0, index).map_err(err)
    }
    /// The folio at `index` with a reference for the caller (lockless, under RCU).
    pub fn lookup(&self, cpu: &Cpu, index: u64) -> Option<FolioRef> {
        self.0.lookup(&cpu.0, index).map(FolioRef)
    }
    /// Removes `f` from the cache (drops the cache's reference).
    pub fn delete(&self, cpu: &Cpu, f: &FolioRef) -> Result<bool, MmError> {
        self.0.delete(&cpu.0, &f.0).map_err(err)
    }
    /// Pages cached.
    pub fn nr_pages(&self) -> u64 {
        self.0.nr_pages()
    }
    /// Checks the tree.
    pub fn verify(&self) -> Result<(), MmError> {
        self.0.verify().map_err(err)
    }
    /// Empties and frees the cache; returns the folios it dropped.
    pub fn destroy(self, cpu: &Cpu) -> u64 {
        self.0.destroy(&cpu.0).folios
    }
}

// ---------------------------------------------------------------------------------------------
// RCU.

/// Runs `f` inside an RCU read-side section on `cpu`.
pub fn rcu_read<R>(cpu: &Cpu, f: impl FnOnce() -> R) -> R {
    let _g = mem().rcu().read_lock(&cpu.0);
    f()
}

/// A grace period in progress.
#[derive(Clone, Copy)]
pub struct Gp(GpCookie);

/// Starts a grace period.
pub fn gp_start() -> Gp {
    Gp(mem().rcu().start_grace_period())
}

/// Whether the grace period has elapsed.
pub fn gp_done(g: Gp) -> bool {
    mem().rcu().poll(g.0)
}

// ---------------------------------------------------------------------------------------------
// Kernel address spaces mapped by the MMU.

/// Creates the address-space caches (once; the BSP, before any other CPU uses them).
pub fn mm_init(cpu: &Cpu) -> Result<(), MmError> {
    mm_caches(cpu).map(|_| ())
}

fn mm_caches(cpu: &Cpu) -> Result<&'static MmCaches<'static, KPlatform>, MmError> {
    if !MM_READY.load(Ordering::Acquire) {
        let c = mem().mm_caches(&cpu.0).map_err(err)?;
        // SAFETY: written once by the BSP's self-test (the only caller before MM_READY).
        unsafe { (*core::ptr::addr_of_mut!(MM_CACHES)).write(c) };
        MM_READY.store(true, Ordering::Release);
    }
    // SAFETY: initialised above, never moved or dropped.
    Ok(unsafe { (*core::ptr::addr_of!(MM_CACHES)).assume_init_ref() })
}

/// A kernel address space whose page tables are memdesc page-table pages.
pub struct KernelMm(MmRef<'static, KPlatform>);

/// Creates a kernel address space.
pub fn kernel_mm_create(cpu: &Cpu) -> Result<KernelMm, MmError> {
    mm_caches(cpu)?.mm_create(&cpu.0, MmKind::Kernel).map(KernelMm).map_err(err)
}

impl KernelMm {
    /// Creates an anonymous VMA and maps `f` (an anonymous folio) at its start `va`; the
    /// mapping takes a reference.
    pub fn map_anon(&self, cpu: &Cpu, va: u64, f: &FolioRef) -> Result<(), MmError> {
        self.0.mmap_anon(&cpu.0, va, 4096 << f.order()).map_err(err)?;
        self.0.map_folio(&cpu.0, va, &f.0).map_err(err)
    }
    /// Removes the VMA at `va` and everything mapped in it; returns pages unmapped.
    pub fn unmap(&self, cpu: &Cpu, va: u64) -> Result<u64, MmError> {
        self.0.munmap(&cpu.0, va).map(|s| s.pages).map_err(err)
    }
    /// The raw PGD entry at `index`, to install in the live PML4.
    pub fn pgd_entry(&self, index: usize) -> u64 {
        let pgd = self.0.mm().pgd();
        // SAFETY: the PGD is a page-table page of this address space, which memdesc changes
        // only under the mm's locks in calls this handle makes; none runs now (`&self`, this
        // CPU), so reading one entry races with nothing.
        unsafe { with_page_raw(pgd.0, |t| t[index]) }
    }
    /// The pfn `va` translates to in these tables.
    pub fn translate(&self, va: u64) -> Option<u64> {
        self.0.translate(va).map(|(e, _)| e.pfn().0)
    }
    /// Tears the address space down.
    pub fn destroy(self, cpu: &Cpu) {
        let _ = self.0.destroy(&cpu.0);
    }
}

// ---------------------------------------------------------------------------------------------
// Checks.

/// What the checkers found at a quiescent point.
#[derive(Clone, Copy, Debug, Default)]
pub struct Health {
    /// Free pages on the buddy lists.
    pub free: u64,
    /// Free pages on per-CPU lists.
    pub pcp: u64,
    /// Raw page-allocator pages in use.
    pub raw: u64,
    /// Pages with descriptors (folios, slabs, page tables, ...).
    pub described: u64,
    /// Reserved pages.
    pub reserved: u64,
    /// Present pages.
    pub present: u64,
    /// Slabs found by the descriptor check.
    pub slabs: u64,
    /// Folios found by the descriptor check.
    pub folios: u64,
}

/// Runs the allocator checker, the page census and the descriptor checker. Only at a
/// quiescent point (no CPU inside the core); the descriptors are read under `cpu`'s RCU.
pub fn check_all(cpu: &Cpu) -> Result<Health, MmError> {
    let m = mem();
    let rep = m.check(|_, _, _| {}).map_err(err)?;
    let c = m.census().map_err(err)?;
    let d = m.check_descriptors(&cpu.0).map_err(err)?;
    if rep.buddy_free_pages != c.free || rep.pcp_pages != c.pcp {
        return Err(MmError {
            oom: false,
            invalid_order: false,
            msg: FmtBuf::from_args(format_args!(
                "free lists hold {}+{} pages, the census counts {}+{}",
                rep.buddy_free_pages, rep.pcp_pages, c.free, c.pcp
            )),
        });
    }
    Ok(Health {
        free: c.free,
        pcp: c.pcp,
        raw: c.raw,
        described: c.described,
        reserved: c.reserved,
        present: c.present,
        slabs: d.slabs,
        folios: d.folios,
    })
}
