//! Parsers for the text tables of `/proc`: `meminfo`, `buddyinfo`, `zoneinfo`, `pagetypeinfo`,
//! `slabinfo` and `vmstat`.
//!
//! Each parser takes the file's name (only used in error messages) and its bytes, and returns
//! a typed table or a [`ParseError`] naming the file, the 1-based line and the field. The
//! parsers accept what Linux 4.x–6.x print (extra keys are kept, unknown lines inside a zone
//! of `zoneinfo` are skipped) but reject numbers that do not parse, lines cut short and
//! invalid UTF-8; they never panic, whatever the bytes (property-tested).

use serde::Serialize;

use crate::error::ParseError;

/// Splits `text` into `(line number, line)` pairs, rejecting invalid UTF-8 with the line it is on.
fn lines<'a>(file: &'a str, text: &'a [u8]) -> impl Iterator<Item = Result<(u64, &'a str), ParseError>> + 'a {
    text.split(|&b| b == b'\n').enumerate().map(move |(i, raw)| {
        let n = i as u64 + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        std::str::from_utf8(raw).map(|s| (n, s)).map_err(|_| ParseError::new(file, n, "line", "invalid UTF-8"))
    })
}

fn num(file: &str, line: u64, field: &str, s: &str) -> Result<u64, ParseError> {
    s.parse::<u64>().map_err(|_| ParseError::new(file, line, field, format!("`{s}` is not a decimal number")))
}

fn signed(file: &str, line: u64, field: &str, s: &str) -> Result<i64, ParseError> {
    s.parse::<i64>().map_err(|_| ParseError::new(file, line, field, format!("`{s}` is not a decimal number")))
}

/// Parses `Node N, zone NAME` (the common prefix of buddyinfo, zoneinfo and pagetypeinfo
/// rows) and returns the node, the zone name and the rest of the line.
fn node_zone<'a>(file: &str, n: u64, line: &'a str) -> Result<(u32, &'a str, &'a str), ParseError> {
    let rest = line
        .trim_start()
        .strip_prefix("Node")
        .ok_or_else(|| ParseError::new(file, n, "Node", "expected `Node N, zone NAME`"))?;
    let (node, rest) =
        rest.split_once(',').ok_or_else(|| ParseError::new(file, n, "Node", "missing `,` after the node number"))?;
    let node = num(file, n, "Node", node.trim())?;
    let node = u32::try_from(node).map_err(|_| ParseError::new(file, n, "Node", "node number out of range"))?;
    let rest = rest
        .trim_start()
        .strip_prefix("zone")
        .ok_or_else(|| ParseError::new(file, n, "zone", "expected `zone NAME`"))?;
    let rest = rest.trim_start();
    let end = rest.find(|c: char| c.is_whitespace() || c == ',').unwrap_or(rest.len());
    let zone = &rest[..end];
    if zone.is_empty() {
        return Err(ParseError::new(file, n, "zone", "missing zone name"));
    }
    Ok((node, zone, &rest[end..]))
}

// ---------------------------------------------------------------------------------------------
// meminfo
// ---------------------------------------------------------------------------------------------

/// One line of `/proc/meminfo`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MeminfoEntry {
    /// The key (`MemTotal`, `Slab`, `HugePages_Total`, ...).
    pub name: String,
    /// The number as printed.
    pub value: u64,
    /// Whether the number is in KiB (`kB` suffix); otherwise it is a count.
    pub kib: bool,
}

/// `/proc/meminfo`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Meminfo {
    /// The lines in file order.
    pub entries: Vec<MeminfoEntry>,
}

impl Meminfo {
    /// Parses the text of `/proc/meminfo`.
    pub fn parse(file: &str, text: &[u8]) -> Result<Self, ParseError> {
        let mut entries = Vec::new();
        for l in lines(file, text) {
            let (n, line) = l?;
            if line.trim().is_empty() {
                continue;
            }
            let (name, rest) = line.split_once(':').ok_or_else(|| ParseError::new(file, n, "name", "missing `:`"))?;
            let mut words = rest.split_whitespace();
            let value = words.next().ok_or_else(|| ParseError::new(file, n, name, "missing value"))?;
            let value = num(file, n, name, value)?;
            let kib = match words.next() {
                None => false,
                Some("kB") => true,
                Some(other) => return Err(ParseError::new(file, n, name, format!("unknown unit `{other}`"))),
            };
            entries.push(MeminfoEntry { name: name.trim().to_owned(), value, kib });
        }
        Ok(Meminfo { entries })
    }

    /// The number printed for `name`, as printed (KiB for most keys).
    pub fn get(&self, name: &str) -> Option<u64> {
        self.entries.iter().find(|e| e.name == name).map(|e| e.value)
    }

    /// The value of `name` in bytes, for keys printed in kB.
    pub fn bytes(&self, name: &str) -> Option<u64> {
        self.entries.iter().find(|e| e.name == name && e.kib).map(|e| e.value.saturating_mul(1024))
    }
}

// ---------------------------------------------------------------------------------------------
// buddyinfo
// ---------------------------------------------------------------------------------------------

/// One zone of `/proc/buddyinfo`: free blocks per order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BuddyZone {
    /// NUMA node.
    pub node: u32,
    /// Zone name (`DMA`, `DMA32`, `Normal`, `Movable`, ...).
    pub zone: String,
    /// `free[k]`: number of free blocks of order `k`.
    pub free: Vec<u64>,
}

impl BuddyZone {
    /// Free pages in this zone: Σ free\[k\] · 2^k.
    pub fn free_pages(&self) -> u64 {
        self.free
            .iter()
            .enumerate()
            .map(|(k, &n)| n.saturating_mul(1u64.checked_shl(k as u32).unwrap_or(0)))
            .fold(0u64, u64::saturating_add)
    }
}

/// `/proc/buddyinfo`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BuddyInfo {
    /// One row per zone.
    pub zones: Vec<BuddyZone>,
}

impl BuddyInfo {
    /// Parses the text of `/proc/buddyinfo`.
    pub fn parse(file: &str, text: &[u8]) -> Result<Self, ParseError> {
        let mut zones = Vec::new();
        for l in lines(file, text) {
            let (n, line) = l?;
            if line.trim().is_empty() {
                continue;
            }
            let (node, zone, rest) = node_zone(file, n, line)?;
            let free = rest.split_whitespace().map(|w| num(file, n, "free", w)).collect::<Result<Vec<_>, _>>()?;
            if free.is_empty() {
                return Err(ParseError::new(file, n, "free", "no free counts"));
            }
            zones.push(BuddyZone { node, zone: zone.to_owned(), free });
        }
        Ok(BuddyInfo { zones })
    }

    /// Free pages over all zones.
    pub fn free_pages(&self) -> u64 {
        self.zones.iter().map(BuddyZone::free_pages).fold(0, u64::saturating_add)
    }

    /// Free blocks per order summed over zones.
    pub fn blocks_by_order(&self) -> Vec<u64> {
        let mut out = Vec::new();
        for z in &self.zones {
            if out.len() < z.free.len() {
                out.resize(z.free.len(), 0);
            }
            for (k, &n) in z.free.iter().enumerate() {
                out[k] += n;
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// zoneinfo
// ---------------------------------------------------------------------------------------------

/// One zone of `/proc/zoneinfo`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Zone {
    /// NUMA node.
    pub node: u32,
    /// Zone name.
    pub name: String,
    /// Free pages.
    pub free: u64,
    /// Pages in the zone's pfn span, holes included.
    pub spanned: u64,
    /// Pages that exist in the span.
    pub present: u64,
    /// Present pages handed to the page allocator (the others are reserved at boot or, with
    /// deferred struct-page initialisation, not yet initialised).
    pub managed: u64,
    /// First pfn of the span; absent for empty zones.
    pub start_pfn: Option<u64>,
    /// Every other `key value` line of the zone (watermarks and `nr_*` counters), in order.
    pub stats: Vec<(String, u64)>,
}

impl Zone {
    /// The zone's pfn range `[start, end)`, if it spans any pages.
    pub fn span(&self) -> Option<(u64, u64)> {
        let start = self.start_pfn?;
        if self.spanned == 0 {
            return None;
        }
        Some((start, start.saturating_add(self.spanned)))
    }

    /// A `key value` statistic of the zone.
    pub fn stat(&self, key: &str) -> Option<u64> {
        self.stats.iter().find(|(k, _)| k == key).map(|&(_, v)| v)
    }
}

/// `/proc/zoneinfo` (zones only; the per-node statistics are kept in `node_stats`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ZoneInfo {
    /// Zones in file order.
    pub zones: Vec<Zone>,
    /// `(node, key, value)` of the `per-node stats` blocks.
    pub node_stats: Vec<(u32, String, u64)>,
}

impl ZoneInfo {
    /// Parses the text of `/proc/zoneinfo`.
    pub fn parse(file: &str, text: &[u8]) -> Result<Self, ParseError> {
        #[derive(PartialEq)]
        enum Part {
            Zone,
            NodeStats,
            Pagesets,
        }
        let mut out = ZoneInfo::default();
        // (zone, header line, which of spanned/present/managed were seen)
        let mut cur: Option<(Zone, u64, [bool; 3])> = None;
        let mut part = Part::Zone;
        let finish = |z: Option<(Zone, u64, [bool; 3])>, out: &mut ZoneInfo| -> Result<(), ParseError> {
            if let Some((zone, n, seen)) = z {
                for (i, name) in ["spanned", "present", "managed"].iter().enumerate() {
                    if !seen[i] {
                        return Err(ParseError::new(file, n, name, "missing in zone"));
                    }
                }
                if zone.spanned > 0 && zone.start_pfn.is_none() {
                    return Err(ParseError::new(file, n, "start_pfn", "missing in a zone that spans pages"));
                }
                if zone.present > zone.spanned || zone.managed > zone.present {
                    return Err(ParseError::new(
                        file,
                        n,
                        "present",
                        "inconsistent: need managed <= present <= spanned",
                    ));
                }
                out.zones.push(zone);
            }
            Ok(())
        };
        for l in lines(file, text) {
            let (n, line) = l?;
            let t = line.trim();
            if t.is_empty() {
                continue;
            }
            if t.starts_with("Node") {
                finish(cur.take(), &mut out)?;
                let (node, name, _) = node_zone(file, n, t)?;
                cur = Some((Zone { node, name: name.to_owned(), ..Zone::default() }, n, [false; 3]));
                part = Part::Zone;
                continue;
            }
            let Some((zone, _, seen)) = cur.as_mut() else {
                return Err(ParseError::new(file, n, "Node", "expected a `Node N, zone NAME` header first"));
            };
            if t == "per-node stats" {
                part = Part::NodeStats;
                continue;
            }
            if t == "pagesets" {
                part = Part::Pagesets;
                continue;
            }
            if let Some(rest) = t.strip_prefix("pages free") {
                zone.free = num(file, n, "pages free", rest.trim())?;
                part = Part::Zone;
                continue;
            }
            if let Some(rest) = t.strip_prefix("start_pfn:") {
                zone.start_pfn = Some(num(file, n, "start_pfn", rest.trim())?);
                continue;
            }
            if t.starts_with("protection:") || t.contains(':') {
                // `protection: (..)`, per-cpu `count:` lines, `node_unreclaimable:`,
                // `vm stats threshold:` — not needed.
                continue;
            }
            let mut words = t.split_whitespace();
            let (Some(key), Some(value), None) = (words.next(), words.next(), words.next()) else {
                if part == Part::Pagesets {
                    continue;
                }
                return Err(ParseError::new(file, n, t, "expected `key value`"));
            };
            match part {
                Part::Pagesets => continue,
                Part::NodeStats => {
                    let v = num(file, n, key, value)?;
                    out.node_stats.push((zone.node, key.to_owned(), v));
                }
                Part::Zone => {
                    let v = num(file, n, key, value)?;
                    match key {
                        "spanned" => (zone.spanned, seen[0]) = (v, true),
                        "present" => (zone.present, seen[1]) = (v, true),
                        "managed" => (zone.managed, seen[2]) = (v, true),
                        _ => zone.stats.push((key.to_owned(), v)),
                    }
                }
            }
        }
        finish(cur.take(), &mut out)?;
        Ok(out)
    }

    /// Zones that span at least one pfn, with their `[start, end)` ranges, sorted by start.
    pub fn spans(&self) -> Vec<(&Zone, u64, u64)> {
        let mut v: Vec<_> = self.zones.iter().filter_map(|z| z.span().map(|(s, e)| (z, s, e))).collect();
        v.sort_by_key(|&(_, s, e)| (s, e));
        v
    }
}

// ---------------------------------------------------------------------------------------------
// pagetypeinfo
// ---------------------------------------------------------------------------------------------

/// Free blocks of one migrate type in one zone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PageTypeFree {
    /// NUMA node.
    pub node: u32,
    /// Zone name.
    pub zone: String,
    /// Migrate type (`Unmovable`, `Movable`, `Reclaimable`, `HighAtomic`, `CMA`, `Isolate`).
    pub migratetype: String,
    /// Free blocks per order. Linux stops counting at 100000 and prints `>100000`; such a
    /// value is kept as 100000 and flagged in `capped`.
    pub free: Vec<u64>,
    /// Whether any count of this row was printed as a lower bound (`>N`).
    pub capped: bool,
}

/// Pageblocks per migrate type in one zone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PageTypeBlocks {
    /// NUMA node.
    pub node: u32,
    /// Zone name.
    pub zone: String,
    /// `(migrate type, pageblocks)` in header order.
    pub blocks: Vec<(String, u64)>,
}

/// `/proc/pagetypeinfo`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PageTypeInfo {
    /// `Page block order`.
    pub pageblock_order: u32,
    /// `Pages per block`.
    pub pages_per_block: u64,
    /// Free blocks per (zone, migrate type, order).
    pub free: Vec<PageTypeFree>,
    /// Pageblocks per (zone, migrate type).
    pub blocks: Vec<PageTypeBlocks>,
}

impl PageTypeInfo {
    /// Parses the text of `/proc/pagetypeinfo`.
    pub fn parse(file: &str, text: &[u8]) -> Result<Self, ParseError> {
        let mut out = PageTypeInfo::default();
        let mut block_types: Vec<String> = Vec::new();
        let mut seen_order = false;
        let mut seen_ppb = false;
        for l in lines(file, text) {
            let (n, line) = l?;
            let t = line.trim();
            if t.is_empty() {
                continue;
            }
            if let Some(rest) = t.strip_prefix("Page block order:") {
                let v = num(file, n, "Page block order", rest.trim())?;
                out.pageblock_order = u32::try_from(v)
                    .ok()
                    .filter(|&o| o < 64)
                    .ok_or_else(|| ParseError::new(file, n, "Page block order", "too large"))?;
                seen_order = true;
            } else if let Some(rest) = t.strip_prefix("Pages per block:") {
                out.pages_per_block = num(file, n, "Pages per block", rest.trim())?;
                seen_ppb = true;
            } else if t.starts_with("Free pages count per migrate type") {
                continue;
            } else if let Some(rest) = t.strip_prefix("Number of blocks type") {
                block_types = rest.split_whitespace().map(str::to_owned).collect();
            } else if t.starts_with("Number of mixed blocks") {
                // Only with CONFIG_PAGE_OWNER; its rows follow the same layout as the blocks
                // table but would be mistaken for it: stop reading blocks.
                block_types.clear();
            } else if t.starts_with("Node") {
                let (node, zone, rest) = node_zone(file, n, t)?;
                let rest = rest.trim_start();
                if let Some(rest) = rest.strip_prefix(", type") {
                    let mut words = rest.split_whitespace();
                    let mt = words.next().ok_or_else(|| ParseError::new(file, n, "type", "missing migrate type"))?;
                    let mut capped = false;
                    let mut free = Vec::new();
                    for w in words {
                        let w = match w.strip_prefix('>') {
                            Some(w) => {
                                capped = true;
                                w
                            }
                            None => w,
                        };
                        free.push(num(file, n, "free", w)?);
                    }
                    out.free.push(PageTypeFree {
                        node,
                        zone: zone.to_owned(),
                        migratetype: mt.to_owned(),
                        free,
                        capped,
                    });
                } else {
                    if block_types.is_empty() {
                        continue;
                    }
                    let counts =
                        rest.split_whitespace().map(|w| num(file, n, "blocks", w)).collect::<Result<Vec<_>, _>>()?;
                    if counts.len() != block_types.len() {
                        return Err(ParseError::new(
                            file,
                            n,
                            "blocks",
                            format!("{} counts for {} migrate types", counts.len(), block_types.len()),
                        ));
                    }
                    out.blocks.push(PageTypeBlocks {
                        node,
                        zone: zone.to_owned(),
                        blocks: block_types.iter().cloned().zip(counts).collect(),
                    });
                }
            } else {
                return Err(ParseError::new(file, n, "line", "unrecognised line"));
            }
        }
        if !seen_order {
            return Err(ParseError::new(file, 0, "Page block order", "missing"));
        }
        if !seen_ppb {
            return Err(ParseError::new(file, 0, "Pages per block", "missing"));
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------------------
// slabinfo
// ---------------------------------------------------------------------------------------------

/// One cache of `/proc/slabinfo` (version 2.1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SlabCache {
    /// Cache name.
    pub name: String,
    /// Objects in use.
    pub active_objs: u64,
    /// Objects allocated (in use or free in a slab).
    pub num_objs: u64,
    /// Object size in bytes.
    pub objsize: u64,
    /// Objects per slab.
    pub objperslab: u64,
    /// Pages per slab (a power of two: the slab's order).
    pub pagesperslab: u64,
    /// Slabs with at least one object in use.
    pub active_slabs: u64,
    /// Slabs.
    pub num_slabs: u64,
}

/// `/proc/slabinfo`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SlabInfo {
    /// Caches in file order.
    pub caches: Vec<SlabCache>,
}

impl SlabInfo {
    /// Parses the text of `/proc/slabinfo` (format version 2.x).
    pub fn parse(file: &str, text: &[u8]) -> Result<Self, ParseError> {
        let mut caches = Vec::new();
        for l in lines(file, text) {
            let (n, line) = l?;
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            if let Some(v) = t.strip_prefix("slabinfo - version:") {
                if !v.trim().starts_with("2.") {
                    return Err(ParseError::new(
                        file,
                        n,
                        "version",
                        format!("unsupported slabinfo version `{}`", v.trim()),
                    ));
                }
                continue;
            }
            let mut parts = t.split(':');
            let (Some(head), Some(_tunables), Some(slabdata)) = (parts.next(), parts.next(), parts.next()) else {
                return Err(ParseError::new(file, n, "slabdata", "expected `name ... : tunables ... : slabdata ...`"));
            };
            let mut w = head.split_whitespace();
            let name = w.next().ok_or_else(|| ParseError::new(file, n, "name", "missing"))?;
            let field = |f: &'static str, w: &mut std::str::SplitWhitespace<'_>| {
                w.next().ok_or_else(|| ParseError::new(file, n, f, "missing")).and_then(|s| num(file, n, f, s))
            };
            let active_objs = field("active_objs", &mut w)?;
            let num_objs = field("num_objs", &mut w)?;
            let objsize = field("objsize", &mut w)?;
            let objperslab = field("objperslab", &mut w)?;
            let pagesperslab = field("pagesperslab", &mut w)?;
            let mut s = slabdata.split_whitespace();
            if s.next() != Some("slabdata") {
                return Err(ParseError::new(file, n, "slabdata", "missing `slabdata`"));
            }
            let active_slabs = field("active_slabs", &mut s)?;
            let num_slabs = field("num_slabs", &mut s)?;
            caches.push(SlabCache {
                name: name.to_owned(),
                active_objs,
                num_objs,
                objsize,
                objperslab,
                pagesperslab,
                active_slabs,
                num_slabs,
            });
        }
        Ok(SlabInfo { caches })
    }

    /// Pages held by all slabs: Σ num_slabs · pagesperslab.
    pub fn pages(&self) -> u64 {
        self.caches.iter().map(|c| c.num_slabs.saturating_mul(c.pagesperslab)).fold(0, u64::saturating_add)
    }

    /// The cache called `name`.
    pub fn cache(&self, name: &str) -> Option<&SlabCache> {
        self.caches.iter().find(|c| c.name == name)
    }
}

// ---------------------------------------------------------------------------------------------
// vmstat
// ---------------------------------------------------------------------------------------------

/// `/proc/vmstat`: `key value` lines.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Vmstat {
    /// `(key, value)` in file order. Values are signed because a few per-CPU-drifting counters
    /// can be negative in some kernels.
    pub entries: Vec<(String, i64)>,
}

impl Vmstat {
    /// Parses the text of `/proc/vmstat`.
    pub fn parse(file: &str, text: &[u8]) -> Result<Self, ParseError> {
        let mut entries = Vec::new();
        for l in lines(file, text) {
            let (n, line) = l?;
            let t = line.trim();
            if t.is_empty() {
                continue;
            }
            let mut w = t.split_whitespace();
            let (Some(key), Some(value), None) = (w.next(), w.next(), w.next()) else {
                return Err(ParseError::new(file, n, t, "expected `key value`"));
            };
            let v = match value.parse::<u64>() {
                // Counters printed as unsigned but holding a negative drift wrap around.
                Ok(u) => u as i64,
                Err(_) => signed(file, n, key, value)?,
            };
            entries.push((key.to_owned(), v));
        }
        Ok(Vmstat { entries })
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<i64> {
        self.entries.iter().find(|(k, _)| k == key).map(|&(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_units_and_errors() {
        let m = Meminfo::parse("meminfo", b"MemTotal:  100 kB\nHugePages_Total: 3\n").unwrap();
        assert_eq!(m.get("MemTotal"), Some(100));
        assert_eq!(m.bytes("MemTotal"), Some(102400));
        assert_eq!(m.bytes("HugePages_Total"), None);
        assert_eq!(m.get("HugePages_Total"), Some(3));
        let e = Meminfo::parse("meminfo", b"MemTotal: 1 kB\nSlab: x kB\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (2, "Slab"));
        assert!(e.to_string().starts_with("meminfo:2: field `Slab`"));
    }

    #[test]
    fn buddyinfo_totals() {
        let b =
            BuddyInfo::parse("buddyinfo", b"Node 0, zone      DMA      1      0      2 \nNode 0, zone   Normal 3 1\n")
                .unwrap();
        assert_eq!(b.zones.len(), 2);
        assert_eq!(b.zones[0].zone, "DMA");
        assert_eq!(b.zones[0].free_pages(), 1 + 2 * 4);
        assert_eq!(b.free_pages(), 9 + 3 + 2);
        assert_eq!(b.blocks_by_order(), vec![4, 1, 2]);
        let e = BuddyInfo::parse("buddyinfo", b"Node 0, zone DMA 1 -2\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (1, "free"));
    }

    #[test]
    fn zoneinfo_missing_field_named() {
        let text = b"Node 0, zone DMA\n  pages free 3\n  spanned 10\n  present 9\n";
        let e = ZoneInfo::parse("zoneinfo", text).unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (1, "managed"));
        let text = b"Node 0, zone DMA\n  pages free 3\n  spanned 10\n  present 9\n managed 8\n";
        let e = ZoneInfo::parse("zoneinfo", text).unwrap_err();
        assert_eq!(e.field, "start_pfn");
        let text = b"Node 0, zone DMA\n  pages free 3\n  spanned 10\n  present 9\n managed 8\n start_pfn: 5\n";
        let z = ZoneInfo::parse("zoneinfo", text).unwrap();
        assert_eq!(z.zones[0].span(), Some((5, 15)));
        assert_eq!(z.zones[0].free, 3);
    }

    #[test]
    fn pagetypeinfo_capped_counts() {
        let text = b"Page block order: 9\nPages per block:  512\n\n\
Free pages count per migrate type at order       0      1 \n\
Node    0, zone   Normal, type    Movable >100000      7 \n\n\
Number of blocks type     Unmovable      Movable \n\
Node 0, zone   Normal            1            2 \n";
        let p = PageTypeInfo::parse("pagetypeinfo", text).unwrap();
        assert_eq!(p.pageblock_order, 9);
        assert_eq!(p.free[0].free, vec![100000, 7]);
        assert!(p.free[0].capped);
        assert_eq!(p.blocks[0].blocks[1], ("Movable".to_owned(), 2));
    }

    #[test]
    fn slabinfo_row() {
        let text = b"slabinfo - version: 2.1\n# name <active_objs>\n\
kmalloc-8  2048 2048 8 512 1 : tunables 0 0 0 : slabdata 4 4 0\n";
        let s = SlabInfo::parse("slabinfo", text).unwrap();
        assert_eq!(s.caches[0].name, "kmalloc-8");
        assert_eq!(s.pages(), 4);
        let e = SlabInfo::parse("slabinfo", b"x 1 2 3 4 : tunables : slabdata 1\n").unwrap_err();
        assert_eq!(e.field, "pagesperslab");
    }

    #[test]
    fn vmstat_values() {
        let v = Vmstat::parse("vmstat", b"nr_free_pages 12\nnr_x -3\n").unwrap();
        assert_eq!(v.get("nr_free_pages"), Some(12));
        assert_eq!(v.get("nr_x"), Some(-3));
        assert!(Vmstat::parse("vmstat", b"nr_free_pages\n").is_err());
    }
}
