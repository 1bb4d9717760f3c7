//! Value parsers shared by the subcommands' arguments, so that every out-of-range number is
//! refused by clap with a message that says the allowed range (instead of a panic, or a run
//! with a meaningless value), and the error printing of `main`.

/// The longest `--seconds` a run accepts: one week.
pub const MAX_SECONDS: f64 = 7.0 * 24.0 * 3600.0;

/// A duration in seconds: finite, greater than 0 and at most [`MAX_SECONDS`].
pub fn seconds(s: &str) -> Result<f64, String> {
    let v: f64 = s.trim().parse().map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !v.is_finite() || v <= 0.0 || v > MAX_SECONDS {
        return Err(format!(
            "must be a number of seconds greater than 0 and at most {MAX_SECONDS} (one week), not {s}"
        ));
    }
    Ok(v)
}

/// A fraction: a finite number within 0..=1.
pub fn fraction(s: &str) -> Result<f64, String> {
    let v: f64 = s.trim().parse().map_err(|_| format!("`{s}` is not a number"))?;
    if !(0.0..=1.0).contains(&v) {
        return Err(format!("must be within 0..=1, not {s}"));
    }
    Ok(v)
}

/// A zstd compression level within the range the linked zstd library supports.
pub fn zstd_level(s: &str) -> Result<i32, String> {
    let range = zstd::compression_level_range();
    let v: i32 = s.trim().parse().map_err(|_| format!("`{s}` is not an integer"))?;
    if !range.contains(&v) {
        return Err(format!("zstd levels are {}..={}, not {s}", range.start(), range.end()));
    }
    Ok(v)
}

/// The text `main` prints for an error: its message, then each cause on its own line, leaving
/// out a cause whose text an outer message already contains (errors that include their
/// source's message in their own would otherwise print the same text twice).
pub fn error_text(e: &anyhow::Error) -> String {
    let mut shown: Vec<String> = Vec::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if s.is_empty() || shown.iter().any(|p| p.contains(&s)) {
            continue;
        }
        shown.push(s);
    }
    let mut out = format!("error: {}", shown.first().map_or("", String::as_str));
    for s in shown.iter().skip(1) {
        out.push_str("\n  caused by: ");
        out.push_str(s);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_must_be_finite_positive_and_sane() {
        assert_eq!(seconds("2.5"), Ok(2.5));
        for bad in ["inf", "-inf", "nan", "NaN", "-1", "0", "99999999999999999999", "1e300", "x"] {
            assert!(seconds(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn fractions_are_within_0_and_1() {
        assert_eq!(fraction("0.01"), Ok(0.01));
        assert_eq!(fraction("1"), Ok(1.0));
        for bad in ["-0.5", "1.01", "nan", "inf"] {
            let e = fraction(bad).unwrap_err();
            assert!(e.contains("0..=1") || e.contains("not a number"), "{bad}: {e}");
        }
    }

    #[test]
    fn zstd_levels_are_zstds() {
        assert_eq!(zstd_level("19"), Ok(19));
        assert!(zstd_level("99").unwrap_err().contains("zstd levels are"));
        assert!(zstd_level("twelve").is_err());
    }

    #[test]
    fn a_cause_repeated_in_its_context_is_printed_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory (os error 2)");
        let e = anyhow::Error::new(io).context("writing /x/y.svg: No such file or directory (os error 2)");
        let t = error_text(&e);
        assert_eq!(t.matches("No such file").count(), 1, "{t}");
        let e = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_text(&e), "error: outer\n  caused by: inner");
    }
}
