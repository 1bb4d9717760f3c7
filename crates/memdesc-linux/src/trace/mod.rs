//! A streaming parser for ftrace **text** output (`trace_pipe` / `trace`) of the memory events
//! that `memdesc capture` records.
//!
//! A line looks like
//! ```text
//!             bash-3012    [001] .....   290.788702: mm_page_alloc: page=0000000087ba2855 pfn=0x129a8b order=0 migratetype=1 gfp_flags=GFP_HIGHUSER_MOVABLE|__GFP_COMP
//! ```
//! i.e. `COMM-PID [CPU] FLAGS TIMESTAMP: EVENT: FIELDS`. [`parse_line`] turns one line into a
//! [`Line`]: a typed [`Record`] (whose [`Event`] borrows its strings from the line: no
//! allocation per line), a header (`#` lines), a blank line, a `CPU:N [LOST M EVENTS]` marker,
//! or an event whose name this crate does not know — which is counted and skipped, not an
//! error. Anything else is a [`FieldError`](crate::FieldError) naming the field.
//!
//! [`TraceReader`] streams a file (raw or zstd, detected by its magic number) through a 1 MiB
//! buffer, finds lines with `memchr`, and hands out one [`Record`] at a time
//! ([`TraceReader::next_record`], a lending iterator), keeping [`TraceStats`]. Errors carry the
//! file name and line. A last line cut short (no newline, does not parse) is reported as
//! truncated.
//!
//! Field parsing is positional with a fallback: each key is expected where the kernel prints
//! it, and if it is not there it is searched for later in the line, so formats of older and
//! newer kernels (which add or drop fields) are read as long as the fields this crate needs
//! exist. Pointers printed by the kernel are hashed (`%p`); they are parsed as 64-bit numbers
//! and are only meaningful as identities within one boot.
//!
//! The parts, each in its own file:
//! * `event` — the typed events ([`Event`], [`Record`], [`Gfp`], [`PageCacheEvent`],
//!   [`LruFlags`]);
//! * `kind` — [`EventKind`], the table of known tracepoints;
//! * `cursor` — the field cursor the parsers are made of;
//! * `line` — one line taken apart ([`parse_line`], [`Line`]);
//! * `fields` — the fields of each known event;
//! * `reader` — the streaming [`TraceReader`] and its [`TraceStats`].
//!
//! Imports go one way: `reader` → `line` → `fields` → `cursor`, `event` → `kind`; this file
//! only re-exports.

mod cursor;
mod event;
mod fields;
mod kind;
mod line;
mod reader;

pub use event::{CallSite, Event, Gfp, LruFlags, PageCacheEvent, Record};
pub use kind::EventKind;
pub use line::{parse_line, Line};
pub use reader::{TraceReader, TraceStats, MAX_LINE};
