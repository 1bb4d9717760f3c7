//! The fuzz targets' bodies (`memdesc_linux::fuzzing`) in the normal suite: arbitrary bytes
//! and byte-level mutations of the bundled real capture (trace lines, kpageflags/kpagecount
//! words, /proc tables) must all come back as values or typed errors, never a panic.
//! Coverage-guided fuzzing of the same bodies: `fuzz/` and docs/TESTING.md.

use std::io::Read;
use std::path::Path;
use std::sync::OnceLock;

use memdesc_linux::fuzzing;
use proptest::prelude::*;

fn sample() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../samples/small"))
}

fn zst_prefix(name: &str, n: usize) -> Vec<u8> {
    let f = std::fs::File::open(sample().join(name)).unwrap();
    let mut out = vec![];
    zstd::Decoder::new(f).unwrap().take(n as u64).read_to_end(&mut out).unwrap();
    out
}

/// The first 64 KiB of the real trace text.
fn trace_seed() -> &'static [u8] {
    static S: OnceLock<Vec<u8>> = OnceLock::new();
    S.get_or_init(|| zst_prefix("events.txt.zst", 64 << 10))
}

/// Real kpageflags words, kpagecount words, and the /proc tables.
type SnapshotSeed = (Vec<u8>, Vec<u8>, Vec<Vec<u8>>);

/// 8 KiB of real kpageflags and kpagecount words, and the /proc tables.
fn snapshot_seed() -> &'static SnapshotSeed {
    static S: OnceLock<SnapshotSeed> = OnceLock::new();
    S.get_or_init(|| {
        let tables = ["meminfo", "buddyinfo", "zoneinfo", "pagetypeinfo", "slabinfo", "vmstat"]
            .iter()
            .map(|t| std::fs::read(sample().join("start").join(t)).unwrap())
            .collect();
        (zst_prefix("start/kpageflags.zst", 8 << 10), zst_prefix("start/kpagecount.zst", 8 << 10), tables)
    })
}

/// Applies up to 16 byte edits (set, insert, delete) and an optional truncation.
fn mutate(seed: &[u8], edits: &[(u16, u8, u8)], cut: Option<u16>) -> Vec<u8> {
    let mut v = seed.to_vec();
    for &(at, what, byte) in edits {
        if v.is_empty() {
            v.push(byte);
            continue;
        }
        let i = at as usize * v.len() / 65536;
        match what % 3 {
            0 => v[i] = byte,
            1 => v.insert(i, byte),
            _ => {
                v.remove(i);
            }
        }
    }
    if let Some(c) = cut {
        v.truncate(c as usize * v.len() / 65536);
    }
    v
}

fn edits() -> impl Strategy<Value = (Vec<(u16, u8, u8)>, Option<u16>)> {
    (proptest::collection::vec(any::<(u16, u8, u8)>(), 0..16), any::<Option<u16>>())
}

#[test]
fn real_inputs_read_completely() {
    assert!(fuzzing::trace(trace_seed()) > 100, "the real trace prefix parses into records");
    let (f, c, tables) = snapshot_seed();
    let mut both = vec![128u8];
    both.extend_from_slice(f);
    both.extend_from_slice(c);
    // A first byte of 128 splits the rest in the middle: the two real halves.
    assert_eq!(fuzzing::snapshot(&both), 1024);
    for t in tables {
        fuzzing::proc_tables(t);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn trace_parser_survives_mutations((e, cut) in edits(), window in any::<u16>()) {
        let s = trace_seed();
        // A 4 KiB window of the real trace, mutated.
        let start = window as usize * (s.len() - 4096) / 65536;
        fuzzing::trace(&mutate(&s[start..start + 4096], &e, cut));
    }

    #[test]
    fn snapshot_reader_survives_mutations((e, cut) in edits(), split in any::<u8>()) {
        let (f, c, _) = snapshot_seed();
        let mut input = vec![split];
        input.extend_from_slice(&f[..1024]);
        input.extend_from_slice(&c[..1024]);
        fuzzing::snapshot(&mutate(&input, &e, cut));
    }

    #[test]
    fn proc_tables_survive_mutations((e, cut) in edits(), which in 0usize..6) {
        fuzzing::proc_tables(&mutate(&snapshot_seed().2[which], &e, cut));
    }

    #[test]
    fn arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        fuzzing::trace(&data);
        fuzzing::snapshot(&data);
        fuzzing::proc_tables(&data);
    }
}
