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
//! recompressed at the configured level at the end. Tracing state changed for the capture
//! (events enabled, buffer size, tracing_on) is put back afterwards, also on error.

use std::ffi::{CString, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// zstd level of the final files.
    pub level: i32,
    /// Events to enable.
    pub events: Vec<EventKind>,
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
            level: 19,
            events: DEFAULT_EVENTS.to_vec(),
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

/// Fails unless the process is root.
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

/// Makes sure tracefs is mounted at `tracefs`, mounting it if needed.
pub fn ensure_tracefs(tracefs: &Path) -> Result<()> {
    if tracefs.join("events").is_dir() && tracefs.join("trace_pipe").exists() {
        return Ok(());
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
    Ok(())
}

/// Streams `src` into `dst` compressed at `level`.
fn compress_into(src: &mut dyn Read, dst: &Path, level: i32) -> Result<u64> {
    let f = File::create(dst).map_err(|e| Error::io(dst, e))?;
    let mut enc = zstd::stream::write::Encoder::new(io::BufWriter::new(f), level).map_err(|e| Error::io(dst, e))?;
    let n = io::copy(src, &mut enc).map_err(|e| Error::io(dst, e))?;
    enc.finish().and_then(|mut w| w.flush()).map_err(|e| Error::io(dst, e))?;
    Ok(n)
}

/// Writes one snapshot of `proc` into `dir` (created): the kpage pair zstd-compressed, the
/// text tables as they are (those that cannot be read are left out), `kernel` and `cpus`.
pub fn write_snapshot(proc: &Path, dir: &Path, level: i32) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    for t in PROC_TABLES {
        if let Ok(bytes) = fs::read(proc.join(t)) {
            let p = dir.join(t);
            fs::write(&p, bytes).map_err(|e| Error::io(&p, e))?;
        }
    }
    for k in ["kpageflags", "kpagecount"] {
        let src = proc.join(k);
        let mut f = io::BufReader::with_capacity(1 << 20, File::open(&src).map_err(|e| Error::io(&src, e))?);
        compress_into(&mut f, &dir.join(format!("{k}.zst")), level)?;
    }
    let kernel = read_trim(&proc.join("sys/kernel/osrelease")).unwrap_or_default();
    let p = dir.join("kernel");
    fs::write(&p, format!("{kernel}\n")).map_err(|e| Error::io(&p, e))?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let p = dir.join("cpus");
    fs::write(&p, format!("{cpus}\n")).map_err(|e| Error::io(&p, e))?;
    Ok(())
}

/// The tracing state a capture changes, to put back afterwards.
struct TracingState {
    root: PathBuf,
    tracing_on: Option<String>,
    buffer_size_kb: Option<String>,
    enabled: Vec<EventKind>,
}

impl TracingState {
    fn save(root: &Path) -> Self {
        TracingState {
            root: root.to_owned(),
            tracing_on: read_trim(&root.join("tracing_on")).ok(),
            // `7 (expanded: 1408)` before the buffer is first used: keep the number.
            buffer_size_kb: read_trim(&root.join("buffer_size_kb"))
                .ok()
                .and_then(|s| s.split_whitespace().next().map(str::to_owned))
                .filter(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit())),
            enabled: Vec::new(),
        }
    }
}

impl Drop for TracingState {
    fn drop(&mut self) {
        let r = &self.root;
        let _ = write_file(&r.join("tracing_on"), "0");
        for e in &self.enabled {
            let _ = write_file(&r.join("events").join(e.tracefs_path()).join("enable"), "0");
        }
        if let Some(b) = &self.buffer_size_kb {
            let _ = write_file(&r.join("buffer_size_kb"), b);
        }
        if let Some(t) = &self.tracing_on {
            let _ = write_file(&r.join("tracing_on"), t);
        }
    }
}

/// Reads `trace_pipe` without blocking until `stop` is set and the pipe is drained,
/// compressing into `dst`. Returns the number of lines.
fn pump(pipe: &Path, dst: &Path, stop: &AtomicBool) -> Result<u64> {
    let mut src =
        OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(pipe).map_err(|e| Error::io(pipe, e))?;
    let f = File::create(dst).map_err(|e| Error::io(dst, e))?;
    let mut enc = zstd::stream::write::Encoder::new(io::BufWriter::new(f), 3).map_err(|e| Error::io(dst, e))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut lines = 0u64;
    loop {
        match src.read(&mut buf) {
            Ok(n) if n > 0 => {
                lines += memchr::memchr_iter(b'\n', &buf[..n]).count() as u64;
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
    Ok(lines)
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

/// Runs a capture (see the module documentation).
pub fn capture(cfg: &CaptureConfig) -> Result<CaptureSummary> {
    let Some((program, args)) = cfg.command.split_first() else {
        return Err(Error::Unsupported("no workload command given".into()));
    };
    require_root()?;
    ensure_tracefs(&cfg.tracefs)?;
    let t = &cfg.tracefs;
    let out = &cfg.out_dir;
    fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;

    let mut state = TracingState::save(t);
    write_file(&t.join("tracing_on"), "0")?;
    write_file(&t.join("trace"), "")?;
    write_file(&t.join("current_tracer"), "nop")?;
    write_file(&t.join("buffer_size_kb"), &cfg.buffer_size_kb.to_string())?;
    write_file(&t.join("events/enable"), "0")?;
    let mut missing = Vec::new();
    for &e in &cfg.events {
        let p = t.join("events").join(e.tracefs_path()).join("enable");
        if p.exists() {
            write_file(&p, "1")?;
            state.enabled.push(e);
        } else {
            missing.push(e);
        }
    }
    if state.enabled.is_empty() {
        return Err(Error::Unsupported("none of the memory tracepoints exists in this kernel".into()));
    }

    if cfg.drop_caches {
        // SAFETY: sync() has no preconditions.
        unsafe { libc::sync() };
        let _ = write_file(&cfg.proc.join("sys/vm/drop_caches"), "3");
    }
    write_snapshot(&cfg.proc, &out.join("start"), cfg.level)?;

    let stop = Arc::new(AtomicBool::new(false));
    let live = out.join("events.txt.zst.part");
    let reader = {
        let stop = Arc::clone(&stop);
        let pipe = t.join("trace_pipe");
        let live = live.clone();
        std::thread::spawn(move || pump(&pipe, &live, &stop))
    };
    let run = (|| -> Result<(f64, Option<i32>)> {
        write_file(&t.join("tracing_on"), "1")?;
        let t0 = Instant::now();
        let status = std::process::Command::new(program)
            .args(args)
            .status()
            .map_err(|e| Error::Unsupported(format!("cannot run the workload {}: {e}", Path::new(program).display())));
        let secs = t0.elapsed().as_secs_f64();
        write_file(&t.join("tracing_on"), "0")?;
        Ok((secs, status?.code()))
    })();
    let end_snap = match &run {
        Ok(_) => write_snapshot(&cfg.proc, &out.join("end"), cfg.level),
        Err(_) => Ok(()),
    };
    stop.store(true, Ordering::Release);
    let lines = match reader.join() {
        Ok(r) => r,
        Err(_) => Err(Error::Unsupported("the trace_pipe reader thread panicked".into())),
    };
    let (seconds, exit_code) = run?;
    end_snap?;
    let lines = lines?;
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

    // Recompress the trace at the final level.
    let fin = out.join("events.txt.zst");
    {
        let f = File::open(&live).map_err(|e| Error::io(&live, e))?;
        let mut d = zstd::stream::read::Decoder::new(f).map_err(|e| Error::io(&live, e))?;
        compress_into(&mut d, &fin, cfg.level)?;
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

    #[test]
    fn missing_tracefs_is_refused_clearly() {
        let e = ensure_tracefs(Path::new("/nonexistent/tracing")).unwrap_err();
        assert!(e.to_string().contains("tracefs is not available"), "{e}");
    }
}
