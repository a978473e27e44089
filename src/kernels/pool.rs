//! The thread pool our CPU kernels split their work over, built to stay fair on a shared
//! node (a SLURM node with other jobs, a laptop running a browser).
//!
//! Why not candle's barrier pool (which the kernels used before): its caller waits for
//! every worker, started or not, by spinning without bound. When another process holds
//! the cores, a worker that has not even been scheduled yet keeps the caller spinning on
//! the one core it has, and each of the hundreds of splits per token waits for a
//! scheduler time slice: throughput fell to ~10% of the idle figure with one competing
//! process. Here:
//! - a worker joins a split only while the caller still has it open; the caller closes
//!   it as soon as it has run out of items to take, so it waits only for workers that
//!   actually started, never for one that was not scheduled in time;
//! - every wait (a worker for the next split, the caller for a started worker) spins
//!   for a bounded time and then blocks, so a waiting thread hands its core to whoever
//!   it is waiting for instead of burning its time slice.
//!
//! Items are handed out from a shared cursor in chunks, so which thread computes an
//! item never changes what is computed: results do not depend on the thread count or
//! the scheduling (`tests/determinism.rs` runs the same study on 1 and 2 threads).

use std::any::Any;
use std::cell::{Cell, UnsafeCell};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

/// How long a waiting thread spins before it blocks. Splits follow each other within
/// microseconds during a forward pass, so a short spin keeps the idle machine's latency
/// low (blocking and waking costs a few microseconds each); beyond that the core is
/// better given away. `AFFECTBENCH_POOL_SPIN_US` overrides it (0 blocks at once).
pub const DEFAULT_SPIN: Duration = Duration::from_micros(50);

/// `state` bit set while the current split accepts workers.
const OPEN: u64 = 1 << 31;
/// `state` bits counting the workers that joined the current split.
const JOINED: u64 = OPEN - 1;

fn generation(state: u64) -> u64 {
    state >> 32
}

/// What a split asks: the items, the chunk size, and the caller's closure.
struct Split {
    /// Calls the caller's closure on a range of items.
    run: unsafe fn(*const (), Range<usize>),
    /// The caller's closure, on the caller's stack.
    closure: *const (),
    items: usize,
    chunk: usize,
    /// To wake the caller when it blocked waiting for the last worker.
    caller: Option<Thread>,
}

/// What the caller and the workers share.
struct Shared {
    /// generation << 32 | OPEN | workers joined.
    state: AtomicU64,
    /// Workers of the current split that finished.
    finished: AtomicUsize,
    /// Next item to hand out.
    cursor: AtomicUsize,
    /// Written by the caller only while no worker has joined (see `execute_chunked`).
    split: UnsafeCell<Split>,
    caller_blocked: AtomicBool,
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    stop: AtomicBool,
    spin: Duration,
    /// Tests hold workers back to play a worker the scheduler has not run yet.
    #[cfg(test)]
    workers_held: AtomicBool,
}

// SAFETY: `split` is the only field that is not Sync by itself. The caller writes it
// only between splits (no worker joined, state closed), and a worker reads it only after
// joining an open split (an Acquire on `state` that follows the caller's Release), so
// no read overlaps a write. The closure it points to is `Sync` (required by
// `execute_chunked`).
unsafe impl Sync for Shared {}
// SAFETY: as above; the raw pointers in `split` are only dereferenced under that rule.
unsafe impl Send for Shared {}

thread_local! {
    /// Set on pool workers: a split started from inside a split runs inline.
    static IS_WORKER: Cell<bool> = const { Cell::new(false) };
}

/// A fixed set of worker threads plus the calling thread, which always takes part.
pub struct WorkPool {
    shared: &'static Shared,
    workers: Vec<JoinHandle<()>>,
    /// One split at a time; a second caller runs its split inline instead of waiting.
    splitting: Mutex<u64>,
}

impl WorkPool {
    /// A pool computing on `threads` threads: the caller and `threads - 1` workers.
    pub fn new(threads: usize, spin: Duration) -> Self {
        // Leaked: the pool lives for the process (a static), and workers hold a
        // reference; dropping a pool stops its workers but keeps the few bytes.
        let shared: &'static Shared = Box::leak(Box::new(Shared {
            state: AtomicU64::new(0),
            finished: AtomicUsize::new(0),
            cursor: AtomicUsize::new(0),
            split: UnsafeCell::new(Split {
                run: run_nothing,
                closure: std::ptr::null(),
                items: 0,
                chunk: 1,
                caller: None,
            }),
            caller_blocked: AtomicBool::new(false),
            panic: Mutex::new(None),
            stop: AtomicBool::new(false),
            spin,
            #[cfg(test)]
            workers_held: AtomicBool::new(false),
        }));
        let workers = (1..threads.max(1))
            .map(|i| {
                std::thread::Builder::new()
                    .name(format!("affectbench-kernel-{i}"))
                    .spawn(move || worker_loop(shared))
                    .expect("spawning a kernel pool thread")
            })
            .collect();
        Self {
            shared,
            workers,
            splitting: Mutex::new(0),
        }
    }

    /// Threads that compute a split: the workers and the caller.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Calls `f` on disjoint ranges covering `0..items`, on the caller and any workers
    /// that join in time; returns when every range has been computed. A panic in `f`
    /// (on any thread) is resumed on the caller after all started work has ended.
    pub fn execute_chunked<F: Fn(Range<usize>) + Sync>(&self, items: usize, f: F) {
        if items == 0 {
            return;
        }
        if self.workers.is_empty() || IS_WORKER.with(Cell::get) {
            f(0..items);
            return;
        }
        // Another thread's split is running (tests, several engines in one process):
        // computing inline keeps both going rather than queueing one behind the other.
        let Ok(mut generation) = self.splitting.try_lock() else {
            f(0..items);
            return;
        };
        *generation = (*generation + 1) & 0xffff_ffff;
        let shared = self.shared;
        // About eight chunks per thread: few enough that the cursor is not contended,
        // enough that a thread slowed by another process leaves little behind.
        let chunk = items.div_ceil(self.threads() * 8).max(1);
        // SAFETY: the previous split (if any) ended with no worker inside it (its guard
        // waited for every joined worker), the state is closed, and we hold `splitting`,
        // so no thread reads `split` now.
        unsafe {
            *shared.split.get() = Split {
                run: run_closure::<F>,
                closure: &f as *const F as *const (),
                items,
                chunk,
                caller: Some(std::thread::current()),
            };
        }
        shared.cursor.store(0, Ordering::Relaxed);
        shared.finished.store(0, Ordering::Relaxed);
        shared
            .state
            .store((*generation << 32) | OPEN, Ordering::Release);
        for w in &self.workers {
            // Cheap when the worker is not blocked (one atomic swap).
            w.thread().unpark();
        }
        let wait = CloseAndWait { shared };
        take_chunks(&f, shared, items, chunk);
        drop(wait);
        let panic = shared
            .panic
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(payload) = panic {
            std::panic::resume_unwind(payload);
        }
    }
}

impl Drop for WorkPool {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for w in &self.workers {
            w.thread().unpark();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// Closes the split and waits for the workers that joined it, also when the caller's
/// own part panicked (the closure they run lives on the caller's stack).
struct CloseAndWait {
    shared: &'static Shared,
}

impl Drop for CloseAndWait {
    fn drop(&mut self) {
        let shared = self.shared;
        let closed = shared.state.fetch_and(!OPEN, Ordering::AcqRel);
        let joined = (closed & JOINED) as usize;
        let all_finished = || shared.finished.load(Ordering::Acquire) == joined;
        if spin_until(shared.spin, &all_finished) {
            return;
        }
        while !all_finished() {
            // SeqCst pairs with the worker's `finished` increment and its read of
            // `caller_blocked`: either it sees us blocked and wakes us, or we see it done.
            shared.caller_blocked.store(true, Ordering::SeqCst);
            if shared.finished.load(Ordering::SeqCst) != joined {
                std::thread::park();
            }
            shared.caller_blocked.store(false, Ordering::SeqCst);
        }
    }
}

fn worker_loop(shared: &'static Shared) {
    IS_WORKER.with(|w| w.set(true));
    let mut last_generation = u64::MAX;
    loop {
        let Some(state) = next_open_split(shared, last_generation) else {
            return;
        };
        #[cfg(test)]
        while shared.workers_held.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        if shared
            .state
            .compare_exchange_weak(state, state + 1, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            // Closed meanwhile, or another worker joined first: look again.
            continue;
        }
        last_generation = generation(state);
        // SAFETY: we joined an open split (Acquire on `state` after the caller's Release
        // store that followed its write of `split`), and the caller does not write
        // `split` again until we have counted ourselves finished.
        let split = unsafe { &*shared.split.get() };
        let caller = split.caller.clone();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // SAFETY: `closure` is the caller's `F` (matching `run`), alive until the
            // caller has seen us finish.
            let f = |r: Range<usize>| unsafe { (split.run)(split.closure, r) };
            take_chunks(&f, shared, split.items, split.chunk);
        }));
        if let Err(payload) = outcome {
            let mut slot = shared.panic.lock().unwrap_or_else(|e| e.into_inner());
            slot.get_or_insert(payload);
        }
        shared.finished.fetch_add(1, Ordering::SeqCst);
        if shared.caller_blocked.load(Ordering::SeqCst) {
            // A stale wake-up (the caller already left) only makes its next block
            // return early, which it handles by checking again.
            if let Some(c) = caller {
                c.unpark();
            }
        }
    }
}

/// The state of an open split newer than `last_generation`, waiting (spin, then block)
/// until there is one; `None` when the pool stops.
fn next_open_split(shared: &Shared, last_generation: u64) -> Option<u64> {
    let found = || {
        let s = shared.state.load(Ordering::Acquire);
        (s & OPEN != 0 && generation(s) != last_generation).then_some(s)
    };
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            return None;
        }
        let mut seen = None;
        if spin_until(shared.spin, || {
            seen = found();
            seen.is_some() || shared.stop.load(Ordering::Relaxed)
        }) {
            if let Some(s) = seen {
                return Some(s);
            }
            continue;
        }
        // The caller unparks every worker when it opens a split, so a split opened
        // after this check leaves a wake-up token and park returns at once.
        if found().is_none() {
            std::thread::park();
        }
    }
}

/// Spins until `done` or `budget` has passed; whether `done` became true.
fn spin_until(budget: Duration, mut done: impl FnMut() -> bool) -> bool {
    if done() {
        return true;
    }
    if budget.is_zero() {
        return false;
    }
    let start = Instant::now();
    loop {
        for _ in 0..64 {
            std::hint::spin_loop();
            if done() {
                return true;
            }
        }
        if start.elapsed() >= budget {
            return false;
        }
    }
}

fn take_chunks(f: &dyn Fn(Range<usize>), shared: &Shared, items: usize, chunk: usize) {
    loop {
        let start = shared.cursor.fetch_add(chunk, Ordering::Relaxed);
        if start >= items {
            return;
        }
        f(start..items.min(start + chunk));
    }
}

/// # Safety
/// `closure` points to a live `F`.
unsafe fn run_closure<F: Fn(Range<usize>)>(closure: *const (), range: Range<usize>) {
    // SAFETY: guaranteed by the caller.
    let f = unsafe { &*(closure as *const F) };
    f(range)
}

/// # Safety
/// Never unsafe; typed to fill the slot before the first split.
unsafe fn run_nothing(_: *const (), _: Range<usize>) {}

static THREADS: AtomicUsize = AtomicUsize::new(0);
static POOL: OnceLock<WorkPool> = OnceLock::new();

/// Sets the thread count of the process-wide pool; effective only before its first use
/// (`crate::set_threads` calls it first thing).
pub fn configure(threads: usize) {
    THREADS.store(threads.max(1), Ordering::Relaxed);
}

/// The process-wide pool the kernels use.
pub fn pool() -> &'static WorkPool {
    POOL.get_or_init(|| {
        let threads = match THREADS.load(Ordering::Relaxed) {
            0 => crate::default_threads(),
            n => n,
        };
        WorkPool::new(threads, spin_from_env())
    })
}

fn spin_from_env() -> Duration {
    std::env::var("AFFECTBENCH_POOL_SPIN_US")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_micros)
        .unwrap_or(DEFAULT_SPIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coverage(pool: &WorkPool, items: usize) -> Vec<usize> {
        let counts: Vec<AtomicUsize> = (0..items).map(|_| AtomicUsize::new(0)).collect();
        pool.execute_chunked(items, |r| {
            for i in r {
                counts[i].fetch_add(1, Ordering::Relaxed);
            }
        });
        counts.into_iter().map(AtomicUsize::into_inner).collect()
    }

    #[test]
    fn every_item_is_computed_exactly_once() {
        for spin in [Duration::ZERO, DEFAULT_SPIN] {
            for threads in [1, 2, 4, 7] {
                let pool = WorkPool::new(threads, spin);
                for items in [1, 2, 3, 17, 64, 1000] {
                    for _ in 0..50 {
                        assert!(
                            coverage(&pool, items).iter().all(|&c| c == 1),
                            "{threads} threads, {items} items"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_caller_does_not_wait_for_a_worker_that_never_started() {
        // On a busy node a worker may not be scheduled for milliseconds; the split must
        // end as soon as the caller has computed everything (candle's pool waited).
        let pool = WorkPool::new(2, Duration::ZERO);
        pool.shared.workers_held.store(true, Ordering::SeqCst);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| tx.send(coverage(&pool, 100)).unwrap());
            let got = rx.recv_timeout(Duration::from_secs(20));
            pool.shared.workers_held.store(false, Ordering::SeqCst);
            let counts = got.expect("the split waited for a worker that never started");
            assert!(counts.iter().all(|&c| c == 1));
        });
        // Released, the worker finds the split closed and takes part in the next ones.
        assert!(coverage(&pool, 1000).iter().all(|&c| c == 1));
    }

    #[test]
    fn a_second_caller_computes_inline_while_the_pool_is_busy() {
        let pool = WorkPool::new(2, Duration::ZERO);
        let release = AtomicBool::new(false);
        let started = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                pool.execute_chunked(2, |r| {
                    if r.contains(&0) {
                        started.store(true, Ordering::SeqCst);
                        while !release.load(Ordering::SeqCst) {
                            std::thread::yield_now();
                        }
                    }
                });
            });
            while !started.load(Ordering::SeqCst) {
                std::thread::yield_now();
            }
            assert!(coverage(&pool, 100).iter().all(|&c| c == 1));
            release.store(true, Ordering::SeqCst);
        });
    }

    #[test]
    fn a_panic_in_a_split_reaches_the_caller_and_the_pool_keeps_working() {
        let pool = WorkPool::new(3, DEFAULT_SPIN);
        for round in 0..20 {
            let hit = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                pool.execute_chunked(64, |r| {
                    if r.contains(&(round % 64)) {
                        panic!("item {round}");
                    }
                })
            }));
            assert!(hit.is_err(), "round {round}: the panic was lost");
            assert!(coverage(&pool, 64).iter().all(|&c| c == 1));
        }
    }

    #[test]
    fn a_split_inside_a_split_runs_inline() {
        let pool = WorkPool::new(3, DEFAULT_SPIN);
        let total = AtomicUsize::new(0);
        pool.execute_chunked(8, |outer| {
            for _ in outer {
                pool.execute_chunked(10, |inner| {
                    total.fetch_add(inner.len(), Ordering::Relaxed);
                });
            }
        });
        assert_eq!(total.into_inner(), 80);
    }

    #[test]
    fn concurrent_callers_each_get_their_items() {
        let pool = WorkPool::new(3, DEFAULT_SPIN);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for items in 1..200 {
                        assert!(coverage(&pool, items).iter().all(|&c| c == 1));
                    }
                });
            }
        });
    }
}
