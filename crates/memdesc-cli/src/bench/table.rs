//! The readable table `memdesc bench` prints.

use super::memmap::*;
use super::report::*;

// ---------------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------------

/// Bytes as a readable size.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn machine_name(r: &MemmapResult) -> String {
    let layout = if r.layout == "flat" { "flat" } else { "two-level" };
    if r.gib >= 1024 && r.gib.is_multiple_of(1024) {
        format!("{layout} {} TiB", r.gib / 1024)
    } else {
        format!("{layout} {} GiB", r.gib)
    }
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}

/// Renders the report as aligned text tables.
pub fn render_table(report: &Report) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let m = &report.meta;
    let load = m.host_loadavg_1m.map_or_else(|| "?".to_string(), |l| format!("{l:.2}"));
    let _ = writeln!(
        out,
        "memdesc bench{}{} — host: {} CPUs, load {load}",
        if m.quick { " --quick" } else { "" },
        if m.optimized { "" } else { " (debug build: timings are not meaningful)" },
        m.host_cpus
    );
    if let Some(mm) = &report.memmap {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<20} {:>10} {:>12} {:>10} {:>13} {:>22} {:>11}",
            "memmap", "init", "init (warm)", "boot", "of it host", "memmap size", "host RSS"
        );
        for r in mm.values() {
            let rss = r.host_rss_bytes.map_or_else(|| "?".to_string(), |b| format!("+{}", size(b)));
            let sys = r.boot_host_sys_ms.map_or_else(|| "?".to_string(), |s| format!("{s:.0} ms"));
            let _ = writeln!(
                out,
                "  {:<18} {:>7.1} ms {:>9.1} ms {:>7.0} ms {:>13} {:>22} {:>11}",
                machine_name(r),
                r.init_ms,
                r.init_prefaulted_ms,
                r.boot_ms,
                sys,
                format!("{} ({:.4} %)", size(r.bytes), r.bytes_pct_of_ram),
                rss
            );
        }
        let _ = writeln!(
            out,
            "  (init: placing and writing every word, on fresh / on already-touched host memory; boot: memmap,\n   \
             reserved ranges and free lists; \"of it host\": host kernel time faulting in simulated memory)"
        );
    }
    if let Some(p) = &report.page_alloc {
        let t = &p.targets;
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<30} {:>9} {:>11} {:>13} {:>9} {:>13}",
            "page_alloc (ns, median)", "memdesc", "two-level", "buddy_sys_al", "speedup", "target"
        );
        let rows = [
            (
                "order-0 alloc+free pair",
                &p.order0_pair_ns,
                p.order0_speedup_vs_bsa,
                t.order0_speedup_vs_bsa,
                t.order0_met,
            ),
            ("mixed orders 0-9, per op", &p.mixed_ns, p.mixed_speedup_vs_bsa, t.mixed_speedup_vs_bsa, t.mixed_met),
            (
                "mixed, machine 75 % full",
                &p.mixed_full_ns,
                p.mixed_full_speedup_vs_bsa,
                t.mixed_full_speedup_vs_bsa,
                t.mixed_full_met,
            ),
        ];
        for (name, ns, speedup, target, met) in rows {
            let _ = writeln!(
                out,
                "  {:<28} {:>9.1} {:>11.1} {:>13.1} {:>8.2}x {:>13}",
                name,
                ns.memdesc,
                ns.memdesc_two_level,
                ns.buddy_system_allocator,
                speedup,
                format!(">= {target}x {}", verdict(met))
            );
        }
        let (f, g) = (&p.mixed_host_faults_per_op, &p.mixed_full_host_faults_per_op);
        let _ = writeln!(
            out,
            "  {:<28} {:>9.3} {:>11.3} {:>13}   (75 % full: {:.3} / {:.3}; the peer touches no memory)",
            "host page faults per op", f.memdesc, f.memdesc_two_level, "0", g.memdesc, g.memdesc_two_level
        );
        let _ = writeln!(
            out,
            "  {:<28} {:>9} {:>11} {:>13} {:>8.2}x {:>13}",
            "2 threads / 1 thread (wall)",
            format!("{:.1}", p.threads.two_threads_pairs_per_s / 1e6),
            format!("{:.1}", p.threads.one_thread_pairs_per_s / 1e6),
            "M pairs/s",
            p.threads2_speedup,
            format!(">= {}x {}", t.threads2_speedup, verdict(t.threads2_met))
        );
        let _ = writeln!(
            out,
            "  {:<28} {:>9.1} ns per pair alone, {:.1} ns per pair each when two run together",
            "CPU time per pair", p.threads.one_thread_cpu_ns_per_pair, p.threads.two_threads_cpu_ns_per_pair
        );
        let q = &p.params;
        let _ = writeln!(
            out,
            "  ({} pairs after {} order-0 pages, half freed; {} mixed ops, peak {} live; median of {} rounds;\n   \
             75 % full: {} pages held in {} blocks of random orders 0-9 before the mixed ops)",
            q.pairs,
            q.steady_pages,
            q.mixed_ops,
            q.mixed_peak_live,
            q.reps,
            q.mixed_full_fill_pages,
            q.mixed_full_fill_blocks
        );
        let _ = writeln!(
            out,
            "  {:<28} {:>14} {:>14} {:>14} {:>14} {:>9}",
            "scaling, order-0 pairs", "memdesc M/s", "bsa+lock M/s", "memdesc cpu ns", "bsa cpu ns", "speedup"
        );
        for r in &p.scaling {
            let _ = writeln!(
                out,
                "  {:<28} {:>14.2} {:>14.2} {:>14.1} {:>14.1} {:>8.2}x",
                format!("{} thread{}", r.threads, if r.threads == 1 { "" } else { "s" }),
                r.pairs_per_s.memdesc / 1e6,
                r.pairs_per_s.buddy_system_allocator / 1e6,
                r.cpu_ns_per_pair.memdesc,
                r.cpu_ns_per_pair.buddy_system_allocator,
                r.speedup_vs_bsa
            );
        }
        let c = &p.cross_cpu;
        let _ = writeln!(
            out,
            "  {:<28} {:>9.1} {:>11} {:>13.1} {:>8.2}x  mimalloc {:.1} ns ({:.2}x); CPU ns {:.1} / {:.1} / {:.1}",
            "cross-CPU page, ns each",
            c.ns_per_object.memdesc,
            "",
            c.ns_per_object.buddy_system_allocator,
            c.speedup_vs_bsa,
            c.ns_per_object.mimalloc,
            c.speedup_vs_mimalloc,
            c.cpu_ns_per_object.memdesc,
            c.cpu_ns_per_object.buddy_system_allocator,
            c.cpu_ns_per_object.mimalloc
        );
        let _ = writeln!(
            out,
            "  (scaling: all threads at once, each on its own CPU, aggregate pairs/s and CPU time per pair; bsa behind\n   \
             its spin lock. cross-CPU: {} pages allocated on CPU 0, handed over in batches of {}, freed on CPU 1;\n   \
             wall ns per page, CPU ns of both threads per page memdesc / bsa / mimalloc; the hand-over alone\n   \
             costs {:.1} ns per object, {:.1} CPU ns)",
            q.cross_objects, q.cross_batch, c.queue_only_ns_per_object, c.queue_only_cpu_ns_per_object
        );
    }
    if let Some(sb) = &report.slab {
        let _ = writeln!(out);
        let _ = writeln!(out, "slab (ns per kmalloc+kfree pair, real size mix)   memdesc   mimalloc     system");
        let (a, b) = (&sb.pair_ns, &sb.threads2_pair_ns);
        let _ = writeln!(out, "  one thread {:>38.1} {:>10.1} {:>10.1}", a.memdesc, a.mimalloc, a.system);
        let _ = writeln!(out, "  two threads, per thread {:>25.1} {:>10.1} {:>10.1}", b.memdesc, b.mimalloc, b.system);
        let _ = writeln!(
            out,
            "  two threads / one thread {:>23.2}x {:>9.2}x {:>9.2}x   (memdesc target <= 1.15x, issue 14)",
            b.memdesc / a.memdesc,
            b.mimalloc / a.mimalloc,
            b.system / a.system
        );
        let _ = writeln!(
            out,
            "  speedup vs mimalloc {:.2}x (target >= 1.25), vs system {:.2}x (target >= 1.5, issue 14); {} sizes, mean {:.0} B",
            sb.speedup_vs_mimalloc, sb.speedup_vs_system, sb.sizes, sb.mean_size
        );
        for r in &sb.scaling {
            let (a, b) = (&r.pairs_per_s, &r.cpu_ns_per_pair);
            let _ = writeln!(
                out,
                "  {:<20} M pairs/s {:>10.2} {:>10.2} {:>10.2}   CPU ns per pair {:.1} / {:.1} / {:.1}",
                format!("{} thread{} at once", r.threads, if r.threads == 1 { "" } else { "s" }),
                a.memdesc / 1e6,
                a.mimalloc / 1e6,
                a.system / 1e6,
                b.memdesc,
                b.mimalloc,
                b.system
            );
        }
        let c = &sb.cross_cpu;
        let _ = writeln!(
            out,
            "  cross-CPU, ns per object {:>16.1} {:>10.1} {:>10.1}   CPU ns {:.1} / {:.1} / {:.1}",
            c.ns_per_object.memdesc,
            c.ns_per_object.mimalloc,
            c.ns_per_object.system,
            c.cpu_ns_per_object.memdesc,
            c.cpu_ns_per_object.mimalloc,
            c.cpu_ns_per_object.system
        );
        let _ = writeln!(
            out,
            "  (cross-CPU: {} objects allocated on CPU 0, handed over in batches of {}, freed on CPU 1: {:.2}x vs mimalloc,\n   \
             {:.2}x vs system; the hand-over alone costs {:.1} ns per object, {:.1} CPU ns)",
            c.objects, c.batch, c.speedup_vs_mimalloc, c.speedup_vs_system, c.queue_only_ns_per_object, c.queue_only_cpu_ns_per_object
        );
        let w = &sb.waste;
        let _ = writeln!(
            out,
            "  replay: {} allocs, {} frees ({} of pre-trace objects); live {} B requested, {} B allocated, {} pages",
            w.allocs, w.frees, w.unmatched_frees, w.bytes_requested, w.bytes_allocated, w.pages_used
        );
        let _ = writeln!(
            out,
            "  waste (pages x 4096 - requested) / requested: {:.3} at the end, {:.3} at the peak ({} B)",
            w.waste_ratio, w.waste_ratio_at_peak, w.peak_bytes_requested
        );
        let _ = writeln!(out, "  ({})", sb.trace);
    }
    if let Some(c) = &report.compaction {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "compaction ({} MiB, {} live order-0 folios, every other one freed; median of {})",
            c.machine_mib, c.live_folios, c.reps
        );
        let _ = writeln!(
            out,
            "  order>=9 free blocks {} -> {}; {} migrated, {} failed, {} pages scanned in {:.1} ms ({:.0} migrations/s)",
            c.order9_blocks_before, c.order9_blocks_after, c.migrated, c.failed, c.scanned, c.compact_ms, c.migrated_per_sec
        );
        let _ = writeln!(
            out,
            "  every live folio mapped in a process and its fork child: {:.0} migrations/s ({:.2}x unmapped), order>=9 free blocks after {}",
            c.mapped_migrated_per_sec, c.mapped_to_unmapped_rate, c.mapped_order9_blocks_after
        );
    }
    if let Some(r) = &report.replay {
        let _ = writeln!(out);
        let _ = writeln!(out, "replay of {} ({} events, decompression and parsing included)", r.trace, r.events);
        let _ = writeln!(
            out,
            "  {:.2} M events/s (target >= {:.0} M: {}), {:.2} M per CPU second; parsing alone {:.2} M/s ({:.2} M per CPU second)",
            r.events_per_sec / 1e6,
            r.target_events_per_sec / 1e6,
            verdict(r.events_per_sec >= r.target_events_per_sec),
            r.events_per_cpu_sec / 1e6,
            r.parse_events_per_sec / 1e6,
            r.parse_events_per_cpu_sec / 1e6
        );
        let _ = writeln!(
            out,
            "  CPU {:.2} s, of it host kernel {:.2} s (faulting in simulated memory); boot {:.2} s and start state {:.2} s not included; {} allocation failures",
            r.cpu_seconds, r.host_sys_seconds, r.boot_seconds, r.start_state_seconds, r.alloc_failures
        );
        let _ = writeln!(
            out,
            "  two-level memmap, default allocation policy: at most {} split 2 MiB areas; {} when live memory peaked ({} of {} pages not free)",
            r.split_areas_peak.default,
            r.split_areas_at_live_peak.default,
            r.two_level_live_pages_peak,
            r.two_level_machine_pages
        );
        let _ = writeln!(
            out,
            "  with CPU-local 2 MiB areas: at most {} split areas, {} when live memory peaked; the areas served {} of {} page allocations",
            r.split_areas_peak.cpu_areas,
            r.split_areas_at_live_peak.cpu_areas,
            r.cpu_areas_use.area_allocs,
            r.cpu_areas_use.allocs
        );
    }
    if let Some(e) = &report.estimate {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "estimate of {} ({} pfns): {:.3} s (target <= {:.0} s: {})",
            e.snapshot,
            e.pfns,
            e.seconds,
            e.target_seconds,
            verdict(e.seconds <= e.target_seconds)
        );
    }
    if let Some(p) = &report.pgtable {
        let _ = writeln!(out);
        let _ = writeln!(out, "pgtable (median of {} rounds)", p.rounds);
        let _ = writeln!(
            out,
            "  map+unmap 2 MiB: {:.1} ns per page by PTE, {:.0} ns by PMD ({:.1}x)",
            p.pte_map_unmap_ns_per_page, p.pmd_map_unmap_ns, p.pte_over_pmd
        );
        let _ = writeln!(
            out,
            "  fork+teardown {:.1} ns per mapped page; rmap walk of a folio in two mms {:.0} ns; ptdesc {} B",
            p.fork_ns_per_page, p.rmap_walk_ns, p.ptdesc_bytes
        );
    }
    if let (Some(z), Some(z3)) = (&report.zsmalloc, &report.z3fold) {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "zsmalloc density: {} pages of {} files under {} ({}), {} stored as-is, mean object {:.0} B",
            z.input_pages, z.files, z.source, z.compressor, z.incompressible_pages, z.mean_object_bytes
        );
        let _ = writeln!(out, "  pool bytes / live object bytes    before compaction   after   with metadata");
        for (name, d) in [("zsmalloc", &z.detail), ("z3fold", z3)] {
            let _ = writeln!(
                out,
                "  {:<32} {:>17.3} {:>7.3} {:>15.3}",
                name,
                d.overhead_ratio_before_compaction,
                d.overhead_ratio_after_compaction,
                d.overhead_ratio_with_metadata_after_compaction
            );
        }
        let steps: Vec<String> = z.by_step.iter().map(|(k, v)| format!("{k} B: {v:.3}")).collect();
        let pages: Vec<String> = z.by_max_pages.iter().map(|(k, v)| format!("{k}: {v:.3}")).collect();
        let _ = writeln!(
            out,
            "  zsmalloc target <= {} {}; class step {} B, zspages of up to {} pages ({} classes)",
            z.target_overhead_ratio,
            verdict(z.target_met),
            z.class_step,
            z.max_pages,
            z.classes
        );
        let _ = writeln!(
            out,
            "  after compaction by class step: {}; by most pages per zspage: {}",
            steps.join(", "),
            pages.join(", ")
        );
    }
    out
}
