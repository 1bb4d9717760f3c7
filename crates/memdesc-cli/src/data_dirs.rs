//! Where the commands find their input data, and where they write charts.
//!
//! Input is looked up in this order, and the first that exists is used:
//! 1. the command's own argument (`estimate --snapshot DIR`, `replay DIR`);
//! 2. the environment variable [`DATA_ENV`] (`MEMDESC_DATA`): a directory that holds the
//!    bundled sample as `samples/small` (a copy of the repository's `samples/`, or the
//!    repository itself) and/or the shared Linux data's `traces/` and `snapshots/`;
//! 3. the current directory and its parents: `samples/small` for the bundled sample,
//!    `shared/data/…` for the shared data (so `../shared/data` from the repository root);
//! 4. the directory of the running binary and its parents, the same way (a binary in
//!    `target/debug/` finds the sample of the tree it was built in; a copy of the binary
//!    elsewhere finds only what is next to it).
//!
//! No path of the build tree is compiled in: a binary copied to another machine or directory
//! never reads the build tree's files without being told to. Paths are printed canonicalized.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The environment variable naming a data directory (see the module documentation).
pub const DATA_ENV: &str = "MEMDESC_DATA";

/// Where to look, in order: `$MEMDESC_DATA`, then the current directory and its parents,
/// then the binary's directory and its parents.
fn bases() -> (Option<PathBuf>, Vec<PathBuf>) {
    let env = std::env::var_os(DATA_ENV).filter(|v| !v.is_empty()).map(PathBuf::from);
    let mut roots = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        roots.extend(cwd.ancestors().map(Path::to_path_buf));
    }
    if let Some(dir) = std::env::current_exe().ok().and_then(|e| e.canonicalize().ok()).and_then(|e| {
        let d = e.parent()?.to_path_buf();
        Some(d)
    }) {
        roots.extend(dir.ancestors().map(Path::to_path_buf));
    }
    (env, roots)
}

fn normalised(p: PathBuf) -> PathBuf {
    p.canonicalize().unwrap_or(p)
}

/// The lookup itself, on explicit inputs: `$MEMDESC_DATA/rel`, then `root/prefix/rel` for
/// each root in order; the first holding `marker`.
fn find(env: Option<&Path>, roots: &[PathBuf], prefix: &str, rel: &str, marker: &str) -> Option<PathBuf> {
    let from_env = env.map(|e| e.join(rel));
    let from_roots = roots.iter().map(|r| r.join(prefix).join(rel));
    from_env.into_iter().chain(from_roots).find(|p| p.join(marker).exists()).map(normalised)
}

/// `rel` (a path inside the repository, e.g. `samples/small`) if a directory holding `marker`
/// is found by the lookup of the module documentation.
pub fn bundled(rel: &str, marker: &str) -> Option<PathBuf> {
    let (env, roots) = bases();
    find(env.as_deref(), &roots, "", rel, marker)
}

/// A directory of the shared Linux data (e.g. `traces/pagecache`): `$MEMDESC_DATA/rel`, else
/// `shared/data/rel` beside the current directory or the binary (or a parent of theirs).
pub fn shared_data(rel: &str) -> Option<PathBuf> {
    let (env, roots) = bases();
    find(env.as_deref(), &roots, "shared/data", rel, "")
}

/// The hint error messages give when nothing was found.
pub fn lookup_hint() -> String {
    format!(
        "set {DATA_ENV}=DIR (a directory holding samples/small, or the shared data's traces/ and snapshots/), \
         or run from the repository (samples/ in the current directory or a parent)"
    )
}

/// Writes a chart with `write` after checking that `path` can be created, so that a bad path
/// gives an error naming it and the operating system's reason (not a plotting backend's
/// debug dump). Callers print their report before, so nothing is lost.
pub fn write_chart(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    std::fs::File::create(path).map_err(|e| anyhow::anyhow!("cannot write the chart to {}: {e}", path.display()))?;
    write(path).with_context(|| format!("writing the chart {}", path.display()))
}

/// A path as it is printed: canonical where it exists.
pub fn display(p: &Path) -> String {
    normalised(p.to_path_buf()).display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_then_roots_in_order_and_normalised() {
        let t = std::env::temp_dir().join(format!("memdesc-dd-{}", std::process::id()));
        let a = t.join("a");
        let b = t.join("b/c");
        for d in [&a, &b] {
            std::fs::create_dir_all(d.join("samples/small/start")).unwrap();
        }
        let roots = vec![t.join("b/c/../c"), a.clone()];
        // Roots in order, printed without `..`.
        let got = find(None, &roots, "", "samples/small", "start").unwrap();
        assert_eq!(got, b.join("samples/small").canonicalize().unwrap());
        assert!(!got.to_string_lossy().contains(".."));
        // The environment variable comes first.
        let got = find(Some(&a), &roots, "", "samples/small", "start").unwrap();
        assert_eq!(got, a.join("samples/small").canonicalize().unwrap());
        // Nothing found: None (no compiled-in fallback).
        assert_eq!(find(None, &[t.join("nowhere")], "", "samples/small", "start"), None);
        // Shared data under `shared/data` of a root.
        std::fs::create_dir_all(t.join("shared/data/traces/x")).unwrap();
        let got = find(None, &[b.clone(), t.clone()], "shared/data", "traces/x", "").unwrap();
        assert_eq!(got, t.join("shared/data/traces/x").canonicalize().unwrap());
        let _ = std::fs::remove_dir_all(&t);
    }

    #[test]
    fn a_chart_that_cannot_be_written_names_its_path() {
        let e = write_chart(Path::new("/nonexistent/x.svg"), |_| Ok(())).unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("/nonexistent/x.svg") && msg.contains("No such file"), "{msg}");
    }
}
