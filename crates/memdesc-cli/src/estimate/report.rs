//! The output of an estimate: the stable `--json` object ([`to_json`]) and the readable
//! table ([`table`]).

use std::fmt::Write as _;

use super::compute::*;
use memdesc_linux::census::{Census, Kind};
use memdesc_linux::cost::{self, Estimate, KindCost};
use serde_json::{json, Map, Value};

pub(crate) fn orders(v: &[u64]) -> Value {
    let mut m = Map::new();
    for (k, &n) in v.iter().enumerate() {
        m.insert(k.to_string(), json!(n));
    }
    Value::Object(m)
}

/// What the memdesc figures include and exclude (printed and in the JSON).
pub const STORAGE_INCLUDES: &str =
    "per-page words; descriptors at size_of; descriptor storage: the whole slabs of each \
     descriptor cache at the core's real stride, objects per slab and slab order (stride padding and the last slab's \
     slack included) and the slab descriptors of those slabs, in whole slab_desc slabs";
/// See [`STORAGE_INCLUDES`].
pub const STORAGE_EXCLUDES: &str = "fragmentation of partial slabs after frees (not visible in a snapshot; `memdesc \
     replay` measures the real caches), empty slabs a cache keeps cached, per-CPU sheaves, and the caches' own \
     kmem_cache structures";
/// What the in-use figures cover.
pub const IN_USE_MEANS: &str = "pages that are not free, not uninitialised (deferred init) and not holes; Linux pays \
     64 B for each, memdesc flat their words + descriptors + storage, memdesc two-level its whole cost (area words \
     and every table, an upper bound: free pages only cost table words in areas that in-use pages split)";

/// What drives the cost of `row` in memdesc, in words, from the figures of the estimate.
pub fn driver(e: &Estimate, c: &Census, row: &KindCost) -> String {
    let s = &e.sizes;
    let w = s.word;
    let per_page = |bytes: u64, pages: u64| if pages == 0 { 0.0 } else { bytes as f64 / pages as f64 };
    match row.kind {
        "free" | "uninit" | "hole" => format!(
            "no descriptor: a {w} B word per page flat ({w}/64 = {:.3}x); two-level: nothing in uniform 2 MiB \
             areas, a table word in split ones",
            w as f64 / 64.0
        ),
        "reserved" | "zero_page" | "offline" | "hwpoison" => {
            format!("no descriptor: the {w} B word says all there is ({w}/64 = {:.3}x)", w as f64 / 64.0)
        }
        "slab" => format!(
            "word + one {} B slab descriptor per slab ({} slabs, {:.1} pages each on average): {:.1} B per page",
            s.slab,
            c.slabs(),
            per_page(row.pages, c.slabs()),
            per_page(row.flat_bytes, row.pages)
        ),
        "page_table" => format!(
            "word + one {} B ptdesc per page-table page: {:.1} B per page",
            s.ptdesc,
            per_page(row.flat_bytes, row.pages)
        ),
        "anon" | "file" => {
            let by = if row.kind == "anon" { &c.anon_folios_by_order } else { &c.file_folios_by_order };
            let small = by.first().copied().unwrap_or(0);
            format!(
                "word + one {} B folio descriptor per folio ({} folios, {:.0}% order 0, {:.2} pages each): {:.1} B per \
                 page (an order-0 page costs {}+{} = {} B of Linux's 64); parity folio {} B order-0, {} B large: {:.1} B \
                 per page",
                s.folio,
                row.descriptors,
                100.0 * small as f64 / row.descriptors.max(1) as f64,
                per_page(row.pages, row.descriptors),
                per_page(row.flat_bytes, row.pages),
                w,
                s.folio,
                w + s.folio,
                s.parity_folio,
                s.parity_large_folio,
                per_page(row.parity_flat_bytes, row.pages)
            )
        }
        "other" => format!(
            "word + descriptors only for groups mapped to user space ({} mappable), vmalloc pages ({}, an upper \
             bound) and zspages ({}); unmapped kernel memory has the word only: {:.1} B per page",
            c.other_mapped_groups,
            c.vmalloc_pages.unwrap_or(0).min(c.pages[Kind::Other]),
            c.zspages.unwrap_or(0),
            per_page(row.flat_bytes, row.pages)
        ),
        "memmap" => "two-level only: one word per 2 MiB area, and the table words of pfns outside every zone in \
                     split areas"
            .to_string(),
        _ => String::new(),
    }
}

/// The stable JSON form of a report. Keys: `source`, `kernel`, `seconds`, `pages` (`total`,
/// `free`, `slab`, `page_table`, `reserved`, `anon`, `file`, `other`, `uninit`, `hole`,
/// `zero_page`, `offline`, `hwpoison`, `in_use`), `folios_by_order` (and `anon_`/`file_`
/// variants, `slabs_by_order`, `free_blocks_by_order`: objects keyed by order), `descriptors`,
/// `bytes` (`linux`, `memdesc_flat`, `memdesc_two_level`, `descriptors`,
/// `descriptor_storage`, `ram`, `in_use.{pages,linux,memdesc_flat,memdesc_two_level}`,
/// `parity.{memdesc_flat,memdesc_two_level,in_use.{memdesc_flat,memdesc_two_level},folio,
/// large_folio}`), `ratios` (and `ratios.in_use`), `includes`, `percent_of_ram`,
/// `worst_case`, `two_level`, `kinds` (per-kind rows with `ratios` and `driver`), `sizes`
/// (with the cache geometry under `storage`), `checks`.
pub fn to_json(r: &Report) -> Value {
    let c = &r.census;
    let e = &r.estimate;
    let t = &e.totals;
    let u = &e.in_use;
    let mut pages = Map::new();
    pages.insert("total".into(), json!(c.total));
    for k in Kind::ALL {
        pages.insert(k.name().into(), json!(c.pages[k]));
    }
    pages.insert("in_use".into(), json!(u.pages));
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let kinds: Vec<Value> = e
        .rows
        .iter()
        .map(|row| {
            let mut v = serde_json::to_value(row).unwrap_or(Value::Null);
            if let Value::Object(m) = &mut v {
                m.insert(
                    "ratios".into(),
                    json!({
                        "flat_vs_linux": ratio(row.flat_bytes, row.linux_bytes),
                        "two_level_vs_linux": ratio(row.two_level_bytes, row.linux_bytes),
                        "parity_flat_vs_linux": ratio(row.parity_flat_bytes, row.linux_bytes),
                    }),
                );
                m.insert(
                    "in_use".into(),
                    json!(Kind::ALL.iter().find(|k| k.name() == row.kind).map(|&k| cost::in_use(k))),
                );
                m.insert("driver".into(), json!(driver(e, c, row)));
            }
            v
        })
        .collect();
    json!({
        "source": r.source,
        "kernel": r.kernel,
        "seconds": r.seconds,
        "pages": pages,
        "folios_by_order": orders(&c.folios_by_order),
        "anon_folios_by_order": orders(&c.anon_folios_by_order),
        "file_folios_by_order": orders(&c.file_folios_by_order),
        "slabs_by_order": orders(&c.slabs_by_order),
        "free_blocks_by_order": orders(&c.free_blocks_by_order),
        "descriptors": {
            "folios": c.folios(),
            "small_folios": c.small_folios(),
            "large_folios": c.large_folios(),
            "slabs": c.slabs(),
            "page_tables": c.page_tables,
            "mappable": c.other_mapped_groups,
            "vmalloc_pages": c.vmalloc_pages,
            "zspages": c.zspages,
        },
        "bytes": {
            "linux": t.linux_bytes,
            "memdesc_flat": t.flat_bytes,
            "memdesc_two_level": t.two_level_bytes,
            "descriptors": t.descriptor_bytes,
            "descriptor_storage": t.storage_bytes,
            "ram": t.ram_bytes,
            "in_use": {
                "pages": u.pages,
                "linux": u.linux_bytes,
                "memdesc_flat": u.flat_bytes,
                "memdesc_two_level": u.two_level_bytes,
            },
            "parity": {
                "memdesc_flat": t.parity_flat_bytes,
                "memdesc_two_level": t.parity_two_level_bytes,
                "in_use": { "memdesc_flat": u.parity_flat_bytes, "memdesc_two_level": u.parity_two_level_bytes },
                "folio": e.sizes.parity_folio,
                "large_folio": e.sizes.parity_large_folio,
            },
        },
        "ratios": {
            "flat_vs_linux": t.flat_ratio,
            "two_level_vs_linux": t.two_level_ratio,
            "parity_flat_vs_linux": t.parity_flat_ratio,
            "in_use": {
                "flat_vs_linux": u.flat_ratio,
                "two_level_vs_linux": u.two_level_ratio,
                "parity_flat_vs_linux": u.parity_flat_ratio,
            },
        },
        "includes": {
            "memdesc": STORAGE_INCLUDES,
            "excluded": if e.sizes.storage.is_some() { STORAGE_EXCLUDES.to_string() } else { format!("descriptor storage beyond size_of (no cache geometry), and {STORAGE_EXCLUDES}") },
            "in_use": IN_USE_MEANS,
        },
        "percent_of_ram": {
            "linux": t.linux_percent_of_ram,
            "memdesc_flat": t.flat_percent_of_ram,
            "memdesc_two_level": t.two_level_percent_of_ram,
        },
        "worst_case": {
            "linux": e.worst_case.linux_bytes,
            "memdesc_flat": e.worst_case.flat_bytes,
            "memdesc_two_level": e.worst_case.two_level_bytes,
            "parity_memdesc_flat": e.worst_case.parity_flat_bytes,
            "flat_vs_linux": e.worst_case.flat_ratio,
        },
        "two_level": e.two_level,
        "kinds": kinds,
        "sizes": e.sizes,
        "checks": {
            "buddy_mode": c.buddy_mode,
            "buddyinfo_free": c.buddyinfo_free,
            "nopage": c.nopage,
            "outside_zones": c.outside_zones,
            "unexplained_absent": c.unexplained_absent,
            "irregular_groups": c.irregular_groups,
        },
    })
}

/// `n` bytes in MiB with one decimal.
pub(crate) fn mib(n: u64) -> String {
    format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64)
}

/// `a / b` as a ratio column (`-` when Linux pays nothing for the row).
pub(crate) fn rcol(a: u64, b: u64) -> String {
    if b == 0 {
        "-".into()
    } else {
        format!("{:.3}x", a as f64 / b as f64)
    }
}

/// The human-readable table.
pub fn table(r: &Report) -> String {
    let c = &r.census;
    let e = &r.estimate;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "memdesc estimate: {}{}",
        r.source,
        r.kernel.as_deref().map(|k| format!(", kernel {k}")).unwrap_or_default()
    );
    let _ = writeln!(
        s,
        "{} pfns in zones ({:.2} GiB of RAM), census in {:.3} s; descriptor sizes: word {} B, folio {} B, \
         large folio {} B, slab {} B, ptdesc {} B, mappable {} B, vmalloc {} B, zspage {} B; parity folio {} B, \
         large {} B",
        c.total,
        e.totals.ram_bytes as f64 / (1u64 << 30) as f64,
        r.seconds,
        e.sizes.word,
        e.sizes.folio,
        e.sizes.large_folio,
        e.sizes.slab,
        e.sizes.ptdesc,
        e.sizes.mappable,
        e.sizes.vmalloc,
        e.sizes.zspage,
        e.sizes.parity_folio,
        e.sizes.parity_large_folio,
    );
    let u = &e.in_use;
    let t = &e.totals;
    let idle = c.pages[Kind::Free] + c.pages[Kind::Uninit] + c.pages[Kind::Hole];
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "IN USE ({} pages, {:.1}% of pfns): Linux {}; memdesc flat {} ({:.3}x), two-level {} ({:.3}x, upper \
         bound), flat with parity folios {} ({:.3}x)",
        u.pages,
        100.0 * u.pages as f64 / c.total.max(1) as f64,
        mib(u.linux_bytes),
        mib(u.flat_bytes),
        u.flat_ratio,
        mib(u.two_level_bytes),
        u.two_level_ratio,
        mib(u.parity_flat_bytes),
        u.parity_flat_ratio
    );
    let _ = writeln!(
        s,
        "ALL PFNS: flat {:.3}x, two-level {:.3}x, parity flat {:.3}x of Linux ({:.1}% of pfns are free, not yet \
         initialised or holes: a word or nothing each in memdesc, 64 B in Linux)",
        t.flat_ratio,
        t.two_level_ratio,
        t.parity_flat_ratio,
        100.0 * idle as f64 / c.total.max(1) as f64
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "{:<11} {:>10} {:>11} {:>12} {:>12} {:>12} {:>12} {:>7} {:>7} {:>7}",
        "kind", "pages", "descriptors", "Linux", "memdesc flat", "2-level", "parity flat", "flat/L", "2lvl/L", "par/L"
    );
    let line = |s: &mut String, name: &str, pages: String, desc: String, k: [u64; 4]| {
        let _ = writeln!(
            s,
            "{:<11} {:>10} {:>11} {:>12} {:>12} {:>12} {:>12} {:>7} {:>7} {:>7}",
            name,
            pages,
            desc,
            mib(k[0]),
            mib(k[1]),
            mib(k[2]),
            mib(k[3]),
            rcol(k[1], k[0]),
            rcol(k[2], k[0]),
            rcol(k[3], k[0])
        );
    };
    for row in &e.rows {
        if row.pages == 0 && row.two_level_bytes == 0 {
            continue;
        }
        line(
            &mut s,
            row.kind,
            row.pages.to_string(),
            row.descriptors.to_string(),
            [row.linux_bytes, row.flat_bytes, row.two_level_bytes, row.parity_flat_bytes],
        );
    }
    line(
        &mut s,
        "in use",
        u.pages.to_string(),
        String::new(),
        [u.linux_bytes, u.flat_bytes, u.two_level_bytes, u.parity_flat_bytes],
    );
    line(
        &mut s,
        "total",
        t.pages.to_string(),
        String::new(),
        [t.linux_bytes, t.flat_bytes, t.two_level_bytes, t.parity_flat_bytes],
    );
    let _ = writeln!(
        s,
        "{:<11} {:>10} {:>11} {:>11.3}% {:>11.3}% {:>11.3}%",
        "% of RAM", "", "", t.linux_percent_of_ram, t.flat_percent_of_ram, t.two_level_percent_of_ram
    );
    let w = &e.worst_case;
    line(
        &mut s,
        "worst case",
        t.pages.to_string(),
        String::new(),
        [w.linux_bytes, w.flat_bytes, w.two_level_bytes, w.parity_flat_bytes],
    );
    let _ = writeln!(s, "  (worst case: every page an order-0 folio)");
    let _ = writeln!(s, "\nwhat drives each row (memdesc):");
    for row in &e.rows {
        if row.pages == 0 && row.two_level_bytes == 0 {
            continue;
        }
        let _ = writeln!(s, "  {:<10} {}", row.kind, driver(e, c, row));
    }
    let _ = writeln!(s);
    match &e.sizes.storage {
        Some(g) => {
            let geo = |n: &str, g: &cost::CacheGeometry| {
                format!("{n} {} B stride, {} per {} KiB slab", g.stride, g.objects_per_slab, g.slab_bytes() / 1024)
            };
            let _ = writeln!(
                s,
                "descriptor storage: {} beyond size_of ({} of descriptors); caches: {}; {}; {}; parity: {}",
                mib(t.storage_bytes),
                mib(t.descriptor_bytes),
                geo("folio", &g.folio),
                geo("slab_desc", &g.slab_desc),
                geo("ptdesc", &g.ptdesc),
                geo("parity_folio", &g.parity_folio),
            );
        }
        None => {
            let _ = writeln!(s, "descriptor storage: NOT charged (no cache geometry): size_of per descriptor only");
        }
    }
    let _ = writeln!(s, "memdesc figures include: {STORAGE_INCLUDES}");
    let _ = writeln!(s, "excluded: {STORAGE_EXCLUDES}");
    let _ = writeln!(s, "in use means: {IN_USE_MEANS}");
    let _ = writeln!(s);
    let tl = &e.two_level;
    let _ = writeln!(
        s,
        "two-level memmap: {} areas of 2 MiB, {} uniform (free {}, unavailable {}, one folio {}), {} split \
         (tables {})",
        tl.areas,
        tl.uniform_areas,
        c.areas.uniform_free,
        c.areas.uniform_unavailable,
        c.areas.uniform_folio,
        tl.split_areas,
        mib(tl.table_bytes)
    );
    let nonzero = |v: &[u64]| {
        v.iter().enumerate().filter(|(_, &n)| n > 0).map(|(k, n)| format!("{k}:{n}")).collect::<Vec<_>>().join(" ")
    };
    let _ = writeln!(s, "folios by order: {}", nonzero(&c.folios_by_order));
    let _ = writeln!(s, "slabs by order:  {}", nonzero(&c.slabs_by_order));
    if let Some(b) = c.buddyinfo_free {
        let free = c.pages[Kind::Free];
        let _ = writeln!(
            s,
            "free pages: census {free}, buddyinfo {b} ({:+.2}%)",
            if b == 0 { 0.0 } else { 100.0 * (free as f64 - b as f64) / b as f64 }
        );
    }
    s
}

/// `b` bytes in the largest binary unit that keeps it at 1 or more, one decimal.
pub(crate) fn human(b: u64) -> String {
    match b {
        0..1024 => format!("{b} B"),
        1024..1_048_576 => format!("{:.1} KiB", b as f64 / 1024.0),
        1_048_576..1_073_741_824 => format!("{:.1} MiB", b as f64 / 1_048_576.0),
        _ => format!("{:.1} GiB", b as f64 / 1_073_741_824.0),
    }
}

/// An axis value in decimal units (`1 kB`, `10 MB`).
pub(crate) fn decimal(v: f64) -> String {
    let (d, unit) = match v {
        v if v >= 1e9 => (1e9, "GB"),
        v if v >= 1e6 => (1e6, "MB"),
        v if v >= 1e3 => (1e3, "kB"),
        _ => (1.0, "B"),
    };
    format!("{} {unit}", (v / d).round())
}
