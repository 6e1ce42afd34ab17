//! Mirrors the `Pool(processes=3)` listing of tutorial note 004: five `run_task`s on a pool of
//! three workers. The PIDs in the output repeat: a pool's workers are long-lived processes
//! that take one task after another.
//!
//! What differs in Rust: each task returns its worker's PID, and the example ends by counting
//! the distinct ones (at most three). `--max-sleep-ms` bounds the random pause (default 1000).
//!
//!     cargo run --example pool_reuse [-- --max-sleep-ms N]

mod common;

use std::collections::BTreeSet;

use multiproc::Pool;

fn run_task((name, max_sleep_ms): (u32, u64)) -> u32 {
    let pid = std::process::id();
    println!("Task {name} (pid = {pid}) is running...");
    common::Jitter::new(max_sleep_ms, u64::from(pid) ^ u64::from(name) << 32).sleep();
    println!("Task {name} end.");
    pid
}

fn main() -> Result<(), multiproc::Error> {
    let max_sleep_ms: u64 = common::arg("--max-sleep-ms", 1000);
    println!("Current process {}.", std::process::id());
    let p = Pool::new(3)?;
    let pending: Vec<_> = (0..5)
        .map(|i| p.apply_async(run_task, (i, max_sleep_ms)))
        .collect::<Result<_, _>>()?;
    println!("Waiting for all subprocesses done...");
    p.close();
    p.join()?;
    let pids: BTreeSet<u32> = pending
        .into_iter()
        .map(|r| r.get())
        .collect::<Result<_, _>>()?;
    println!("All subprocesses done.");
    println!("5 tasks ran in {} worker processes: {pids:?}", pids.len());
    Ok(())
}
