//! Mirrors the "dead loop" listing of tutorial notes 001 and 003: one busy `loop()` thread per CPU.
//! In CPython the GIL lets only one of them run at a time, so the process shows about 100 % CPU
//! however many cores there are.
//!
//! What differs in Rust: there is no interpreter lock, so the same threads load every core. The
//! listing loops forever and asks you to watch a task manager; this example stops after
//! `--seconds` (default 5) and measures it instead: each thread reads its own CPU time from
//! `/proc/thread-self/schedstat`, and the total is compared with the wall-clock time.
//!
//!     cargo run --release --example multicore [-- --seconds S]

mod common;

use std::hint::black_box;
use std::thread;
use std::time::{Duration, Instant};

/// The CPU time the calling thread has used, from the kernel's scheduler statistics.
fn thread_cpu_time() -> std::io::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat")?;
    let ns = stat
        .split_whitespace()
        .next()
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| std::io::Error::other("unexpected /proc/thread-self/schedstat"))?;
    Ok(Duration::from_nanos(ns))
}

/// The listing's `loop()`, with an end: flip a bit until `deadline`.
fn busy_loop(deadline: Instant) -> std::io::Result<Duration> {
    let mut x = 0u64;
    while Instant::now() < deadline {
        for _ in 0..100_000 {
            x = black_box(x ^ 1);
        }
    }
    thread_cpu_time()
}

fn main() -> std::io::Result<()> {
    let seconds: f64 = common::arg("--seconds", 5.0);
    let cpus = multiproc::cpu_count();
    println!("{cpus} CPUs: starting {cpus} busy threads for {seconds} s");
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(seconds);
    let threads: Vec<_> = (0..cpus)
        .map(|i| {
            thread::Builder::new()
                .name(format!("loop-{i}"))
                .spawn(move || busy_loop(deadline))
        })
        .collect::<Result<_, _>>()?;
    let mut total = Duration::ZERO;
    for (i, t) in threads.into_iter().enumerate() {
        let cpu = t.join().expect("a busy thread panicked")?;
        println!("thread loop-{i}: {:.2} s of CPU", cpu.as_secs_f64());
        total += cpu;
    }
    let wall = start.elapsed();
    println!(
        "CPU use: {:.0} % of one core over {:.2} s (CPython's GIL would hold this near 100 %)",
        100.0 * total.as_secs_f64() / wall.as_secs_f64(),
        wall.as_secs_f64()
    );
    Ok(())
}
