//! x86-64 machine access: port I/O, MSRs, CPUID, the TSC, the serial console, QEMU's
//! `isa-debug-exit`, per-CPU areas (GS), descriptor tables with interrupt stacks, the local
//! APIC, and the page-table edits the kernel makes after boot (direct map above 4 GiB,
//! unmapping a region, the fixmap for `map_local`).
//!
//! Invariants (cited by `SAFETY` comments):
//! 1. Interrupts stay disabled on every CPU for the kernel's whole life; only exceptions
//!    arrive, each on its CPU's IST1 stack, and their handler never returns.
//! 2. Every CPU's GS base points to its own `PerCpu` in `PERCPU` from `percpu_init` on, and
//!    the CPU touches only its own entry's non-atomic fields.
//! 3. Page-table edits happen on the BSP before the APs leave their wait loop (direct map,
//!    unmapped region) or touch only the calling CPU's fixmap slots (map_local); a changed
//!    translation is flushed (`invlpg` or a CR3 reload) before the address is used again.

use core::arch::asm;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crate::boot::{self, MAX_KCPUS};

/// Port of QEMU's `isa-debug-exit` device (`-device isa-debug-exit,iobase=0xf4,iosize=4`).
pub const DEBUG_EXIT_PORT: u16 = 0xf4;

/// What the kernel tells QEMU when it stops; QEMU exits with `2 * code + 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    /// Every check passed (QEMU status 33).
    Success = 0x10,
    /// A check failed: self-test, torture violation (status 35).
    Failed = 0x11,
    /// A Rust panic (status 37).
    Panic = 0x12,
    /// A CPU exception (status 39).
    Fault = 0x13,
    /// Bad input: memory map, command line, too little RAM (status 41).
    BadInput = 0x14,
}

/// Writes a byte to an I/O port.
#[inline]
pub fn outb(port: u16, v: u8) {
    // SAFETY: port I/O to devices this kernel owns (serial, PIT, debug exit); no memory effects.
    unsafe { asm!("out dx, al", in("dx") port, in("al") v, options(nomem, nostack, preserves_flags)) }
}

/// Reads a byte from an I/O port.
#[inline]
pub fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: as in `outb`.
    unsafe { asm!("in al, dx", out("al") v, in("dx") port, options(nomem, nostack, preserves_flags)) };
    v
}

/// Reads the time-stamp counter.
#[inline]
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: rdtsc has no memory effects.
    unsafe { asm!("lfence", "rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    (hi as u64) << 32 | lo as u64
}

/// CPUID leaf/subleaf → (eax, ebx, ecx, edx).
pub fn cpuid(leaf: u32, sub: u32) -> (u32, u32, u32, u32) {
    let r = core::arch::x86_64::__cpuid_count(leaf, sub);
    (r.eax, r.ebx, r.ecx, r.edx)
}

/// Writes a model-specific register.
///
/// # Safety
/// The MSR and value must be ones this kernel is allowed to change (GS base, APIC base).
pub unsafe fn wrmsr(msr: u32, v: u64) {
    // SAFETY: the caller's contract.
    unsafe { asm!("wrmsr", in("ecx") msr, in("eax") v as u32, in("edx") (v >> 32) as u32, options(nostack)) }
}

/// Stops this CPU forever (interrupts are off: invariant 1).
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: cli/hlt only stop this CPU.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

/// Ends the QEMU run with `code` (QEMU exits with `2 * code + 1`).
pub fn exit(code: ExitCode) -> ! {
    outb(DEBUG_EXIT_PORT, code as u8);
    // Without the device the write does nothing: stop here rather than run on.
    halt_forever()
}

// ---------------------------------------------------------------------------------------------
// Serial console (COM1, 16550).

const COM1: u16 = 0x3f8;
static SERIAL_LOCK: AtomicBool = AtomicBool::new(false);

/// Programs COM1 for 115200 8N1.
pub fn serial_init() {
    outb(COM1 + 1, 0x00);
    outb(COM1 + 3, 0x80);
    outb(COM1, 0x01);
    outb(COM1 + 1, 0x00);
    outb(COM1 + 3, 0x03);
    outb(COM1 + 2, 0xc7);
    outb(COM1 + 4, 0x03);
}

fn serial_byte(b: u8) {
    let mut spins = 0u32;
    while inb(COM1 + 5) & 0x20 == 0 && spins < 100_000 {
        spins += 1;
        core::hint::spin_loop();
    }
    outb(COM1, b);
}

/// The console as a `fmt::Write` (used under the console lock).
pub struct Serial;

impl Write for Serial {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                serial_byte(b'\r');
            }
            serial_byte(b);
        }
        Ok(())
    }
}

/// Prints under the console lock. `force` (panic and fault paths) takes the lock after a
/// bounded wait even if its holder never releases it.
pub fn print_args(args: fmt::Arguments<'_>, force: bool) {
    let mut spins = 0u64;
    while SERIAL_LOCK.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
        spins += 1;
        if force && spins > 50_000_000 {
            break;
        }
        core::hint::spin_loop();
    }
    let _ = Serial.write_fmt(args);
    SERIAL_LOCK.store(false, Ordering::Release);
}

// ---------------------------------------------------------------------------------------------
// Per-CPU areas, GDT/TSS/IDT.

/// One CPU's area; GS base points at it (invariant 2).
#[repr(C, align(64))]
pub struct PerCpu {
    /// Logical CPU number (0 = BSP). First field: read as `gs:[0]`.
    pub id: u64,
    /// Local APIC id.
    pub apic_id: AtomicU32,
    /// Bitmask of this CPU's busy fixmap slots (`map_local`).
    pub local_slots: AtomicU64,
    /// Set while this CPU runs the fault handler (a fault inside it exits at once).
    pub in_fault: AtomicBool,
    tss: [u32; 26],
}

const fn percpu(id: u64) -> PerCpu {
    PerCpu {
        id,
        apic_id: AtomicU32::new(0),
        local_slots: AtomicU64::new(0),
        in_fault: AtomicBool::new(false),
        tss: [0; 26],
    }
}

/// Every CPU's area.
pub static mut PERCPU: [PerCpu; MAX_KCPUS] = {
    let mut a = [const { percpu(0) }; MAX_KCPUS];
    let mut i = 0;
    while i < MAX_KCPUS {
        a[i].id = i as u64;
        i += 1;
    }
    a
};

const IST_SIZE: usize = 16 * 1024;
#[repr(C, align(16))]
struct IstStacks([[u8; IST_SIZE]; MAX_KCPUS]);
static mut IST_STACKS: IstStacks = IstStacks([[0; IST_SIZE]; MAX_KCPUS]);

#[repr(C, align(16))]
struct Idt([u64; 64]);
static mut IDT: Idt = Idt([0; 64]);

/// The calling CPU's number (from its GS-based area, invariant 2).
#[inline]
pub fn cpu_id() -> usize {
    let id: u64;
    // SAFETY: GS base points to this CPU's PerCpu whose first field is `id` (invariant 2).
    unsafe { asm!("mov {}, gs:[0]", out(reg) id, options(nostack, readonly, preserves_flags)) };
    id as usize
}

/// The calling CPU's area.
pub fn this_cpu() -> &'static PerCpu {
    // SAFETY: PERCPU is static; only atomics and the `id` (fixed since boot) are read through
    // a shared reference.
    unsafe { &(*core::ptr::addr_of!(PERCPU))[cpu_id()] }
}

/// Fills the IDT (once, on the BSP): the 32 exception vectors, each on IST1.
pub fn idt_init() {
    // SAFETY: the BSP alone runs this before any AP starts (invariant 3's ordering); the stub
    // addresses come from boot.rs.
    unsafe {
        let idt = &mut *core::ptr::addr_of_mut!(IDT);
        for v in 0..32 {
            let h = boot::fault_stubs[v];
            let lo = (h & 0xffff) | (0x08 << 16) | (1u64 << 32) | (0x8eu64 << 40) | ((h >> 16) & 0xffff) << 48;
            idt.0[v * 2] = lo;
            idt.0[v * 2 + 1] = h >> 32;
        }
    }
}

/// Sets up the calling CPU `id`: GS base, its TSS (IST1) and descriptor, and loads the IDT.
///
/// # Safety
/// Called once per CPU, by that CPU, with a distinct `id < MAX_KCPUS`, after [`idt_init`].
pub unsafe fn percpu_init(id: usize) {
    // SAFETY: the caller's contract: each CPU writes only its own PerCpu, TSS descriptor and
    // IST stack; the GDT slots are distinct per id (boot.rs item 5).
    unsafe {
        let pc = &mut (*core::ptr::addr_of_mut!(PERCPU))[id];
        let ist_top = (core::ptr::addr_of_mut!(IST_STACKS) as u64) + ((id + 1) * IST_SIZE) as u64;
        pc.tss = [0; 26];
        pc.tss[9] = ist_top as u32;
        pc.tss[10] = (ist_top >> 32) as u32;
        pc.tss[25] = 104 << 16;
        let base = pc.tss.as_ptr() as u64;
        let lo = 103u64 | (base & 0xff_ffff) << 16 | 0x89u64 << 40 | ((base >> 24) & 0xff) << 56;
        let gdt = &mut *core::ptr::addr_of_mut!(boot::gdt64);
        gdt[4 + id * 2] = lo;
        gdt[4 + id * 2 + 1] = base >> 32;
        wrmsr(0xC000_0101, pc as *mut PerCpu as u64);
        let sel: u16 = (0x20 + id * 16) as u16;
        asm!("ltr {0:x}", in(reg) sel, options(nostack));
        #[repr(C, packed)]
        struct Ptr {
            limit: u16,
            base: u64,
        }
        let p = Ptr { limit: (64 * 8 - 1) as u16, base: core::ptr::addr_of!(IDT) as u64 };
        asm!("lidt [{}]", in(reg) &p, options(readonly, nostack));
    }
}

// ---------------------------------------------------------------------------------------------
// Local APIC (xAPIC at its default address, identity-mapped: boot.rs item 1).

const LAPIC: u64 = 0xfee0_0000;

fn lapic_write(reg: u64, v: u32) {
    // SAFETY: the xAPIC MMIO page is identity-mapped (boot.rs item 1); a 32-bit aligned write.
    unsafe { core::ptr::write_volatile((LAPIC + reg) as *mut u32, v) }
}

fn lapic_read(reg: u64) -> u32 {
    // SAFETY: as in `lapic_write`.
    unsafe { core::ptr::read_volatile((LAPIC + reg) as *const u32) }
}

/// Enables the local APIC (spurious vector register) and returns its id.
pub fn lapic_init() -> u32 {
    lapic_write(0xf0, 0x1ff);
    lapic_read(0x20) >> 24
}

/// Sends an IPI with the all-excluding-self shorthand; waits until it is delivered.
pub fn ipi_all_but_self(low: u32) {
    lapic_write(0x310, 0);
    lapic_write(0x300, low | (3 << 18));
    let mut n = 0;
    while lapic_read(0x300) & (1 << 12) != 0 && n < 1_000_000 {
        n += 1;
        core::hint::spin_loop();
    }
}

// ---------------------------------------------------------------------------------------------
// Time.

/// TSC ticks per microsecond, once measured.
pub static TSC_PER_US: AtomicU64 = AtomicU64::new(0);

/// Measures the TSC frequency. CPUID leaf 0x15 (TSC/crystal ratio with a crystal frequency)
/// or 0x16 (base MHz) when the CPU reports them; otherwise against PIT channel 2 over 50 ms;
/// "assumed" (2000 MHz) when none of these gives a plausible figure. Returns (MHz, source).
pub fn tsc_calibrate() -> (u64, &'static str) {
    let max = cpuid(0, 0).0;
    let (mhz, src) = 'm: {
        if max >= 0x15 {
            let (den, num, crystal, _) = cpuid(0x15, 0);
            if den != 0 && num != 0 && crystal != 0 {
                break 'm (crystal as u64 * num as u64 / den as u64 / 1_000_000, "cpuid15");
            }
        }
        if max >= 0x16 {
            let base = cpuid(0x16, 0).0 & 0xffff;
            if base != 0 {
                break 'm (base as u64, "cpuid16");
            }
        }
        // PIT channel 2, mode 0, gate on, speaker off; 1.193182 MHz.
        const TICKS: u32 = 59_659; // 50 ms
        outb(0x61, (inb(0x61) & !0x02) | 0x01);
        outb(0x43, 0b1011_0000);
        outb(0x42, (TICKS & 0xff) as u8);
        outb(0x42, (TICKS >> 8) as u8);
        // Restart the count by toggling the gate.
        let g = inb(0x61) & !0x01;
        outb(0x61, g);
        outb(0x61, g | 0x01);
        let t0 = rdtsc();
        let mut spins = 0u64;
        while inb(0x61) & 0x20 == 0 {
            spins += 1;
            if spins > 2_000_000_000 {
                break;
            }
        }
        let dt = rdtsc() - t0;
        (dt * 1_193_182 / TICKS as u64 / 1_000_000, "pit")
    };
    // A machine without PIT channel 2 (microvm without pit=on) reads port 0x61 as 0xff and
    // "measures" nonsense: fall back to an assumed 2 GHz and say so.
    let (mhz, src) = if (100..=20_000).contains(&mhz) { (mhz, src) } else { (2000, "assumed") };
    TSC_PER_US.store(mhz, Ordering::Relaxed);
    (mhz, src)
}

/// Nanoseconds for `ticks` TSC ticks (after calibration).
pub fn tsc_ns(ticks: u64) -> u64 {
    let per_us = TSC_PER_US.load(Ordering::Relaxed).max(1);
    (ticks as u128 * 1000 / per_us as u128) as u64
}

/// Spins for `us` microseconds on the TSC.
pub fn delay_us(us: u64) {
    let per_us = TSC_PER_US.load(Ordering::Relaxed).max(1);
    let end = rdtsc() + us * per_us;
    while rdtsc() < end {
        core::hint::spin_loop();
    }
}

/// "kvm" if the hypervisor leaf says KVM, else "tcg" (QEMU's only other accelerator here).
pub fn accel() -> &'static str {
    let hv = cpuid(1, 0).2 & (1 << 31) != 0;
    if hv {
        let (_, b, c, d) = cpuid(0x4000_0000, 0);
        let mut sig = [0u8; 12];
        sig[..4].copy_from_slice(&b.to_le_bytes());
        sig[4..8].copy_from_slice(&c.to_le_bytes());
        sig[8..].copy_from_slice(&d.to_le_bytes());
        if &sig == b"KVMKVMKVM\0\0\0" {
            return "kvm";
        }
    }
    "tcg"
}

// ---------------------------------------------------------------------------------------------
// Paging after boot.

/// Base of the fixmap (PML4 slot 511): `map_local` slots, 32 per CPU.
pub const FIXMAP_BASE: u64 = 0xffff_ff80_0000_0000;
/// Fixmap slots per CPU.
pub const LOCAL_SLOTS: usize = 32;

const PRESENT_RW: u64 = 0x3;
const HUGE: u64 = 0x80;

/// Reloads CR3 (flushes every non-global translation on this CPU).
pub fn flush_tlb() {
    // SAFETY: rewriting CR3 with its own value changes no mapping.
    unsafe { asm!("mov {0}, cr3", "mov cr3, {0}", out(reg) _, options(nostack)) }
}

/// Flushes one address's translation on this CPU.
#[inline]
pub fn invlpg(va: u64) {
    // SAFETY: invlpg only drops a cached translation.
    unsafe { asm!("invlpg [{}]", in(reg) va, options(nostack, preserves_flags)) }
}

/// Extends the direct map to `[4 GiB, end)` with 2 MiB pages from the static pool (BSP only,
/// before the APs run: invariant 3). Returns false if `end` is past what the pool covers.
pub fn direct_map_extend(end: u64) -> bool {
    let gib = end.div_ceil(1 << 30) as usize;
    if gib > 4 + boot::PD_POOL {
        return false;
    }
    // SAFETY: invariant 3 (BSP, before the APs leave their wait loop); the pool tables are
    // static and page-aligned (boot.rs item 2).
    unsafe {
        let pdpt = &mut *core::ptr::addr_of_mut!(boot::boot_pdpt);
        let pool = &mut *core::ptr::addr_of_mut!(boot::pd_pool);
        for g in 4..gib {
            let pd = &mut pool[g - 4];
            for (i, e) in pd.iter_mut().enumerate() {
                *e = (((g as u64) << 30) + ((i as u64) << 21)) | PRESENT_RW | HUGE;
            }
            pdpt[g] = pd.as_ptr() as u64 | PRESENT_RW;
        }
    }
    flush_tlb();
    true
}

/// Removes `[start, end)` (2 MiB-aligned) from the direct map (BSP, invariant 3).
pub fn direct_map_remove(start: u64, end: u64) {
    let mut a = start;
    while a < end {
        let (g, i) = ((a >> 30) as usize, ((a >> 21) & 511) as usize);
        // SAFETY: invariant 3; the tables were set up by boot.rs or `direct_map_extend`.
        unsafe {
            if g < 4 {
                (*core::ptr::addr_of_mut!(boot::boot_pd))[g][i] = 0;
            } else if g - 4 < boot::PD_POOL {
                (*core::ptr::addr_of_mut!(boot::pd_pool))[g - 4][i] = 0;
            }
        }
        a += 1 << 21;
    }
    flush_tlb();
}

/// Links the fixmap tables into PML4 slot 511 (BSP, invariant 3).
pub fn fixmap_init() {
    // SAFETY: invariant 3; static page-aligned tables (boot.rs item 2).
    unsafe {
        let pml4 = &mut *core::ptr::addr_of_mut!(boot::boot_pml4);
        pml4[511] = core::ptr::addr_of!(boot::fix_pdpt) as u64 | PRESENT_RW;
        (*core::ptr::addr_of_mut!(boot::fix_pdpt))[0] = core::ptr::addr_of!(boot::fix_pd) as u64 | PRESENT_RW;
        (*core::ptr::addr_of_mut!(boot::fix_pd))[0] = core::ptr::addr_of!(boot::fix_pt) as u64 | PRESENT_RW;
    }
    flush_tlb();
}

/// Maps physical page `pa` at one of this CPU's free fixmap slots; `None` if all are busy.
pub fn fixmap_map(pa: u64) -> Option<u64> {
    let pc = this_cpu();
    let busy = pc.local_slots.load(Ordering::Relaxed);
    let slot = (!busy).trailing_zeros() as usize;
    if slot >= LOCAL_SLOTS {
        return None;
    }
    pc.local_slots.store(busy | 1 << slot, Ordering::Relaxed);
    let idx = cpu_id() * LOCAL_SLOTS + slot;
    let va = FIXMAP_BASE + (idx as u64) * 4096;
    // SAFETY: invariant 3: the slot belongs to this CPU and was free; the entry is flushed.
    unsafe { core::ptr::write_volatile(core::ptr::addr_of_mut!(boot::fix_pt).cast::<u64>().add(idx), pa | PRESENT_RW) };
    invlpg(va);
    Some(va)
}

/// Ends a [`fixmap_map`] mapping.
pub fn fixmap_unmap(va: u64) {
    let idx = ((va - FIXMAP_BASE) / 4096) as usize;
    let slot = idx - cpu_id() * LOCAL_SLOTS;
    // SAFETY: invariant 3: the caller's own slot; the entry is flushed before reuse.
    unsafe { core::ptr::write_volatile(core::ptr::addr_of_mut!(boot::fix_pt).cast::<u64>().add(idx), 0) };
    invlpg(va);
    let pc = this_cpu();
    pc.local_slots.fetch_and(!(1u64 << slot), Ordering::Relaxed);
}

#[repr(C, align(4096))]
struct PtPage([u64; 512]);
/// Page tables for splitting 2 MiB direct-map pages into 4 KiB pages (guard pages).
const PT_POOL: usize = 64;
static mut PT_POOL_PAGES: [PtPage; PT_POOL] = [const { PtPage([0; 512]) }; PT_POOL];
static PT_POOL_USED: AtomicU64 = AtomicU64::new(0);
static SPLIT_LOCK: AtomicBool = AtomicBool::new(false);

/// Makes the direct-map page at `pa` inaccessible (`accessible == false`) or accessible again,
/// splitting its 2 MiB page into 4 KiB pages first if needed. Returns false if it could not
/// (no direct mapping there, or the static pool of split tables is used up).
///
/// Only this CPU's TLB is flushed: interrupts are off (invariant 1), so there is no shootdown;
/// another CPU that cached the translation may still reach a newly protected page until its
/// TLB drops it. Splitting keeps every translation the same, so stale 2 MiB entries are
/// harmless, and x86 does not cache non-present entries, so unprotecting needs no shootdown.
pub fn protect_4k(pa: u64, accessible: bool) -> bool {
    while SPLIT_LOCK.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
        core::hint::spin_loop();
    }
    let (g, i) = ((pa >> 30) as usize, ((pa >> 21) & 511) as usize);
    // SAFETY: the tables are static (boot.rs item 2) and this edit is serialised by SPLIT_LOCK;
    // a split installs a table with the same translations (invariant 3's rule for changes
    // other CPUs may see), and the changed 4 KiB entry is flushed on this CPU below.
    let ok = unsafe {
        let pd: *mut u64 = if g < 4 {
            core::ptr::addr_of_mut!(boot::boot_pd).cast::<[u64; 512]>().add(g).cast()
        } else if g - 4 < boot::PD_POOL {
            core::ptr::addr_of_mut!(boot::pd_pool).cast::<[u64; 512]>().add(g - 4).cast()
        } else {
            core::ptr::null_mut()
        };
        'edit: {
            if pd.is_null() {
                break 'edit false;
            }
            let e = core::ptr::read_volatile(pd.add(i));
            if e & 1 == 0 {
                break 'edit false;
            }
            let pt: *mut u64 = if e & HUGE != 0 {
                let n = PT_POOL_USED.load(Ordering::Relaxed) as usize;
                if n == PT_POOL {
                    break 'edit false;
                }
                PT_POOL_USED.store(n as u64 + 1, Ordering::Relaxed);
                let t = core::ptr::addr_of_mut!(PT_POOL_PAGES).cast::<PtPage>().add(n).cast::<u64>();
                let base = e & 0x000f_ffff_ffe0_0000;
                for j in 0..512u64 {
                    core::ptr::write_volatile(t.add(j as usize), (base + (j << 12)) | PRESENT_RW);
                }
                core::ptr::write_volatile(pd.add(i), t as u64 | PRESENT_RW);
                t
            } else {
                (e & 0x000f_ffff_ffff_f000) as *mut u64
            };
            let v = if accessible { (pa & !0xfff) | PRESENT_RW } else { 0 };
            core::ptr::write_volatile(pt.add(((pa >> 12) & 511) as usize), v);
            true
        }
    };
    SPLIT_LOCK.store(false, Ordering::Release);
    invlpg(pa);
    ok
}

/// Whether `va` is mapped in the live page tables (a software walk; no access is made).
pub fn is_mapped(va: usize) -> bool {
    let va = va as u64;
    let idx = |level: u32| ((va >> (12 + 9 * level)) & 511) as usize;
    let mut table = core::ptr::addr_of!(boot::boot_pml4) as u64;
    for level in (0..4).rev() {
        // SAFETY: page tables are identity-mapped kernel memory (boot.rs items 1 and 2; the
        // fixmap and split tables are static too); a read of one entry.
        let e = unsafe { core::ptr::read_volatile((table as *const u64).add(idx(level))) };
        if e & 1 == 0 {
            return false;
        }
        if level == 0 || e & HUGE != 0 {
            return true;
        }
        table = e & 0x000f_ffff_ffff_f000;
    }
    true
}

/// Points the live PML4's slot `i` at `entry` (the kernel `Mm` test) and flushes.
pub fn set_pml4_entry(i: usize, entry: u64) {
    // SAFETY: only the BSP's self-test calls this, for a slot nothing else uses (256), while
    // the APs do not touch addresses in it.
    unsafe { core::ptr::write_volatile(core::ptr::addr_of_mut!(boot::boot_pml4).cast::<u64>().add(i), entry) };
    flush_tlb();
}

/// The live PML4's slot `i`.
pub fn pml4_entry(i: usize) -> u64 {
    // SAFETY: a read of a static table.
    unsafe { core::ptr::read_volatile(core::ptr::addr_of!(boot::boot_pml4).cast::<u64>().add(i)) }
}
