//! `memdesc capture` through the built binary against a FAKE tracefs and /proc (directories of
//! plain files, `--tracefs` and `--proc`), so the whole capture state machine runs without
//! root or a kernel: interrupted by SIGINT or SIGTERM while recording, failing, or finishing,
//! every tracefs file ends byte for byte as it was, and a failed capture leaves no output.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const SAMPLE_END: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../samples/small/end");

struct Fake {
    root: PathBuf,
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn put(p: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
}

impl Fake {
    /// A tracefs in a state a capture must not lose: tracing on, another tracer, a custom
    /// buffer size, unrelated events enabled (so `events/enable` reads `X`), soft-disabled
    /// and enabled memory events.
    fn new(name: &str) -> Self {
        let root = std::env::temp_dir().join(format!("memdesc-capture-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let t = root.join("tracing");
        put(&t.join("tracing_on"), b"1\n");
        put(&t.join("current_tracer"), b"function\n");
        put(&t.join("buffer_size_kb"), b"1408\n");
        put(&t.join("trace"), b"");
        put(&t.join("trace_pipe"), b"");
        for cpu in 0..2 {
            put(&t.join(format!("per_cpu/cpu{cpu}/buffer_size_kb")), b"1408\n");
            put(&t.join(format!("per_cpu/cpu{cpu}/stats")), b"entries: 0\noverrun: 0\ndropped events: 0\n");
        }
        put(&t.join("events/enable"), b"X\n");
        put(&t.join("events/kmem/enable"), b"X\n");
        for (e, v) in [
            ("mm_page_alloc", &b"0\n"[..]),
            ("mm_page_free", b"1\n"),
            ("kmalloc", b"0*\n"),
            ("kfree", b"0\n"),
            ("rss_stat", b"1\n"),
        ] {
            put(&t.join(format!("events/kmem/{e}/enable")), v);
        }
        put(&t.join("events/sched/enable"), b"X\n");
        put(&t.join("events/sched/sched_switch/enable"), b"1\n");
        put(&t.join("events/sched/sched_wakeup/enable"), b"0\n");
        let p = root.join("proc");
        let flags: Vec<u8> =
            (0u64..4096).flat_map(|i| (if i % 3 == 0 { 1u64 << 10 } else { 1 << 5 }).to_le_bytes()).collect();
        put(&p.join("kpageflags"), &flags);
        put(&p.join("kpagecount"), &vec![0u8; 4096 * 8]);
        for t in ["meminfo", "buddyinfo", "zoneinfo", "vmstat"] {
            put(&p.join(t), &std::fs::read(Path::new(SAMPLE_END).join(t)).unwrap());
        }
        put(&p.join("sys/kernel/osrelease"), b"6.1.0-fake\n");
        put(&p.join("sys/vm/drop_caches"), b"0\n");
        Fake { root }
    }

    fn tracefs(&self) -> PathBuf {
        self.root.join("tracing")
    }

    fn out(&self) -> PathBuf {
        self.root.join("out")
    }

    /// Every file under the fake tracefs and its bytes.
    fn state(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        fn walk(d: &Path, m: &mut BTreeMap<PathBuf, Vec<u8>>) {
            for e in std::fs::read_dir(d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(&p, m);
                } else {
                    m.insert(p.clone(), std::fs::read(&p).unwrap());
                }
            }
        }
        let mut m = BTreeMap::new();
        walk(&self.tracefs(), &mut m);
        m
    }

    fn spawn(&self, extra: &[&str], workload: &[&str]) -> Child {
        let (t, p, o) = (self.tracefs(), self.root.join("proc"), self.out());
        let mut a: Vec<&str> = vec!["capture", o.to_str().unwrap(), "--tracefs", t.to_str().unwrap()];
        a.extend(["--proc", p.to_str().unwrap(), "--no-drop-caches", "--level", "3"]);
        a.extend_from_slice(extra);
        a.push("--");
        a.extend_from_slice(workload);
        Command::new(env!("CARGO_BIN_EXE_memdesc"))
            .args(&a)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run memdesc capture")
    }
}

fn assert_same(before: &BTreeMap<PathBuf, Vec<u8>>, after: &BTreeMap<PathBuf, Vec<u8>>) {
    assert_eq!(before.keys().collect::<Vec<_>>(), after.keys().collect::<Vec<_>>(), "the same files");
    for (p, b) in before {
        assert_eq!(
            String::from_utf8_lossy(&after[p]),
            String::from_utf8_lossy(b),
            "{} not restored byte for byte",
            p.display()
        );
    }
}

fn wait_timeout(mut c: Child, secs: u64) -> Output {
    let t0 = Instant::now();
    while c.try_wait().unwrap().is_none() {
        if t0.elapsed() > Duration::from_secs(secs) {
            let _ = c.kill();
            panic!("memdesc capture did not exit within {secs} s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    c.wait_with_output().unwrap()
}

/// Interrupts a capture with `sig` once it is recording; checks the restoration and cleanup.
fn interrupted_by(sig: i32, name: &str) {
    let f = Fake::new(name);
    let before = f.state();
    let pidfile = f.root.join("workload.pid");
    let script = format!("echo $$ > {}; exec sleep 120", pidfile.display());
    let child = f.spawn(&[], &["sh", "-c", &script]);
    // Recording: the capture switched tracing on (writing "1" over its own "0").
    let t0 = Instant::now();
    while std::fs::read(f.tracefs().join("tracing_on")).unwrap() != b"1" || !pidfile.exists() {
        assert!(t0.elapsed() < Duration::from_secs(60), "capture never started recording");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(std::fs::read(f.tracefs().join("events/kmem/mm_page_alloc/enable")).unwrap(), b"1");
    assert_eq!(std::fs::read(f.tracefs().join("buffer_size_kb")).unwrap(), b"131072");
    assert!(f.out().join("start/kpageflags.zst").exists());
    let pid = child.id() as libc::pid_t;
    // SAFETY: kill has no memory-safety preconditions; `pid` is our unreaped child.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
    let o = wait_timeout(child, 30);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "an interrupted capture fails");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("interrupted while recording"), "{err}");
    assert!(err.contains("restored as it was found"), "{err}");
    assert_same(&before, &f.state());
    assert!(!f.out().exists(), "the partial output (start/, events.txt.zst.part) is removed");
    // The workload was ended, not left running.
    let wpid = std::fs::read_to_string(&pidfile).unwrap();
    assert!(!Path::new(&format!("/proc/{}", wpid.trim())).exists(), "workload {wpid} still running");
}

#[test]
fn sigint_while_recording_restores_tracefs_and_removes_the_output() {
    interrupted_by(libc::SIGINT, "sigint");
}

#[test]
fn sigterm_while_recording_restores_tracefs_and_removes_the_output() {
    interrupted_by(libc::SIGTERM, "sigterm");
}

#[test]
fn a_failing_capture_restores_tracefs_and_removes_the_output() {
    let f = Fake::new("fail");
    let before = f.state();
    let o = wait_timeout(f.spawn(&[], &["/nonexistent/workload"]), 60);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("cannot run the workload") && err.contains("restored as it was found"), "{err}");
    assert_same(&before, &f.state());
    assert!(!f.out().exists());
}

#[test]
fn a_finished_capture_restores_tracefs_and_refuses_to_overwrite() {
    let f = Fake::new("ok");
    let before = f.state();
    let o = wait_timeout(f.spawn(&[], &["true"]), 60);
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{err}");
    assert!(out.contains("captured 0 events") && err.contains("restored as it was found"), "{out}\n{err}");
    assert!(err.contains("compressing"), "the phases are reported: {err}");
    assert_same(&before, &f.state());
    for e in ["README", "ring-stats", "events.txt.zst", "start/kpageflags.zst", "end/kpagecount.zst"] {
        assert!(f.out().join(e).exists(), "{e}");
    }
    assert!(!f.out().join("events.txt.zst.part").exists());
    let readme = std::fs::read(f.out().join("README")).unwrap();
    // A second capture into the same directory is refused and changes nothing.
    let o = wait_timeout(f.spawn(&[], &["true"]), 60);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("not empty") && err.contains("--force"), "{err}");
    assert_eq!(std::fs::read(f.out().join("README")).unwrap(), readme);
    assert_same(&before, &f.state());
    // --force replaces it.
    let o = wait_timeout(f.spawn(&["--force"], &["true"]), 60);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(f.out().join("README").exists());
    assert_same(&before, &f.state());
}
