//! Where the commands find their input data: the project's bundled sample (`samples/`) and
//! the real Linux data in `../shared/data`, looked up next to the current directory first and
//! then in the source tree the binary was built from.

use std::path::{Path, PathBuf};

/// The repository root of the source tree this binary was built from.
fn source_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `rel` (a path inside the repository, e.g. `samples/small`) if it holds `marker`: from the
/// current directory, else from the source tree.
pub fn bundled(rel: &str, marker: &str) -> Option<PathBuf> {
    let here = PathBuf::from(rel);
    if here.join(marker).exists() {
        return Some(here);
    }
    let built = source_root().join(rel);
    built.join(marker).exists().then_some(built)
}

/// A directory of `../shared/data` (e.g. `traces/pagecache`), beside the source tree or the
/// current directory.
pub fn shared_data(rel: &str) -> Option<PathBuf> {
    let src = source_root().join("../shared/data").join(rel);
    if src.exists() {
        return Some(src);
    }
    let here = Path::new("../shared/data").join(rel);
    here.exists().then_some(here)
}
