//! The cost model: what Linux's memmap costs for a census, against memdesc's flat and
//! two-level memmaps.
//!
//! * **Linux** pays one 64-byte `struct page` per counted pfn, whatever it holds
//!   ([`LINUX_STRUCT_PAGE`]).
//! * **memdesc, flat memmap**: one word per counted pfn, plus one descriptor per *object*,
//!   never per page: one folio descriptor per anon/file folio (order-0 and large folios have
//!   different sizes), one slab descriptor per slab, one ptdesc per page-table page (or
//!   compound page-table group), one mappable descriptor per group of other kernel memory that
//!   is mapped to user space, one zspage descriptor per zspage (from `nr_zspages`), and one
//!   vmalloc descriptor per vmalloc page (an **upper bound**: kpageflags cannot see vmalloc
//!   areas, so the pages meminfo's `VmallocUsed` reports are charged as if each were its own
//!   area). Free, reserved, hole, uninitialised, zero-page, offline and hwpoison pages, and
//!   unmapped other kernel memory (large kmalloc, driver memory) have no descriptor: their
//!   word says all there is. Page-pool pages cannot be told apart from other kernel memory in
//!   kpageflags, so the netmem size is carried but not charged.
//! * **memdesc, two-level memmap**: one word per 2 MiB area, plus a table of 512 words for each
//!   area that is not uniform (see [`crate::census`] for "uniform"), plus the same
//!   descriptors. Per kind, the table words of the kind's pages in split areas are charged to
//!   the kind; the area words and the table words of uncounted pfns (outside every zone) form
//!   the `memmap` row.
//! * **Worst case**: every counted page an order-0 folio (every area split).
//!
//! The descriptor sizes come from the caller ([`DescriptorSizes`], filled with `size_of` of
//! the core crate's real types), never from constants here.

use serde::Serialize;

use crate::census::{Census, Kind, AREA_PAGES};

/// Bytes of Linux's `struct page` on x86-64.
pub const LINUX_STRUCT_PAGE: u64 = 64;

/// Bytes per 4 KiB page frame.
pub const PAGE_SIZE: u64 = 4096;

/// Sizes, in bytes, of memdesc's per-page word and descriptors (`size_of` of the real types).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DescriptorSizes {
    /// The per-page word.
    pub word: usize,
    /// Descriptor of an order-0 folio.
    pub folio: usize,
    /// Descriptor of a large (order ≥ 1) folio.
    pub large_folio: usize,
    /// Slab descriptor.
    pub slab: usize,
    /// Page-table descriptor.
    pub ptdesc: usize,
    /// zsmalloc zspage descriptor.
    pub zspage: usize,
    /// page_pool netmem descriptor.
    pub netmem: usize,
    /// vmalloc descriptor.
    pub vmalloc: usize,
    /// Descriptor of driver memory mapped to user space.
    pub mappable: usize,
}

/// The cost of one kind of page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KindCost {
    /// The kind's name (`free`, `slab`, ... or `memmap` for the two-level overhead row).
    pub kind: &'static str,
    /// Pages of this kind.
    pub pages: u64,
    /// Descriptors charged.
    pub descriptors: u64,
    /// Bytes of those descriptors.
    pub descriptor_bytes: u64,
    /// What Linux pays.
    pub linux_bytes: u64,
    /// What memdesc pays with the flat memmap.
    pub flat_bytes: u64,
    /// What memdesc pays with the two-level memmap.
    pub two_level_bytes: u64,
}

/// Totals of the three layouts.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Totals {
    /// Counted pages.
    pub pages: u64,
    /// Bytes of RAM those pages represent, holes excluded.
    pub ram_bytes: u64,
    /// Linux.
    pub linux_bytes: u64,
    /// memdesc, flat memmap.
    pub flat_bytes: u64,
    /// memdesc, two-level memmap.
    pub two_level_bytes: u64,
    /// Descriptor bytes (the same in both memdesc layouts).
    pub descriptor_bytes: u64,
    /// flat / Linux.
    pub flat_ratio: f64,
    /// two-level / Linux.
    pub two_level_ratio: f64,
    /// Linux as a percentage of RAM.
    pub linux_percent_of_ram: f64,
    /// flat as a percentage of RAM.
    pub flat_percent_of_ram: f64,
    /// two-level as a percentage of RAM.
    pub two_level_percent_of_ram: f64,
}

/// The two-level memmap's structure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct TwoLevel {
    /// 2 MiB areas.
    pub areas: u64,
    /// Uniform areas (no table).
    pub uniform_areas: u64,
    /// Split areas (one table each).
    pub split_areas: u64,
    /// Bytes of the per-area words.
    pub area_word_bytes: u64,
    /// Bytes of the tables.
    pub table_bytes: u64,
}

/// The worst case: every counted page an order-0 folio.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct WorstCase {
    /// Linux.
    pub linux_bytes: u64,
    /// memdesc, flat memmap.
    pub flat_bytes: u64,
    /// memdesc, two-level memmap (every area split).
    pub two_level_bytes: u64,
    /// flat / Linux.
    pub flat_ratio: f64,
}

/// The estimate for one census.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Estimate {
    /// The sizes used.
    pub sizes: DescriptorSizes,
    /// One row per [`Kind`] (in [`Kind::ALL`] order), then the `memmap` row.
    pub rows: Vec<KindCost>,
    /// Totals.
    pub totals: Totals,
    /// Two-level structure.
    pub two_level: TwoLevel,
    /// Worst case.
    pub worst_case: WorstCase,
}

impl Estimate {
    /// The row of `kind`.
    pub fn row(&self, kind: Kind) -> &KindCost {
        &self.rows[kind as usize]
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Descriptors charged to `kind`: (count, bytes).
fn descriptors(c: &Census, s: &DescriptorSizes, kind: Kind) -> (u64, u64) {
    let folios = |v: &Vec<u64>| {
        let small = v.first().copied().unwrap_or(0);
        let large: u64 = v.iter().skip(1).sum();
        (small + large, small * s.folio as u64 + large * s.large_folio as u64)
    };
    match kind {
        Kind::Slab => (c.slabs(), c.slabs() * s.slab as u64),
        Kind::PageTable => (c.page_tables, c.page_tables * s.ptdesc as u64),
        Kind::Anon => folios(&c.anon_folios_by_order),
        Kind::File => folios(&c.file_folios_by_order),
        Kind::Other => {
            let vm = c.vmalloc_pages.unwrap_or(0).min(c.pages[Kind::Other]);
            let zs = c.zspages.unwrap_or(0);
            let mapped = c.other_mapped_groups;
            (mapped + vm + zs, mapped * s.mappable as u64 + vm * s.vmalloc as u64 + zs * s.zspage as u64)
        }
        _ => (0, 0),
    }
}

/// Computes the estimate of `c` with descriptor sizes `s`.
pub fn estimate(c: &Census, s: &DescriptorSizes) -> Estimate {
    let word = s.word as u64;
    let mut rows = Vec::with_capacity(Kind::COUNT + 1);
    for k in Kind::ALL {
        let pages = c.pages[k];
        let (n, bytes) = descriptors(c, s, k);
        rows.push(KindCost {
            kind: k.name(),
            pages,
            descriptors: n,
            descriptor_bytes: bytes,
            linux_bytes: pages * LINUX_STRUCT_PAGE,
            flat_bytes: pages * word + bytes,
            two_level_bytes: c.areas.split_pages[k] * word + bytes,
        });
    }
    let area_word_bytes = c.areas.total * word;
    let table_bytes = c.areas.split * AREA_PAGES * word;
    let tables_charged: u64 = c.areas.split_pages.sum() * word;
    rows.push(KindCost {
        kind: "memmap",
        pages: 0,
        descriptors: 0,
        descriptor_bytes: 0,
        linux_bytes: 0,
        flat_bytes: 0,
        two_level_bytes: area_word_bytes + table_bytes.saturating_sub(tables_charged),
    });
    let sum = |f: fn(&KindCost) -> u64| rows.iter().map(f).sum::<u64>();
    let linux = sum(|r| r.linux_bytes);
    let flat = sum(|r| r.flat_bytes);
    let two = sum(|r| r.two_level_bytes);
    let desc = sum(|r| r.descriptor_bytes);
    let ram = (c.total - c.pages[Kind::Hole]) * PAGE_SIZE;
    let pct = |b: u64| 100.0 * ratio(b, ram);
    let worst_flat = c.total * (word + s.folio as u64);
    let worst = WorstCase {
        linux_bytes: linux,
        flat_bytes: worst_flat,
        two_level_bytes: area_word_bytes + c.areas.total * AREA_PAGES * word + c.total * s.folio as u64,
        flat_ratio: ratio(worst_flat, linux),
    };
    Estimate {
        sizes: *s,
        totals: Totals {
            pages: c.total,
            ram_bytes: ram,
            linux_bytes: linux,
            flat_bytes: flat,
            two_level_bytes: two,
            descriptor_bytes: desc,
            flat_ratio: ratio(flat, linux),
            two_level_ratio: ratio(two, linux),
            linux_percent_of_ram: pct(linux),
            flat_percent_of_ram: pct(flat),
            two_level_percent_of_ram: pct(two),
        },
        two_level: TwoLevel {
            areas: c.areas.total,
            uniform_areas: c.areas.uniform(),
            split_areas: c.areas.split,
            area_word_bytes,
            table_bytes,
        },
        worst_case: worst,
        rows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::census::{census, CensusOptions};
    use crate::kpf::*;
    use crate::snapshot::KpageSnapshot;
    use crate::tables::ZoneInfo;

    /// Test-only sizes (the real ones come from the core crate's types).
    const SIZES: DescriptorSizes = DescriptorSizes {
        word: 8,
        folio: 48,
        large_folio: 96,
        slab: 64,
        ptdesc: 32,
        zspage: 40,
        netmem: 48,
        vmalloc: 32,
        mappable: 24,
    };

    #[test]
    fn hand_computed_machine() {
        // 1024 pfns: [0,512) free (uniform), [512,520) eight order-0 anon folios, 520..524 one
        // order-2 file folio, 524 slab, 525 page table, the rest other (unmapped).
        let mut f = vec![0u64; 1024];
        for x in &mut f[..512] {
            *x = 1 << KPF_BUDDY;
        }
        for x in &mut f[512..520] {
            *x = (1 << KPF_ANON) | (1 << KPF_LRU);
        }
        f[520] = (1 << KPF_COMPOUND_HEAD) | (1 << KPF_LRU);
        for x in &mut f[521..524] {
            *x = (1 << KPF_COMPOUND_TAIL) | (1 << KPF_LRU);
        }
        f[524] = 1 << KPF_SLAB;
        f[525] = 1 << KPF_PGTABLE;
        let fb: Vec<u8> = f.iter().flat_map(|w| w.to_le_bytes()).collect();
        let cb = vec![0u8; fb.len()];
        let k = KpageSnapshot::from_bytes(&fb, &cb).unwrap();
        let z = ZoneInfo::parse(
            "z",
            b"Node 0, zone N\n pages free 0\n spanned 1024\n present 1024\n managed 1024\n start_pfn: 0\n",
        )
        .unwrap();
        let c = census(&k, &z, CensusOptions::default());
        let e = estimate(&c, &SIZES);
        assert_eq!(e.totals.linux_bytes, 1024 * 64);
        let desc = 8 * 48 + 96 + 64 + 32;
        assert_eq!(e.totals.descriptor_bytes, desc);
        assert_eq!(e.totals.flat_bytes, 1024 * 8 + desc);
        // Two areas, one uniform: 2 area words + one table of 512 words.
        assert_eq!(e.two_level.split_areas, 1);
        assert_eq!(e.totals.two_level_bytes, 2 * 8 + 512 * 8 + desc);
        assert_eq!(e.row(Kind::Anon).descriptors, 8);
        assert_eq!(e.row(Kind::File).descriptor_bytes, 96);
        assert_eq!(e.row(Kind::Free).flat_bytes, 512 * 8);
        assert_eq!(e.row(Kind::Free).two_level_bytes, 0);
        assert_eq!(e.worst_case.flat_bytes, 1024 * (8 + 48));
        assert_eq!(e.worst_case.two_level_bytes, 2 * 8 + 2 * 512 * 8 + 1024 * 48);
        let rows_two: u64 = e.rows.iter().map(|r| r.two_level_bytes).sum();
        assert_eq!(rows_two, e.totals.two_level_bytes);
        assert!((e.totals.flat_ratio - (1024.0 * 8.0 + desc as f64) / 65536.0).abs() < 1e-12);
    }
}
