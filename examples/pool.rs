//! Mirrors the `Pool(4)` listing of tutorial notes 001 and 003: five `long_time_task`s go to a
//! pool of four worker processes with `apply_async`; four start at once and the fifth waits for
//! a free worker; each reports how long it ran; `close` and `join` wait for all of them.
//!
//! What differs in Rust: `apply_async` hands back an `AsyncResult`; the listing drops its
//! results, and this example asks each one, so that a task that failed (a panic, a worker
//! killed) is reported instead of silently lost. `--max-sleep-ms` bounds the random run time
//! (default 3000, as `random.random() * 3` seconds).
//!
//!     cargo run --example pool [-- --max-sleep-ms N]

mod common;

use std::time::Instant;

use multiproc::Pool;

fn long_time_task((name, max_sleep_ms): (u32, u64)) -> u32 {
    let pid = std::process::id();
    println!("Run task {name} ({pid})...");
    let start = Instant::now();
    common::Jitter::new(max_sleep_ms, u64::from(pid) ^ u64::from(name) << 32).sleep();
    println!(
        "Task {name} runs {:.2} seconds.",
        start.elapsed().as_secs_f64()
    );
    pid
}

fn main() -> Result<(), multiproc::Error> {
    let max_sleep_ms: u64 = common::arg("--max-sleep-ms", 3000);
    println!("Parent process {}.", std::process::id());
    let p = Pool::new(4)?;
    let pending: Vec<_> = (0..5)
        .map(|i| p.apply_async(long_time_task, (i, max_sleep_ms)))
        .collect::<Result<_, _>>()?;
    println!("Waiting for all subprocesses done...");
    p.close();
    p.join()?;
    for result in pending {
        result.get()?;
    }
    println!("All subprocesses done.");
    Ok(())
}
