//! [`TraceReader`]: streams a trace file (raw or zstd, told apart by its magic number)
//! through a 1 MiB buffer (a line may be at most [`MAX_LINE`] bytes), finds lines with
//! `memchr`, and hands out one [`Record`] at a time (a lending iterator), keeping
//! [`TraceStats`] so that every line is accounted for. Errors carry the file name and line;
//! a last line cut short is reported as truncated.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use serde::Serialize;

use super::event::Record;
use super::kind::EventKind;
use super::line::{finish_line, split_line, Line, Split};
use crate::error::{Error, FieldError, ParseError, Result};

/// Counts kept by a [`TraceReader`]: every line is accounted for exactly once as an event,
/// an unknown event, a header, a blank line or a lost-events marker.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TraceStats {
    /// Lines read.
    pub lines: u64,
    /// Known events parsed.
    pub events: u64,
    /// Known events per kind, indexed like [`EventKind::ALL`].
    pub by_kind: [u64; EventKind::COUNT],
    /// Event lines of tracepoints this crate does not know (skipped).
    pub unknown: u64,
    /// Those per tracepoint name.
    pub unknown_by_name: BTreeMap<String, u64>,
    /// `#` lines.
    pub headers: u64,
    /// Empty lines.
    pub blank: u64,
    /// `[LOST N EVENTS]` markers.
    pub lost_markers: u64,
    /// Sum of N over those markers.
    pub lost_events: u64,
}

impl TraceStats {
    /// Known events of `kind`.
    pub fn count(&self, kind: EventKind) -> u64 {
        self.by_kind[kind as usize]
    }

    fn note(&mut self, line: &Line<'_>) {
        match line {
            Line::Event(r) => {
                self.events += 1;
                self.by_kind[r.event.kind() as usize] += 1;
            }
            Line::Unknown { name } => {
                self.unknown += 1;
                if let Some(n) = self.unknown_by_name.get_mut(String::from_utf8_lossy(name).as_ref()) {
                    *n += 1;
                } else {
                    self.unknown_by_name.insert(String::from_utf8_lossy(name).into_owned(), 1);
                }
            }
            Line::Header => self.headers += 1,
            Line::Blank => self.blank += 1,
            Line::Lost { events } => {
                self.lost_markers += 1;
                self.lost_events = self.lost_events.saturating_add(*events);
            }
        }
    }
}

/// The longest line accepted.
pub const MAX_LINE: usize = 1 << 20;

/// zstd's frame magic number, little-endian on disk.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Streams records out of ftrace text.
pub struct TraceReader<R> {
    name: String,
    inner: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    line_no: u64,
    stats: TraceStats,
}

/// Reads the first bytes of `r` to tell zstd from plain text, and returns a reader of text.
fn sniff(mut r: Box<dyn Read>, path: &Path) -> Result<Box<dyn Read>> {
    let mut head = [0u8; 4];
    let mut n = 0;
    while n < 4 {
        match r.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(path, e)),
        }
    }
    let chained: Box<dyn Read> = Box::new(io::Cursor::new(head[..n].to_vec()).chain(r));
    let named_zst = path.extension().is_some_and(|e| e == "zst");
    if named_zst && (n < 4 || head != ZSTD_MAGIC) {
        // Reading it as text would report a missing column of line 1 instead.
        return Err(Error::io(
            path,
            io::Error::new(
                io::ErrorKind::InvalidData,
                "not a zstd stream: the name ends in .zst but the file does not start with zstd's magic number",
            ),
        ));
    }
    if n == 4 && head == ZSTD_MAGIC {
        let d = zstd::stream::read::Decoder::new(chained).map_err(|e| Error::io(path, e))?;
        Ok(Box::new(d))
    } else {
        Ok(chained)
    }
}

impl TraceReader<Box<dyn Read>> {
    /// Opens a trace file, raw text or zstd-compressed (recognised by its magic number). A file
    /// named `*.zst` that is not a zstd stream is an error ("not a zstd stream").
    pub fn open(path: &Path) -> Result<Self> {
        let f = File::open(path).map_err(|e| Error::io(path, e))?;
        let r = sniff(Box::new(f), path)?;
        Ok(TraceReader::new(path.display().to_string(), r))
    }
}

impl<R: Read> TraceReader<R> {
    /// A reader of text from `inner`; `name` is used in error messages.
    pub fn new(name: impl Into<String>, inner: R) -> Self {
        TraceReader {
            name: name.into(),
            inner,
            buf: vec![0; 1 << 20],
            start: 0,
            end: 0,
            eof: false,
            line_no: 0,
            stats: TraceStats::default(),
        }
    }

    /// The counts so far.
    pub fn stats(&self) -> &TraceStats {
        &self.stats
    }

    /// The number of the line last read (1-based).
    pub fn line_no(&self) -> u64 {
        self.line_no
    }

    /// Finds the next line; returns its byte range in `buf` and whether it was the final,
    /// newline-less line.
    fn next_line(&mut self) -> Result<Option<(usize, usize, bool)>> {
        loop {
            if let Some(i) = memchr::memchr(b'\n', &self.buf[self.start..self.end]) {
                let s = self.start;
                self.start += i + 1;
                return Ok(Some((s, s + i, false)));
            }
            if self.eof {
                if self.start < self.end {
                    let s = self.start;
                    self.start = self.end;
                    return Ok(Some((s, self.end, true)));
                }
                return Ok(None);
            }
            // Compact and refill.
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.end == self.buf.len() {
                if self.buf.len() >= MAX_LINE {
                    return Err(ParseError::new(
                        &self.name,
                        self.line_no + 1,
                        "line",
                        format!("longer than {MAX_LINE} bytes"),
                    )
                    .into());
                }
                let n = (self.buf.len() * 2).min(MAX_LINE);
                self.buf.resize(n, 0);
            }
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(ParseError::new(
                        &self.name,
                        self.line_no + 1,
                        "data",
                        format!("read failed (truncated or corrupt input?): {e}"),
                    )
                    .into())
                }
            }
        }
    }

    /// The next known event, skipping (and counting) headers, blank lines, lost-event markers
    /// and unknown events. `Ok(None)` at the end of the input.
    pub fn next_record(&mut self) -> Result<Option<Record<'_>>> {
        let (s, e, last, split) = loop {
            let Some((s, e, last)) = self.next_line()? else {
                return Ok(None);
            };
            self.line_no += 1;
            self.stats.lines += 1;
            let line = &self.buf[s..e];
            let split = split_line(line).map_err(|fe| self.located(fe, last))?;
            match split {
                Split::Event { kind: Some(_), .. } => break (s, e, last, split),
                _ => match finish_line(line, split) {
                    Ok(l) => self.stats.note(&l),
                    Err(fe) => return Err(self.located(fe, last)),
                },
            }
        };
        match finish_line(&self.buf[s..e], split) {
            Ok(l @ Line::Event(r)) => {
                self.stats.note(&l);
                Ok(Some(r))
            }
            Ok(_) => Ok(None), // unreachable: the split said it is a known event
            Err(fe) => Err(self.located(fe, last)),
        }
    }

    fn located(&self, fe: FieldError, last: bool) -> Error {
        let mut pe = fe.at(&self.name, self.line_no);
        if last {
            pe.reason = format!("{} (truncated last line)", pe.reason);
        }
        pe.into()
    }

    /// Reads to the end, calling `f` for every known event; returns the final counts.
    pub fn for_each(mut self, mut f: impl FnMut(&Record<'_>)) -> Result<TraceStats> {
        while let Some(r) = self.next_record()? {
            f(&r);
        }
        Ok(self.stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::Event;

    const ALLOC: &[u8] = b"            bash-3012    [001] .....   290.788702: mm_page_alloc: page=0000000087ba2855 pfn=0x129a8b order=0 migratetype=1 gfp_flags=GFP_HIGHUSER_MOVABLE|__GFP_COMP";

    #[test]
    fn reader_counts_every_line_and_reports_truncation() {
        let mut text = Vec::new();
        text.extend_from_slice(b"# header\n\n");
        for _ in 0..3 {
            text.extend_from_slice(ALLOC);
            text.push(b'\n');
        }
        text.extend_from_slice(b"CPU:0 [LOST 5 EVENTS]\n");
        text.extend_from_slice(b"a-1 [000] ..... 1.0: sched_switch: x=1\n");
        text.extend_from_slice(&ALLOC[..ALLOC.len() - 4]); // complete enough to parse
        let stats = TraceReader::new("t", &text[..]).for_each(|_| {}).unwrap();
        assert_eq!(stats.lines, 8);
        assert_eq!(stats.events, 4);
        assert_eq!(stats.count(EventKind::PageAlloc), 4);
        assert_eq!((stats.headers, stats.blank, stats.lost_events), (1, 1, 5));
        assert_eq!(stats.unknown_by_name.get("sched_switch"), Some(&1));
        assert_eq!(stats.lines, stats.events + stats.unknown + stats.headers + stats.blank + stats.lost_markers);

        let mut cut = text.clone();
        cut.extend_from_slice(
            b"\nbash-3012    [001] .....   290.788702: mm_page_alloc: page=0000000087ba2855 pfn=0x12",
        );
        let err = TraceReader::new("t.txt", &cut[..]).for_each(|_| {}).unwrap_err();
        let s = err.to_string();
        assert!(s.starts_with("t.txt:9: field `order`"), "{s}");
        assert!(s.contains("truncated"), "{s}");
    }

    #[test]
    fn a_zst_file_that_is_not_zstd_is_refused_as_such() {
        let dir = std::env::temp_dir().join(format!("memdesc-notzstd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("events.txt.zst");
        let random: Vec<u8> = (0u32..4096).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        std::fs::write(&p, &random).unwrap();
        let e = TraceReader::open(&p).err().expect("random bytes named .zst are refused");
        assert!(e.to_string().contains("not a zstd stream"), "{e}");
        std::fs::write(&p, b"").unwrap();
        assert!(TraceReader::open(&p).is_err(), "an empty .zst file is not a zstd stream");
        // The same bytes without the .zst name are read as text (and fail on a field).
        let t = dir.join("events.txt");
        std::fs::write(&t, &random).unwrap();
        assert!(TraceReader::open(&t).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn reader_handles_lines_across_buffer_refills_and_zstd() {
        let mut text = Vec::new();
        for i in 0..20_000u64 {
            text.extend_from_slice(
                format!("bash-1 [000] ..... 1.{i:06}: mm_page_free: page=00 pfn=0x{i:x} order=0\n").as_bytes(),
            );
        }
        let z = zstd::encode_all(&text[..], 1).unwrap();
        let dir = std::env::temp_dir().join(format!("memdesc-trace-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("events.txt.zst");
        std::fs::write(&p, &z).unwrap();
        let mut sum = 0u64;
        let stats = TraceReader::open(&p)
            .unwrap()
            .for_each(|r| {
                if let Event::PageFree { pfn, .. } = r.event {
                    sum += pfn
                }
            })
            .unwrap();
        assert_eq!(stats.events, 20_000);
        assert_eq!(sum, (0..20_000u64).sum::<u64>());
        // A truncated zstd stream is an error, not a silent short read.
        std::fs::write(&p, &z[..z.len() / 2]).unwrap();
        assert!(TraceReader::open(&p).unwrap().for_each(|_| {}).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
