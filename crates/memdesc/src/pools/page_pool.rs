//! page_pool: a network driver's page recycler, with a [`Netmem`] descriptor per page.
//!
//! A [`PagePool`] hands out blocks of `2^order` pages for receive buffers. Each block gets a
//! [`Netmem`] descriptor (pfn and order in the flags word, the owning pool, a simulated DMA
//! address assigned once when the block is first taken from the page allocator, and
//! `pp_ref_count`) and every page word of the block is tagged [`Tag::NetPool`].
//!
//! - **Recycling.** When `pp_ref_count` drops to zero the block goes to the pool's bounded
//!   ring (FIFO, capacity chosen at creation) and the next allocation takes it from there
//!   (the fast path) before asking the page allocator (the slow path); a full ring sends the
//!   block back to the page allocator. The DMA address is kept across recycling: that is the
//!   point of a page pool (no re-mapping).
//! - **Fragments.** [`PagePool::alloc_frag`] carves the pool's current block into fragments;
//!   `pp_ref_count` counts them plus one hold by the pool while it is still carving, so the
//!   block recycles when the pool has moved on and the last fragment is put.
//! - **Puts** ([`pp_put`], [`pp_put_frag`], [`PhysMem::pp_put_pfn`](crate::PhysMem::pp_put_pfn)) need only the machine, not the pool
//!   handle: the descriptor names the pool, as Linux's `page->pp` does, so pages may outlive the
//!   driver's handle.
//! - **User mappings.** A handed-out block's page may be mapped into a user address space by
//!   pfn ([`crate::pgtable::MmRef::map_pfn`], which decides by
//!   [`crate::pgtable::mappability`]); each entry holds one refcount and one mapcount at the
//!   offsets every mappable kind shares. That refcount is 1 while the block is handed out and
//!   0 while it waits in the ring, so a ring block cannot be mapped, and the last put of a
//!   mapped block is refused with [`PoolError::Mapped`] (the block would otherwise recycle
//!   under a live mapping).
//! - **Destroy.** Linux's `page_pool_destroy` empties the ring and, if pages are still in flight
//!   (in socket buffers somewhere in the stack), defers: a retry worker keeps releasing until
//!   the in-flight count is zero (warning periodically), and pages returned meanwhile go back to
//!   the page allocator instead of the ring. Here [`PagePool::destroy`] does the same without a
//!   worker: it releases the ring and the pool's fragment hold at once, marks the pool dying,
//!   and the put that returns the last in-flight block releases it and frees the pool's state
//!   ([`Destroyed::Deferred`]). [`PagePool::try_destroy`] instead refuses while anything is in
//!   flight and gives the pool back unchanged.
//!
//! State (ring array, counters, the pool record itself) lives in kmalloc memory of the machine,
//! so the pool pointer in every descriptor stays valid after the handle is dropped or moved.
//! The ring and the fragment state are each under a spin lock (Linux's `ptr_ring` also locks
//! its producer and consumer sides); counters are atomics.

use core::marker::PhantomData;
use core::ptr::NonNull;

use crate::addr::{Pfn, PAGE_SIZE};
use crate::cpu::Cpu;
use crate::desc::{pool_desc_held, pool_state_held, DescPtr, Netmem};
use crate::gfp::Gfp;
use crate::page_alloc::AllocError;
use crate::platform::Platform;
use crate::pools::{PoolHost, Pools};
use crate::slab::KArray;
use crate::sync::{AtomicBool, AtomicU64, Ordering, SpinLock};
use crate::word::{PageKind, Tag, Word};

/// Largest recycling ring.
pub const MAX_RING: usize = 4096;
/// Fragments are aligned to this many bytes (a cache line).
pub const FRAG_ALIGN: usize = 64;

/// How to build a pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolParams {
    /// Order of each block (0: single pages).
    pub order: u32,
    /// Capacity of the recycling ring (1..=[`MAX_RING`]).
    pub ring_size: usize,
    /// Offset the simulated IOMMU adds to a physical address to make the DMA address.
    pub dma_offset: u64,
    /// Flags for the page allocator.
    pub gfp: Gfp,
}

impl Default for PoolParams {
    fn default() -> Self {
        PoolParams { order: 0, ring_size: 256, dma_offset: 0, gfp: Gfp::KERNEL }
    }
}

/// Why a pool operation was refused. Nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolError {
    /// Bad parameters (order above the machine's max, ring size 0 or above [`MAX_RING`]).
    BadParams,
    /// The page allocator or kmalloc failed.
    NoMemory(AllocError),
    /// A fragment of zero bytes or larger than a block.
    BadFragSize(usize),
    /// The page is not a page-pool page (its word has this tag, or is undescribed).
    NotNetmem(Pfn, Option<Tag>),
    /// The netmem belongs to another machine's pool.
    WrongMachine,
    /// A put of a block whose `pp_ref_count` is already zero (a double put).
    NoReference(Pfn),
    /// Blocks are still in flight; the pool was not destroyed.
    InFlight(u64),
    /// The last `pp_ref_count` of this block would go while page-table entries map it: unmap
    /// first (the reference is still held; put it again, e.g. with [`PhysMem::pp_put_pfn`](crate::PhysMem::pp_put_pfn)).
    Mapped(Pfn, u32),
}

impl core::fmt::Display for PoolError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PoolError::BadParams => write!(f, "bad page_pool parameters"),
            PoolError::NoMemory(e) => write!(f, "page_pool: {e}"),
            PoolError::BadFragSize(s) => write!(f, "fragment of {s} bytes does not fit a block"),
            PoolError::NotNetmem(p, t) => write!(f, "pfn {p} is not a page_pool page (kind {t:?})"),
            PoolError::WrongMachine => write!(f, "the netmem belongs to another machine"),
            PoolError::NoReference(p) => write!(f, "put of pfn {p} with pp_ref_count 0"),
            PoolError::InFlight(n) => write!(f, "{n} blocks still in flight"),
            PoolError::Mapped(p, n) => write!(f, "pfn {p} is still mapped by {n} page-table entries"),
        }
    }
}

impl core::error::Error for PoolError {}

/// Counters of a pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Blocks handed out from the recycling ring.
    pub alloc_fast: u64,
    /// Blocks taken from the page allocator.
    pub alloc_slow: u64,
    /// Blocks returned to the ring.
    pub recycled: u64,
    /// Blocks returned to the page allocator (ring full, or the pool dying).
    pub released: u64,
    /// Fragments handed out.
    pub frags: u64,
    /// Blocks in the ring now.
    pub ring: u64,
    /// Blocks with a non-zero `pp_ref_count` now (users' and the pool's fragment hold).
    pub live: u64,
}

/// A block handed out by a pool: one reference (`pp_ref_count` 1). Put it with [`pp_put`],
/// which consumes it. Not `Clone`: one handle, one reference. Dropping it leaks the reference
/// (the block is never recycled), never puts someone else's.
#[must_use = "dropping a NetmemRef leaks its reference; put it with pp_put"]
pub struct NetmemRef<'m> {
    desc: DescPtr<Netmem>,
    _m: PhantomData<&'m Netmem>,
}

impl core::fmt::Debug for NetmemRef<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "NetmemRef(pfn {}, order {})", self.pfn(), self.netmem().flags.order())
    }
}

impl core::fmt::Debug for Frag<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Frag(pfn {}, {}+{})", self.netmem().flags.pfn(), self.offset, self.len)
    }
}

impl NetmemRef<'_> {
    /// A handle for one reference the caller holds on the block `desc` names.
    fn new(desc: DescPtr<Netmem>) -> Self {
        NetmemRef { desc, _m: PhantomData }
    }
    /// The descriptor (kept alive by the reference this handle holds: pool item P5 of
    /// `desc.rs`).
    pub fn netmem(&self) -> &Netmem {
        pool_desc_held(self.desc, self)
    }
    /// First pfn of the block.
    pub fn pfn(&self) -> Pfn {
        self.netmem().flags.pfn()
    }
    /// Simulated DMA address of the block.
    pub fn dma_addr(&self) -> u64 {
        self.netmem().dma_addr()
    }
    /// Gives up the handle for the block's first pfn; the reference stays held, to be put
    /// with [`PhysMem::pp_put_pfn`](crate::PhysMem::pp_put_pfn).
    pub fn into_raw(self) -> Pfn {
        self.pfn()
    }
}

/// A fragment of a block: `len` bytes at `offset`, holding one `pp_ref_count`. Put it with
/// [`pp_put_frag`], which consumes it; dropping it leaks its reference.
#[must_use = "dropping a Frag leaks its reference; put it with pp_put_frag"]
pub struct Frag<'m> {
    desc: DescPtr<Netmem>,
    offset: usize,
    len: usize,
    _m: PhantomData<&'m Netmem>,
}

impl Frag<'_> {
    /// The block's descriptor (kept alive by the fragment's reference: pool item P5 of
    /// `desc.rs`).
    pub fn netmem(&self) -> &Netmem {
        pool_desc_held(self.desc, self)
    }
    /// Byte offset in the block.
    pub fn offset(&self) -> usize {
        self.offset
    }
    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Never true (fragments are at least one byte).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Physical address of the fragment.
    pub fn phys(&self) -> u64 {
        self.netmem().flags.pfn().phys() + self.offset as u64
    }
    /// Simulated DMA address of the fragment.
    pub fn dma_addr(&self) -> u64 {
        self.netmem().dma_addr() + self.offset as u64
    }
    /// Gives up the handle for the block's first pfn; the fragment's reference stays held, to
    /// be put with [`PhysMem::pp_put_pfn`](crate::PhysMem::pp_put_pfn).
    pub fn into_raw(self) -> Pfn {
        self.netmem().flags.pfn()
    }
}

struct Ring<'m> {
    /// `cap` slots of descriptors (`None` once the core is being freed).
    slots: Option<KArray<'m, Option<DescPtr<Netmem>>>>,
    cap: usize,
    head: usize,
    len: usize,
    dying: bool,
}

impl Ring<'_> {
    fn slot(&self, i: usize) -> DescPtr<Netmem> {
        self.slots.as_ref().and_then(|s| s.get(i)).flatten().expect("a filled slot of a live ring")
    }
    fn set_slot(&mut self, i: usize, d: DescPtr<Netmem>) {
        let r = self.slots.as_mut().map(|s| s.set(i, Some(d)));
        debug_assert!(r.is_some_and(|r| r.is_ok()), "slot {i} of a live ring");
    }
}

struct FragState {
    /// The block being carved (the pool holds one pp_ref_count on it).
    desc: Option<DescPtr<Netmem>>,
    offset: usize,
}

/// A pool's shared state, in kmalloc memory (its address is what descriptors name).
struct PoolCore<'m> {
    mem: usize,
    order: u32,
    dma_offset: u64,
    gfp: Gfp,
    ring: SpinLock<Ring<'m>>,
    frag: SpinLock<FragState>,
    /// 1 for the handle plus one per live block; whoever drops it to zero frees the core.
    refs: AtomicU64,
    dying: AtomicBool,
    alloc_fast: AtomicU64,
    alloc_slow: AtomicU64,
    recycled: AtomicU64,
    released: AtomicU64,
    frags: AtomicU64,
}

/// How [`PagePool::destroy`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destroyed {
    /// Every block was back: all memory is released.
    Now,
    /// This many blocks are still in flight; each is released when put, and the last put frees
    /// the pool's state.
    Deferred(u64),
}

/// A page pool of one machine. End it with [`PagePool::destroy`] or [`PagePool::try_destroy`]:
/// a pool that is simply dropped keeps its state and ring blocks (a leak, as forgetting
/// `page_pool_destroy` is in Linux).
pub struct PagePool<'m, P: Platform> {
    mem: Pools<'m, P>,
    core: &'m PoolCore<'m>,
}

impl<'m, P: Platform> PagePool<'m, P> {
    /// Creates a pool; its state and ring are allocated with kmalloc.
    pub fn new(mem: &'m impl PoolHost<P>, cpu: &Cpu<'_>, params: PoolParams) -> Result<Self, PoolError> {
        let mem = mem.pools();
        if params.order > mem.config().max_order || params.ring_size == 0 || params.ring_size > MAX_RING {
            return Err(PoolError::BadParams);
        }
        let value = PoolCore {
            mem: mem.machine_addr(),
            order: params.order,
            dma_offset: params.dma_offset,
            gfp: params.gfp,
            ring: SpinLock::new(Ring { slots: None, cap: params.ring_size, head: 0, len: 0, dying: false }),
            frag: SpinLock::new(FragState { desc: None, offset: 0 }),
            refs: AtomicU64::new(1),
            dying: AtomicBool::new(false),
            alloc_fast: AtomicU64::new(0),
            alloc_slow: AtomicU64::new(0),
            recycled: AtomicU64::new(0),
            released: AtomicU64::new(0),
            frags: AtomicU64::new(0),
        };
        // The core is shared by the handle and every live block; the last of them frees it by
        // address (`drop_core_ref`).
        let core: &'m PoolCore<'m> = mem.slabs().kobj(cpu, value).map_err(PoolError::NoMemory)?.leak();
        match mem.slabs().karray(cpu, params.ring_size, None) {
            Ok(slots) => core.ring.lock().slots = Some(slots),
            Err(e) => {
                let r = mem.slabs().kfree_owned(cpu, NonNull::from(core).cast());
                debug_assert!(r.is_ok(), "{r:?}");
                return Err(PoolError::NoMemory(e));
            }
        }
        Ok(PagePool { mem, core })
    }

    /// Block order.
    pub fn order(&self) -> u32 {
        self.core.order
    }

    /// Bytes per block.
    pub fn block_size(&self) -> usize {
        PAGE_SIZE << self.core.order
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> PoolStats {
        stats_of(self.core)
    }

    /// Allocates a block with one reference: from the ring if it has one (fast), else from the
    /// page allocator (slow).
    pub fn alloc(&self, cpu: &Cpu<'_>) -> Result<NetmemRef<'m>, PoolError> {
        let n = NetmemRef::new(self.take(cpu)?);
        n.netmem().pp_ref_count.store(1, Ordering::Release);
        Ok(n)
    }

    /// A block with `pp_ref_count` 0, live-counted; the caller sets the count (and holds the
    /// block until then).
    fn take(&self, cpu: &Cpu<'_>) -> Result<DescPtr<Netmem>, PoolError> {
        let c = self.core;
        {
            let mut r = c.ring.lock();
            if r.len > 0 {
                let p = r.slot(r.head);
                r.head = (r.head + 1) % r.cap;
                r.len -= 1;
                c.refs.fetch_add(1, Ordering::AcqRel);
                c.alloc_fast.fetch_add(1, Ordering::Relaxed);
                // The ring held the block (pool item P5 of `desc.rs`), under its lock.
                pool_desc_held(p, &*r).counts.refcount.store(1, Ordering::Release);
                return Ok(p);
            }
        }
        let mem = self.mem;
        let pfn = mem.pages().alloc_internal(cpu, c.order, c.gfp).map_err(PoolError::NoMemory)?;
        let d = match mem.slabs().alloc_desc::<Netmem>(cpu) {
            Ok(d) => d,
            Err(e) => {
                let r = mem.pages().free_internal(cpu, pfn, c.order);
                debug_assert!(r.is_ok(), "{r:?}");
                return Err(PoolError::NoMemory(e));
            }
        };
        d.flags.init(0, c.order, pfn);
        d.counts.mapcount.store(0, Ordering::Relaxed);
        d.pool.store(c as *const PoolCore<'m> as usize, Ordering::Relaxed);
        d.dma_addr.store(pfn.phys().wrapping_add(c.dma_offset), Ordering::Relaxed);
        d.pp_ref_count.store(0, Ordering::Relaxed);
        d.counts.refcount.store(1, Ordering::Release);
        mem.pages().stamp_block(pfn, c.order, Word::desc(DescPtr::from_ref(d)));
        c.refs.fetch_add(1, Ordering::AcqRel);
        c.alloc_slow.fetch_add(1, Ordering::Relaxed);
        Ok(DescPtr::from_ref(d))
    }

    /// Allocates `size` bytes (rounded up to [`FRAG_ALIGN`]) from the current block, starting a
    /// new block when it does not fit.
    pub fn alloc_frag(&self, cpu: &Cpu<'_>, size: usize) -> Result<Frag<'m>, PoolError> {
        if size == 0 || size > self.block_size() {
            return Err(PoolError::BadFragSize(size));
        }
        let len = size.next_multiple_of(FRAG_ALIGN).min(self.block_size());
        let c = self.core;
        let mut fs = c.frag.lock();
        if let Some(p) = fs.desc.filter(|_| fs.offset + len <= self.block_size()) {
            // The pool holds a pp_ref_count on the current block (pool item P5 of `desc.rs`).
            pool_desc_held(p, &*fs).pp_ref_count.fetch_add(1, Ordering::AcqRel);
            let offset = fs.offset;
            fs.offset += len;
            c.frags.fetch_add(1, Ordering::Relaxed);
            return Ok(Frag { desc: p, offset, len, _m: PhantomData });
        }
        let new = self.take(cpu)?;
        let old = fs.desc.replace(new);
        // The pool's hold plus this fragment.
        pool_desc_held(new, &*fs).pp_ref_count.store(2, Ordering::Release);
        fs.offset = len;
        drop(fs);
        c.frags.fetch_add(1, Ordering::Relaxed);
        if let Some(old) = old {
            // The pool's hold on the old block, now this call's to put.
            pp_put(&self.mem, cpu, NetmemRef::new(old)).expect("the pool holds a reference");
        }
        Ok(Frag { desc: new, offset: 0, len, _m: PhantomData })
    }

    /// Blocks still in flight, not counting a current fragment block only the pool holds.
    fn in_flight(&self) -> u64 {
        let c = self.core;
        let fs = c.frag.lock();
        let live = c.refs.load(Ordering::Acquire) - 1;
        // The pool's hold keeps the current block live (pool item P5 of `desc.rs`).
        let idle_frag = fs.desc.is_some_and(|p| pool_desc_held(p, &*fs).pp_ref_count() == 1);
        live - idle_frag as u64
    }

    /// Destroys the pool if no block is in flight; otherwise refuses and gives the pool back.
    #[allow(clippy::result_large_err)]
    pub fn try_destroy(self, cpu: &Cpu<'_>) -> Result<(), (Self, PoolError)> {
        match self.in_flight() {
            0 => {
                let r = self.destroy(cpu);
                debug_assert_eq!(r, Destroyed::Now);
                Ok(())
            }
            n => Err((self, PoolError::InFlight(n))),
        }
    }

    /// Destroys the pool: releases every block in the ring and the pool's fragment hold, and
    /// defers the rest to the puts of the blocks still in flight (see the module docs).
    pub fn destroy(self, cpu: &Cpu<'_>) -> Destroyed {
        let (mem, c) = (self.mem, self.core);
        c.dying.store(true, Ordering::Release);
        {
            // Blocks are released under the ring lock: releasing takes only slab and page
            // allocator locks, never a pool's.
            let mut r = c.ring.lock();
            r.dying = true;
            while r.len > 0 {
                let p = r.slot(r.head);
                r.head = (r.head + 1) % r.cap;
                r.len -= 1;
                // Ring blocks are live pool blocks (pool item P5 of `desc.rs`).
                release_block(mem, cpu, c, pool_desc_held(p, &*r));
            }
        }
        let frag = c.frag.lock().desc.take();
        if let Some(p) = frag {
            // The pool's hold, now this call's to put.
            pp_put(&mem, cpu, NetmemRef::new(p)).expect("the pool holds a reference");
        }
        let left = c.refs.load(Ordering::Acquire) - 1;
        drop_core_ref(mem, cpu, c);
        if left == 0 {
            Destroyed::Now
        } else {
            Destroyed::Deferred(left)
        }
    }
}

fn stats_of(c: &PoolCore<'_>) -> PoolStats {
    PoolStats {
        alloc_fast: c.alloc_fast.load(Ordering::Relaxed),
        alloc_slow: c.alloc_slow.load(Ordering::Relaxed),
        recycled: c.recycled.load(Ordering::Relaxed),
        released: c.released.load(Ordering::Relaxed),
        frags: c.frags.load(Ordering::Relaxed),
        ring: c.ring.lock().len as u64,
        live: c.refs.load(Ordering::Relaxed).saturating_sub(1),
    }
}

/// Puts a block's reference; the last one recycles it.
pub fn pp_put<P: Platform>(mem: &impl PoolHost<P>, cpu: &Cpu<'_>, n: NetmemRef<'_>) -> Result<(), PoolError> {
    put_desc(mem.pools(), cpu, n.netmem())
}

/// Puts a fragment; the block recycles when its last fragment is put and the pool has moved on.
pub fn pp_put_frag<P: Platform>(mem: &impl PoolHost<P>, cpu: &Cpu<'_>, f: Frag<'_>) -> Result<(), PoolError> {
    put_desc(mem.pools(), cpu, f.netmem())
}

/// Puts one reference of the block holding `pfn`, found from the page word, for a caller that
/// holds that reference and gives it up (the checked body of the raw
/// [`PhysMem::pp_put_pfn`](crate::PhysMem::pp_put_pfn), in `machine/raw.rs`). Refused precisely for a page that is not a
/// pool page or whose `pp_ref_count` is already zero.
pub(crate) fn pp_put_pfn_owned<P: Platform>(mem: &impl PoolHost<P>, cpu: &Cpu<'_>, pfn: Pfn) -> Result<(), PoolError> {
    let mem = mem.pools();
    let rg = mem.rcu().read_lock(cpu);
    let v = mem.memmap().load(mem.platform(), pfn).ok_or(PoolError::NotNetmem(pfn, None))?;
    match v.word.kind() {
        // The caller's reference keeps the netmem a live pool block; the read section keeps
        // the descriptor memory a netmem in any case.
        PageKind::NetPool(d) => put_desc(mem, cpu, d.get(&rg)),
        _ => Err(PoolError::NotNetmem(pfn, v.word.tag())),
    }
}

fn put_desc<P: Platform>(mem: Pools<'_, P>, cpu: &Cpu<'_>, d: &Netmem) -> Result<(), PoolError> {
    let pool = d.pool();
    if pool == 0 {
        return Err(PoolError::NotNetmem(d.flags.pfn(), Some(Tag::NetPool)));
    }
    // A live netmem names its pool's core, which lives while the block is live (pool item P5
    // of `desc.rs`).
    let c = pool_state_held::<PoolCore<'_>, _>(d, pool);
    if c.mem != mem.machine_addr() {
        return Err(PoolError::WrongMachine);
    }
    let mut cur = d.pp_ref_count.load(Ordering::Acquire);
    loop {
        if cur == 0 {
            return Err(PoolError::NoReference(d.flags.pfn()));
        }
        // A block mapped into an address space must not recycle (the mapper holds a
        // reference while it maps, so no mapping races this last put).
        let mapped = d.counts.mapcount();
        if cur == 1 && mapped != 0 {
            return Err(PoolError::Mapped(d.flags.pfn(), mapped));
        }
        match d.pp_ref_count.compare_exchange_weak(cur, cur - 1, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => break,
            Err(now) => cur = now,
        }
    }
    if cur == 1 {
        recycle(mem, cpu, c, d);
    }
    Ok(())
}

/// A block whose pp_ref_count reached zero: to the ring, or back to the page allocator.
fn recycle<P: Platform>(mem: Pools<'_, P>, cpu: &Cpu<'_>, c: &PoolCore<'_>, d: &Netmem) {
    {
        let mut r = c.ring.lock();
        if !r.dying && r.len < r.cap {
            let tail = (r.head + r.len) % r.cap;
            r.set_slot(tail, DescPtr::from_ref(d));
            r.len += 1;
            // In the ring nobody holds the block: a mapping of it is refused (NoReference).
            d.counts.refcount.store(0, Ordering::Release);
            drop(r);
            c.recycled.fetch_add(1, Ordering::Relaxed);
            drop_core_ref(mem, cpu, c);
            return;
        }
    }
    release_block(mem, cpu, c, d);
    drop_core_ref(mem, cpu, c);
}

/// Returns a block with pp_ref_count 0 to the page allocator.
fn release_block<P: Platform>(mem: Pools<'_, P>, cpu: &Cpu<'_>, c: &PoolCore<'_>, d: &Netmem) {
    let (pfn, order) = (d.flags.pfn(), d.flags.order());
    mem.pages().stamp_block(pfn, order, Word::TAIL);
    d.counts.refcount.store(0, Ordering::Release);
    mem.slabs().free_desc(cpu, d);
    let rm = mem.memmap().region_map(mem.memmap().region_index(pfn).expect("pool pfn"));
    mem.pages().free_claimed(cpu, rm, pfn, order);
    c.released.fetch_add(1, Ordering::Relaxed);
}

fn drop_core_ref<P: Platform>(mem: Pools<'_, P>, cpu: &Cpu<'_>, c: &PoolCore<'_>) {
    if c.refs.fetch_sub(1, Ordering::AcqRel) == 1 {
        debug_assert!(c.dying.load(Ordering::Acquire));
        if let Some(slots) = c.ring.lock().slots.take() {
            mem.slabs().karray_free(cpu, slots);
        }
        let core = NonNull::from(c).cast::<u8>();
        // The core is the kmalloc object `PagePool::new` allocated; the last reference is
        // gone, so nothing reaches it any more.
        let r = mem.slabs().kfree_owned(cpu, core);
        debug_assert!(r.is_ok(), "{r:?}");
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::base::layout::MemmapLayout;
    use crate::machine::test_machine::machine;

    #[test]
    fn recycle_ring_serves_the_fast_path() {
        let m = machine(4096, MemmapLayout::Flat);
        let cpu = m.cpus().claim(0).unwrap();
        let pool =
            PagePool::new(&m, &cpu, PoolParams { ring_size: 2, dma_offset: 1 << 40, ..Default::default() }).unwrap();
        let a = pool.alloc(&cpu).unwrap();
        let (pfn, dma) = (a.pfn(), a.dma_addr());
        assert_eq!(dma, pfn.phys() + (1 << 40));
        assert!(matches!(m.memmap().load(m.platform(), pfn).unwrap().word.kind(), PageKind::NetPool(_)));
        pp_put(&m, &cpu, a).unwrap();
        // SAFETY: testing the raw put's check: the block has no reference left, so the put is
        // refused before anything changes (no other holder exists in this test).
        assert_eq!(pp_put_pfn_owned(&m, &cpu, pfn), Err(PoolError::NoReference(pfn)), "double put");
        let b = pool.alloc(&cpu).unwrap();
        assert_eq!((b.pfn(), b.dma_addr()), (pfn, dma), "recycled with its DMA address");
        let s = pool.stats();
        assert_eq!((s.alloc_fast, s.alloc_slow, s.recycled, s.released, s.live), (1, 1, 1, 0, 1));
        // A full ring releases.
        let more: std::vec::Vec<_> = (0..3).map(|_| pool.alloc(&cpu).unwrap()).collect();
        for n in more {
            pp_put(&m, &cpu, n).unwrap();
        }
        assert_eq!(pool.stats().released, 1);
        assert_eq!(pool.stats().ring, 2);
        let (pool, e) = pool.try_destroy(&cpu).unwrap_err();
        assert_eq!(e, PoolError::InFlight(1));
        pp_put(&m, &cpu, b).unwrap();
        assert!(pool.try_destroy(&cpu).is_ok());
    }

    #[test]
    fn frags_share_a_block_until_the_last_put() {
        let m = machine(4096, MemmapLayout::Flat);
        let cpu = m.cpus().claim(0).unwrap();
        let pool = PagePool::new(&m, &cpu, PoolParams::default()).unwrap();
        let f1 = pool.alloc_frag(&cpu, 1500).unwrap();
        let f2 = pool.alloc_frag(&cpu, 1500).unwrap();
        assert_eq!((f1.offset(), f1.len(), f2.offset()), (0, 1536, 1536));
        assert_eq!(f1.netmem().pp_ref_count(), 3, "two frags and the pool's hold");
        let f3 = pool.alloc_frag(&cpu, 1500).unwrap();
        assert_ne!(f3.netmem().flags.pfn(), f1.netmem().flags.pfn(), "did not fit: a new block");
        assert_eq!(f1.netmem().pp_ref_count(), 2, "the pool dropped its hold");
        let first = f1.netmem().flags.pfn();
        pp_put_frag(&m, &cpu, f1).unwrap();
        pp_put_frag(&m, &cpu, f2).unwrap();
        assert_eq!(pool.stats().recycled, 1);
        let again = pool.alloc(&cpu).unwrap();
        assert_eq!(again.pfn(), first);
        assert_eq!(pool.alloc_frag(&cpu, 0).unwrap_err(), PoolError::BadFragSize(0));
        assert_eq!(pool.destroy(&cpu), Destroyed::Deferred(2));
        pp_put_frag(&m, &cpu, f3).unwrap();
        pp_put(&m, &cpu, again).unwrap();
        assert!(matches!(
            m.memmap().load(m.platform(), first).unwrap().word.kind(),
            PageKind::Buddy(_) | PageKind::Undescribed(_)
        ));
    }
}
