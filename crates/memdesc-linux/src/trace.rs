//! A streaming parser for ftrace **text** output (`trace_pipe` / `trace`) of the memory events
//! that `memdesc capture` records.
//!
//! A line looks like
//! ```text
//!             bash-3012    [001] .....   290.788702: mm_page_alloc: page=0000000087ba2855 pfn=0x129a8b order=0 migratetype=1 gfp_flags=GFP_HIGHUSER_MOVABLE|__GFP_COMP
//! ```
//! i.e. `COMM-PID [CPU] FLAGS TIMESTAMP: EVENT: FIELDS`. [`parse_line`] turns one line into a
//! [`Line`]: a typed [`Record`] (whose [`Event`] borrows its strings from the line: no
//! allocation per line), a header (`#` lines), a blank line, a `CPU:N [LOST M EVENTS]` marker,
//! or an event whose name this crate does not know — which is counted and skipped, not an
//! error. Anything else is a [`FieldError`] naming the field.
//!
//! [`TraceReader`] streams a file (raw or zstd, detected by its magic number) through a 1 MiB
//! buffer, finds lines with `memchr`, and hands out one [`Record`] at a time
//! ([`TraceReader::next_record`], a lending iterator), keeping [`TraceStats`]. Errors carry the
//! file name and line. A last line cut short (no newline, does not parse) is reported as
//! truncated.
//!
//! Field parsing is positional with a fallback: each key is expected where the kernel prints
//! it, and if it is not there it is searched for later in the line, so formats of older and
//! newer kernels (which add or drop fields) are read as long as the fields this crate needs
//! exist. Pointers printed by the kernel are hashed (`%p`); they are parsed as 64-bit numbers
//! and are only meaningful as identities within one boot.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use serde::Serialize;

use crate::error::{Error, FieldError, ParseError, Result};

/// `%pS`-printed call site (`alloc_inode+0xa3/0xd0`).
pub type CallSite<'a> = &'a str;

/// A `gfp_flags=` value as the kernel printed it (`GFP_KERNEL|__GFP_ZERO`, or `none`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gfp<'a>(pub &'a str);

impl<'a> Gfp<'a> {
    /// Whether `flag` (for example `__GFP_COMP` or `GFP_KERNEL`) is one of the `|`-separated
    /// names.
    pub fn contains(&self, flag: &str) -> bool {
        self.0.split('|').any(|f| f == flag)
    }

    /// The printed names.
    pub fn names(&self) -> impl Iterator<Item = &'a str> {
        self.0.split('|').filter(|f| !f.is_empty() && *f != "none")
    }
}

/// The page-cache identity of an `mm_filemap_*` event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageCacheEvent {
    /// Device major number.
    pub dev_major: u32,
    /// Device minor number.
    pub dev_minor: u32,
    /// Inode number.
    pub ino: u64,
    /// First pfn of the folio.
    pub pfn: u64,
    /// Byte offset of the folio in the file.
    pub offset: u64,
    /// Folio order (0 where the kernel does not print it).
    pub order: u32,
}

/// The flags column of `mm_lru_insertion` (`flags=Ma bd `).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LruFlags {
    /// `M`: mapped.
    pub mapped: bool,
    /// `a` (anonymous) rather than `f` (file).
    pub anon: bool,
    /// `s`: in the swap cache.
    pub swapcache: bool,
    /// `b`: swap-backed.
    pub swapbacked: bool,
    /// `d`: mapped to disk.
    pub mappedtodisk: bool,
    /// `B`: has buffers.
    pub buffers: bool,
}

/// One traced event, typed. Strings borrow from the line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// `kmem:mm_page_alloc`. `pfn` is `None` for a failed allocation.
    PageAlloc {
        /// First pfn of the block.
        pfn: Option<u64>,
        /// Block order.
        order: u32,
        /// Migrate type (0 unmovable, 1 movable, 2 reclaimable, ...; -1 when unknown).
        migratetype: i32,
        /// GFP flags.
        gfp: Gfp<'a>,
    },
    /// `kmem:mm_page_free`.
    PageFree {
        /// First pfn of the block.
        pfn: u64,
        /// Block order.
        order: u32,
    },
    /// `kmem:mm_page_free_batched` (always order 0).
    PageFreeBatched {
        /// The pfn.
        pfn: u64,
    },
    /// `kmem:kmalloc`.
    Kmalloc {
        /// Caller.
        call_site: CallSite<'a>,
        /// Hashed object pointer.
        ptr: u64,
        /// Bytes requested.
        bytes_req: u64,
        /// Bytes allocated (the size class).
        bytes_alloc: u64,
        /// GFP flags.
        gfp: Gfp<'a>,
        /// NUMA node asked for (-1: any).
        node: i32,
    },
    /// `kmem:kfree`. `ptr` 0 is `kfree(NULL)`.
    Kfree {
        /// Caller.
        call_site: CallSite<'a>,
        /// Hashed object pointer.
        ptr: u64,
    },
    /// `kmem:kmem_cache_alloc`.
    KmemCacheAlloc {
        /// Caller.
        call_site: CallSite<'a>,
        /// Hashed object pointer.
        ptr: u64,
        /// Cache name (kernels before 6.0 do not print it).
        name: Option<&'a str>,
        /// Bytes requested.
        bytes_req: u64,
        /// Bytes allocated (the cache's object size).
        bytes_alloc: u64,
        /// GFP flags.
        gfp: Gfp<'a>,
        /// NUMA node asked for (-1: any).
        node: i32,
    },
    /// `kmem:kmem_cache_free`.
    KmemCacheFree {
        /// Caller.
        call_site: CallSite<'a>,
        /// Hashed object pointer.
        ptr: u64,
        /// Cache name (kernels before 6.0 do not print it).
        name: Option<&'a str>,
    },
    /// `filemap:mm_filemap_add_to_page_cache`.
    FilemapAdd(PageCacheEvent),
    /// `filemap:mm_filemap_delete_from_page_cache`.
    FilemapDelete(PageCacheEvent),
    /// `pagemap:mm_lru_insertion`.
    LruInsertion {
        /// First pfn of the folio.
        pfn: u64,
        /// LRU list (0 inactive anon, 1 active anon, 2 inactive file, 3 active file,
        /// 4 unevictable).
        lru: u32,
        /// The folio's flags.
        flags: LruFlags,
    },
    /// `vmalloc:alloc_vmap_area`.
    AllocVmapArea {
        /// Start of the area (0 when it failed).
        addr: u64,
        /// Bytes.
        size: u64,
        /// Alignment.
        align: u64,
        /// Lowest acceptable address.
        vstart: u64,
        /// Highest acceptable address.
        vend: u64,
        /// Whether the allocation failed.
        failed: bool,
    },
    /// `vmalloc:free_vmap_area_noflush`.
    FreeVmapArea {
        /// Start of the area.
        va_start: u64,
        /// Lazily freed pages pending.
        nr_lazy: u64,
        /// Threshold of the lazy purge.
        nr_lazy_max: u64,
    },
    /// `page_pool:page_pool_state_hold`.
    PagePoolHold {
        /// Hashed pool pointer.
        pool: u64,
        /// Hashed netmem (or page) pointer.
        netmem: u64,
        /// The page's pfn.
        pfn: u64,
        /// Hold counter.
        hold: u32,
    },
    /// `page_pool:page_pool_state_release`.
    PagePoolRelease {
        /// Hashed pool pointer.
        pool: u64,
        /// Hashed netmem (or page) pointer.
        netmem: u64,
        /// The page's pfn.
        pfn: u64,
        /// Release counter.
        release: u32,
    },
    /// `migrate:mm_migrate_pages` (one call of `migrate_pages()`).
    MigratePages {
        /// Pages migrated.
        succeeded: u64,
        /// Pages that failed.
        failed: u64,
        /// THPs migrated.
        thp_succeeded: u64,
        /// THPs that failed.
        thp_failed: u64,
        /// THPs split.
        thp_split: u64,
        /// Large folios split (0 where not printed).
        split: u64,
        /// `MIGRATE_ASYNC`, `MIGRATE_SYNC_LIGHT`, `MIGRATE_SYNC`.
        mode: &'a str,
        /// Why (`compaction`, `numa_misplaced`, ...).
        reason: &'a str,
    },
}

/// The kind of an [`Event`], without its data (for counting).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// [`Event::PageAlloc`].
    PageAlloc,
    /// [`Event::PageFree`].
    PageFree,
    /// [`Event::PageFreeBatched`].
    PageFreeBatched,
    /// [`Event::Kmalloc`].
    Kmalloc,
    /// [`Event::Kfree`].
    Kfree,
    /// [`Event::KmemCacheAlloc`].
    KmemCacheAlloc,
    /// [`Event::KmemCacheFree`].
    KmemCacheFree,
    /// [`Event::FilemapAdd`].
    FilemapAdd,
    /// [`Event::FilemapDelete`].
    FilemapDelete,
    /// [`Event::LruInsertion`].
    LruInsertion,
    /// [`Event::AllocVmapArea`].
    AllocVmapArea,
    /// [`Event::FreeVmapArea`].
    FreeVmapArea,
    /// [`Event::PagePoolHold`].
    PagePoolHold,
    /// [`Event::PagePoolRelease`].
    PagePoolRelease,
    /// [`Event::MigratePages`].
    MigratePages,
}

impl EventKind {
    /// Number of kinds.
    pub const COUNT: usize = 15;
    /// Every kind, in declaration order.
    pub const ALL: [EventKind; Self::COUNT] = [
        EventKind::PageAlloc,
        EventKind::PageFree,
        EventKind::PageFreeBatched,
        EventKind::Kmalloc,
        EventKind::Kfree,
        EventKind::KmemCacheAlloc,
        EventKind::KmemCacheFree,
        EventKind::FilemapAdd,
        EventKind::FilemapDelete,
        EventKind::LruInsertion,
        EventKind::AllocVmapArea,
        EventKind::FreeVmapArea,
        EventKind::PagePoolHold,
        EventKind::PagePoolRelease,
        EventKind::MigratePages,
    ];

    /// The tracepoint's name as it appears in the text.
    pub const fn tracepoint(self) -> &'static str {
        match self {
            EventKind::PageAlloc => "mm_page_alloc",
            EventKind::PageFree => "mm_page_free",
            EventKind::PageFreeBatched => "mm_page_free_batched",
            EventKind::Kmalloc => "kmalloc",
            EventKind::Kfree => "kfree",
            EventKind::KmemCacheAlloc => "kmem_cache_alloc",
            EventKind::KmemCacheFree => "kmem_cache_free",
            EventKind::FilemapAdd => "mm_filemap_add_to_page_cache",
            EventKind::FilemapDelete => "mm_filemap_delete_from_page_cache",
            EventKind::LruInsertion => "mm_lru_insertion",
            EventKind::AllocVmapArea => "alloc_vmap_area",
            EventKind::FreeVmapArea => "free_vmap_area_noflush",
            EventKind::PagePoolHold => "page_pool_state_hold",
            EventKind::PagePoolRelease => "page_pool_state_release",
            EventKind::MigratePages => "mm_migrate_pages",
        }
    }

    /// The tracefs path below `events/` (`kmem/mm_page_alloc`), as `capture` enables it.
    pub const fn tracefs_path(self) -> &'static str {
        match self {
            EventKind::PageAlloc => "kmem/mm_page_alloc",
            EventKind::PageFree => "kmem/mm_page_free",
            EventKind::PageFreeBatched => "kmem/mm_page_free_batched",
            EventKind::Kmalloc => "kmem/kmalloc",
            EventKind::Kfree => "kmem/kfree",
            EventKind::KmemCacheAlloc => "kmem/kmem_cache_alloc",
            EventKind::KmemCacheFree => "kmem/kmem_cache_free",
            EventKind::FilemapAdd => "filemap/mm_filemap_add_to_page_cache",
            EventKind::FilemapDelete => "filemap/mm_filemap_delete_from_page_cache",
            EventKind::LruInsertion => "pagemap/mm_lru_insertion",
            EventKind::AllocVmapArea => "vmalloc/alloc_vmap_area",
            EventKind::FreeVmapArea => "vmalloc/free_vmap_area_noflush",
            EventKind::PagePoolHold => "page_pool/page_pool_state_hold",
            EventKind::PagePoolRelease => "page_pool/page_pool_state_release",
            EventKind::MigratePages => "migrate/mm_migrate_pages",
        }
    }

    /// The kind whose tracepoint is called `name`.
    pub fn from_tracepoint(name: &[u8]) -> Option<EventKind> {
        Some(match name {
            b"mm_page_alloc" => EventKind::PageAlloc,
            b"mm_page_free" => EventKind::PageFree,
            b"mm_page_free_batched" => EventKind::PageFreeBatched,
            b"kmalloc" => EventKind::Kmalloc,
            b"kfree" => EventKind::Kfree,
            b"kmem_cache_alloc" => EventKind::KmemCacheAlloc,
            b"kmem_cache_free" => EventKind::KmemCacheFree,
            b"mm_filemap_add_to_page_cache" => EventKind::FilemapAdd,
            b"mm_filemap_delete_from_page_cache" => EventKind::FilemapDelete,
            b"mm_lru_insertion" => EventKind::LruInsertion,
            b"alloc_vmap_area" => EventKind::AllocVmapArea,
            b"free_vmap_area_noflush" => EventKind::FreeVmapArea,
            b"page_pool_state_hold" => EventKind::PagePoolHold,
            b"page_pool_state_release" => EventKind::PagePoolRelease,
            b"mm_migrate_pages" => EventKind::MigratePages,
            _ => return None,
        })
    }
}

impl Event<'_> {
    /// This event's kind.
    pub fn kind(&self) -> EventKind {
        match self {
            Event::PageAlloc { .. } => EventKind::PageAlloc,
            Event::PageFree { .. } => EventKind::PageFree,
            Event::PageFreeBatched { .. } => EventKind::PageFreeBatched,
            Event::Kmalloc { .. } => EventKind::Kmalloc,
            Event::Kfree { .. } => EventKind::Kfree,
            Event::KmemCacheAlloc { .. } => EventKind::KmemCacheAlloc,
            Event::KmemCacheFree { .. } => EventKind::KmemCacheFree,
            Event::FilemapAdd(_) => EventKind::FilemapAdd,
            Event::FilemapDelete(_) => EventKind::FilemapDelete,
            Event::LruInsertion { .. } => EventKind::LruInsertion,
            Event::AllocVmapArea { .. } => EventKind::AllocVmapArea,
            Event::FreeVmapArea { .. } => EventKind::FreeVmapArea,
            Event::PagePoolHold { .. } => EventKind::PagePoolHold,
            Event::PagePoolRelease { .. } => EventKind::PagePoolRelease,
            Event::MigratePages { .. } => EventKind::MigratePages,
        }
    }
}

/// One event line: who, where, when, what.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// The task's command name, as printed (may be `<...>`; not necessarily UTF-8).
    pub comm: &'a [u8],
    /// The task's pid.
    pub pid: u32,
    /// The CPU.
    pub cpu: u32,
    /// Timestamp in nanoseconds (for `sec.usec` / `sec.nsec` clocks), or the raw counter.
    pub ts_ns: u64,
    /// The event.
    pub event: Event<'a>,
}

/// What one line of trace text is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// A known event.
    Event(Record<'a>),
    /// A well-formed event line of a tracepoint this crate does not know (skipped).
    Unknown {
        /// The tracepoint's name.
        name: &'a [u8],
    },
    /// A `#` comment/header line (from `trace`, or `##### CPU N buffer started ####`).
    Header,
    /// An empty line.
    Blank,
    /// `CPU:N [LOST M EVENTS]`: the ring buffer overflowed.
    Lost {
        /// Events lost.
        events: u64,
    },
}

// ---------------------------------------------------------------------------------------------
// Field cursor
// ---------------------------------------------------------------------------------------------

struct Cur<'a> {
    s: &'a [u8],
    p: usize,
}

/// Hex digit values (0xff: not a hex digit).
const HEX: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

impl<'a> Cur<'a> {
    #[inline]
    fn new(s: &'a [u8]) -> Self {
        Cur { s, p: 0 }
    }

    #[inline]
    fn skip_spaces(&mut self) {
        while self.p < self.s.len() && self.s[self.p] == b' ' {
            self.p += 1;
        }
    }

    /// Positions the cursor after `key`: right here (the usual case), or at its next
    /// occurrence that starts a word.
    #[inline]
    fn find_key(&mut self, key: &[u8]) -> bool {
        self.skip_spaces();
        let rest = &self.s[self.p..];
        if rest.starts_with(key) {
            self.p += key.len();
            return true;
        }
        let mut from = 0;
        while let Some(i) = memchr::memmem::find(&rest[from..], key) {
            let at = from + i;
            if at == 0 || matches!(rest[at - 1], b' ' | b',') {
                self.p += at + key.len();
                return true;
            }
            from = at + 1;
        }
        false
    }

    #[inline]
    fn key(&mut self, key: &[u8], field: &'static str) -> Result<(), FieldError> {
        if self.find_key(key) {
            Ok(())
        } else {
            Err(FieldError::new(field, "missing"))
        }
    }

    /// The value must end at a space, a comma or the end of the line.
    #[inline]
    fn end_of_value(&self, field: &'static str) -> Result<(), FieldError> {
        match self.s.get(self.p) {
            None | Some(b' ') | Some(b',') => Ok(()),
            Some(_) => Err(FieldError::new(field, "unexpected character after the value")),
        }
    }

    #[inline]
    fn hex(&mut self, field: &'static str) -> Result<u64, FieldError> {
        let rest = &self.s[self.p..];
        let skip = if rest.starts_with(b"0x") || rest.starts_with(b"0X") { 2 } else { 0 };
        let mut v: u64 = 0;
        let mut n = 0;
        for &b in &rest[skip..] {
            let d = HEX[b as usize];
            if d == 0xff {
                break;
            }
            if v >> 60 != 0 {
                return Err(FieldError::new(field, "hexadecimal number too large"));
            }
            v = (v << 4) | d as u64;
            n += 1;
        }
        if n == 0 {
            return Err(FieldError::new(field, "not a hexadecimal number"));
        }
        self.p += skip + n;
        self.end_of_value(field)?;
        Ok(v)
    }

    #[inline]
    fn dec(&mut self, field: &'static str) -> Result<u64, FieldError> {
        let rest = &self.s[self.p..];
        let mut v: u64 = 0;
        let mut n = 0;
        for &b in rest {
            if !b.is_ascii_digit() {
                break;
            }
            v = v
                .checked_mul(10)
                .and_then(|v| v.checked_add((b - b'0') as u64))
                .ok_or(FieldError::new(field, "decimal number too large"))?;
            n += 1;
        }
        if n == 0 {
            return Err(FieldError::new(field, "not a decimal number"));
        }
        self.p += n;
        self.end_of_value(field)?;
        Ok(v)
    }

    #[inline]
    fn dec32(&mut self, field: &'static str) -> Result<u32, FieldError> {
        u32::try_from(self.dec(field)?).map_err(|_| FieldError::new(field, "number too large"))
    }

    #[inline]
    fn signed(&mut self, field: &'static str) -> Result<i32, FieldError> {
        let neg = self.s.get(self.p) == Some(&b'-');
        if neg {
            self.p += 1;
        }
        let v = self.dec(field)?;
        let v = i64::try_from(v).map_err(|_| FieldError::new(field, "number too large"))?;
        let v = if neg { -v } else { v };
        i32::try_from(v).map_err(|_| FieldError::new(field, "number out of range"))
    }

    /// A run of non-space bytes (may be empty).
    #[inline]
    fn word(&mut self) -> &'a [u8] {
        let rest = &self.s[self.p..];
        let n = memchr::memchr(b' ', rest).unwrap_or(rest.len());
        self.p += n;
        &rest[..n]
    }

    #[inline]
    fn str_word(&mut self, field: &'static str) -> Result<&'a str, FieldError> {
        let w = self.word();
        if w.is_empty() {
            return Err(FieldError::new(field, "empty"));
        }
        std::str::from_utf8(w).map_err(|_| FieldError::new(field, "invalid UTF-8"))
    }

    #[inline]
    fn opt_key(&mut self, key: &[u8]) -> bool {
        let save = self.p;
        if self.find_key(key) {
            true
        } else {
            self.p = save;
            false
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Line parsing
// ---------------------------------------------------------------------------------------------

/// Parses the `sec.frac` (or plain integer) timestamp, including the trailing `:`.
fn timestamp(tok: &[u8]) -> Result<u64, FieldError> {
    const F: &str = "timestamp";
    let tok = tok.strip_suffix(b":").ok_or(FieldError::new(F, "missing `:` after the timestamp"))?;
    let (int, frac) = match memchr::memchr(b'.', tok) {
        Some(i) => (&tok[..i], Some(&tok[i + 1..])),
        None => (tok, None),
    };
    let mut c = Cur::new(int);
    let secs = c.dec(F)?;
    if c.p != int.len() {
        return Err(FieldError::new(F, "not a number"));
    }
    let Some(frac) = frac else {
        return Ok(secs);
    };
    if frac.is_empty() || frac.len() > 9 || !frac.iter().all(u8::is_ascii_digit) {
        return Err(FieldError::new(F, "bad fractional part"));
    }
    let mut f: u64 = 0;
    for &b in frac {
        f = f * 10 + (b - b'0') as u64;
    }
    for _ in frac.len()..9 {
        f *= 10;
    }
    secs.checked_mul(1_000_000_000).and_then(|s| s.checked_add(f)).ok_or(FieldError::new(F, "too large"))
}

/// Finds ` [CPU] ` and returns (index of `[`, cpu, index after `]`).
#[inline]
fn find_cpu(line: &[u8]) -> Option<(usize, u32, usize)> {
    for i in memchr::memchr_iter(b'[', line) {
        if i == 0 || line[i - 1] != b' ' {
            continue;
        }
        let mut j = i + 1;
        let mut cpu: u32 = 0;
        while j < line.len() && line[j].is_ascii_digit() && j - i <= 6 {
            cpu = cpu * 10 + (line[j] - b'0') as u32;
            j += 1;
        }
        if j > i + 1 && line.get(j) == Some(&b']') && j - i <= 7 {
            return Some((i, cpu, j + 1));
        }
    }
    None
}

#[inline]
fn trim_end_spaces(s: &[u8]) -> &[u8] {
    let mut e = s.len();
    while e > 0 && s[e - 1] == b' ' {
        e -= 1;
    }
    &s[..e]
}

/// Parses `CPU:N [LOST M EVENTS]`.
fn lost_line(line: &[u8]) -> Option<u64> {
    let rest = line.strip_prefix(b"CPU:")?;
    let i = memchr::memmem::find(rest, b"[LOST ")?;
    let mut c = Cur::new(&rest[i + 6..]);
    let n = c.dec("lost").ok()?;
    c.s[c.p..].starts_with(b" EVENTS]").then_some(n)
}

/// A line taken apart without borrowing it (byte ranges into the line), so that the reader
/// can skip lines and keep its buffer mutable.
#[derive(Clone, Copy, Debug)]
enum Split {
    Blank,
    Header,
    Lost(u64),
    Event {
        comm: (usize, usize),
        pid: u32,
        cpu: u32,
        ts_ns: u64,
        name: (usize, usize),
        fields: (usize, usize),
        kind: Option<EventKind>,
    },
}

fn split_line(line: &[u8]) -> Result<Split, FieldError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Some(first) = line.iter().position(|&b| b != b' ' && b != b'\t') else {
        return Ok(Split::Blank);
    };
    if line[first] == b'#' {
        return Ok(Split::Header);
    }
    if let Some(n) = lost_line(&line[first..]) {
        return Ok(Split::Lost(n));
    }

    // COMM-PID [CPU]
    let (lb, cpu, after_cpu) = find_cpu(line).ok_or(FieldError::new("cpu", "missing `[CPU]` column"))?;
    let mut left = trim_end_spaces(&line[..lb]);
    if left.last() == Some(&b')') {
        // `record-tgid` option: `comm-pid (tgid)`
        if let Some(o) = memchr::memrchr(b'(', left) {
            left = trim_end_spaces(&left[..o]);
        }
    }
    let dash = memchr::memrchr(b'-', left).ok_or(FieldError::new("pid", "missing `COMM-PID`"))?;
    let mut pc = Cur::new(&left[dash + 1..]);
    let pid = pc.dec32("pid")?;
    if pc.p != left.len() - dash - 1 {
        return Err(FieldError::new("pid", "not a number"));
    }
    let comm_start = left[..dash].iter().position(|&b| b != b' ').unwrap_or(dash);

    // [FLAGS] TIMESTAMP:
    let mut c = Cur::new(line);
    c.p = after_cpu;
    c.skip_spaces();
    let mut tok = c.word();
    if !tok.ends_with(b":") {
        // the irq/preempt flags column
        c.skip_spaces();
        tok = c.word();
    }
    let ts_ns = timestamp(tok)?;

    // EVENT:
    c.skip_spaces();
    let name_start = c.p;
    let colon = memchr::memchr(b':', &line[name_start..]).ok_or(FieldError::new("event", "missing `EVENT:`"))?;
    let name = &line[name_start..name_start + colon];
    let kind = EventKind::from_tracepoint(name);
    let valid = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.');
    if kind.is_none() && (name.is_empty() || !name.iter().all(valid)) {
        return Err(FieldError::new("event", "not an event name"));
    }
    let mut fields = name_start + colon + 1;
    if line.get(fields) == Some(&b' ') {
        fields += 1;
    }
    Ok(Split::Event {
        comm: (comm_start, dash),
        pid,
        cpu,
        ts_ns,
        name: (name_start, name_start + colon),
        fields: (fields, line.len()),
        kind,
    })
}

/// Turns a split line into a [`Line`].
fn finish_line(line: &[u8], split: Split) -> Result<Line<'_>, FieldError> {
    Ok(match split {
        Split::Blank => Line::Blank,
        Split::Header => Line::Header,
        Split::Lost(events) => Line::Lost { events },
        Split::Event { comm, pid, cpu, ts_ns, name, fields, kind } => match kind {
            None => Line::Unknown { name: &line[name.0..name.1] },
            Some(kind) => Line::Event(Record {
                comm: &line[comm.0..comm.1],
                pid,
                cpu,
                ts_ns,
                event: parse_fields(kind, &line[fields.0..fields.1])?,
            }),
        },
    })
}

/// Parses one line (without its newline) of ftrace text output.
pub fn parse_line(line: &[u8]) -> Result<Line<'_>, FieldError> {
    finish_line(line, split_line(line)?)
}

fn is_null_ptr(w: &[u8]) -> bool {
    w == b"(null)" || (!w.is_empty() && w.iter().all(|&b| b == b'0'))
}

fn page_cache(c: &mut Cur<'_>) -> Result<PageCacheEvent, FieldError> {
    c.key(b"dev ", "dev")?;
    let major = c.s[c.p..].iter().position(|&b| b == b':').ok_or(FieldError::new("dev", "expected `MAJOR:MINOR`"))?;
    let mut mc = Cur::new(&c.s[c.p..c.p + major]);
    let dev_major = mc.dec32("dev")?;
    c.p += major + 1;
    let dev_minor = c.dec32("dev")?;
    c.key(b"ino ", "ino")?;
    let ino = c.hex("ino")?;
    c.key(b"pfn=", "pfn")?;
    let pfn = c.hex("pfn")?;
    c.key(b"ofs=", "ofs")?;
    let offset = c.dec("ofs")?;
    let order = if c.opt_key(b"order=") { c.dec32("order")? } else { 0 };
    Ok(PageCacheEvent { dev_major, dev_minor, ino, pfn, offset, order })
}

fn parse_fields(kind: EventKind, fields: &[u8]) -> Result<Event<'_>, FieldError> {
    let mut c = Cur::new(fields);
    Ok(match kind {
        EventKind::PageAlloc => {
            c.key(b"page=", "page")?;
            let page = c.word();
            c.key(b"pfn=", "pfn")?;
            let pfn = c.hex("pfn")?;
            c.key(b"order=", "order")?;
            let order = c.dec32("order")?;
            c.key(b"migratetype=", "migratetype")?;
            let migratetype = c.signed("migratetype")?;
            c.key(b"gfp_flags=", "gfp_flags")?;
            let gfp = Gfp(c.str_word("gfp_flags")?);
            let pfn = if pfn == 0 && is_null_ptr(page) { None } else { Some(pfn) };
            Event::PageAlloc { pfn, order, migratetype, gfp }
        }
        EventKind::PageFree => {
            if c.opt_key(b"page=") {
                c.word();
            }
            c.key(b"pfn=", "pfn")?;
            let pfn = c.hex("pfn")?;
            c.key(b"order=", "order")?;
            let order = c.dec32("order")?;
            Event::PageFree { pfn, order }
        }
        EventKind::PageFreeBatched => {
            if c.opt_key(b"page=") {
                c.word();
            }
            c.key(b"pfn=", "pfn")?;
            Event::PageFreeBatched { pfn: c.hex("pfn")? }
        }
        EventKind::Kmalloc | EventKind::KmemCacheAlloc => {
            c.key(b"call_site=", "call_site")?;
            let call_site = c.str_word("call_site")?;
            c.key(b"ptr=", "ptr")?;
            let ptr = c.hex("ptr")?;
            let name =
                if kind == EventKind::KmemCacheAlloc && c.opt_key(b"name=") { Some(c.str_word("name")?) } else { None };
            c.key(b"bytes_req=", "bytes_req")?;
            let bytes_req = c.dec("bytes_req")?;
            c.key(b"bytes_alloc=", "bytes_alloc")?;
            let bytes_alloc = c.dec("bytes_alloc")?;
            c.key(b"gfp_flags=", "gfp_flags")?;
            let gfp = Gfp(c.str_word("gfp_flags")?);
            let node = if c.opt_key(b"node=") { c.signed("node")? } else { -1 };
            if kind == EventKind::Kmalloc {
                Event::Kmalloc { call_site, ptr, bytes_req, bytes_alloc, gfp, node }
            } else {
                Event::KmemCacheAlloc { call_site, ptr, name, bytes_req, bytes_alloc, gfp, node }
            }
        }
        EventKind::Kfree | EventKind::KmemCacheFree => {
            c.key(b"call_site=", "call_site")?;
            let call_site = c.str_word("call_site")?;
            c.key(b"ptr=", "ptr")?;
            let ptr = c.hex("ptr")?;
            if kind == EventKind::Kfree {
                Event::Kfree { call_site, ptr }
            } else {
                let name = if c.opt_key(b"name=") { Some(c.str_word("name")?) } else { None };
                Event::KmemCacheFree { call_site, ptr, name }
            }
        }
        EventKind::FilemapAdd => Event::FilemapAdd(page_cache(&mut c)?),
        EventKind::FilemapDelete => Event::FilemapDelete(page_cache(&mut c)?),
        EventKind::LruInsertion => {
            if c.opt_key(b"folio=") || c.opt_key(b"page=") {
                c.word();
            }
            c.key(b"pfn=", "pfn")?;
            let pfn = c.hex("pfn")?;
            c.key(b"lru=", "lru")?;
            let lru = c.dec32("lru")?;
            c.key(b"flags=", "flags")?;
            let f = &c.s[c.p..];
            if f.len() < 6 {
                return Err(FieldError::new("flags", "expected 6 flag columns"));
            }
            let ok = matches!(f[0], b'M' | b' ')
                && matches!(f[1], b'a' | b'f')
                && matches!(f[2], b's' | b' ')
                && matches!(f[3], b'b' | b' ')
                && matches!(f[4], b'd' | b' ')
                && matches!(f[5], b'B' | b' ');
            if !ok {
                return Err(FieldError::new("flags", "unknown flag letter"));
            }
            Event::LruInsertion {
                pfn,
                lru,
                flags: LruFlags {
                    mapped: f[0] == b'M',
                    anon: f[1] == b'a',
                    swapcache: f[2] == b's',
                    swapbacked: f[3] == b'b',
                    mappedtodisk: f[4] == b'd',
                    buffers: f[5] == b'B',
                },
            }
        }
        EventKind::AllocVmapArea => {
            c.key(b"va_start:", "va_start")?;
            c.skip_spaces();
            let addr = c.dec("va_start")?;
            c.key(b"size=", "size")?;
            let size = c.dec("size")?;
            c.key(b"align=", "align")?;
            let align = c.dec("align")?;
            c.key(b"vstart=", "vstart")?;
            let vstart = c.hex("vstart")?;
            c.key(b"vend=", "vend")?;
            let vend = c.hex("vend")?;
            c.key(b"failed=", "failed")?;
            let failed = c.signed("failed")? != 0;
            Event::AllocVmapArea { addr, size, align, vstart, vend, failed }
        }
        EventKind::FreeVmapArea => {
            c.key(b"va_start=", "va_start")?;
            let va_start = c.hex("va_start")?;
            c.key(b"nr_lazy=", "nr_lazy")?;
            let nr_lazy = c.dec("nr_lazy")?;
            c.key(b"nr_lazy_max=", "nr_lazy_max")?;
            let nr_lazy_max = c.dec("nr_lazy_max")?;
            Event::FreeVmapArea { va_start, nr_lazy, nr_lazy_max }
        }
        EventKind::PagePoolHold | EventKind::PagePoolRelease => {
            c.key(b"page_pool=", "page_pool")?;
            let pool = c.hex("page_pool")?;
            let netmem = if c.opt_key(b"netmem=") || c.opt_key(b"page=") {
                c.hex("netmem")?
            } else {
                return Err(FieldError::new("netmem", "missing"));
            };
            c.key(b"pfn=", "pfn")?;
            let pfn = c.hex("pfn")?;
            if kind == EventKind::PagePoolHold {
                c.key(b"hold=", "hold")?;
                Event::PagePoolHold { pool, netmem, pfn, hold: c.dec32("hold")? }
            } else {
                c.key(b"release=", "release")?;
                Event::PagePoolRelease { pool, netmem, pfn, release: c.dec32("release")? }
            }
        }
        EventKind::MigratePages => {
            c.key(b"nr_succeeded=", "nr_succeeded")?;
            let succeeded = c.dec("nr_succeeded")?;
            c.key(b"nr_failed=", "nr_failed")?;
            let failed = c.dec("nr_failed")?;
            let opt = |c: &mut Cur<'_>, key: &[u8], f: &'static str| {
                if c.opt_key(key) {
                    c.dec(f)
                } else {
                    Ok(0)
                }
            };
            let thp_succeeded = opt(&mut c, b"nr_thp_succeeded=", "nr_thp_succeeded")?;
            let thp_failed = opt(&mut c, b"nr_thp_failed=", "nr_thp_failed")?;
            let thp_split = opt(&mut c, b"nr_thp_split=", "nr_thp_split")?;
            let split = opt(&mut c, b"nr_split=", "nr_split")?;
            c.key(b"mode=", "mode")?;
            let mode = c.str_word("mode")?;
            c.key(b"reason=", "reason")?;
            let reason = c.str_word("reason")?;
            Event::MigratePages { succeeded, failed, thp_succeeded, thp_failed, thp_split, split, mode, reason }
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Streaming reader
// ---------------------------------------------------------------------------------------------

/// Counts kept by a [`TraceReader`]: every line is accounted for exactly once as an event,
/// an unknown event, a header, a blank line or a lost-events marker.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TraceStats {
    /// Lines read.
    pub lines: u64,
    /// Known events parsed.
    pub events: u64,
    /// Known events per kind, indexed like [`EventKind::ALL`].
    pub by_kind: [u64; EventKind::COUNT],
    /// Event lines of tracepoints this crate does not know (skipped).
    pub unknown: u64,
    /// Those per tracepoint name.
    pub unknown_by_name: BTreeMap<String, u64>,
    /// `#` lines.
    pub headers: u64,
    /// Empty lines.
    pub blank: u64,
    /// `[LOST N EVENTS]` markers.
    pub lost_markers: u64,
    /// Sum of N over those markers.
    pub lost_events: u64,
}

impl TraceStats {
    /// Known events of `kind`.
    pub fn count(&self, kind: EventKind) -> u64 {
        self.by_kind[kind as usize]
    }

    fn note(&mut self, line: &Line<'_>) {
        match line {
            Line::Event(r) => {
                self.events += 1;
                self.by_kind[r.event.kind() as usize] += 1;
            }
            Line::Unknown { name } => {
                self.unknown += 1;
                if let Some(n) = self.unknown_by_name.get_mut(String::from_utf8_lossy(name).as_ref()) {
                    *n += 1;
                } else {
                    self.unknown_by_name.insert(String::from_utf8_lossy(name).into_owned(), 1);
                }
            }
            Line::Header => self.headers += 1,
            Line::Blank => self.blank += 1,
            Line::Lost { events } => {
                self.lost_markers += 1;
                self.lost_events = self.lost_events.saturating_add(*events);
            }
        }
    }
}

/// The longest line accepted.
pub const MAX_LINE: usize = 1 << 20;

/// zstd's frame magic number, little-endian on disk.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Streams records out of ftrace text.
pub struct TraceReader<R> {
    name: String,
    inner: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    line_no: u64,
    stats: TraceStats,
}

/// Reads the first bytes of `r` to tell zstd from plain text, and returns a reader of text.
fn sniff(mut r: Box<dyn Read>, path: &Path) -> Result<Box<dyn Read>> {
    let mut head = [0u8; 4];
    let mut n = 0;
    while n < 4 {
        match r.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(path, e)),
        }
    }
    let chained: Box<dyn Read> = Box::new(io::Cursor::new(head[..n].to_vec()).chain(r));
    let named_zst = path.extension().is_some_and(|e| e == "zst");
    if named_zst && (n < 4 || head != ZSTD_MAGIC) {
        // Reading it as text would report a missing column of line 1 instead.
        return Err(Error::io(
            path,
            io::Error::new(
                io::ErrorKind::InvalidData,
                "not a zstd stream: the name ends in .zst but the file does not start with zstd's magic number",
            ),
        ));
    }
    if n == 4 && head == ZSTD_MAGIC {
        let d = zstd::stream::read::Decoder::new(chained).map_err(|e| Error::io(path, e))?;
        Ok(Box::new(d))
    } else {
        Ok(chained)
    }
}

impl TraceReader<Box<dyn Read>> {
    /// Opens a trace file, raw text or zstd-compressed (recognised by its magic number). A file
    /// named `*.zst` that is not a zstd stream is an error ("not a zstd stream").
    pub fn open(path: &Path) -> Result<Self> {
        let f = File::open(path).map_err(|e| Error::io(path, e))?;
        let r = sniff(Box::new(f), path)?;
        Ok(TraceReader::new(path.display().to_string(), r))
    }
}

impl<R: Read> TraceReader<R> {
    /// A reader of text from `inner`; `name` is used in error messages.
    pub fn new(name: impl Into<String>, inner: R) -> Self {
        TraceReader {
            name: name.into(),
            inner,
            buf: vec![0; 1 << 20],
            start: 0,
            end: 0,
            eof: false,
            line_no: 0,
            stats: TraceStats::default(),
        }
    }

    /// The counts so far.
    pub fn stats(&self) -> &TraceStats {
        &self.stats
    }

    /// The number of the line last read (1-based).
    pub fn line_no(&self) -> u64 {
        self.line_no
    }

    /// Finds the next line; returns its byte range in `buf` and whether it was the final,
    /// newline-less line.
    fn next_line(&mut self) -> Result<Option<(usize, usize, bool)>> {
        loop {
            if let Some(i) = memchr::memchr(b'\n', &self.buf[self.start..self.end]) {
                let s = self.start;
                self.start += i + 1;
                return Ok(Some((s, s + i, false)));
            }
            if self.eof {
                if self.start < self.end {
                    let s = self.start;
                    self.start = self.end;
                    return Ok(Some((s, self.end, true)));
                }
                return Ok(None);
            }
            // Compact and refill.
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.end == self.buf.len() {
                if self.buf.len() >= MAX_LINE {
                    return Err(ParseError::new(
                        &self.name,
                        self.line_no + 1,
                        "line",
                        format!("longer than {MAX_LINE} bytes"),
                    )
                    .into());
                }
                let n = (self.buf.len() * 2).min(MAX_LINE);
                self.buf.resize(n, 0);
            }
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(ParseError::new(
                        &self.name,
                        self.line_no + 1,
                        "data",
                        format!("read failed (truncated or corrupt input?): {e}"),
                    )
                    .into())
                }
            }
        }
    }

    /// The next known event, skipping (and counting) headers, blank lines, lost-event markers
    /// and unknown events. `Ok(None)` at the end of the input.
    pub fn next_record(&mut self) -> Result<Option<Record<'_>>> {
        let (s, e, last, split) = loop {
            let Some((s, e, last)) = self.next_line()? else {
                return Ok(None);
            };
            self.line_no += 1;
            self.stats.lines += 1;
            let line = &self.buf[s..e];
            let split = split_line(line).map_err(|fe| self.located(fe, last))?;
            match split {
                Split::Event { kind: Some(_), .. } => break (s, e, last, split),
                _ => match finish_line(line, split) {
                    Ok(l) => self.stats.note(&l),
                    Err(fe) => return Err(self.located(fe, last)),
                },
            }
        };
        match finish_line(&self.buf[s..e], split) {
            Ok(l @ Line::Event(r)) => {
                self.stats.note(&l);
                Ok(Some(r))
            }
            Ok(_) => Ok(None), // unreachable: the split said it is a known event
            Err(fe) => Err(self.located(fe, last)),
        }
    }

    fn located(&self, fe: FieldError, last: bool) -> Error {
        let mut pe = fe.at(&self.name, self.line_no);
        if last {
            pe.reason = format!("{} (truncated last line)", pe.reason);
        }
        pe.into()
    }

    /// Reads to the end, calling `f` for every known event; returns the final counts.
    pub fn for_each(mut self, mut f: impl FnMut(&Record<'_>)) -> Result<TraceStats> {
        while let Some(r) = self.next_record()? {
            f(&r);
        }
        Ok(self.stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALLOC: &[u8] = b"            bash-3012    [001] .....   290.788702: mm_page_alloc: page=0000000087ba2855 pfn=0x129a8b order=0 migratetype=1 gfp_flags=GFP_HIGHUSER_MOVABLE|__GFP_COMP";

    fn event(line: &[u8]) -> Record<'_> {
        match parse_line(line).unwrap() {
            Line::Event(r) => r,
            other => panic!("not an event: {other:?}"),
        }
    }

    #[test]
    fn header_fields() {
        let r = event(ALLOC);
        assert_eq!(r.comm, b"bash");
        assert_eq!(r.pid, 3012);
        assert_eq!(r.cpu, 1);
        assert_eq!(r.ts_ns, 290_788_702_000);
        let Event::PageAlloc { pfn, order, migratetype, gfp } = r.event else { panic!("{:?}", r.event) };
        assert_eq!((pfn, order, migratetype), (Some(0x129a8b), 0, 1));
        assert!(gfp.contains("__GFP_COMP"));
        assert!(!gfp.contains("GFP_KERNEL"));
    }

    #[test]
    fn comm_with_spaces_and_dashes() {
        let r =
            event(b" kworker/u4:2-ev-1234    [000] d..2. 1.000000001: mm_page_free: page=00000000aa pfn=0x10 order=3");
        assert_eq!(r.comm, b"kworker/u4:2-ev");
        assert_eq!(r.pid, 1234);
        assert_eq!(r.ts_ns, 1_000_000_001);
        assert_eq!(r.event, Event::PageFree { pfn: 16, order: 3 });
        let r = event(b"Web Content-77 [003] ..... 5.5: kfree: call_site=x+0x1/0x2 ptr=0000000000000000");
        assert_eq!(r.comm, b"Web Content");
        assert_eq!(r.event, Event::Kfree { call_site: "x+0x1/0x2", ptr: 0 });
    }

    #[test]
    fn every_event_format_of_the_data() {
        let lines: &[&[u8]] = &[
            b"bash-1 [000] ..... 1.0: kmalloc: call_site=alloc_pipe_info+0x5d/0x230 ptr=00000000b130a373 bytes_req=176 bytes_alloc=192 gfp_flags=GFP_KERNEL_ACCOUNT|__GFP_ZERO node=-1 accounted=true",
            b"bash-1 [000] ..... 1.0: kmem_cache_alloc: call_site=alloc_inode+0xa3/0xd0 ptr=000000000362a5e5 name=inode_cache bytes_req=616 bytes_alloc=624 gfp_flags=GFP_KERNEL node=-1 accounted=true",
            b"bash-1 [000] ..... 1.0: kmem_cache_free: call_site=__fput+0x141/0x2a0 ptr=000000006329abc6 name=lsm_file_cache",
            b"date-1 [000] ..... 1.0: mm_filemap_add_to_page_cache: dev 0:3 ino fe00000 pfn=0x12cfab ofs=6636204032 order=0",
            b"k-1 [000] d..2. 1.0: mm_filemap_delete_from_page_cache: dev 259:1 ino 10 pfn=0x104dfd ofs=1075818496 order=2",
            b"date-1 [000] d..3. 1.0: mm_lru_insertion: folio=000000003cc1b4aa pfn=0x117a1a lru=3 flags= f   B",
            b"bash-1 [001] ..... 1.0: alloc_vmap_area: va_start: 18446683600620355584 size=20480 align=16384 vstart=0xffffc90000000000 vend=0xffffe8ffffffffff failed=0",
            b"kw-11 [000] ..... 1.0: free_vmap_area_noflush: va_start=0xffffc90003028000 nr_lazy=5260 nr_lazy_max=16384",
            b"irq-1 [000] ..s1. 1.0: page_pool_state_hold: page_pool=00000000deadbeef netmem=00000000cafe is_net_iov=0, pfn=0x1234 hold=7",
            b"irq-1 [000] ..s1. 1.0: page_pool_state_release: page_pool=00000000deadbeef netmem=00000000cafe is_net_iov=0 pfn=0x1234 release=7",
            b"kc-1 [000] ..... 1.0: mm_migrate_pages: nr_succeeded=10 nr_failed=1 nr_thp_succeeded=0 nr_thp_failed=0 nr_thp_split=0 nr_split=0 mode=MIGRATE_ASYNC reason=compaction",
            b"x-1 [000] ..... 1.0: mm_page_free_batched: page=00000000aa pfn=0x99 order=0",
        ];
        let kinds: Vec<EventKind> = lines.iter().map(|l| event(l).event.kind()).collect();
        assert_eq!(
            kinds,
            vec![
                EventKind::Kmalloc,
                EventKind::KmemCacheAlloc,
                EventKind::KmemCacheFree,
                EventKind::FilemapAdd,
                EventKind::FilemapDelete,
                EventKind::LruInsertion,
                EventKind::AllocVmapArea,
                EventKind::FreeVmapArea,
                EventKind::PagePoolHold,
                EventKind::PagePoolRelease,
                EventKind::MigratePages,
                EventKind::PageFreeBatched,
            ]
        );
        assert_eq!(
            event(lines[4]).event,
            Event::FilemapDelete(PageCacheEvent {
                dev_major: 259,
                dev_minor: 1,
                ino: 0x10,
                pfn: 0x104dfd,
                offset: 1075818496,
                order: 2
            })
        );
        let Event::LruInsertion { pfn, lru, flags } = event(lines[5]).event else { unreachable!() };
        assert_eq!((pfn, lru), (0x117a1a, 3));
        assert!(flags.buffers && !flags.anon && !flags.mapped);
        let Event::KmemCacheAlloc { name, bytes_alloc, node, .. } = event(lines[1]).event else { unreachable!() };
        assert_eq!((name, bytes_alloc, node), (Some("inode_cache"), 624, -1));
        let Event::AllocVmapArea { addr, size, failed, .. } = event(lines[6]).event else { unreachable!() };
        assert_eq!((addr, size, failed), (18446683600620355584, 20480, false));
        let Event::PagePoolHold { pfn, hold, .. } = event(lines[8]).event else { unreachable!() };
        assert_eq!((pfn, hold), (0x1234, 7));
    }

    #[test]
    fn failed_page_alloc_has_no_pfn() {
        let r = event(b"a-1 [000] ..... 1.0: mm_page_alloc: page=0000000000000000 pfn=0x0 order=9 migratetype=1 gfp_flags=GFP_TRANSHUGE");
        assert!(matches!(r.event, Event::PageAlloc { pfn: None, order: 9, .. }));
    }

    #[test]
    fn non_event_lines() {
        assert_eq!(parse_line(b"").unwrap(), Line::Blank);
        assert_eq!(parse_line(b"# tracer: nop").unwrap(), Line::Header);
        assert_eq!(parse_line(b"##### CPU 1 buffer started ####").unwrap(), Line::Header);
        assert_eq!(parse_line(b"CPU:1 [LOST 123 EVENTS]").unwrap(), Line::Lost { events: 123 });
        assert_eq!(
            parse_line(b"a-1 [000] ..... 1.0: sched_switch: prev_comm=a").unwrap(),
            Line::Unknown { name: b"sched_switch" }
        );
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse_line(b"a-1 [000] ..... 1.0: mm_page_free: page=0 pfn=0xzz order=0").unwrap_err();
        assert_eq!(e.field, "pfn");
        let e = parse_line(b"a-1 [000] ..... 1.0: mm_page_free: page=0 pfn=0x10").unwrap_err();
        assert_eq!((e.field, e.reason), ("order", "missing"));
        let e = parse_line(b"a-1 [000] ..... 1.x: mm_page_free: page=0 pfn=0x10 order=1").unwrap_err();
        assert_eq!(e.field, "timestamp");
        let e = parse_line(b"garbage").unwrap_err();
        assert_eq!(e.field, "cpu");
        let e = parse_line(b"a-b [000] ..... 1.0: kfree: call_site=x ptr=0").unwrap_err();
        assert_eq!(e.field, "pid");
        let e = parse_line(b"a-1 [000] ..... 1.0: mm_page_free: page=0 pfn=0x10 order=99999999999").unwrap_err();
        assert_eq!(e.field, "order");
    }

    #[test]
    fn reader_counts_every_line_and_reports_truncation() {
        let mut text = Vec::new();
        text.extend_from_slice(b"# header\n\n");
        for _ in 0..3 {
            text.extend_from_slice(ALLOC);
            text.push(b'\n');
        }
        text.extend_from_slice(b"CPU:0 [LOST 5 EVENTS]\n");
        text.extend_from_slice(b"a-1 [000] ..... 1.0: sched_switch: x=1\n");
        text.extend_from_slice(&ALLOC[..ALLOC.len() - 4]); // complete enough to parse
        let stats = TraceReader::new("t", &text[..]).for_each(|_| {}).unwrap();
        assert_eq!(stats.lines, 8);
        assert_eq!(stats.events, 4);
        assert_eq!(stats.count(EventKind::PageAlloc), 4);
        assert_eq!((stats.headers, stats.blank, stats.lost_events), (1, 1, 5));
        assert_eq!(stats.unknown_by_name.get("sched_switch"), Some(&1));
        assert_eq!(stats.lines, stats.events + stats.unknown + stats.headers + stats.blank + stats.lost_markers);

        let mut cut = text.clone();
        cut.extend_from_slice(
            b"\nbash-3012    [001] .....   290.788702: mm_page_alloc: page=0000000087ba2855 pfn=0x12",
        );
        let err = TraceReader::new("t.txt", &cut[..]).for_each(|_| {}).unwrap_err();
        let s = err.to_string();
        assert!(s.starts_with("t.txt:9: field `order`"), "{s}");
        assert!(s.contains("truncated"), "{s}");
    }

    #[test]
    fn a_zst_file_that_is_not_zstd_is_refused_as_such() {
        let dir = std::env::temp_dir().join(format!("memdesc-notzstd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("events.txt.zst");
        let random: Vec<u8> = (0u32..4096).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        std::fs::write(&p, &random).unwrap();
        let e = TraceReader::open(&p).err().expect("random bytes named .zst are refused");
        assert!(e.to_string().contains("not a zstd stream"), "{e}");
        std::fs::write(&p, b"").unwrap();
        assert!(TraceReader::open(&p).is_err(), "an empty .zst file is not a zstd stream");
        // The same bytes without the .zst name are read as text (and fail on a field).
        let t = dir.join("events.txt");
        std::fs::write(&t, &random).unwrap();
        assert!(TraceReader::open(&t).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn reader_handles_lines_across_buffer_refills_and_zstd() {
        let mut text = Vec::new();
        for i in 0..20_000u64 {
            text.extend_from_slice(
                format!("bash-1 [000] ..... 1.{i:06}: mm_page_free: page=00 pfn=0x{i:x} order=0\n").as_bytes(),
            );
        }
        let z = zstd::encode_all(&text[..], 1).unwrap();
        let dir = std::env::temp_dir().join(format!("memdesc-trace-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("events.txt.zst");
        std::fs::write(&p, &z).unwrap();
        let mut sum = 0u64;
        let stats = TraceReader::open(&p)
            .unwrap()
            .for_each(|r| {
                if let Event::PageFree { pfn, .. } = r.event {
                    sum += pfn
                }
            })
            .unwrap();
        assert_eq!(stats.events, 20_000);
        assert_eq!(sum, (0..20_000u64).sum::<u64>());
        // A truncated zstd stream is an error, not a silent short read.
        std::fs::write(&p, &z[..z.len() / 2]).unwrap();
        assert!(TraceReader::open(&p).unwrap().for_each(|_| {}).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
