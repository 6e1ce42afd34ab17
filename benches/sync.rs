//! What a cross-process lock costs next to an in-process one, measured in the same run.
//!
//! - `lock_pair`: one uncontended acquire + release. `multiproc/lock` (`Lock::acquire` and the
//!   guard's drop, on a memfd mapping that a child process also has mapped and is blocked on
//!   beside it) against `std/mutex` (`std::sync::Mutex::lock` and the guard's drop). Issue 4's
//!   target: at most 2× std. Also `multiproc/rlock` and `multiproc/semaphore` (a `Semaphore(1)`
//!   permit taken and given back) for reference, and `glibc/robust_pshared_mutex`, the
//!   robust-list bookkeeping every robust lock pays (issue 12).
//!
//! - `takeover`: the time from `SIGKILL` of a process that holds a `Lock` to another
//!   process's `acquire` returning (with `owner_died`), the waiter already blocked in
//!   `acquire` when the signal is sent. Issue 12's target: at most 5 ms.
//!
//! ```text
//! cargo bench --bench sync
//! cargo bench --bench sync -- takeover
//! ```
//!
//! then compare the two medians criterion prints (or read
//! `target/criterion/lock_pair/*/new/estimates.json`).

use std::hint::black_box;
use std::sync::Mutex;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use std::time::Instant;

use multiproc::{Event, Lock, Pipe, Process, RLock, Semaphore, SendEnd};

/// The child that holds the primitives' mappings during the measurement: it waits until
/// told to go.
fn hold_mapped((_lock, done): (Lock, Event)) {
    done.wait_timeout(Duration::from_secs(600));
}

fn lock_pair(c: &mut Criterion) {
    let lock = Lock::new().unwrap();
    let done = Event::new().unwrap();
    let mut child = Process::spawn(
        hold_mapped,
        (lock.try_clone().unwrap(), done.try_clone().unwrap()),
    )
    .unwrap();
    let mutex = Mutex::new(0u64);
    let rlock = RLock::new().unwrap();
    let sem = Semaphore::new(1).unwrap();

    let mut group = c.benchmark_group("lock_pair");
    group.bench_function("std/mutex", |b| {
        b.iter(|| {
            let guard = mutex.lock().unwrap();
            black_box(&guard);
        })
    });
    group.bench_function("multiproc/lock", |b| {
        b.iter(|| {
            let guard = lock.acquire();
            black_box(&guard);
        })
    });
    // The price of robustness for reference: glibc's process-shared robust mutex does the
    // same robust-list bookkeeping as `multiproc/lock` (see src/sys/lock.rs).
    let robust = RobustMutex::new();
    group.bench_function("glibc/robust_pshared_mutex", |b| {
        b.iter(|| {
            robust.lock();
            robust.unlock();
        })
    });
    group.bench_function("multiproc/rlock", |b| {
        b.iter(|| {
            let guard = rlock.acquire();
            black_box(&guard);
        })
    });
    group.bench_function("multiproc/semaphore", |b| {
        b.iter(|| {
            let guard = sem.acquire();
            black_box(&guard);
        })
    });
    group.finish();

    done.set();
    child.join().unwrap();
}

/// A `pthread_mutex_t` with `PTHREAD_PROCESS_SHARED` and `PTHREAD_MUTEX_ROBUST`.
struct RobustMutex(Box<std::cell::UnsafeCell<libc::pthread_mutex_t>>);

impl RobustMutex {
    fn new() -> RobustMutex {
        // SAFETY: a zeroed pthread_mutex_t is storage for pthread_mutex_init.
        let mutex = Box::new(std::cell::UnsafeCell::new(unsafe { std::mem::zeroed() }));
        // SAFETY: the attribute object lives on this stack frame for the calls below, and
        // the mutex is initialised once, in place (it never moves: boxed).
        unsafe {
            let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
            assert_eq!(libc::pthread_mutexattr_init(&mut attr), 0);
            assert_eq!(
                libc::pthread_mutexattr_setpshared(&mut attr, libc::PTHREAD_PROCESS_SHARED),
                0
            );
            assert_eq!(
                libc::pthread_mutexattr_setrobust(&mut attr, libc::PTHREAD_MUTEX_ROBUST),
                0
            );
            assert_eq!(libc::pthread_mutex_init(mutex.get(), &attr), 0);
            libc::pthread_mutexattr_destroy(&mut attr);
        }
        RobustMutex(mutex)
    }

    fn lock(&self) {
        // SAFETY: an initialised mutex that outlives the call; only this thread uses it.
        assert_eq!(unsafe { libc::pthread_mutex_lock(self.0.get()) }, 0);
    }

    fn unlock(&self) {
        // SAFETY: as in `lock`; this thread holds it.
        assert_eq!(unsafe { libc::pthread_mutex_unlock(self.0.get()) }, 0);
    }
}

impl Drop for RobustMutex {
    fn drop(&mut self) {
        // SAFETY: initialised, unlocked, and used by nobody any more.
        unsafe { libc::pthread_mutex_destroy(self.0.get()) };
    }
}

/// The holder for `takeover`: takes the lock, says so, and waits to be killed.
fn hold_until_killed((lock, held): (Lock, SendEnd)) {
    let _guard = lock.acquire();
    held.send(&()).unwrap();
    std::thread::sleep(Duration::from_secs(600));
}

fn takeover(c: &mut Criterion) {
    let lock = Lock::new().unwrap();
    let mut group = c.benchmark_group("takeover");
    group
        .sample_size(10)
        .sampling_mode(criterion::SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    group.bench_function("sigkill_to_acquire", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (told, held) = Pipe::one_way().unwrap();
                let mut holder =
                    Process::spawn(hold_until_killed, (lock.try_clone().unwrap(), held)).unwrap();
                told.recv::<()>().unwrap();
                // A waiter blocked in `acquire` before the kill, as a real contender would be.
                let (ready_tx, ready_rx) = std::sync::mpsc::channel();
                let waiter = std::thread::scope(|s| {
                    let waiter = s.spawn(|| {
                        ready_tx.send(()).unwrap();
                        let guard = lock.acquire();
                        let at = Instant::now();
                        assert!(guard.owner_died());
                        at
                    });
                    ready_rx.recv().unwrap();
                    // Let the waiter reach its sleep: it spins briefly first.
                    std::thread::sleep(Duration::from_millis(20));
                    let killed = Instant::now();
                    holder.kill().unwrap();
                    waiter.join().unwrap() - killed
                });
                total += waiter;
                assert!(holder.join().is_err());
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, lock_pair, takeover);
criterion_main!(benches);
