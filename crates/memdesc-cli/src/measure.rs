//! The measuring helpers every benchmark shares: the seed of every random sequence, medians,
//! per-thread CPU and system time, the resident set, the host's load, and interleaved timing
//! rounds. Imports nothing of this crate (the bottom layer of the CLI).

use std::time::Duration;

use anyhow::Result;

/// Seed of every random sequence (the bytes of "memdesc").
pub const SEED: u64 = 0x006d_656d_6465_7363;

/// Median of `xs` (0 for none).
pub fn median(xs: &mut [f64]) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// A duration in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Rounds to 3 decimals for stable, readable output.
pub fn r3(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}

/// Resident set of this process in bytes, from /proc/self/status.
pub fn rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The calling thread's resource usage (`getrusage(RUSAGE_THREAD)`).
fn thread_rusage() -> Option<libc::rusage> {
    // SAFETY: getrusage only writes the struct we pass; an all-zero rusage is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_THREAD with a valid, exclusive pointer to an rusage.
    (unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) } == 0).then_some(ru)
}

/// System (kernel) CPU time of the calling thread.
pub fn thread_sys_time() -> Option<Duration> {
    let ru = thread_rusage()?;
    Some(Duration::from_secs(ru.ru_stime.tv_sec as u64) + Duration::from_micros(ru.ru_stime.tv_usec as u64))
}

/// Minor page faults the calling thread has taken (the host mapping memory on first touch).
pub fn thread_minor_faults() -> u64 {
    thread_rusage().map_or(0, |ru| ru.ru_minflt as u64)
}

/// Pins the calling thread to the `id`-th host CPU it may run on (modulo their number), as a
/// kernel's per-CPU code runs on its own CPU: a benchmark thread that holds `Cpu` `id` (or a
/// peer's thread in the same role) then stays on one host CPU instead of trading CPUs with the
/// other threads mid-run, which moves every per-CPU cache line between the host's cores (the
/// slab's two-thread pair loop ran 1.15-1.48x its one-thread time unpinned, 1.08-1.17x pinned,
/// on the 2-CPU machine). Best effort: `false` if the host refused.
pub fn pin_thread_to_host_cpu(id: usize) -> bool {
    let allowed = thread_cpus();
    if allowed.is_empty() {
        return false;
    }
    // SAFETY: an all-zero cpu_set_t is the empty set; CPU_SET writes one bit below
    // CPU_SETSIZE (a CPU the host listed in such a set).
    let set = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(allowed[id % allowed.len()], &mut set);
        set
    };
    // SAFETY: pid 0 is the calling thread; `set` is a valid cpu_set_t of the size passed.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0 }
}

/// The host CPUs the calling thread may run on (`sched_getaffinity`; empty if refused).
pub fn thread_cpus() -> Vec<usize> {
    // SAFETY: an all-zero cpu_set_t is a valid (empty) set; sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is the calling thread; `set` is a valid cpu_set_t of the size passed.
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } != 0 {
        return Vec::new();
    }
    // SAFETY: CPU_ISSET reads one bit below CPU_SETSIZE of a valid set.
    (0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, &set) }).collect()
}

/// The host's 1-minute load average, from /proc/loadavg.
pub fn loadavg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

/// CPU time of the calling thread (not counting time it waited for a CPU).
pub fn thread_cpu_time() -> Duration {
    // SAFETY: an all-zero timespec is a valid value; clock_gettime only writes it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: a valid clock id and an exclusive pointer to a timespec.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// One timed run of a measured closure.
pub type Run<'a> = Box<dyn FnMut() -> Result<Duration> + 'a>;

/// Runs each closure once untimed (warm-up), then `reps` rounds in which every closure runs once,
/// the first closure of a round rotating so no allocator always runs first; returns each
/// closure's median in nanoseconds per `per` units. Interleaving makes the allocators share
/// whatever else the host is doing, and the median drops rounds another process disturbed.
pub fn interleaved(reps: usize, per: u64, runs: &mut [Run<'_>]) -> Result<Vec<f64>> {
    for r in runs.iter_mut() {
        r()?;
    }
    let mut ns = vec![Vec::with_capacity(reps); runs.len()];
    for rep in 0..reps.max(1) {
        for k in 0..runs.len() {
            let i = (rep + k) % runs.len();
            ns[i].push(runs[i]()?.as_secs_f64() * 1e9 / per.max(1) as f64);
        }
    }
    Ok(ns.iter_mut().map(|v| median(v)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_thread_runs_on_one_cpu() {
        let before = thread_cpus();
        assert!(!before.is_empty());
        for id in [0, 1, before.len() + 1] {
            // A fresh thread per id: pinning changes only the calling thread.
            let (pinned, cpus) =
                std::thread::spawn(move || (pin_thread_to_host_cpu(id), thread_cpus())).join().unwrap();
            assert!(pinned, "pinning thread {id} was refused");
            assert_eq!(cpus, [before[id % before.len()]], "thread {id}");
        }
        assert_eq!(thread_cpus(), before, "the test thread itself was pinned");
    }
}
