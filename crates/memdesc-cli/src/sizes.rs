//! Descriptor sizes and descriptor-cache geometry for the cost model, taken from `size_of` of
//! the core's real types and from the caches of a real (tiny, simulated) machine, never typed
//! in; and the *parity folio* types: memdesc's folio with the fields of Linux's `struct folio`
//! it lacks and a production kernel needs (docs/FOLIO-PARITY.md).

use std::collections::HashMap;
use std::mem::size_of;
use std::sync::atomic::{AtomicI32, AtomicUsize};

use memdesc::memmap::desc::{CachedDescriptor, Folio, ListLinks, MappableDesc, Netmem, PtDesc, VmallocDesc, Zspage};
use memdesc::memmap::word::Page;
use memdesc::slab::{Slab, SlabCache};
use memdesc::{CacheArgs, Config, MemmapLayout, MemoryLayout};
use memdesc_linux::cost::{CacheGeometry, DescriptorSizes, SlabGeometry};

/// An order-0 folio descriptor at parity with Linux's `struct folio` for what a production
/// kernel needs: memdesc's [`Folio`] plus the two first-page fields it lacks.
#[repr(C, align(16))]
pub struct ParityFolio {
    /// memdesc's folio: flags (with pfn and order), refcount and mapcount, LRU links (which
    /// Linux overlays with `mlock_count`), mapping, index.
    pub base: Folio,
    /// Linux's `private` (union with `swap`): filesystem data or the swap-cache entry.
    pub private: AtomicUsize,
    /// Linux's `memcg_data`: the memory cgroup the folio is charged to.
    pub memcg_data: AtomicUsize,
}

/// A large (order ≥ 1) parity folio: the order-0 parity folio plus what Linux keeps in the
/// second and third pages of a large folio.
#[repr(C, align(16))]
pub struct ParityLargeFolio {
    /// The order-0 fields.
    pub base: ParityFolio,
    /// Linux's `_large_mapcount`: page-table mappings of the whole folio's pages.
    pub large_mapcount: AtomicI32,
    /// Linux's `_nr_pages_mapped`: pages mapped by PTEs (partially-mapped detection, stats).
    pub nr_pages_mapped: AtomicI32,
    /// Linux's `_entire_mapcount`: PMD/PUD mappings of the whole folio.
    pub entire_mapcount: AtomicI32,
    /// Linux's `_pincount`: FOLL_PIN references.
    pub pincount: AtomicI32,
    /// Linux's `_mm_id_mapcount[2]`: mappings by the two tracked mms.
    pub mm_id_mapcount: [AtomicI32; 2],
    /// Linux's `_mm_ids`: the two tracked mm ids and the maybe-mapped-shared bit.
    pub mm_ids: AtomicUsize,
    /// Linux's `_deferred_list`: the deferred-split queue.
    pub deferred_list: ListLinks,
}

// Layout is a contract: the parity folio is memdesc's 48 B folio plus 16 B (64 B, Linux's
// struct page), the large one 48 B more.
const _: () = assert!(size_of::<ParityFolio>() == size_of::<Folio>() + 16);
const _: () = assert!(size_of::<ParityFolio>() == 64);
const _: () = assert!(size_of::<ParityLargeFolio>() == 112);

/// The sizes of this build's descriptors, and the geometry of its descriptor caches (from
/// [`slab_geometry`]; if that machine cannot boot, storage is not charged and a note says so).
pub fn descriptor_sizes() -> DescriptorSizes {
    let storage = match slab_geometry() {
        Ok(g) => Some(g),
        Err(e) => {
            eprintln!("note: descriptor storage not charged: {e}");
            None
        }
    };
    DescriptorSizes {
        word: size_of::<Page>(),
        folio: size_of::<Folio>(),
        // Large folios use the same descriptor as order-0 ones for now.
        large_folio: size_of::<Folio>(),
        slab: size_of::<Slab>(),
        ptdesc: size_of::<PtDesc>(),
        zspage: size_of::<Zspage>(),
        netmem: size_of::<Netmem>(),
        vmalloc: size_of::<VmallocDesc>(),
        mappable: size_of::<MappableDesc>(),
        parity_folio: size_of::<ParityFolio>(),
        parity_large_folio: size_of::<ParityLargeFolio>(),
        storage,
    }
}

/// The geometry of a cache as the core's slab laid it out.
pub fn cache_geometry(c: &SlabCache) -> CacheGeometry {
    CacheGeometry {
        object_bytes: c.object_size(),
        stride: c.stride(),
        objects_per_slab: c.objects_per_slab(),
        slab_order: c.order(),
    }
}

/// Boots a small simulated machine (production settings: no debug words) and reads the
/// geometry of its descriptor caches, plus that of two caches of parity folios created with
/// the same arguments as the core's folio cache.
pub fn slab_geometry() -> Result<SlabGeometry, String> {
    let m = memdesc_host::boot(
        &MemoryLayout::pc(1, MemmapLayout::Flat),
        Config { nr_cpus: 1, debug_checks: false, ..Config::default() },
    )
    .map_err(|e| format!("booting the machine that lays out the descriptor caches: {e}"))?;
    let cpu = m.cpus().claim(0).ok_or("CPU 0 of the layout machine is taken")?;
    let parity_args = |name, size| CacheArgs {
        align: 16,
        typesafe_by_rcu: true,
        freeptr_offset: Some(<Folio as CachedDescriptor>::FREEPTR_OFFSET),
        ..CacheArgs::new(name, size)
    };
    let pf = m
        .create_cache(&cpu, parity_args("parity_folio", size_of::<ParityFolio>()))
        .map_err(|e| format!("parity folio cache: {e}"))?;
    let plf = m
        .create_cache(&cpu, parity_args("parity_large_folio", size_of::<ParityLargeFolio>()))
        .map_err(|e| format!("large parity folio cache: {e}"))?;
    let (parity_folio, parity_large_folio) = (cache_geometry(pf.cache()), cache_geometry(plf.cache()));
    let mut by_name: HashMap<&'static str, CacheGeometry> = HashMap::new();
    m.for_each_cache(|c| {
        by_name.insert(c.name(), cache_geometry(c));
    });
    let get = |n: &str| by_name.get(n).copied().ok_or_else(|| format!("the machine has no {n} cache"));
    let folio = get(Folio::CACHE_NAME)?;
    Ok(SlabGeometry {
        folio,
        large_folio: folio,
        slab_desc: get("slab_desc")?,
        ptdesc: get(PtDesc::CACHE_NAME)?,
        zspage: get(Zspage::CACHE_NAME)?,
        vmalloc: get(VmallocDesc::CACHE_NAME)?,
        mappable: get(MappableDesc::CACHE_NAME)?,
        parity_folio,
        parity_large_folio,
    })
}

/// The `descriptors` section of `memdesc bench --json`: bytes of each descriptor type.
#[derive(serde::Serialize, Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Descriptors {
    /// The per-page word.
    pub word_bytes: usize,
    /// An order-0 folio's descriptor.
    pub folio_order0_bytes: usize,
    /// What an order-0 folio page costs in all: word plus descriptor (Linux: 64).
    pub folio_order0_plus_word_bytes: usize,
    /// A slab's descriptor.
    pub slab_bytes: usize,
    /// A page-table page's descriptor.
    pub ptdesc_bytes: usize,
    /// A zspage descriptor.
    pub zspage_bytes: usize,
    /// A page_pool page's descriptor.
    pub netmem_bytes: usize,
    /// A vmalloc page's descriptor.
    pub vmalloc_bytes: usize,
    /// Mappable driver memory's descriptor.
    pub mappable_bytes: usize,
}

/// The `descriptors` bench section, from [`descriptor_sizes`].
pub fn descriptors() -> Descriptors {
    let s = descriptor_sizes();
    Descriptors {
        word_bytes: s.word,
        folio_order0_bytes: s.folio,
        folio_order0_plus_word_bytes: s.word + s.folio,
        slab_bytes: s.slab,
        ptdesc_bytes: s.ptdesc,
        zspage_bytes: s.zspage,
        netmem_bytes: s.netmem,
        vmalloc_bytes: s.vmalloc,
        mappable_bytes: s.mappable,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_are_the_real_types() {
        let s = super::descriptor_sizes();
        assert_eq!(s.word, 8);
        assert_eq!(s.folio, 48, "order-0 folio + word = 56 B, under Linux's 64");
        assert_eq!(s.slab, 48);
        assert!(s.ptdesc.is_multiple_of(16) && s.zspage.is_multiple_of(16) && s.netmem.is_multiple_of(16));
    }

    #[test]
    fn descriptors_section_matches_the_types() {
        let d = super::descriptors();
        assert_eq!(d.netmem_bytes, std::mem::size_of::<memdesc::memmap::desc::Netmem>());
        assert_eq!(d.vmalloc_bytes, std::mem::size_of::<memdesc::memmap::desc::VmallocDesc>());
        assert_eq!(d.folio_order0_plus_word_bytes, 56);
    }

    #[test]
    fn geometry_is_the_core_caches() {
        let g = super::slab_geometry().unwrap();
        // Descriptor caches keep their free pointer inside the object: stride = size.
        assert_eq!(g.folio.object_bytes, 48);
        assert_eq!(g.folio.stride, 48);
        assert_eq!(g.folio.objects_per_slab as u64, (4096u64 << g.folio.slab_order) / 48);
        // The slab-descriptor cache hosts its own descriptor in each of its slabs.
        assert_eq!(g.slab_desc.object_bytes, std::mem::size_of::<memdesc::slab::Slab>());
        assert_eq!(g.slab_desc.objects_per_slab as u64, (4096u64 << g.slab_desc.slab_order) / 48 - 1);
        assert_eq!(g.parity_folio.object_bytes, 64);
        assert_eq!(g.parity_folio.objects_per_slab as u64, (4096u64 << g.parity_folio.slab_order) / 64);
        assert_eq!(g.parity_large_folio.object_bytes, 112);
        assert!(super::descriptor_sizes().storage.is_some());
    }
}
