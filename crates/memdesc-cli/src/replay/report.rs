//! The output of a replay: the stable `--json` object ([`to_json`]) and the readable table
//! ([`to_table`]).

use super::driver::*;
use super::metadata::*;
use memdesc::PAGE_SIZE;
use memdesc_linux::trace::EventKind;
use serde_json::{json, Value};

/// The stable JSON of a report. Besides the counts: `bytes` (`peak_linux`, `peak_memdesc`,
/// `memdesc_includes`, `memmap`, `two_level_placement`: `"memdesc"` when `peak_memdesc` is a
/// two-level figure, in memdesc's own placement, else null;
/// `peak_memdesc_two_level_traced_placement`, `samples`), `split_areas_peak`
/// (`memdesc_placement`: null with the flat memmap; `traced_placement`), `two_level` (both
/// placements with what each is), `descriptor_caches` (real geometry and occupancy).
pub fn to_json(r: &Report) -> Value {
    let by_type: serde_json::Map<String, Value> = EventKind::ALL
        .iter()
        .map(|k| {
            let i = *k as usize;
            (k.tracepoint().to_string(), json!({ "replayed": r.replayed[i], "skipped": r.skipped_by_kind[i] }))
        })
        .collect();
    let peak_linux = r.samples.iter().map(|s| s.linux).max().unwrap_or(0);
    let peak_memdesc = r.samples.iter().map(|s| s.memdesc).max().unwrap_or(0);
    let two = r.memmap == MemmapArg::TwoLevel;
    let own_split_peak = r.samples.iter().map(|s| s.split_areas).max().unwrap_or(0);
    let traced_split_peak = r.samples.iter().map(|s| s.traced_split_areas).max().unwrap_or(0);
    let traced_peak = r.samples.iter().map(|s| s.traced_two_level).max().unwrap_or(0);
    let end_pages: serde_json::Map<String, Value> = r
        .end_rows
        .iter()
        .map(|(k, ours, theirs, why)| (k.clone(), json!({ "replay": ours, "end_snapshot": theirs, "why": why })))
        .collect();
    json!({
        "source": r.source,
        "memmap": match r.memmap { MemmapArg::Flat => "flat", MemmapArg::TwoLevel => "two_level" },
        "machine_pages": r.machine_pages,
        "lines": {
            "total": r.stats.lines,
            "events": r.stats.events,
            "unknown": r.stats.unknown,
            "headers": r.stats.headers,
            "blank": r.stats.blank,
            "lost_markers": r.stats.lost_markers,
            "lost_events": r.stats.lost_events,
            "accounted": r.accounted_lines(),
        },
        "events": {
            "total": r.stats.events + r.stats.unknown,
            "replayed": r.replayed_total(),
            "by_type": by_type,
        },
        "skipped": { "total": r.skipped_total(), "by_reason": r.skipped },
        "events_per_sec": r.events_per_sec(),
        "events_per_cpu_sec": r.events_per_cpu_sec(),
        "seconds": { "boot": r.boot_seconds, "start_state": r.start_seconds, "replay": r.replay_seconds, "replay_cpu": r.replay_cpu_seconds, "replay_host_sys": r.replay_host_sys_seconds },
        "alloc_failures": r.alloc_failures,
        "unmatched_frees": r.unmatched_frees,
        "pre_trace_frees": r.pre_trace_frees,
        "partial_frees": r.partial_frees,
        "stale_start_pages": r.stale_start_pages,
        "lost_free_pages": r.lost_free_pages,
        "lost_object_frees": r.lost_object_frees,
        "sim_errors": r.sim_errors,
        "bytes": {
            "peak_linux": peak_linux,
            "peak_memdesc": peak_memdesc,
            "memdesc_includes": MEMDESC_INCLUDES,
            "memmap": if two { "two_level" } else { "flat" },
            "two_level_placement": if two { Some(MEMDESC_PLACEMENT) } else { None },
            "peak_memdesc_two_level_traced_placement": traced_peak,
            "samples": r.samples,
        },
        "split_areas_peak": {
            "memdesc_placement": if two { Some(own_split_peak) } else { None },
            "traced_placement": traced_split_peak,
        },
        "two_level": {
            "areas": r.traced_areas,
            "placement_of_peak_memdesc": if two { Some(MEMDESC_PLACEMENT) } else { None },
            "memdesc_placement": {
                "what": "the pfns memdesc's own allocator chose on the simulated machine (packs allocations into few 2 MiB areas)",
                "split_areas_peak": if two { Some(own_split_peak) } else { None },
                "peak_bytes": if two { Some(peak_memdesc) } else { None },
            },
            "traced_placement": {
                "what": TRACED_PLACEMENT,
                "split_areas_start": r.samples.first().map_or(0, |s| s.traced_split_areas),
                "split_areas_peak": traced_split_peak,
                "split_areas_end": r.samples.last().map_or(0, |s| s.traced_split_areas),
                "peak_bytes": traced_peak,
            },
        },
        "descriptor_caches": r.descriptor_caches,
        "end": {
            "pages": end_pages,
            "free_blocks_by_order": { "replay": r.free_blocks.0, "end_buddyinfo": r.free_blocks.1 },
            "slab_caches": r.slab_caches.iter().map(|(n, p, a, o)| json!({ "name": n, "pages": p, "active_objs": a, "num_objs": o })).collect::<Vec<_>>(),
            "disagreements": r.confusion.iter().map(|((a, b), n)| json!({ "replay": a, "end_snapshot": b, "pages": n })).collect::<Vec<_>>(),
            "linux_slab_signature": { "live_pages": r.slab_signature.0, "end_snapshot_slab": r.slab_signature.1, "raw_pages_end_snapshot_slab": r.slab_missed },
        },
    })
}

/// What replay's memdesc figure includes.
pub const MEMDESC_INCLUDES: &str =
    "the simulated machine's memmap (words; for the two-level memmap its area words and \
     the tables of split areas) plus every slab page of the descriptor caches (folio, ptdesc, vmalloc, netmem, zspage, \
     z3fold, mappable) and of slab_desc (the slab descriptors of every slab): real object stride, partial slabs and \
     slack included";

/// The name of memdesc's own placement in the JSON.
pub const MEMDESC_PLACEMENT: &str = "memdesc";

/// What the traced placement is.
pub const TRACED_PLACEMENT: &str = "the pfns the traced Linux kernel used (start snapshot and every traced page \
     event): an area is split unless no live allocation covers it, one folio of order >= 9 covers all of it, or all \
     of it is reserved; the cost is one word per 2 MiB area of the traced pfn space, a 512-word table per split area \
     and the same descriptor slabs as the replay";

pub(crate) fn mib(b: u64) -> f64 {
    b as f64 / (1u64 << 20) as f64
}

/// The human-readable table.
pub fn to_table(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "memdesc replay of {} ({} memmap, {:.1} GiB simulated machine)",
        r.source,
        match r.memmap {
            MemmapArg::Flat => "flat",
            MemmapArg::TwoLevel => "two-level",
        },
        r.machine_pages as f64 * PAGE_SIZE as f64 / (1u64 << 30) as f64
    );
    let _ = writeln!(
        o,
        "lines {} = {} replayed + {} skipped + {} header/blank/lost ({})",
        r.stats.lines,
        r.replayed_total(),
        r.skipped_total(),
        r.stats.headers + r.stats.blank + r.stats.lost_markers,
        if r.accounted_lines() == r.stats.lines { "all accounted for" } else { "MISMATCH" }
    );
    let _ = writeln!(
        o,
        "time: boot {:.2} s, start state {:.2} s, events {:.2} s, CPU {:.2} s of which host kernel {:.2} s ({:.2} M events/s; {:.2} M per CPU second; decompression and parsing included)\n",
        r.boot_seconds,
        r.start_seconds,
        r.replay_seconds,
        r.replay_cpu_seconds,
        r.replay_host_sys_seconds,
        r.events_per_sec() / 1e6,
        r.events_per_cpu_sec() / 1e6
    );
    let _ = writeln!(o, "{:<36} {:>10} {:>10}", "event", "replayed", "skipped");
    for k in EventKind::ALL {
        let i = k as usize;
        if r.replayed[i] + r.skipped_by_kind[i] > 0 {
            let _ = writeln!(o, "{:<36} {:>10} {:>10}", k.tracepoint(), r.replayed[i], r.skipped_by_kind[i]);
        }
    }
    let _ = writeln!(o, "\nskipped, by reason:");
    for (why, n) in &r.skipped {
        let _ = writeln!(o, "  {n:>9}  {why}");
    }
    let _ = writeln!(
        o,
        "\nallocation failures {}   unmatched frees {}   frees of pre-trace pages {} (expected)   partial frees {}",
        r.alloc_failures, r.unmatched_frees, r.pre_trace_frees, r.partial_frees
    );
    let _ = writeln!(
        o,
        "pages allocated that the start snapshot showed allocated (freed before the trace began, or on a per-CPU list) {}; lost frees: pages {}, objects/areas {}",
        r.stale_start_pages, r.lost_free_pages, r.lost_object_frees
    );
    for (e, n) in &r.sim_errors {
        let _ = writeln!(o, "  simulated allocator error x{n}: {e}");
    }
    let _ = writeln!(o, "\nend state, pages by kind       replay   end snapshot       diff");
    for (k, ours, theirs, why) in &r.end_rows {
        match theirs {
            Some(t) => {
                let _ = writeln!(o, "  {k:<22} {ours:>12} {t:>14} {:>+10}", *ours as i64 - *t as i64);
            }
            None => {
                let _ = writeln!(o, "  {k:<22} {ours:>12} {:>14}", "-");
            }
        }
        let _ = writeln!(o, "      {why}");
    }
    let _ = writeln!(
        o,
        "  Linux slab pages skipped by GFP signature, live at the end: {} ({} flagged SLAB in the end snapshot); raw trace pages flagged SLAB there: {}",
        r.slab_signature.0, r.slab_signature.1, r.slab_missed
    );
    let _ = writeln!(o, "  largest per-pfn disagreements (replay kind -> end snapshot kind: pages):");
    for ((a, b), n) in &r.confusion {
        let _ = writeln!(o, "    {a:>10} -> {b:<10} {n:>9}");
    }
    let _ = writeln!(o, "\nfree blocks by order (replay after draining per-CPU lists / end buddyinfo):");
    for (k, n) in r.free_blocks.0.iter().enumerate() {
        let theirs = r.free_blocks.1.as_ref().and_then(|v| v.get(k)).map_or("-".to_string(), |v| v.to_string());
        let _ = writeln!(o, "  order {k:>2}: {n:>9} {theirs:>9}");
    }
    let peak_linux = r.samples.iter().map(|s| s.linux).max().unwrap_or(0);
    let peak = r.samples.iter().map(|s| s.memdesc).max().unwrap_or(0);
    let first = r.samples.first().map_or(0, |s| s.memdesc);
    let last = r.samples.last().map_or(0, |s| s.memdesc);
    let _ = writeln!(
        o,
        "\nmetadata: Linux {:.1} MiB (64 B/page); memdesc start {:.1} MiB, peak {:.1} MiB, end {:.1} MiB (words + descriptor slabs): {:.1}x less",
        mib(peak_linux),
        mib(first),
        mib(peak),
        mib(last),
        peak_linux as f64 / peak.max(1) as f64
    );
    let _ = writeln!(o, "  memdesc includes {MEMDESC_INCLUDES}");
    let peak_split = |f: fn(&Sample) -> u64| r.samples.iter().map(f).max().unwrap_or(0);
    if r.memmap == MemmapArg::TwoLevel {
        let _ = writeln!(
            o,
            "two-level memmap, MEMDESC'S OWN PLACEMENT (the simulated allocator's pfns; it packs allocations into few 2 MiB areas, unlike Linux): peak {} split areas of {}; the figures above use it",
            peak_split(|s| s.split_areas),
            r.traced_areas
        );
    }
    let traced_peak = peak_split(|s| s.traced_two_level);
    let _ = writeln!(
        o,
        "two-level memmap, TRACED PLACEMENT (the pfns Linux used): split areas start {}, peak {}, end {} of {}; memdesc peak {:.1} MiB ({:.3}x Linux)",
        r.samples.first().map_or(0, |s| s.traced_split_areas),
        peak_split(|s| s.traced_split_areas),
        r.samples.last().map_or(0, |s| s.traced_split_areas),
        r.traced_areas,
        mib(traced_peak),
        traced_peak as f64 / peak_linux.max(1) as f64
    );
    let _ = writeln!(o, "\ndescriptor caches at the end (real geometry of the simulated machine's slab):");
    let _ = writeln!(
        o,
        "  {:<14} {:>7} {:>7} {:>9} {:>6} {:>8} {:>10} {:>10} {:>10}",
        "cache", "object", "stride", "per slab", "order", "slabs", "in use", "slots", "MiB"
    );
    for c in &r.descriptor_caches {
        let _ = writeln!(
            o,
            "  {:<14} {:>7} {:>7} {:>9} {:>6} {:>8} {:>10} {:>10} {:>10.2}",
            c.name,
            c.object_bytes,
            c.stride,
            c.objects_per_slab,
            c.slab_order,
            c.slabs,
            c.active_objects,
            c.objects,
            mib(c.bytes)
        );
    }
    o
}
