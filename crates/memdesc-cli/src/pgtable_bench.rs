//! The `pgtable` section of `memdesc bench` (issue 5): what mapping costs in memdesc's x86-64
//! page tables on the simulated machine. A 2 MiB folio mapped and unmapped by 512 PTEs against
//! the same folio by one PMD (the peer: the huge mapping, measured in the same run), fork of an
//! address space with a 2 MiB folio mapped by PTEs, the rmap walk of a folio shared by two
//! address spaces, and the size of the page-table page descriptor.

use std::time::Instant;

use anyhow::{anyhow, Result};
use memdesc::base::layout::{MemmapLayout, MemoryLayout};
use memdesc::folio::FolioKind;
use memdesc::memmap::desc::PtDesc;
use memdesc::pgtable::{MmCaches, MmKind};
use memdesc::Cpu;
use memdesc::{Config, Gfp};
use memdesc_host::{SimMachine, SimPlatform};
use serde::Serialize;

/// The pgtable section.
#[derive(Serialize, Debug)]
pub struct PgtableBench {
    /// Map + unmap of a 2 MiB folio by 512 PTEs, ns per page (median of rounds).
    pub pte_map_unmap_ns_per_page: f64,
    /// Map + unmap of the same folio by one PMD, ns per 2 MiB.
    pub pmd_map_unmap_ns: f64,
    /// PTE mapping of 2 MiB / PMD mapping of 2 MiB: what a huge mapping saves.
    pub pte_over_pmd: f64,
    /// Fork of an address space with a 2 MiB folio mapped by PTEs, plus the child's teardown,
    /// ns per mapped page.
    pub fork_ns_per_page: f64,
    /// `rmap_walk` of an order-0 folio mapped in two address spaces, ns.
    pub rmap_walk_ns: f64,
    /// `size_of::<PtDesc>()`: with its 8-byte word, the memdesc cost of a page-table page
    /// (Linux overlays its ptdesc on the 64-byte struct page).
    pub ptdesc_bytes: usize,
    /// Rounds each figure is the median of.
    pub rounds: usize,
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    if xs.is_empty() {
        return 0.0;
    }
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

fn time_ns(f: impl FnOnce() -> Result<()>) -> Result<f64> {
    let t = Instant::now();
    f()?;
    Ok(t.elapsed().as_nanos() as f64)
}

fn err<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> anyhow::Error {
    move |e| anyhow!("{what}: {e}")
}

fn bench_on(m: &SimMachine, cpu: &Cpu<'_>, mms: &MmCaches<'_, SimPlatform>, rounds: usize) -> Result<PgtableBench> {
    let va = 0x4000_0000u64;
    let mm = mms.mm_create(cpu, MmKind::User).map_err(err("mm"))?;
    mm.mmap_anon(cpu, va, 8 << 20).map_err(err("mmap"))?;
    let f = m.folio_alloc(cpu, 9, Gfp::MOVABLE, FolioKind::Anon).map_err(err("folio"))?;
    let (mut pte, mut pmd, mut fork, mut walk) = (vec![], vec![], vec![], vec![]);
    for _ in 0..rounds {
        pte.push(
            time_ns(|| {
                mm.map_folio(cpu, va, &f).map_err(err("map"))?;
                mm.unmap(cpu, va, 2 << 20).map_err(err("unmap"))?;
                Ok(())
            })? / 512.0,
        );
        pmd.push(time_ns(|| {
            mm.map_folio_pmd(cpu, va, &f).map_err(err("map pmd"))?;
            mm.unmap(cpu, va, 2 << 20).map_err(err("unmap"))?;
            Ok(())
        })?);
    }
    mm.map_folio(cpu, va, &f).map_err(err("map"))?;
    for _ in 0..rounds {
        fork.push(
            time_ns(|| {
                let child = mm.fork(cpu).map_err(err("fork"))?;
                child.destroy(cpu);
                Ok(())
            })? / 512.0,
        );
    }
    mm.unmap(cpu, va, 2 << 20).map_err(err("unmap"))?;
    let small = m.folio_alloc(cpu, 0, Gfp::MOVABLE, FolioKind::Anon).map_err(err("folio"))?;
    mm.map_folio(cpu, va + (4 << 20), &small).map_err(err("map"))?;
    let child = mm.fork(cpu).map_err(err("fork"))?;
    for _ in 0..rounds {
        let t = Instant::now();
        let n = m.rmap_walk(cpu, &small, |_, _, _| ());
        walk.push(t.elapsed().as_nanos() as f64);
        if n != 2 {
            return Err(anyhow!("rmap walk found {n} mappings, expected 2"));
        }
    }
    child.destroy(cpu);
    mm.destroy(cpu);
    for f in [f, small] {
        m.folio_put(cpu, f).map_err(err("put"))?;
    }
    let (pte, pmd) = (median(pte), median(pmd));
    Ok(PgtableBench {
        pte_map_unmap_ns_per_page: pte,
        pmd_map_unmap_ns: pmd,
        pte_over_pmd: if pmd > 0.0 { pte * 512.0 / pmd } else { 0.0 },
        fork_ns_per_page: median(fork),
        rmap_walk_ns: median(walk),
        ptdesc_bytes: std::mem::size_of::<PtDesc>(),
        rounds,
    })
}

/// Runs the section on a 1 GiB flat machine.
pub fn run(quick: bool) -> Result<PgtableBench> {
    let m = memdesc_host::boot(&MemoryLayout::pc(1, MemmapLayout::Flat), Config { nr_cpus: 1, ..Config::default() })
        .map_err(|e| anyhow!("boot: {e:?}"))?;
    let cpu = m.cpus().claim(0).ok_or_else(|| anyhow!("no CPU"))?;
    let mms = m.mm_caches(&cpu).map_err(err("mm caches"))?;
    bench_on(&m, &cpu, &mms, if quick { 5 } else { 201 })
}

#[cfg(test)]
mod tests {
    #[test]
    fn quick_run_has_sane_figures() {
        let b = super::run(true).unwrap();
        assert!(b.pte_map_unmap_ns_per_page > 0.0 && b.pmd_map_unmap_ns > 0.0 && b.rmap_walk_ns > 0.0);
        assert!(b.pte_over_pmd > 1.0, "512 PTEs cost more than one PMD: {b:?}");
        assert_eq!(b.ptdesc_bytes, 32);
    }
}
