//! Trivial-task throughput of multiproc's `Pool` next to Python's `multiprocessing.Pool`, both
//! measured in the same run on the same machine (benches/pool_py.py runs the Python side).
//!
//! Workloads (items per second, best of three runs, after a warm-up):
//! - `apply_async_noop`: 20 000 `apply_async` of a no-op, then `get` on each.
//! - `map_chunksize_1`: `map` over 100 000 integers with `chunksize=1`, squaring each.
//! - `map_default_chunks`: `map` over 1 000 000 integers with the default chunk size.
//!
//! Both pools have `cpu_count()` workers and use their default start method (forkserver here,
//! fork in Python 3.11). Run:
//!
//! ```text
//! cargo bench --bench pool_throughput
//! ```
//!
//! It also prints the resident memory (VmRSS) of an idle worker per start method, and of the
//! parent and the workers over 1 000 000 tasks. Without
//! `python3` on the PATH the Python columns are skipped, with a message saying so.

use std::process::Command;
use std::time::Instant;

use multiproc::{Pool, StartMethod};

const TASKS: usize = 20_000;
const ITEMS: u64 = 100_000;
const BIG: u64 = 1_000_000;
const RUNS: usize = 3;

fn noop(_: u64) {}

fn square(x: u64) -> u64 {
    x.wrapping_mul(x)
}

fn best_of(mut run: impl FnMut() -> usize) -> f64 {
    (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            let n = run();
            n as f64 / start.elapsed().as_secs_f64()
        })
        .fold(0.0, f64::max)
}

fn ours(processes: usize) -> [(&'static str, f64); 3] {
    let pool = Pool::new(processes).expect("start the pool");
    pool.map(square, 0..100).expect("warm up");
    let apply = best_of(|| {
        let results: Vec<_> = (0..TASKS as u64)
            .map(|i| pool.apply_async(noop, i).expect("submit"))
            .collect();
        results.into_iter().for_each(|r| r.get().expect("result"));
        TASKS
    });
    let map1 = best_of(|| pool.map_chunked(square, 0..ITEMS, 1).expect("map").len());
    let map_default = best_of(|| pool.map(square, 0..BIG).expect("map").len());
    [
        ("apply_async_noop", apply),
        ("map_chunksize_1", map1),
        ("map_default_chunks", map_default),
    ]
}

/// Python's figures as `(name, value)` from benches/pool_py.py's JSON line.
fn python(processes: usize) -> Option<(String, Vec<(String, f64)>)> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/pool_py.py");
    let out = Command::new("python3")
        .args([script, "--processes", &processes.to_string()])
        .args(["--tasks", &TASKS.to_string(), "--items", &ITEMS.to_string()])
        .args(["--big", &BIG.to_string()])
        .output();
    let out = match out {
        Ok(out) if out.status.success() => out,
        Ok(out) => {
            eprintln!(
                "python3 failed ({}): skipping the Python columns",
                out.status
            );
            return None;
        }
        Err(e) => {
            eprintln!("no python3 ({e}): skipping the Python columns");
            return None;
        }
    };
    // The JSON is flat: split it by hand rather than add a JSON dependency to the benches.
    let text = String::from_utf8_lossy(&out.stdout);
    let body = text.trim().trim_start_matches('{').trim_end_matches('}');
    let mut version = String::new();
    let mut figures = Vec::new();
    for field in body.split(", ") {
        let (key, value) = field.split_once(": ")?;
        let key = key.trim_matches('"').to_string();
        match value.parse::<f64>() {
            Ok(v) => figures.push((key, v)),
            Err(_) if key == "python" => version = value.trim_matches('"').to_string(),
            Err(_) => {}
        }
    }
    Some((version, figures))
}

fn idle_worker_rss_kib(method: StartMethod) -> Option<u64> {
    let pool = Pool::builder()
        .processes(1)
        .start_method(method)
        .build()
        .ok()?;
    pool.apply(noop, 0).ok()?;
    vm_rss_kib(*pool.pids().first()?)
}

fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The parent's and the workers' VmRSS after each of ten rounds of 100 000 `apply_async`.
fn memory_over_a_million_tasks() -> Vec<(u64, u64)> {
    let pool = Pool::new(2).expect("start the pool");
    (0..10)
        .map(|_| {
            let results: Vec<_> = (0..100_000u64)
                .map(|i| pool.apply_async(noop, i).expect("submit"))
                .collect();
            results.into_iter().for_each(|r| r.get().expect("result"));
            let workers = pool.pids().iter().filter_map(|&p| vm_rss_kib(p)).sum();
            (vm_rss_kib(std::process::id()).unwrap_or(0), workers)
        })
        .collect()
}

fn main() {
    let processes = multiproc::cpu_count();
    let py = python(processes);
    let ours = ours(processes);
    println!(
        "\nPool throughput, {processes} workers, items/s (best of {RUNS}); python: {}\n",
        py.as_ref().map_or("skipped", |p| p.0.as_str())
    );
    println!("| workload | multiproc | Python Pool | ratio | goal |");
    println!("|---|---:|---:|---:|---:|");
    for ((name, value), goal) in ours.iter().zip([20.0, 20.0, 3.0]) {
        let theirs = py
            .as_ref()
            .and_then(|p| p.1.iter().find(|(k, _)| k == name).map(|(_, v)| *v));
        match theirs {
            Some(t) => println!(
                "| {name} | {value:.0} | {t:.0} | {:.1}x | >= {goal}x |",
                value / t
            ),
            None => println!("| {name} | {value:.0} | - | - | >= {goal}x |"),
        }
    }
    println!("\nIdle worker VmRSS (goal <= 4 MiB under spawn and forkserver):");
    for method in StartMethod::all() {
        match idle_worker_rss_kib(method) {
            Some(kib) => println!("  {:<10} {kib} KiB", method.name()),
            None => println!("  {:<10} unavailable", method.name()),
        }
    }
    println!("\nVmRSS over 1 000 000 apply_async on Pool::new(2), after each 100 000 (KiB):");
    for (round, (parent, workers)) in memory_over_a_million_tasks().into_iter().enumerate() {
        println!(
            "  {:>9} tasks: parent {parent}, workers {workers}",
            (round + 1) * 100_000
        );
    }
}
