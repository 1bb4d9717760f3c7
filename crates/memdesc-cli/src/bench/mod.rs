//! `memdesc bench`: measures the memmap and the page allocator on the simulated machine, and
//! the page allocator against a peer crate run on the identical operation sequence in the same
//! process, and prints a table or one JSON object.
//!
//! # Sections
//!
//! - **`memmap`** (issue 2): for a 64 GiB flat machine and a 1 TiB two-level machine (both with
//!   the PC layout of [`MemoryLayout::pc`]: low memory, the PCI hole, reserved firmware and
//!   kernel ranges), the time [`Memmap::build_alone`] takes to place and initialise every word
//!   (`init_ms`, on fresh host memory, so it includes the host's first-touch page faults;
//!   `init_prefaulted_ms` repeats it on memory already touched, which is what a kernel with
//!   real RAM pays), the time of the whole boot including the buddy free lists (`boot_ms`), the
//!   bytes the memmap uses as the booted allocator reports them ([`Memmap::bytes`]) and how much
//!   the host's resident set grew while the booted machine is alive (`host_rss_bytes`).
//! - **`page_alloc`** (issues 3 and 14): memdesc against
//!   [`buddy_system_allocator::FrameAllocator`] over the same frame range and the same
//!   operation sequence:
//!   - *order-0 pairs*: 1 GiB of order-0 pages is allocated, a random half of it freed (the same
//!     random indices for both allocators), then an order-0 page is allocated and freed again
//!     `pairs` times; nanoseconds per pair.
//!   - *mixed*: a sequence drawn once from a seeded RNG: at each step allocate (a random order
//!     0–9) or free (a random live block) with probability ½ each, never more than 4096 live
//!     blocks (an allocation drawn at the cap becomes a free, a free drawn with nothing live
//!     becomes an allocation); nanoseconds per operation.
//!   - *2 threads*: aggregate throughput of the order-0 pair loop on two claimed CPUs of one
//!     machine divided by one thread's.
//!   - *mixed, 75 % full* (`mixed_full_ns`, issue 14): the mixed sequence after the machine was
//!     filled to 75 % with blocks of random orders 0–9 (the same blocks for every allocator).
//!   - *scaling* (`scaling`, issue 14): the order-0 pair loop on 1, 2, …, `--threads` threads
//!     at once, each memdesc thread on its own claimed CPU, the peer behind its spin lock;
//!     aggregate pairs per second and CPU time per pair ([`threads::on_threads`]).
//!   - *cross-CPU* (`cross_cpu`, issue 14): order-0 pages allocated by a thread on CPU 0 and
//!     freed by a thread on CPU 1, handed over in batches ([`threads::handoff`]), against the
//!     locked peer and mimalloc, with the hand-over's own cost measured alone.
//!
//!   memdesc runs with `debug_checks: false` and the default per-CPU list limits. Every
//!   allocator first runs its workload once untimed, so the host's first-touch page faults on
//!   simulated physical memory (a cost no kernel pays) are not counted. Then the allocators run
//!   in interleaved rounds (memdesc flat, memdesc two-level, the peer, rotating who goes first)
//!   so they share whatever else the host is doing, and each figure is the median of its
//!   rounds. The scaling run also reports CPU time per pair, which other processes taking a CPU
//!   do not distort: on a 2-CPU host shared with other work, read it next to the wall-clock
//!   ratio (and `meta.host_loadavg_1m`).
//!
//! `--quick` keeps every machine and workload and only takes fewer rounds. Nothing here knows
//! what the results should be: every figure is measured.
//!
//! The workload functions are shared with the criterion benches (`benches/page_alloc.rs` calls
//! the functions of [`page_alloc`]), so both measure exactly the same thing.
//!
//! # Files
//! This file is the command (its arguments, [`measure`] running the selected sections, [`run`]).
//! Below it: [`table`] (the readable output) and [`report`] (the `--json` object) over the
//! sections [`memmap`], [`page_alloc`], [`trace`] (replay and estimate timed); [`plan`] (sizes
//! and repetitions) and [`threads`] (the multi-thread harnesses, which `slab_bench` uses too)
//! under those; [`crate::measure`] (medians, timers, the seed) at the bottom.
//! The sections of other subsystems have their own modules (`slab_bench`, `compaction_bench`,
//! `pgtable_bench`, `zs_bench`). No module here imports this one.
//!
//! [`Memmap::build_alone`]: memdesc::memmap::Memmap::build_alone
//! [`Memmap::bytes`]: memdesc::memmap::Memmap::bytes
//! [`MemoryLayout::pc`]: memdesc::MemoryLayout::pc

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub mod memmap;
pub mod page_alloc;
pub mod plan;
pub mod report;
pub mod table;
pub mod threads;
pub mod trace;

use crate::measure::*;
pub use memmap::*;
pub use page_alloc::*;
pub use plan::*;
pub use report::*;
pub use table::*;
pub use threads::*;
pub use trace::*;

/// Arguments of `memdesc bench`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct BenchArgs {
    /// Shorter loops and fewer repetitions (the same machines and workloads). Measured on a
    /// 2-CPU machine: about 17 s in a release build, about 6 min in a debug build on a loaded
    /// host; peak memory about 2.1 GB either way (the simulated machines).
    #[arg(long)]
    pub quick: bool,
    /// Print one JSON object (nested keys such as `memmap.flat_64g.init_ms`) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Run only these sections: names separated by spaces or commas, as `torture --only`
    /// takes its ops (`--only memmap,slab` or `--only memmap slab`).
    #[arg(long, value_enum, value_delimiter = ',', num_args = 1.., value_name = "SECTION")]
    pub only: Vec<Section>,
    /// The scaling runs of page_alloc and slab measure 1, 2, …, N threads at once (each thread
    /// on its own CPU of the simulated machine), memdesc and its peers alike. More threads
    /// than the host has CPUs measure the host's scheduler, not the allocators.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub threads: u16,
}

/// A section of the benchmark.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    /// Memmap initialisation and boot of a 64 GiB flat and a 1 TiB two-level machine.
    #[value(name = "memmap")]
    Memmap,
    /// The page allocator against buddy_system_allocator, and two-thread scaling.
    #[value(name = "page_alloc")]
    PageAlloc,
    /// kmalloc+kfree over a real kernel's size mix against mimalloc and the system allocator,
    /// and the memory efficiency of replaying a real kmalloc/kmem_cache stream.
    #[value(name = "slab")]
    Slab,
    /// Compaction of a zone fragmented by interleaved movable folios.
    #[value(name = "compaction")]
    Compaction,
    /// `memdesc replay` of the pagecache trace (decompression and parsing included).
    #[value(name = "replay")]
    Replay,
    /// `memdesc estimate` of the mixA snapshot.
    #[value(name = "estimate")]
    Estimate,
    /// Page tables: PTE vs PMD mapping of 2 MiB, fork, rmap walk, ptdesc size.
    #[value(name = "pgtable")]
    Pgtable,
    /// zsmalloc and z3fold density on compressed pages of real files (`zs_bench`).
    #[value(name = "zsmalloc")]
    Zsmalloc,
}

/// Runs the selected sections of `plan`.
pub fn measure(plan: &Plan, sections: &[Section], progress: &ProgressBar) -> Result<Report> {
    let want = |s| sections.is_empty() || sections.contains(&s);
    let mut len = 0;
    if want(Section::Memmap) {
        len += (plan.memmap_machines.len() * plan.memmap_reps.max(1)) as u64;
    }
    if want(Section::PageAlloc) {
        len += PAGE_ALLOC_STEPS;
    }
    let slab = want(Section::Slab) && (plan.slab || sections.contains(&Section::Slab));
    if slab {
        len += 1;
    }
    let real_data = |s| want(s) && (plan.real_data || sections.contains(&s));
    if real_data(Section::Replay) {
        len += 1;
    }
    progress.set_length(len);
    let mut report = Report {
        meta: Meta {
            quick: plan.quick,
            optimized: !cfg!(debug_assertions),
            host_cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            host_loadavg_1m: loadavg(),
            seed: SEED,
        },
        descriptors: crate::sizes::descriptors(),
        ..Report::default()
    };
    if want(Section::Memmap) {
        let mut map = std::collections::BTreeMap::new();
        for &mm in &plan.memmap_machines {
            map.insert(mm.key(), measure_memmap(mm, plan.memmap_reps, progress)?);
        }
        report.memmap = Some(map);
    }
    if want(Section::PageAlloc) {
        report.page_alloc = Some(measure_page_alloc(plan, progress)?);
    }
    if slab {
        progress.set_message("slab");
        progress.inc(1);
        report.slab = Some(crate::slab_bench::run(plan.quick, plan.threads, progress)?);
    }
    if want(Section::Compaction) {
        progress.set_message("compaction");
        report.compaction = Some(crate::compaction_bench::run(plan.quick)?);
    }
    let runs = if plan.quick { 1 } else { 3 };
    if real_data(Section::Replay) {
        progress.set_message("replay");
        progress.inc(1);
        report.replay = Some(measure_replay(runs, progress)?);
    }
    if real_data(Section::Estimate) {
        progress.set_message("estimate");
        report.estimate = Some(measure_estimate(runs)?);
    }
    if want(Section::Pgtable) {
        progress.set_message("pgtable");
        report.pgtable = Some(crate::pgtable_bench::run(plan.quick)?);
    }
    if want(Section::Zsmalloc) {
        progress.set_message("zsmalloc");
        let r = crate::zs_bench::run(plan.zs_pages)?;
        report.zsmalloc = Some(r.zsmalloc);
        report.z3fold = Some(r.z3fold);
    }
    Ok(report)
}

/// `memdesc bench`.
pub fn run(args: &BenchArgs) -> Result<()> {
    let plan = Plan { threads: usize::from(args.threads).max(1), ..Plan::new(args.quick) };
    let progress = if args.json || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        let style = ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
            .map_err(|e| anyhow!("progress template: {e}"))?;
        ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr()).with_style(style)
    };
    progress.enable_steady_tick(Duration::from_millis(200));
    let report = measure(&plan, &args.only, &progress);
    progress.finish_and_clear();
    let report = report?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).context("serialising the report")?);
    } else {
        print!("{}", render_table(&report));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use memdesc::{Config, MemmapLayout, MemoryLayout};

    use super::*;

    /// Tiny machines and loops: the whole run takes well under 10 s in a debug build.
    fn tiny_plan() -> Plan {
        Plan {
            quick: true,
            memmap_machines: vec![
                MemmapMachine { gib: 1, layout: MemmapLayout::Flat },
                MemmapMachine { gib: 4, layout: MemmapLayout::TwoLevel },
            ],
            memmap_reps: 1,
            // Room for the mixed sequence on top of the 75 % fill of `mixed_full`.
            machine_pages: 64 << 10,
            steady_pages: 4096,
            pairs: 2000,
            mixed_ops: 2000,
            mixed_max_live: 64,
            thread_pairs: 2000,
            slab: false,
            real_data: false,
            zs_pages: 96,
            thread_reps: 1,
            reps: 1,
            threads: 3,
            cross_objects: 3000,
            cross_batch: 64,
        }
    }

    fn get<'a>(v: &'a serde_json::Value, path: &str) -> &'a serde_json::Value {
        path.split('.').fold(v, |v, k| v.get(k).unwrap_or_else(|| panic!("missing key {path}")))
    }

    fn num(v: &serde_json::Value, path: &str) -> f64 {
        get(v, path).as_f64().unwrap_or_else(|| panic!("{path} is not a number"))
    }

    #[test]
    fn report_has_every_key_with_sane_values() {
        let plan = tiny_plan();
        // On a thread with the CLI's main-thread stack (8 MiB): an unoptimised build moves each
        // bench machine (tens of KiB) through many stack temporaries, more than a test
        // thread's 2 MiB hold; the release binary keeps one copy.
        let report = std::thread::scope(|s| {
            std::thread::Builder::new()
                .stack_size(8 << 20)
                .spawn_scoped(s, || measure(&plan, &[], &ProgressBar::hidden()).unwrap())
                .unwrap()
                .join()
                .unwrap()
        });
        let v = serde_json::to_value(&report).unwrap();
        for mm in &plan.memmap_machines {
            let k = format!("memmap.{}", mm.key());
            for f in ["init_ms", "init_prefaulted_ms", "boot_ms"] {
                assert!(num(&v, &format!("{k}.{f}")) > 0.0, "{k}.{f}");
            }
            // The bytes are the booted allocator's own figure.
            let layout = MemoryLayout::pc(mm.gib, mm.layout);
            let m = memdesc_host::boot(&layout, Config::default()).unwrap();
            assert_eq!(get(&v, &format!("{k}.bytes")).as_u64(), Some(m.memmap().bytes()), "{k}.bytes");
            assert_eq!(get(&v, &format!("{k}.pages")).as_u64(), Some(layout.present_pages()));
            assert!(get(&v, &format!("{k}.host_rss_bytes")).is_u64());
        }
        let flat = m_bytes(&v, "memmap.flat_1g");
        let two = m_bytes(&v, "memmap.two_level_4g");
        assert!(two < flat, "a 4 GiB two-level memmap ({two} B) is smaller than a 1 GiB flat one ({flat} B)");
        for k in ["order0_pair_ns", "mixed_ns"] {
            for a in ["memdesc", "memdesc_two_level", "buddy_system_allocator"] {
                assert!(num(&v, &format!("page_alloc.{k}.{a}")) > 0.0, "page_alloc.{k}.{a}");
            }
        }
        for k in ["order0_speedup_vs_bsa", "mixed_speedup_vs_bsa", "threads2_speedup"] {
            assert!(num(&v, &format!("page_alloc.{k}")) > 0.0, "page_alloc.{k}");
            assert!(get(&v, &format!("page_alloc.targets.{k}")).is_f64());
        }
        assert!(num(&v, "page_alloc.params.mixed_peak_live") <= 64.0);
        // Issue 14: the keys its Must-show list names, and the new cases.
        for k in [
            "threads.one_thread_cpu_ns_per_pair",
            "threads.two_threads_cpu_ns_per_pair",
            "mixed_full_ns.memdesc",
            "mixed_full_ns.memdesc_two_level",
            "mixed_full_ns.buddy_system_allocator",
            "mixed_full_speedup_vs_bsa",
            "targets.mixed_full_speedup_vs_bsa",
            "params.mixed_full_fill_blocks",
        ] {
            assert!(num(&v, &format!("page_alloc.{k}")) > 0.0, "page_alloc.{k}");
        }
        assert!(get(&v, "page_alloc.targets.mixed_full_met").is_boolean());
        let fill = num(&v, "page_alloc.params.mixed_full_fill_pages");
        let pages = plan.machine_pages as f64;
        assert!(fill <= 0.75 * pages && fill > 0.75 * pages - 512.0, "fill {fill} of {pages}");
        let rows = get(&v, "page_alloc.scaling").as_array().expect("scaling is a list of rows");
        assert_eq!(rows.len(), plan.threads, "one row per thread count");
        for (i, row) in rows.iter().enumerate() {
            assert_eq!(row["threads"].as_u64(), Some(i as u64 + 1));
            for k in ["pairs_per_s", "cpu_ns_per_pair"] {
                for a in ["memdesc", "buddy_system_allocator"] {
                    assert!(num(row, &format!("{k}.{a}")) > 0.0, "scaling[{i}].{k}.{a}");
                }
            }
            assert!(num(row, "speedup_vs_bsa") > 0.0);
        }
        for k in ["ns_per_object", "cpu_ns_per_object"] {
            for a in ["memdesc", "buddy_system_allocator", "mimalloc"] {
                assert!(num(&v, &format!("page_alloc.cross_cpu.{k}.{a}")) > 0.0, "page_alloc.cross_cpu.{k}.{a}");
            }
        }
        for k in ["speedup_vs_mimalloc", "speedup_vs_bsa", "queue_only_ns_per_object"] {
            assert!(num(&v, &format!("page_alloc.cross_cpu.{k}")) > 0.0, "page_alloc.cross_cpu.{k}");
        }
        assert_eq!(get(&v, "page_alloc.params.cross_objects").as_u64(), Some(plan.cross_objects));
        assert_eq!(get(&v, "meta.quick"), &serde_json::Value::Bool(true));
        let table = render_table(&report);
        assert!(table.contains("flat 1 GiB") && table.contains("two-level 4 GiB") && table.contains("2 threads"));
        for row in ["machine 75 % full", "scaling, order-0 pairs", "3 threads", "cross-CPU page"] {
            assert!(table.contains(row), "{row} in\n{table}");
        }
        for k in ["zsmalloc.overhead_ratio_before_compaction", "zsmalloc.overhead_ratio_after_compaction"] {
            assert!(num(&v, k) >= 1.0, "{k}");
        }
        assert!(num(&v, "z3fold.overhead_ratio_after_compaction") >= 1.0);
        assert!(table.contains("zsmalloc density"));
    }

    fn m_bytes(v: &serde_json::Value, k: &str) -> u64 {
        get(v, &format!("{k}.bytes")).as_u64().unwrap()
    }

    #[test]
    fn only_selects_sections() {
        let mut plan = tiny_plan();
        plan.memmap_machines.truncate(1);
        let r = measure(&plan, &[Section::Memmap], &ProgressBar::hidden()).unwrap();
        assert!(r.memmap.is_some() && r.page_alloc.is_none());
        let v = serde_json::to_value(&r).unwrap();
        assert!(v.get("page_alloc").is_none());
    }

    #[test]
    fn keys_name_the_machines() {
        assert_eq!(MemmapMachine { gib: 64, layout: MemmapLayout::Flat }.key(), "flat_64g");
        assert_eq!(MemmapMachine { gib: 1024, layout: MemmapLayout::TwoLevel }.key(), "two_level_1t");
        let full = Plan::new(false);
        let keys: Vec<_> = full.memmap_machines.iter().map(|m| m.key()).collect();
        assert_eq!(keys, ["flat_64g", "two_level_1t"]);
        assert_eq!(Plan::new(true).memmap_machines.len(), 2, "--quick measures the same machines");
    }

    #[test]
    fn mixed_sequence_is_repeatable_and_capped() {
        let (a, peak) = mixed_ops(20_000, 16);
        let (b, _) = mixed_ops(20_000, 16);
        assert_eq!(a, b);
        assert!(peak <= 16);
        let mut live = 0usize;
        let mut allocs = 0;
        for op in &a {
            match *op {
                Op::Alloc(o) => {
                    assert!(o <= MIXED_MAX_ORDER);
                    live += 1;
                    allocs += 1;
                }
                Op::Free(i) => {
                    assert!(i < live);
                    live -= 1;
                }
            }
            assert!(live <= 16);
        }
        assert!((8_000..12_000).contains(&allocs), "about half the steps allocate: {allocs}");
    }

    #[test]
    fn fill_orders_fill_three_quarters_with_orders_0_to_9() {
        let pages = 1u64 << 20;
        let orders = fill_orders(pages, MIXED_FULL_FILL_PCT);
        assert_eq!(orders, fill_orders(pages, MIXED_FULL_FILL_PCT), "seeded");
        let held: u64 = orders.iter().map(|&o| 1u64 << o).sum();
        assert!(held <= pages * 3 / 4 && held > pages * 3 / 4 - 512, "{held} pages");
        assert!(orders.iter().all(|&o| o <= MIXED_MAX_ORDER));
        for o in 0..=MIXED_MAX_ORDER {
            assert!(orders.contains(&o), "order {o} drawn");
        }
        assert!(fill_orders(0, 75).is_empty());
    }

    #[test]
    fn threads_option_reaches_the_plan() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            bench: BenchArgs,
        }
        assert_eq!(Cli::try_parse_from(["bench"]).unwrap().bench.threads, 2, "default");
        assert_eq!(Cli::try_parse_from(["bench", "--threads", "4"]).unwrap().bench.threads, 4);
        assert!(Cli::try_parse_from(["bench", "--threads", "0"]).is_err());
        assert!(Cli::try_parse_from(["bench", "--threads", "65"]).is_err());
    }

    #[test]
    fn steady_state_frees_half() {
        let idx = steady_free_indices(1000);
        assert_eq!(idx.len(), 500);
        let mut sorted = idx.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 500, "distinct indices");
        assert_eq!(idx, steady_free_indices(1000), "seeded");
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
    }
}
