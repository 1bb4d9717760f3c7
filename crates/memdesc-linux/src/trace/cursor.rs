//! The field cursor: a position in one line's bytes, with the small parsers the field
//! parsing is made of — find a `key=` (where the kernel prints it, or later in the line),
//! read a hexadecimal, decimal or signed number that must end at a space, a comma or the end
//! of the line, read a word. Every failure is a [`FieldError`] naming the field.

use crate::error::FieldError;

/// A cursor over one line (or a part of one).
pub(super) struct Cur<'a> {
    /// The text.
    pub(super) s: &'a [u8],
    /// The position: the next byte to read.
    pub(super) p: usize,
}

/// Hex digit values (0xff: not a hex digit).
const HEX: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

impl<'a> Cur<'a> {
    #[inline]
    pub(super) fn new(s: &'a [u8]) -> Self {
        Cur { s, p: 0 }
    }

    #[inline]
    pub(super) fn skip_spaces(&mut self) {
        while self.p < self.s.len() && self.s[self.p] == b' ' {
            self.p += 1;
        }
    }

    /// Positions the cursor after `key`: right here (the usual case), or at its next
    /// occurrence that starts a word.
    #[inline]
    pub(super) fn find_key(&mut self, key: &[u8]) -> bool {
        self.skip_spaces();
        let rest = &self.s[self.p..];
        if rest.starts_with(key) {
            self.p += key.len();
            return true;
        }
        let mut from = 0;
        while let Some(i) = memchr::memmem::find(&rest[from..], key) {
            let at = from + i;
            if at == 0 || matches!(rest[at - 1], b' ' | b',') {
                self.p += at + key.len();
                return true;
            }
            from = at + 1;
        }
        false
    }

    #[inline]
    pub(super) fn key(&mut self, key: &[u8], field: &'static str) -> Result<(), FieldError> {
        if self.find_key(key) {
            Ok(())
        } else {
            Err(FieldError::new(field, "missing"))
        }
    }

    /// The value must end at a space, a comma or the end of the line.
    #[inline]
    pub(super) fn end_of_value(&self, field: &'static str) -> Result<(), FieldError> {
        match self.s.get(self.p) {
            None | Some(b' ') | Some(b',') => Ok(()),
            Some(_) => Err(FieldError::new(field, "unexpected character after the value")),
        }
    }

    #[inline]
    pub(super) fn hex(&mut self, field: &'static str) -> Result<u64, FieldError> {
        let rest = &self.s[self.p..];
        let skip = if rest.starts_with(b"0x") || rest.starts_with(b"0X") { 2 } else { 0 };
        let mut v: u64 = 0;
        let mut n = 0;
        for &b in &rest[skip..] {
            let d = HEX[b as usize];
            if d == 0xff {
                break;
            }
            if v >> 60 != 0 {
                return Err(FieldError::new(field, "hexadecimal number too large"));
            }
            v = (v << 4) | d as u64;
            n += 1;
        }
        if n == 0 {
            return Err(FieldError::new(field, "not a hexadecimal number"));
        }
        self.p += skip + n;
        self.end_of_value(field)?;
        Ok(v)
    }

    #[inline]
    pub(super) fn dec(&mut self, field: &'static str) -> Result<u64, FieldError> {
        let rest = &self.s[self.p..];
        let mut v: u64 = 0;
        let mut n = 0;
        for &b in rest {
            if !b.is_ascii_digit() {
                break;
            }
            v = v
                .checked_mul(10)
                .and_then(|v| v.checked_add((b - b'0') as u64))
                .ok_or(FieldError::new(field, "decimal number too large"))?;
            n += 1;
        }
        if n == 0 {
            return Err(FieldError::new(field, "not a decimal number"));
        }
        self.p += n;
        self.end_of_value(field)?;
        Ok(v)
    }

    #[inline]
    pub(super) fn dec32(&mut self, field: &'static str) -> Result<u32, FieldError> {
        u32::try_from(self.dec(field)?).map_err(|_| FieldError::new(field, "number too large"))
    }

    #[inline]
    pub(super) fn signed(&mut self, field: &'static str) -> Result<i32, FieldError> {
        let neg = self.s.get(self.p) == Some(&b'-');
        if neg {
            self.p += 1;
        }
        let v = self.dec(field)?;
        let v = i64::try_from(v).map_err(|_| FieldError::new(field, "number too large"))?;
        let v = if neg { -v } else { v };
        i32::try_from(v).map_err(|_| FieldError::new(field, "number out of range"))
    }

    /// A run of non-space bytes (may be empty).
    #[inline]
    pub(super) fn word(&mut self) -> &'a [u8] {
        let rest = &self.s[self.p..];
        let n = memchr::memchr(b' ', rest).unwrap_or(rest.len());
        self.p += n;
        &rest[..n]
    }

    #[inline]
    pub(super) fn str_word(&mut self, field: &'static str) -> Result<&'a str, FieldError> {
        let w = self.word();
        if w.is_empty() {
            return Err(FieldError::new(field, "empty"));
        }
        std::str::from_utf8(w).map_err(|_| FieldError::new(field, "invalid UTF-8"))
    }

    #[inline]
    pub(super) fn opt_key(&mut self, key: &[u8]) -> bool {
        let save = self.p;
        if self.find_key(key) {
            true
        } else {
            self.p = save;
            false
        }
    }
}
