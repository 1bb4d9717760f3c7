//! Errors of the readers and parsers.
//!
//! Every parse failure names the file, the (1-based) line and the field that was wrong, so a
//! malformed or truncated capture can be found and fixed by hand: `zoneinfo:14: field
//! `managed`: not a decimal number`. I/O failures keep the path and the operating system's
//! error; a permission failure on the live `/proc/kpageflags` is reported as
//! [`Error::PermissionDenied`] so that front ends can explain that root is needed.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// What went wrong inside one field, without the file and line (the hot-path error of the
/// parsers; the caller adds where it happened and turns it into a [`ParseError`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldError {
    /// The field's name as the format spells it (`pfn`, `order`, `managed`, ...).
    pub field: &'static str,
    /// Why it was rejected.
    pub reason: &'static str,
}

impl FieldError {
    /// A field error.
    pub const fn new(field: &'static str, reason: &'static str) -> Self {
        FieldError { field, reason }
    }

    /// Names the place where this field error happened.
    pub fn at(self, file: &str, line: u64) -> ParseError {
        ParseError { file: file.to_owned(), line, field: self.field.to_owned(), reason: self.reason.to_owned() }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "field `{}`: {}", self.field, self.reason)
    }
}

/// A malformed or truncated input: which file, which line, which field and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The file (or stream) name as the caller gave it.
    pub file: String,
    /// 1-based line number; 0 when the error is about the file as a whole (for example a
    /// kpageflags file whose length is not a multiple of 8 bytes).
    pub line: u64,
    /// The field that was missing or invalid.
    pub field: String,
    /// Why.
    pub reason: String,
}

impl ParseError {
    /// A parse error with owned strings.
    pub fn new(file: &str, line: u64, field: &str, reason: impl Into<String>) -> Self {
        ParseError { file: file.to_owned(), line, field: field.to_owned(), reason: reason.into() }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: field `{}`: {}", self.file, self.line, self.field, self.reason)
    }
}

impl std::error::Error for ParseError {}

/// Any error of this crate.
#[derive(Debug)]
pub enum Error {
    /// Reading or writing a file failed.
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// The operating system refused access (typically `/proc/kpageflags` without root).
    PermissionDenied {
        /// The file.
        path: PathBuf,
        /// What the user can do about it.
        hint: &'static str,
    },
    /// The input was malformed or truncated.
    Parse(ParseError),
    /// A precondition of an operation does not hold (for example tracefs is unavailable).
    Unsupported(String),
    /// The operation was stopped on request (a capture's stop flag, set by SIGINT/SIGTERM);
    /// what it changed was put back. The text says where it stopped.
    Interrupted(String),
}

impl Error {
    /// Wraps an I/O error on `path`, turning `EACCES`/`EPERM` into [`Error::PermissionDenied`].
    pub fn io(path: &Path, source: io::Error) -> Self {
        if source.kind() == io::ErrorKind::PermissionDenied {
            Error::PermissionDenied {
                path: path.to_owned(),
                hint: "reading it needs root (CAP_SYS_ADMIN); run as root or pass a snapshot directory",
            }
        } else {
            Error::Io { path: path.to_owned(), source }
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, source } => write!(f, "{}: {}", path.display(), source),
            Error::PermissionDenied { path, hint } => {
                write!(f, "{}: permission denied: {}", path.display(), hint)
            }
            Error::Parse(e) => e.fmt(f),
            Error::Unsupported(why) => f.write_str(why),
            Error::Interrupted(when) => write!(f, "interrupted {when}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Parse(e) => Some(e),
            _ => None,
        }
    }
}

impl From<ParseError> for Error {
    fn from(e: ParseError) -> Self {
        Error::Parse(e)
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
