//! I/O over pfn ranges end to end: scatter-gather lists built from folios of several orders,
//! from a 2 MiB two-level block that was never split (no per-page word), and from device
//! memory outside every region (no word at all); the simulated DMA device writes, reads and
//! copies byte patterns through them, across page and 2 MiB area boundaries; lists built by
//! walking page tables (a user range with pages mapped out of physical order and a PMD-mapped
//! 2 MiB folio; vmalloc areas through the kernel page tables) carry device bytes to the
//! right places.

use memdesc::base::layout::{MemmapLayout, MemoryLayout, RegionSpec};
use memdesc::folio::FolioKind;
use memdesc::pgtable::MmKind;
use memdesc::sg::{IoSpace, SgError, SgList};
use memdesc::vmalloc::{Mappable, Unmappable, VmallocSpace};
use memdesc::{Config, Gfp, Pfn, Platform, PAGE_SIZE};
use memdesc_host::{boot, DmaError, SimDevice, SimMachine};

mod common;
#[allow(unused_imports)]
use common::*;

const DEV: (Pfn, Pfn) = (Pfn(0x3000), Pfn(0x3100));

/// A flat region, a hole (where the device memory lives) and a two-level region.
fn machine() -> SimMachine {
    let mut l = MemoryLayout::new();
    l.add_region(RegionSpec {
        start: Pfn(0x1000),
        end: Pfn(0x3000),
        node: 0,
        mapped: true,
        layout: MemmapLayout::Flat,
    })
    .unwrap();
    l.add_region(RegionSpec {
        start: Pfn(0x4000),
        end: Pfn(0xc000),
        node: 0,
        mapped: true,
        layout: MemmapLayout::TwoLevel,
    })
    .unwrap();
    boot(&l, Config { nr_cpus: 1, debug_checks: true, ..Config::default() }).unwrap()
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u32).wrapping_mul(2654435761).wrapping_shr(13) as u8 ^ seed).collect()
}

/// Bytes at a physical address, through the platform's mappings (holes included), a page at a
/// time.
fn phys_bytes(m: &SimMachine, phys: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut a = phys;
    while out.len() < len {
        let pfn = Pfn(a / PAGE_SIZE as u64);
        let off = (a % PAGE_SIZE as u64) as usize;
        let n = (PAGE_SIZE - off).min(len - out.len());
        let p = m.platform().map_local(pfn).unwrap();
        // SAFETY: a page mapping is valid for PAGE_SIZE bytes and off + n <= PAGE_SIZE.
        out.extend_from_slice(unsafe { std::slice::from_raw_parts(p.as_ptr().add(off), n) });
        m.platform().unmap_local(pfn, p);
        a += n as u64;
    }
    out
}

#[test]
fn device_ranges_are_validated() {
    let m = machine();
    let mut io = IoSpace::new(&m);
    assert_eq!(io.add_device_range(Pfn(0x2f00), Pfn(0x3100)), Err(SgError::Overlaps(Pfn(0x2f00))));
    assert_eq!(io.add_device_range(Pfn(0x3000), Pfn(0x3000)), Err(SgError::Overflow));
    assert_eq!(io.add_device_range(Pfn(0xd000), Pfn(0xd010)), Err(SgError::Unmappable(Pfn(0xd000))));
    io.add_device_range(DEV.0, DEV.1).unwrap();
    assert_eq!(io.add_device_range(Pfn(0x30ff), Pfn(0x3200)), Err(SgError::Overlaps(Pfn(0x30ff))));
    let mut sg = SgList::<4>::new();
    // Inside the device range, but running into the unregistered rest of the hole.
    assert_eq!(sg.push_pfns(&io, Pfn(0x30ff), 2, 0, 8192), Err(SgError::UnknownMemory(Pfn(0x3100))));
    assert_eq!(sg.push_phys(&io, 0x3800 * 4096, 1), Err(SgError::UnknownMemory(Pfn(0x3800))));
    // Free memory of a region is known but refused: a device must not write the free lists.
    let cpu = m.cpus().claim(0).unwrap();
    let p = m.alloc_pages_raw(&cpu, 1, Gfp::KERNEL).unwrap();
    free_raw(&m, &cpu, p, 1).unwrap();
    assert_eq!(sg.push_pfns(&io, p, 2, 0, 8192), Err(SgError::FreeMemory(p)));
    let p = m.alloc_pages_raw(&cpu, 1, Gfp::KERNEL).unwrap();
    sg.push_pfns(&io, p, 2, 4000, 200).unwrap();
    assert_eq!(sg.push_pfns(&io, DEV.1, 1, 0, 1), Err(SgError::UnknownMemory(DEV.1)), "the unregistered hole");
    assert_eq!(sg.entries().len(), 1);
    free_raw(&m, &cpu, p, 1).unwrap();
}

#[test]
fn dma_moves_patterns_through_folios_raw_areas_and_device_memory() {
    let m = machine();
    let cpu = m.cpus().claim(0).unwrap();
    let mut io = IoSpace::new(&m);
    io.add_device_range(DEV.0, DEV.1).unwrap();
    let dev = SimDevice::new(&m);

    let f0 = m.folio_alloc(&cpu, 0, Gfp::KERNEL, FolioKind::Anon).unwrap();
    let f3 = m.folio_alloc(&cpu, 3, Gfp::KERNEL, FolioKind::File).unwrap();
    // A 4 MiB block of the two-level region: two areas, never split, no per-page words.
    let mut others = vec![];
    let raw = loop {
        let p = m.alloc_pages_raw(&cpu, 10, Gfp::KERNEL).unwrap();
        if m.memmap().region_of(p).unwrap().layout == MemmapLayout::TwoLevel {
            break p;
        }
        others.push(p);
    };
    for p in [raw, raw.add(1), raw.add(511), raw.add(512), raw.add(1000)] {
        assert_eq!(m.memmap().load(m.platform(), p).unwrap().span_order, 9, "no per-page word at {p}");
    }
    let area_boundary = raw.add(512).phys();

    let mut a = SgList::<8>::new();
    a.push_folio(&io, &f0, 100, 3996).unwrap();
    a.push_folio(&io, &f3, 4000, 20_000).unwrap(); // crosses five page boundaries
    a.push_phys(&io, area_boundary - 5000, 10_000).unwrap(); // crosses the 2 MiB area boundary
    a.push_phys(&io, DEV.0.phys() + 123, 9000).unwrap(); // device memory, no word at all
    let total = a.total_len() as usize;
    assert_eq!(total, 3996 + 20_000 + 10_000 + 9000);

    let data = pattern(total, 0x5a);
    dev.write_to(&a, &data).unwrap();
    let mut back = vec![0u8; total];
    dev.read_from(&a, &mut back).unwrap();
    assert_eq!(back, data);
    // End to end: the bytes sit exactly where the entries say.
    let mut off = 0;
    for e in a.entries() {
        assert_eq!(phys_bytes(&m, e.phys(), e.len as usize), data[off..off + e.len as usize], "entry {e:?}");
        off += e.len as usize;
    }
    // The area next to the write is untouched just before the entry.
    assert_eq!(phys_bytes(&m, area_boundary - 5001, 1), [0]);
    assert_eq!(dev.bytes(), 2 * total as u64);

    // A second list, chunked differently: an order-2 folio and another device stretch.
    let f2 = m.folio_alloc(&cpu, 2, Gfp::KERNEL, FolioKind::Anon).unwrap();
    let mut b = SgList::<4>::new();
    b.push_folio(&io, &f2, 7, 16_000).unwrap();
    b.push_phys(&io, DEV.0.add(0x20).phys() + 4095, 30_000).unwrap();
    let n = total as u64;
    dev.copy(&a, &b, n).unwrap();
    let mut copied = vec![0u8; total];
    dev.read_from(&b, &mut copied).unwrap();
    assert_eq!(copied, data, "sg-to-sg copy preserves every byte in order");
    // And back the other way, with a fresh pattern written into b.
    let data2 = pattern(total, 0xc3);
    dev.write_to(&b, &data2).unwrap();
    dev.copy(&b, &a, n).unwrap();
    dev.read_from(&a, &mut back).unwrap();
    assert_eq!(back, data2);

    // A transfer larger than a list is refused before any byte moves.
    let big = vec![1u8; total + 1];
    assert_eq!(dev.write_to(&a, &big), Err(DmaError::ShortList { need: total as u64 + 1, have: total as u64 }));
    dev.read_from(&a, &mut back).unwrap();
    assert_eq!(back, data2);
    assert_eq!(dev.copy(&b, &a, n + 1), Err(DmaError::ShortList { need: n + 1, have: n }));

    // I/O never split the raw areas.
    assert_eq!(m.memmap().load(m.platform(), raw.add(600)).unwrap().span_order, 9);
    free_raw(&m, &cpu, raw, 10).unwrap();
    for p in others {
        free_raw(&m, &cpu, p, 10).unwrap();
    }
    for f in [f0, f3, f2] {
        m.folio_put(&cpu, f).unwrap();
    }
    m.check(|_, _, _| {}).unwrap();
}

#[test]
fn dma_into_memory_without_a_direct_map() {
    let mut l = MemoryLayout::new();
    l.add_region(RegionSpec {
        start: Pfn(0x1000),
        end: Pfn(0x5000),
        node: 0,
        mapped: true,
        layout: MemmapLayout::Flat,
    })
    .unwrap();
    l.add_region(RegionSpec {
        start: Pfn(0x10_0000),
        end: Pfn(0x10_2000),
        node: 0,
        mapped: false,
        layout: MemmapLayout::Flat,
    })
    .unwrap();
    l.movable_from(Pfn(0x10_0000));
    let m = boot(&l, Config { nr_cpus: 1, debug_checks: true, ..Config::default() }).unwrap();
    let cpu = m.cpus().claim(0).unwrap();
    let io = IoSpace::new(&m);
    let dev = SimDevice::new(&m);
    let hi = m.folio_alloc(&cpu, 2, Gfp::MOVABLE, FolioKind::Anon).unwrap();
    assert!(m.platform().direct_map(hi.flags.pfn()).is_none(), "highmem folio");

    let lo = m.folio_alloc(&cpu, 1, Gfp::KERNEL, FolioKind::Anon).unwrap();
    let mut a = SgList::<2>::new();
    a.push_folio(&io, &hi, 333, 12_000).unwrap();
    let mut b = SgList::<2>::new();
    b.push_folio(&io, &lo, 0, 8192).unwrap();
    // The tail of the highmem folio's last page (a raw range; a's data ends 45 bytes into it).
    b.push_phys(&io, hi.flags.pfn().add(3).phys() + 2000, 2096).unwrap();
    let data = pattern(12_000, 7);
    let before = m.platform().local_maps();
    dev.write_to(&a, &data).unwrap();
    assert!(m.platform().local_maps() > before, "the device went through local mappings");
    dev.copy(&a, &b, 10_288).unwrap();
    let mut back = vec![0u8; 10_288];
    dev.read_from(&b, &mut back).unwrap();
    assert_eq!(back, data[..10_288]);
    let mut first = vec![0u8; 12_000];
    dev.read_from(&a, &mut first).unwrap();
    assert_eq!(first, data, "the source is intact");
    m.folio_put(&cpu, hi).unwrap();
    m.folio_put(&cpu, lo).unwrap();
}

/// Random lists over fixed buffers (folios of orders 0–3, a never-split 4 MiB two-level block,
/// device memory), random overlapping entries: a device write, read and list-to-list copy must
/// match a byte-shadow model of every buffer.
#[test]
fn dma_matches_a_shadow_model() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config as PtConfig, TestRunner};

    let m = machine();
    let cpu = m.cpus().claim(0).unwrap();
    let mut io = IoSpace::new(&m);
    io.add_device_range(DEV.0, DEV.1).unwrap();
    let dev = SimDevice::new(&m);
    // Buffers: (physical start, bytes, folio?), group A for sources, group B for targets.
    let mut folios = vec![];
    let mut bufs: Vec<(u64, u64, Option<usize>)> = vec![];
    for order in [0, 1, 2, 3, 0, 2] {
        let f = m.folio_alloc(&cpu, order, Gfp::KERNEL, FolioKind::File).unwrap();
        bufs.push((f.flags.pfn().phys(), (PAGE_SIZE as u64) << order, Some(folios.len())));
        folios.push(f);
    }
    let mut others = vec![];
    let raw = loop {
        let p = m.alloc_pages_raw(&cpu, 10, Gfp::KERNEL).unwrap();
        if m.memmap().region_of(p).unwrap().layout == MemmapLayout::TwoLevel {
            break p;
        }
        others.push(p);
    };
    // Halves of the raw block and of the device range go to different groups; the raw ones
    // straddle the 2 MiB area boundary.
    bufs.push((raw.phys() + (1 << 20), 2 << 20, None));
    bufs.push((DEV.0.phys(), 0x80 * PAGE_SIZE as u64, None));
    bufs.push((raw.phys() + (3 << 20) + 4096, (1 << 20) - 4096, None));
    bufs.push((DEV.0.add(0x80).phys(), 0x80 * PAGE_SIZE as u64, None));
    let group = |i: usize| if i < 6 { i % 2 } else { (i - 6) / 2 };
    // The shadow: every buffer's bytes as the model believes them (all start zeroed).
    let shadow: std::cell::RefCell<Vec<Vec<u8>>> =
        std::cell::RefCell::new(bufs.iter().map(|&(p, n, _)| phys_bytes(&m, p, n as usize)).collect());

    let entry = (0usize..10, any::<u64>(), any::<u64>());
    let strat = (proptest::collection::vec(entry.clone(), 1..6), proptest::collection::vec(entry, 1..6), any::<u64>());
    let mut runner = TestRunner::new(PtConfig { cases: 48, ..PtConfig::default() });
    runner
        .run(&strat, |(ea, eb, seed)| {
            // Build both lists; record each entry as (buffer, offset, len).
            let build = |es: &[(usize, u64, u64)], want: usize| {
                let mut sg = SgList::<8>::new();
                let mut spans = vec![];
                for &(b, o, l) in es {
                    let b = (0..bufs.len()).filter(|&i| group(i) == want).nth(b % 5).unwrap();
                    let (phys, size, folio) = bufs[b];
                    let off = o % size;
                    let len = 1 + l % (size - off).min(20_000);
                    match folio {
                        Some(fi) => sg.push_folio(&io, &folios[fi], off, len).unwrap(),
                        None => sg.push_phys(&io, phys + off, len).unwrap(),
                    }
                    spans.push((b, off as usize, len as usize));
                }
                (sg, spans)
            };
            let (a, sa) = build(&ea, 0);
            let (b, sb) = build(&eb, 1);
            // Byte k of a list lives at this (buffer, offset).
            let at = |spans: &[(usize, usize, usize)], mut k: usize| {
                for &(buf, off, len) in spans {
                    if k < len {
                        return (buf, off + k);
                    }
                    k -= len;
                }
                unreachable!()
            };
            let na = a.total_len() as usize;
            let mut x = seed | 1;
            let data: Vec<u8> = (0..na)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let mut shadow = shadow.borrow_mut();
            dev.write_to(&a, &data).unwrap();
            for (k, &d) in data.iter().enumerate() {
                let (buf, off) = at(&sa, k);
                shadow[buf][off] = d;
            }
            let mut back = vec![0u8; na];
            dev.read_from(&a, &mut back).unwrap();
            let want: Vec<u8> = (0..na)
                .map(|k| {
                    let (buf, off) = at(&sa, k);
                    shadow[buf][off]
                })
                .collect();
            prop_assert_eq!(&back, &want);
            // List to list: group A to group B, never overlapping.
            let n = na.min(b.total_len() as usize);
            dev.copy(&a, &b, n as u64).unwrap();
            for k in 0..n {
                let (sbuf, soff) = at(&sa, k);
                let (dbuf, doff) = at(&sb, k);
                shadow[dbuf][doff] = shadow[sbuf][soff];
            }
            for (i, &(p, len, _)) in bufs.iter().enumerate() {
                prop_assert!(phys_bytes(&m, p, len as usize) == shadow[i], "buffer {} diverged from the model", i);
            }
            Ok(())
        })
        .unwrap();
    for f in folios {
        m.folio_put(&cpu, f).unwrap();
    }
    free_raw(&m, &cpu, raw, 10).unwrap();
    for p in others {
        free_raw(&m, &cpu, p, 10).unwrap();
    }
}

#[test]
fn lists_from_user_mappings_merge_contiguous_pages() {
    let m = machine();
    let cpu = m.cpus().claim(0).unwrap();
    let io = IoSpace::new(&m);
    let dev = SimDevice::new(&m);
    let mms = m.mm_caches(&cpu).unwrap();
    let user = mms.mm_create(&cpu, MmKind::User).unwrap();
    let pg = PAGE_SIZE as u64;
    // Driver memory of 4 contiguous pages, mapped out of order: pages 0, 1, 3, 2.
    const PV: u64 = 0x10_0000;
    user.mmap_pfn(&cpu, PV, 8 * pg).unwrap();
    let d = m.mappable_alloc(&cpu, 2, Gfp::KERNEL, 0).unwrap().into_raw();
    let p = d.flags.pfn();
    for (i, page) in [0u64, 1, 3, 2].into_iter().enumerate() {
        user.map_pfn(&cpu, PV + i as u64 * pg, p.add(page)).unwrap();
    }
    let mut sg = SgList::<8>::new();
    assert_eq!(sg.push_mapped(&io, &user, PV + 100, 4 * pg - 200), Ok(3));
    let e = sg.entries();
    assert_eq!((e[0].pfn, e[0].nr_pages, e[0].offset, e[0].len), (p, 2, 100, 2 * pg - 100), "pages 0 and 1 merge");
    assert_eq!((e[1].pfn, e[1].nr_pages, e[1].offset, e[1].len), (p.add(3), 1, 0, pg));
    assert_eq!((e[2].pfn, e[2].nr_pages, e[2].offset, e[2].len), (p.add(2), 1, 0, pg - 100));
    let data = pattern(4 * PAGE_SIZE - 200, 0x33);
    dev.write_to(&sg, &data).unwrap();
    // The bytes sit where the user's virtual layout says: virtual page i is physical page
    // [0, 1, 3, 2][i].
    let mut off = 0;
    for (i, page) in [0u64, 1, 3, 2].into_iter().enumerate() {
        let start = if i == 0 { 100 } else { 0 };
        let n = (PAGE_SIZE - start).min(data.len() - off);
        assert_eq!(phys_bytes(&m, p.add(page).phys() + start as u64, n), data[off..off + n], "virtual page {i}");
        off += n;
    }

    // A 2 MiB folio mapped by one PMD entry: a range inside it is one entry.
    const HV: u64 = 0x4000_0000;
    user.mmap_anon(&cpu, HV, 2 << 20).unwrap();
    let huge = m.folio_alloc(&cpu, 9, Gfp::MOVABLE, FolioKind::Anon).unwrap();
    user.map_folio_pmd(&cpu, HV, &huge).unwrap();
    let mut h = SgList::<2>::new();
    assert_eq!(h.push_mapped(&io, &user, HV + 3 * pg + 7, 100 * pg), Ok(1));
    assert_eq!(h.entries()[0].pfn, huge.flags.pfn().add(3));
    assert_eq!(h.entries()[0].nr_pages, 101);
    let hdata = pattern(100 * PAGE_SIZE, 0x44);
    dev.write_to(&h, &hdata).unwrap();
    assert_eq!(phys_bytes(&m, huge.flags.pfn().add(3).phys() + 7, hdata.len()), hdata);

    // Refusals leave the list unchanged: an unmapped page inside the range, a full list.
    let before = sg.entries().to_vec();
    assert_eq!(sg.push_mapped(&io, &user, PV + 3 * pg, 2 * pg), Err(SgError::NotMapped(PV + 4 * pg)));
    let mut small = SgList::<2>::new();
    assert_eq!(small.push_mapped(&io, &user, PV, 4 * pg), Err(SgError::Full));
    assert!(small.entries().is_empty());
    assert_eq!(sg.push_mapped(&io, &user, PV, 0), Err(SgError::ZeroLength));
    assert_eq!(sg.entries(), &before[..]);

    user.destroy(&cpu);
    assert_eq!(mappable_put(&m, &cpu, d), Ok(true));
    assert_eq!(m.folio_put(&cpu, huge), Ok(true));
}

#[test]
fn lists_from_vmalloc_areas_carry_device_bytes() {
    let m = machine();
    let cpu = m.cpus().claim(0).unwrap();
    let io = IoSpace::new(&m);
    let dev = SimDevice::new(&m);
    let mms = m.mm_caches(&cpu).unwrap();
    let kmm = mms.mm_create(&cpu, MmKind::Kernel).unwrap();
    let s = VmallocSpace::new(&m, &cpu, &kmm).unwrap();
    let a = s.vmalloc::<Unmappable>(&cpu, 6 * PAGE_SIZE, Gfp::ZERO).unwrap();
    let mut sg = SgList::<8>::new();
    let n = sg.push_vmalloc(&io, &s, &a, 300, 5 * PAGE_SIZE).unwrap();
    // One entry per run of physically contiguous pages of the area.
    let pfns: Vec<Pfn> = (0..6).map(|i| s.pfn_at(&a, i).unwrap()).collect();
    let runs = 1 + pfns[..6].windows(2).filter(|w| w[1].0 != w[0].0 + 1).count();
    assert_eq!(n, runs);
    assert_eq!(sg.total_len(), 5 * PAGE_SIZE as u64);
    let data = pattern(5 * PAGE_SIZE, 0x77);
    dev.write_to(&sg, &data).unwrap();
    let mut back = vec![0u8; data.len()];
    s.read_area(&a, 300, &mut back).unwrap();
    assert_eq!(back, data, "the device wrote through the area's pages in virtual order");
    let mut edge = [9u8; 300];
    s.read_area(&a, 0, &mut edge).unwrap();
    assert_eq!(edge, [0u8; 300], "bytes before the entry untouched");

    // Device copy from the vmalloc list into a folio, then back into another area.
    let f = m.folio_alloc(&cpu, 3, Gfp::KERNEL, FolioKind::Anon).unwrap();
    let mut fl = SgList::<1>::new();
    fl.push_folio(&io, &f, 0, 5 * PAGE_SIZE as u64).unwrap();
    dev.copy(&sg, &fl, data.len() as u64).unwrap();
    assert_eq!(phys_bytes(&m, f.flags.pfn().phys(), data.len()), data);
    let b = s.vmalloc::<Mappable>(&cpu, 5 * PAGE_SIZE, Gfp::ZERO).unwrap();
    let mut bl = SgList::<8>::new();
    bl.push_vmalloc(&io, &s, &b, 0, 5 * PAGE_SIZE).unwrap();
    dev.copy(&fl, &bl, data.len() as u64).unwrap();
    s.read_area(&b, 0, &mut back).unwrap();
    assert_eq!(back, data);

    assert_eq!(sg.push_vmalloc(&io, &s, &a, 6 * PAGE_SIZE - 1, 2), Err(SgError::BadArea { va: a.addr() }));
    let stale_at = b.addr();
    vfree(&s, &cpu, stale_at).unwrap();
    assert_eq!(bl.push_vmalloc(&io, &s, &b, 0, 1), Err(SgError::BadArea { va: stale_at }));
    s.vfree_area(&cpu, a).unwrap();
    m.folio_put(&cpu, f).unwrap();
}

#[test]
fn lists_from_mappings_match_a_page_model() {
    // Random user layouts over the 16 pages of one block of driver memory (a virtual slot maps
    // page k, or nothing; pages may repeat), random ranges: `push_mapped` gives exactly the
    // entries of a reference merge (or `NotMapped` at the first hole, list unchanged), and a
    // device write through the list leaves the physical pages as a byte model of the virtual
    // layout says.
    use proptest::prelude::*;
    use proptest::test_runner::{Config as PtConfig, TestRunner};

    const SLOTS: usize = 12;
    const UV: u64 = 0x20_0000;
    let pg = PAGE_SIZE as u64;
    let m = machine();
    let cpu = m.cpus().claim(0).unwrap();
    let io = IoSpace::new(&m);
    let dev = SimDevice::new(&m);
    let mms = m.mm_caches(&cpu).unwrap();
    let d = m.mappable_alloc(&cpu, 4, Gfp::ZERO, 0).unwrap().into_raw();
    let base = d.flags.pfn();
    let shadow = std::cell::RefCell::new(vec![0u8; 16 * PAGE_SIZE]);

    let strat = (
        proptest::collection::vec(proptest::option::weighted(0.9, 0u64..16), SLOTS),
        0..SLOTS as u64 * pg,
        1..SLOTS as u64 * pg,
        any::<u8>(),
    );
    let mut runner = TestRunner::new(PtConfig { cases: 40, ..PtConfig::default() });
    runner
        .run(&strat, |(layout, start, len, seed)| {
            let user = mms.mm_create(&cpu, MmKind::User).unwrap();
            user.mmap_pfn(&cpu, UV, SLOTS as u64 * pg).unwrap();
            for (i, p) in layout.iter().enumerate() {
                if let Some(p) = p {
                    user.map_pfn(&cpu, UV + i as u64 * pg, base.add(*p)).unwrap();
                }
            }
            let len = len.min(SLOTS as u64 * pg - start);
            let (va, end) = (UV + start, UV + start + len);
            // The model: pages touched, the first hole, runs of consecutive pfns.
            let (first, last) = (start / pg, (start + len - 1) / pg);
            let hole = (first..=last).find(|&s| layout[s as usize].is_none());
            let mut sg = SgList::<SLOTS>::new();
            match hole {
                Some(h) => {
                    prop_assert_eq!(sg.push_mapped(&io, &user, va, len), Err(SgError::NotMapped(UV + h * pg)));
                    prop_assert!(sg.entries().is_empty());
                }
                None => {
                    let mut want: Vec<(Pfn, u64, u64, u64)> = vec![];
                    for s in first..=last {
                        let pfn = base.add(layout[s as usize].unwrap());
                        let lo = (UV + s * pg).max(va);
                        let hi = (UV + (s + 1) * pg).min(end);
                        match want.last_mut() {
                            Some(w) if w.0.add(w.1) == pfn => {
                                w.1 += 1;
                                w.3 += hi - lo;
                            }
                            _ => want.push((pfn, 1, lo % pg, hi - lo)),
                        }
                    }
                    prop_assert_eq!(sg.push_mapped(&io, &user, va, len), Ok(want.len()));
                    let got: Vec<_> = sg.entries().iter().map(|e| (e.pfn, e.nr_pages, e.offset, e.len)).collect();
                    prop_assert_eq!(&got, &want);
                    let data = pattern(len as usize, seed);
                    dev.write_to(&sg, &data).unwrap();
                    let mut sh = shadow.borrow_mut();
                    for (k, byte) in data.iter().enumerate() {
                        let v = start + k as u64;
                        let page = layout[(v / pg) as usize].unwrap();
                        sh[(page * pg + v % pg) as usize] = *byte;
                    }
                    prop_assert!(phys_bytes(&m, base.phys(), 16 * PAGE_SIZE) == *sh, "physical bytes = model");
                }
            }
            user.destroy(&cpu);
            prop_assert_eq!((d.counts.refcount(), d.counts.mapcount()), (1, 0));
            Ok(())
        })
        .unwrap();
    assert_eq!(mappable_put(&m, &cpu, d), Ok(true));
}

/// A list-to-list copy between two lists naming the same page: the device maps it once and
/// moves the bytes like `memmove` (the source range read before it is overwritten).
#[test]
fn dma_copy_within_one_page_is_a_memmove() {
    let m = machine();
    let cpu = m.cpus().claim(0).unwrap();
    let io = IoSpace::new(&m);
    let dev = SimDevice::new(&m);
    let f = m.folio_alloc(&cpu, 0, Gfp::KERNEL, FolioKind::Anon).unwrap();
    let mut whole = SgList::<1>::new();
    whole.push_folio(&io, &f, 0, PAGE_SIZE as u64).unwrap();
    let data = pattern(PAGE_SIZE, 3);
    dev.write_to(&whole, &data).unwrap();
    let (mut a, mut b) = (SgList::<1>::new(), SgList::<1>::new());
    a.push_folio(&io, &f, 0, 1000).unwrap();
    b.push_folio(&io, &f, 500, 1000).unwrap();
    let chunks = dev.chunks();
    dev.copy(&a, &b, 1000).unwrap();
    assert_eq!(dev.chunks(), chunks + 1);
    let mut got = vec![0u8; PAGE_SIZE];
    dev.read_from(&whole, &mut got).unwrap();
    let mut want = data.clone();
    want.copy_within(0..1000, 500);
    assert_eq!(got, want);
    // A copy that would leave the page is refused before any byte moves.
    assert!(matches!(dev.copy(&a, &b, 1001), Err(DmaError::ShortList { .. })));
    m.folio_put(&cpu, f).unwrap();
}
