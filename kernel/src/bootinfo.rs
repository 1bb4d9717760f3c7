//! The boot information QEMU hands over through PVH: the `hvm_start_info` structure, its e820
//! memory map and the kernel command line, copied into kernel memory and checked.
//!
//! Bad input is refused with a message naming the problem, never trusted: overlapping
//! entries, usable RAM that does not start on a page boundary, entries that wrap around,
//! too many entries, too little RAM, and unknown or malformed command-line options.

use core::fmt;

/// `hvm_start_info.magic`.
pub const PVH_MAGIC: u32 = 0x336e_c578;
/// Most e820 entries kept.
pub const MAX_E820: usize = 128;
/// e820 type: usable RAM.
pub const E820_RAM: u32 = 1;
/// Least usable RAM (after the kernel image and the low 1 MiB) this kernel boots with.
pub const MIN_RAM_MIB: u64 = 48;

/// One memory-map entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct E820 {
    /// First byte.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// e820 type (1 usable, 2 reserved, 3 ACPI, 4 NVS, 5 unusable, ...).
    pub kind: u32,
}

impl E820 {
    /// One past the last byte (checked at parse time not to wrap).
    pub fn end(&self) -> u64 {
        self.addr + self.size
    }
}

/// Memmap layout requested on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// One word per page.
    Flat,
    /// One word per 2 MiB area, split on demand.
    TwoLevel,
}

impl Layout {
    /// The name used on the command line and in the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Layout::Flat => "flat",
            Layout::TwoLevel => "two-level",
        }
    }
}

/// Kernel command-line options.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// `memmap=flat|two-level`.
    pub layout: Layout,
    /// `torture_s=N`: seconds of torture (0 skips it).
    pub torture_ms: u64,
    /// `unmapped_mib=N`: RAM registered without a direct map (0: none).
    pub unmapped_mib: u64,
    /// `bench_iters=N`: pairs per benchmark.
    pub bench_iters: u64,
    /// `seed=N`.
    pub seed: u64,
    /// `e820_add=ADDR,SIZE,TYPE`: a debug option that appends an entry to the firmware's map
    /// (to test the validation with corrupt input).
    pub inject: Option<E820>,
    /// `crash=hole|ud|panic|guard|leak|scribble`: a debug option that makes the kernel fail on purpose
    /// (to test the fault handlers, the panic path and that the torture's checks catch a
    /// leaked page or a stray write).
    pub crash: Option<Crash>,
}

/// Deliberate failures (`crash=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Crash {
    /// Read the unmapped region through the address its direct mapping would have: a page fault.
    Hole,
    /// Execute `ud2`: an invalid-opcode exception.
    Ud,
    /// A Rust panic.
    Panic,
    /// Write one byte past a guarded block: the guard page must fault.
    Guard,
    /// The torture leaks one page (allocated, never counted as held): its checks must see it.
    Leak,
    /// The torture overwrites a word of a block it holds: its pattern check must see it.
    Scribble,
}

/// Why the boot information was refused.
#[derive(Clone, Copy, Debug)]
pub enum BootInfoError {
    /// `%ebx` does not point to an `hvm_start_info`.
    BadMagic(u32),
    /// No memory map (start_info version 0 or zero entries).
    NoMemoryMap,
    /// More entries than [`MAX_E820`].
    TooManyEntries(u32),
    /// An entry of size 0 or one that wraps past 2^64.
    BadEntry(usize, E820),
    /// Usable RAM not starting on a 4 KiB boundary.
    Unaligned(usize, E820),
    /// Two entries overlap.
    Overlap(usize, E820, usize, E820),
    /// Usable RAM below [`MIN_RAM_MIB`].
    TooLittleRam {
        /// MiB usable after the low 1 MiB and the kernel image.
        usable_mib: u64,
    },
    /// RAM above what the direct map's static tables cover.
    TooMuchRam(u64),
    /// A command-line option this kernel does not know.
    UnknownOption([u8; 32], usize),
    /// A known option with a value it cannot take.
    BadValue([u8; 32], usize),
}

fn word(w: &[u8; 32], n: usize) -> &str {
    core::str::from_utf8(&w[..n.min(32)]).unwrap_or("<non-utf8>")
}

impl fmt::Display for BootInfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = |f: &mut fmt::Formatter<'_>, i: usize, x: &E820| {
            write!(f, "entry {i} [{:#x}, {:#x}) type {}", x.addr, x.addr.wrapping_add(x.size), x.kind)
        };
        match self {
            BootInfoError::BadMagic(m) => write!(f, "hvm_start_info magic is {m:#x}, not {PVH_MAGIC:#x}"),
            BootInfoError::NoMemoryMap => write!(f, "the boot information has no memory map"),
            BootInfoError::TooManyEntries(n) => write!(f, "memory map has {n} entries, at most {MAX_E820} supported"),
            BootInfoError::BadEntry(i, x) => {
                write!(f, "memory map ")?;
                e(f, *i, x)?;
                write!(f, " is empty or wraps around")
            }
            BootInfoError::Unaligned(i, x) => {
                write!(f, "memory map ")?;
                e(f, *i, x)?;
                write!(f, " is usable RAM that does not start on a 4 KiB boundary")
            }
            BootInfoError::Overlap(i, a, j, b) => {
                write!(f, "memory map ")?;
                e(f, *i, a)?;
                write!(f, " overlaps ")?;
                e(f, *j, b)
            }
            BootInfoError::TooLittleRam { usable_mib } => {
                write!(f, "only {usable_mib} MiB of usable RAM; this kernel needs at least {MIN_RAM_MIB} MiB")
            }
            BootInfoError::TooMuchRam(end) => {
                write!(f, "RAM reaches {:#x}; the direct map covers at most 64 GiB", end)
            }
            BootInfoError::UnknownOption(w, n) => write!(
                f,
                "unknown command-line option '{}' (known: memmap=flat|two-level torture_s= unmapped_mib= bench_iters= seed= e820_add= crash=)",
                word(w, *n)
            ),
            BootInfoError::BadValue(w, n) => write!(f, "bad value in command-line option '{}'", word(w, *n)),
        }
    }
}

/// Everything parsed from the boot information.
pub struct BootInfo {
    /// The memory map, sorted by address.
    pub e820: [E820; MAX_E820],
    /// Entries used.
    pub nr: usize,
    /// Options.
    pub opts: Options,
}

fn parse_u64(s: &str) -> Option<u64> {
    if let Some(h) = s.strip_prefix("0x") {
        u64::from_str_radix(h, 16).ok()
    } else {
        s.parse().ok()
    }
}

fn clip(s: &str) -> ([u8; 32], usize) {
    let mut w = [0u8; 32];
    let n = s.len().min(32);
    w[..n].copy_from_slice(&s.as_bytes()[..n]);
    (w, n)
}

/// Parses the command line.
pub fn parse_cmdline(cmd: &str) -> Result<Options, BootInfoError> {
    let mut o = Options {
        layout: Layout::Flat,
        torture_ms: 3000,
        unmapped_mib: 8,
        bench_iters: 100_000,
        seed: 1,
        inject: None,
        crash: None,
    };
    for w in cmd.split_ascii_whitespace() {
        let (k, v) = w.split_once('=').unwrap_or((w, ""));
        let bad = || {
            let (b, n) = clip(w);
            BootInfoError::BadValue(b, n)
        };
        match k {
            "memmap" => {
                o.layout = match v {
                    "flat" => Layout::Flat,
                    "two-level" => Layout::TwoLevel,
                    _ => return Err(bad()),
                }
            }
            "torture_s" => {
                let ms = v.parse::<f64>().map_err(|_| bad())?;
                if !(0.0..=3600.0).contains(&ms) {
                    return Err(bad());
                }
                o.torture_ms = (ms * 1000.0) as u64;
            }
            "unmapped_mib" => o.unmapped_mib = parse_u64(v).filter(|m| *m <= 1024).ok_or_else(bad)?,
            "bench_iters" => o.bench_iters = parse_u64(v).filter(|n| *n >= 1).ok_or_else(bad)?,
            "seed" => o.seed = parse_u64(v).ok_or_else(bad)?,
            "e820_add" => {
                let mut it = v.split(',');
                let mut next = || it.next().and_then(parse_u64).ok_or_else(bad);
                let (addr, size, kind) = (next()?, next()?, next()?);
                o.inject = Some(E820 { addr, size, kind: kind as u32 });
            }
            "crash" => {
                o.crash = Some(match v {
                    "hole" => Crash::Hole,
                    "ud" => Crash::Ud,
                    "panic" => Crash::Panic,
                    "guard" => Crash::Guard,
                    "leak" => Crash::Leak,
                    "scribble" => Crash::Scribble,
                    _ => return Err(bad()),
                })
            }
            _ => {
                let (b, n) = clip(w);
                return Err(BootInfoError::UnknownOption(b, n));
            }
        }
    }
    Ok(o)
}

/// Reads the `hvm_start_info` at physical address `pa` (identity-mapped: boot.rs item 1).
///
/// # Safety
/// `pa` is the value QEMU passed in `%ebx`: a readable `hvm_start_info` whose pointers name
/// readable memory in the low 4 GiB.
pub unsafe fn read(pa: u64) -> Result<BootInfo, BootInfoError> {
    // SAFETY: the caller's contract; all reads are of QEMU-provided structures in low memory.
    unsafe {
        let rd32 = |a: u64| core::ptr::read_unaligned(a as *const u32);
        let rd64 = |a: u64| core::ptr::read_unaligned(a as *const u64);
        let magic = rd32(pa);
        if magic != PVH_MAGIC {
            return Err(BootInfoError::BadMagic(magic));
        }
        let version = rd32(pa + 4);
        let cmdline = rd64(pa + 24);
        let mut cmd = [0u8; 512];
        let mut n = 0;
        if cmdline != 0 {
            while n < cmd.len() {
                let b = *((cmdline + n as u64) as *const u8);
                if b == 0 {
                    break;
                }
                cmd[n] = b;
                n += 1;
            }
        }
        let cmd = core::str::from_utf8(&cmd[..n]).unwrap_or("");
        crate::kprintln!("command line: '{}'", cmd);
        let opts = parse_cmdline(cmd)?;
        let (map, entries) = if version >= 1 { (rd64(pa + 40), rd32(pa + 48)) } else { (0, 0) };
        if map == 0 || entries == 0 {
            return Err(BootInfoError::NoMemoryMap);
        }
        if entries as usize > MAX_E820 - 1 {
            return Err(BootInfoError::TooManyEntries(entries));
        }
        let mut bi = BootInfo { e820: [E820::default(); MAX_E820], nr: 0, opts };
        for i in 0..entries as u64 {
            let a = map + i * 24;
            let e = E820 { addr: rd64(a), size: rd64(a + 8), kind: rd32(a + 16) };
            // microvm ends its map with an all-zero entry.
            if e.size == 0 && e.kind == 0 {
                continue;
            }
            bi.e820[bi.nr] = e;
            bi.nr += 1;
        }
        if let Some(e) = opts.inject {
            crate::kprintln!("e820_add: injecting [{:#x}, +{:#x}) type {} (debug option)", e.addr, e.size, e.kind);
            bi.e820[bi.nr] = e;
            bi.nr += 1;
        }
        Ok(bi)
    }
}

impl BootInfo {
    /// Prints the map.
    pub fn print(&self) {
        for (i, e) in self.entries().iter().enumerate() {
            let what = match e.kind {
                1 => "usable",
                2 => "reserved",
                3 => "ACPI data",
                4 => "ACPI NVS",
                5 => "unusable",
                _ => "other",
            };
            crate::kprintln!("  e820[{i}] [{:#014x}, {:#014x}) {what}", e.addr, e.addr.wrapping_add(e.size));
        }
    }

    /// The entries.
    pub fn entries(&self) -> &[E820] {
        &self.e820[..self.nr]
    }

    /// Checks the map: no empty or wrapping entry, usable RAM page-aligned at its start (an
    /// unaligned end, like the 639 KiB EBDA boundary, is trimmed later), no overlap. Sorts it.
    pub fn validate(&mut self) -> Result<(), BootInfoError> {
        for (i, e) in self.entries().iter().enumerate() {
            if e.size == 0 || e.addr.checked_add(e.size).is_none() {
                return Err(BootInfoError::BadEntry(i, *e));
            }
            if e.kind == E820_RAM && e.addr % 4096 != 0 {
                return Err(BootInfoError::Unaligned(i, *e));
            }
        }
        for i in 0..self.nr {
            for j in i + 1..self.nr {
                let (a, b) = (self.e820[i], self.e820[j]);
                if a.addr < b.end() && b.addr < a.end() {
                    return Err(BootInfoError::Overlap(i, a, j, b));
                }
            }
        }
        self.e820[..self.nr].sort_unstable_by_key(|e| e.addr);
        Ok(())
    }

    /// Bytes of usable RAM in whole pages.
    pub fn usable_bytes(&self) -> u64 {
        self.entries().iter().filter(|e| e.kind == E820_RAM).map(|e| (e.end() & !4095).saturating_sub(e.addr)).sum()
    }

    /// One past the highest usable byte.
    pub fn ram_end(&self) -> u64 {
        self.entries().iter().filter(|e| e.kind == E820_RAM).map(|e| e.end() & !4095).max().unwrap_or(0)
    }
}
