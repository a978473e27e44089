//! A tiny thread pool for the matmul kernels: workers spin briefly for the next job
//! before parking, and the caller takes tasks too.
//!
//! Why not rayon here: decode runs ~120 small matmuls per token (tens of microseconds
//! each). Rayon parks idle workers and waking them costs about as much as the work, which
//! profiling showed as a third of decode time. Spinning ~200 us between jobs keeps a worker
//! hot through a layer's matmuls; after that it parks so an idle process costs nothing.
//!
//! Correctness: tasks are claimed with a compare-exchange on a counter tagged with the
//! job's generation, so a worker that wakes late can never run a task of a finished job,
//! and it reads the job only after a successful claim (the caller waits for every
//! claimed task before returning, so the job is alive while any claim is outstanding).

use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

const SPIN: Duration = Duration::from_micros(200);

struct Job<'a> {
    f: &'a (dyn Fn(usize) + Sync),
}

struct Pool {
    /// (generation << 32) | next task index.
    next: AtomicU64,
    done: AtomicUsize,
    /// Task count of the current job, kept outside the job so that checking it never
    /// dereferences a job that may already have returned.
    n: AtomicUsize,
    job: AtomicPtr<Job<'static>>,
    workers: Vec<Thread>,
    /// One job at a time (tests call from several threads).
    caller: Mutex<u32>,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<&'static Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let n_workers = rayon::current_num_threads().saturating_sub(1);
        let pool: &'static mut Pool = Box::leak(Box::new(Pool {
            next: AtomicU64::new(0),
            done: AtomicUsize::new(0),
            n: AtomicUsize::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            workers: Vec::new(),
            caller: Mutex::new(0),
        }));
        let shared: &'static Pool = unsafe { &*(pool as *const Pool) };
        for i in 0..n_workers {
            let handle = std::thread::Builder::new()
                .name(format!("affectbench-matmul-{i}"))
                .spawn(move || worker(shared))
                .expect("spawning a kernel worker thread");
            pool.workers.push(handle.thread().clone());
        }
        pool
    })
}

/// Claims and runs tasks of generation `gen` until none are left.
fn drain(p: &Pool, gen: u64) {
    loop {
        let cur = p.next.load(Ordering::Acquire);
        if cur >> 32 != gen {
            return;
        }
        let idx = (cur & 0xFFFF_FFFF) as usize;
        // `n` may already belong to a newer job; then the claim below fails anyway.
        if idx >= p.n.load(Ordering::Acquire) {
            return;
        }
        if p.next.compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            // SAFETY: a successful claim of an unfinished task of generation `gen` means
            // the caller is still waiting in `run`, so its job is alive and is the one
            // published (jobs are replaced only after all their tasks complete).
            let job = unsafe { &*p.job.load(Ordering::Acquire) };
            (job.f)(idx);
            p.done.fetch_add(1, Ordering::AcqRel);
        }
    }
}

fn worker(p: &'static Pool) {
    let mut seen = 0u64;
    let mut idle_since = Instant::now();
    loop {
        let gen = p.next.load(Ordering::Acquire) >> 32;
        if gen != seen {
            seen = gen;
            drain(p, gen);
            idle_since = Instant::now();
            continue;
        }
        if idle_since.elapsed() < SPIN {
            for _ in 0..32 {
                std::hint::spin_loop();
            }
        } else {
            std::thread::park_timeout(Duration::from_millis(5));
        }
    }
}

/// Runs `f(0..n)` across the pool and the calling thread; returns when all are done.
pub fn run(n: usize, f: &(dyn Fn(usize) + Sync)) {
    let p = pool();
    if p.workers.is_empty() || n <= 1 {
        (0..n).for_each(f);
        return;
    }
    let mut generation = p.caller.lock().unwrap_or_else(|e| e.into_inner());
    *generation = generation.wrapping_add(1).max(1);
    let gen = *generation as u64;
    assert!(n < 0xFFFF_FFFF, "too many tasks for one job");
    let job = Job { f };
    // SAFETY: the pointer is only dereferenced while this call waits below.
    p.job.store(&job as *const Job as *mut Job<'static>, Ordering::Release);
    p.done.store(0, Ordering::Release);
    p.n.store(n, Ordering::Release);
    p.next.store(gen << 32, Ordering::Release);
    for w in &p.workers {
        w.unpark();
    }
    drain(p, gen);
    while p.done.load(Ordering::Acquire) < n {
        std::hint::spin_loop();
    }
    // Retire the generation so no late worker claims anything of this job.
    p.next.store((gen << 32) | 0xFFFF_FFFF, Ordering::Release);
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_task_runs_exactly_once_across_many_jobs() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        for n in [0usize, 1, 2, 7, 64, 1000] {
            for _ in 0..50 {
                let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                super::run(n, &|i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1), "n = {n}");
            }
        }
    }
}
