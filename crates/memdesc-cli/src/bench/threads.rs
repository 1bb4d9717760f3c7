//! The multi-thread harnesses of `memdesc bench` (issue 14), shared by the page_alloc and slab
//! sections and the criterion benches:
//!
//! - [`on_threads`]: `n` threads run the same loop at once, each on its own CPU (a memdesc
//!   thread claims its own [`Cpu`](memdesc::Cpu) before the start line); aggregate
//!   throughput over the span from the first thread's start to the last thread's end, and CPU
//!   time per item (time spent waiting for a host CPU not counted).
//! - [`handoff`]: the cross-CPU case, network-receive style: a producer thread (CPU 0)
//!   allocates objects and hands them in batches over a bounded queue to a consumer thread
//!   (CPU 1) that frees them, so every object is freed on another CPU than the one that
//!   allocated it. The queue is the same for every allocator; its cost (one send and one
//!   receive per batch) is in every figure.
//!
//! Imports nothing of this crate but [`crate::measure`].

use std::sync::mpsc::sync_channel;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use serde::Serialize;

use crate::measure::{median, pin_thread_to_host_cpu, r3, thread_cpu_time};

/// Objects per batch handed from the producer to the consumer in [`handoff`] (a NAPI-style
/// budget: Linux's default `net.core.dev_weight` is 64).
pub const HANDOFF_BATCH: usize = 64;

/// Batches that may wait in the queue of [`handoff`] (the producer blocks when it is full).
const HANDOFF_QUEUE: usize = 4;

const CONSUMER_STOPPED: &str = "the consumer thread stopped";

/// What one multi-thread run measured.
#[derive(Serialize, Debug, Clone, Copy, Default, PartialEq)]
pub struct ThreadsRun {
    /// Items (pairs, objects) of all threads per second of wall-clock time, from the first
    /// thread's start to the last thread's end.
    pub per_s: f64,
    /// CPU time of all threads per item, in nanoseconds (time spent waiting for a CPU not
    /// counted).
    pub cpu_ns: f64,
}

impl ThreadsRun {
    /// Wall-clock nanoseconds per item (the inverse of [`ThreadsRun::per_s`]).
    pub fn ns(&self) -> f64 {
        if self.per_s > 0.0 {
            1e9 / self.per_s
        } else {
            0.0
        }
    }
}

/// A thread's prepared work: claimed CPU and buffers ready, run once after the start line.
pub type Work<'a> = Box<dyn FnOnce() -> Result<()> + 'a>;

/// Runs `threads` threads at once: thread `id` calls `prep(id)` (claim CPU `id`, set up), all
/// threads wait at one barrier, then each runs its work, timed. `items` is the number of items
/// each thread's work does.
pub fn on_threads<'a, F>(threads: usize, items: u64, prep: F) -> Result<ThreadsRun>
where
    F: Fn(usize) -> Result<Work<'a>> + Sync,
{
    anyhow::ensure!(threads >= 1, "at least one thread");
    let barrier = Barrier::new(threads);
    let spans: Vec<Result<(Instant, Instant, Duration)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|id| {
                let (barrier, prep) = (&barrier, &prep);
                s.spawn(move || -> Result<(Instant, Instant, Duration)> {
                    pin_thread_to_host_cpu(id);
                    let work = prep(id);
                    // Every thread reaches the barrier, even one whose preparation failed.
                    barrier.wait();
                    let work = work?;
                    let (start, cpu0) = (Instant::now(), thread_cpu_time());
                    work()?;
                    Ok((start, Instant::now(), thread_cpu_time().saturating_sub(cpu0)))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().map_err(|_| anyhow!("benchmark thread panicked"))?).collect()
    });
    let spans = spans.into_iter().collect::<Result<Vec<_>>>()?;
    Ok(rates(&spans, items * threads as u64))
}

fn rates(spans: &[(Instant, Instant, Duration)], total: u64) -> ThreadsRun {
    let start = spans.iter().map(|s| s.0).min();
    let end = spans.iter().map(|s| s.1).max();
    let wall = match (start, end) {
        (Some(s), Some(e)) => (e - s).as_secs_f64(),
        _ => 0.0,
    };
    let cpu: Duration = spans.iter().map(|s| s.2).sum();
    let total = total.max(1) as f64;
    ThreadsRun { per_s: total / wall.max(1e-9), cpu_ns: cpu.as_secs_f64() * 1e9 / total }
}

/// Medians of a set of runs: (per second, CPU ns per item).
pub fn medians(runs: &[ThreadsRun]) -> (f64, f64) {
    let mut per_s: Vec<f64> = runs.iter().map(|r| r.per_s).collect();
    let mut cpu: Vec<f64> = runs.iter().map(|r| r.cpu_ns).collect();
    (median(&mut per_s), median(&mut cpu))
}

/// `a / b` rounded to 3 decimals, 0 when `b` is not positive.
pub fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        r3(a / b)
    } else {
        0.0
    }
}

/// An allocator driven by [`handoff`]: objects allocated on one CPU and freed on another.
pub trait Handoff: Sync {
    /// An allocated object, as the producer hands it to the consumer.
    type Obj: Send;
    /// What one thread holds while it runs: its claimed CPU, a size cursor.
    type Side<'s>
    where
        Self: 's;
    /// Prepares the thread that runs on CPU `cpu`.
    fn side(&self, cpu: usize) -> Result<Self::Side<'_>>;
    /// Allocates one object.
    fn alloc(&self, side: &mut Self::Side<'_>) -> Result<Self::Obj>;
    /// Frees one object (allocated by the other thread).
    fn free(&self, side: &mut Self::Side<'_>, obj: Self::Obj) -> Result<()>;
}

/// [`handoff`] of objects that cost nothing to allocate or free (a counter): the cost of the
/// hand-over itself (queue, batches, thread wake-ups), which every allocator's cross-CPU figure
/// includes.
pub struct QueueOnly;

impl Handoff for QueueOnly {
    type Obj = u64;
    type Side<'s> = u64;
    fn side(&self, _: usize) -> Result<u64> {
        Ok(0)
    }
    fn alloc(&self, next: &mut u64) -> Result<u64> {
        *next += 1;
        Ok(std::hint::black_box(*next))
    }
    fn free(&self, _: &mut u64, obj: u64) -> Result<()> {
        std::hint::black_box(obj);
        Ok(())
    }
}

/// The cross-CPU case: a producer on CPU 0 allocates `objects` objects in batches of `batch`
/// and sends each batch over a bounded queue to a consumer on CPU 1, which frees them and
/// sends the emptied batch back for reuse. `per_s` is objects per second, `cpu_ns` the CPU
/// time of both threads per object.
pub fn handoff<H: Handoff>(h: &H, objects: u64, batch: usize) -> Result<ThreadsRun> {
    let batch = batch.max(1);
    let (full_tx, full_rx) = sync_channel::<Vec<H::Obj>>(HANDOFF_QUEUE);
    let (empty_tx, empty_rx) = sync_channel::<Vec<H::Obj>>(HANDOFF_QUEUE + 2);
    let barrier = Barrier::new(2);
    let (p, c) = std::thread::scope(|s| {
        let barrier = &barrier;
        let producer = s.spawn(move || -> Result<(Instant, Instant, Duration)> {
            pin_thread_to_host_cpu(0);
            let side = h.side(0);
            barrier.wait();
            let mut side = side?;
            let (start, cpu0) = (Instant::now(), thread_cpu_time());
            let mut left = objects;
            while left > 0 {
                let mut v = empty_rx.try_recv().unwrap_or_else(|_| Vec::with_capacity(batch));
                let n = (batch as u64).min(left);
                for _ in 0..n {
                    v.push(h.alloc(&mut side)?);
                }
                left -= n;
                full_tx.send(v).map_err(|_| anyhow!(CONSUMER_STOPPED))?;
            }
            drop(full_tx);
            Ok((start, Instant::now(), thread_cpu_time().saturating_sub(cpu0)))
        });
        let consumer = s.spawn(move || -> Result<(Instant, Instant, Duration)> {
            pin_thread_to_host_cpu(1);
            let side = h.side(1);
            barrier.wait();
            let mut side = side?;
            let (start, cpu0) = (Instant::now(), thread_cpu_time());
            let mut freed = 0u64;
            for mut v in full_rx.iter() {
                freed += v.len() as u64;
                for o in v.drain(..) {
                    h.free(&mut side, o)?;
                }
                // The producer may be done and gone: then the batch is simply dropped.
                let _ = empty_tx.try_send(v);
            }
            anyhow::ensure!(freed == objects, "the consumer freed {freed} of {objects} objects");
            Ok((start, Instant::now(), thread_cpu_time().saturating_sub(cpu0)))
        });
        let join = |h: std::thread::ScopedJoinHandle<'_, Result<(Instant, Instant, Duration)>>| {
            h.join().map_err(|_| anyhow!("benchmark thread panicked"))?
        };
        (join(producer), join(consumer))
    });
    match (p, c) {
        (Ok(p), Ok(c)) => Ok(rates(&[p, c], objects)),
        // The consumer failed first: the producer only saw the queue close.
        (Err(pe), Err(ce)) if pe.to_string() == CONSUMER_STOPPED => Err(ce),
        // Otherwise the producer's error is the cause; the consumer then saw a short stream.
        (Err(e), _) | (_, Err(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    /// Counts allocations and frees, and records which thread freed.
    struct Counting {
        allocs: AtomicU64,
        frees: AtomicU64,
        wrong_side: AtomicU64,
    }

    impl Handoff for Counting {
        type Obj = u64;
        type Side<'s> = usize;
        fn side(&self, cpu: usize) -> Result<usize> {
            Ok(cpu)
        }
        fn alloc(&self, side: &mut usize) -> Result<u64> {
            if *side != 0 {
                self.wrong_side.fetch_add(1, Ordering::Relaxed);
            }
            Ok(self.allocs.fetch_add(1, Ordering::Relaxed))
        }
        fn free(&self, side: &mut usize, _: u64) -> Result<()> {
            if *side != 1 {
                self.wrong_side.fetch_add(1, Ordering::Relaxed);
            }
            self.frees.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
    }

    #[test]
    fn handoff_frees_every_object_on_the_other_side() {
        let c = Counting { allocs: AtomicU64::new(0), frees: AtomicU64::new(0), wrong_side: AtomicU64::new(0) };
        // Not a multiple of the batch: the last batch is short.
        let r = handoff(&c, 1000, 64).unwrap();
        assert_eq!(c.allocs.load(Ordering::Relaxed), 1000);
        assert_eq!(c.frees.load(Ordering::Relaxed), 1000);
        assert_eq!(c.wrong_side.load(Ordering::Relaxed), 0);
        assert!(r.per_s > 0.0 && r.cpu_ns >= 0.0 && r.ns() > 0.0);
    }

    struct FailsAt(u64, AtomicU64);

    impl Handoff for FailsAt {
        type Obj = ();
        type Side<'s> = ();
        fn side(&self, _: usize) -> Result<()> {
            Ok(())
        }
        fn alloc(&self, _: &mut ()) -> Result<()> {
            if self.1.fetch_add(1, Ordering::Relaxed) == self.0 {
                anyhow::bail!("out of memory at {}", self.0)
            }
            Ok(())
        }
        fn free(&self, _: &mut (), _: ()) -> Result<()> {
            Ok(())
        }
    }

    #[test]
    fn handoff_reports_the_producers_error_and_does_not_hang() {
        let e = handoff(&FailsAt(100, AtomicU64::new(0)), 1000, 16).unwrap_err();
        assert!(e.to_string().contains("out of memory at 100"), "{e}");
    }

    #[test]
    fn on_threads_runs_every_thread_and_fails_cleanly() {
        let done = AtomicU64::new(0);
        let r = on_threads(3, 10, |_| {
            Ok(Box::new(|| {
                done.fetch_add(10, Ordering::Relaxed);
                Ok(())
            }) as Work<'_>)
        })
        .unwrap();
        assert_eq!(done.load(Ordering::Relaxed), 30);
        assert!(r.per_s > 0.0);
        // A thread whose preparation fails still reaches the barrier: an error, not a hang.
        let e = on_threads(2, 1, |id| if id == 1 { Err(anyhow!("CPU {id} busy")) } else { Ok(Box::new(|| Ok(()))) })
            .unwrap_err();
        assert!(e.to_string().contains("CPU 1 busy"), "{e}");
        assert!(on_threads(0, 1, |_| Ok(Box::new(|| Ok(())))).is_err());
    }
}
