//! Times the trace parser (events/s, decompression included, one thread) and the estimate of a
//! snapshot directory. Usage:
//! `cargo run --release -p memdesc-linux --example linux_speed -- [TRACE.zst] [SNAPSHOT_DIR]`
//! (defaults: the pagecache trace and the mixA snapshot of ../shared/data).

use std::path::PathBuf;
use std::time::Instant;

use memdesc_linux::{estimate_dir, DescriptorSizes, TraceReader};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data");

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let trace =
        args.next().map(PathBuf::from).unwrap_or_else(|| PathBuf::from(DATA).join("traces/pagecache/events.txt.zst"));
    let snap = args.next().map(PathBuf::from).unwrap_or_else(|| PathBuf::from(DATA).join("snapshots/mixA"));

    for round in 0..2 {
        // Decompression alone, for reference.
        let t = Instant::now();
        let mut d = zstd::stream::read::Decoder::new(std::fs::File::open(&trace)?)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0usize;
        loop {
            let k = std::io::Read::read(&mut d, &mut buf)?;
            if k == 0 {
                break;
            }
            n += k;
        }
        println!("decompress round {round}: {n} bytes in {:.3} s", t.elapsed().as_secs_f64());
    }
    for round in 0..3 {
        let t = Instant::now();
        let mut pfns = 0u64;
        let stats = TraceReader::open(&trace)?.for_each(|r| {
            if let memdesc_linux::Event::PageAlloc { pfn: Some(p), .. } = r.event {
                pfns ^= p;
            }
        })?;
        let s = t.elapsed().as_secs_f64();
        println!(
            "parse round {round}: {} events in {s:.3} s = {:.2} M events/s ({} lines, checksum {pfns:x})",
            stats.events,
            stats.events as f64 / s / 1e6,
            stats.lines
        );
    }
    // The timing does not depend on the sizes; the CLI passes the core crate's real ones.
    let sizes = DescriptorSizes { word: 8, ..DescriptorSizes::default() };
    for round in 0..3 {
        let t = Instant::now();
        let (_, c, e) = estimate_dir(&snap, &sizes)?;
        println!(
            "estimate round {round}: {} pfns in {:.3} s (flat {} B)",
            c.total,
            t.elapsed().as_secs_f64(),
            e.totals.flat_bytes
        );
    }
    Ok(())
}
