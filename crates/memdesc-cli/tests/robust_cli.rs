//! Bad input through the built binary (issue 16, items 1 and 4–7): every case gets a clear
//! error from clap or the command, a non-zero exit where it failed, and never a panic.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../samples/small");

fn memdesc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_memdesc")).args(args).output().expect("run memdesc")
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

fn no_panic(o: &Output, what: &str) {
    let (out, err) = text(o);
    assert!(!err.contains("panicked") && !out.contains("panicked"), "{what} panicked:\n{err}");
}

/// A fresh directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("memdesc-robust-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Item 1: `--seconds` must be finite, positive and at most a week.
#[test]
fn torture_seconds_out_of_range_is_a_clap_error() {
    for bad in ["inf", "99999999999999999999", "-1", "nan", "0"] {
        let o = memdesc(&["torture", "--seconds", bad, "--ops", "1"]);
        no_panic(&o, bad);
        assert_eq!(o.status.code(), Some(2), "--seconds {bad}: {o:?}");
        let (_, err) = text(&o);
        assert!(err.contains("--seconds") && err.contains("greater than 0"), "--seconds {bad}: {err}");
    }
    let o = memdesc(&["torture", "--seconds=-1"]);
    assert_eq!(o.status.code(), Some(2));
}

/// Item 6: rates out of 0..=1 (negative ones included) say so.
#[test]
fn negative_rates_say_the_range() {
    for flag in ["--fail-rate", "--poison-rate"] {
        let o = memdesc(&["torture", flag, "-0.5", "--ops", "1"]);
        assert_eq!(o.status.code(), Some(2));
        let (_, err) = text(&o);
        assert!(err.contains("must be within 0..=1"), "{flag} -0.5: {err}");
        assert!(!err.contains("unexpected argument"), "{err}");
    }
}

/// Item 6: torture's help is true: by default it injects faults, at the CI run's rates.
#[test]
fn torture_injects_faults_by_default() {
    let o = memdesc(&["torture", "--ops", "3000", "--threads", "1", "--json"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["fail_rate"].as_f64(), Some(0.01), "{out}");
    assert_eq!(v["poison_rate"].as_f64(), Some(0.0001), "{out}");
    assert!(v["injected_failures"].as_u64().unwrap() > 0, "faults injected by default: {out}");
}

/// Item 6: `--only` takes spaces or commas in both bench and torture.
#[test]
fn only_takes_the_same_form_in_bench_and_torture() {
    for form in [&["--only", "page_alloc,page_free"][..], &["--only", "page_alloc", "page_free"][..]] {
        let mut a = vec!["torture", "--ops", "200", "--threads", "1", "--json"];
        a.extend_from_slice(form);
        let o = memdesc(&a);
        let (out, err) = text(&o);
        assert!(o.status.success(), "{a:?}: {err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let ran: Vec<&str> = v["per_op"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o["runs"].as_u64().unwrap() > 0)
            .map(|o| o["name"].as_str().unwrap())
            .collect();
        assert!(!ran.is_empty() && ran.iter().all(|n| ["page_alloc", "page_free"].contains(n)), "{a:?}: {ran:?}");
    }
    // bench: both forms parse (an unknown section is refused by name either way).
    for form in [&["--only", "memmap,nosuch"][..], &["--only", "memmap", "nosuch"][..]] {
        let mut a = vec!["bench", "--quick"];
        a.extend_from_slice(form);
        let o = memdesc(&a);
        assert_eq!(o.status.code(), Some(2));
        let (_, err) = text(&o);
        assert!(err.contains("invalid value 'nosuch'"), "{a:?}: {err}");
    }
}

/// Item 6: an error is printed once, not again under "Caused by:".
#[test]
fn errors_are_printed_once() {
    let o = memdesc(&["estimate", "--snapshot", "/nonexistent/snapshot"]);
    assert!(!o.status.success());
    let (_, err) = text(&o);
    assert!(err.starts_with("error: "), "{err}");
    assert!(!err.contains("Caused by"), "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}

/// Item 5: an unwritable --svg path names the path, the report is still printed, and the exit
/// status is non-zero.
#[test]
fn unwritable_svg_keeps_the_report() {
    let o = memdesc(&["replay", SAMPLE, "--json", "--svg", "/nonexistent/x.svg"]);
    let (out, err) = text(&o);
    no_panic(&o, "replay --svg");
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("/nonexistent/x.svg") && err.contains("No such file or directory"), "{err}");
    assert!(!err.contains("BackendError") && !err.contains("Os {"), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("the JSON report is printed");
    assert!(v["events"]["replayed"].as_u64().unwrap() > 0);

    let o = memdesc(&["estimate", "--snapshot", &format!("{SAMPLE}/end"), "--svg", "/nonexistent/y.svg"]);
    let (out, err) = text(&o);
    assert!(!o.status.success());
    assert!(err.contains("/nonexistent/y.svg") && !err.contains("BackendError"), "{err}");
    assert!(out.contains("Linux"), "the table is printed: {out}");
}

/// Item 4: random kpageflags of the right length are refused (or, with --force, estimated
/// with a warning).
#[test]
fn estimate_refuses_random_kpageflags() {
    let t = TempDir::new("random-kpf");
    let snap = t.0.join("snap");
    copy_dir(&Path::new(SAMPLE).join("end"), &snap);
    std::fs::remove_file(snap.join("kpageflags.zst")).unwrap();
    let pfns = 6_553_600usize; // the sample's length
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut flags = Vec::with_capacity(pfns * 8);
    for _ in 0..pfns {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        flags.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(snap.join("kpageflags"), &flags).unwrap();
    let dir = snap.to_str().unwrap();
    let o = memdesc(&["estimate", "--snapshot", dir]);
    let (out, err) = text(&o);
    no_panic(&o, "estimate");
    assert!(!o.status.success(), "random kpageflags accepted:\n{out}");
    assert!(err.contains("does not look like a Linux") && err.contains("HWPOISON") && err.contains("--force"), "{err}");
    assert!(out.is_empty(), "no estimate printed: {out}");
    let o = memdesc(&["estimate", "--snapshot", dir, "--force"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("warning:") && !out.is_empty(), "{err}");
}

fn trace_dir(t: &TempDir, events: &[u8], name: &str) -> PathBuf {
    let d = t.0.join("trace");
    let _ = std::fs::remove_dir_all(&d);
    copy_dir(&Path::new(SAMPLE).join("start"), &d.join("start"));
    copy_dir(&Path::new(SAMPLE).join("end"), &d.join("end"));
    std::fs::write(d.join(name), events).unwrap();
    d
}

/// Item 4: replay rejects an order above MAX_ORDER and a pfn beyond the machine, each with a
/// reason, and replays the rest.
#[test]
fn replay_rejects_impossible_page_events() {
    let t = TempDir::new("replay-bad");
    let events = b"a-1 [000] ..... 1.000000: mm_page_alloc: page=00000000deadbeef pfn=0x100000 order=0 migratetype=0 gfp_flags=GFP_KERNEL\n\
a-1 [000] ..... 1.000001: mm_page_alloc: page=00000000deadbeef pfn=0x100200 order=40 migratetype=0 gfp_flags=GFP_KERNEL\n\
a-1 [000] ..... 1.000002: mm_page_alloc: page=00000000deadbeef pfn=0xfffffffff0 order=0 migratetype=0 gfp_flags=GFP_KERNEL\n\
a-1 [000] ..... 1.000003: mm_page_free: page=00000000deadbeef pfn=0xfffffffff0 order=0\n";
    let d = trace_dir(&t, events, "events.txt");
    let o = memdesc(&["replay", d.to_str().unwrap(), "--json"]);
    let (out, err) = text(&o);
    no_panic(&o, "replay");
    assert!(o.status.success(), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let reasons = v["skipped"]["by_reason"].as_object().unwrap();
    let count = |needle: &str| -> u64 {
        reasons.iter().filter(|(k, _)| k.contains(needle)).map(|(_, n)| n.as_u64().unwrap()).sum()
    };
    assert_eq!(count("order above MAX_ORDER"), 1, "{reasons:?}");
    assert_eq!(count("pfn beyond the traced machine"), 2, "{reasons:?}");
    assert_eq!(v["events"]["replayed"].as_u64(), Some(1), "{}", v["events"]);
}

/// Item 4: random bytes named events.txt.zst are "not a zstd stream".
#[test]
fn replay_of_random_zst_says_not_zstd() {
    let t = TempDir::new("replay-notzstd");
    let junk: Vec<u8> = (0u32..65536).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
    let d = trace_dir(&t, &junk, "events.txt.zst");
    let o = memdesc(&["replay", d.to_str().unwrap()]);
    let (_, err) = text(&o);
    no_panic(&o, "replay");
    assert!(!o.status.success());
    assert!(err.contains("not a zstd stream") && err.contains("events.txt.zst"), "{err}");
}

/// Item 7: a copy of the binary elsewhere does not read the build tree's sample; it says how
/// to point it at data, and MEMDESC_DATA does; paths are printed normalised.
#[test]
fn data_lookup_is_documented_and_not_compiled_in() {
    let t = TempDir::new("copied-bin");
    let bin = t.0.join("memdesc");
    std::fs::copy(env!("CARGO_BIN_EXE_memdesc"), &bin).unwrap();
    let o = Command::new(&bin).arg("replay").current_dir(&t.0).env_remove("MEMDESC_DATA").output().unwrap();
    let (out, err) = text(&o);
    assert!(!o.status.success(), "the copied binary found a sample:\n{out}");
    assert!(err.contains("MEMDESC_DATA"), "{err}");
    // With the variable set to a directory holding samples/: found, printed without `..`.
    let repo = format!("{}/../..", env!("CARGO_MANIFEST_DIR"));
    let o =
        Command::new(&bin).args(["replay", "--json"]).current_dir(&t.0).env("MEMDESC_DATA", &repo).output().unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let src = v["source"].as_str().unwrap();
    assert!(src.ends_with("samples/small") && !src.contains(".."), "{src}");
    assert_eq!(Path::new(src), Path::new(SAMPLE).canonicalize().unwrap());
}

/// A reader that goes away (`memdesc estimate | head -1`) ends the command as it ends any Unix
/// tool (killed by SIGPIPE), not with a panic in `println!` (exit 101 and a backtrace before).
#[test]
fn a_closed_stdout_pipe_is_not_a_panic() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    let end = format!("{SAMPLE}/end");
    let mut child = Command::new(env!("CARGO_BIN_EXE_memdesc"))
        .args(["estimate", "--snapshot", &end])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run memdesc");
    // Close the read end before the command writes its report.
    drop(child.stdout.take());
    let o = child.wait_with_output().expect("wait");
    no_panic(&o, "estimate into a closed pipe");
    assert_eq!(o.status.signal(), Some(libc::SIGPIPE), "{o:?}");
}
