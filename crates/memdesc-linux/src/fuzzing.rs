//! Bodies of the fuzz targets over this crate's readers (`fuzz/fuzz_targets/`), kept here so
//! the same code also runs in the normal test suite (`tests/fuzz_bodies.rs`) on a toolchain
//! without cargo-fuzz. Each must return on any input, never panic: the readers turn every
//! malformed input into a typed error.
//!
//! Touches nothing but its input.

use crate::snapshot::KpageSnapshot;
use crate::tables::{BuddyInfo, Meminfo, PageTypeInfo, SlabInfo, Vmstat, ZoneInfo};
use crate::trace::{parse_line, TraceReader};

/// The trace parser: the whole input as a trace text stream through [`TraceReader`], and
/// every line through [`parse_line`]. Returns the records read.
pub fn trace(data: &[u8]) -> u64 {
    let mut n = 0u64;
    let _ = TraceReader::new("fuzz", data).for_each(|r| {
        n += 1;
        let _ = r.event.kind();
    });
    for line in data.split(|&b| b == b'\n') {
        let _ = parse_line(line);
    }
    n
}

/// The snapshot reader: the first byte picks where the input splits into `kpageflags` and
/// `kpagecount`; a snapshot that reads is walked completely. Returns its pfn count.
pub fn snapshot(data: &[u8]) -> u64 {
    let Some((&cut, rest)) = data.split_first() else { return 0 };
    let at = (rest.len() * cut as usize / 256) & !7;
    let (flags, counts) = rest.split_at(at.min(rest.len()));
    let Ok(s) = KpageSnapshot::from_bytes(flags, counts) else { return 0 };
    for pfn in 0..s.len() + 2 {
        let _ = s.flags(pfn);
        let _ = s.count(pfn);
    }
    let _ = (s.palette_len(), s.heap_bytes(), s.is_empty());
    s.len()
}

/// The /proc table parsers (the text half of a snapshot directory): the input through each.
pub fn proc_tables(data: &[u8]) {
    let _ = Meminfo::parse("meminfo", data);
    let _ = BuddyInfo::parse("buddyinfo", data);
    let _ = ZoneInfo::parse("zoneinfo", data);
    let _ = PageTypeInfo::parse("pagetypeinfo", data);
    let _ = SlabInfo::parse("slabinfo", data);
    let _ = Vmstat::parse("vmstat", data);
}
