//! How the simulated platform asks the host to back its memory. Boot memory goes on 2 MiB
//! host pages where it can (`SimPlatform::back_with_huge_pages`): contents survive the
//! collapse, untouched memory is never made resident by it, and a machine whose memmap was
//! collapsed works as before. Benchmarks pre-fault the chunks a run touched
//! (`SimPlatform::populate_touched_since`): exactly those chunks become resident, in full,
//! and what was written stays.

use memdesc::base::layout::{MemmapLayout, MemoryLayout};
use memdesc::{Config, Gfp, Pfn, Platform, PAGE_SIZE};
use memdesc_host::{boot, SimPlatform};

fn pattern(pfn: u64, i: usize) -> u64 {
    pfn.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ i as u64
}

#[test]
fn collapse_keeps_contents_and_skips_untouched_memory() {
    let layout = MemoryLayout::pc(1, MemmapLayout::Flat);
    let p = SimPlatform::new(&layout).unwrap();
    // Two 2 MiB chunks written in full, one never touched.
    let (first, touched_end, untouched_end) = (Pfn(4096), Pfn(4096 + 1024), Pfn(4096 + 1536));
    for pfn in first.0..touched_end.0 {
        let page = p.direct_map(Pfn(pfn)).unwrap().as_ptr() as *mut u64;
        for i in 0..PAGE_SIZE / 8 {
            // SAFETY: a direct-mapped page of the window, which nothing else uses in this test.
            unsafe { page.add(i).write(pattern(pfn, i)) };
        }
    }
    assert_eq!(p.resident_pages(first, touched_end), 1024);
    let untouched = p.back_with_huge_pages(touched_end, untouched_end);
    assert_eq!(untouched, 0, "an untouched chunk is not collapsed");
    assert_eq!(p.resident_pages(touched_end, untouched_end), 0, "collapsing made untouched memory resident");
    let collapsed = p.back_with_huge_pages(first, touched_end);
    assert!(collapsed <= 2);
    assert_eq!(p.resident_pages(first, touched_end), 1024);
    assert_eq!(p.huge_pages(), collapsed);
    for pfn in first.0..touched_end.0 {
        let page = p.direct_map(Pfn(pfn)).unwrap().as_ptr() as *const u64;
        for i in 0..PAGE_SIZE / 8 {
            // SAFETY: as above; the page was written before the collapse.
            assert_eq!(unsafe { page.add(i).read() }, pattern(pfn, i), "pfn {pfn} word {i}");
        }
    }
    eprintln!("collapsed {collapsed} of 2 written chunks (0 on a host without MADV_COLLAPSE)");
}

#[test]
fn machine_with_collapsed_memmap_works() {
    // 2 GiB flat: a 4 MiB memmap, two chunks the host may collapse at boot.
    let m = boot(&MemoryLayout::pc(2, MemmapLayout::Flat), Config::default()).unwrap();
    let cpu = m.cpus().claim(0).unwrap();
    let free0 = m.nr_free_pages();
    let blocks: Vec<_> = (0..10u32).map(|o| m.alloc_pages(&cpu, o, Gfp::KERNEL).unwrap()).collect();
    assert_eq!(free0 - m.nr_free_pages(), (1 << 10) - 1);
    for b in blocks {
        m.free_pages(&cpu, b).unwrap();
    }
    assert_eq!(m.nr_free_pages(), free0);
    eprintln!("host huge pages backing boot memory: {}", m.platform().huge_pages());
}

#[test]
fn populate_touched_since_fills_exactly_the_touched_chunks() {
    let layout = MemoryLayout::pc(1, MemmapLayout::Flat);
    let p = SimPlatform::new(&layout).unwrap();
    const CHUNK: u64 = 1024;
    let (start, end) = (Pfn(8 * CHUNK), Pfn(12 * CHUNK));
    let before = p.residency(start, end);
    assert_eq!(before.resident_pages(), 0);
    // Touch one page in the first chunk and one in the third.
    let touched = [start.0 + 10, start.0 + 2 * CHUNK + 5];
    for pfn in touched {
        let page = p.direct_map(Pfn(pfn)).unwrap().as_ptr() as *mut u64;
        // SAFETY: a direct-mapped page of the window, which nothing else uses in this test.
        unsafe { page.add(3).write(pattern(pfn, 3)) };
    }
    let populated = p.populate_touched_since(&before, CHUNK).unwrap();
    assert_eq!(populated, 2 * CHUNK - 2, "the two touched chunks, less their touched pages");
    for (k, want) in [CHUNK, 0, CHUNK, 0].into_iter().enumerate() {
        let lo = Pfn(start.0 + k as u64 * CHUNK);
        assert_eq!(p.resident_pages(lo, lo.add(CHUNK)), want, "chunk {k}");
    }
    for pfn in [touched[0], touched[0] + 1, touched[1], touched[1] - 1] {
        let page = p.direct_map(Pfn(pfn)).unwrap().as_ptr() as *const u64;
        let want = if touched.contains(&pfn) { pattern(pfn, 3) } else { 0 };
        // SAFETY: as above.
        assert_eq!(unsafe { page.add(3).read() }, want, "pfn {pfn}");
    }
    let again = p.residency(start, end);
    assert_eq!(again.resident_pages(), 2 * CHUNK);
    assert_eq!(p.populate_touched_since(&again, CHUNK).unwrap(), 0, "nothing touched since");
}
