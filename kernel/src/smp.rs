//! SMP bring-up: count the CPUs from the ACPI MADT, copy the real-mode trampoline below
//! 1 MiB, wake every application processor with INIT-SIPI-SIPI, and hold them until the BSP
//! has booted memdesc; then each AP claims its own `Cpu` and runs the jobs the BSP posts.

use core::sync::atomic::{AtomicU32, Ordering};

use crate::arch;
use crate::boot::{self, MAX_KCPUS, TRAMPOLINE};

/// APs that reached Rust (each with its per-CPU area set up).
pub static AP_ARRIVED: AtomicU32 = AtomicU32::new(0);
/// Set by the BSP when the APs may go on (memdesc is up); the CPU count is final then.
pub static GO: AtomicU32 = AtomicU32::new(0);
/// CPUs in use (BSP + APs that arrived).
pub static NR_CPUS: AtomicU32 = AtomicU32::new(1);

fn sum(p: u64, n: usize) -> u8 {
    // SAFETY: ACPI tables are in the identity-mapped low 4 GiB (boot.rs item 1), and `n`
    // comes from their own length fields, bounded below.
    (0..n).fold(0u8, |s, i| s.wrapping_add(unsafe { core::ptr::read_volatile((p + i as u64) as *const u8) }))
}

fn rd32(a: u64) -> u32 {
    // SAFETY: as in `sum`.
    unsafe { core::ptr::read_unaligned(a as *const u32) }
}

fn rd64(a: u64) -> u64 {
    // SAFETY: as in `sum`.
    unsafe { core::ptr::read_unaligned(a as *const u64) }
}

fn find_rsdp(hint: u64) -> Option<u64> {
    let ok = |p: u64| rd64(p) == u64::from_le_bytes(*b"RSD PTR ") && sum(p, 20) == 0;
    if hint != 0 && ok(hint) {
        return Some(hint);
    }
    // EBDA (segment at 0x40e), then the BIOS area.
    // SAFETY: the BIOS data area is identity-mapped low memory.
    let ebda = (unsafe { core::ptr::read_volatile(0x40e as *const u16) } as u64) << 4;
    let ranges = [(ebda, ebda + 1024), (0xe0000, 0x100000)];
    for (s, e) in ranges {
        if s == 0 || e > 0x100000 {
            continue;
        }
        let mut p = s;
        while p < e {
            if ok(p) {
                return Some(p);
            }
            p += 16;
        }
    }
    None
}

/// Enabled processors in the MADT (None: no ACPI tables found).
pub fn madt_cpus(rsdp_hint: u64) -> Option<usize> {
    let rsdp = find_rsdp(rsdp_hint)?;
    let rev = {
        // SAFETY: the RSDP was found and checksummed above.
        unsafe { core::ptr::read_volatile((rsdp + 15) as *const u8) }
    };
    let (root, wide) =
        if rev >= 2 && rd64(rsdp + 24) != 0 { (rd64(rsdp + 24), true) } else { (rd32(rsdp + 16) as u64, false) };
    if root == 0 || root >= 1 << 32 {
        return None;
    }
    let len = rd32(root + 4) as u64;
    let step = if wide { 8 } else { 4 };
    let mut p = root + 36;
    while p + step <= root + len.min(4096) {
        let t = if wide { rd64(p) } else { rd32(p) as u64 };
        p += step;
        if t == 0 || t >= 1 << 32 || rd32(t) != u32::from_le_bytes(*b"APIC") {
            continue;
        }
        let tlen = (rd32(t + 4) as u64).min(65536);
        let mut e = t + 44;
        let mut n = 0;
        while e + 2 <= t + tlen {
            // SAFETY: inside the MADT (its length bounds the walk).
            let (ty, el) =
                unsafe { (core::ptr::read_volatile(e as *const u8), core::ptr::read_volatile((e + 1) as *const u8)) };
            if el < 2 {
                break;
            }
            match ty {
                0 if rd32(e + 4) & 1 != 0 => n += 1,
                9 if rd32(e + 8) & 1 != 0 => n += 1,
                _ => {}
            }
            e += el as u64;
        }
        return Some(n);
    }
    None
}

/// Starts the APs and waits for `expected - 1` of them (at most 2 s). Returns the CPU count.
pub fn start_aps(expected: usize) -> usize {
    let want = expected.clamp(1, MAX_KCPUS);
    if want <= 1 {
        return 1;
    }
    // SAFETY: the trampoline's bytes are copied to TRAMPOLINE (reserved low memory, mm.rs
    // invariant 4), identity-mapped; ap_mode is read by the APs only after the SIPI.
    unsafe {
        let start = core::ptr::addr_of!(boot::ap_tramp_start);
        let len = core::ptr::addr_of!(boot::ap_tramp_end) as usize - start as usize;
        core::ptr::copy_nonoverlapping(start, TRAMPOLINE as *mut u8, len);
        core::ptr::write_volatile(core::ptr::addr_of_mut!(boot::ap_mode), 1);
    }
    let vector = (TRAMPOLINE >> 12) as u32;
    arch::ipi_all_but_self(0x0000_4500); // INIT
    arch::delay_us(10_000);
    for _ in 0..2 {
        arch::ipi_all_but_self(0x0000_4600 | vector); // SIPI
        arch::delay_us(200);
        if AP_ARRIVED.load(Ordering::Acquire) as usize + 1 >= want {
            break;
        }
    }
    let t0 = arch::rdtsc();
    while (AP_ARRIVED.load(Ordering::Acquire) as usize) + 1 < want && arch::tsc_ns(arch::rdtsc() - t0) < 2_000_000_000 {
        core::hint::spin_loop();
    }
    let n = (AP_ARRIVED.load(Ordering::Acquire) as usize + 1).min(want);
    NR_CPUS.store(n as u32, Ordering::Release);
    n
}
