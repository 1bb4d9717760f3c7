//! Small no_std helpers: a fixed-capacity formatting buffer, a seeded generator, a barrier.

use core::fmt;
use core::sync::atomic::{AtomicU32, Ordering};

/// Text formatted into a fixed buffer (truncated when full).
#[derive(Clone, Copy)]
pub struct FmtBuf {
    buf: [u8; 104],
    len: usize,
}

impl FmtBuf {
    /// An empty buffer.
    pub const fn new() -> Self {
        FmtBuf { buf: [0; 104], len: 0 }
    }

    /// Formats `args` into a new buffer.
    pub fn from_args(args: fmt::Arguments<'_>) -> Self {
        let mut b = FmtBuf::new();
        let _ = fmt::write(&mut b, args);
        b
    }

    /// The text (valid UTF-8 up to a character boundary).
    pub fn as_str(&self) -> &str {
        match core::str::from_utf8(&self.buf[..self.len]) {
            Ok(s) => s,
            Err(e) => core::str::from_utf8(&self.buf[..e.valid_up_to()]).unwrap_or(""),
        }
    }
}

impl fmt::Write for FmtBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

impl fmt::Display for FmtBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for FmtBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// xorshift64* (seeded per CPU).
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed (never zero internally).
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next value.
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A sense-reversing spin barrier for `n` CPUs.
pub struct Barrier {
    count: AtomicU32,
    sense: AtomicU32,
}

impl Barrier {
    /// A barrier (the number of CPUs is given at each wait).
    pub const fn new() -> Self {
        Barrier { count: AtomicU32::new(0), sense: AtomicU32::new(0) }
    }

    /// Waits until `n` CPUs have arrived; returns true on exactly one of them (the last).
    pub fn wait(&self, n: u32) -> bool {
        let s = self.sense.load(Ordering::Acquire);
        if self.count.fetch_add(1, Ordering::AcqRel) + 1 == n {
            self.count.store(0, Ordering::Relaxed);
            self.sense.store(s.wrapping_add(1), Ordering::Release);
            return true;
        }
        while self.sense.load(Ordering::Acquire) == s {
            core::hint::spin_loop();
        }
        false
    }
}
