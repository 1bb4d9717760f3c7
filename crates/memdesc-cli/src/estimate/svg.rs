//! The `--svg` chart of an estimate: one horizontal bar per memmap layout for each kind.

use std::path::Path;

use super::compute::*;
use super::report::*;
use anyhow::Result;

/// The chart's colour of each layout.
pub(crate) const BAR_COLOURS: [(u8, u8, u8); 4] = [(200, 60, 50), (40, 110, 190), (120, 170, 90), (150, 110, 190)];

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
