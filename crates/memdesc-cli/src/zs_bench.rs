//! The `zsmalloc` section of `memdesc bench` (issue 8): density of zsmalloc and z3fold on a
//! zswap-like workload built from real files.
//!
//! 1. Pages: the regular files under `/usr/lib` (the workspace's own files where that is
//!    missing) are listed in sorted order and shuffled with the bench seed; the first
//!    [`PAGES_PER_FILE`] 4 KiB pages of each (the last one zero-padded) are taken until the
//!    page budget is reached (4096 pages with `--quick`, 32768 otherwise).
//! 2. Each page is compressed with zstd level 1; a page whose compressed form is not smaller
//!    than the largest object with an in-object header (`PAGE_SIZE - 8`) is stored as-is (a
//!    whole page, as zswap stores incompressible pages).
//! 3. Every object is stored in a fresh pool, then a random half is freed (as swap-in
//!    would), and `pool_bytes / stored_bytes` — bytes of pool pages over bytes of live objects
//!    — is reported before and after compaction. Bookkeeping outside the pages (descriptors,
//!    handle table, pool state) is reported separately.
//! 4. The same objects go through z3fold for comparison, and through zsmalloc pools with other
//!    class steps (`by_step`), which is how the default step was chosen.
//!
//! After compaction every surviving object is read back and compared with what was stored.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, ensure, Context, Result};
use memdesc::base::layout::{MemmapLayout, MemoryLayout};
use memdesc::z3fold::Z3foldPool;
use memdesc::zsmalloc::{Handle, ZsPool, DEFAULT_CLASS_STEP, DEFAULT_MAX_PAGES, ZS_HEADER};
use memdesc::{Config, PAGE_SIZE};
use memdesc_host::SimMachine;
use rand::rngs::Xoshiro256PlusPlus;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::Serialize;

/// Pages taken from one file at most, so the set spans many files.
pub const PAGES_PER_FILE: usize = 16;
/// The target for `overhead_ratio_after_compaction`.
pub const TARGET_OVERHEAD_RATIO: f64 = 1.05;
/// Class steps measured in `by_step`.
pub const STEPS: [usize; 4] = [8, 16, 32, 64];
/// Zspage lengths measured in `by_max_pages`.
pub const MAX_PAGES: [usize; 3] = [2, 4, 8];

/// Figures of one pool.
#[derive(Serialize, Debug, Clone, Default)]
pub struct Density {
    /// Bytes of pool pages after compaction.
    pub pool_bytes: u64,
    /// Bytes of pool pages before compaction (after the random half was freed).
    pub pool_bytes_before_compaction: u64,
    /// Bytes of live objects.
    pub stored_bytes: u64,
    /// Live objects.
    pub stored_objects: u64,
    /// `pool_bytes_before_compaction / stored_bytes`.
    pub overhead_ratio_before_compaction: f64,
    /// `pool_bytes / stored_bytes`.
    pub overhead_ratio_after_compaction: f64,
    /// `(pool_bytes + metadata_bytes) / stored_bytes`.
    pub overhead_ratio_with_metadata_after_compaction: f64,
    /// Bytes outside the pool pages: descriptors, handle table, pool state.
    pub metadata_bytes: u64,
    /// Objects compaction moved.
    pub objects_moved: u64,
    /// Pages compaction freed (zsmalloc only; z3fold compaction rearranges within pages).
    pub pages_freed: u64,
    /// Surviving objects read back intact after compaction.
    pub verified_objects: u64,
    /// Where `pool_bytes - stored_bytes` goes after compaction (zsmalloc only).
    pub waste: Option<Waste>,
}

/// The bytes of pool pages that do not hold object data, after compaction.
#[derive(Serialize, Debug, Clone, Copy, Default)]
pub struct Waste {
    /// Slot bytes beyond the object: header and rounding up to the class's slot.
    pub slot_rounding_bytes: u64,
    /// Free slots (in the partial zspages compaction could not empty).
    pub free_slot_bytes: u64,
    /// The end of each zspage that no slot covers.
    pub zspage_tail_bytes: u64,
}

/// The zsmalloc section.
#[derive(Serialize, Debug, Clone, Default)]
pub struct ZsBench {
    /// Where the pages came from.
    pub source: String,
    /// Files pages were taken from.
    pub files: usize,
    /// 4 KiB pages compressed.
    pub input_pages: usize,
    /// Compressor.
    pub compressor: &'static str,
    /// Pages stored as-is (not compressible below the largest class).
    pub incompressible_pages: usize,
    /// Mean stored object size over all pages, in bytes.
    pub mean_object_bytes: f64,
    /// The pool's class step in bytes.
    pub class_step: usize,
    /// Size classes after merging.
    pub classes: u64,
    /// Bytes of pool pages after compaction.
    pub pool_bytes: u64,
    /// Bytes of live objects.
    pub stored_bytes: u64,
    /// Before compaction.
    pub overhead_ratio_before_compaction: f64,
    /// After compaction; the target is <= 1.05.
    pub overhead_ratio_after_compaction: f64,
    /// The target.
    pub target_overhead_ratio: f64,
    /// Whether this run met it.
    pub target_met: bool,
    /// Full figures of the default pool.
    pub detail: Density,
    /// Most pages per zspage.
    pub max_pages: usize,
    /// `overhead_ratio_after_compaction` for each class step (bytes), default zspage length.
    pub by_step: std::collections::BTreeMap<String, f64>,
    /// `overhead_ratio_after_compaction` for each most pages per zspage, default step.
    pub by_max_pages: std::collections::BTreeMap<String, f64>,
}

/// The zsmalloc and z3fold sections.
pub struct Results {
    /// zsmalloc.
    pub zsmalloc: ZsBench,
    /// z3fold on the same objects.
    pub z3fold: Density,
}

fn source_dir() -> PathBuf {
    let usr = Path::new("/usr/lib");
    if usr.is_dir() {
        return usr.to_path_buf();
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Regular files under `dir`, sorted (symlinks are not followed).
fn list_files(dir: &Path, out: &mut Vec<PathBuf>, limit: usize) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<_> = rd.filter_map(|e| e.ok()).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        if out.len() >= limit {
            return;
        }
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            list_files(&e.path(), out, limit);
        } else if ft.is_file() {
            out.push(e.path());
        }
    }
}

/// The page set: (files used, pages).
pub fn collect_pages(dir: &Path, budget: usize) -> Result<(usize, Vec<Vec<u8>>)> {
    let mut files = Vec::new();
    list_files(dir, &mut files, 200_000);
    ensure!(!files.is_empty(), "no files under {}", dir.display());
    files.shuffle(&mut Xoshiro256PlusPlus::seed_from_u64(crate::measure::SEED));
    let mut pages = Vec::with_capacity(budget);
    let mut used = 0;
    for f in files {
        if pages.len() >= budget {
            break;
        }
        use std::io::Read;
        let Ok(file) = std::fs::File::open(&f) else { continue };
        let mut buf = Vec::new();
        if file.take((PAGES_PER_FILE * PAGE_SIZE) as u64).read_to_end(&mut buf).is_err() || buf.is_empty() {
            continue;
        }
        used += 1;
        for chunk in buf.chunks(PAGE_SIZE) {
            if pages.len() >= budget {
                break;
            }
            let mut p = chunk.to_vec();
            p.resize(PAGE_SIZE, 0);
            pages.push(p);
        }
    }
    ensure!(!pages.is_empty(), "no readable pages under {}", dir.display());
    Ok((used, pages))
}

/// Compresses each page with zstd level 1; incompressible pages are kept as-is.
pub fn compress(pages: &[Vec<u8>]) -> Result<(Vec<Vec<u8>>, usize)> {
    let mut raw = 0;
    let objs = pages
        .iter()
        .map(|p| {
            let c = zstd::bulk::compress(p, 1).context("zstd")?;
            Ok(if c.len() >= PAGE_SIZE - ZS_HEADER {
                raw += 1;
                p.clone()
            } else {
                c
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((objs, raw))
}

fn machine() -> Result<SimMachine> {
    memdesc_host::boot(
        &MemoryLayout::pc(1, MemmapLayout::Flat),
        Config { nr_cpus: 1, debug_checks: false, ..Config::default() },
    )
    .map_err(|e| anyhow!("booting the zsmalloc machine: {e}"))
}

/// The random half freed (indices), the same for every pool.
fn freed_half(n: usize) -> Vec<bool> {
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut Xoshiro256PlusPlus::seed_from_u64(crate::measure::SEED ^ 0x5a));
    let mut freed = vec![false; n];
    for &i in &idx[..n / 2] {
        freed[i] = true;
    }
    freed
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        (a as f64 / b as f64 * 10_000.0).round() / 10_000.0
    }
}

/// Stores `objs` in a zsmalloc pool with class step `step` and zspages of at most
/// `max_pages` pages, frees the `freed` ones, compacts.
pub fn zsmalloc_density(objs: &[Vec<u8>], freed: &[bool], step: usize, max_pages: usize) -> Result<(Density, u64)> {
    let m = machine()?;
    let cpu = m.cpus().claim(0).ok_or_else(|| anyhow!("cpu 0"))?;
    let pool = ZsPool::with_config(&m, &cpu, step, max_pages).map_err(|e| anyhow!("zsmalloc pool: {e}"))?;
    let mut hs: Vec<Option<Handle>> = Vec::with_capacity(objs.len());
    for o in objs {
        let h = pool.malloc(&cpu, o.len()).map_err(|e| anyhow!("zs_malloc({}): {e}", o.len()))?;
        pool.map_write(&cpu, &h).map_err(|e| anyhow!("map: {e}"))?.copy_from_slice(o);
        hs.push(Some(h));
    }
    for (h, _) in hs.iter_mut().zip(freed).filter(|(_, f)| **f) {
        if let Some(h) = h.take() {
            pool.free(&cpu, h).map_err(|e| anyhow!("zs_free: {e}"))?;
        }
    }
    let before = pool.stats();
    let c = pool.compact(&cpu);
    let after = pool.stats();
    let mut w = Waste::default();
    pool.classes(|c| {
        let slot = c.slot as u64;
        w.slot_rounding_bytes += c.objects * slot - c.bytes;
        w.free_slot_bytes += (c.zspages * c.objs as u64 - c.objects) * slot;
        w.zspage_tail_bytes += c.zspages * (c.pages as u64 * PAGE_SIZE as u64 - c.objs as u64 * slot);
    });
    let mut verified = 0;
    for ((h, o), _) in hs.iter().zip(objs).zip(freed).filter(|(_, f)| !**f) {
        let h = h.as_ref().ok_or_else(|| anyhow!("a kept object lost its handle"))?;
        let got = pool.map_read(&cpu, h).map_err(|e| anyhow!("map: {e}"))?;
        ensure!(got[..] == o[..], "zsmalloc object {h:?} changed");
        verified += 1;
    }
    let classes = after.classes;
    pool.destroy(&cpu);
    let pb = |pages: u64| pages * PAGE_SIZE as u64;
    Ok((
        Density {
            pool_bytes: pb(after.pages),
            pool_bytes_before_compaction: pb(before.pages),
            stored_bytes: after.object_bytes,
            stored_objects: after.objects,
            overhead_ratio_before_compaction: ratio(pb(before.pages), before.object_bytes),
            overhead_ratio_after_compaction: ratio(pb(after.pages), after.object_bytes),
            overhead_ratio_with_metadata_after_compaction: ratio(
                pb(after.pages) + after.metadata_bytes,
                after.object_bytes,
            ),
            metadata_bytes: after.metadata_bytes,
            objects_moved: c.objects_moved,
            pages_freed: c.pages_freed,
            verified_objects: verified,
            waste: Some(w),
        },
        classes,
    ))
}

/// The same through z3fold.
pub fn z3fold_density(objs: &[Vec<u8>], freed: &[bool]) -> Result<Density> {
    let m = machine()?;
    let cpu = m.cpus().claim(0).ok_or_else(|| anyhow!("cpu 0"))?;
    let pool = Z3foldPool::new(&m, &cpu).map_err(|e| anyhow!("z3fold pool: {e}"))?;
    let mut hs: Vec<Option<Handle>> = Vec::with_capacity(objs.len());
    for o in objs {
        let h = pool.malloc(&cpu, o.len()).map_err(|e| anyhow!("z3fold malloc({}): {e}", o.len()))?;
        pool.map_write(&h).map_err(|e| anyhow!("map: {e}"))?.copy_from_slice(o);
        hs.push(Some(h));
    }
    for (h, _) in hs.iter_mut().zip(freed).filter(|(_, f)| **f) {
        if let Some(h) = h.take() {
            pool.free(&cpu, h).map_err(|e| anyhow!("z3fold free: {e}"))?;
        }
    }
    let before = pool.stats();
    let c = pool.compact();
    let after = pool.stats();
    let mut verified = 0;
    for ((h, o), _) in hs.iter().zip(objs).zip(freed).filter(|(_, f)| !**f) {
        let h = h.as_ref().ok_or_else(|| anyhow!("a kept object lost its handle"))?;
        let got = pool.map_read(h).map_err(|e| anyhow!("map: {e}"))?;
        ensure!(got[..] == o[..], "z3fold object {h:?} changed");
        verified += 1;
    }
    pool.destroy(&cpu);
    let pb = |pages: u64| pages * PAGE_SIZE as u64;
    Ok(Density {
        pool_bytes: pb(after.pages),
        pool_bytes_before_compaction: pb(before.pages),
        stored_bytes: after.object_bytes,
        stored_objects: after.objects,
        overhead_ratio_before_compaction: ratio(pb(before.pages), before.object_bytes),
        overhead_ratio_after_compaction: ratio(pb(after.pages), after.object_bytes),
        overhead_ratio_with_metadata_after_compaction: ratio(
            pb(after.pages) + after.metadata_bytes,
            after.object_bytes,
        ),
        metadata_bytes: after.metadata_bytes,
        objects_moved: c.objects_moved,
        pages_freed: 0,
        verified_objects: verified,
        waste: None,
    })
}

/// Runs the section on `pages` pages (4096 with `--quick`, 32768 otherwise).
pub fn run(pages: usize) -> Result<Results> {
    run_on(&source_dir(), pages)
}

/// Runs the section on `budget` pages of the files under `dir`.
pub fn run_on(dir: &Path, budget: usize) -> Result<Results> {
    let (files, pages) = collect_pages(dir, budget)?;
    let (objs, raw) = compress(&pages)?;
    let freed = freed_half(objs.len());
    let mut by_step = std::collections::BTreeMap::new();
    let mut main = None;
    for step in STEPS {
        let (d, classes) = zsmalloc_density(&objs, &freed, step, DEFAULT_MAX_PAGES)?;
        by_step.insert(step.to_string(), d.overhead_ratio_after_compaction);
        if step == DEFAULT_CLASS_STEP {
            main = Some((d, classes));
        }
    }
    let (d, classes) = main.ok_or_else(|| anyhow!("the default step is one of STEPS"))?;
    let mut by_max_pages = std::collections::BTreeMap::new();
    for mp in MAX_PAGES {
        let r = if mp == DEFAULT_MAX_PAGES {
            d.overhead_ratio_after_compaction
        } else {
            zsmalloc_density(&objs, &freed, DEFAULT_CLASS_STEP, mp)?.0.overhead_ratio_after_compaction
        };
        by_max_pages.insert(mp.to_string(), r);
    }
    let z3 = z3fold_density(&objs, &freed)?;
    let total: usize = objs.iter().map(Vec::len).sum();
    Ok(Results {
        zsmalloc: ZsBench {
            source: dir.display().to_string(),
            files,
            input_pages: pages.len(),
            compressor: "zstd level 1",
            incompressible_pages: raw,
            mean_object_bytes: (total as f64 / objs.len() as f64 * 10.0).round() / 10.0,
            class_step: DEFAULT_CLASS_STEP,
            classes,
            pool_bytes: d.pool_bytes,
            stored_bytes: d.stored_bytes,
            overhead_ratio_before_compaction: d.overhead_ratio_before_compaction,
            overhead_ratio_after_compaction: d.overhead_ratio_after_compaction,
            target_overhead_ratio: TARGET_OVERHEAD_RATIO,
            target_met: d.overhead_ratio_after_compaction <= TARGET_OVERHEAD_RATIO,
            detail: d,
            max_pages: DEFAULT_MAX_PAGES,
            by_step,
            by_max_pages,
        },
        z3fold: z3,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn density_on_the_workspace_files() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let r = run_on(&dir, 64).unwrap();
        let z = &r.zsmalloc;
        assert!(z.input_pages > 0 && z.files > 0);
        assert_eq!(z.detail.verified_objects, z.detail.stored_objects);
        assert_eq!(r.z3fold.verified_objects, r.z3fold.stored_objects);
        assert_eq!(z.stored_bytes, r.z3fold.stored_bytes, "both pools hold the same objects");
        assert!(z.overhead_ratio_after_compaction >= 1.0);
        assert!(z.overhead_ratio_after_compaction <= z.overhead_ratio_before_compaction);
        assert_eq!(z.by_step.len(), STEPS.len());
        assert_eq!(z.by_max_pages.len(), MAX_PAGES.len());
    }
}
