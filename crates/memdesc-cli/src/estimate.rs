//! `memdesc estimate [--snapshot DIR] [--json] [--svg FILE]`: how much memory the memdesc
//! memmap needs on a real machine, against Linux's 64-byte `struct page`.
//!
//! The snapshot is a directory in the layout of `../shared/data` (kpageflags, kpagecount,
//! zoneinfo and the other /proc tables); without `--snapshot` the live machine's `/proc` is
//! read (kpageflags needs root), and if that is not possible the project's bundled sample
//! (`samples/small/end`) is used, with a note saying why. The census and the cost model live
//! in `memdesc_linux::{census, cost}`; this module only picks the input, formats the result
//! (a table, stable JSON, an SVG stacked bar chart) and times the work.
//!
//! This file is self-contained (it names only external crates), so that it can also be built
//! as its own test target.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use memdesc_linux::census::{Census, CensusOptions, Kind};
use memdesc_linux::cost::{self, DescriptorSizes, Estimate, KindCost};
use memdesc_linux::plausibility::Plausibility;
use memdesc_linux::{Error as LinuxError, Snapshot};
use serde_json::{json, Map, Value};

/// Arguments of `memdesc estimate`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct EstimateArgs {
    /// A snapshot directory (kpageflags[.zst], kpagecount[.zst], zoneinfo, buddyinfo, ...).
    /// Without it: the live /proc (needs root), else the bundled sample.
    #[arg(long, value_name = "DIR")]
    pub snapshot: Option<PathBuf>,
    /// Print stable JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Write a stacked bar chart of Linux vs memdesc (flat and two-level) to FILE (SVG).
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// Estimate even from a snapshot that fails the plausibility checks (flags Linux does not
    /// define or cannot combine, mass HWPOISON, free pages far from buddyinfo: see
    /// `memdesc_linux::plausibility`); without it such a snapshot is refused.
    #[arg(long)]
    pub force: bool,
}

/// The bundled sample's end snapshot, relative to the repository root.
pub const SAMPLE_SNAPSHOT: &str = "samples/small/end";

/// Where the bundled sample is (the lookup of [`crate::data_dirs`]: `$MEMDESC_DATA`, the
/// current directory or a parent, the binary's directory or a parent).
pub fn sample_dir() -> Option<PathBuf> {
    crate::data_dirs::bundled(SAMPLE_SNAPSHOT, "zoneinfo")
}

/// The result of one estimate.
#[derive(Debug, Clone)]
pub struct Report {
    /// What was read (a directory, `/proc`, or the sample with the reason it was used).
    pub source: String,
    /// Kernel release of the snapshot, if known.
    pub kernel: Option<String>,
    /// The census.
    pub census: Census,
    /// The cost estimate.
    pub estimate: Estimate,
    /// Seconds spent reading, classifying and estimating.
    pub seconds: f64,
}

/// Reads `dir`, runs the census and the estimate: the timed unit of `memdesc bench`'s
/// `estimate.seconds` (for the mixA snapshot).
pub fn compute(dir: &Path, sizes: &DescriptorSizes) -> Result<Report> {
    let t = Instant::now();
    let s = Snapshot::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    Ok(report(&s, crate::data_dirs::display(dir), sizes, t))
}

/// [`compute`] and [`report`] behind the plausibility checks: an implausible snapshot is an
/// error naming what failed, or with `force` a warning on stderr.
fn checked_report(s: &Snapshot, source: String, sizes: &DescriptorSizes, t: Instant, force: bool) -> Result<Report> {
    let r = report(s, source, sizes, t);
    let problems = Plausibility::check(s, &r.census).problems();
    if !problems.is_empty() {
        let list: String = problems.iter().map(|p| format!("\n  - {p}")).collect();
        if !force {
            bail!(
                "{} does not look like a Linux kpageflags/kpagecount snapshot:{list}\n\
                 (pass --force to estimate anyway)",
                r.source
            );
        }
        eprintln!("warning: {} does not look like a Linux snapshot (estimating anyway, --force):{list}", r.source);
    }
    Ok(r)
}

fn compute_checked(dir: &Path, sizes: &DescriptorSizes, force: bool) -> Result<Report> {
    let t = Instant::now();
    let s = Snapshot::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    checked_report(&s, crate::data_dirs::display(dir), sizes, t, force)
}

fn report(s: &Snapshot, source: String, sizes: &DescriptorSizes, t: Instant) -> Report {
    let census = Census::from_snapshot(s, CensusOptions::default());
    let estimate = cost::estimate(&census, sizes);
    Report { source, kernel: s.kernel.clone(), census, estimate, seconds: t.elapsed().as_secs_f64() }
}

/// Picks the input as described in the module documentation and computes the report.
pub fn load(args: &EstimateArgs, sizes: &DescriptorSizes) -> Result<Report> {
    if let Some(dir) = &args.snapshot {
        return compute_checked(dir, sizes, args.force);
    }
    let t = Instant::now();
    let why = match Snapshot::read_live() {
        Ok(s) => return checked_report(&s, "/proc (live)".into(), sizes, t, args.force),
        Err(LinuxError::PermissionDenied { path, .. }) => {
            format!("{} is not readable without root (CAP_SYS_ADMIN)", path.display())
        }
        Err(e) => format!("the live /proc could not be read: {e}"),
    };
    let Some(dir) = sample_dir() else {
        bail!(
            "{why}, and the bundled sample ({SAMPLE_SNAPSHOT}) was not found; pass --snapshot DIR, or {}",
            crate::data_dirs::lookup_hint()
        );
    };
    eprintln!(
        "note: {why}; using the bundled sample {} (run as root for this machine, or pass --snapshot DIR)",
        dir.display()
    );
    let mut r = compute_checked(&dir, sizes, args.force)?;
    r.source = format!("{} (bundled sample)", dir.display());
    Ok(r)
}

/// `memdesc estimate`.
pub fn run(args: &EstimateArgs, sizes: &DescriptorSizes) -> Result<()> {
    let r = load(args, sizes)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&to_json(&r))?);
    } else {
        print!("{}", table(&r));
    }
    if let Some(path) = &args.svg {
        // After the report: a chart that cannot be written does not throw it away.
        crate::data_dirs::write_chart(path, |p| write_svg(&r, p))?;
        if !args.json {
            println!("chart written to {}", path.display());
        }
    }
    Ok(())
}

fn orders(v: &[u64]) -> Value {
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
fn mib(n: u64) -> String {
    format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64)
}

/// `a / b` as a ratio column (`-` when Linux pays nothing for the row).
fn rcol(a: u64, b: u64) -> String {
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
fn human(b: u64) -> String {
    match b {
        0..1024 => format!("{b} B"),
        1024..1_048_576 => format!("{:.1} KiB", b as f64 / 1024.0),
        1_048_576..1_073_741_824 => format!("{:.1} MiB", b as f64 / 1_048_576.0),
        _ => format!("{:.1} GiB", b as f64 / 1_073_741_824.0),
    }
}

/// An axis value in decimal units (`1 kB`, `10 MB`).
fn decimal(v: f64) -> String {
    let (d, unit) = match v {
        v if v >= 1e9 => (1e9, "GB"),
        v if v >= 1e6 => (1e6, "MB"),
        v if v >= 1e3 => (1e3, "kB"),
        _ => (1.0, "B"),
    };
    format!("{} {unit}", (v / d).round())
}

/// The chart's colour of each layout.
const BAR_COLOURS: [(u8, u8, u8); 4] = [(200, 60, 50), (40, 110, 190), (120, 170, 90), (150, 110, 190)];

/// Writes the chart: for the pages in use, all pfns, and each kind, one horizontal bar per
/// layout (Linux, memdesc flat, memdesc two-level, memdesc flat with parity folios) on a
/// logarithmic MiB axis so that small kinds stay visible, each bar labelled with its value.
/// Uses plotters' SVG backend only (text is emitted as SVG `<text>`; no font files are read).
pub fn write_svg(r: &Report, path: &Path) -> Result<()> {
    use plotters::prelude::*;
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    let err = |e: &dyn std::fmt::Debug| anyhow::anyhow!("{e:?}");

    let e = &r.estimate;
    let (t, u) = (&e.totals, &e.in_use);
    let mut rows: Vec<(String, [u64; 4])> = vec![
        (
            format!("in use: not free, not uninitialised, not holes ({} pages)", u.pages),
            [u.linux_bytes, u.flat_bytes, u.two_level_bytes, u.parity_flat_bytes],
        ),
        (
            format!("all pfns ({} pages)", t.pages),
            [t.linux_bytes, t.flat_bytes, t.two_level_bytes, t.parity_flat_bytes],
        ),
    ];
    for row in &e.rows {
        if row.pages == 0 && row.two_level_bytes == 0 {
            continue;
        }
        let name = if row.kind == "memmap" {
            "memmap (two-level area words)".to_string()
        } else {
            format!("{} ({} pages)", row.kind, row.pages)
        };
        rows.push((name, [row.linux_bytes, row.flat_bytes, row.two_level_bytes, row.parity_flat_bytes]));
    }
    // The axis is in bytes, from 1 B up.
    let to_kib = |b: u64| b as f64;
    let max = rows.iter().flat_map(|r| r.1).map(to_kib).fold(1.0f64, f64::max);
    let min_nonzero = rows.iter().flat_map(|r| r.1).filter(|&b| b > 0).map(to_kib).fold(max, f64::min);
    let lo = 10f64.powf((min_nonzero / 2.0).log10().floor()).max(1.0);
    let hi = max * 3.0;
    let n = rows.len();
    let height = 150 + 62 * n as u32;
    let root = SVGBackend::new(path, (1100, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (upper, legend_area) = root.split_vertically(height - 44);
    // The snapshot's directory name, with its trace's for a trace's start/ or end/.
    let src = Path::new(r.source.split(" (").next().unwrap_or(&r.source));
    let last = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    let name = match (last(src), src.parent().and_then(last)) {
        (Some(n), Some(parent)) if n == "start" || n == "end" => format!("{parent}/{n}"),
        (Some(n), _) => n,
        _ => r.source.clone(),
    };
    let caption = format!(
        "page metadata of {name}: in use memdesc {:.2}x (flat) / {:.2}x (two-level) / {:.2}x (parity) of Linux; all pfns {:.2}x / {:.2}x / {:.2}x",
        u.flat_ratio, u.two_level_ratio, u.parity_flat_ratio, t.flat_ratio, t.two_level_ratio, t.parity_flat_ratio
    );
    let mut chart = ChartBuilder::on(&upper)
        .caption(caption, ("sans-serif", 17))
        .margin(14)
        .x_label_area_size(36)
        .y_label_area_size(10)
        .build_cartesian_2d((lo..hi).log_scale(), 0f64..n as f64)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .disable_y_axis()
        .x_desc("bytes of page metadata (logarithmic scale; axis in decimal units, bar labels in KiB/MiB)")
        .x_label_formatter(&|v| decimal(*v))
        .draw()
        .map_err(|e| err(&e))?;
    let label_style = ("sans-serif", 14).into_font().style(FontStyle::Bold).color(&BLACK);
    let value_style = ("sans-serif", 11).into_font().color(&BLACK).pos(Pos::new(HPos::Left, VPos::Center));
    for (i, (label, vals)) in rows.iter().enumerate() {
        let top = (n - i) as f64;
        chart
            .draw_series(std::iter::once(Text::new(label.clone(), (lo, top - 0.04), label_style.clone())))
            .map_err(|e| err(&e))?;
        for (j, &b) in vals.iter().enumerate() {
            let y1 = top - 0.3 - 0.17 * j as f64;
            let y0 = y1 - 0.14;
            let (cr, cg, cb) = BAR_COLOURS[j];
            let v = to_kib(b);
            if b > 0 {
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(lo, y0), (v.max(lo), y1)],
                        RGBColor(cr, cg, cb).filled(),
                    )))
                    .map_err(|e| err(&e))?;
            }
            let text = if b == 0 {
                "0".to_string()
            } else if j == 0 {
                human(b)
            } else {
                format!("{} ({})", human(b), rcol(b, vals[0]))
            };
            chart
                .draw_series(std::iter::once(Text::new(text, (v.max(lo) * 1.08, (y0 + y1) / 2.0), value_style.clone())))
                .map_err(|e| err(&e))?;
        }
    }
    let names =
        ["Linux (64 B struct page)", "memdesc, flat memmap", "memdesc, two-level memmap", "memdesc flat, parity folio"];
    let mut x = 30;
    for (j, name) in names.iter().enumerate() {
        let (cr, cg, cb) = BAR_COLOURS[j];
        legend_area
            .draw(&Rectangle::new([(x, 12), (x + 18, 28)], RGBColor(cr, cg, cb).filled()))
            .map_err(|e| err(&e))?;
        legend_area.draw(&Text::new(*name, (x + 24, 12), ("sans-serif", 14).into_font())).map_err(|e| err(&e))?;
        x += 36 + 9 * name.len() as i32;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data");

    /// Test-only sizes; the binary passes `size_of` of the core crate's types.
    const SIZES: DescriptorSizes = DescriptorSizes {
        word: 8,
        folio: 64,
        large_folio: 128,
        slab: 64,
        ptdesc: 32,
        zspage: 48,
        netmem: 48,
        vmalloc: 32,
        mappable: 32,
        parity_folio: 64,
        parity_large_folio: 112,
        storage: None,
    };

    #[test]
    fn json_has_the_stable_keys_and_adds_up() {
        let r = compute(&Path::new(DATA).join("traces/pagecache/start"), &SIZES).unwrap();
        let j = to_json(&r);
        for k in ["total", "free", "slab", "page_table", "reserved", "anon", "file", "other"] {
            assert!(j["pages"][k].is_u64(), "pages.{k}");
        }
        for k in ["linux", "memdesc_flat", "memdesc_two_level"] {
            assert!(j["bytes"][k].is_u64(), "bytes.{k}");
        }
        assert!(j["folios_by_order"]["0"].as_u64().unwrap() > 1000);
        let total = j["pages"]["total"].as_u64().unwrap();
        assert_eq!(j["bytes"]["linux"].as_u64().unwrap(), total * 64);
        let kinds: u64 = Kind::ALL.iter().map(|k| j["pages"][k.name()].as_u64().unwrap()).sum();
        assert_eq!(kinds, total);
        // memdesc is far below Linux on this mostly-free machine.
        assert!(j["ratios"]["flat_vs_linux"].as_f64().unwrap() < 0.2);
        let t = table(&r);
        assert!(t.contains("worst case") && t.contains("slab"), "{t}");
    }

    #[test]
    fn svg_is_written() {
        let r = compute(&Path::new(DATA).join("snapshots/mixA"), &SIZES).unwrap();
        let p = std::env::temp_dir().join(format!("memdesc-estimate-{}.svg", std::process::id()));
        write_svg(&r, &p).unwrap();
        let svg = std::fs::read_to_string(&p).unwrap();
        let _ = std::fs::remove_file(&p);
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        assert!(svg.contains("memdesc, two-level memmap"));
        assert!(svg.contains("anon (") && svg.contains("file ("));
        assert!(svg.matches("<rect").count() > 10);
    }

    #[test]
    fn run_with_a_snapshot_and_json() {
        let args = EstimateArgs {
            snapshot: Some(Path::new(DATA).join("traces/anon/end")),
            json: true,
            ..EstimateArgs::default()
        };
        run(&args, &SIZES).unwrap();
        let bad = EstimateArgs { snapshot: Some(PathBuf::from("/nonexistent/snapshot")), ..EstimateArgs::default() };
        let e = run(&bad, &SIZES).unwrap_err();
        assert!(format!("{e:#}").contains("/nonexistent/snapshot"), "{e:#}");
    }

    #[test]
    fn without_a_snapshot_reads_proc_or_falls_back_to_the_sample() {
        // As root on Linux this reads the live /proc; otherwise it uses samples/small/end.
        let r = load(&EstimateArgs::default(), &SIZES).unwrap();
        assert!(r.source == "/proc (live)" || r.source.ends_with("(bundled sample)"), "{}", r.source);
        assert!(r.census.total > 0);
        assert_eq!(r.census.pages.sum(), r.census.total);
    }

    /// The in-use, storage and parity figures, with the real sizes and cache geometry.
    fn check_in_use_and_parity(j: &Value, name: &str) {
        let n = |p: &str| {
            p.split('.').fold(j, |v, k| &v[k]).as_u64().unwrap_or_else(|| panic!("{name}: {p} is not an integer"))
        };
        let f = |p: &str| p.split('.').fold(j, |v, k| &v[k]).as_f64().unwrap_or_else(|| panic!("{name}: {p}"));
        let in_use = n("pages.in_use");
        let idle = n("pages.free") + n("pages.uninit") + n("pages.hole");
        assert_eq!(in_use + idle, n("pages.total"), "{name}: in use = all but free, uninit, holes");
        assert_eq!(n("bytes.in_use.pages"), in_use);
        assert_eq!(n("bytes.in_use.linux"), in_use * 64, "{name}");
        // In use, memdesc flat pays a word per page plus descriptors and their storage.
        let flat = n("bytes.in_use.memdesc_flat");
        assert!(flat > in_use * 8 && flat < n("bytes.memdesc_flat"), "{name}: in-use flat {flat}");
        // The two-level in-use figure is its whole cost (an upper bound).
        assert_eq!(n("bytes.in_use.memdesc_two_level"), n("bytes.memdesc_two_level"));
        assert!((f("ratios.in_use.flat_vs_linux") - flat as f64 / (in_use * 64) as f64).abs() < 1e-12);
        // On memory in use the ratio is far above the all-pfns one, which idle memory drives down.
        assert!(f("ratios.in_use.flat_vs_linux") > 2.0 * f("ratios.flat_vs_linux"), "{name}");
        // Descriptor storage is charged, from the core's real caches.
        assert!(n("bytes.descriptor_storage") > 0, "{name}: storage");
        assert_eq!(j["sizes"]["storage"]["folio"]["stride"].as_u64(), Some(48));
        let kinds: u64 = j["kinds"].as_array().unwrap().iter().map(|k| k["flat_bytes"].as_u64().unwrap()).sum();
        assert_eq!(kinds, n("bytes.memdesc_flat"));
        let desc_plus: u64 = j["kinds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["descriptor_bytes"].as_u64().unwrap() + k["storage_bytes"].as_u64().unwrap())
            .sum();
        assert_eq!(desc_plus, n("bytes.descriptors") + n("bytes.descriptor_storage"));
        // Parity folios: 64 B order-0, 112 B large; more than memdesc's own, per folio page.
        assert_eq!(n("bytes.parity.folio"), 64);
        assert_eq!(n("bytes.parity.large_folio"), 112);
        let folios = n("descriptors.folios");
        let parity = n("bytes.parity.memdesc_flat");
        assert!(parity >= n("bytes.memdesc_flat") + folios * 16, "{name}: parity {parity}");
        assert!(n("bytes.parity.in_use.memdesc_flat") > flat);
        for k in j["kinds"].as_array().unwrap() {
            assert!(k["driver"].as_str().is_some_and(|d| !d.is_empty()), "{name}: driver of {}", k["kind"]);
            assert!(k["ratios"]["flat_vs_linux"].is_f64());
        }
        assert!(j["includes"]["memdesc"].as_str().unwrap().contains("slab descriptors"));
    }

    #[test]
    fn in_use_storage_and_parity_on_the_sample() {
        let dir = sample_dir().expect("bundled sample");
        let r = compute(&dir, &crate::sizes::descriptor_sizes()).unwrap();
        let j = to_json(&r);
        check_in_use_and_parity(&j, "sample");
        let t = table(&r);
        assert!(t.contains("IN USE") && t.contains("parity flat") && t.contains("what drives each row"), "{t}");
    }

    #[test]
    fn in_use_storage_and_parity_on_mixa() {
        let r = compute(&Path::new(DATA).join("snapshots/mixA"), &crate::sizes::descriptor_sizes()).unwrap();
        let j = to_json(&r);
        check_in_use_and_parity(&j, "mixA");
        // mixA: anon and file pages are almost all order-0 folios: 56 B (+ storage) of 64.
        let anon = j["kinds"].as_array().unwrap().iter().find(|k| k["kind"] == "anon").unwrap();
        let ratio = anon["ratios"]["flat_vs_linux"].as_f64().unwrap();
        assert!(ratio > 0.875 && ratio < 0.9, "anon {ratio}");
        let parity = anon["ratios"]["parity_flat_vs_linux"].as_f64().unwrap();
        assert!(parity > 72.0 / 64.0 && parity < 1.15, "anon parity {parity}");
    }

    #[test]
    fn svg_labels_every_row() {
        let dir = sample_dir().expect("bundled sample");
        let r = compute(&dir, &crate::sizes::descriptor_sizes()).unwrap();
        let p = std::env::temp_dir().join(format!("memdesc-estimate-rows-{}.svg", std::process::id()));
        write_svg(&r, &p).unwrap();
        let svg = std::fs::read_to_string(&p).unwrap();
        let _ = std::fs::remove_file(&p);
        for row in r.estimate.rows.iter().filter(|r| r.pages > 0 && r.kind != "memmap") {
            assert!(svg.contains(&format!("{} ({} pages)", row.kind, row.pages)), "row {} unlabelled", row.kind);
        }
        assert!(svg.contains("in use") && svg.contains("parity folio") && svg.contains("logarithmic"));
    }

    #[test]
    fn mixa_estimate_is_fast_enough_to_time() {
        // Not a timing assertion (debug build); checks the timed unit runs and reports time.
        let r = compute(&Path::new(DATA).join("snapshots/mixA"), &SIZES).unwrap();
        assert!(r.seconds > 0.0);
        assert_eq!(r.census.total, 6_553_599);
    }
}
