//! Snapshots of `/proc/kpageflags` and `/proc/kpagecount`, and snapshot directories.
//!
//! Both files hold one little-endian `u64` per pfn, starting at pfn 0. A 25 GiB machine has
//! 6.5 M pfns, so the raw pair is 104 MB; [`KpageSnapshot`] keeps it in about 3 bytes per pfn
//! instead:
//! * **flags** as a `u16` index into a palette of the distinct flag words (a real machine has
//!   a few hundred; should a file hold more than 65 536 distinct words, the store falls back
//!   to plain `u64`s, so arbitrary input still works);
//! * **map counts** as a saturating `u8`, with the exact value of every count ≥ 255 kept in a
//!   sorted side table (the zero page is mapped thousands of times).
//!
//! The files are streamed (never held whole in memory), raw or zstd-compressed. A length that
//! is not a multiple of 8, a truncated zstd frame, or a flags/counts length mismatch is a
//! [`ParseError`] naming the file.
//!
//! A [`Snapshot`] is a directory in the layout of `../shared/data` (`kpageflags[.zst]`,
//! `kpagecount[.zst]`, `zoneinfo`, and optionally `buddyinfo`, `meminfo`, `pagetypeinfo`,
//! `slabinfo`, `vmstat`, `kernel`, `cpus`), or the live machine's `/proc`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::error::{Error, ParseError, Result};
use crate::kpf::PageFlags;
use crate::tables::{BuddyInfo, Meminfo, PageTypeInfo, SlabInfo, Vmstat, ZoneInfo};

/// Flag words, palette-compressed.
#[derive(Clone, Debug)]
enum FlagStore {
    Palette { index: Vec<u16>, palette: Vec<u64> },
    Raw(Vec<u64>),
}

/// Builds a [`FlagStore`] one word at a time.
struct FlagBuilder {
    store: FlagStore,
    lookup: HashMap<u64, u16>,
    last: Option<(u64, u16)>,
}

impl FlagBuilder {
    fn new() -> Self {
        FlagBuilder {
            store: FlagStore::Palette { index: Vec::new(), palette: Vec::new() },
            lookup: HashMap::new(),
            last: None,
        }
    }

    #[inline]
    fn push(&mut self, word: u64) {
        match &mut self.store {
            FlagStore::Raw(v) => v.push(word),
            FlagStore::Palette { index, palette } => {
                if let Some((w, i)) = self.last {
                    if w == word {
                        index.push(i);
                        return;
                    }
                }
                let i = match self.lookup.get(&word) {
                    Some(&i) => i,
                    None => {
                        let Ok(i) = u16::try_from(palette.len()) else {
                            // Too many distinct words for a u16 palette: fall back to raw words.
                            let raw: Vec<u64> = index.iter().map(|&i| palette[i as usize]).collect();
                            self.store = FlagStore::Raw(raw);
                            self.lookup = HashMap::new();
                            self.last = None;
                            self.push(word);
                            return;
                        };
                        palette.push(word);
                        self.lookup.insert(word, i);
                        i
                    }
                };
                self.last = Some((word, i));
                index.push(i);
            }
        }
    }

    fn finish(self) -> FlagStore {
        self.store
    }
}

/// A kpageflags + kpagecount snapshot, indexed by pfn.
#[derive(Clone, Debug)]
pub struct KpageSnapshot {
    flags: FlagStore,
    counts: Vec<u8>,
    /// `(pfn, count)` for every count ≥ 255, sorted by pfn.
    big_counts: Vec<(u64, u64)>,
}

/// Reads little-endian `u64` words from `r` in large chunks and hands each to `f`.
/// Returns the number of words; a trailing partial word is an error naming `file`.
fn for_each_word(file: &str, r: &mut dyn Read, mut f: impl FnMut(u64)) -> Result<u64> {
    const CHUNK: usize = 1 << 20;
    let mut buf = vec![0u8; CHUNK];
    let mut fill = 0usize;
    let mut words = 0u64;
    loop {
        let n = match r.read(&mut buf[fill..]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(ParseError::new(file, 0, "data", format!("read failed after {} words: {e}", words)).into())
            }
        };
        fill += n;
        let whole = fill / 8 * 8;
        for c in buf[..whole].chunks_exact(8) {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            f(u64::from_le_bytes(b));
        }
        words += (whole / 8) as u64;
        buf.copy_within(whole..fill, 0);
        fill -= whole;
    }
    if fill != 0 {
        return Err(ParseError::new(
            file,
            0,
            "length",
            format!("truncated: {} bytes after the last whole 8-byte word (pfn {words})", fill),
        )
        .into());
    }
    Ok(words)
}

impl KpageSnapshot {
    /// Reads a snapshot from two streams of little-endian `u64` words. The names are used in
    /// error messages only.
    pub fn from_readers(
        flags_name: &str,
        flags: &mut dyn Read,
        counts_name: &str,
        counts: &mut dyn Read,
    ) -> Result<Self> {
        let mut fb = FlagBuilder::new();
        let nflags = for_each_word(flags_name, flags, |w| fb.push(w))?;
        let mut cv: Vec<u8> = Vec::with_capacity(usize::try_from(nflags).unwrap_or(0));
        let mut big_counts = Vec::new();
        let ncounts = for_each_word(counts_name, counts, |w| {
            let pfn = cv.len() as u64;
            if w >= 255 {
                big_counts.push((pfn, w));
                cv.push(255);
            } else {
                cv.push(w as u8);
            }
        })?;
        if nflags != ncounts {
            return Err(ParseError::new(
                counts_name,
                0,
                "length",
                format!("{ncounts} pfns, but {flags_name} has {nflags}"),
            )
            .into());
        }
        Ok(KpageSnapshot { flags: fb.finish(), counts: cv, big_counts })
    }

    /// Reads a snapshot from in-memory bytes (raw little-endian words).
    pub fn from_bytes(flags: &[u8], counts: &[u8]) -> Result<Self> {
        Self::from_readers("kpageflags", &mut &flags[..], "kpagecount", &mut &counts[..])
    }

    /// Reads `kpageflags` and `kpagecount` from `dir`, each either raw or as `NAME.zst`.
    pub fn read_dir(dir: &Path) -> Result<Self> {
        let (fname, mut f) = open_maybe_zst(dir, "kpageflags")?;
        let (cname, mut c) = open_maybe_zst(dir, "kpagecount")?;
        Self::from_readers(&fname, &mut f, &cname, &mut c)
    }

    /// Reads the live `/proc/kpageflags` and `/proc/kpagecount` (needs root).
    pub fn read_live() -> Result<Self> {
        Self::read_live_from(Path::new("/proc"))
    }

    /// Reads `kpageflags` and `kpagecount` from a proc mount at `proc`.
    pub fn read_live_from(proc: &Path) -> Result<Self> {
        let fp = proc.join("kpageflags");
        let cp = proc.join("kpagecount");
        let mut f = io::BufReader::with_capacity(1 << 20, File::open(&fp).map_err(|e| Error::io(&fp, e))?);
        let mut c = io::BufReader::with_capacity(1 << 20, File::open(&cp).map_err(|e| Error::io(&cp, e))?);
        Self::from_readers(&fp.display().to_string(), &mut f, &cp.display().to_string(), &mut c)
    }

    /// Number of pfns (the first pfn is 0).
    pub fn len(&self) -> u64 {
        self.counts.len() as u64
    }

    /// Whether the snapshot holds no pfn.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// The flags of `pfn`; pfns beyond the end read as [`KPF_NOPAGE`](crate::kpf::KPF_NOPAGE).
    #[inline]
    pub fn flags(&self, pfn: u64) -> PageFlags {
        let Ok(i) = usize::try_from(pfn) else {
            return PageFlags(1 << crate::kpf::KPF_NOPAGE);
        };
        let w = match &self.flags {
            FlagStore::Palette { index, palette } => index.get(i).and_then(|&p| palette.get(p as usize).copied()),
            FlagStore::Raw(v) => v.get(i).copied(),
        };
        PageFlags(w.unwrap_or(1 << crate::kpf::KPF_NOPAGE))
    }

    /// The map count of `pfn` (0 beyond the end).
    #[inline]
    pub fn count(&self, pfn: u64) -> u64 {
        let Some(&c) = usize::try_from(pfn).ok().and_then(|i| self.counts.get(i)) else {
            return 0;
        };
        if c < 255 {
            return c as u64;
        }
        match self.big_counts.binary_search_by_key(&pfn, |&(p, _)| p) {
            Ok(i) => self.big_counts[i].1,
            Err(_) => 255,
        }
    }

    /// The number of distinct flag words, if the palette representation is in use.
    pub fn palette_len(&self) -> Option<usize> {
        match &self.flags {
            FlagStore::Palette { palette, .. } => Some(palette.len()),
            FlagStore::Raw(_) => None,
        }
    }

    /// Bytes of heap memory held (for the memory-efficiency claim).
    pub fn heap_bytes(&self) -> usize {
        let flags = match &self.flags {
            FlagStore::Palette { index, palette } => index.capacity() * 2 + palette.capacity() * 8,
            FlagStore::Raw(v) => v.capacity() * 8,
        };
        flags + self.counts.capacity() + self.big_counts.capacity() * 16
    }

    /// Calls `f(pfn, flags_palette_key, flags, saturated_count)` for pfns in `[start, end)`
    /// (clipped to the snapshot) — the census's fast path. `flags_palette_key` is equal for
    /// equal flag words (the palette index, or `u32::MAX` without a palette), so callers can
    /// cache per-word work.
    #[inline]
    pub(crate) fn scan(&self, start: u64, end: u64, mut f: impl FnMut(u64, u32, PageFlags, u8)) {
        let len = self.len();
        let s = start.min(len) as usize;
        let e = end.min(len) as usize;
        match &self.flags {
            FlagStore::Palette { index, palette } => {
                for (i, (&p, &c)) in index[s..e].iter().zip(&self.counts[s..e]).enumerate() {
                    let w = palette.get(p as usize).copied().unwrap_or(0);
                    f((s + i) as u64, p as u32, PageFlags(w), c);
                }
            }
            FlagStore::Raw(v) => {
                for (i, (&w, &c)) in v[s..e].iter().zip(&self.counts[s..e]).enumerate() {
                    f((s + i) as u64, u32::MAX, PageFlags(w), c);
                }
            }
        }
    }
}

/// Opens `dir/name.zst` (decompressing) or else `dir/name`. Returns the file name used in
/// error messages and a reader of the raw bytes.
pub fn open_maybe_zst(dir: &Path, name: &str) -> Result<(String, Box<dyn Read>)> {
    let zst = dir.join(format!("{name}.zst"));
    if zst.exists() {
        let f = File::open(&zst).map_err(|e| Error::io(&zst, e))?;
        let d = zstd::stream::read::Decoder::new(f).map_err(|e| Error::io(&zst, e))?;
        return Ok((zst.display().to_string(), Box::new(d)));
    }
    let raw = dir.join(name);
    let f = File::open(&raw).map_err(|e| Error::io(&raw, e))?;
    Ok((raw.display().to_string(), Box::new(io::BufReader::with_capacity(1 << 20, f))))
}

/// A snapshot directory (or the live `/proc`): the kpage pair and the text tables.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Where it came from (a directory, or `/proc`).
    pub source: PathBuf,
    /// kpageflags and kpagecount.
    pub kpage: KpageSnapshot,
    /// `/proc/zoneinfo` (required: it gives the zones' pfn spans).
    pub zoneinfo: ZoneInfo,
    /// `/proc/buddyinfo`, if present.
    pub buddyinfo: Option<BuddyInfo>,
    /// `/proc/meminfo`, if present.
    pub meminfo: Option<Meminfo>,
    /// `/proc/pagetypeinfo`, if present (root-only on the live machine).
    pub pagetypeinfo: Option<PageTypeInfo>,
    /// `/proc/slabinfo`, if present (root-only on the live machine).
    pub slabinfo: Option<SlabInfo>,
    /// `/proc/vmstat`, if present.
    pub vmstat: Option<Vmstat>,
    /// Kernel release (`uname -r`), if recorded.
    pub kernel: Option<String>,
    /// Number of CPUs, if recorded.
    pub cpus: Option<u32>,
    /// For a live read: how far `/proc/buddyinfo`'s free-page count moved while kpageflags was
    /// read (it is read just before and just after; the pages the census counts free were read
    /// in between, so a busy machine legitimately differs by this much). 0 for a directory.
    pub buddyinfo_drift_pages: u64,
}

/// Reads an optional text table: `Ok(None)` if the file does not exist (or, for live /proc,
/// cannot be read for lack of permission), an error if it exists but does not parse.
fn optional<T>(dir: &Path, name: &str, parse: impl FnOnce(&str, &[u8]) -> Result<T, ParseError>) -> Result<Option<T>> {
    let p = dir.join(name);
    match std::fs::read(&p) {
        Ok(bytes) => Ok(Some(parse(&p.display().to_string(), &bytes)?)),
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.kind() == io::ErrorKind::PermissionDenied => Ok(None),
        Err(e) => Err(Error::io(&p, e)),
    }
}

impl Snapshot {
    /// Reads a snapshot directory in the layout of `../shared/data/traces/*/start`.
    pub fn read_dir(dir: &Path) -> Result<Self> {
        let kpage = KpageSnapshot::read_dir(dir)?;
        Self::with_tables(dir, dir, kpage)
    }

    /// Reads the live machine's `/proc` (kpageflags and kpagecount need root).
    pub fn read_live() -> Result<Self> {
        let proc = Path::new("/proc");
        let before = optional(proc, "buddyinfo", BuddyInfo::parse)?;
        let kpage = KpageSnapshot::read_live_from(proc)?;
        let mut s = Self::with_tables(proc, proc, kpage)?;
        if let (Some(b), Some(a)) = (&before, &s.buddyinfo) {
            s.buddyinfo_drift_pages = b.free_pages().abs_diff(a.free_pages());
        }
        s.kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| s.trim().to_owned());
        s.cpus = std::thread::available_parallelism().ok().and_then(|n| u32::try_from(n.get()).ok());
        Ok(s)
    }

    fn with_tables(source: &Path, dir: &Path, kpage: KpageSnapshot) -> Result<Self> {
        let zp = dir.join("zoneinfo");
        let zbytes = std::fs::read(&zp).map_err(|e| Error::io(&zp, e))?;
        let zoneinfo = ZoneInfo::parse(&zp.display().to_string(), &zbytes)?;
        let kernel =
            std::fs::read_to_string(dir.join("kernel")).ok().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
        let cpus = std::fs::read_to_string(dir.join("cpus")).ok().and_then(|s| s.trim().parse().ok());
        Ok(Snapshot {
            source: source.to_owned(),
            kpage,
            zoneinfo,
            buddyinfo: optional(dir, "buddyinfo", BuddyInfo::parse)?,
            meminfo: optional(dir, "meminfo", Meminfo::parse)?,
            pagetypeinfo: optional(dir, "pagetypeinfo", PageTypeInfo::parse)?,
            slabinfo: optional(dir, "slabinfo", SlabInfo::parse)?,
            vmstat: optional(dir, "vmstat", Vmstat::parse)?,
            kernel,
            cpus,
            buddyinfo_drift_pages: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(v: &[u64]) -> Vec<u8> {
        v.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    #[test]
    fn palette_roundtrip_and_big_counts() {
        let flags = [0u64, 1 << 10, 1 << 10, 1 << 7, 0, 1u64 << 40];
        let counts = [0u64, 0, 1, 254, 255, 100_000];
        let s = KpageSnapshot::from_bytes(&words(&flags), &words(&counts)).unwrap();
        assert_eq!(s.len(), 6);
        for (pfn, (&f, &c)) in flags.iter().zip(&counts).enumerate() {
            assert_eq!(s.flags(pfn as u64).0, f);
            assert_eq!(s.count(pfn as u64), c);
        }
        assert_eq!(s.palette_len(), Some(4));
        assert!(s.flags(6).has(crate::kpf::KPF_NOPAGE));
        assert_eq!(s.count(6), 0);
        assert_eq!(s.count(u64::MAX), 0);
    }

    #[test]
    fn palette_overflow_falls_back_to_raw() {
        let flags: Vec<u64> = (0..70_000u64).collect();
        let counts = vec![0u64; flags.len()];
        let s = KpageSnapshot::from_bytes(&words(&flags), &words(&counts)).unwrap();
        assert_eq!(s.palette_len(), None);
        assert_eq!(s.flags(65_535).0, 65_535);
        assert_eq!(s.flags(69_999).0, 69_999);
        assert_eq!(s.flags(3).0, 3);
    }

    #[test]
    fn truncated_and_mismatched_inputs_are_errors() {
        let e = KpageSnapshot::from_bytes(&[0u8; 12], &[0u8; 8]).unwrap_err();
        assert!(e.to_string().contains("kpageflags:0: field `length`"), "{e}");
        let e = KpageSnapshot::from_bytes(&[0u8; 16], &[0u8; 8]).unwrap_err();
        assert!(e.to_string().contains("kpagecount"), "{e}");
    }

    #[test]
    fn truncated_zstd_is_an_error() {
        let raw = words(&[1u64 << 10; 4096]);
        let z = zstd::encode_all(&raw[..], 3).unwrap();
        let cut = &z[..z.len() / 2];
        let mut d = zstd::stream::read::Decoder::new(cut).unwrap();
        let r = KpageSnapshot::from_readers("f.zst", &mut d, "c", &mut &raw[..]);
        assert!(r.is_err());
    }
}
