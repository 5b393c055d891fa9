//! The threads of a step: the calling thread and its helpers.
//!
//! A step called from outside any rayon pool (Python's thread, a plain Rust
//! thread) works on the caller plus a pool of `n - 1` helpers of its own,
//! where `n` is the thread count of rayon's global pool. The caller works
//! instead of blocking, and there is no spare worker: with rayon's global
//! pool (n workers) plus a working caller, n + 1 threads share n cores and
//! the idle worker's yield loop takes cycles from the step (measured: on 2
//! cores the idle worker used as much CPU time as the one working). A step
//! called on a rayon worker uses that worker's pool, the caller included.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use rayon::{ThreadPool, ThreadPoolBuilder};

/// How long a caller outside rayon spins for its helpers to return before it
/// sleeps on the scope's latch. Waking a sleeping thread costs tens of
/// microseconds on a virtual machine, far more than the last unit a helper
/// may still be running.
const FINISH_SPIN: Duration = Duration::from_micros(50);

/// The helpers of callers outside rayon; `None` when rayon's global pool has
/// one thread or the helper threads could not be started (steps then run on
/// the caller alone). A forked child has none of its parent's threads, so it
/// starts its own pool (the parent's is leaked: it cannot be joined there).
fn helper_pool() -> Option<&'static ThreadPool> {
    static POOL: Mutex<Option<(u32, Option<&'static ThreadPool>)>> = Mutex::new(None);
    let mut pool = POOL.lock().unwrap_or_else(PoisonError::into_inner);
    let pid = std::process::id();
    match *pool {
        Some((owner, helpers)) if owner == pid => helpers,
        _ => {
            let helpers = start_helpers();
            *pool = Some((pid, helpers));
            helpers
        }
    }
}

fn start_helpers() -> Option<&'static ThreadPool> {
    let helpers = rayon::current_num_threads().saturating_sub(1);
    if helpers == 0 {
        return None;
    }
    let pool = ThreadPoolBuilder::new()
        .num_threads(helpers)
        .thread_name(|i| format!("radam-helper-{i}"))
        .build()
        .ok()?;
    Some(Box::leak(Box::new(pool)))
}

/// The number of threads a step may use from the calling thread: the
/// current pool's size on a rayon worker, else the caller and its helpers.
pub fn num_threads() -> usize {
    Team::current().threads()
}

/// The threads of one parallel run from the calling thread, looked up once
/// per run (outside rayon the lookup takes a lock and a getpid).
#[derive(Clone, Copy)]
pub(crate) enum Team {
    /// The caller is a worker of a rayon pool of this many threads.
    Pool(usize),
    /// The caller is outside rayon: it and these helpers, if there are any.
    Helpers(Option<&'static ThreadPool>),
}

impl Team {
    pub(crate) fn current() -> Team {
        if rayon::current_thread_index().is_some() {
            Team::Pool(rayon::current_num_threads())
        } else {
            Team::Helpers(helper_pool())
        }
    }

    pub(crate) fn threads(self) -> usize {
        match self {
            Team::Pool(threads) => threads,
            Team::Helpers(pool) => 1 + pool.map_or(0, ThreadPool::current_num_threads),
        }
    }

    /// Run `work(part)` for every part in `0..parts` at once: part 0 on the
    /// calling thread, the others on helpers (at most [`Team::threads`] parts
    /// run in parallel; more simply queue). Returns when every part has returned.
    fn run_parts(self, parts: usize, work: impl Fn(usize) + Sync) {
        if parts <= 1 {
            if parts == 1 {
                work(0);
            }
            return;
        }
        let returned = AtomicUsize::new(0);
        let (work, returned) = (&work, &returned);
        match self {
            // A worker waits by running other jobs: nothing to add.
            Team::Pool(_) => {
                rayon::in_place_scope(|scope| spawn_and_work(scope, parts, work, returned))
            }
            Team::Helpers(Some(pool)) => pool.in_place_scope(|scope| {
                spawn_and_work(scope, parts, work, returned);
                // Spin briefly for the helpers' last units, so the scope's
                // latch is usually set before the caller would sleep on it.
                let start = Instant::now();
                while returned.load(Ordering::Acquire) < parts - 1 && start.elapsed() < FINISH_SPIN
                {
                    for _ in 0..64 {
                        std::hint::spin_loop();
                    }
                }
            }),
            Team::Helpers(None) => (0..parts).for_each(work),
        }
    }

    /// Run `run(i)` once for every `i` in `0..n`, spread over up to
    /// [`Team::threads`] threads. Each thread owns a contiguous run of indices
    /// (the caller the first), so in a loop of steps every thread keeps the
    /// same part of the data and a cache-resident step finds it in that core's
    /// caches. A thread that finishes its own run takes indices left in the
    /// others' runs, so a late helper simply takes fewer. Which thread runs an
    /// index must not change the result: callers make each index's work
    /// independent.
    pub(crate) fn for_each_shared(self, n: usize, run: impl Fn(usize) + Sync) {
        let parts = self.threads().min(n);
        let bounds = |part: usize| (part * n / parts, (part + 1) * n / parts);
        let next: Vec<AtomicUsize> = (0..parts).map(|p| AtomicUsize::new(bounds(p).0)).collect();
        let drain_part = |part: usize| {
            let end = bounds(part).1;
            loop {
                let i = next[part].fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    break;
                }
                run(i);
            }
        };
        self.run_parts(parts, |own| {
            for k in 0..parts {
                drain_part((own + k) % parts);
            }
        });
    }

    /// Run `run(item)` once for every item, spread over the threads as
    /// [`Team::for_each_shared`] spreads indices.
    pub(crate) fn for_each_owned<P: Send>(self, items: Vec<P>, run: impl Fn(P) + Sync) {
        // One uncontended lock per item: each is taken exactly once, by
        // whoever draws its index.
        let items: Vec<Mutex<Option<P>>> = items.into_iter().map(|p| Mutex::new(Some(p))).collect();
        self.for_each_shared(items.len(), |i| {
            let item = items[i]
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(item) = item {
                run(item);
            }
        });
    }
}

/// Spawn parts `1..parts` on helpers, then run part 0 on this thread.
fn spawn_and_work<'s, W: Fn(usize) + Sync>(
    scope: &rayon::Scope<'s>,
    parts: usize,
    work: &'s W,
    returned: &'s AtomicUsize,
) {
    for part in 1..parts {
        scope.spawn(move |_| {
            work(part);
            returned.fetch_add(1, Ordering::Release);
        });
    }
    work(0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn every_index_runs_exactly_once() {
        for n in [0, 1, 2, 3, 7, 64, 1000] {
            let counts: Vec<AtomicU32> = (0..n).map(|_| AtomicU32::new(0)).collect();
            Team::current().for_each_shared(n, |i| {
                counts[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(
                counts.iter().all(|c| c.load(Ordering::Relaxed) == 1),
                "n = {n}"
            );
        }
    }

    #[test]
    fn every_item_is_run_exactly_once() {
        for n in [0, 1, 5, 300] {
            let seen: Vec<AtomicU32> = (0..n).map(|_| AtomicU32::new(0)).collect();
            let items: Vec<&AtomicU32> = seen.iter().collect();
            Team::current().for_each_owned(items, |c| {
                c.fetch_add(1, Ordering::Relaxed);
            });
            assert!(
                seen.iter().all(|c| c.load(Ordering::Relaxed) == 1),
                "n = {n}"
            );
        }
    }

    #[test]
    fn inside_a_pool_uses_that_pool() {
        for threads in [1, 3] {
            let pool = ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                assert_eq!(num_threads(), threads);
                let counts: Vec<AtomicU32> = (0..100).map(|_| AtomicU32::new(0)).collect();
                Team::current().for_each_shared(100, |i| {
                    counts[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(counts.iter().all(|c| c.load(Ordering::Relaxed) == 1));
            });
        }
    }

    #[test]
    fn outside_rayon_the_caller_counts_as_a_thread() {
        assert_eq!(num_threads(), rayon::current_num_threads().max(1));
    }
}
