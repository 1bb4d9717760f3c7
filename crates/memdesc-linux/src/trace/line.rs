//! One line of ftrace text: `COMM-PID [CPU] FLAGS TIMESTAMP: EVENT: FIELDS`, a `#` header,
//! a blank line, or a `CPU:N [LOST M EVENTS]` marker. [`parse_line`] says which ([`Line`]);
//! the reader uses the two halves separately — [`split_line`] finds the columns as byte
//! ranges (so that the reader's buffer stays mutable), [`finish_line`] parses the event's
//! fields (in [`super::fields`]) and borrows the strings.

use super::cursor::Cur;
use super::event::Record;
use super::fields::parse_fields;
use super::kind::EventKind;
use crate::error::FieldError;

/// What one line of trace text is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// A known event.
    Event(Record<'a>),
    /// A well-formed event line of a tracepoint this crate does not know (skipped).
    Unknown {
        /// The tracepoint's name.
        name: &'a [u8],
    },
    /// A `#` comment/header line (from `trace`, or `##### CPU N buffer started ####`).
    Header,
    /// An empty line.
    Blank,
    /// `CPU:N [LOST M EVENTS]`: the ring buffer overflowed.
    Lost {
        /// Events lost.
        events: u64,
    },
}

/// Parses the `sec.frac` (or plain integer) timestamp, including the trailing `:`.
fn timestamp(tok: &[u8]) -> Result<u64, FieldError> {
    const F: &str = "timestamp";
    let tok = tok.strip_suffix(b":").ok_or(FieldError::new(F, "missing `:` after the timestamp"))?;
    let (int, frac) = match memchr::memchr(b'.', tok) {
        Some(i) => (&tok[..i], Some(&tok[i + 1..])),
        None => (tok, None),
    };
    let mut c = Cur::new(int);
    let secs = c.dec(F)?;
    if c.p != int.len() {
        return Err(FieldError::new(F, "not a number"));
    }
    let Some(frac) = frac else {
        return Ok(secs);
    };
    if frac.is_empty() || frac.len() > 9 || !frac.iter().all(u8::is_ascii_digit) {
        return Err(FieldError::new(F, "bad fractional part"));
    }
    let mut f: u64 = 0;
    for &b in frac {
        f = f * 10 + (b - b'0') as u64;
    }
    for _ in frac.len()..9 {
        f *= 10;
    }
    secs.checked_mul(1_000_000_000).and_then(|s| s.checked_add(f)).ok_or(FieldError::new(F, "too large"))
}

/// Finds ` [CPU] ` and returns (index of `[`, cpu, index after `]`).
#[inline]
fn find_cpu(line: &[u8]) -> Option<(usize, u32, usize)> {
    for i in memchr::memchr_iter(b'[', line) {
        if i == 0 || line[i - 1] != b' ' {
            continue;
        }
        let mut j = i + 1;
        let mut cpu: u32 = 0;
        while j < line.len() && line[j].is_ascii_digit() && j - i <= 6 {
            cpu = cpu * 10 + (line[j] - b'0') as u32;
            j += 1;
        }
        if j > i + 1 && line.get(j) == Some(&b']') && j - i <= 7 {
            return Some((i, cpu, j + 1));
        }
    }
    None
}

#[inline]
fn trim_end_spaces(s: &[u8]) -> &[u8] {
    let mut e = s.len();
    while e > 0 && s[e - 1] == b' ' {
        e -= 1;
    }
    &s[..e]
}

/// Parses `CPU:N [LOST M EVENTS]`.
fn lost_line(line: &[u8]) -> Option<u64> {
    let rest = line.strip_prefix(b"CPU:")?;
    let i = memchr::memmem::find(rest, b"[LOST ")?;
    let mut c = Cur::new(&rest[i + 6..]);
    let n = c.dec("lost").ok()?;
    c.s[c.p..].starts_with(b" EVENTS]").then_some(n)
}

/// A line taken apart without borrowing it (byte ranges into the line), so that the reader
/// can skip lines and keep its buffer mutable.
#[derive(Clone, Copy, Debug)]
pub(super) enum Split {
    Blank,
    Header,
    Lost(u64),
    Event {
        comm: (usize, usize),
        pid: u32,
        cpu: u32,
        ts_ns: u64,
        name: (usize, usize),
        fields: (usize, usize),
        kind: Option<EventKind>,
    },
}

pub(super) fn split_line(line: &[u8]) -> Result<Split, FieldError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Some(first) = line.iter().position(|&b| b != b' ' && b != b'\t') else {
        return Ok(Split::Blank);
    };
    if line[first] == b'#' {
        return Ok(Split::Header);
    }
    if let Some(n) = lost_line(&line[first..]) {
        return Ok(Split::Lost(n));
    }

    // COMM-PID [CPU]
    let (lb, cpu, after_cpu) = find_cpu(line).ok_or(FieldError::new("cpu", "missing `[CPU]` column"))?;
    let mut left = trim_end_spaces(&line[..lb]);
    if left.last() == Some(&b')') {
        // `record-tgid` option: `comm-pid (tgid)`
        if let Some(o) = memchr::memrchr(b'(', left) {
            left = trim_end_spaces(&left[..o]);
        }
    }
    let dash = memchr::memrchr(b'-', left).ok_or(FieldError::new("pid", "missing `COMM-PID`"))?;
    let mut pc = Cur::new(&left[dash + 1..]);
    let pid = pc.dec32("pid")?;
    if pc.p != left.len() - dash - 1 {
        return Err(FieldError::new("pid", "not a number"));
    }
    let comm_start = left[..dash].iter().position(|&b| b != b' ').unwrap_or(dash);

    // [FLAGS] TIMESTAMP:
    let mut c = Cur::new(line);
    c.p = after_cpu;
    c.skip_spaces();
    let mut tok = c.word();
    if !tok.ends_with(b":") {
        // the irq/preempt flags column
        c.skip_spaces();
        tok = c.word();
    }
    let ts_ns = timestamp(tok)?;

    // EVENT:
    c.skip_spaces();
    let name_start = c.p;
    let colon = memchr::memchr(b':', &line[name_start..]).ok_or(FieldError::new("event", "missing `EVENT:`"))?;
    let name = &line[name_start..name_start + colon];
    let kind = EventKind::from_tracepoint(name);
    let valid = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.');
    if kind.is_none() && (name.is_empty() || !name.iter().all(valid)) {
        return Err(FieldError::new("event", "not an event name"));
    }
    let mut fields = name_start + colon + 1;
    if line.get(fields) == Some(&b' ') {
        fields += 1;
    }
    Ok(Split::Event {
        comm: (comm_start, dash),
        pid,
        cpu,
        ts_ns,
        name: (name_start, name_start + colon),
        fields: (fields, line.len()),
        kind,
    })
}

/// Turns a split line into a [`Line`].
pub(super) fn finish_line(line: &[u8], split: Split) -> Result<Line<'_>, FieldError> {
    Ok(match split {
        Split::Blank => Line::Blank,
        Split::Header => Line::Header,
        Split::Lost(events) => Line::Lost { events },
        Split::Event { comm, pid, cpu, ts_ns, name, fields, kind } => match kind {
            None => Line::Unknown { name: &line[name.0..name.1] },
            Some(kind) => Line::Event(Record {
                comm: &line[comm.0..comm.1],
                pid,
                cpu,
                ts_ns,
                event: parse_fields(kind, &line[fields.0..fields.1])?,
            }),
        },
    })
}

/// Parses one line (without its newline) of ftrace text output.
pub fn parse_line(line: &[u8]) -> Result<Line<'_>, FieldError> {
    finish_line(line, split_line(line)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{Event, PageCacheEvent};

    const ALLOC: &[u8] = b"            bash-3012    [001] .....   290.788702: mm_page_alloc: page=0000000087ba2855 pfn=0x129a8b order=0 migratetype=1 gfp_flags=GFP_HIGHUSER_MOVABLE|__GFP_COMP";

    fn event(line: &[u8]) -> Record<'_> {
        match parse_line(line).unwrap() {
            Line::Event(r) => r,
            other => panic!("not an event: {other:?}"),
        }
    }

    #[test]
    fn header_fields() {
        let r = event(ALLOC);
        assert_eq!(r.comm, b"bash");
        assert_eq!(r.pid, 3012);
        assert_eq!(r.cpu, 1);
        assert_eq!(r.ts_ns, 290_788_702_000);
        let Event::PageAlloc { pfn, order, migratetype, gfp } = r.event else { panic!("{:?}", r.event) };
        assert_eq!((pfn, order, migratetype), (Some(0x129a8b), 0, 1));
        assert!(gfp.contains("__GFP_COMP"));
        assert!(!gfp.contains("GFP_KERNEL"));
    }

    #[test]
    fn comm_with_spaces_and_dashes() {
        let r =
            event(b" kworker/u4:2-ev-1234    [000] d..2. 1.000000001: mm_page_free: page=00000000aa pfn=0x10 order=3");
        assert_eq!(r.comm, b"kworker/u4:2-ev");
        assert_eq!(r.pid, 1234);
        assert_eq!(r.ts_ns, 1_000_000_001);
        assert_eq!(r.event, Event::PageFree { pfn: 16, order: 3 });
        let r = event(b"Web Content-77 [003] ..... 5.5: kfree: call_site=x+0x1/0x2 ptr=0000000000000000");
        assert_eq!(r.comm, b"Web Content");
        assert_eq!(r.event, Event::Kfree { call_site: "x+0x1/0x2", ptr: 0 });
    }

    #[test]
    fn every_event_format_of_the_data() {
        let lines: &[&[u8]] = &[
            b"bash-1 [000] ..... 1.0: kmalloc: call_site=alloc_pipe_info+0x5d/0x230 ptr=00000000b130a373 bytes_req=176 bytes_alloc=192 gfp_flags=GFP_KERNEL_ACCOUNT|__GFP_ZERO node=-1 accounted=true",
            b"bash-1 [000] ..... 1.0: kmem_cache_alloc: call_site=alloc_inode+0xa3/0xd0 ptr=000000000362a5e5 name=inode_cache bytes_req=616 bytes_alloc=624 gfp_flags=GFP_KERNEL node=-1 accounted=true",
            b"bash-1 [000] ..... 1.0: kmem_cache_free: call_site=__fput+0x141/0x2a0 ptr=000000006329abc6 name=lsm_file_cache",
            b"date-1 [000] ..... 1.0: mm_filemap_add_to_page_cache: dev 0:3 ino fe00000 pfn=0x12cfab ofs=6636204032 order=0",
            b"k-1 [000] d..2. 1.0: mm_filemap_delete_from_page_cache: dev 259:1 ino 10 pfn=0x104dfd ofs=1075818496 order=2",
            b"date-1 [000] d..3. 1.0: mm_lru_insertion: folio=000000003cc1b4aa pfn=0x117a1a lru=3 flags= f   B",
            b"bash-1 [001] ..... 1.0: alloc_vmap_area: va_start: 18446683600620355584 size=20480 align=16384 vstart=0xffffc90000000000 vend=0xffffe8ffffffffff failed=0",
            b"kw-11 [000] ..... 1.0: free_vmap_area_noflush: va_start=0xffffc90003028000 nr_lazy=5260 nr_lazy_max=16384",
            b"irq-1 [000] ..s1. 1.0: page_pool_state_hold: page_pool=00000000deadbeef netmem=00000000cafe is_net_iov=0, pfn=0x1234 hold=7",
            b"irq-1 [000] ..s1. 1.0: page_pool_state_release: page_pool=00000000deadbeef netmem=00000000cafe is_net_iov=0 pfn=0x1234 release=7",
            b"kc-1 [000] ..... 1.0: mm_migrate_pages: nr_succeeded=10 nr_failed=1 nr_thp_succeeded=0 nr_thp_failed=0 nr_thp_split=0 nr_split=0 mode=MIGRATE_ASYNC reason=compaction",
            b"x-1 [000] ..... 1.0: mm_page_free_batched: page=00000000aa pfn=0x99 order=0",
        ];
        let kinds: Vec<EventKind> = lines.iter().map(|l| event(l).event.kind()).collect();
        assert_eq!(
            kinds,
            vec![
                EventKind::Kmalloc,
                EventKind::KmemCacheAlloc,
                EventKind::KmemCacheFree,
                EventKind::FilemapAdd,
                EventKind::FilemapDelete,
                EventKind::LruInsertion,
                EventKind::AllocVmapArea,
                EventKind::FreeVmapArea,
                EventKind::PagePoolHold,
                EventKind::PagePoolRelease,
                EventKind::MigratePages,
                EventKind::PageFreeBatched,
            ]
        );
        assert_eq!(
            event(lines[4]).event,
            Event::FilemapDelete(PageCacheEvent {
                dev_major: 259,
                dev_minor: 1,
                ino: 0x10,
                pfn: 0x104dfd,
                offset: 1075818496,
                order: 2
            })
        );
        let Event::LruInsertion { pfn, lru, flags } = event(lines[5]).event else { unreachable!() };
        assert_eq!((pfn, lru), (0x117a1a, 3));
        assert!(flags.buffers && !flags.anon && !flags.mapped);
        let Event::KmemCacheAlloc { name, bytes_alloc, node, .. } = event(lines[1]).event else { unreachable!() };
        assert_eq!((name, bytes_alloc, node), (Some("inode_cache"), 624, -1));
        let Event::AllocVmapArea { addr, size, failed, .. } = event(lines[6]).event else { unreachable!() };
        assert_eq!((addr, size, failed), (18446683600620355584, 20480, false));
        let Event::PagePoolHold { pfn, hold, .. } = event(lines[8]).event else { unreachable!() };
        assert_eq!((pfn, hold), (0x1234, 7));
    }

    #[test]
    fn failed_page_alloc_has_no_pfn() {
        let r = event(b"a-1 [000] ..... 1.0: mm_page_alloc: page=0000000000000000 pfn=0x0 order=9 migratetype=1 gfp_flags=GFP_TRANSHUGE");
        assert!(matches!(r.event, Event::PageAlloc { pfn: None, order: 9, .. }));
    }

    #[test]
    fn non_event_lines() {
        assert_eq!(parse_line(b"").unwrap(), Line::Blank);
        assert_eq!(parse_line(b"# tracer: nop").unwrap(), Line::Header);
        assert_eq!(parse_line(b"##### CPU 1 buffer started ####").unwrap(), Line::Header);
        assert_eq!(parse_line(b"CPU:1 [LOST 123 EVENTS]").unwrap(), Line::Lost { events: 123 });
        assert_eq!(
            parse_line(b"a-1 [000] ..... 1.0: sched_switch: prev_comm=a").unwrap(),
            Line::Unknown { name: b"sched_switch" }
        );
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse_line(b"a-1 [000] ..... 1.0: mm_page_free: page=0 pfn=0xzz order=0").unwrap_err();
        assert_eq!(e.field, "pfn");
        let e = parse_line(b"a-1 [000] ..... 1.0: mm_page_free: page=0 pfn=0x10").unwrap_err();
        assert_eq!((e.field, e.reason), ("order", "missing"));
        let e = parse_line(b"a-1 [000] ..... 1.x: mm_page_free: page=0 pfn=0x10 order=1").unwrap_err();
        assert_eq!(e.field, "timestamp");
        let e = parse_line(b"garbage").unwrap_err();
        assert_eq!(e.field, "cpu");
        let e = parse_line(b"a-b [000] ..... 1.0: kfree: call_site=x ptr=0").unwrap_err();
        assert_eq!(e.field, "pid");
        let e = parse_line(b"a-1 [000] ..... 1.0: mm_page_free: page=0 pfn=0x10 order=99999999999").unwrap_err();
        assert_eq!(e.field, "order");
    }
}
