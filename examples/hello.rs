//! The flagship demo: what multiproc does, in a few seconds.
//!
//! 1. CPU-bound work done sequentially, on threads and on a process `Pool`, with the
//!    speed-ups (Rust threads use every core; the point of the pool is isolation at the same
//!    speed, where CPython needs processes to use more than one core at all).
//! 2. Processes started by fork, spawn and forkserver, each reporting its PID and a result,
//!    and the pool's workers being reused across many tasks.
//! 3. A duplex pipe to a child, and a queue fed by two producer processes.
//! 4. A manager serving a queue over TCP on loopback to a worker process, on CPython's own
//!    wire protocol (a Python `BaseManager` client could connect in its place).
//!
//!     cargo run --release --example hello      # (plain `cargo run --example hello` works too)

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use multiproc::managers::{Manager, ManagerServer};
use multiproc::{current_process, ByteBuf, Connection, Pipe, Pool, Process, Queue, StartMethod};

/// CPU-bound work: count the primes below `limit`, by trial division.
fn count_primes(limit: u64) -> u64 {
    (2..limit)
        .filter(|&n| (2..).take_while(|d| d * d <= n).all(|d| n % d != 0))
        .count() as u64
}

/// Runs in a child: who it is, and a little work.
fn whoami(n: u64) -> (u32, String, u64) {
    let me = current_process();
    (me.pid, me.name, (1..=n).map(|i| i * i).sum())
}

/// A pool task that reports the worker's PID.
fn pid_of(_: u32) -> u32 {
    std::process::id()
}

/// Runs in a child: answers each line on its end of the pipe until the parent hangs up.
fn shout(conn: Connection) -> usize {
    let mut answered = 0;
    while let Ok(line) = conn.recv::<String>() {
        if conn.send(&line.to_uppercase()).is_err() {
            break;
        }
        answered += 1;
    }
    answered
}

/// Runs in a child: puts three numbered items on the queue.
fn produce((q, id): (Queue<(u32, u32)>, u32)) {
    for i in 1..=3 {
        q.put(&(id, i)).expect("put on the queue");
    }
}

/// Runs in a child: a manager client that squares numbers until it gets `None`.
fn square_worker((address, authkey): (String, ByteBuf)) -> u32 {
    let manager = Manager::connect(address.as_str(), &authkey).expect("connect to the manager");
    let tasks = manager
        .get_queue::<Option<u64>>("get_task_queue")
        .expect("tasks");
    let results = manager
        .get_queue::<String>("get_result_queue")
        .expect("results");
    let mut done = 0;
    while let Ok(Some(n)) = tasks.get() {
        results
            .put(&format!("{n} * {n} = {}", n * n))
            .expect("put a result");
        done += 1;
    }
    done
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    (f(), start.elapsed())
}

fn main() -> Result<(), multiproc::Error> {
    let cpus = multiproc::cpu_count();
    println!(
        "parent pid {} ({}), {cpus} CPUs",
        std::process::id(),
        current_process().name
    );

    // 1. The same CPU-bound work three ways.
    let jobs: Vec<u64> = vec![60_000; 4 * cpus];
    let (sequential, t_seq) = timed(|| jobs.iter().map(|&n| count_primes(n)).sum::<u64>());
    let (threaded, t_thr) = timed(|| {
        std::thread::scope(|s| {
            let chunks: Vec<_> = jobs
                .chunks(jobs.len().div_ceil(cpus))
                .map(|chunk| s.spawn(move || chunk.iter().map(|&n| count_primes(n)).sum::<u64>()))
                .collect();
            chunks
                .into_iter()
                .map(|h| h.join().expect("no panic"))
                .sum::<u64>()
        })
    });
    let pool = Pool::new(cpus)?;
    let (pooled, t_pool) = timed(|| pool.map(count_primes, jobs.clone()));
    let pooled: u64 = pooled?.into_iter().sum();
    assert_eq!((sequential, threaded), (pooled, pooled));
    println!("\n1. counting primes below 60 000, {} times:", jobs.len());
    println!(
        "   sequential         {:>8.1} ms",
        t_seq.as_secs_f64() * 1e3
    );
    for (name, t) in [("threads", t_thr), ("process Pool", t_pool)] {
        println!(
            "   {name:<18} {:>8.1} ms  speed-up {:.2}x",
            t.as_secs_f64() * 1e3,
            t_seq.as_secs_f64() / t.as_secs_f64()
        );
    }

    // 2. One child per start method; then the pool's workers reused over many tasks.
    println!("\n2. processes:");
    for (i, method) in StartMethod::all().into_iter().enumerate() {
        let n = 10 * (i as u64 + 1);
        let start = Instant::now();
        let mut child = Process::builder().start_method(method).spawn(whoami, n)?;
        let (pid, name, sum) = child.join()?;
        let t = start.elapsed();
        assert_eq!(pid, child.pid());
        println!(
            "   {method:>10}: pid {pid} ({name}) says 1²+…+{n}² = {sum}; start+join took {:.0} µs",
            t.as_secs_f64() * 1e6
        );
    }
    let pids: BTreeSet<u32> = pool.map(pid_of, 0..100)?.into_iter().collect();
    println!(
        "   100 pool tasks ran in {} worker processes (the pool has {}): {pids:?}",
        pids.len(),
        pool.processes()
    );
    pool.close();
    pool.join()?;

    // 3. A duplex pipe.
    println!("\n3. a pipe and a queue:");
    let (here, there) = Pipe::new()?;
    let mut child = Process::spawn(shout, there)?;
    for word in ["hello", "from", "the parent"] {
        here.send(&word)?;
        println!("   sent {word:?}, got back {:?}", here.recv::<String>()?);
    }
    drop(here);
    println!(
        "   child {} answered {} messages",
        child.pid(),
        child.join()?
    );
    let q = Queue::new()?;
    let producers = [
        Process::spawn(produce, (q.try_clone()?, 1))?,
        Process::spawn(produce, (q.try_clone()?, 2))?,
    ];
    let items: Vec<(u32, u32)> = (0..6).map(|_| q.get()).collect::<Result<_, _>>()?;
    for mut p in producers {
        p.join()?;
    }
    println!("   a queue fed by two producer processes delivered {items:?}");

    // 4. A manager serving queues on loopback, and a worker process using them over TCP.
    println!("\n4. a manager on loopback:");
    let authkey = b"abc";
    let mut server = ManagerServer::bind("127.0.0.1:0", authkey)?;
    let tasks = server.register_queue("get_task_queue", 0);
    let results = server.register_queue("get_result_queue", 0);
    let server = server.start_thread()?;
    let address = server.address().to_string();
    println!("   serving get_task_queue / get_result_queue on {address}");
    let mut worker = Process::spawn(square_worker, (address, ByteBuf::from(authkey.to_vec())))?;
    for n in 1..=5u64 {
        tasks.put(&Some(n))?;
    }
    tasks.put(&None::<u64>)?;
    for _ in 1..=5 {
        let r: String = results.get_timeout(Duration::from_secs(10))?;
        println!("   result: {r}");
    }
    println!("   worker {} did {} tasks", worker.pid(), worker.join()?);
    server.shutdown();
    Ok(())
}
