//! Layer 2, the page allocator: `PageAllocator` (crate-private) owns the memmap, the zones with
//! their buddy free lists ([`zone`]), the per-CPU lists (`pcp`), the counters of undescribed
//! pages (`isolate`, whose [`UndescribedStats`] and [`IsolateError`] are re-exported here) and
//! the fault injector, and serves allocations through per-CPU lists and zone free lists with
//! watermarks and migratetype fallback. [`pages`] holds the owned [`Pages`] handle and the
//! public allocate/free entry points, `guard` guarded allocations. Only the handle, the errors,
//! the statistics and the read-only [`zone::Zone`] are public: the machine
//! ([`crate::machine::PhysMem`]) is the API.
//!
//! Frees are checked against the page word before anything changes: a double free, a free of a
//! tail page, of the wrong order, of a reserved page or of a page of another kind returns a
//! precise [`FreeError`] and leaves the allocator untouched. The check is one word read and a
//! compare-and-swap that claims the free, so two racing raw frees of one block cannot both
//! win; the free of an owned [`Pages`] claims with a plain store (nothing else can free it).
//! With [`Config::debug_checks`] every tail word is verified too.
//!
//! Import rule: this layer imports only `base`, `memmap` and itself. It never names a layer
//! above it: what boot must reserve for them is passed in as a callback
//! (`PageAllocator::boot`'s `reserve`), and what they need from it are the crate methods
//! below (`alloc_with`, `check_and_claim`, `free_claimed`, `alloc_internal`, …). The fields are
//! private; [`crate::machine::PhysMem`] holds one `PageAllocator` and forwards the public API.
//!
//! [`Pages`]: pages::Pages

pub mod area;
mod error;
mod fast;
mod fast_buddy;
mod fast_tables;
pub(crate) mod guard;
pub(crate) mod isolate;
pub mod pages;
pub(crate) mod pcp;
pub(crate) mod percpu;
pub mod zone;

pub use error::{AllocError, BootFailure, FreeError};
pub use isolate::{IsolateError, UndescribedStats};

use core::fmt;

use crate::base::addr::{Pfn, AREA_ORDER, AREA_PAGES};
use crate::base::boot::{BootAllocator, BootError};
use crate::base::config::Config;
use crate::base::cpu::{Cpu, CpuSet, MAX_CPUS};
use crate::base::gfp::Gfp;
use crate::base::layout::{MemmapLayout, MemoryLayout, ZoneType, MAX_NODES, NR_ZONES};
use crate::base::page_access::BootArray;
use crate::base::page_access::PageAccess;
use crate::base::pageblock::{MigrateType, NR_MIGRATETYPES};
use crate::base::platform::Platform;
use crate::base::rcu::Rcu;
use crate::base::sync::{AtomicU32, AtomicU64, Ordering};
use crate::memmap::word::{PageKind, Subtype, Tag, Word};
use crate::memmap::{Memmap, MemmapError, RegionMap};
use area::{CpuAreas, AREA_MAX_ORDER, NO_CPU};
use pcp::Pcp;
use zone::{Buddy, Zone, MAX_ORDER_LIMIT};

pub(crate) const MAX_ZONE_SLOTS: usize = MAX_NODES * NR_ZONES;
// The fast paths (`fast.rs`) mask zone slots instead of checking their bound.
const _: () = assert!(MAX_ZONE_SLOTS.is_power_of_two());

/// Whether blocks of `order` are allocated and freed through the per-CPU lists (the lists hold
/// orders up to [`pcp::PCP_MAX_ORDER`]); larger blocks go straight to the buddy lists. Orders 0
/// and 1, by measurement (the mixed-order sequence, `examples/mixed_ops`, alternated, once the
/// order-1 buddy links had moved into words): serving order 0 alone 20.4-21.1 ns per step,
/// orders 0..=1 19.9-20.3, 0..=2 19.9-20.3, 0..=3 32-34. With order 3 on the lists too, a mix
/// of orders kept refilling one order's list a batch (63 >> order blocks) at a time while the
/// lists drain lowest order first, so every such block crossed the zone lock about twice (see
/// ARCHITECTURE.md, zones); the smallest set that gains is kept.
#[inline(always)]
fn pcp_serves(order: u32) -> bool {
    order <= 1
}

/// Rare-event counters (successes are counted per CPU and per zone, under their locks).
#[derive(Default)]
struct Counters {
    alloc_fail: AtomicU64,
    alloc_fail_quiet: AtomicU64,
    free_errors: AtomicU64,
}

/// Machine-wide counters of the undescribed kinds (pages now in each state, and events).
pub(crate) struct UndescCounters {
    pub(crate) hwpoison: AtomicU64,
    pub(crate) hwpoison_events: AtomicU64,
    pub(crate) hwpoison_delayed: AtomicU64,
    pub(crate) hwpoison_ignored: AtomicU64,
    pub(crate) offline: AtomicU64,
    pub(crate) guard: AtomicU64,
}

impl Default for UndescCounters {
    fn default() -> Self {
        UndescCounters {
            hwpoison: AtomicU64::new(0),
            hwpoison_events: AtomicU64::new(0),
            hwpoison_delayed: AtomicU64::new(0),
            hwpoison_ignored: AtomicU64::new(0),
            offline: AtomicU64::new(0),
            guard: AtomicU64::new(0),
        }
    }
}

/// Source of machine identities: every booted machine takes the next value, so a handle of
/// one machine is never accepted by another (two machines can hold blocks at the same pfn).
// Not a loom-modelled protocol: a plain counter, core's atomic even under loom.
static NEXT_MACHINE: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(1);

/// A fresh machine identity (never 0).
pub(crate) fn next_machine_id() -> u32 {
    loop {
        let id = NEXT_MACHINE.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        if id != 0 {
            return id;
        }
    }
}

/// How long a remote drain waits for a CPU's owner to serve its request (spin rounds, about a
/// millisecond) before reporting the CPU busy.
const DRAIN_SPINS: u32 = 1 << 14;

/// What a drain of per-CPU lists reached (see the per-CPU lists, `page_alloc::pcp`): a CPU whose
/// token nobody held was drained on a borrowed token; a claimed CPU's owner was asked and drained
/// at its next operation, unless it did not answer within a bounded wait (idle, or the caller
/// itself).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// CPUs whose owner did not answer in time (bit `i` = CPU `i`): their lists may still
    /// hold pages. The request stays posted; the owner drains at its next operation.
    pub busy: u64,
}

impl DrainReport {
    /// Whether every CPU asked was drained.
    #[inline]
    pub fn is_complete(&self) -> bool {
        self.busy == 0
    }
}

/// A snapshot of the allocator's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllocCounters {
    /// Successful allocations.
    pub alloc_ok: u64,
    /// Of `alloc_ok`, those served inside a CPU-local 2 MiB area ([`Config::cpu_areas`]).
    pub area_allocs: u64,
    /// Failed allocations that warn.
    pub alloc_fail: u64,
    /// Failed allocations with [`Gfp::NOWARN`].
    pub alloc_fail_quiet: u64,
    /// Successful frees.
    pub frees: u64,
    /// Refused frees.
    pub free_errors: u64,
}

/// The page allocator of one machine (layer 2): memmap, zones, per-CPU lists, counters.
/// Every field is private; the layers above use its crate methods.
pub(crate) struct PageAllocator<P: Platform> {
    platform: P,
    memmap: Memmap,
    zones: [Option<Zone>; MAX_ZONE_SLOTS],
    /// `nr_cpus × MAX_ZONE_SLOTS` per-CPU lists, CPU-major.
    pcp: BootArray<Pcp>,
    /// `nr_cpus × MAX_ZONE_SLOTS` CPU-local areas, CPU-major (empty unless
    /// [`Config::cpu_areas`]).
    areas: BootArray<CpuAreas>,
    /// The holder word of every area from `area_first` on (area.rs invariant 1).
    area_holder: BootArray<AtomicU32>,
    area_first: u64,
    /// Zones whose pages are all direct-mapped: those serve areas when [`Config::cpu_areas`].
    areas_ok: [bool; MAX_ZONE_SLOTS],
    /// The machine's RCU, which owns its CPU set (cpu.rs invariant 1).
    rcu: Rcu,
    config: Config,
    /// Identity carried by owned handles ([`pages::Pages`]).
    machine: u32,
    counters: Counters,
    boot_pages: u64,
    reserved_pages: u64,
    /// Poisoned, offline and guard page counters (hwpoison, offline, guard modules).
    undesc: UndescCounters,
    fault: crate::base::fault::FaultInjector,
    /// What the small-block fast paths precompute (`fast_tables`).
    fast: fast_tables::FastPath,
}

/// The claim step of a free (the end of [`PageAllocator::check_and_claim`]; the loom model drives
/// this function): checks that `word` heads an allocation of `order` whose undescribed subtype
/// `ok` accepts, then compare-exchanges it to a tail word, so of two racing frees of one block
/// exactly one wins and the other gets [`FreeError::DoubleFree`]. `in_free_block` tells a tail
/// inside a free block (a double free) from any other tail; `check_tails` runs the optional
/// tail verification before the claim. `owned`: the caller consumed the block's only owned
/// handle ([`pages::Pages`], which nothing else can free: its invariants 1 and 2), so no free
/// can race this one and the claim is a plain store; raw frees (`owned == false`) keep the
/// compare-and-swap.
#[inline]
pub(crate) fn claim_for_free(
    word: &crate::memmap::word::Page,
    pfn: Pfn,
    order: u32,
    owned: bool,
    ok: impl Fn(Subtype) -> bool,
    in_free_block: impl FnOnce() -> bool,
    check_tails: impl FnOnce() -> Result<(), FreeError>,
) -> Result<(), FreeError> {
    let w = word.load();
    match w.kind() {
        PageKind::Buddy(_) => return Err(FreeError::DoubleFree(pfn)),
        PageKind::Undescribed(u) if u.subtype == Subtype::Tail => {
            return Err(if in_free_block() { FreeError::DoubleFree(pfn) } else { FreeError::NotHead(pfn) });
        }
        PageKind::Undescribed(u) if ok(u.subtype) => {
            if u.order as u32 != order {
                return Err(FreeError::WrongOrder { pfn, given: order, allocated: u.order as u32 });
            }
        }
        PageKind::Undescribed(u) if u.subtype == Subtype::Internal => return Err(FreeError::Internal(pfn)),
        PageKind::Undescribed(u) => return Err(FreeError::NotAllocated(pfn, u.subtype)),
        PageKind::Invalid(raw) => return Err(FreeError::CorruptWord(pfn, raw)),
        _ => return Err(FreeError::WrongKind(pfn, w.tag().unwrap_or(Tag::Undescribed))),
    }
    check_tails()?;
    if owned {
        word.store(Word::TAIL);
        return Ok(());
    }
    // Claim: only one of two racing frees sees its compare-exchange succeed.
    if crate::base::sync::mutation::active(crate::base::sync::Mutation::FreeClaimNoCas) {
        // The broken claim the model must catch: check, then store.
        word.store(Word::TAIL);
        return Ok(());
    }
    word.compare_exchange(w, Word::TAIL).map_err(|_| FreeError::DoubleFree(pfn))?;
    Ok(())
}

/// Integer square root (for the watermark formula).
fn isqrt(n: u64) -> u64 {
    if n < 2 {
        return n;
    }
    let mut x = n;
    let mut y = x.div_ceil(2);
    while y < x {
        x = y;
        y = (x + n / x) / 2;
    }
    x
}

impl<P: Platform> PageAllocator<P> {
    /// Boots the page allocator: builds the memmap with the boot allocator, places the per-CPU
    /// lists, lets `reserve` take what the layers above need from the boot allocator (the
    /// slab layer's bootstrap caches), stamps reserved memory, and frees every other page into
    /// the buddy lists. Returns the allocator and what `reserve` made.
    pub(crate) fn boot<R>(
        platform: P,
        layout: &MemoryLayout,
        config: Config,
        reserve: impl FnOnce(&P, &mut BootAllocator) -> Result<R, BootFailure>,
    ) -> Result<(Self, R), BootFailure> {
        if config.max_order > MAX_ORDER_LIMIT || config.max_order < AREA_ORDER || config.nr_cpus > MAX_CPUS {
            return Err(BootFailure::BadConfig);
        }
        let mut boot = BootAllocator::new(layout)?;
        let memmap = Memmap::build(layout, &mut boot, &platform)?;
        let mut zones: [Option<Zone>; MAX_ZONE_SLOTS] = [const { None }; MAX_ZONE_SLOTS];
        for r in memmap.regions() {
            let z = zones[r.node as usize * NR_ZONES + r.zone as usize]
                .get_or_insert_with(|| Zone::new(r.node, r.zone, config.max_order));
            z.start = z.start.min(r.start);
            z.end = z.end.max(r.end);
            z.present += r.pages();
            z.pcp_ok &= r.mapped;
        }
        let nr_cpus = config.nr_cpus.max(1);
        let pcp_count = nr_cpus * MAX_ZONE_SLOTS;
        let pcp =
            BootArray::new(&mut boot, &platform, pcp_count, None, |_| Pcp::new(config.pcp_high, config.pcp_batch))
                .map_err(|e| match e {
                    BootError::NoDirectMap(pfn) => BootFailure::Memmap(MemmapError::NoDirectMap(pfn)),
                    e => BootFailure::Boot(e),
                })?;
        let mut areas_ok = [false; MAX_ZONE_SLOTS];
        for (i, z) in zones.iter().enumerate() {
            areas_ok[i] = config.cpu_areas && z.as_ref().is_some_and(|z| z.pcp_ok);
        }
        let (mut first, mut last) = (u64::MAX, 0);
        for r in memmap.regions() {
            first = first.min(r.start.0 >> AREA_ORDER);
            last = last.max((r.end.0.max(1) - 1) >> AREA_ORDER);
        }
        let use_areas = areas_ok.iter().any(|&ok| ok);
        let boot_err = |e| match e {
            BootError::NoDirectMap(pfn) => BootFailure::Memmap(MemmapError::NoDirectMap(pfn)),
            e => BootFailure::Boot(e),
        };
        let areas = BootArray::new(&mut boot, &platform, if use_areas { pcp_count } else { 0 }, None, |i| {
            CpuAreas::new(i / MAX_ZONE_SLOTS)
        })
        .map_err(boot_err)?;
        let n_areas = if use_areas && first <= last { (last - first + 1) as usize } else { 0 };
        let area_holder =
            BootArray::new(&mut boot, &platform, n_areas, None, |_| AtomicU32::new(NO_CPU)).map_err(boot_err)?;
        let above = reserve(&platform, &mut boot)?;
        let fast = fast_tables::FastPath::new(&zones, &areas_ok, &memmap);
        let mut pages = PageAllocator {
            platform,
            memmap,
            zones,
            pcp,
            areas,
            area_holder,
            area_first: first,
            areas_ok,
            rcu: Rcu::new(nr_cpus),
            config,
            machine: next_machine_id(),
            counters: Counters::default(),
            boot_pages: boot.allocated_pages(),
            reserved_pages: 0,
            undesc: UndescCounters::default(),
            fault: crate::base::fault::FaultInjector::new(),
            fast,
        };
        pages.populate(&boot);
        pages.set_watermarks();
        Ok((pages, above))
    }

    pub(crate) fn buddy(&self) -> Buddy<'_, P> {
        Buddy { p: &self.platform, mm: &self.memmap }
    }

    /// Stamps reserved pages and frees the rest of every region into the buddy lists.
    fn populate(&mut self, boot: &BootAllocator) {
        let reserved = boot.reserved();
        let mut reserved_pages = 0;
        for ri in 0..self.memmap.regions().count() {
            let rm = self.memmap.region_map(ri);
            let r = rm.region;
            let zone =
                self.zones[r.node as usize * NR_ZONES + r.zone as usize].as_ref().expect("zone created per region");
            let buddy = self.buddy();
            let mut fl = zone.lock.lock();
            let is_reserved = |pfn: Pfn| reserved.iter().any(|(s, e)| *s <= pfn && pfn < *e);
            // Pages of [start, start+n) that are reserved (ranges may overlap each other).
            let reserved_in = |start: Pfn, n: u64| -> u64 {
                let end = start.add(n);
                if !reserved.iter().any(|(s, e)| *s < end && start < *e) {
                    return 0;
                }
                (0..n).filter(|&i| is_reserved(start.add(i))).count() as u64
            };
            let reserved_word = |order| Buddy::<P>::undescribed(rm, Subtype::Reserved, order);
            let mut freed = 0u64;
            match r.layout {
                MemmapLayout::Flat => {
                    let mut pfn = r.start;
                    while pfn < r.end {
                        if is_reserved(pfn) {
                            rm.flat_word(pfn).store(reserved_word(0));
                            reserved_pages += 1;
                            pfn = pfn.add(1);
                            continue;
                        }
                        // The largest aligned block of unreserved pages starting here.
                        let mut order = pfn.0.trailing_zeros().min(self.config.max_order);
                        while order > 0 && (pfn.add(1 << order) > r.end || reserved_in(pfn, 1 << order) > 0) {
                            order -= 1;
                        }
                        buddy.free_block(&mut fl, pfn, order, MigrateType::Movable);
                        freed += 1 << order;
                        pfn = pfn.add(1 << order);
                    }
                }
                MemmapLayout::TwoLevel => {
                    let mut area = r.start;
                    while area < r.end {
                        let nres = reserved_in(area, AREA_PAGES);
                        if nres == AREA_PAGES {
                            rm.area_word(area).store(reserved_word(AREA_ORDER));
                            reserved_pages += AREA_PAGES;
                        } else if nres == 0 {
                            buddy.free_block(&mut fl, area, AREA_ORDER, MigrateType::Movable);
                            freed += AREA_PAGES;
                        } else {
                            // Partly reserved: split it, the table taking its first free page.
                            let table =
                                (0..AREA_PAGES).map(|i| area.add(i)).find(|&p| !is_reserved(p)).expect("nres < 512");
                            let memmap_word = Buddy::<P>::undescribed(rm, Subtype::Memmap, 0);
                            self.memmap.split_area(&self.platform, rm, area, table, 0, |i| {
                                let p = area.add(i as u64);
                                if p == table {
                                    memmap_word
                                } else if is_reserved(p) {
                                    reserved_word(0)
                                } else {
                                    Word::TAIL
                                }
                            });
                            reserved_pages += nres;
                            // The table page is managed memory the memmap now uses.
                            freed += 1;
                            for i in 0..AREA_PAGES {
                                let p = area.add(i);
                                if p != table && !is_reserved(p) {
                                    buddy.free_block(&mut fl, p, 0, MigrateType::Movable);
                                    freed += 1;
                                }
                            }
                        }
                        area = area.add(AREA_PAGES);
                    }
                }
            }
            zone.managed.fetch_add(freed, Ordering::Relaxed);
            zone.free_pages.store(fl.free_pages, Ordering::Relaxed);
        }
        self.reserved_pages = reserved_pages;
    }

    /// min/low/high like Linux: min_free_kbytes = sqrt(16 × managed KiB), shared by zones in
    /// proportion to their size; low and high add max(min/4, 0.1 % of the zone) each.
    fn set_watermarks(&self) {
        let total: u64 = self.zones().map(|z| z.managed_pages()).sum();
        let min_free_kb = isqrt(total * 4 * 16).clamp(128, 262_144);
        let min_pages_total = min_free_kb / 4;
        for z in self.zones() {
            let managed = z.managed_pages();
            let min = (min_pages_total * managed).checked_div(total).unwrap_or(0);
            let step = (min / 4).max(managed / 1000);
            z.wmark[0].store(min, Ordering::Relaxed);
            z.wmark[1].store(min + step, Ordering::Relaxed);
            z.wmark[2].store(min + 2 * step, Ordering::Relaxed);
        }
    }

    /// The platform.
    pub(crate) fn platform(&self) -> &P {
        &self.platform
    }
    /// The memmap.
    pub(crate) fn memmap(&self) -> &Memmap {
        &self.memmap
    }
    /// The CPUs; claim one to allocate. Every entry point taking a [`Cpu`] accepts only
    /// tokens of this set and panics on a token of another machine (cpu.rs invariant 3).
    pub(crate) fn cpus(&self) -> &CpuSet {
        self.rcu.cpus()
    }

    /// The id of `cpu` after checking that it is one of this machine's tokens (cpu.rs
    /// invariant 3a: one pointer compare, in every build).
    #[inline]
    #[track_caller]
    pub(crate) fn cpu_id(&self, cpu: &Cpu<'_>) -> usize {
        cpu.id_in(self.rcu.cpus())
    }
    /// The machine's RCU.
    pub(crate) fn rcu(&self) -> &Rcu {
        &self.rcu
    }
    /// The machine's fault injector (disabled at boot): see [`crate::base::fault`].
    pub(crate) fn fault(&self) -> &crate::base::fault::FaultInjector {
        &self.fault
    }
    /// The configuration.
    pub(crate) fn config(&self) -> &Config {
        &self.config
    }
    /// All zones, by node then zone type.
    pub(crate) fn zones(&self) -> impl Iterator<Item = &Zone> {
        self.zones.iter().flatten()
    }
    /// The zone in slot `slot` (node × zone type), if present.
    #[inline]
    pub(crate) fn zone_at(&self, slot: usize) -> Option<&Zone> {
        self.zones[slot].as_ref()
    }
    /// The counters of undescribed pages (poisoned, offline, guard).
    #[inline]
    #[cfg_attr(not(feature = "health"), allow(dead_code))] // read by the health layer
    pub(crate) fn undesc(&self) -> &UndescCounters {
        &self.undesc
    }
    /// Pages the boot allocator took (memmap, per-CPU areas).
    pub(crate) fn boot_pages(&self) -> u64 {
        self.boot_pages
    }
    /// Pages reserved at boot (firmware ranges and boot allocations).
    pub(crate) fn reserved_pages(&self) -> u64 {
        self.reserved_pages
    }

    /// Free pages in buddy lists plus per-CPU lists, all zones.
    pub(crate) fn nr_free_pages(&self) -> u64 {
        let buddy: u64 = self.zones().map(|z| z.free_pages()).sum();
        buddy + self.pcp_pages()
    }

    /// Allocation counters.
    pub(crate) fn counters(&self) -> AllocCounters {
        let c = &self.counters;
        let (mut alloc_ok, mut frees, mut area_allocs) = (0, 0, 0);
        for z in self.zones() {
            let fl = z.lock.lock();
            alloc_ok += fl.allocs;
            frees += fl.frees;
        }
        for cpu in 0..self.cpus().nr() {
            for slot in 0..MAX_ZONE_SLOTS {
                if self.zones[slot].is_some() {
                    let (a, f) = self.pcp_at(cpu, slot).counts();
                    alloc_ok += a;
                    frees += f;
                }
                if self.areas_ok[slot] {
                    let (a, f) = self.areas_at(cpu, slot).counts();
                    alloc_ok += a;
                    area_allocs += a;
                    frees += f;
                }
            }
        }
        AllocCounters {
            alloc_ok,
            area_allocs,
            alloc_fail: c.alloc_fail.load(Ordering::Relaxed),
            alloc_fail_quiet: c.alloc_fail_quiet.load(Ordering::Relaxed),
            frees,
            free_errors: c.free_errors.load(Ordering::Relaxed),
        }
    }

    /// The region map of a pfn inside an area (always in a region).
    #[inline]
    fn region_of(&self, pfn: Pfn) -> &RegionMap {
        self.memmap.region_map(self.memmap.region_index(pfn).expect("area pfn in a region"))
    }

    /// The page word of `pfn` inside a held area (a two-level area is split while held).
    #[inline]
    fn page_word_of<'a>(&'a self, rm: &'a RegionMap, pfn: Pfn) -> &'a crate::memmap::word::Page {
        self.memmap.page_word(&self.platform, rm, pfn).expect("a held area has page words")
    }

    #[inline]
    fn slot_of(rm: &RegionMap) -> usize {
        rm.region.node as usize * NR_ZONES + rm.region.zone as usize
    }

    /// Allocates and stamps the head word with `head(region)`; the crate's typed allocators
    /// (slab, folios, …) use this so the word is never seen half-made.
    #[inline(always)]
    pub(crate) fn alloc_with(
        &self,
        cpu: &Cpu<'_>,
        order: u32,
        gfp: Gfp,
        head: impl FnOnce(&RegionMap) -> Word,
    ) -> Result<Pfn, AllocError> {
        self.alloc_in_slot(cpu, order, gfp, |rm, _| head(rm))
    }

    /// [`PageAllocator::alloc_with`] with `head(region, slot)`, where `slot` is the slot of
    /// the region's zone (`slot_of`), which the fast path has at hand.
    #[inline(always)]
    pub(super) fn alloc_in_slot(
        &self,
        cpu: &Cpu<'_>,
        order: u32,
        gfp: Gfp,
        head: impl FnOnce(&RegionMap, usize) -> Word,
    ) -> Result<Pfn, AllocError> {
        let cpu_id = self.cpu_id(cpu);
        self.serve_requests(cpu);
        if order > self.config.max_order {
            return Err(AllocError::InvalidOrder(order));
        }
        if self.fault.should_fail(crate::base::fault::FaultSite::PageAlloc) {
            return Err(AllocError::Injected);
        }
        if let Some((pfn, rm, word, slot)) = self.alloc_fast(cpu_id, order, gfp) {
            return Ok(self.stamp_word(word, head(rm, slot), pfn, order, gfp));
        }
        if let Some((pfn, rm, slot)) = self.alloc_buddy_fast(order, gfp) {
            return Ok(self.stamp_new(rm, pfn, order, gfp, |rm| head(rm, slot)));
        }
        self.alloc_zones(cpu, order, gfp, |rm| head(rm, Self::slot_of(rm)))
    }

    /// The general allocation (after `alloc_with`'s checks, when its fast path does not
    /// apply): walks the zones with watermarks, refills per-CPU lists, drains them once if
    /// memory is short. Out of line, so the fast path stays small.
    #[inline(never)]
    fn alloc_zones(
        &self,
        cpu: &Cpu<'_>,
        order: u32,
        gfp: Gfp,
        head: impl FnOnce(&RegionMap) -> Word,
    ) -> Result<Pfn, AllocError> {
        let mt = gfp.migratetype();
        let highest = gfp.highest_zone();
        let mut drained = false;
        loop {
            for pass in 0..2 {
                for node in 0..MAX_NODES {
                    for zt in ZoneType::ALL.iter().rev().filter(|z| **z <= highest) {
                        let slot = node * NR_ZONES + *zt as usize;
                        let Some(zone) = &self.zones[slot] else { continue };
                        // Memory without a direct map only for allocations that never
                        // touch it through the direct map (Gfp::may_be_unmapped).
                        if !zone.pcp_ok && !gfp.may_be_unmapped() {
                            continue;
                        }
                        if !self.watermark_ok(zone, order, gfp, pass) {
                            continue;
                        }
                        if let Some(pfn) = self.rmqueue(cpu, zone, slot, order, mt) {
                            let rm = self
                                .memmap
                                .region_map(self.memmap.region_index(pfn).expect("allocated pfn in a region"));
                            return Ok(self.stamp_new(rm, pfn, order, gfp, head));
                        }
                    }
                }
            }
            if drained || self.pcp_pages() == 0 {
                break;
            }
            // Memory may be parked on per-CPU lists and areas: drain them all and try once more.
            self.drain_all_from(cpu);
            drained = true;
        }
        let c = if gfp.contains(Gfp::NOWARN) { &self.counters.alloc_fail_quiet } else { &self.counters.alloc_fail };
        c.fetch_add(1, Ordering::Relaxed);
        Err(AllocError::NoMemory { order })
    }

    /// The end of an allocation: stamps the new block's head word with `head(rm)` and zeroes
    /// it for [`Gfp::ZERO`].
    #[inline(always)]
    fn stamp_new(&self, rm: &RegionMap, pfn: Pfn, order: u32, gfp: Gfp, head: impl FnOnce(&RegionMap) -> Word) -> Pfn {
        let word = self.memmap.block_word(&self.platform, rm, pfn, order).expect("allocated block has a word");
        self.stamp_word(word, head(rm), pfn, order, gfp)
    }

    /// [`PageAllocator::stamp_new`] with the block's word (`Memmap::block_word`) at hand.
    #[inline(always)]
    fn stamp_word(&self, word: &crate::memmap::word::Page, head: Word, pfn: Pfn, order: u32, gfp: Gfp) -> Pfn {
        word.store(head);
        if gfp.contains(Gfp::ZERO) {
            self.zero(pfn, order);
        }
        pfn
    }

    #[inline]
    fn watermark_ok(&self, zone: &Zone, order: u32, gfp: Gfp, pass: u32) -> bool {
        let free = zone.free_pages.load(Ordering::Relaxed);
        let mut mark = zone.wmark[if pass == 0 { 1 } else { 0 }].load(Ordering::Relaxed);
        if pass == 1 && gfp.contains(Gfp::HIGH) {
            mark /= 2;
        }
        // Per-CPU pages are free too; allow an allocation a per-CPU list can serve.
        free >= mark + (1 << order) || (pcp_serves(order) && free >= mark && zone.pcp_ok)
    }

    fn rmqueue(&self, cpu: &Cpu<'_>, zone: &Zone, slot: usize, order: u32, mt: MigrateType) -> Option<Pfn> {
        let buddy = self.buddy();
        if order <= AREA_MAX_ORDER && mt.has_pcp() && self.areas_ok[slot] {
            if let Some(pfn) = self.area_alloc(cpu, zone, slot, order, mt) {
                return Some(pfn);
            }
        }
        if pcp_serves(order) && mt.has_pcp() && zone.pcp_ok {
            return self.pcp_alloc(cpu, zone, slot, order, mt);
        }
        let mut fl = zone.lock.lock();
        let r = buddy.rmqueue(&mut fl, order, mt);
        fl.allocs += r.is_some() as u64;
        zone.free_pages.store(fl.free_pages, Ordering::Relaxed);
        r
    }

    fn zero(&self, pfn: Pfn, order: u32) {
        for i in 0..1u64 << order {
            PageAccess::new_allocated(&self.platform, pfn.add(i)).expect("allocated memory is mappable").zero();
        }
    }

    pub(crate) fn count_free_error(&self) {
        self.counters.free_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// This machine's identity (unique among machines booted by this process): handles carry
    /// it so that one machine never frees another's memory.
    #[inline]
    pub(crate) fn machine_id(&self) -> u32 {
        self.machine
    }

    /// Verifies that `pfn` heads an allocation of `order` whose head word is an undescribed
    /// subtype accepted by `ok`, then claims it atomically (the head word becomes a tail word
    /// until the free completes).
    #[cfg_attr(not(feature = "slab"), allow(dead_code))] // the raw frees of slab and pools
    pub(crate) fn check_and_claim(
        &self,
        pfn: Pfn,
        order: u32,
        ok: impl Fn(Subtype) -> bool,
    ) -> Result<&RegionMap, FreeError> {
        self.check_and_claim_as(pfn, order, false, ok)
    }

    /// [`PageAllocator::check_and_claim`] for the holder of the block's only owned handle
    /// (`owned`): the same checks, the claim a plain store ([`claim_for_free`]).
    #[inline]
    pub(crate) fn check_and_claim_as(
        &self,
        pfn: Pfn,
        order: u32,
        owned: bool,
        ok: impl Fn(Subtype) -> bool,
    ) -> Result<&RegionMap, FreeError> {
        let rm = self.memmap.region_index(pfn).map(|i| self.memmap.region_map(i)).ok_or(FreeError::OutOfRange(pfn))?;
        if order > self.config.max_order || !pfn.is_aligned(order) || pfn.add(1 << order) > rm.region.end {
            return Err(FreeError::Misaligned { pfn, order });
        }
        let word = match self.memmap.block_word(&self.platform, rm, pfn, order) {
            Some(w) => w,
            None => {
                // A small block inside an unsplit area: the area is one thing, so this pfn
                // can at most be inside an allocation of order >= 9.
                let v = rm.area_word(pfn).load();
                return Err(match v.kind() {
                    PageKind::Buddy(_) => FreeError::DoubleFree(pfn),
                    // The area merged into a larger free block whose head is below it.
                    PageKind::Undescribed(u) if u.subtype == Subtype::Tail => {
                        if self.free_block_containing(rm, pfn).is_some() {
                            FreeError::DoubleFree(pfn)
                        } else {
                            FreeError::NotHead(pfn)
                        }
                    }
                    PageKind::Undescribed(u) if ok(u.subtype) && pfn.is_aligned(AREA_ORDER) => {
                        FreeError::WrongOrder { pfn, given: order, allocated: u.order as u32 }
                    }
                    PageKind::Undescribed(u) if ok(u.subtype) => FreeError::NotHead(pfn),
                    PageKind::Undescribed(u) if u.subtype == Subtype::Internal => FreeError::Internal(pfn),
                    PageKind::Undescribed(u) => FreeError::NotAllocated(pfn, u.subtype),
                    PageKind::Invalid(raw) => FreeError::CorruptWord(pfn, raw),
                    _ => FreeError::WrongKind(pfn, v.tag().unwrap_or(Tag::Undescribed)),
                });
            }
        };
        claim_for_free(
            word,
            pfn,
            order,
            owned,
            ok,
            || self.free_block_containing(rm, pfn).is_some(),
            || if self.config.debug_checks { self.check_tails(rm, pfn, order) } else { Ok(()) },
        )?;
        Ok(rm)
    }

    /// The free block (head, order) that contains `pfn`, if any: looks at every aligned
    /// candidate head below it, as a pfn walker must since tails do not name their head.
    pub(crate) fn free_block_containing_pfn(&self, pfn: Pfn) -> Option<(Pfn, u32)> {
        let rm = self.memmap.region_map(self.memmap.region_index(pfn)?);
        self.free_block_containing(rm, pfn)
    }

    fn free_block_containing(&self, rm: &RegionMap, pfn: Pfn) -> Option<(Pfn, u32)> {
        (0..=self.config.max_order).find_map(|o| {
            let head = pfn.align_down(o);
            if head < rm.region.start {
                return None;
            }
            let b = self.memmap.block_word(&self.platform, rm, head, o)?.load().buddy_info()?;
            (b.order as u32 >= o && head.add(1 << b.order) > pfn).then_some((head, b.order as u32))
        })
    }

    fn check_tails(&self, rm: &RegionMap, pfn: Pfn, order: u32) -> Result<(), FreeError> {
        let two_level_big = rm.region.layout == MemmapLayout::TwoLevel && order >= AREA_ORDER;
        let step = if two_level_big { AREA_PAGES } else { 1 };
        let mut p = pfn.add(step);
        while p < pfn.add(1 << order) {
            let w = if two_level_big { Some(rm.area_word(p)) } else { self.memmap.page_word(&self.platform, rm, p) };
            if !w.is_some_and(|w| w.load().is_tail()) {
                return Err(FreeError::CorruptTail(p));
            }
            p = p.add(step);
        }
        Ok(())
    }

    /// Frees a block whose head word was claimed by [`PageAllocator::check_and_claim`] (or whose
    /// owner reset every word to tail): through the per-CPU list or straight to the buddy.
    pub(crate) fn free_claimed(&self, cpu: &Cpu<'_>, rm: &RegionMap, pfn: Pfn, order: u32) {
        let cpu_id = self.cpu_id(cpu);
        let slot = Self::slot_of(rm);
        let zone = self.zones[slot].as_ref().expect("zone of a region exists");
        let mt = MigrateType::from_bits(rm.pageblock(pfn).load(Ordering::Relaxed)).unwrap_or(MigrateType::Movable);
        // Whatever its pageblock's type is now (isolated, stolen), a block of a held area
        // goes back to that area.
        if order <= AREA_MAX_ORDER && self.areas_ok[slot] {
            self.serve_requests(cpu);
            if self.area_free(cpu, cpu_id, zone, slot, pfn, order, mt) {
                return;
            }
        }
        if pcp_serves(order) && mt.has_pcp() && zone.pcp_ok {
            self.serve_requests(cpu);
            self.memmap
                .block_word(&self.platform, rm, pfn, order)
                .expect("block word")
                .store(Buddy::<P>::buddy_word(rm, order, mt, true));
            self.pcp_free(cpu, cpu_id, zone, slot, pfn, order, mt);
            return;
        }
        let mut fl = zone.lock.lock();
        self.buddy().free_block_in(&mut fl, rm, pfn, order, mt);
        fl.frees += 1;
        zone.free_pages.store(fl.free_pages, Ordering::Relaxed);
    }

    /// Free blocks per order and migratetype of one zone (buddy lists only).
    pub(crate) fn free_blocks(&self, zone: &Zone) -> [[u64; NR_MIGRATETYPES]; MAX_ORDER_LIMIT as usize + 1] {
        let fl = zone.lock.lock();
        core::array::from_fn(|o| fl.areas[o].nr)
    }

    /// Writes the free-block table in the format of Linux's /proc/buddyinfo.
    pub(crate) fn write_buddyinfo(&self, out: &mut impl fmt::Write) -> fmt::Result {
        for z in self.zones() {
            write!(out, "Node {}, zone {:>8}", z.node, z.ztype.name())?;
            let blocks = self.free_blocks(z);
            for per_mt in blocks.iter().take(self.config.max_order as usize + 1) {
                write!(out, " {:>6}", per_mt.iter().sum::<u64>())?;
            }
            writeln!(out)?;
        }
        Ok(())
    }

    /// Writes the per-migratetype table in the format of Linux's /proc/pagetypeinfo.
    pub(crate) fn write_pagetypeinfo(&self, out: &mut impl fmt::Write) -> fmt::Result {
        writeln!(out, "Page block order: {AREA_ORDER}")?;
        writeln!(out, "Pages per block:  {AREA_PAGES}")?;
        writeln!(out)?;
        write!(out, "{:<44}", "Free pages count per migrate type at order")?;
        for o in 0..=self.config.max_order {
            write!(out, " {o:>6}")?;
        }
        writeln!(out)?;
        for z in self.zones() {
            let blocks = self.free_blocks(z);
            for mt in MigrateType::ALL {
                write!(out, "Node {:>4}, zone {:>8}, type {:>12}", z.node, z.ztype.name(), mt.name())?;
                for per_mt in blocks.iter().take(self.config.max_order as usize + 1) {
                    write!(out, " {:>6}", per_mt[mt as usize])?;
                }
                writeln!(out)?;
            }
        }
        Ok(())
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::base::sync::{mutation, Mutation};
    use crate::memmap::word::{Page, Undescribed};
    use crate::page_alloc::pcp::loom_tests::VecZone;
    use crate::page_alloc::pcp::PcpZone;
    use loom::sync::atomic::AtomicU32;
    use loom::sync::Arc;

    const PFN: u64 = 5;

    fn allocated() -> Word {
        Word::undescribed(Undescribed { subtype: Subtype::Unmappable, order: 0, node: 0, zone: 0 }).unwrap()
    }

    /// Two CPUs free the same page (the real claim, [`claim_for_free`], then the block goes to
    /// a stand-in zone as `free_claimed` does for a non-PCP block) while a third allocates from
    /// the zone and stamps the head word as `alloc_with` does. The page is never in the free
    /// list twice, and frees succeed at most once per allocation.
    fn two_frees_and_an_alloc_race_on_a_word() {
        loom::model(|| {
            let word = Arc::new(Page::new(allocated()));
            let zone = Arc::new(VecZone::new(&[]));
            let (frees, allocs) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
            let free = {
                let (word, zone, frees) = (word.clone(), zone.clone(), frees.clone());
                move || {
                    let ok = |u| u == Subtype::Unmappable;
                    if claim_for_free(&word, Pfn(PFN), 0, false, ok, || false, || Ok(())).is_ok() {
                        frees.fetch_add(1, Ordering::Relaxed);
                        let mut z = zone.lock();
                        word.store(Word::TAIL); // stand-in for the buddy word free_block writes
                        zone.give(&mut z, PFN, 0, 0);
                    }
                }
            };
            let f1 = loom::thread::spawn(free.clone());
            let f2 = loom::thread::spawn(free);
            // A third CPU allocates the page if it is free, as the page allocator would.
            let got = {
                let mut z = zone.lock();
                zone.take(&mut z, 0, 0)
            };
            if got.is_some() {
                allocs.fetch_add(1, Ordering::Relaxed);
                word.store(allocated());
            }
            f1.join().unwrap();
            f2.join().unwrap();
            let (frees, allocs) = (frees.load(Ordering::Relaxed), allocs.load(Ordering::Relaxed));
            assert!(frees <= 1 + allocs, "page freed {frees} times for {allocs} reallocations");
        });
    }

    #[test]
    fn loom_free_claim_two_frees_and_an_alloc() {
        two_frees_and_an_alloc_race_on_a_word();
    }

    /// The same model with the claim done as check-then-store must fail.
    #[test]
    #[should_panic(expected = "page")]
    fn loom_free_claim_fails_without_compare_exchange() {
        mutation::with(Mutation::FreeClaimNoCas, two_frees_and_an_alloc_race_on_a_word);
    }
}
