//! A pool of worker processes: the tutorial's "5 tasks on 3 workers" (at most 3 pids), a map,
//! results as they finish, and a worker killed mid-task that takes down only its own task.
//!
//!     cargo run --example pool_recovery

use std::collections::HashSet;
use std::time::Duration;

use multiproc::{Error, Pool};

/// Runs in a worker: which process did the work, and the result.
fn square(x: u64) -> (u32, u64) {
    (std::process::id(), x * x)
}

/// Runs in a worker: a slow task.
fn slow_double(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(50 * (5 - x)));
    2 * x
}

/// Runs in a worker: dies the hard way.
fn crash(_: ()) -> u64 {
    std::process::abort()
}

fn main() -> Result<(), Error> {
    let pool = Pool::new(3)?;

    let results: Vec<_> = (0..5)
        .map(|x| pool.apply_async(square, x))
        .collect::<Result<_, _>>()?;
    let mut pids = HashSet::new();
    for result in results {
        let (pid, value) = result.get()?;
        pids.insert(pid);
        println!("worker {pid}: {value}");
    }
    println!("5 tasks ran on {} worker process(es)", pids.len());

    let squares: Vec<u64> = pool.map(square, 0..10)?.into_iter().map(|r| r.1).collect();
    println!("map: {squares:?}");

    print!("imap_unordered, in the order they finish:");
    for doubled in pool.imap_unordered(slow_double, 0..5, None)? {
        print!(" {}", doubled?);
    }
    println!();

    match pool.apply(crash, ()) {
        Err(e @ Error::WorkerLost { .. }) => println!("as expected: {e}"),
        other => println!("unexpected: {other:?}"),
    }
    println!("the pool carries on: {:?}", pool.apply(square, 12)?.1);

    pool.close();
    pool.join()
}
