//! `memdesc replay [DIR] [--memmap flat|two-level] [--json] [--svg FILE]`: drives the
//! project's allocators with a real Linux kernel's allocation stream, captured by
//! `memdesc capture` (layout of `../shared/data/traces`: `start/`, `end/`, `events.txt.zst`).
//! Without DIR: the bundled sample `samples/small`.
//!
//! # The simulated machine
//! Same zones and size as the traced machine: one region per maximal run of present pfns of
//! the start snapshot's zones (holes inside a zone span are left out; if that makes too many
//! regions, the smallest gaps are kept as reserved ranges instead), booted with
//! [`memdesc_host::boot`] over a `MAP_NORESERVE` mapping (only touched memory costs host RAM).
//!
//! # Start state
//! The start snapshot's census ([`memdesc_linux::census_runs`]) hands every pfn over as part
//! of one run: free and not-yet-initialised pages stay free (deferred initialisation hands
//! those to the allocator on demand), anon/file groups become folios of their order on the
//! LRU, every other allocated group (slab, page table, reserved, other kernel memory) becomes
//! a raw block of its order. Linux's slab pages are raw *stand-ins*: the objects on them were
//! allocated before the trace and are not known, so they stay until Linux frees the page.
//!
//! # pfns: a pfn → pfn map
//! The simulated allocator chooses its own pfns; replay keeps a map from each traced pfn to the
//! allocation (entry) that covers it (every pfn of a block points to its entry, so a partial
//! free of a split block is found too). A traced free releases the pages it names; the
//! simulated block is freed when its last traced page is. Placement therefore differs from the
//! traced machine: the start state is packed by the simulated allocator, so with the two-level
//! memmap fewer areas are split than the real placement needs; the flat memmap's cost does not
//! depend on placement.
//!
//! # Two placements
//! Both are reported, labelled: *memdesc's own placement* is what the simulated machine's
//! two-level memmap really splits ([`Sample::split_areas`]; the bytes of a
//! `--memmap two-level` run use it). The *traced placement* is computed from the pfn map
//! itself, which holds every live traced allocation at the pfns Linux used: per 2 MiB area a
//! count of covered pfns, and an area is split unless nothing covers it, one folio of order
//! ≥ 9 covers all of it, or all of it is reserved ([`Sample::traced_split_areas`],
//! [`Sample::traced_two_level`]). At the start of the trace it equals `memdesc estimate`'s
//! split count on the start snapshot, except that areas mixing free and not-yet-initialised
//! pages count as uniform here (they are all free to the allocator).
//!
//! # Events
//! * `mm_page_alloc` / `mm_page_free`: raw blocks by order and migratetype. A block is
//!   *retyped* into an anon or file folio of the same order when `mm_lru_insertion` or
//!   `mm_filemap_add_to_page_cache` names its pfn (free the raw block, allocate the folio:
//!   the per-CPU list hands the same pages straight back).
//! * **Linux's own slab pages are not counted twice**: our slab allocates its own pages for
//!   the `kmalloc`/`kmem_cache_*` objects it replays, so a page allocation whose GFP flags carry
//!   SLUB's signature ([`linux_slab_page`]: `__GFP_NORETRY` with `__GFP_NOWARN` or
//!   `GFP_NOWAIT`, `__GFP_COMP`, not movable) is skipped, and so is its free; the end of the
//!   run checks that signature against the end snapshot's `KPF_SLAB` bits.
//! * `kmalloc`, `kfree`, `kmem_cache_alloc/free`: objects through the slab, matched by the
//!   kernel's hashed pointers; `kmem_cache_alloc` goes to a cache of that name (and object
//!   size) created on first use. Large kmalloc (> 8 KiB) is skipped: Linux takes its pages
//!   with `mm_page_alloc`, which is replayed.
//! * `mm_filemap_add/delete_from_page_cache`: per-file [`AddressSpaceRef`]s keyed by
//!   (dev, inode), at the event's index.
//! * `alloc_vmap_area` / `free_vmap_area_noflush`: an area of the same size less its guard
//!   page from one [`VmallocSpace`] (`vmalloc::<Unmappable>`, `vfree_area`), so its pages carry
//!   `VmallocUnmappable` words with [`VmallocDesc`] descriptors and are mapped by PTEs of a
//!   kernel address space. vmalloc takes its order-0 pages in bulk, which Linux does not trace
//!   as `mm_page_alloc`, but frees them one by one with `mm_page_free`: those frees are counted
//!   unmatched. A refused area counts one allocation failure, and its free is skipped with
//!   that reason.
//! * `page_pool_state_hold` of a pfn the replay does not know (page_pool also allocates in
//!   bulk) takes an order-0 block from one [`PagePool`] (a [`Netmem`] descriptor, `NetPool`
//!   words); the page's `mm_page_free` puts it back ([`pp_put_pfn`]: into the pool's ring of
//!   one block, or to the page allocator when the ring is full), and `page_pool_state_release`
//!   is skipped. Every traced pool shares the one simulated pool.
//!
//! Every line is accounted for: replayed, skipped with a reason, or a header/blank/lost marker.//!
//! # Files
//! This file is the command (its arguments and [`run`]). Below it: [`report`] (JSON and
//! table) and [`svg`] (the chart) over [`driver`] (one replay from a directory to a
//! [`Report`]) over [`engine`] (the [`Replayer`]) over [`gfp`] (GFP translation) and
//! [`metadata`] (the samples and descriptor-cache figures it records); [`crate::measure`] and
//! [`crate::data_dirs`] at the bottom. No module here imports this one.
//!
//! [`AddressSpaceRef`]: memdesc::pagecache::AddressSpaceRef
//! [`Netmem`]: memdesc::memmap::desc::Netmem
//! [`PagePool`]: memdesc::page_pool::PagePool
//! [`VmallocDesc`]: memdesc::memmap::desc::VmallocDesc
//! [`VmallocSpace`]: memdesc::vmalloc::VmallocSpace
//! [`pp_put_pfn`]: memdesc::PhysMem::pp_put_pfn

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, Result};

pub mod driver;
pub mod engine;
pub mod gfp;
pub mod metadata;
pub mod report;
pub mod svg;

pub use driver::*;
pub use engine::*;
pub use gfp::*;
pub use metadata::*;
pub use report::*;
pub use svg::*;

/// Arguments of `memdesc replay`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ReplayArgs {
    /// A trace directory (start/, end/, events.txt[.zst]); default: the bundled sample.
    #[arg(value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// The simulated machine's memmap.
    #[arg(long, value_enum, default_value_t = MemmapArg::Flat)]
    pub memmap: MemmapArg,
    /// Print stable JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Write a line chart of metadata bytes over the trace (Linux vs memdesc) to FILE (SVG).
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
}

/// Runs `memdesc replay`.
pub fn run(args: &ReplayArgs) -> Result<()> {
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => sample_dir().with_context(|| {
            format!(
                "the bundled sample (samples/small) was not found; give a trace directory, or {}",
                crate::data_dirs::lookup_hint()
            )
        })?,
    };
    let progress = !args.json && std::io::stderr().is_terminal();
    let r = replay(&dir, args.memmap, progress)?;
    // The report first: a chart that cannot be written must not throw it away.
    if args.json {
        println!("{}", serde_json::to_string_pretty(&to_json(&r))?);
    } else {
        print!("{}", to_table(&r));
    }
    if let Some(p) = &args.svg {
        crate::data_dirs::write_chart(p, |p| write_svg(&r, p))?;
        if !args.json {
            println!("chart written to {}", p.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {

    use memdesc::folio::FolioKind;

    use memdesc::pgtable::MmKind;

    use memdesc::{Config, Gfp, MemmapLayout, MemoryLayout, PAGE_SIZE};

    use memdesc_linux::census::{Kind, Run};
    use memdesc_linux::trace::{Event, Gfp as LinuxGfp};

    use super::*;

    #[test]
    fn slub_signature_on_real_gfp_strings() {
        let slab = [
            ("__GFP_RECLAIMABLE|__GFP_IO|__GFP_NOWARN|__GFP_NORETRY|__GFP_COMP|__GFP_NOMEMALLOC", 2),
            ("GFP_KERNEL|__GFP_RECLAIMABLE|__GFP_NOWARN|__GFP_NORETRY|__GFP_COMP", 2),
            ("GFP_NOWAIT|__GFP_NORETRY|__GFP_COMP|__GFP_THISNODE", 0),
            ("GFP_NOFS|__GFP_NOWARN|__GFP_NORETRY|__GFP_COMP", 0),
        ];
        for (g, mt) in slab {
            assert!(linux_slab_page(&LinuxGfp(g), mt), "{g}");
        }
        let not_slab = [
            // Readahead: __GFP_NORETRY too, but movable.
            ("GFP_NOFS|__GFP_HIGHMEM|__GFP_MOVABLE|__GFP_NOWARN|__GFP_NORETRY|__GFP_COMP|__GFP_HARDWALL", 1),
            ("GFP_HIGHUSER_MOVABLE|__GFP_WRITE|__GFP_NOWARN|__GFP_NORETRY|__GFP_COMP", 1),
            ("GFP_HIGHUSER_MOVABLE|__GFP_ZERO|__GFP_COMP", 1),
            ("GFP_KERNEL_ACCOUNT|__GFP_ZERO|__GFP_COMP", 0),
            ("GFP_NOWAIT", 0),
            ("none", 0),
        ];
        for (g, mt) in not_slab {
            assert!(!linux_slab_page(&LinuxGfp(g), mt), "{g}");
        }
        assert!(page_table_page(&LinuxGfp("GFP_KERNEL_ACCOUNT|__GFP_ZERO|__GFP_COMP"), 0, 0));
        assert!(!page_table_page(&LinuxGfp("GFP_KERNEL_ACCOUNT|__GFP_ZERO|__GFP_COMP"), 1, 0));
        assert_eq!(sim_gfp(&LinuxGfp("GFP_KERNEL|__GFP_DMA32"), 0), Gfp::DMA32);
        assert_eq!(sim_gfp(&LinuxGfp("GFP_HIGHUSER_MOVABLE"), 1), Gfp::MOVABLE);
    }

    #[test]
    fn blocks_are_aligned_and_cover_the_run() {
        let v: Vec<_> = blocks(3, 13, 10).collect();
        assert_eq!(v, vec![(3, 0), (4, 2), (8, 3)]);
        let v: Vec<_> = blocks(0, 5000, 10).collect();
        assert_eq!(v.iter().map(|&(_, k)| 1u64 << k).sum::<u64>(), 5000);
        assert!(v.iter().all(|&(p, k)| p % (1 << k) == 0 && k <= 10));
        assert_eq!(blocks(7, 0, 10).count(), 0);
    }

    #[test]
    fn layout_leaves_holes_out_and_merges_when_too_many() {
        let run = |start, len, kind| Run { start, len, kind };
        let runs = [
            run(1, 100, Kind::Reserved),
            run(101, 4000, Kind::Free),
            run(4101, 1000, Kind::Hole),
            run(5101, 3000, Kind::Anon),
        ];
        let l = layout_from_runs(&runs, MemmapLayout::Flat).unwrap();
        assert_eq!(l.present_pages(), 100 + 4000 + 3000);
        assert!(l.reserved().is_empty());
        // 100 regions separated by holes of growing size: merged across the smallest gaps.
        let mut many = Vec::new();
        for i in 0..100u64 {
            let s = i * 10_000;
            many.push(run(s + 1, 1000, Kind::Free));
            many.push(run(s + 1001, 1 + i, Kind::Hole));
        }
        let l = layout_from_runs(&many, MemmapLayout::Flat).unwrap();
        assert!(!l.reserved().is_empty());
        let free: Vec<_> = many.iter().filter(|r| r.kind == Kind::Free).collect();
        for (s, e) in l.reserved() {
            assert!(free.iter().all(|r| r.start + r.len <= s.0 || e.0 <= r.start), "only gaps are reserved");
        }
        let avail: u64 = l.present_pages() - l.reserved().iter().map(|(s, e)| e.0 - s.0).sum::<u64>();
        assert_eq!(avail, 100 * 1000);
    }

    /// The traced placement's split areas follow the traced pfns: a page in an area splits it,
    /// a whole-area raw block too, a whole-area folio does not, and frees make areas uniform.
    #[test]
    fn traced_placement_split_areas() {
        let m = memdesc_host::boot(
            &MemoryLayout::pc(1, MemmapLayout::Flat),
            Config { debug_checks: true, ..Config::default() },
        )
        .unwrap();
        let cpu = m.cpus().claim(0).unwrap();
        let caches = m.mm_caches(&cpu).unwrap();
        let kmm = caches.mm_create(&cpu, MmKind::Kernel).unwrap();
        let kernel = Kernel::new(&m, &cpu, &kmm).unwrap();
        drop(cpu);
        let mut r = Replayer::new(&m, &kernel, 1 << 18, 64 << 18).unwrap();
        let last = |r: &mut Replayer<'_>| {
            r.sample();
            *r.samples.last().unwrap()
        };
        assert_eq!(last(&mut r).traced_split_areas, 0);
        let alloc = |pfn, order| Event::PageAlloc {
            pfn: Some(pfn),
            order,
            migratetype: 1,
            gfp: LinuxGfp("GFP_HIGHUSER_MOVABLE|__GFP_COMP"),
        };
        // One page in area 8 (pfns 0x1000..0x1200).
        r.event(&alloc(0x1000, 0));
        r.event(&alloc(0x1001, 0));
        assert_eq!(last(&mut r).traced_split_areas, 1);
        // A raw order-9 block covering area 9: split (only a folio or reserved memory is uniform).
        r.event(&alloc(0x1200, 9));
        assert_eq!(last(&mut r).traced_split_areas, 2);
        // Typed as an anon folio: one 2 MiB folio, the area word describes it.
        use memdesc_linux::trace::LruFlags;
        r.event(&Event::LruInsertion { pfn: 0x1200, lru: 0, flags: LruFlags { anon: true, ..LruFlags::default() } });
        let s = last(&mut r);
        assert_eq!(s.traced_split_areas, 1);
        // Cost: a word per area of the traced pfn space, one table, the descriptor slabs.
        assert_eq!(s.traced_two_level, (1u64 << 18) / 512 * 8 + 4096 + (s.memdesc - s.words));
        // Freeing part of the folio splits its area; freeing the rest of everything unsplits.
        r.event(&Event::PageFree { pfn: 0x1200, order: 0 });
        assert_eq!(last(&mut r).traced_split_areas, 2);
        r.event(&Event::PageFree { pfn: 0x1000, order: 0 });
        r.event(&Event::PageFree { pfn: 0x1001, order: 0 });
        assert_eq!(last(&mut r).traced_split_areas, 1);
        for p in 0x1201..0x1400 {
            r.event(&Event::PageFree { pfn: p, order: 0 });
        }
        assert_eq!(last(&mut r).traced_split_areas, 0);
        assert!(r.sim_errors.is_empty(), "{:?}", r.sim_errors);
        assert_eq!(r.samples.iter().map(|s| s.traced_split_areas).max(), Some(2));
        // The flat machine has no two-level areas of its own.
        assert!(r.samples.iter().all(|s| s.split_areas == 0));
        let caches = r.descriptor_caches();
        let folio = caches.iter().find(|c| c.name == "folio").expect("folio cache");
        assert!(folio.stride >= folio.object_bytes && folio.objects_per_slab > 0);
        assert_eq!(folio.bytes, folio.slabs * ((PAGE_SIZE as u64) << folio.slab_order));
    }

    /// The engine on a small machine with hand-made events: retyping, partial frees, the slab
    /// signature, objects, the page cache (byte offsets), page_pool holds, and the accounting.
    #[test]
    fn engine_on_synthetic_events() {
        use memdesc_linux::trace::{LruFlags, PageCacheEvent};
        let m = memdesc_host::boot(
            &MemoryLayout::pc(1, MemmapLayout::Flat),
            Config { debug_checks: true, ..Config::default() },
        )
        .unwrap();
        let free0 = m.nr_free_pages();
        let cpu = m.cpus().claim(0).unwrap();
        let caches = m.mm_caches(&cpu).unwrap();
        let kmm = caches.mm_create(&cpu, MmKind::Kernel).unwrap();
        let kernel = Kernel::new(&m, &cpu, &kmm).unwrap();
        drop(cpu);
        let mut r = Replayer::new(&m, &kernel, 1 << 18, 64 << 18).unwrap();
        let alloc =
            |pfn, order, mt, gfp| Event::PageAlloc { pfn: Some(pfn), order, migratetype: mt, gfp: LinuxGfp(gfp) };
        // A file page: allocated raw, added to the page cache at byte offset 8192 (index 2),
        // put on the LRU, deleted, freed.
        r.event(&alloc(0x1000, 0, 1, "GFP_HIGHUSER_MOVABLE|__GFP_WRITE|__GFP_COMP"));
        let pc = PageCacheEvent { dev_major: 254, dev_minor: 0, ino: 7, pfn: 0x1000, offset: 8192, order: 0 };
        r.event(&Event::FilemapAdd(pc));
        let i = r.entry_at(0x1000).unwrap();
        assert_eq!(r.entries[i as usize].what, What::Folio(FolioKind::File));
        assert_eq!(r.entries[i as usize].cached, Some((0, 2)));
        assert_eq!(
            r.spaces[0].lookup(&r.cpu, 2).map(|f| f.flags.pfn()),
            r.entries[i as usize].folio.map(|f| f.flags.pfn())
        );
        r.event(&Event::LruInsertion { pfn: 0x1000, lru: 2, flags: LruFlags::default() });
        r.event(&Event::FilemapDelete(pc));
        r.event(&Event::PageFree { pfn: 0x1000, order: 0 });
        assert!(r.entry_at(0x1000).is_none());
        // An anon order-2 folio typed by the LRU, freed whole.
        r.event(&alloc(0x2000, 2, 1, "GFP_HIGHUSER_MOVABLE|__GFP_COMP"));
        r.event(&Event::LruInsertion { pfn: 0x2000, lru: 0, flags: LruFlags { anon: true, ..LruFlags::default() } });
        assert_eq!(r.entries[r.entry_at(0x2003).unwrap() as usize].what, What::Folio(FolioKind::Anon));
        r.event(&Event::PageFree { pfn: 0x2000, order: 2 });
        // A raw order-1 block freed page by page (split): the block goes back after the second.
        r.event(&alloc(0x3000, 1, 0, "GFP_KERNEL"));
        r.event(&Event::PageFree { pfn: 0x3001, order: 0 });
        assert!(r.entry_at(0x3000).is_some());
        r.event(&Event::PageFree { pfn: 0x3000, order: 0 });
        assert!(r.entry_at(0x3000).is_none());
        assert_eq!(r.partial_frees, 2);
        // A Linux slab page: skipped both ways.
        r.event(&alloc(0x4000, 1, 2, "GFP_KERNEL|__GFP_RECLAIMABLE|__GFP_NOWARN|__GFP_NORETRY|__GFP_COMP"));
        r.event(&Event::PageFree { pfn: 0x4000, order: 1 });
        // Objects: kmalloc/kfree, a named cache, a pre-trace free, kfree(NULL), large kmalloc.
        r.event(&Event::Kmalloc {
            call_site: "f",
            ptr: 0xabc,
            bytes_req: 50,
            bytes_alloc: 64,
            gfp: LinuxGfp("GFP_KERNEL"),
            node: -1,
        });
        r.event(&Event::KmemCacheAlloc {
            call_site: "f",
            ptr: 0xdef,
            name: Some("dentry"),
            bytes_req: 192,
            bytes_alloc: 192,
            gfp: LinuxGfp("GFP_KERNEL"),
            node: -1,
        });
        assert_eq!(r.caches.len(), 1);
        r.event(&Event::Kfree { call_site: "f", ptr: 0xabc });
        r.event(&Event::KmemCacheFree { call_site: "f", ptr: 0xdef, name: Some("dentry") });
        r.event(&Event::Kfree { call_site: "f", ptr: 0x999 });
        r.event(&Event::Kfree { call_site: "f", ptr: 0 });
        r.event(&Event::Kmalloc {
            call_site: "f",
            ptr: 0x777,
            bytes_req: 20000,
            bytes_alloc: 32768,
            gfp: LinuxGfp("GFP_KERNEL"),
            node: -1,
        });
        r.event(&Event::Kfree { call_site: "f", ptr: 0x777 });
        // A page_pool page allocated in bulk (no page event), then freed.
        r.event(&Event::PagePoolHold { pool: 1, netmem: 2, pfn: 0x5000, hold: 1 });
        let i = r.entry_at(0x5000).unwrap();
        assert_eq!(r.entries[i as usize].what, What::NetPool);
        let np = r.entries[i as usize].sim;
        assert!(matches!(
            m.memmap().load(m.platform(), np).unwrap().word.kind(),
            memdesc::memmap::word::PageKind::NetPool(_)
        ));
        assert_eq!(r.pool.stats().live, 1);
        r.event(&Event::PagePoolRelease { pool: 1, netmem: 2, pfn: 0x5000, release: 1 });
        r.event(&Event::PageFree { pfn: 0x5000, order: 0 });
        // A free nobody allocated; a vmap area.
        r.event(&Event::PageFree { pfn: 0x6000, order: 0 });
        r.event(&Event::AllocVmapArea {
            addr: 0x1000_0000,
            size: 5 * 4096,
            align: 1,
            vstart: 0,
            vend: u64::MAX,
            failed: false,
        });
        assert_eq!(r.pool.stats().live, 0, "the page's free puts the netmem back");
        let a = r.vmaps[&0x1000_0000].as_ref().unwrap();
        assert_eq!(a.nr_pages(), 4, "less the guard page");
        let vp = r.vmalloc.pfn_at(a, 3).unwrap();
        assert_eq!(
            m.memmap().load(m.platform(), vp).unwrap().word.tag(),
            Some(memdesc::memmap::word::Tag::VmallocUnmappable)
        );
        assert_eq!(r.vmalloc.vmalloc_to_pfn(a.addr() + 3 * PAGE_SIZE), Ok(vp), "mapped by a kernel PTE");
        assert_eq!(r.vmalloc.stats(), memdesc::vmalloc::VmallocStats { areas: 1, pages: 4 });
        r.event(&Event::FreeVmapArea { va_start: 0x1000_0000, nr_lazy: 0, nr_lazy_max: 0 });
        assert_eq!(r.vmalloc.stats().areas, 0);
        r.event(&Event::FreeVmapArea { va_start: 0x1000_0000, nr_lazy: 0, nr_lazy_max: 0 });
        assert_eq!(r.skipped.get("vmap area free: allocated before the trace"), Some(&1));

        assert_eq!(r.alloc_failures, 0);
        assert_eq!(r.unmatched_frees, 1);
        assert!(r.sim_errors.is_empty(), "{:?}", r.sim_errors);
        let replayed: u64 = r.replayed.iter().sum();
        let skipped: u64 = r.skipped.values().sum();
        assert_eq!(replayed + skipped, r.events_done);
        assert_eq!(r.skipped_by_kind.iter().sum::<u64>(), skipped);
        for why in [
            "kfree(NULL)",
            "object free: allocated before the trace",
            "page alloc: Linux slab page (our slab allocates its own)",
        ] {
            assert_eq!(r.skipped.get(why), Some(&1), "{why}: {:?}", r.skipped);
        }
        // Every page is back: only slab pages of the caches and the page cache's own
        // structures remain outside the free lists.
        r.sample();
        assert!(r.samples[0].memdesc >= m.memmap().bytes());
        let (desc, other) = r.slab_pages();
        m.drain_all();
        assert!(m.nr_free_pages() + desc + other + 16 >= free0, "pages leaked: {} of {free0}", m.nr_free_pages());
    }
}
