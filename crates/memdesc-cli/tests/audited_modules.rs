//! Where the core may say `unsafe` (issue 13, item 3): a few audited modules, each numbering
//! its invariants in its header. The measure is the issue's own, `grep -l unsafe -r
//! crates/memdesc/src`: a file counts if the word appears anywhere in it, comments included,
//! so the rest of the core does not even talk about it (prose says "raw" or "unchecked").
//!
//! Adding a file to [`AUDITED`] is a design decision: it needs a reason in
//! `docs/ARCHITECTURE.md` ("Where unsafe lives") and a header with numbered invariants.

use std::fs;
use std::path::{Path, PathBuf};

/// The files of `crates/memdesc/src` that may contain `unsafe`, and what each owns.
const AUDITED: [(&str, &str); 10] = [
    ("base/platform.rs", "the Platform contract (direct map, local mappings) and the one test platform"),
    ("base/sync.rs", "SpinLock and RaceCell"),
    ("base/list.rs", "the one intrusive list"),
    ("base/page_access.rs", "platform memory as Rust values: page contents, page word tables, boot arrays"),
    ("memmap/word.rs", "the page-word table view; the one writer of page words"),
    ("memmap/desc.rs", "descriptor layouts: Descriptor and Linked impls, per-kind list helpers"),
    ("memmap/desc_ref.rs", "descriptor addresses to references (RCU, lock, pin, Kept)"),
    ("slab/alloc.rs", "the object allocator's own memory (free pointers, state words, bootstrap, per-CPU array)"),
    ("slab/obj.rs", "typed objects in slab memory (KObj, KArray, CacheObj)"),
    (
        "machine/raw.rs",
        "the raw interface: every public unsafe fn, handles' Send/Sync, unchecked steps of upper layers",
    ),
];

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn unsafe_lives_only_in_the_audited_modules() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../memdesc/src");
    let mut files = Vec::new();
    rs_files(&src, &mut files);
    let mut found = Vec::new();
    for f in &files {
        let text = fs::read_to_string(f).unwrap();
        if text.contains("unsafe") {
            let rel = f.strip_prefix(&src).unwrap().to_string_lossy().replace('\\', "/");
            found.push((rel, text));
        }
    }
    let stray: Vec<&str> =
        found.iter().map(|(r, _)| r.as_str()).filter(|r| !AUDITED.iter().any(|(a, _)| a == r)).collect();
    assert!(stray.is_empty(), "unsafe outside the audited modules: {stray:?}");
    assert!(found.len() <= AUDITED.len());
    for (rel, text) in &found {
        // Each audited module numbers its invariants in its header, and its SAFETY comments
        // cite them (or a contract: Platform, Descriptor, Linked, a raw fn's `# Safety`).
        let header: String = text.lines().take_while(|l| l.starts_with("//!") || l.is_empty()).collect();
        assert!(header.contains("Invariants"), "{rel}: the header has no invariants section");
        let blocks = text.matches("unsafe {").count();
        let safety = text.matches("SAFETY").count();
        assert!(safety >= blocks, "{rel}: {blocks} unsafe blocks but {safety} SAFETY comments");
    }
}
