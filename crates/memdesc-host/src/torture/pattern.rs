//! The pattern every allocating op writes and every free verifies: a window of a long
//! pseudo-random byte string chosen by a key, and the count of bytes that differ.

// Ownership rule the SAFETY comments below cite: see `worker.rs`.

pub(crate) const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Bytes of the pattern source; a key's pattern is a window of it.
pub(crate) const PAT_LEN: usize = 1 << 17;
/// Window offsets: a key picks one of this many; windows are at most `PAT_LEN - PAT_SPAN`.
pub(crate) const PAT_SPAN: usize = 1 << 16;
/// Longest window: longer memory is patterned in chunks, each with its own key.
pub(crate) const PAT_CHUNK: usize = PAT_LEN - PAT_SPAN;

/// The pattern source: 128 KiB of pseudo-random bytes, the same for every run. A key's pattern
/// is the window starting at `key % PAT_SPAN`, so filling and verifying are one `memcpy` and
/// one `memcmp` (fast in debug builds too, where a per-word loop is not); two keys share a
/// window with probability 2^-16 per page or object.
pub(crate) fn pattern_source() -> &'static [u8] {
    static P: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    P.get_or_init(|| (0..PAT_LEN / 8).flat_map(|i| mix(i as u64 ^ 0x7061_7474).to_le_bytes()).collect())
}

/// Zeroes to compare against.
pub(crate) static ZEROES: [u8; PAT_CHUNK] = [0; PAT_CHUNK];

/// The window of chunk `c` of `key`'s pattern, `len` bytes.
pub(crate) fn window(key: u64, c: usize, len: usize) -> &'static [u8] {
    let o = (mix(key ^ (c as u64).wrapping_mul(GAMMA)) % PAT_SPAN as u64) as usize;
    &pattern_source()[o..o + len]
}

/// Writes the pattern of `key` into `dst`.
pub(crate) fn fill(dst: &mut [u8], key: u64) {
    for (c, chunk) in dst.chunks_mut(PAT_CHUNK).enumerate() {
        chunk.copy_from_slice(window(key, c, chunk.len()));
    }
}

/// Bytes of `got` that do not hold the pattern of `key`.
pub(crate) fn verify(got: &[u8], key: u64) -> u64 {
    got.chunks(PAT_CHUNK).enumerate().map(|(c, chunk)| diff_bytes(chunk, window(key, c, chunk.len()))).sum()
}

/// Bytes of `got` that are not zero.
pub(crate) fn nonzero(got: &[u8]) -> u64 {
    got.chunks(PAT_CHUNK).map(|chunk| diff_bytes(chunk, &ZEROES[..chunk.len()])).sum()
}

/// Writes the pattern of `key` into `len` bytes at `p` (objects reached by pointer: kmalloc,
/// slab, vmalloc, zsmalloc, page_pool fragments).
///
/// # Safety
/// `p..p+len` is memory the caller owns.
pub(crate) unsafe fn fill_raw(p: *mut u8, len: usize, key: u64) {
    // SAFETY: the caller's memory, which nobody else touches meanwhile.
    fill(unsafe { std::slice::from_raw_parts_mut(p, len) }, key)
}

/// Bytes of `got` that differ from `want` (equal lengths).
pub(crate) fn diff_bytes(got: &[u8], want: &[u8]) -> u64 {
    if got == want {
        return 0;
    }
    got.iter().zip(want).filter(|(a, b)| a != b).count() as u64
}

/// Bytes of `len` at `p` that do not hold the pattern of `key`.
///
/// # Safety
/// As [`fill_raw`].
pub(crate) unsafe fn verify_raw(p: *const u8, len: usize, key: u64) -> u64 {
    // SAFETY: the caller's memory, which nobody writes meanwhile.
    verify(unsafe { std::slice::from_raw_parts(p, len) }, key)
}

/// Bytes of `len` at `p` that are not zero.
///
/// # Safety
/// As [`fill_raw`].
pub(crate) unsafe fn nonzero_raw(p: *const u8, len: usize) -> u64 {
    // SAFETY: as in `verify_raw`.
    nonzero(unsafe { std::slice::from_raw_parts(p, len) })
}
