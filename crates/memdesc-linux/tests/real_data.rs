//! The census and the trace parser against every snapshot and trace in `../shared/data`.

use std::path::{Path, PathBuf};

use memdesc_linux::census::{BuddyMode, Census, CensusOptions, Kind};
use memdesc_linux::kpf::{KPF_BUDDY, KPF_PGTABLE, KPF_SLAB};
use memdesc_linux::trace::{EventKind, TraceReader};
use memdesc_linux::Snapshot;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data");

/// The start and end snapshots of the three traces (mixA has its own test).
fn snapshot_dirs() -> Vec<PathBuf> {
    let d = Path::new(DATA);
    let mut v = Vec::new();
    for t in ["pagecache", "anon", "metadata"] {
        for w in ["start", "end"] {
            v.push(d.join("traces").join(t).join(w));
        }
    }
    v
}

fn check_snapshot(dir: &Path) -> Census {
    let s = Snapshot::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let c = Census::from_snapshot(&s, CensusOptions::default());
    // Independent counts straight from kpageflags.
    let (mut slab, mut pgtable, mut buddy) = (0u64, 0u64, 0u64);
    for pfn in 0..s.kpage.len() {
        let f = s.kpage.flags(pfn);
        slab += f.has(KPF_SLAB) as u64;
        pgtable += f.has(KPF_PGTABLE) as u64;
        buddy += f.has(KPF_BUDDY) as u64;
    }
    let name = dir.display();
    assert_eq!(c.pages.sum(), c.total, "{name}: kinds must partition the pfns");
    assert_eq!(c.pages[Kind::Slab], slab, "{name}: slab pages");
    assert_eq!(c.pages[Kind::PageTable], pgtable, "{name}: page-table pages");
    assert_eq!(c.buddy_mode, BuddyMode::EveryPage, "{name}");
    assert_eq!(c.pages[Kind::Free], buddy, "{name}: every BUDDY pfn is free");
    let bi = s.buddyinfo.as_ref().expect("buddyinfo").free_pages();
    let free = c.pages[Kind::Free];
    let diff = free.abs_diff(bi) as f64 / bi as f64;
    assert!(diff <= 0.05, "{name}: census free {free} vs buddyinfo {bi}");
    // Zones: every page the kernel does not manage is accounted for as hole/uninit/reserved.
    assert_eq!(c.unexplained_absent, 0, "{name}");
    let present: u64 = s.zoneinfo.zones.iter().map(|z| z.present).sum();
    let spanned: u64 = s.zoneinfo.zones.iter().map(|z| z.spanned).sum();
    assert_eq!(c.total, spanned, "{name}");
    // Holes the kernel flags RESERVED (the legacy BIOS area) count as reserved, so the
    // labelled holes are at most spanned − present, and what the kernel manages is exactly
    // what is neither hole, uninitialised nor flagged RESERVED (the zero page is RESERVED too,
    // but counted as the zero page).
    assert!(c.pages[Kind::Hole] <= spanned - present, "{name}");
    let managed: u64 = s.zoneinfo.zones.iter().map(|z| z.managed).sum();
    let reserved_flagged: u64 = c.zones.iter().map(|z| z.reserved_flagged).sum();
    assert!(reserved_flagged >= c.pages[Kind::Reserved]);
    assert_eq!(
        c.total - c.pages[Kind::Hole] - c.pages[Kind::Uninit] - reserved_flagged,
        managed,
        "{name}: managed pages"
    );
    // The slab descriptor count is consistent with slabinfo (same order of magnitude; slabinfo
    // is read moments apart and merges caches).
    let si = s.slabinfo.as_ref().expect("slabinfo").pages();
    assert!(slab.abs_diff(si) * 10 <= si, "{name}: slab pages {slab} vs slabinfo {si}");
    assert_eq!(c.areas.total, c.areas.uniform() + c.areas.split);
    eprintln!(
        "{name}: total {} free {} (buddyinfo {bi}, {:+.2}%) slab {} ({} slabs) pgtable {} \
         reserved {} hole {} uninit {} anon {} file {} other {} zero {} folios {:?} \
         areas {} split {} free blocks {:?}",
        c.total,
        free,
        100.0 * (free as f64 - bi as f64) / bi as f64,
        slab,
        c.slabs(),
        pgtable,
        c.pages[Kind::Reserved],
        c.pages[Kind::Hole],
        c.pages[Kind::Uninit],
        c.pages[Kind::Anon],
        c.pages[Kind::File],
        c.pages[Kind::Other],
        c.pages[Kind::ZeroPage],
        c.folios_by_order,
        c.areas.total,
        c.areas.split,
        c.free_blocks_by_order,
    );
    c
}

#[test]
fn census_of_every_snapshot() {
    for d in snapshot_dirs() {
        check_snapshot(&d);
    }
}

#[test]
fn mixa_holds_its_workload() {
    // 3 GiB of file page cache and 3 GiB of anonymous memory were resident.
    let c = check_snapshot(&Path::new(DATA).join("snapshots/mixA"));
    let gib = 1u64 << 18; // pages per GiB
    assert!(c.pages[Kind::Anon] >= 3 * gib, "{}", c.pages[Kind::Anon]);
    assert!(c.pages[Kind::File] >= 3 * gib, "{}", c.pages[Kind::File]);
}

#[test]
fn every_trace_line_is_accounted_for() {
    for t in ["pagecache", "anon", "metadata"] {
        let dir = Path::new(DATA).join("traces").join(t);
        let readme = std::fs::read_to_string(dir.join("README")).unwrap();
        let lines: u64 = readme
            .lines()
            .find_map(|l| l.strip_prefix("events: "))
            .and_then(|n| n.trim().parse().ok())
            .expect("README events line");
        let mut pfn_max = 0u64;
        let stats = TraceReader::open(&dir.join("events.txt.zst"))
            .unwrap()
            .for_each(|r| {
                if let memdesc_linux::Event::PageAlloc { pfn: Some(p), .. } = r.event {
                    pfn_max = pfn_max.max(p);
                }
            })
            .unwrap_or_else(|e| panic!("{t}: {e}"));
        assert_eq!(stats.lines, lines, "{t}");
        assert_eq!(stats.lines, stats.events + stats.unknown + stats.headers + stats.blank + stats.lost_markers, "{t}");
        assert_eq!(stats.unknown, 0, "{t}: {:?}", stats.unknown_by_name);
        assert_eq!(stats.lost_events, 0, "{t}");
        assert!(pfn_max < 6_553_600, "{t}: pfn {pfn_max:#x} beyond the machine");
        let by: Vec<(EventKind, u64)> =
            EventKind::ALL.iter().map(|&k| (k, stats.count(k))).filter(|&(_, n)| n > 0).collect();
        eprintln!("{t}: {} lines, {by:?}", stats.lines);
        if t == "pagecache" {
            // Counted independently with awk over the decompressed text.
            assert_eq!(stats.count(EventKind::PageAlloc), 136_831);
            assert_eq!(stats.count(EventKind::PageFree), 119_734);
            assert_eq!(stats.count(EventKind::KmemCacheAlloc), 138_906);
            assert_eq!(stats.count(EventKind::KmemCacheFree), 145_737);
            assert_eq!(stats.count(EventKind::FilemapAdd), 132_170);
            assert_eq!(stats.count(EventKind::FilemapDelete), 114_865);
            assert_eq!(stats.count(EventKind::LruInsertion), 132_914);
            assert_eq!(stats.count(EventKind::Kmalloc), 3_701);
            assert_eq!(stats.count(EventKind::Kfree), 5_037);
        }
    }
}

#[test]
fn bundled_sample_is_consistent() {
    // The project's own capture (samples/small, recorded with `memdesc capture`).
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../samples/small"));
    check_snapshot(&dir.join("start"));
    check_snapshot(&dir.join("end"));
    let readme = std::fs::read_to_string(dir.join("README")).unwrap();
    let lines: u64 = readme
        .lines()
        .find_map(|l| l.strip_prefix("events: "))
        .and_then(|n| n.trim().parse().ok())
        .expect("README events line");
    let stats = TraceReader::open(&dir.join("events.txt.zst")).unwrap().for_each(|_| {}).unwrap();
    assert_eq!(stats.lines, lines);
    assert_eq!(stats.unknown + stats.lost_events, 0, "{stats:?}");
    assert!(stats.count(EventKind::FilemapAdd) >= 4096, "16 MiB written and read back");
    let total: u64 = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .flat_map(|e| {
            if e.path().is_dir() {
                std::fs::read_dir(e.path()).unwrap().flatten().collect::<Vec<_>>()
            } else {
                vec![e]
            }
        })
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(total <= 2 << 20, "the bundled sample must stay within 2 MiB: {total}");
}
