//! memdesc-kernel: a small x86-64 kernel, booted by QEMU through PVH, whose physical memory
//! manager is memdesc. See README.md ("A real kernel") and docs/ARCHITECTURE.md.
#![no_std]
#![no_main]

mod arch;
mod boot;
mod bootinfo;
mod mm;
mod selftest;
mod smp;
mod torture;
mod util;

use core::sync::atomic::{AtomicU32, Ordering};

use arch::ExitCode;
use util::{Barrier, FmtBuf};

/// Prints to the serial console.
#[macro_export]
macro_rules! kprint {
    ($($t:tt)*) => { $crate::arch::print_args(format_args!($($t)*), false) };
}
/// Prints a line to the serial console.
#[macro_export]
macro_rules! kprintln {
    ($($t:tt)*) => { $crate::arch::print_args(format_args!("{}\n", format_args!($($t)*)), false) };
}

/// What the BSP learned at boot that every CPU's run needs.
struct Run {
    layout: bootinfo::Layout,
    ram_mib: u64,
    memmap_bytes: u64,
    memmap_init_ms: f64,
    hole: (u64, u64),
    torture_ms: u64,
    seed: u64,
    bench_iters: u64,
    tsc_mhz: u64,
    tsc_src: &'static str,
    crash: Option<bootinfo::Crash>,
}

static mut RUN: Option<Run> = None;
static PHASE: Barrier = Barrier::new();
static SELFTEST_FAILED: AtomicU32 = AtomicU32::new(0);

fn bad_input(what: &dyn core::fmt::Display) -> ! {
    arch::print_args(format_args!("BAD INPUT: {what}\n"), true);
    arch::exit(ExitCode::BadInput)
}

#[no_mangle]
extern "C" fn kmain(start_info: u32) -> ! {
    arch::serial_init();
    arch::idt_init();
    // SAFETY: the BSP, once, id 0, after idt_init.
    unsafe { arch::percpu_init(0) };
    let apic = arch::lapic_init();
    arch::this_cpu().apic_id.store(apic, Ordering::Relaxed);
    arch::fixmap_init();
    kprintln!("memdesc-kernel: PVH boot, long mode, SSE on; accelerator {}", arch::accel());
    let (tsc_mhz, tsc_src) = arch::tsc_calibrate();
    kprintln!("TSC: {tsc_mhz} MHz (source: {tsc_src})");
    // SAFETY: %ebx at the PVH entry, as QEMU passed it.
    let mut bi = match unsafe { bootinfo::read(start_info as u64) } {
        Ok(b) => b,
        Err(e) => bad_input(&e),
    };
    kprintln!("memory map ({} entries):", bi.nr);
    bi.print();
    if let Err(e) = bi.validate() {
        bad_input(&e);
    }
    // SAFETY: the start info was validated by bootinfo::read (magic); offset 32 is rsdp_paddr.
    let rsdp = unsafe { core::ptr::read_unaligned((start_info as u64 + 32) as *const u64) };
    let madt = smp::madt_cpus(rsdp);
    let want = madt.unwrap_or(1).clamp(1, boot::MAX_KCPUS);
    // memdesc boots before the APs start (spinning APs would slow the BSP down under TCG);
    // it gets a Cpu slot for every CPU the MADT lists.
    let st = match mm::boot(&bi, want) {
        Ok(s) => s,
        Err(mm::BootError::Input(e)) => bad_input(&e),
        Err(mm::BootError::Layout(e)) => bad_input(&format_args!("the core refused the memory layout: {e}")),
        Err(mm::BootError::Boot(e)) => bad_input(&format_args!("memdesc could not boot on this memory map: {e}")),
    };
    let ncpu = smp::start_aps(want);
    kprintln!(
        "CPUs: {ncpu} running ({} in the ACPI MADT{})",
        madt.unwrap_or(1),
        if madt.is_none() { ": no ACPI tables, BSP only" } else { "" }
    );
    if ncpu < want {
        arch::print_args(format_args!("only {ncpu} of {want} CPUs came up\n"), true);
        arch::exit(ExitCode::Failed);
    }
    let init_ms = arch::tsc_ns(st.boot_ticks) as f64 / 1e6;
    kprintln!(
        "memdesc up: memmap {} ({} bytes), boot {:.2} ms, {} pages free, {} pages taken at boot",
        bi.opts.layout.name(),
        st.memmap_bytes,
        init_ms,
        st.free_pages,
        st.boot_pages
    );
    mm::print_zones();
    match bi.opts.crash {
        Some(bootinfo::Crash::Hole) if st.hole.0 < st.hole.1 => {
            kprintln!("crash=hole: reading {:#x}, in the unmapped region", st.hole.0 << 12);
            // SAFETY: none — this deliberately reads an address the page tables do not map,
            // to show the page-fault handler reporting it (the handler never returns).
            let v = unsafe { core::ptr::read_volatile((st.hole.0 << 12) as *const u64) };
            kprintln!("crash=hole: read {v:#x}: the unmapped region is mapped");
            arch::exit(ExitCode::Failed);
        }
        Some(bootinfo::Crash::Hole) => bad_input(&"crash=hole needs an unmapped region (unmapped_mib > 0)"),
        Some(bootinfo::Crash::Ud) => {
            kprintln!("crash=ud: executing ud2");
            // SAFETY: none needed for memory; ud2 raises #UD, whose handler never returns.
            unsafe { core::arch::asm!("ud2") };
            arch::exit(ExitCode::Failed);
        }
        Some(bootinfo::Crash::Panic) => panic!("crash=panic asked for a panic"),
        Some(bootinfo::Crash::Guard) => {
            let cpu = mm::claim_cpu(0).expect("CPU 0 is free");
            let flags = mm::Flags { guard: true, ..mm::Flags::default() };
            match mm::alloc_pages(&cpu, 0, flags) {
                Ok(p) => {
                    let after = (p.pfn() + 1) << 12;
                    kprintln!("crash=guard: writing one byte past the guarded page at pfn {:#x}", p.pfn());
                    // SAFETY: none — this deliberately writes into the guard page after the
                    // block, to show the guard faulting (the fault handler never returns).
                    unsafe { core::ptr::write_volatile(after as *mut u8, 1) };
                    kprintln!("crash=guard: the write past the block did not fault");
                    arch::exit(ExitCode::Failed);
                }
                Err(e) => bad_input(&format_args!("crash=guard: guarded allocation refused: {e}")),
            }
        }
        Some(bootinfo::Crash::Leak | bootinfo::Crash::Scribble) | None => {}
    }
    // SAFETY: written once by the BSP before GO releases the APs (which only read it).
    unsafe {
        RUN = Some(Run {
            layout: bi.opts.layout,
            ram_mib: bi.usable_bytes() >> 20,
            memmap_bytes: st.memmap_bytes,
            memmap_init_ms: init_ms,
            hole: st.hole,
            torture_ms: bi.opts.torture_ms,
            seed: bi.opts.seed,
            bench_iters: bi.opts.bench_iters,
            tsc_mhz,
            tsc_src,
            crash: bi.opts.crash,
        })
    };
    smp::GO.store(1, Ordering::Release);
    let cpu = mm::claim_cpu(0).expect("CPU 0 is free");
    run(cpu, ncpu as u32)
}

#[no_mangle]
extern "C" fn ap_main(idx: u32) -> ! {
    let id = idx as usize + 1;
    // SAFETY: each AP gets a distinct index from boot.rs (lock xadd) below MAX_KCPUS; the BSP
    // ran idt_init before sending the SIPIs.
    unsafe { arch::percpu_init(id) };
    let apic = arch::lapic_init();
    arch::this_cpu().apic_id.store(apic, Ordering::Relaxed);
    smp::AP_ARRIVED.fetch_add(1, Ordering::AcqRel);
    while smp::GO.load(Ordering::Acquire) == 0 {
        core::hint::spin_loop();
    }
    // The BSP changed the page tables (direct map above 4 GiB, the unmapped region).
    arch::flush_tlb();
    let n = smp::NR_CPUS.load(Ordering::Acquire);
    if id >= n as usize {
        arch::halt_forever();
    }
    let Some(cpu) = mm::claim_cpu(id) else {
        arch::print_args(format_args!("CPU {id}: no memdesc Cpu to claim\n"), true);
        arch::exit(ExitCode::Failed)
    };
    run(cpu, n)
}

/// Every CPU: self-test (BSP alone, then all), torture (all), benchmark and report (BSP).
fn run(cpu: mm::Cpu, n: u32) -> ! {
    // SAFETY: set by the BSP before GO (Release/Acquire), never written again.
    let r = unsafe { (*core::ptr::addr_of!(RUN)).as_ref().expect("RUN set before GO") };
    let bsp = cpu.id() == 0;
    let mut selftest: Result<(), FmtBuf> = Ok(());
    if bsp {
        kprintln!("self-test:");
        selftest = selftest::local(&cpu, r.hole);
        if selftest.is_err() {
            SELFTEST_FAILED.store(1, Ordering::Release);
        }
    }
    PHASE.wait(n);
    if SELFTEST_FAILED.load(Ordering::Acquire) != 0 {
        if bsp {
            report(r, n, selftest, None, None);
        }
        arch::halt_forever();
    }
    let smp = selftest::smp(&cpu, n);
    if bsp {
        match &smp {
            Ok(()) => kprintln!(
                "  SMP: remote frees around {n} CPUs and an RCU grace period held off by {} readers: ok",
                n - 1
            ),
            Err(e) => {
                selftest = Err(*e);
            }
        }
        if selftest.is_err() {
            report(r, n, selftest, None, None);
        }
        kprintln!("torture: {} CPUs for {} ms", n, r.torture_ms);
    }
    let rep = torture::run(&cpu, n as usize, r.torture_ms, r.seed, r.crash);
    if !bsp {
        arch::halt_forever();
    }
    let rep = rep.expect("the leader gets the report");
    kprintln!(
        "torture: {} ops in {} ms ({} quiescent checks, {} grace periods, {} remote frees, {} shared page-cache hits, {} allocations failed for lack of memory), {} violations",
        rep.ops, rep.ms, rep.checks, rep.grace_periods, rep.remote_frees, rep.shared_hits, rep.failed, rep.violations
    );
    let b = bench(&cpu, r.bench_iters);
    report(r, n, selftest, Some(rep), Some(b))
}

/// (order-0 pair ns, kmalloc-64 pair ns), on the BSP with the other CPUs halted.
fn bench(cpu: &mm::Cpu, iters: u64) -> (f64, f64) {
    let warm = (iters / 10).max(100);
    let flags = mm::Flags::default();
    let pages = |n: u64| {
        for _ in 0..n {
            let p = mm::alloc_pages(cpu, 0, flags).expect("order-0 page for the benchmark");
            mm::free_pages(cpu, p).expect("free in the benchmark");
        }
    };
    pages(warm);
    let t0 = arch::rdtsc();
    pages(iters);
    let order0 = arch::tsc_ns(arch::rdtsc() - t0) as f64 / iters as f64;
    let objs = |n: u64| {
        for _ in 0..n {
            let o = mm::kmalloc(cpu, 64, false).expect("kmalloc for the benchmark");
            mm::kfree(cpu, o).expect("kfree in the benchmark");
        }
    };
    objs(warm);
    let t0 = arch::rdtsc();
    objs(iters);
    let km = arch::tsc_ns(arch::rdtsc() - t0) as f64 / iters as f64;
    kprintln!(
        "benchmark: order-0 alloc+free {order0:.1} ns/pair, kmalloc(64)+kfree {km:.1} ns/pair ({iters} pairs each)"
    );
    (order0, km)
}

fn report(r: &Run, n: u32, selftest: Result<(), FmtBuf>, t: Option<torture::Report>, b: Option<(f64, f64)>) -> ! {
    let st = match &selftest {
        Ok(()) => FmtBuf::from_args(format_args!("ok")),
        Err(e) => {
            kprintln!("SELF-TEST FAILED: {e}");
            *e
        }
    };
    let t = t.unwrap_or_default();
    let (o0, km) = b.unwrap_or((0.0, 0.0));
    let mut esc = FmtBuf::new();
    for c in st.as_str().chars() {
        let _ = match c {
            '"' | '\\' => core::fmt::Write::write_fmt(&mut esc, format_args!("\\{c}")),
            c if (c as u32) < 0x20 => core::fmt::Write::write_str(&mut esc, " "),
            c => core::fmt::Write::write_fmt(&mut esc, format_args!("{c}")),
        };
    }
    kprintln!(
        "{{\"cpus\": {n}, \"ram_mib\": {}, \"memmap\": \"{}\", \"memmap_bytes\": {}, \"memmap_init_ms\": {:.3}, \"unmapped_mib\": {}, \"selftest\": \"{}\", \"torture_ms\": {}, \"torture_ops\": {}, \"torture_checks\": {}, \"grace_periods\": {}, \"remote_frees\": {}, \"shared_cache_hits\": {}, \"violations\": {}, \"order0_pair_ns\": {:.1}, \"kmalloc_pair_ns\": {:.1}, \"tsc_mhz\": {}, \"tsc_source\": \"{}\", \"debug_assertions\": {}, \"accel\": \"{}\"}}",
        r.ram_mib,
        r.layout.name(),
        r.memmap_bytes,
        r.memmap_init_ms,
        (r.hole.1 - r.hole.0) >> 8,
        esc,
        t.ms,
        t.ops,
        t.checks,
        t.grace_periods,
        t.remote_frees,
        t.shared_hits,
        t.violations,
        o0,
        km,
        r.tsc_mhz,
        r.tsc_src,
        cfg!(debug_assertions),
        arch::accel()
    );
    arch::exit(if selftest.is_ok() && t.violations == 0 { ExitCode::Success } else { ExitCode::Failed })
}

#[no_mangle]
extern "C" fn kernel_fault(vector: u64, frame: *const u64) -> ! {
    let pc = arch::this_cpu();
    if pc.in_fault.swap(true, Ordering::AcqRel) {
        arch::exit(ExitCode::Fault);
    }
    // SAFETY: `frame` is the stub's stack: vector, error code, then the CPU's interrupt frame
    // (rip, cs, rflags, rsp, ss), all on this CPU's IST stack.
    let (err, rip, rsp) = unsafe { (*frame.add(1), *frame.add(2), *frame.add(5)) };
    let cr2: u64;
    // SAFETY: reading CR2 has no side effects.
    unsafe { core::arch::asm!("mov {}, cr2", out(reg) cr2, options(nomem, nostack)) };
    let name = match vector {
        0 => "divide error",
        6 => "invalid opcode",
        8 => "double fault",
        13 => "general protection fault",
        14 => "page fault",
        _ => "exception",
    };
    arch::print_args(
        format_args!(
            "FAULT on CPU {}: {name} (vector {vector}) error {err:#x} at rip {rip:#x} rsp {rsp:#x} cr2 {cr2:#x}\n",
            pc.id
        ),
        true,
    );
    arch::exit(ExitCode::Fault)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let (file, line) = info.location().map_or(("?", 0), |l| (l.file(), l.line()));
    arch::print_args(format_args!("PANIC on CPU {} at {file}:{line}: {}\n", arch::cpu_id(), info.message()), true);
    arch::exit(ExitCode::Panic)
}

/// Never called (panic = "abort"), but the precompiled libcore references it.
#[no_mangle]
extern "C" fn rust_eh_personality() {}

// compiler_builtins on the host target does not export these: the kernel provides them.

/// # Safety
/// C `memcpy`: non-overlapping valid ranges of `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller's contract; rep movsb copies forwards (DF is clear in this kernel).
    unsafe {
        core::arch::asm!("rep movsb", inout("rcx") n => _, inout("rdi") dst => _, inout("rsi") src => _, options(nostack, preserves_flags))
    };
    dst
}

/// # Safety
/// C `memmove`: valid ranges of `n` bytes, possibly overlapping.
#[no_mangle]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize) <= (src as usize) || (dst as usize) >= (src as usize) + n {
        // SAFETY: a forward copy is correct when dst is below src or the ranges are disjoint.
        return unsafe { memcpy(dst, src, n) };
    }
    // SAFETY: overlapping with dst above src: copy backwards from the last byte, then clear DF.
    unsafe {
        core::arch::asm!("std", "rep movsb", "cld", inout("rcx") n => _, inout("rdi") dst.add(n - 1) => _,
            inout("rsi") src.add(n - 1) => _, options(nostack))
    };
    dst
}

/// # Safety
/// C `memset`: a valid range of `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller's contract.
    unsafe {
        core::arch::asm!("rep stosb", inout("rcx") n => _, inout("rdi") dst => _, in("al") c as u8, options(nostack, preserves_flags))
    };
    dst
}

/// # Safety
/// C `memcmp`: valid ranges of `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    for i in 0..n {
        // SAFETY: in bounds (the caller's contract); volatile so this loop is not turned into
        // a call to memcmp itself.
        let (x, y) = unsafe { (core::ptr::read_volatile(a.add(i)), core::ptr::read_volatile(b.add(i))) };
        if x != y {
            return x as i32 - y as i32;
        }
    }
    0
}

/// # Safety
/// C `bcmp`: valid ranges of `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: the caller's contract.
    unsafe { memcmp(a, b, n) }
}
