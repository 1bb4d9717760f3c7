//! The `--svg` chart of a replay: metadata bytes over the trace, Linux against memdesc.

use std::path::Path;

use anyhow::Result;

use super::driver::*;
use super::metadata::*;
use super::report::mib;

/// Writes the line chart of metadata over the replay: memdesc's metadata as a fraction of
/// Linux's (whose 64 B per page is constant, 1 on this scale) on the left axis, the same in
/// MiB on the right axis; the legend sits above the lines. A lower panel shows how each
/// memdesc line changed since the start of the trace, in KiB, where the upper one is too coarse.
pub fn write_svg(r: &Report, path: &Path) -> Result<()> {
    use plotters::prelude::*;
    let err = |e: &dyn std::fmt::Debug| anyhow::anyhow!("{e:?}");
    let xmax = r.samples.last().map_or(1, |s| s.events).max(1) as f64;
    let linux = r.samples.iter().map(|s| s.linux).max().unwrap_or(1).max(1);
    let ratio = |b: u64| b as f64 / linux as f64;
    type Pick = fn(&Sample) -> u64;
    let two = r.memmap == MemmapArg::TwoLevel;
    let own: &str = if two {
        "memdesc, two-level memmap, memdesc's own placement (words + descriptor slabs)"
    } else {
        "memdesc, flat memmap (words + descriptor slabs)"
    };
    // Drawn in this order, the wide line first so that lines on top of it stay visible.
    let lines: [(&str, Pick, RGBColor, u32); 3] = [
        ("memdesc, two-level memmap, traced (Linux) placement", |s| s.traced_two_level, RGBColor(240, 160, 60), 5),
        (own, |s| s.memdesc, RGBColor(40, 110, 190), 2),
        ("memdesc memmap words only", |s| s.words, RGBColor(80, 150, 60), 2),
    ];
    let top =
        r.samples.iter().flat_map(|s| lines.iter().map(move |l| ratio((l.1)(s)))).fold(0.0f64, f64::max).max(1e-3)
            * 1.6;
    let root = SVGBackend::new(path, (1000, 820)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (upper, lower) = root.split_vertically(540);
    let name = Path::new(&r.source).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut chart = ChartBuilder::on(&upper)
        .caption(
            format!(
                "replay of {name} ({} events, {} memmap): memdesc's page metadata vs Linux's {:.0} MiB",
                r.stats.events + r.stats.unknown,
                if two { "two-level" } else { "flat" },
                mib(linux)
            ),
            ("sans-serif", 19),
        )
        .margin(16)
        .x_label_area_size(42)
        .y_label_area_size(80)
        .right_y_label_area_size(70)
        .build_cartesian_2d(0f64..xmax, 0f64..top)
        .map_err(|e| err(&e))?
        .set_secondary_coord(0f64..xmax, 0f64..top * mib(linux));
    chart
        .configure_mesh()
        .x_desc("events replayed")
        .y_desc("fraction of Linux's memmap (Linux = 1, off scale)")
        .x_label_formatter(&|v| format!("{:.0}", v))
        .y_label_formatter(&|v| format!("{:.3}", v))
        .draw()
        .map_err(|e| err(&e))?;
    chart
        .configure_secondary_axes()
        .y_desc("MiB")
        .y_label_formatter(&|v| if top * mib(linux) >= 20.0 { format!("{:.0}", v) } else { format!("{:.1}", v) })
        .draw()
        .map_err(|e| err(&e))?;
    for (label, f, c, w) in lines {
        chart
            .draw_series(LineSeries::new(r.samples.iter().map(|s| (s.events as f64, ratio(f(s)))), c.stroke_width(w)))
            .map_err(|e| err(&e))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(w)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| err(&e))?;

    // Lower panel: change since the first sample, KiB.
    let kib = |s: &Sample, f: Pick| (f(s) as f64 - r.samples.first().map_or(0, f) as f64) / 1024.0;
    let (mut dlo, mut dhi) = (0.0f64, 0.0f64);
    for s in &r.samples {
        for l in &lines {
            let d = kib(s, l.1);
            dlo = dlo.min(d);
            dhi = dhi.max(d);
        }
    }
    let pad = ((dhi - dlo) * 0.15).max(1.0);
    let mut delta = ChartBuilder::on(&lower)
        .caption("change since the start of the trace", ("sans-serif", 16))
        .margin(16)
        .x_label_area_size(42)
        .y_label_area_size(80)
        .right_y_label_area_size(70)
        .build_cartesian_2d(0f64..xmax, (dlo - pad)..(dhi + pad))
        .map_err(|e| err(&e))?;
    delta
        .configure_mesh()
        .x_desc("events replayed")
        .y_desc("KiB")
        .x_label_formatter(&|v| format!("{:.0}", v))
        .y_label_formatter(&|v| format!("{:.0}", v))
        .draw()
        .map_err(|e| err(&e))?;
    for (_, f, c, w) in lines {
        delta
            .draw_series(LineSeries::new(r.samples.iter().map(|s| (s.events as f64, kib(s, f))), c.stroke_width(w)))
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
