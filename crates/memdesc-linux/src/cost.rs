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
//!   area that is not uniform (see [`crate::census`](mod@crate::census) for "uniform"), plus the same
//!   descriptors. Per kind, the table words of the kind's pages in split areas are charged to
//!   the kind; the area words and the table words of uncounted pfns (outside every zone) form
//!   the `memmap` row.
//! * **Worst case**: every counted page an order-0 folio (every area split).
//!
//! # Descriptor storage
//! Descriptors live in slab caches, not in thin air. With a [`SlabGeometry`] (the real
//! geometry of the core's descriptor caches: object size, stride, objects per slab, slab
//! order), each kind is also charged [`KindCost::storage_bytes`]: the whole slabs its
//! descriptors need (`ceil(n / objects_per_slab)` slabs of `PAGE_SIZE << order` bytes, so
//! the stride padding and the last, partial slab's slack are paid), plus the slab
//! descriptors of those slabs, which live in the self-hosting `slab_desc` cache (charged in
//! whole `slab_desc` slabs too). Excluded: fragmentation of partial slabs after frees (the
//! snapshot cannot show it; `memdesc replay` measures the real caches), up to
//! the few empty slabs a cache keeps per node, and per-CPU sheaves.
//!
//! # Memory in use
//! [`InUse`] restricts the comparison to pages in use: every counted page except free,
//! not-yet-initialised and hole pages. Linux pays 64 B for each; memdesc's flat memmap pays
//! their words, descriptors and descriptor storage; the two-level memmap is charged *all* of
//! its cost (area words and every table: free pages only cost table words in areas that
//! in-use pages split), so the in-use two-level figure is an upper bound.
//!
//! # Parity folio
//! memdesc's folio lacks fields Linux's carries (`private`, `memcg_data`, and for large
//! folios the large/entire mapcounts, pincount, mm-id tracking and the deferred-split list;
//! see docs/FOLIO-PARITY.md). The `parity_*` figures replace the folio descriptors by a
//! *parity folio* with those fields ([`DescriptorSizes::parity_folio`],
//! [`DescriptorSizes::parity_large_folio`], and their caches' geometry), so the comparison
//! with Linux is like for like.
//!
//! The descriptor sizes and cache geometry come from the caller ([`DescriptorSizes`], filled
//! with `size_of` of the core crate's real types and the geometry of its real caches), never
//! from constants here.

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
    /// An order-0 folio descriptor with the fields of Linux's folio a production kernel
    /// needs (see the module documentation).
    pub parity_folio: usize,
    /// A large parity folio descriptor.
    pub parity_large_folio: usize,
    /// The real geometry of the descriptor caches; `None`: descriptor storage not charged
    /// (only `size_of` per descriptor).
    pub storage: Option<SlabGeometry>,
}

/// The geometry of one slab cache, as the core's slab allocator laid it out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CacheGeometry {
    /// Bytes asked for per object (`size_of` of the descriptor).
    pub object_bytes: usize,
    /// Distance between objects in a slab.
    pub stride: usize,
    /// Objects per slab available to users (the self-hosting `slab_desc` cache keeps one
    /// slot of each of its slabs for the slab's own descriptor).
    pub objects_per_slab: u32,
    /// Slab order: a slab is `PAGE_SIZE << slab_order` bytes.
    pub slab_order: u32,
}

impl CacheGeometry {
    /// Bytes of one slab.
    pub fn slab_bytes(&self) -> u64 {
        PAGE_SIZE << self.slab_order
    }
    /// Slabs needed for `n` objects, packed.
    pub fn slabs_for(&self, n: u64) -> u64 {
        n.div_ceil(self.objects_per_slab.max(1) as u64)
    }
}

/// The geometry of every cache descriptors live in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SlabGeometry {
    /// Folios (order 0).
    pub folio: CacheGeometry,
    /// Large folios.
    pub large_folio: CacheGeometry,
    /// Slab descriptors (self-hosting: `objects_per_slab` excludes the slab's own).
    pub slab_desc: CacheGeometry,
    /// Page-table descriptors.
    pub ptdesc: CacheGeometry,
    /// zspage descriptors.
    pub zspage: CacheGeometry,
    /// vmalloc descriptors.
    pub vmalloc: CacheGeometry,
    /// Mappable descriptors.
    pub mappable: CacheGeometry,
    /// A cache of order-0 parity folios, laid out by the same slab code.
    pub parity_folio: CacheGeometry,
    /// A cache of large parity folios.
    pub parity_large_folio: CacheGeometry,
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
    /// Bytes of those descriptors (`size_of` each).
    pub descriptor_bytes: u64,
    /// Descriptor storage beyond `size_of`: the whole slabs holding the descriptors (stride
    /// padding, the last slab's slack) and those slabs' slab descriptors.
    pub storage_bytes: u64,
    /// What Linux pays.
    pub linux_bytes: u64,
    /// What memdesc pays with the flat memmap.
    pub flat_bytes: u64,
    /// What memdesc pays with the two-level memmap.
    pub two_level_bytes: u64,
    /// The flat memmap with parity folios (descriptors and their storage).
    pub parity_flat_bytes: u64,
    /// The two-level memmap with parity folios.
    pub parity_two_level_bytes: u64,
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
    /// Descriptor bytes, `size_of` each (the same in both memdesc layouts).
    pub descriptor_bytes: u64,
    /// Descriptor storage beyond `size_of` (see [`KindCost::storage_bytes`]).
    pub storage_bytes: u64,
    /// The flat memmap with parity folios.
    pub parity_flat_bytes: u64,
    /// The two-level memmap with parity folios.
    pub parity_two_level_bytes: u64,
    /// parity flat / Linux.
    pub parity_flat_ratio: f64,
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

/// The comparison restricted to pages in use (not free, not uninitialised, not holes).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct InUse {
    /// Pages in use.
    pub pages: u64,
    /// Linux: 64 B per page in use.
    pub linux_bytes: u64,
    /// memdesc flat: the words, descriptors and descriptor storage of the pages in use.
    pub flat_bytes: u64,
    /// memdesc two-level: its whole cost (an upper bound, see the module documentation).
    pub two_level_bytes: u64,
    /// Flat with parity folios.
    pub parity_flat_bytes: u64,
    /// Two-level with parity folios.
    pub parity_two_level_bytes: u64,
    /// flat / Linux.
    pub flat_ratio: f64,
    /// two-level / Linux.
    pub two_level_ratio: f64,
    /// parity flat / Linux.
    pub parity_flat_ratio: f64,
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
    /// Flat with parity folios.
    pub parity_flat_bytes: u64,
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
    /// Pages in use only.
    pub in_use: InUse,
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

/// Which cache a group of descriptors lives in.
#[derive(Clone, Copy)]
enum CacheId {
    Folio,
    LargeFolio,
    SlabDesc,
    PtDesc,
    Zspage,
    Vmalloc,
    Mappable,
}

/// The descriptors of one kind: (cache, count, bytes each) per group.
fn groups(c: &Census, s: &DescriptorSizes, kind: Kind, parity: bool) -> Vec<(CacheId, u64, u64)> {
    let folios = |v: &Vec<u64>| {
        let small = v.first().copied().unwrap_or(0);
        let large: u64 = v.iter().skip(1).sum();
        let (fs, ls) = if parity { (s.parity_folio, s.parity_large_folio) } else { (s.folio, s.large_folio) };
        vec![(CacheId::Folio, small, fs as u64), (CacheId::LargeFolio, large, ls as u64)]
    };
    match kind {
        Kind::Slab => vec![(CacheId::SlabDesc, c.slabs(), s.slab as u64)],
        Kind::PageTable => vec![(CacheId::PtDesc, c.page_tables, s.ptdesc as u64)],
        Kind::Anon => folios(&c.anon_folios_by_order),
        Kind::File => folios(&c.file_folios_by_order),
        Kind::Other => {
            let vm = c.vmalloc_pages.unwrap_or(0).min(c.pages[Kind::Other]);
            vec![
                (CacheId::Mappable, c.other_mapped_groups, s.mappable as u64),
                (CacheId::Vmalloc, vm, s.vmalloc as u64),
                (CacheId::Zspage, c.zspages.unwrap_or(0), s.zspage as u64),
            ]
        }
        _ => Vec::new(),
    }
}

fn geometry(g: &SlabGeometry, id: CacheId, parity: bool) -> CacheGeometry {
    match id {
        CacheId::Folio if parity => g.parity_folio,
        CacheId::LargeFolio if parity => g.parity_large_folio,
        CacheId::Folio => g.folio,
        CacheId::LargeFolio => g.large_folio,
        CacheId::SlabDesc => g.slab_desc,
        CacheId::PtDesc => g.ptdesc,
        CacheId::Zspage => g.zspage,
        CacheId::Vmalloc => g.vmalloc,
        CacheId::Mappable => g.mappable,
    }
}

/// Descriptors charged to `kind`: (count, bytes at `size_of`, storage beyond that).
fn descriptors(c: &Census, s: &DescriptorSizes, kind: Kind, parity: bool) -> (u64, u64, u64) {
    let gs = groups(c, s, kind, parity);
    let n: u64 = gs.iter().map(|g| g.1).sum();
    let bytes: u64 = gs.iter().map(|g| g.1 * g.2).sum();
    let Some(geo) = &s.storage else { return (n, bytes, 0) };
    // Whole slabs per cache; the slab descriptors of the slabs of every cache but slab_desc
    // (which hosts its own) in whole slab_desc slabs.
    let (mut slab_bytes, mut slab_descs) = (0u64, 0u64);
    for &(id, count, _) in &gs {
        if count == 0 {
            continue;
        }
        let g = geometry(geo, id, parity);
        let slabs = g.slabs_for(count);
        slab_bytes += slabs * g.slab_bytes();
        if !matches!(id, CacheId::SlabDesc) {
            slab_descs += slabs;
        }
    }
    slab_bytes += geo.slab_desc.slabs_for(slab_descs) * geo.slab_desc.slab_bytes();
    (n, bytes, slab_bytes.saturating_sub(bytes))
}

/// Whether `kind`'s pages are in use (not free, not uninitialised, not a hole).
pub const fn in_use(kind: Kind) -> bool {
    !matches!(kind, Kind::Free | Kind::Uninit | Kind::Hole)
}

/// Computes the estimate of `c` with descriptor sizes `s`.
pub fn estimate(c: &Census, s: &DescriptorSizes) -> Estimate {
    let word = s.word as u64;
    let mut rows = Vec::with_capacity(Kind::COUNT + 1);
    for k in Kind::ALL {
        let pages = c.pages[k];
        let (n, bytes, storage) = descriptors(c, s, k, false);
        let (_, pbytes, pstorage) = descriptors(c, s, k, true);
        let tables = c.areas.split_pages[k] * word;
        rows.push(KindCost {
            kind: k.name(),
            pages,
            descriptors: n,
            descriptor_bytes: bytes,
            storage_bytes: storage,
            linux_bytes: pages * LINUX_STRUCT_PAGE,
            flat_bytes: pages * word + bytes + storage,
            two_level_bytes: tables + bytes + storage,
            parity_flat_bytes: pages * word + pbytes + pstorage,
            parity_two_level_bytes: tables + pbytes + pstorage,
        });
    }
    let area_word_bytes = c.areas.total * word;
    let table_bytes = c.areas.split * AREA_PAGES * word;
    let tables_charged: u64 = c.areas.split_pages.sum() * word;
    let memmap_row = area_word_bytes + table_bytes.saturating_sub(tables_charged);
    rows.push(KindCost {
        kind: "memmap",
        pages: 0,
        descriptors: 0,
        descriptor_bytes: 0,
        storage_bytes: 0,
        linux_bytes: 0,
        flat_bytes: 0,
        two_level_bytes: memmap_row,
        parity_flat_bytes: 0,
        parity_two_level_bytes: memmap_row,
    });
    let sum = |f: fn(&KindCost) -> u64| rows.iter().map(f).sum::<u64>();
    let linux = sum(|r| r.linux_bytes);
    let flat = sum(|r| r.flat_bytes);
    let two = sum(|r| r.two_level_bytes);
    let desc = sum(|r| r.descriptor_bytes);
    let storage = sum(|r| r.storage_bytes);
    let parity_flat = sum(|r| r.parity_flat_bytes);
    let parity_two = sum(|r| r.parity_two_level_bytes);
    let used = |f: fn(&KindCost) -> u64| Kind::ALL.iter().filter(|&&k| in_use(k)).map(|&k| f(&rows[k as usize])).sum();
    let in_use_pages: u64 = used(|r| r.pages);
    let in_use_linux: u64 = used(|r| r.linux_bytes);
    let in_use_flat: u64 = used(|r| r.flat_bytes);
    let in_use_parity: u64 = used(|r| r.parity_flat_bytes);
    let ram = (c.total - c.pages[Kind::Hole]) * PAGE_SIZE;
    let pct = |b: u64| 100.0 * ratio(b, ram);
    // Worst case: every counted page an order-0 folio, with its storage.
    let worst_storage = |parity: bool| {
        let (size, g) = if parity {
            (s.parity_folio as u64, s.storage.map(|g| (g.parity_folio, g.slab_desc)))
        } else {
            (s.folio as u64, s.storage.map(|g| (g.folio, g.slab_desc)))
        };
        let objs = c.total * size;
        let stored = g.map_or(objs, |(f, sd)| {
            let slabs = f.slabs_for(c.total);
            slabs * f.slab_bytes() + sd.slabs_for(slabs) * sd.slab_bytes()
        });
        stored.max(objs)
    };
    let worst_flat = c.total * word + worst_storage(false);
    let worst = WorstCase {
        linux_bytes: linux,
        flat_bytes: worst_flat,
        two_level_bytes: area_word_bytes + c.areas.total * AREA_PAGES * word + worst_storage(false),
        flat_ratio: ratio(worst_flat, linux),
        parity_flat_bytes: c.total * word + worst_storage(true),
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
            storage_bytes: storage,
            parity_flat_bytes: parity_flat,
            parity_two_level_bytes: parity_two,
            parity_flat_ratio: ratio(parity_flat, linux),
            flat_ratio: ratio(flat, linux),
            two_level_ratio: ratio(two, linux),
            linux_percent_of_ram: pct(linux),
            flat_percent_of_ram: pct(flat),
            two_level_percent_of_ram: pct(two),
        },
        in_use: InUse {
            pages: in_use_pages,
            linux_bytes: in_use_linux,
            flat_bytes: in_use_flat,
            two_level_bytes: two,
            parity_flat_bytes: in_use_parity,
            parity_two_level_bytes: parity_two,
            flat_ratio: ratio(in_use_flat, in_use_linux),
            two_level_ratio: ratio(two, in_use_linux),
            parity_flat_ratio: ratio(in_use_parity, in_use_linux),
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
        parity_folio: 64,
        parity_large_folio: 112,
        storage: None,
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
        // No geometry: no storage charged.
        assert_eq!(e.totals.storage_bytes, 0);
        // Parity folios: 8 order-0 at 64 B, one large at 112 B instead of 48 / 96.
        assert_eq!(e.totals.parity_flat_bytes, e.totals.flat_bytes + 8 * (64 - 48) + (112 - 96));
        // In use: everything but the 512 free pages.
        assert_eq!(e.in_use.pages, 512);
        assert_eq!(e.in_use.linux_bytes, 512 * 64);
        assert_eq!(e.in_use.flat_bytes, 512 * 8 + desc);
        assert_eq!(e.in_use.two_level_bytes, e.totals.two_level_bytes);
    }

    /// Hand-computed descriptor storage: whole slabs per cache plus their slab descriptors in
    /// whole (self-hosting) slab_desc slabs.
    #[test]
    fn storage_charges_whole_slabs_and_slab_descriptors() {
        let g = |object_bytes, stride, objects_per_slab, slab_order| CacheGeometry {
            object_bytes,
            stride,
            objects_per_slab,
            slab_order,
        };
        let geo = SlabGeometry {
            folio: g(48, 48, 85, 0),
            large_folio: g(96, 96, 42, 0),
            slab_desc: g(64, 64, 63, 0),
            ptdesc: g(32, 32, 128, 0),
            zspage: g(40, 48, 85, 0),
            vmalloc: g(32, 32, 128, 0),
            mappable: g(24, 32, 128, 0),
            parity_folio: g(64, 64, 64, 0),
            parity_large_folio: g(112, 112, 36, 0),
        };
        let sizes = DescriptorSizes { storage: Some(geo), ..SIZES };
        // 200 order-0 anon folios, 100 slab pages (order 0), 10 page tables.
        let mut f = vec![0u64; 512];
        for x in &mut f[..200] {
            *x = (1 << KPF_ANON) | (1 << KPF_LRU);
        }
        for x in &mut f[200..300] {
            *x = 1 << KPF_SLAB;
        }
        for x in &mut f[300..310] {
            *x = 1 << KPF_PGTABLE;
        }
        for x in &mut f[310..] {
            *x = 1 << KPF_BUDDY;
        }
        let fb: Vec<u8> = f.iter().flat_map(|w| w.to_le_bytes()).collect();
        let k = KpageSnapshot::from_bytes(&fb, &vec![0u8; fb.len()]).unwrap();
        let z = ZoneInfo::parse(
            "z",
            b"Node 0, zone N\n pages free 0\n spanned 512\n present 512\n managed 512\n start_pfn: 0\n",
        )
        .unwrap();
        let c = census(&k, &z, CensusOptions::default());
        let e = estimate(&c, &sizes);
        // anon: ceil(200/85) = 3 folio slabs, their 3 slab descriptors in one slab_desc slab.
        let anon = e.row(Kind::Anon);
        assert_eq!(anon.descriptor_bytes, 200 * 48);
        assert_eq!(anon.storage_bytes, 3 * 4096 + 4096 - 200 * 48);
        assert_eq!(anon.flat_bytes, 200 * 8 + 4 * 4096);
        // slab: 100 slab descriptors in ceil(100/63) = 2 self-hosted slab_desc slabs.
        let slab = e.row(Kind::Slab);
        assert_eq!(slab.descriptor_bytes, 100 * 64);
        assert_eq!(slab.descriptor_bytes + slab.storage_bytes, 2 * 4096);
        // page tables: one ptdesc slab plus one slab_desc slab.
        assert_eq!(e.row(Kind::PageTable).descriptor_bytes + e.row(Kind::PageTable).storage_bytes, 2 * 4096);
        // Parity: ceil(200/64) = 4 parity slabs + one slab_desc slab.
        assert_eq!(anon.parity_flat_bytes, 200 * 8 + 5 * 4096);
        assert_eq!(e.row(Kind::Free).storage_bytes, 0);
        let total_storage: u64 = e.rows.iter().map(|r| r.storage_bytes).sum();
        assert_eq!(e.totals.storage_bytes, total_storage);
        assert_eq!(e.in_use.pages, 310);
        assert_eq!(e.in_use.flat_bytes, anon.flat_bytes + slab.flat_bytes + e.row(Kind::PageTable).flat_bytes);
        // Worst case: 512 order-0 folios in ceil(512/85) = 7 slabs and one slab_desc slab.
        assert_eq!(e.worst_case.flat_bytes, 512 * 8 + 8 * 4096);
        assert_eq!(e.worst_case.parity_flat_bytes, 512 * 8 + 9 * 4096);
    }
}
