//! Recording a trace on a real Linux machine: start snapshot, the ftrace text stream while a
//! workload runs, end snapshot — in the layout of `../shared/data/traces/*`.
//!
//! ```text
//! OUTDIR/README          workload, kernel, duration, event count
//! OUTDIR/ring-stats      per-CPU ring-buffer overruns and drops
//! OUTDIR/events.txt.zst  the trace_pipe text
//! OUTDIR/start/, end/    kpageflags.zst, kpagecount.zst, meminfo, buddyinfo, zoneinfo,
//!                        pagetypeinfo, slabinfo, vmstat, kernel, cpus
//! ```
//!
//! It needs root (kpageflags, tracefs) and tracefs; if tracefs is not mounted at the configured
//! place it tries to mount it there, and refuses with an [`Error::Unsupported`] that says why
//! when either is missing. The trace is read from `trace_pipe` in non-blocking mode by a
//! thread that compresses it on the fly (fast zstd level) while the workload runs, and is
//! recompressed at the configured level at the end, on every CPU ([`Observer`] gets the
//! progress of both).
//!
//! tracefs is system-wide state: the capture saves `tracing_on`, `current_tracer`,
//! `buffer_size_kb` and every event's `enable` before it changes anything, and a guard puts
//! them back exactly as found on every exit path — success, error, a stop request (the CLI's
//! SIGINT/SIGTERM handler sets it; the capture polls it and unwinds) and a panic. The old ring
//! buffer contents are cleared and cannot come back; `drop_caches` (on by default) empties the
//! page cache of the whole machine. The roots of tracefs and procfs are configurable
//! ([`CaptureConfig::tracefs`], [`CaptureConfig::proc`]), so the whole state machine runs in
//! tests against fake directories of plain files.

use std::ffi::{CString, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::error::{Error, Result};
use crate::trace::EventKind;

/// The events recorded by default: those of the shared data's traces.
pub const DEFAULT_EVENTS: [EventKind; 14] = [
    EventKind::PageAlloc,
    EventKind::PageFree,
    EventKind::Kmalloc,
    EventKind::Kfree,
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
];

/// The `/proc` tables copied into each snapshot.
pub const PROC_TABLES: [&str; 6] = ["meminfo", "buddyinfo", "zoneinfo", "pagetypeinfo", "slabinfo", "vmstat"];

/// The default zstd level of the recorded files (see [`CaptureConfig::level`]).
pub const DEFAULT_LEVEL: i32 = 9;

/// What to capture and how.
#[derive(Clone, Debug)]
pub struct CaptureConfig {
    /// Output directory (created).
    pub out_dir: PathBuf,
    /// The workload: program and arguments.
    pub command: Vec<OsString>,
    /// Where tracefs is (or is to be mounted).
    pub tracefs: PathBuf,
    /// Where procfs is.
    pub proc: PathBuf,
    /// Per-CPU ring buffer size during the capture, KiB.
    pub buffer_size_kb: u64,
    /// `sync` and drop the page cache before the start snapshot (as the shared traces did).
    pub drop_caches: bool,
    /// zstd level of the final files (9 by default: about 30 % larger than level 19, which
    /// the shared data used, and a hundred times faster).
    pub level: i32,
    /// Events to enable.
    pub events: Vec<EventKind>,
    /// Replace a capture in an existing non-empty output directory (refused otherwise).
    pub force: bool,
}

impl CaptureConfig {
    /// The defaults of the shared data's captures for `out_dir` and `command`.
    pub fn new(out_dir: impl Into<PathBuf>, command: Vec<OsString>) -> Self {
        CaptureConfig {
            out_dir: out_dir.into(),
            command,
            tracefs: PathBuf::from("/sys/kernel/tracing"),
            proc: PathBuf::from("/proc"),
            buffer_size_kb: 131072,
            drop_caches: true,
            level: DEFAULT_LEVEL,
            events: DEFAULT_EVENTS.to_vec(),
            force: false,
        }
    }
}

/// What a capture recorded.
#[derive(Clone, Debug, PartialEq)]
pub struct CaptureSummary {
    /// Wall-clock seconds the workload ran.
    pub seconds: f64,
    /// Lines of trace text recorded.
    pub events: u64,
    /// The workload's exit code (`None` if killed by a signal).
    pub exit_code: Option<i32>,
    /// Events that this kernel does not have (not recorded).
    pub missing_events: Vec<EventKind>,
    /// The ring-stats lines.
    pub ring_stats: Vec<String>,
    /// Bytes written under the output directory.
    pub bytes: u64,
}

fn write_file(path: &Path, what: &str) -> Result<()> {
    let mut f = OpenOptions::new().write(true).truncate(true).open(path).map_err(|e| Error::io(path, e))?;
    f.write_all(what.as_bytes()).map_err(|e| Error::io(path, e))
}

fn read_trim(path: &Path) -> Result<String> {
    fs::read_to_string(path).map(|s| s.trim().to_owned()).map_err(|e| Error::io(path, e))
}

/// Fails unless the process is root. (A capture checks what it needs instead:
/// [`require_access`].)
pub fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Err(Error::Unsupported(format!(
            "capture needs root (effective uid is {euid}): it reads /proc/kpageflags and \
             controls tracefs; run it with sudo"
        )));
    }
    Ok(())
}

/// Makes sure tracefs is mounted at `tracefs`, mounting it if needed; returns whether it
/// mounted it (a capture unmounts it again at the end).
pub fn ensure_tracefs(tracefs: &Path) -> Result<bool> {
    if tracefs.join("events").is_dir() && tracefs.join("trace_pipe").exists() {
        return Ok(false);
    }
    if !tracefs.is_dir() {
        return Err(Error::Unsupported(format!(
            "tracefs is not available: {} does not exist (kernel without CONFIG_TRACING?)",
            tracefs.display()
        )));
    }
    let target = CString::new(tracefs.as_os_str().as_bytes())
        .map_err(|_| Error::Unsupported("tracefs path contains a NUL byte".into()))?;
    // SAFETY: all pointers are valid NUL-terminated strings that outlive the call; tracefs
    // takes no mount data, so a null data pointer is allowed.
    let rc = unsafe { libc::mount(c"nodev".as_ptr(), target.as_ptr(), c"tracefs".as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(Error::Unsupported(format!(
            "tracefs is not mounted at {} and mounting it failed: {e}",
            tracefs.display()
        )));
    }
    if !tracefs.join("events").is_dir() {
        return Err(Error::Unsupported(format!(
            "mounted tracefs at {} but it has no events/ directory",
            tracefs.display()
        )));
    }
    Ok(true)
}

/// Streams `src` into `dst` compressed at `level`, on as many threads as the machine has.
fn compress_into(src: &mut dyn Read, dst: &Path, level: i32) -> Result<u64> {
    let f = File::create(dst).map_err(|e| Error::io(dst, e))?;
    let mut enc = zstd::stream::write::Encoder::new(io::BufWriter::new(f), level).map_err(|e| Error::io(dst, e))?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    if threads > 1 {
        // Multithreaded zstd produces the same format; if the library lacks it, one thread.
        let _ = enc.multithread(threads);
    }
    let n = io::copy(src, &mut enc).map_err(|e| Error::io(dst, e))?;
    enc.finish().and_then(|mut w| w.flush()).map_err(|e| Error::io(dst, e))?;
    Ok(n)
}

/// Writes one snapshot of `proc` into `dir` (created): the kpage pair zstd-compressed, the
/// text tables as they are (those that cannot be read are left out), `kernel` and `cpus`.
pub fn write_snapshot(proc: &Path, dir: &Path, level: i32) -> Result<()> {
    write_snapshot_watched(proc, dir, level, &AtomicBool::new(false))
}

/// [`write_snapshot`] that fails as soon as `stop` is set.
fn write_snapshot_watched(proc: &Path, dir: &Path, level: i32, stop: &AtomicBool) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    for t in PROC_TABLES {
        if let Ok(bytes) = fs::read(proc.join(t)) {
            let p = dir.join(t);
            fs::write(&p, bytes).map_err(|e| Error::io(&p, e))?;
        }
    }
    for k in ["kpageflags", "kpagecount"] {
        let src = proc.join(k);
        let f = io::BufReader::with_capacity(1 << 20, File::open(&src).map_err(|e| Error::io(&src, e))?);
        let mut w = Watched { inner: f, done: 0, stop, tick: &|_| {} };
        compress_into(&mut w, &dir.join(format!("{k}.zst")), level)?;
    }
    let kernel = read_trim(&proc.join("sys/kernel/osrelease")).unwrap_or_default();
    let p = dir.join("kernel");
    fs::write(&p, format!("{kernel}\n")).map_err(|e| Error::io(&p, e))?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let p = dir.join("cpus");
    fs::write(&p, format!("{cpus}\n")).map_err(|e| Error::io(&p, e))?;
    Ok(())
}

/// What a capture reports while it runs (progress and the restoration of tracefs). Every
/// method has an empty default.
pub trait Observer {
    /// A new phase starts (`"start snapshot"`, `"recording"`, `"end snapshot"`,
    /// `"compressing"`).
    fn phase(&self, _what: &str) {}
    /// While recording, about ten times a second: trace lines and bytes so far, and the time
    /// since the workload started.
    fn recording(&self, _lines: u64, _bytes: u64, _elapsed: Duration) {}
    /// While compressing the trace at the final level: uncompressed bytes done of `total`.
    fn compressing(&self, _done: u64, _total: u64) {}
    /// tracefs was put back (on every exit path, including errors and interruptions).
    fn restored(&self, _report: &Restored) {}
}

/// An [`Observer`] that reports nothing.
pub struct Quiet;

impl Observer for Quiet {}

/// What putting tracefs back did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Restored {
    /// The tracefs directory.
    pub root: PathBuf,
    /// Files written back to their saved contents (the others were unchanged).
    pub rewritten: Vec<PathBuf>,
    /// Files that could not be put back exactly, and what they hold instead.
    pub inexact: Vec<String>,
    /// tracefs was mounted by the capture and unmounted again.
    pub unmounted: bool,
}

/// One tracefs file as it was before the capture touched it.
struct Saved {
    path: PathBuf,
    bytes: Vec<u8>,
}

/// The tracefs state a capture changes, saved before the first change and put back when this
/// guard is dropped: on success, on error, on interruption and on a panic (unwinding).
///
/// Saved: `tracing_on`, `current_tracer`, `buffer_size_kb` (per CPU when they differ), and the
/// `enable` file of every event, every subsystem and `events/` itself (the capture writes
/// `events/enable`, which touches every event). The ring buffer's old contents are cleared by
/// the capture and cannot be put back; `drop_caches` is not tracefs state.
struct TracefsGuard<'a> {
    root: PathBuf,
    saved: Vec<Saved>,
    mounted: bool,
    observer: &'a dyn Observer,
}

fn read_raw(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|e| Error::io(path, e))
}

fn write_raw(path: &Path, what: &[u8]) -> io::Result<()> {
    let mut f = OpenOptions::new().write(true).truncate(true).open(path)?;
    f.write_all(what)
}

/// The value to write when a saved file's contents are not accepted back verbatim:
/// `7 (expanded: 1408)` (a ring buffer not yet allocated) → `1408`, the size the kernel would
/// allocate at first use; `0*`/`1*` (soft-disabled events) → `0`/`1`.
fn fallback_value(saved: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(saved);
    let t = text.trim();
    if let Some(rest) = t.split_once("(expanded:").map(|(_, r)| r) {
        let n = rest.trim().trim_end_matches(')').trim();
        return n.chars().all(|c| c.is_ascii_digit()).then(|| n.to_owned());
    }
    let first = t.trim_end_matches('*');
    (!first.is_empty() && first != t).then(|| first.to_owned())
}

impl<'a> TracefsGuard<'a> {
    /// Saves everything the capture will change under `root`.
    fn save(root: &Path, mounted: bool, observer: &'a dyn Observer) -> Result<Self> {
        let mut g = TracefsGuard { root: root.to_owned(), saved: Vec::new(), mounted, observer };
        for name in ["tracing_on", "current_tracer"] {
            g.save_file(&root.join(name))?;
        }
        // Per-CPU sizes before the top one (which reads `X` when they differ), so that
        // differing ones come back as they were.
        if let Ok(rd) = fs::read_dir(root.join("per_cpu")) {
            let mut cpus: Vec<_> = rd.flatten().map(|e| e.path().join("buffer_size_kb")).collect();
            cpus.sort();
            for p in cpus.into_iter().filter(|p| p.is_file()) {
                g.save_file(&p)?;
            }
        }
        g.save_file(&root.join("buffer_size_kb"))?;
        // Every event's enable, then each subsystem's, then the top one: restored in this
        // order, the aggregate files (derived in the kernel) come last.
        let events = root.join("events");
        let mut subsystems: Vec<PathBuf> = match fs::read_dir(&events) {
            Ok(rd) => rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect(),
            Err(e) => return Err(Error::io(&events, e)),
        };
        subsystems.sort();
        for sub in &subsystems {
            let mut evs: Vec<PathBuf> = fs::read_dir(sub)
                .map_err(|e| Error::io(sub, e))?
                .flatten()
                .map(|e| e.path().join("enable"))
                .filter(|p| p.is_file())
                .collect();
            evs.sort();
            for p in evs {
                g.save_file(&p)?;
            }
        }
        for sub in &subsystems {
            let p = sub.join("enable");
            if p.is_file() {
                g.save_file(&p)?;
            }
        }
        g.save_file(&events.join("enable"))?;
        Ok(g)
    }

    fn save_file(&mut self, path: &Path) -> Result<()> {
        if path.exists() {
            self.saved.push(Saved { path: path.to_owned(), bytes: read_raw(path)? });
        }
        Ok(())
    }

    /// Puts every saved file back (those whose contents changed), `tracing_on` last, and
    /// unmounts tracefs if the capture mounted it.
    fn restore(&mut self) -> Restored {
        let mut report = Restored { root: self.root.clone(), ..Restored::default() };
        // Stop tracing first so that nothing is recorded while the rest is put back.
        let on = self.root.join("tracing_on");
        let _ = write_raw(&on, b"0");
        let (last, rest): (Vec<&Saved>, Vec<&Saved>) = self.saved.iter().partition(|s| s.path == on);
        for s in rest.into_iter().chain(last) {
            if fs::read(&s.path).is_ok_and(|now| now == s.bytes) {
                continue;
            }
            if write_raw(&s.path, &s.bytes).is_ok() && fs::read(&s.path).is_ok_and(|now| now == s.bytes) {
                report.rewritten.push(s.path.clone());
                continue;
            }
            // The kernel prints some values in a form it does not accept back.
            let fell_back = fallback_value(&s.bytes).is_some_and(|v| write_raw(&s.path, v.as_bytes()).is_ok());
            let now = fs::read(&s.path).map(|b| String::from_utf8_lossy(&b).trim().to_owned()).unwrap_or_default();
            let was = String::from_utf8_lossy(&s.bytes).trim().to_owned();
            let derived = s.path.ends_with("events/enable")
                || s.path.parent().is_some_and(|p| p.parent() == Some(&*self.root.join("events")));
            if fell_back {
                report.rewritten.push(s.path.clone());
            }
            // An aggregate enable file the kernel computes from its events (`X`: mixed)
            // follows them once they are restored.
            if now != was && !(derived && was == "X") {
                report.inexact.push(format!("{}: was {was:?}, now {now:?}", s.path.display()));
            }
        }
        if self.mounted {
            if let Ok(target) = CString::new(self.root.as_os_str().as_bytes()) {
                // SAFETY: `target` is a valid NUL-terminated path that outlives the call.
                report.unmounted = unsafe { libc::umount(target.as_ptr()) } == 0;
            }
        }
        report
    }
}

impl Drop for TracefsGuard<'_> {
    fn drop(&mut self) {
        let report = self.restore();
        self.observer.restored(&report);
    }
}

/// The output directory while a capture runs: on failure, what the capture wrote is removed
/// (and the directory itself when the capture created it), so a failed or interrupted capture
/// leaves neither a `start/` nor a `*.part` behind.
struct OutputGuard {
    dir: PathBuf,
    created: bool,
    done: bool,
}

/// The entries a capture writes into its output directory.
const OUTPUT_ENTRIES: [&str; 6] = ["start", "end", "events.txt.zst.part", "events.txt.zst", "ring-stats", "README"];

impl OutputGuard {
    fn prepare(dir: &Path, force: bool) -> Result<Self> {
        let non_empty = match fs::read_dir(dir) {
            Ok(mut rd) => rd.next().is_some(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
                return Ok(OutputGuard { dir: dir.to_owned(), created: true, done: false });
            }
            Err(e) => return Err(Error::io(dir, e)),
        };
        if non_empty && !force {
            return Err(Error::Unsupported(format!(
                "{} exists and is not empty: give a new directory, or --force to replace a capture there",
                dir.display()
            )));
        }
        let g = OutputGuard { dir: dir.to_owned(), created: false, done: false };
        if non_empty {
            g.remove_entries();
        }
        Ok(g)
    }

    fn remove_entries(&self) {
        for e in OUTPUT_ENTRIES {
            let p = self.dir.join(e);
            let _ = if p.is_dir() { fs::remove_dir_all(&p) } else { fs::remove_file(&p) };
        }
    }
}

impl Drop for OutputGuard {
    fn drop(&mut self) {
        if !self.done {
            self.remove_entries();
            if self.created {
                let _ = fs::remove_dir(&self.dir);
            }
        }
    }
}

/// A reader that counts what passes through it and fails once `stop` is set.
struct Watched<'a, R> {
    inner: R,
    done: u64,
    stop: &'a AtomicBool,
    tick: &'a dyn Fn(u64),
}

impl<R: Read> Read for Watched<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.stop.load(Ordering::Relaxed) {
            // Not `Interrupted`: io::copy would retry that.
            return Err(io::Error::other("stopped by a signal"));
        }
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        (self.tick)(self.done);
        Ok(n)
    }
}

/// Reads `trace_pipe` without blocking until `stop` is set and the pipe is drained,
/// compressing into `dst`; `lines` and `bytes` count what was read so far.
fn pump(pipe: &Path, dst: &Path, stop: &AtomicBool, lines: &AtomicU64, bytes: &AtomicU64) -> Result<()> {
    let mut src =
        OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(pipe).map_err(|e| Error::io(pipe, e))?;
    let f = File::create(dst).map_err(|e| Error::io(dst, e))?;
    let mut enc = zstd::stream::write::Encoder::new(io::BufWriter::new(f), 3).map_err(|e| Error::io(dst, e))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match src.read(&mut buf) {
            Ok(n) if n > 0 => {
                lines.fetch_add(memchr::memchr_iter(b'\n', &buf[..n]).count() as u64, Ordering::Relaxed);
                bytes.fetch_add(n as u64, Ordering::Relaxed);
                enc.write_all(&buf[..n]).map_err(|e| Error::io(dst, e))?;
            }
            Ok(_) => {
                if stop.load(Ordering::Acquire) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // Tracing is switched off before `stop` is set, so once it is set an empty
                // pipe stays empty.
                if stop.load(Ordering::Acquire) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(Error::io(pipe, e)),
        }
    }
    enc.finish().and_then(|mut w| w.flush()).map_err(|e| Error::io(dst, e))?;
    Ok(())
}

/// Ends the workload after an interruption: SIGTERM, then SIGKILL after five seconds.
fn terminate(child: &mut std::process::Child) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill has no memory-safety preconditions; `pid` is our own child, not yet
        // reaped (so the id cannot have been reused).
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(5) {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// `YYYY-MM-DD` of a Unix time (UTC), by the days-from-civil inverse.
fn date(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(rd) = fs::read_dir(dir) else { return 0 };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(_) => e.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

/// Checks that the process can read the kpage files under `proc` (root, or CAP_SYS_ADMIN).
pub fn require_access(proc: &Path) -> Result<()> {
    for k in ["kpageflags", "kpagecount"] {
        let p = proc.join(k);
        if let Err(e) = File::open(&p) {
            return Err(if e.kind() == io::ErrorKind::PermissionDenied {
                Error::Unsupported(format!(
                    "capture needs root: it reads {} and controls tracefs ({e}); run it with sudo",
                    p.display()
                ))
            } else {
                Error::io(&p, e)
            });
        }
    }
    Ok(())
}

/// Runs a capture (see the module documentation) with no progress reports and no way to stop
/// it early.
pub fn capture(cfg: &CaptureConfig) -> Result<CaptureSummary> {
    capture_with(cfg, &AtomicBool::new(false), &Quiet)
}

fn check_stop(stop: &AtomicBool, when: &str) -> Result<()> {
    if stop.load(Ordering::Acquire) {
        return Err(Error::Interrupted(when.to_owned()));
    }
    Ok(())
}

/// Runs a capture, reporting to `observer`. Setting `stop` (a signal handler does) ends it
/// early: the workload is sent SIGTERM, and the capture returns [`Error::Interrupted`].
///
/// On every exit path — success, error, `stop`, a panic that unwinds — the tracefs state it
/// changed is put back as it was found ([`Observer::restored`] says what was rewritten), and
/// on failure what it wrote under the output directory is removed. An existing non-empty
/// output directory is refused unless [`CaptureConfig::force`] is set.
pub fn capture_with(cfg: &CaptureConfig, stop: &AtomicBool, observer: &dyn Observer) -> Result<CaptureSummary> {
    let Some((program, args)) = cfg.command.split_first() else {
        return Err(Error::Unsupported("no workload command given".into()));
    };
    require_access(&cfg.proc)?;
    let mounted = ensure_tracefs(&cfg.tracefs)?;
    let t = &cfg.tracefs;
    let out = &cfg.out_dir;
    let mut output = OutputGuard::prepare(out, cfg.force)?;

    let state = TracefsGuard::save(t, mounted, observer)?;
    write_file(&t.join("tracing_on"), "0")?;
    write_file(&t.join("trace"), "")?;
    write_file(&t.join("current_tracer"), "nop")?;
    write_file(&t.join("buffer_size_kb"), &cfg.buffer_size_kb.to_string())?;
    write_file(&t.join("events/enable"), "0")?;
    let mut missing = Vec::new();
    let mut enabled = 0;
    for &e in &cfg.events {
        let p = t.join("events").join(e.tracefs_path()).join("enable");
        if p.exists() {
            write_file(&p, "1")?;
            enabled += 1;
        } else {
            missing.push(e);
        }
    }
    if enabled == 0 {
        return Err(Error::Unsupported("none of the memory tracepoints exists in this kernel".into()));
    }

    check_stop(stop, "before the start snapshot")?;
    if cfg.drop_caches {
        // SAFETY: sync() has no preconditions.
        unsafe { libc::sync() };
        let _ = write_file(&cfg.proc.join("sys/vm/drop_caches"), "3");
    }
    observer.phase("start snapshot");
    write_snapshot_watched(&cfg.proc, &out.join("start"), cfg.level, stop).map_err(|e| {
        if stop.load(Ordering::Acquire) {
            Error::Interrupted("during the start snapshot".into())
        } else {
            e
        }
    })?;
    check_stop(stop, "after the start snapshot")?;

    let pump_stop = Arc::new(AtomicBool::new(false));
    let lines = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let live = out.join("events.txt.zst.part");
    let reader = {
        let (pump_stop, lines, bytes) = (Arc::clone(&pump_stop), Arc::clone(&lines), Arc::clone(&bytes));
        let pipe = t.join("trace_pipe");
        let live = live.clone();
        std::thread::spawn(move || pump(&pipe, &live, &pump_stop, &lines, &bytes))
    };
    observer.phase("recording");
    let run = (|| -> Result<(f64, Option<i32>)> {
        write_file(&t.join("tracing_on"), "1")?;
        let t0 = Instant::now();
        let mut child = std::process::Command::new(program).args(args).spawn().map_err(|e| {
            Error::Unsupported(format!("cannot run the workload {}: {e}", Path::new(program).display()))
        })?;
        let status = loop {
            match child.try_wait() {
                Ok(Some(st)) => break st,
                Ok(None) => {}
                Err(e) => {
                    terminate(&mut child);
                    return Err(Error::Unsupported(format!("waiting for the workload: {e}")));
                }
            }
            if stop.load(Ordering::Acquire) {
                let _ = write_file(&t.join("tracing_on"), "0");
                terminate(&mut child);
                return Err(Error::Interrupted("while recording (the workload was sent SIGTERM)".into()));
            }
            observer.recording(lines.load(Ordering::Relaxed), bytes.load(Ordering::Relaxed), t0.elapsed());
            std::thread::sleep(Duration::from_millis(100));
        };
        let secs = t0.elapsed().as_secs_f64();
        write_file(&t.join("tracing_on"), "0")?;
        Ok((secs, status.code()))
    })();
    let end_snap = match &run {
        Ok(_) => {
            observer.phase("end snapshot");
            write_snapshot_watched(&cfg.proc, &out.join("end"), cfg.level, stop).map_err(|e| {
                if stop.load(Ordering::Acquire) {
                    Error::Interrupted("during the end snapshot".into())
                } else {
                    e
                }
            })
        }
        Err(_) => Ok(()),
    };
    pump_stop.store(true, Ordering::Release);
    let pumped = match reader.join() {
        Ok(r) => r,
        Err(_) => Err(Error::Unsupported("the trace_pipe reader thread panicked".into())),
    };
    let (seconds, exit_code) = run?;
    end_snap?;
    pumped?;
    let lines = lines.load(Ordering::Relaxed);
    let total = bytes.load(Ordering::Relaxed);
    drop(state);
    let mut ring = Vec::new();
    if let Ok(rd) = fs::read_dir(t.join("per_cpu")) {
        let mut cpus: Vec<_> = rd.flatten().map(|e| e.path()).collect();
        cpus.sort_by_key(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("cpu"))
                .and_then(|n| n.parse::<u32>().ok())
                .unwrap_or(u32::MAX)
        });
        for c in cpus {
            let name = c.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let stats = fs::read_to_string(c.join("stats")).unwrap_or_default();
            let mut line = name;
            for l in stats.lines().filter(|l| l.contains("overrun") || l.contains("dropped")) {
                line.push(' ');
                line.push_str(l.trim());
            }
            ring.push(line);
        }
    }
    let p = out.join("ring-stats");
    fs::write(&p, ring.iter().map(|l| format!("{l}\n")).collect::<String>()).map_err(|e| Error::io(&p, e))?;

    // Recompress the trace at the final level, reporting progress.
    check_stop(stop, "before compressing the trace")?;
    observer.phase("compressing");
    let fin = out.join("events.txt.zst");
    {
        let f = File::open(&live).map_err(|e| Error::io(&live, e))?;
        let d = zstd::stream::read::Decoder::new(f).map_err(|e| Error::io(&live, e))?;
        let tick = |done: u64| observer.compressing(done, total);
        let mut w = Watched { inner: d, done: 0, stop, tick: &tick };
        compress_into(&mut w, &fin, cfg.level).map_err(|e| {
            if stop.load(Ordering::Acquire) {
                Error::Interrupted("while compressing the trace".into())
            } else {
                e
            }
        })?;
    }
    fs::remove_file(&live).map_err(|e| Error::io(&live, e))?;

    let kernel = read_trim(&cfg.proc.join("sys/kernel/osrelease")).unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mem_gib = fs::read(cfg.proc.join("meminfo"))
        .ok()
        .and_then(|b| crate::tables::Meminfo::parse("meminfo", &b).ok())
        .and_then(|m| m.bytes("MemTotal"))
        .map_or(0, |b| (b as f64 / (1u64 << 30) as f64).round() as u64);
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let workload: Vec<String> = cfg.command.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    let mut readme = format!(
        "workload: {}\nkernel: {kernel} ({}, {cpus} CPUs, {mem_gib} GiB), captured {} with tracefs \
         text output (trace_pipe) by memdesc capture\nseconds: {seconds:.9}\nevents: {lines}\n\
         start/ and end/: /proc/kpageflags, /proc/kpagecount (zstd) and the /proc text tables \
         before and after\n",
        workload.join(" "),
        std::env::consts::ARCH,
        date(now),
    );
    if exit_code != Some(0) {
        readme.push_str(&format!("workload exit status: {exit_code:?}\n"));
    }
    if !missing.is_empty() {
        let names: Vec<_> = missing.iter().map(|e| e.tracefs_path()).collect();
        readme.push_str(&format!("events not in this kernel: {}\n", names.join(" ")));
    }
    let p = out.join("README");
    fs::write(&p, readme).map_err(|e| Error::io(&p, e))?;
    output.done = true;

    Ok(CaptureSummary {
        seconds,
        events: lines,
        exit_code,
        missing_events: missing,
        ring_stats: ring,
        bytes: dir_bytes(out),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(951_782_400), "2000-02-29");
        assert_eq!(date(1_798_675_200), "2026-12-31");
    }

    #[test]
    fn empty_command_is_refused() {
        let cfg = CaptureConfig::new(std::env::temp_dir().join("memdesc-never"), Vec::new());
        let e = capture(&cfg).unwrap_err();
        assert!(e.to_string().contains("no workload"), "{e}");
    }

    /// A fake tracefs of plain files in the state the guard must put back.
    fn fake_tracefs(name: &str) -> PathBuf {
        let root = std::env::temp_dir().join(format!("memdesc-guard-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        for (p, v) in [
            ("tracing_on", &b"1\n"[..]),
            ("current_tracer", b"function\n"),
            ("buffer_size_kb", b"7 (expanded: 1408)\n"),
            ("events/enable", b"X\n"),
            ("events/kmem/enable", b"X\n"),
            ("events/kmem/mm_page_alloc/enable", b"0*\n"),
            ("events/kmem/mm_page_free/enable", b"1\n"),
        ] {
            let p = root.join(p);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, v).unwrap();
        }
        root
    }

    fn contents(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut v = Vec::new();
        for p in ["tracing_on", "current_tracer", "buffer_size_kb", "events/enable", "events/kmem/enable"] {
            v.push((root.join(p), fs::read(root.join(p)).unwrap()));
        }
        for e in ["mm_page_alloc", "mm_page_free"] {
            let p = root.join(format!("events/kmem/{e}/enable"));
            v.push((p.clone(), fs::read(p).unwrap()));
        }
        v
    }

    /// The guard puts tracefs back when a panic unwinds through the capture.
    #[test]
    fn a_panic_unwinding_through_the_capture_restores_tracefs() {
        struct Seen(std::sync::Mutex<Option<Restored>>);
        impl Observer for Seen {
            fn restored(&self, r: &Restored) {
                *self.0.lock().unwrap() = Some(r.clone());
            }
        }
        let root = fake_tracefs("panic");
        let before = contents(&root);
        let seen = Seen(std::sync::Mutex::new(None));
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _g = TracefsGuard::save(&root, false, &seen).unwrap();
            write_file(&root.join("tracing_on"), "1").unwrap();
            write_file(&root.join("current_tracer"), "nop").unwrap();
            write_file(&root.join("buffer_size_kb"), "131072").unwrap();
            write_file(&root.join("events/enable"), "0").unwrap();
            write_file(&root.join("events/kmem/mm_page_alloc/enable"), "1").unwrap();
            write_file(&root.join("events/kmem/mm_page_free/enable"), "0").unwrap();
            panic!("a bug in the middle of a capture");
        }));
        assert!(r.is_err());
        assert_eq!(contents(&root), before, "every file byte for byte");
        let seen = seen.0.lock().unwrap().clone().expect("the observer was told");
        assert_eq!(seen.rewritten.len(), 6, "{seen:?}");
        assert!(seen.inexact.is_empty(), "{seen:?}");
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn values_the_kernel_does_not_take_back_have_a_fallback() {
        assert_eq!(fallback_value(b"7 (expanded: 1408)\n").as_deref(), Some("1408"));
        assert_eq!(fallback_value(b"0*\n").as_deref(), Some("0"));
        assert_eq!(fallback_value(b"1\n"), None);
        assert_eq!(fallback_value(b"X\n"), None);
    }

    #[test]
    fn missing_tracefs_is_refused_clearly() {
        let e = ensure_tracefs(Path::new("/nonexistent/tracing")).unwrap_err();
        assert!(e.to_string().contains("tracefs is not available"), "{e}");
    }
}
