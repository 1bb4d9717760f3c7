//! The plausibility checks of `memdesc estimate` ([`memdesc_linux::plausibility`]): every real
//! snapshot in `../shared/data` and the bundled sample passes with a wide margin; random
//! bytes of the right length do not.

use std::path::{Path, PathBuf};

use memdesc_linux::census::{Census, CensusOptions};
use memdesc_linux::plausibility::{Plausibility, MAX_BAD_FRACTION};
use memdesc_linux::{KpageSnapshot, Snapshot};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data");
const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../samples/small");

fn real_dirs() -> Vec<PathBuf> {
    let d = Path::new(DATA);
    let mut v = vec![d.join("snapshots/mixA"), Path::new(SAMPLE).join("start"), Path::new(SAMPLE).join("end")];
    for t in ["pagecache", "anon", "metadata"] {
        for w in ["start", "end"] {
            v.push(d.join("traces").join(t).join(w));
        }
    }
    v.retain(|p| p.exists());
    v
}

#[test]
fn real_snapshots_are_plausible_with_margin() {
    let dirs = real_dirs();
    assert!(!dirs.is_empty(), "no real snapshot found");
    for dir in dirs {
        let s = Snapshot::read_dir(&dir).unwrap();
        let c = Census::from_snapshot(&s, CensusOptions::default());
        let p = Plausibility::check(&s, &c);
        eprintln!("{}: {p:?}", dir.display());
        assert!(p.problems().is_empty(), "{}: {:?}", dir.display(), p.problems());
        // A margin of 10x below each per-page threshold.
        let tenth = (p.pfns as f64 * MAX_BAD_FRACTION / 10.0) as u64;
        assert!(
            p.undefined_bits <= tenth && p.contradictory <= tenth && p.hwpoison <= tenth,
            "{}: {p:?}",
            dir.display()
        );
    }
}

/// Random bytes of the right length, a snapshot's tables kept: the census runs, the checks fail.
#[test]
fn random_kpageflags_are_implausible() {
    let dir = Path::new(SAMPLE).join("end");
    let real = Snapshot::read_dir(&dir).unwrap();
    let n = real.kpage.len() as usize;
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut flags = Vec::with_capacity(n * 8);
    for _ in 0..n {
        // xorshift64*
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        flags.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    let counts = vec![0u8; n * 8];
    let s = Snapshot { kpage: KpageSnapshot::from_bytes(&flags, &counts).unwrap(), ..real };
    let c = Census::from_snapshot(&s, CensusOptions::default());
    let p = Plausibility::check(&s, &c);
    let problems = p.problems();
    assert!(problems.len() >= 3, "{problems:?}");
    let text = problems.join("\n");
    for what in ["does not define", "contradictory", "HWPOISON"] {
        assert!(text.contains(what), "{what}: {text}");
    }
}
