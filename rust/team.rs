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

use std::any::Any;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::Thread;
use std::time::{Duration, Instant};

use rayon::{ThreadPool, ThreadPoolBuilder};

/// How long a caller outside rayon waits actively (yielding) for the helpers
/// still inside a run before it parks. Waking a sleeping thread costs tens of
/// microseconds on a virtual machine, far more than the last unit a helper
/// may still be running.
const FINISH_YIELD: Duration = Duration::from_micros(50);

/// How long a helper stays awake after its part of a run that started within
/// this long of the previous run's end (a loop of steps), waiting for the
/// next run. Asleep, rayon's helpers cost every step of a Python loop a
/// wake-up: measured on a 2-core VM, 7-10 us of the caller's time and the
/// helper starting 13-17 us late. After a longer gap (a training loop's
/// gradient computation) no helper lingers, so none takes a core from it.
const LINGER: Duration = Duration::from_micros(100);

/// The runs started from outside rayon: a lingering helper stops as soon as
/// the next one starts.
static RUNS: AtomicU64 = AtomicU64::new(0);
/// When the last run from outside rayon ended, as [`since_epoch`] counts.
static LAST_END: AtomicU64 = AtomicU64::new(0);

/// Nanoseconds since the first call in this process (never 0 after it).
fn since_epoch() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    epoch.elapsed().as_nanos().min(u64::MAX as u128) as u64 + 1
}

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

    /// Run `work(0)` on the calling thread and `work(1..parts)` on helpers,
    /// at most [`Team::threads`] at once. Each `work(own)` must finish the
    /// whole run by itself (as [`Team::for_each_shared`]'s draining does), so
    /// helpers only speed it up: outside rayon a helper that starts after the
    /// caller has finished does nothing, and the caller waits only for the
    /// helpers inside `work` (a parked helper can take a millisecond to start
    /// on a busy machine). Returns when no thread is inside `work`.
    fn run_parts(self, parts: usize, work: impl Fn(usize) + Sync) {
        if parts <= 1 {
            if parts == 1 {
                work(0);
            }
            return;
        }
        match self {
            // A worker waits by running other jobs: nothing to add.
            Team::Pool(_) => rayon::in_place_scope(|scope| {
                for part in 1..parts {
                    let work = &work;
                    scope.spawn(move |_| work(part));
                }
                work(0);
            }),
            Team::Helpers(Some(pool)) => Gate::run(pool, parts, &work),
            Team::Helpers(None) => work(0),
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

/// The helpers' way into one run from outside rayon. Their jobs may start
/// after the run has returned, so they hold the gate by `Arc` and touch the
/// run's `work` only between a successful [`Gate::enter`] and
/// [`Gate::leave`]; the caller returns only once the gate is closed and no
/// helper is inside.
struct Gate {
    /// [`CLOSED`], plus [`INSIDE`] for each helper inside `work`.
    state: AtomicUsize,
    /// The caller, unparked by the last helper to leave a closed gate.
    caller: Thread,
    /// A helper's panic, re-raised on the caller.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

const CLOSED: usize = 1;
const INSIDE: usize = 2;

impl Gate {
    fn run(pool: &ThreadPool, parts: usize, work: &(dyn Fn(usize) + Sync)) {
        let gate = Arc::new(Gate {
            state: AtomicUsize::new(0),
            caller: std::thread::current(),
            panic: Mutex::new(None),
        });
        // SAFETY: a helper calls `work` only inside the gate, and `close`
        // (run by the guard below, on unwinding too) returns only once the
        // gate is closed and empty, so no call outlives this function.
        let work = unsafe {
            std::mem::transmute::<&(dyn Fn(usize) + Sync), &'static (dyn Fn(usize) + Sync)>(work)
        };
        let start = since_epoch();
        let in_a_loop =
            start - LAST_END.load(Ordering::Relaxed).min(start) < LINGER.as_nanos() as u64;
        let run = RUNS.fetch_add(1, Ordering::Relaxed) + 1;
        for part in 1..parts {
            let gate = Arc::clone(&gate);
            pool.spawn(move || {
                if gate.enter() {
                    let result = catch_unwind(AssertUnwindSafe(|| work(part)));
                    if let Err(payload) = result {
                        *gate.panic.lock().unwrap_or_else(PoisonError::into_inner) = Some(payload);
                    }
                    gate.leave();
                }
                if in_a_loop {
                    linger(run);
                }
            });
        }
        let closing = Closing(&gate);
        work(0);
        drop(closing);
        LAST_END.store(since_epoch(), Ordering::Relaxed);
        let panic = gate
            .panic
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(payload) = panic {
            resume_unwind(payload);
        }
    }

    fn enter(&self) -> bool {
        let mut state = self.state.load(Ordering::Acquire);
        loop {
            if state & CLOSED != 0 {
                return false;
            }
            match self.state.compare_exchange_weak(
                state,
                state + INSIDE,
                Ordering::Acquire,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(now) => state = now,
            }
        }
    }

    fn leave(&self) {
        if self.state.fetch_sub(INSIDE, Ordering::Release) == CLOSED + INSIDE {
            self.caller.unpark();
        }
    }

    /// Close the gate, then wait until no helper is inside: briefly by
    /// yielding (a helper inside is usually in its last unit, and where the
    /// machine has fewer free cores than threads it may be waiting for this
    /// one, which a spin would keep from it), then parked.
    fn close(&self) {
        if self.state.fetch_or(CLOSED, Ordering::AcqRel) == 0 {
            return;
        }
        let start = Instant::now();
        while self.state.load(Ordering::Acquire) != CLOSED {
            if start.elapsed() < FINISH_YIELD {
                std::thread::yield_now();
            } else {
                std::thread::park();
            }
        }
    }
}

/// Stay awake (yielding the core to any other thread that wants it) until a
/// run after `run` starts or [`LINGER`] has passed; then rayon finds that
/// run's job at once, with no wake-up.
fn linger(run: u64) {
    let start = Instant::now();
    while RUNS.load(Ordering::Relaxed) == run && start.elapsed() < LINGER {
        std::thread::yield_now();
    }
}

/// Closes a gate when dropped, so that a panic on the caller also waits for
/// the helpers inside before the run's borrows end.
struct Closing<'g>(&'g Gate);

impl Drop for Closing<'_> {
    fn drop(&mut self) {
        self.0.close();
    }
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

    /// A team of the caller and one helper of its own.
    fn caller_and_one_helper() -> Team {
        let pool = ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        Team::Helpers(Some(Box::leak(Box::new(pool))))
    }

    #[test]
    fn the_caller_does_not_wait_for_a_helper_that_has_not_started() {
        let team = caller_and_one_helper();
        let Team::Helpers(Some(pool)) = team else {
            unreachable!()
        };
        // Hold the helper busy, as a parked or descheduled helper would be.
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (report, released) = std::sync::mpsc::channel();
        pool.spawn(move || {
            let _ = report.send(held.recv_timeout(Duration::from_secs(5)).is_ok());
        });
        let counts: Vec<AtomicU32> = (0..64).map(|_| AtomicU32::new(0)).collect();
        team.for_each_shared(64, |i| {
            counts[i].fetch_add(1, Ordering::Relaxed);
        });
        release.send(()).unwrap();
        // Had the step waited for the helper, the hold would have timed out.
        assert!(released.recv().unwrap(), "the step waited for the helper");
        // The helper's late job must find the run closed and run nothing.
        let (done, finished) = std::sync::mpsc::channel();
        pool.spawn(move || done.send(()).unwrap());
        finished.recv().unwrap();
        assert!(counts.iter().all(|c| c.load(Ordering::Relaxed) == 1));
    }

    #[test]
    fn a_helpers_panic_reaches_the_caller() {
        let team = caller_and_one_helper();
        let caller = std::thread::current().id();
        let helper_ran = std::sync::atomic::AtomicBool::new(false);
        let result = catch_unwind(AssertUnwindSafe(|| {
            team.for_each_shared(2, |_| {
                if std::thread::current().id() != caller {
                    helper_ran.store(true, Ordering::Release);
                    panic!("helper");
                }
                let start = Instant::now();
                while !helper_ran.load(Ordering::Acquire)
                    && start.elapsed() < Duration::from_secs(5)
                {
                    std::hint::spin_loop();
                }
            });
        }));
        assert!(helper_ran.load(Ordering::Acquire));
        assert!(result.is_err(), "the helper's panic was lost");
    }

    #[test]
    fn outside_rayon_the_caller_counts_as_a_thread() {
        assert_eq!(num_threads(), rayon::current_num_threads().max(1));
    }
}
