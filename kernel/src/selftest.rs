//! The in-kernel self-test: every subsystem the core's features enable, on the real memory
//! map, through the adapter in `mm.rs`. The first failing check is returned as text (it
//! becomes the JSON `selftest` field).

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crate::arch;
use crate::mm::{self, Block, Cpu, Flags, Pages};
use crate::util::{Barrier, FmtBuf};

macro_rules! ensure {
    ($c:expr, $($t:tt)*) => {
        if !$c {
            return Err(FmtBuf::from_args(format_args!($($t)*)));
        }
    };
}

fn mmerr(what: &str, e: mm::MmError) -> FmtBuf {
    FmtBuf::from_args(format_args!("{what}: {e}"))
}

fn pat(pfn: u64, i: usize) -> u64 {
    (pfn << 12 | i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5a5a
}

fn fill(w: &mut [u64; 512], pfn: u64) {
    for (i, x) in w.iter_mut().enumerate() {
        *x = pat(pfn, i);
    }
}

fn filled(w: &[u64; 512], pfn: u64) -> bool {
    w.iter().enumerate().all(|(i, x)| *x == pat(pfn, i))
}

/// Fills every page of an owned block with its pattern.
fn fill_block(p: &mut Pages) {
    let pfn = p.pfn();
    for i in 0..1u64 << p.order() {
        mm::write_page(p, i, |w| fill(w, pfn + i));
    }
}

/// Whether every page of a held block still holds its pattern.
fn block_ok(b: &impl Block) -> bool {
    let pfn = b.first_pfn();
    (0..1u64 << b.block_order()).all(|i| mm::read_page(b, i, |w| filled(w, pfn + i)))
}

/// Pages of every order: allocate, write every page, read back, free; the core refuses a
/// double free and a free with the wrong order.
fn pages(cpu: &Cpu) -> Result<(), FmtBuf> {
    for order in 0..=mm::max_order() {
        let mut p = mm::alloc_pages(cpu, order, Flags::default()).map_err(|e| mmerr("alloc_pages", e))?;
        let pfn = p.pfn();
        fill_block(&mut p);
        ensure!(block_ok(&p), "order-{order} block at pfn {pfn:#x} lost its contents");
        if order == 2 {
            // SAFETY: frees the core must refuse (wrong order, a tail page); `p` stays owned.
            ensure!(unsafe { mm::free_raw(cpu, pfn, 1) }.is_err(), "a free with the wrong order was accepted");
            // SAFETY: as above.
            ensure!(unsafe { mm::free_raw(cpu, pfn + 1, 0) }.is_err(), "a free of a tail page was accepted");
        }
        mm::free_pages(cpu, p).map_err(|e| mmerr("free_pages", e))?;
        // SAFETY: a double free the core must refuse (nobody allocates between the two calls:
        // the other CPUs are waiting at the phase barrier).
        ensure!(unsafe { mm::free_raw(cpu, pfn, order) }.is_err(), "a double free of pfn {pfn:#x} was accepted");
    }
    let z = mm::alloc_pages(cpu, 3, Flags { zero: true, ..Flags::default() }).map_err(|e| mmerr("zeroed alloc", e))?;
    for i in 0..8 {
        ensure!(mm::read_page(&z, i, |w| w.iter().all(|x| *x == 0)), "a zeroed block is not zero");
    }
    mm::free_pages(cpu, z).map_err(|e| mmerr("free_pages", e))?;
    Ok(())
}

/// Takes every page the allocator will give (largest orders first), including the unmapped
/// region, writes the unmapped pages through local mappings, gives everything back and checks
/// that nothing was lost. The blocks are chained through their own first words.
fn exhaust(cpu: &Cpu, hole: (u64, u64)) -> Result<(), FmtBuf> {
    mm::drain_all();
    let before = mm::nr_free_pages();
    let (mut head, mut pages, mut hole_pages) = (0u64, 0u64, 0u64);
    // Unmovable kernel memory first (never served from the unmapped region, which has no
    // direct map: the core's rule, like Linux's GFP_KERNEL and highmem), then movable memory,
    // which takes the rest, the unmapped region included.
    let atomic = Flags { atomic: true, ..Flags::default() };
    let movable = Flags { movable: true, ..atomic };
    for (flags, order) in [atomic, movable].into_iter().flat_map(|f| (0..=mm::max_order()).rev().map(move |o| (f, o))) {
        while let Ok(mut p) = mm::alloc_pages(cpu, order, flags) {
            let pfn = p.pfn();
            if hole.0 <= pfn && pfn < hole.1 {
                ensure!(flags.movable, "an unmovable allocation got unmapped pfn {pfn:#x}");
                ensure!(!mm::is_direct_mapped(pfn), "unmapped-region pfn {pfn:#x} has a direct mapping");
                hole_pages += 1 << order;
                fill_block(&mut p);
            }
            mm::write_page(&mut p, 0, |w| {
                w[0] = head;
                w[1] = order as u64;
                w[2] = !pfn;
            });
            // Ownership moves into the chain (rebuilt and freed below).
            let _ = p.into_raw();
            head = pfn;
            pages += 1 << order;
        }
    }
    ensure!(pages > 0, "the allocator gave no memory");
    if hole.0 < hole.1 {
        ensure!(hole_pages > 0, "the unmapped region was never allocated");
    }
    let mut n = 0;
    while head != 0 {
        // SAFETY: every block on the chain came from `into_raw` above, and the chain visits
        // each once; its order is read from its own first page, which only this CPU wrote.
        let order = unsafe { mm::with_page_raw(head, |w| w[1] as u32) };
        // SAFETY: (head, order) came from `into_raw` above and is rebuilt once.
        let p = unsafe { Pages::from_raw(head, order) };
        let (next, check) = mm::read_page(&p, 0, |w| (w[0], w[2]));
        ensure!(check == !head, "exhaustion chain corrupt at pfn {head:#x}");
        if hole.0 <= head && head < hole.1 {
            for i in 1..1u64 << order {
                ensure!(
                    mm::read_page(&p, i, |w| filled(w, head + i)),
                    "unmapped page {:#x} lost its contents",
                    head + i
                );
            }
        }
        mm::free_pages(cpu, p).map_err(|e| mmerr("freeing the exhaustion chain", e))?;
        n += 1u64 << order;
        head = next;
    }
    mm::drain_all();
    ensure!(n == pages, "freed {n} pages of {pages}");
    ensure!(mm::nr_free_pages() == before, "free pages {} after exhaustion, {before} before", mm::nr_free_pages());
    crate::kprintln!(
        "  exhaustion: took {pages} pages ({} MiB), {hole_pages} from the unmapped region, all returned",
        pages >> 8
    );
    Ok(())
}

/// Debug guard pages on the real MMU: a guarded block is usable, its guards are unmapped in
/// the direct map (the kernel splits the 2 MiB page), and freeing makes them usable again.
/// (`crash=guard` shows an overrun faulting.)
fn guard(cpu: &Cpu) -> Result<(), FmtBuf> {
    let failed0 = mm::PROTECT_FAILED.load(core::sync::atomic::Ordering::Relaxed);
    let g = Flags { guard: true, ..Flags::default() };
    let mut p = match mm::alloc_pages(cpu, 1, g) {
        Ok(p) => p,
        // A two-level area not yet split has no per-page words for guards: a typed refusal.
        Err(e) if e.invalid_order => {
            crate::kprintln!("  guard pages: refused in an unsplit two-level area ({e}), skipped");
            return Ok(());
        }
        Err(e) => return Err(mmerr("guarded alloc", e)),
    };
    let pfn = p.pfn();
    fill_block(&mut p);
    ensure!(block_ok(&p), "guarded block lost its contents");
    ensure!(!arch::is_mapped(((pfn - 1) << 12) as usize), "the guard below pfn {pfn:#x} is still mapped");
    ensure!(!arch::is_mapped(((pfn + 2) << 12) as usize), "the guard after the block is still mapped");
    mm::free_pages(cpu, p).map_err(|e| mmerr("guarded free", e))?;
    ensure!(arch::is_mapped(((pfn - 1) << 12) as usize), "the guard below is still unmapped after the free");
    ensure!(arch::is_mapped(((pfn + 2) << 12) as usize), "the guard after is still unmapped after the free");
    ensure!(
        mm::PROTECT_FAILED.load(core::sync::atomic::Ordering::Relaxed) == failed0,
        "a guard page could not be protected"
    );
    Ok(())
}

fn kmalloc(cpu: &Cpu) -> Result<(), FmtBuf> {
    for size in [1usize, 8, 13, 64, 96, 100, 128, 192, 500, 1024, 2048, 4000, 4096, 8192] {
        let o = mm::kmalloc(cpu, size, true).map_err(|e| mmerr("kmalloc", e))?;
        let ks = mm::ksize(&o).map_err(|e| mmerr("ksize", e))?;
        ensure!(ks >= size, "ksize {ks} < {size}");
        // SAFETY: a live object of at least `ks` bytes, owned here.
        let b = unsafe { core::slice::from_raw_parts_mut(o.ptr(), ks) };
        ensure!(b[..size].iter().all(|x| *x == 0), "kmalloc({size}, zero) not zeroed");
        b.fill(0xa5);
        mm::kfree(cpu, o).map_err(|e| mmerr("kfree", e))?;
    }
    let mut objs: [Option<mm::Obj>; 512] = [const { None }; 512];
    for (i, s) in objs.iter_mut().enumerate() {
        let o = mm::kmalloc(cpu, 64, false).map_err(|e| mmerr("kmalloc", e))?;
        // SAFETY: a live 64-byte object, owned here.
        unsafe { core::ptr::write_bytes(o.ptr(), i as u8, 64) };
        *s = Some(o);
    }
    for (i, s) in objs.iter_mut().enumerate() {
        let o = s.take().expect("filled above");
        // SAFETY: as above.
        let b = unsafe { core::slice::from_raw_parts(o.ptr(), 64) };
        ensure!(b.iter().all(|x| *x == i as u8), "kmalloc object {i} was overwritten");
        mm::kfree(cpu, o).map_err(|e| mmerr("kfree", e))?;
    }
    let c = mm::cache_create(cpu, "selftest", 200).map_err(|e| mmerr("cache_create", e))?;
    let mut held: [Option<mm::Obj>; 100] = [const { None }; 100];
    for s in held.iter_mut() {
        *s = Some(c.alloc(cpu).map_err(|e| mmerr("cache alloc", e))?);
    }
    ensure!(c.live() == 100, "slab cache counts {} live objects, 100 held", c.live());
    for s in held.iter_mut() {
        c.free(cpu, s.take().expect("filled")).map_err(|e| mmerr("cache free", e))?;
    }
    ensure!(c.live() == 0, "slab cache counts {} live objects after freeing all", c.live());
    c.destroy(cpu).map_err(|e| mmerr("cache destroy", e))?;
    Ok(())
}

fn folios(cpu: &Cpu) -> Result<(), FmtBuf> {
    for order in 0..=4 {
        let f = mm::folio_alloc(cpu, order, false, Flags::default()).map_err(|e| mmerr("folio_alloc", e))?;
        ensure!(f.order() == order && f.refcount() == 1, "new folio: order {} refcount {}", f.order(), f.refcount());
        let g = mm::folio_get(&f);
        ensure!(f.refcount() == 2, "folio_get: refcount {}", f.refcount());
        ensure!(!mm::folio_put(cpu, g).map_err(|e| mmerr("folio_put", e))?, "a put with a reference left freed it");
        ensure!(mm::folio_put(cpu, f).map_err(|e| mmerr("folio_put", e))?, "the last put did not free the folio");
    }
    Ok(())
}

fn pagecache(cpu: &Cpu) -> Result<(), FmtBuf> {
    let space = mm::file_create(cpu).map_err(|e| mmerr("address_space_create", e))?;
    let mut pfns = [0u64; 64];
    for (i, slot) in pfns.iter_mut().enumerate() {
        let order = if i % 8 == 0 { 2 } else { 0 };
        let index = (i as u64) * 8;
        let f = mm::folio_alloc(cpu, order, true, Flags::default()).map_err(|e| mmerr("file folio", e))?;
        let pfn = f.pfn();
        // SAFETY: a new folio with our one reference, not yet in the page cache.
        unsafe { mm::write_folio_page(&f, 0, |w| fill(w, pfn)) };
        *slot = f.pfn();
        space.insert(cpu, &f, index).map_err(|e| mmerr("page cache insert", e))?;
        ensure!(f.refcount() == 2, "cached folio refcount {} (cache + ours)", f.refcount());
        mm::folio_put(cpu, f).map_err(|e| mmerr("folio_put", e))?;
    }
    space.verify().map_err(|e| mmerr("page cache verify", e))?;
    ensure!(space.nr_pages() == 8 * 4 + 56, "page cache holds {} pages", space.nr_pages());
    for (i, pfn) in pfns.iter().enumerate() {
        let index = (i as u64) * 8;
        // Lookups are lockless under RCU; nest one in an explicit read-side section too.
        let f = mm::rcu_read(cpu, || space.lookup(cpu, index));
        let Some(f) = f else { return Err(FmtBuf::from_args(format_args!("page cache lost index {index}"))) };
        ensure!(f.pfn() == *pfn && mm::read_page(&f, 0, |w| filled(w, *pfn)), "index {index}: wrong folio or contents");
        if i % 8 == 0 {
            let t = space.lookup(cpu, index + 3).ok_or_else(|| FmtBuf::from_args(format_args!("tail index")))?;
            ensure!(t.same(&f), "an order-2 folio's index {} finds another folio", index + 3);
            mm::folio_put(cpu, t).map_err(|e| mmerr("folio_put", e))?;
        }
        mm::folio_put(cpu, f).map_err(|e| mmerr("folio_put", e))?;
        if i % 8 != 0 {
            if let Some(g) = space.lookup(cpu, index + 1) {
                let _ = mm::folio_put(cpu, g);
                return Err(FmtBuf::from_args(format_args!("uncached index {} found a folio", index + 1)));
            }
        }
    }
    let f = space.lookup(cpu, 8).ok_or_else(|| FmtBuf::from_args(format_args!("index 8 missing")))?;
    ensure!(!space.delete(cpu, &f).map_err(|e| mmerr("delete", e))?, "delete freed a folio we hold");
    ensure!(mm::folio_put(cpu, f).map_err(|e| mmerr("folio_put", e))?, "last put after delete did not free");
    ensure!(space.lookup(cpu, 8).is_none(), "deleted index still found");
    let dropped = space.destroy(cpu);
    ensure!(dropped == 63, "destroy dropped {dropped} folios, 63 cached");
    Ok(())
}

/// Page tables built by memdesc, used by this CPU's MMU: map a folio in a kernel address
/// space, install its PGD slot in the live PML4, write through the mapping, read back through
/// the direct map (and the other way round).
fn mmu(cpu: &Cpu) -> Result<(), FmtBuf> {
    const VA: u64 = 0xffff_8000_4000_0000; // PML4 slot 256, unused by the kernel
    let mm = mm::kernel_mm_create(cpu).map_err(|e| mmerr("mm_create", e))?;
    let f = mm::folio_alloc(cpu, 2, false, Flags { zero: true, ..Flags::default() }).map_err(|e| mmerr("folio", e))?;
    let pfn = f.pfn();
    mm.map_anon(cpu, VA, &f).map_err(|e| mmerr("map_folio", e))?;
    ensure!(
        f.mapcount() == 4 && f.refcount() == 5,
        "mapped folio: mapcount {} refcount {}",
        f.mapcount(),
        f.refcount()
    );
    ensure!(mm.translate(VA + 4096) == Some(pfn + 1), "memdesc's tables translate wrongly");
    let old = arch::pml4_entry(256);
    ensure!(old == 0, "PML4 slot 256 already in use");
    arch::set_pml4_entry(256, mm.pgd_entry(256));
    for i in 0..4u64 {
        let p = (VA + i * 4096) as *mut u64;
        // SAFETY: the folio's 4 pages are mapped at VA by the tables just installed; we own
        // the folio; volatile so the writes really go through the MMU mapping.
        unsafe {
            core::ptr::write_volatile(p, 0xC0FFEE00 + i);
            core::ptr::write_volatile(p.add(511), !i);
        }
    }
    let mut ok = true;
    for i in 0..4u64 {
        ok &= mm::read_page(&f, i, |w| w[0] == 0xC0FFEE00 + i && w[511] == !i);
        // SAFETY: the folio is mapped only in this test's address space, used by this CPU
        // alone, and not accessed through that mapping while the closure runs.
        unsafe { mm::write_folio_page(&f, i, |w| w[7] = 0xBEEF + i) };
        // SAFETY: as above.
        ok &= unsafe { core::ptr::read_volatile(((VA + i * 4096) as *const u64).add(7)) } == 0xBEEF + i;
    }
    arch::set_pml4_entry(256, 0);
    let unmapped = mm.unmap(cpu, VA).map_err(|e| mmerr("munmap", e))?;
    mm.destroy(cpu);
    ensure!(ok, "a write through memdesc's page tables did not reach the folio (or the reverse)");
    ensure!(
        unmapped == 4 && f.mapcount() == 0 && f.refcount() == 1,
        "after unmap: {unmapped} pages, mapcount {}",
        f.mapcount()
    );
    ensure!(mm::folio_put(cpu, f).map_err(|e| mmerr("folio_put", e))?, "folio not freed by its last put");
    Ok(())
}

/// The BSP's part. Checks the core's invariants before and after.
pub fn local(cpu: &Cpu, hole: (u64, u64)) -> Result<(), FmtBuf> {
    // The address-space caches live as long as the kernel (their per-CPU state is raw
    // memory): create them before taking the baseline.
    mm::mm_init(cpu).map_err(|e| mmerr("mm_caches", e))?;
    let h0 = mm::check_all(cpu).map_err(|e| mmerr("checker at boot", e))?;
    crate::kprintln!(
        "  checker at boot: present {} free {} reserved {} raw {} described {} ({} slabs, {} folios)",
        h0.present,
        h0.free + h0.pcp,
        h0.reserved,
        h0.raw,
        h0.described,
        h0.slabs,
        h0.folios
    );
    pages(cpu)?;
    crate::kprintln!("  pages of orders 0..={}: ok", mm::max_order());
    exhaust(cpu, hole)?;
    guard(cpu)?;
    crate::kprintln!("  guard pages unmapped by the MMU while allocated: ok");
    kmalloc(cpu)?;
    crate::kprintln!("  kmalloc and slab caches: ok");
    folios(cpu)?;
    crate::kprintln!("  folios: ok");
    pagecache(cpu)?;
    crate::kprintln!("  page cache (RCU lookups): ok");
    mmu(cpu)?;
    crate::kprintln!("  memdesc page tables on the MMU: ok");
    mm::drain_all();
    let h = mm::check_all(cpu).map_err(|e| mmerr("checker after the self-test", e))?;
    ensure!(h.raw == h0.raw, "raw pages {} after the self-test, {} before", h.raw, h0.raw);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The part every CPU runs: remote frees and RCU grace periods across CPUs.

static SMP_BARRIER: Barrier = Barrier::new();
static READERS_IN: AtomicU32 = AtomicU32::new(0);
static READERS_GO: AtomicBool = AtomicBool::new(false);
static SMP_FAILED: AtomicBool = AtomicBool::new(false);
static mut SMP_MSG: FmtBuf = FmtBuf::new();
static MSG_LOCK: AtomicBool = AtomicBool::new(false);

type Handover = [Option<(Pages, Option<mm::Obj>)>; 32];
struct Slot(core::cell::UnsafeCell<Handover>);
// SAFETY: slot `i` is written by CPU i-1 before a barrier and read by CPU i after it; the
// barrier orders the accesses (Release/Acquire), so no two CPUs touch a slot at once.
unsafe impl Sync for Slot {}
static OUTBOX: [Slot; crate::boot::MAX_KCPUS] =
    [const { Slot(core::cell::UnsafeCell::new([const { None }; 32])) }; crate::boot::MAX_KCPUS];

fn fail(msg: FmtBuf) {
    if MSG_LOCK.swap(true, Ordering::AcqRel) {
        return;
    }
    // SAFETY: the first failing CPU alone writes it (MSG_LOCK); read after the barrier.
    unsafe { *core::ptr::addr_of_mut!(SMP_MSG) = msg };
    SMP_FAILED.store(true, Ordering::Release);
}

/// Every CPU: allocate pages and objects, hand them to the next CPU, free what the previous
/// CPU handed over (remote frees through per-CPU lists and sheaves); then the BSP waits for a
/// grace period that readers on every other CPU hold off. Returns the first failure.
pub fn smp(cpu: &Cpu, n: u32) -> Result<(), FmtBuf> {
    let id = cpu.id();
    let to = (id + 1) % n as usize;
    // SAFETY: see `Slot`: before the barrier only this CPU writes slot `to`.
    let out = unsafe { &mut *OUTBOX[to].0.get() };
    for (i, s) in out.iter_mut().enumerate() {
        let mut p = match mm::alloc_pages(cpu, (i % 3) as u32, Flags::default()) {
            Ok(p) => p,
            Err(e) => {
                fail(mmerr("smp alloc", e));
                break;
            }
        };
        fill_block(&mut p);
        let o = mm::kmalloc(cpu, 32 + i * 8, false).ok();
        if let Some(o) = &o {
            // SAFETY: a live object of at least 32 + i*8 bytes, owned here.
            unsafe { core::ptr::write_bytes(o.ptr(), id as u8, 32) };
        }
        *s = Some((p, o));
    }
    SMP_BARRIER.wait(n);
    // SAFETY: after the barrier only this CPU reads its own slot.
    let inbox = unsafe { &mut *OUTBOX[id].0.get() };
    let from = (id + n as usize - 1) % n as usize;
    for s in inbox.iter_mut() {
        if let Some((p, o)) = s.take() {
            if !block_ok(&p) {
                fail(FmtBuf::from_args(format_args!("page from CPU {from} lost its contents")));
            }
            if let Err(e) = mm::free_pages(cpu, p) {
                fail(mmerr("remote free_pages", e));
            }
            if let Some(o) = o {
                // SAFETY: a live object of at least 32 bytes, now owned here.
                let b = unsafe { core::slice::from_raw_parts(o.ptr(), 32) };
                if !b.iter().all(|x| *x == from as u8) {
                    fail(FmtBuf::from_args(format_args!("object from CPU {from} was overwritten")));
                }
                if let Err(e) = mm::kfree(cpu, o) {
                    fail(mmerr("remote kfree", e));
                }
            }
        }
    }
    SMP_BARRIER.wait(n);
    // RCU: every other CPU sits in a read-side section until the BSP has seen its grace
    // period held off.
    if id == 0 {
        let t0 = arch::rdtsc();
        while READERS_IN.load(Ordering::Acquire) + 1 < n {
            if arch::tsc_ns(arch::rdtsc() - t0) > 5_000_000_000 {
                fail(FmtBuf::from_args(format_args!("RCU readers never entered")));
                break;
            }
            core::hint::spin_loop();
        }
        let gp = mm::gp_start();
        if n > 1 && mm::gp_done(gp) {
            fail(FmtBuf::from_args(format_args!("a grace period ended while readers held it")));
        }
        READERS_GO.store(true, Ordering::Release);
        let t0 = arch::rdtsc();
        while !mm::gp_done(gp) {
            if arch::tsc_ns(arch::rdtsc() - t0) > 5_000_000_000 {
                fail(FmtBuf::from_args(format_args!("a grace period never ended after the readers left")));
                break;
            }
            core::hint::spin_loop();
        }
    } else {
        mm::rcu_read(cpu, || {
            READERS_IN.fetch_add(1, Ordering::AcqRel);
            while !READERS_GO.load(Ordering::Acquire) {
                core::hint::spin_loop();
            }
        });
    }
    SMP_BARRIER.wait(n);
    if SMP_FAILED.load(Ordering::Acquire) {
        // SAFETY: written before the barrier by the failing CPU.
        return Err(unsafe { *core::ptr::addr_of!(SMP_MSG) });
    }
    Ok(())
}
