//! What a cross-process lock costs next to an in-process one, measured in the same run.
//!
//! - `lock_pair`: one uncontended acquire + release. `multiproc/lock` (`Lock::acquire` and the
//!   guard's drop, on a memfd mapping that a child process also has mapped and is blocked on
//!   beside it) against `std/mutex` (`std::sync::Mutex::lock` and the guard's drop). Issue 4's
//!   target: at most 2× std. Also `multiproc/rlock` and `multiproc/semaphore` (a `Semaphore(1)`
//!   permit taken and given back) for reference.
//!
//! ```text
//! cargo bench --bench sync
//! ```
//!
//! then compare the two medians criterion prints (or read
//! `target/criterion/lock_pair/*/new/estimates.json`).

use std::hint::black_box;
use std::sync::Mutex;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use multiproc::{Event, Lock, Process, RLock, Semaphore};

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

criterion_group!(benches, lock_pair);
criterion_main!(benches);
