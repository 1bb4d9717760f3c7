//! Property tests: arbitrary bytes never make a parser or the snapshot reader panic; they
//! return a value or an error.

use memdesc_linux::census::{census, BuddyMode, CensusOptions};
use memdesc_linux::tables::{BuddyInfo, Meminfo, PageTypeInfo, SlabInfo, Vmstat, ZoneInfo};
use memdesc_linux::trace::{parse_line, TraceReader};
use memdesc_linux::KpageSnapshot;
use proptest::prelude::*;

const LINES: &[&str] = &[
    "            bash-3012    [001] .....   290.788702: mm_page_alloc: page=0000000087ba2855 pfn=0x129a8b order=0 migratetype=1 gfp_flags=GFP_HIGHUSER_MOVABLE|__GFP_COMP",
    "            bash-3012    [001] .....   290.788740: kmalloc: call_site=alloc_pipe_info+0x5d/0x230 ptr=00000000384dabf1 bytes_req=176 bytes_alloc=192 gfp_flags=GFP_KERNEL_ACCOUNT|__GFP_ZERO node=-1 accounted=true",
    "            bash-3012    [001] .....   290.788738: kmem_cache_alloc: call_site=alloc_inode+0xa3/0xd0 ptr=000000000362a5e5 name=inode_cache bytes_req=616 bytes_alloc=624 gfp_flags=GFP_KERNEL node=-1 accounted=true",
    "            date-3453    [000] .....   367.180232: mm_filemap_add_to_page_cache: dev 0:3 ino fe00000 pfn=0x12cfab ofs=6636204032 order=0",
    "            date-3453    [000] d..3.   367.179971: mm_lru_insertion: folio=000000003cc1b4aa pfn=0x117a1a lru=3 flags= f   B",
    "            bash-3437    [001] .....   367.179754: alloc_vmap_area: va_start: 18446683600620355584 size=20480 align=16384 vstart=0xffffc90000000000 vend=0xffffe8ffffffffff failed=0",
    "     kworker/0:1-11      [000] .....   367.310209: free_vmap_area_noflush: va_start=0xffffc90003028000 nr_lazy=5260 nr_lazy_max=16384",
    "  irq-1 [000] ..s1. 1.0: page_pool_state_hold: page_pool=00000000deadbeef netmem=00000000cafe is_net_iov=0, pfn=0x1234 hold=7",
    "  kc-1 [000] ..... 1.0: mm_migrate_pages: nr_succeeded=10 nr_failed=1 nr_thp_succeeded=0 nr_thp_failed=0 nr_thp_split=0 nr_split=0 mode=MIGRATE_ASYNC reason=compaction",
    "CPU:1 [LOST 123 EVENTS]",
];

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data");

fn table(name: &str) -> Vec<u8> {
    std::fs::read(format!("{DATA}/traces/pagecache/start/{name}")).unwrap()
}

/// A real line or table with a few bytes replaced, inserted or cut away.
fn mutated(base: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let n = base.len().max(1);
    (prop::collection::vec((0..n, any::<u8>(), 0u8..3), 0..8), 0..=base.len()).prop_map(move |(edits, cut)| {
        let mut v = base.clone();
        for (at, b, op) in edits {
            let at = at.min(v.len());
            match op {
                0 if at < v.len() => v[at] = b,
                1 => v.insert(at, b),
                _ if at < v.len() => {
                    v.remove(at);
                }
                _ => {}
            }
        }
        v.truncate(cut.max(v.len() / 2));
        v
    })
}

fn parse_all_tables(bytes: &[u8]) {
    let _ = Meminfo::parse("f", bytes);
    let _ = BuddyInfo::parse("f", bytes);
    let _ = ZoneInfo::parse("f", bytes);
    let _ = PageTypeInfo::parse("f", bytes);
    let _ = SlabInfo::parse("f", bytes);
    let _ = Vmstat::parse("f", bytes);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn trace_lines_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse_line(&bytes);
    }

    #[test]
    fn mutated_trace_lines_never_panic(
        (i, edits) in (0..LINES.len()).prop_flat_map(|i| (Just(i), mutated(LINES[i].as_bytes().to_vec())))
    ) {
        let _ = i;
        let _ = parse_line(&edits);
    }

    #[test]
    fn trace_reader_never_panics(chunks in prop::collection::vec(
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..64),
            (0..LINES.len()).prop_map(|i| { let mut v = LINES[i].as_bytes().to_vec(); v.push(b'\n'); v }),
        ], 0..20)) {
        let text: Vec<u8> = chunks.concat();
        let mut r = TraceReader::new("fuzz", &text[..]);
        let mut n = 0u64;
        loop {
            match r.next_record() {
                Ok(Some(_)) => n += 1,
                Ok(None) => break,
                Err(e) => {
                    // An error names the stream and a line.
                    prop_assert!(e.to_string().starts_with("fuzz:"));
                    break;
                }
            }
        }
        prop_assert!(r.stats().events == n);
    }

    #[test]
    fn zstd_garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let mut v = vec![0x28, 0xb5, 0x2f, 0xfd];
        v.extend_from_slice(&bytes);
        let dir = std::env::temp_dir().join(format!("memdesc-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(format!("{}.zst", bytes.len()));
        std::fs::write(&p, &v).unwrap();
        if let Ok(r) = TraceReader::open(&p) {
            let _ = r.for_each(|_| {});
        }
        let _ = std::fs::remove_file(&p);
    }

    #[test]
    fn tables_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        parse_all_tables(&bytes);
    }

    #[test]
    fn mutated_tables_never_panic(
        bytes in prop_oneof![
            mutated(table("zoneinfo")),
            mutated(table("buddyinfo")),
            mutated(table("meminfo")),
            mutated(table("pagetypeinfo")),
            mutated(table("slabinfo")[..2000].to_vec()),
            mutated(table("vmstat")),
        ]
    ) {
        parse_all_tables(&bytes);
    }

    #[test]
    fn snapshot_and_census_never_panic(
        flags in prop::collection::vec(any::<u8>(), 0..2100),
        counts in prop::collection::vec(any::<u8>(), 0..2100),
        zones in prop::collection::vec((0u64..300, 0u64..300, 0u64..300, 0u64..300), 0..4),
        huge_start in any::<bool>(),
        mode in prop_oneof![Just(BuddyMode::Auto), Just(BuddyMode::EveryPage), Just(BuddyMode::HeadOnly)],
        max_order in 0u32..100,
    ) {
        // Bias toward meaningful flag words: keep only a few bits of each byte run.
        let Ok(k) = KpageSnapshot::from_bytes(&flags, &counts) else { return Ok(()) };
        let mut text = String::new();
        for (i, (start, spanned, present, managed)) in zones.iter().enumerate() {
            let start = if huge_start && i == 0 { u64::MAX - 5 } else { *start };
            let present = (*present).min(*spanned);
            let managed = (*managed).min(present);
            text.push_str(&format!(
                "Node 0, zone Z{i}\n pages free 0\n spanned {spanned}\n present {present}\n managed {managed}\n start_pfn: {start}\n"
            ));
        }
        let zi = ZoneInfo::parse("z", text.as_bytes()).unwrap();
        let c = census(&k, &zi, CensusOptions { buddy_mode: mode, max_buddy_order: max_order });
        prop_assert_eq!(c.pages.sum(), c.total);
        prop_assert!(c.total <= k.len());
    }

    #[test]
    fn census_of_structured_flags(
        picks in prop::collection::vec(any::<u8>(), 0..3000),
        managed_frac in 0u64..=100,
    ) {
        // Flag words of the kinds that matter, in random order.
        const WORDS: [u64; 12] = [
            0, 1 << 10, 1 << 7, (1 << 7) | (1 << 15), (1 << 7) | (1 << 16),
            (1 << 5) | (1 << 12), (1 << 5) | (1 << 15), (1 << 5) | (1 << 16),
            1 << 16, 1 << 26, 1 << 32, 1 << 20,
        ];
        let words: Vec<u64> = picks.iter().map(|&p| WORDS[p as usize % WORDS.len()]).collect();
        let f: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let c = vec![0u8; f.len()];
        let k = KpageSnapshot::from_bytes(&f, &c).unwrap();
        let n = words.len() as u64;
        let text = format!(
            "Node 0, zone N\n pages free 0\n spanned {n}\n present {n}\n managed {}\n start_pfn: 0\n",
            n * managed_frac / 100
        );
        let zi = ZoneInfo::parse("z", text.as_bytes()).unwrap();
        let cs = census(&k, &zi, CensusOptions::default());
        let slab = words.iter().filter(|&&w| w & (1 << 7) != 0).count() as u64;
        let pgt = words.iter().filter(|&&w| w & (1 << 26) != 0).count() as u64;
        prop_assert_eq!(cs.pages[memdesc_linux::Kind::Slab], slab);
        prop_assert_eq!(cs.pages[memdesc_linux::Kind::PageTable], pgt);
        prop_assert_eq!(cs.pages.sum(), cs.total);
        prop_assert_eq!(cs.areas.total, n.div_ceil(512));
    }
}
