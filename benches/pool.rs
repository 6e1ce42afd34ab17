//! CPU-bound work spread over workers: sequential, `std::thread`, rayon and multiproc's `Pool`
//! doing the same total work, at several task sizes, each measured in the same run.
//!
//! The work is a hash loop (xorshift-multiply) calibrated at start-up to take the task size;
//! every run executes `TASKS_PER_CPU × cpu_count()` tasks. Threads take tasks from a shared
//! counter, rayon uses `par_iter`, the pool `map` with chunk size 1; all use `cpu_count()`
//! workers. After criterion's groups, a table gives each one's speedup over sequential
//! (best of five runs) and the pool's speedup as a fraction of the threads' (goal: ≥ 0.95
//! for tasks of 10 ms or more).
//!
//! ```text
//! cargo bench --bench pool
//! ```

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode};
use multiproc::Pool;
use rayon::prelude::*;

const TASK_MS: [u64; 3] = [1, 10, 30];
const TASKS_PER_CPU: usize = 8;

/// `rounds` rounds of a xorshift-multiply hash: pure CPU, no memory traffic.
fn hash(rounds: u64) -> u64 {
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ rounds;
    for _ in 0..rounds {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
    }
    // 63 bits: serde-pickle reads a larger integer back only as a Python long, not a u64.
    x >> 1
}

/// Rounds per millisecond on this machine.
fn calibrate() -> u64 {
    let rounds = 5_000_000;
    let start = Instant::now();
    black_box(hash(black_box(rounds)));
    (rounds as f64 / start.elapsed().as_secs_f64() / 1000.0) as u64
}

fn sequential(tasks: &[u64]) -> u64 {
    tasks.iter().map(|&r| hash(r)).fold(0, u64::wrapping_add)
}

fn threads(tasks: &[u64], n: usize) -> u64 {
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|_| {
                s.spawn(|| {
                    let mut sum = 0u64;
                    while let Some(&r) = tasks.get(next.fetch_add(1, Ordering::Relaxed)) {
                        sum = sum.wrapping_add(hash(r));
                    }
                    sum
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .fold(0, u64::wrapping_add)
    })
}

fn rayon_pool(tasks: &[u64]) -> u64 {
    tasks
        .par_iter()
        .map(|&r| hash(r))
        .reduce(|| 0, u64::wrapping_add)
}

fn pool(pool: &Pool, tasks: &[u64]) -> u64 {
    pool.map_chunked(hash, tasks.iter().copied(), 1)
        .expect("pool map")
        .into_iter()
        .fold(0, u64::wrapping_add)
}

fn best_of_five(mut run: impl FnMut() -> u64) -> Duration {
    (0..5)
        .map(|_| {
            let start = Instant::now();
            black_box(run());
            start.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn main() {
    let cpus = multiproc::cpu_count();
    let per_ms = calibrate();
    let workers = Pool::new(cpus).expect("start the pool");
    let mut criterion = Criterion::default().configure_from_args();
    let mut table = Vec::new();
    for ms in TASK_MS {
        let tasks = vec![per_ms * ms; TASKS_PER_CPU * cpus];
        let expected = sequential(&tasks);
        assert_eq!(pool(&workers, &tasks), expected);
        let mut group = criterion.benchmark_group(format!("cpu_bound_{ms}ms_tasks"));
        group
            .sampling_mode(SamplingMode::Flat)
            .sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(3));
        group.bench_function(BenchmarkId::from_parameter("sequential"), |b| {
            b.iter(|| sequential(&tasks))
        });
        group.bench_function(BenchmarkId::from_parameter("threads"), |b| {
            b.iter(|| threads(&tasks, cpus))
        });
        group.bench_function(BenchmarkId::from_parameter("rayon"), |b| {
            b.iter(|| rayon_pool(&tasks))
        });
        group.bench_function(BenchmarkId::from_parameter("pool"), |b| {
            b.iter(|| pool(&workers, &tasks))
        });
        group.finish();
        let seq = best_of_five(|| sequential(&tasks)).as_secs_f64();
        let thr = seq / best_of_five(|| threads(&tasks, cpus)).as_secs_f64();
        let ray = seq / best_of_five(|| rayon_pool(&tasks)).as_secs_f64();
        let poo = seq / best_of_five(|| pool(&workers, &tasks)).as_secs_f64();
        table.push((ms, tasks.len(), thr, ray, poo));
    }
    criterion.final_summary();
    println!("\nSpeedup over sequential, {cpus} CPUs, best of 5 (goal: pool >= 0.95x threads for >= 10 ms tasks)\n");
    println!("| task | tasks | threads | rayon | Pool | Pool / threads |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for (ms, n, thr, ray, poo) in table {
        println!(
            "| {ms} ms | {n} | {thr:.2}x | {ray:.2}x | {poo:.2}x | {:.2} |",
            poo / thr
        );
    }
}
