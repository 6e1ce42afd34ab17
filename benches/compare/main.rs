//! The Rust half of the side-by-side comparison with CPython's `multiprocessing` (issue 7):
//! the same workloads as `python.py`, printed as one JSON object on stdout. `run.sh` runs both
//! halves in one go and renders the table and the plot; see `README.md` here.
//!
//! Conventions shared with `python.py`: latencies are medians in microseconds, rates are the
//! median of several trials; round trips and transfers pin both processes to CPU 0 (a wake-up
//! across this VM's CPUs costs tens of microseconds and would hide everything else).

#![warn(clippy::undocumented_unsafe_blocks)]

use std::time::Instant;

use multiproc::managers::{Manager, ManagerServer};
use multiproc::{ByteBuf, Connection, Lock, Pipe, Pool, Process, Queue, StartMethod};

fn noop(_: ()) {}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// Pins the calling thread (and the children it forks from now on) to CPU 0. Children of the
/// forkserver inherit the server's affinity instead, so they pin themselves.
fn pin_to_cpu0() {
    // SAFETY: an all-zero cpu_set_t is the empty set; CPU_SET writes inside it;
    // sched_setaffinity reads `set` for the duration of the call.
    let ret = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    assert_eq!(
        ret,
        0,
        "sched_setaffinity: {}",
        std::io::Error::last_os_error()
    );
}

/// Median microseconds of start+join of a no-op child.
fn start_join(method: StartMethod, n: usize) -> f64 {
    let builder = || Process::builder().start_method(method);
    for _ in 0..3 {
        builder().spawn(noop, ()).unwrap().join().unwrap();
    }
    let samples = (0..n)
        .map(|_| {
            let t = Instant::now();
            let mut p = builder().spawn(noop, ()).unwrap();
            p.join().unwrap();
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    median(samples)
}

fn echo_bytes(conn: Connection) {
    pin_to_cpu0();
    while let Ok(msg) = conn.recv_bytes() {
        if conn.send_bytes(&msg).is_err() {
            break;
        }
    }
}

fn echo_pickled(conn: Connection) {
    pin_to_cpu0();
    while let Ok(value) = conn.recv::<(i64, String)>() {
        if conn.send(&value).is_err() {
            break;
        }
    }
}

/// Median microseconds per round trip, over `trials` batches of `n`.
fn round_trip(pickled: bool, n: usize, trials: usize) -> f64 {
    let (here, there) = Pipe::new().unwrap();
    let mut child = if pickled {
        Process::spawn(echo_pickled, there).unwrap()
    } else {
        Process::spawn(echo_bytes, there).unwrap()
    };
    let value = (42i64, "abc".to_string());
    let one = || {
        if pickled {
            here.send(&value).unwrap();
            here.recv::<(i64, String)>().unwrap();
        } else {
            here.send_bytes(b"8 bytes!").unwrap();
            here.recv_bytes().unwrap();
        }
    };
    for _ in 0..1000 {
        one();
    }
    let samples = (0..trials)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..n {
                one();
            }
            t.elapsed().as_secs_f64() * 1e6 / n as f64
        })
        .collect();
    drop(here);
    child.join().unwrap();
    median(samples)
}

fn sink((conn, n): (Connection, usize)) {
    pin_to_cpu0();
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..n {
        conn.recv_bytes_into(&mut buf).unwrap();
    }
    conn.send_bytes(b"done").unwrap();
}

/// Median MB/s (10^6 bytes) of 1 MiB messages one way, over `trials` runs of `n` messages.
fn bandwidth(n: usize, trials: usize) -> f64 {
    let payload = vec![7u8; 1 << 20];
    let samples = (0..trials)
        .map(|_| {
            let (here, there) = Pipe::new().unwrap();
            let mut child = Process::spawn(sink, (there, n)).unwrap();
            let t = Instant::now();
            for _ in 0..n {
                here.send_bytes(&payload).unwrap();
            }
            here.recv_bytes().unwrap();
            let mbps = (n << 20) as f64 / t.elapsed().as_secs_f64() / 1e6;
            child.join().unwrap();
            mbps
        })
        .collect();
    median(samples)
}

fn noop_task(_: u64) {}

fn square(x: u64) -> u64 {
    x * x
}

/// Median rate (items per second) of `trials` runs of `work`, which handles `items` items.
fn rate(items: usize, trials: usize, mut work: impl FnMut()) -> f64 {
    work();
    let samples = (0..trials)
        .map(|_| {
            let t = Instant::now();
            work();
            items as f64 / t.elapsed().as_secs_f64()
        })
        .collect();
    median(samples)
}

/// The pool workloads of issue 5, on a pool of `cpu_count()` workers.
fn pool_rows(scale: impl Fn(usize) -> usize, rows: &mut Vec<(String, f64, &'static str)>) {
    let pool = Pool::new(multiproc::cpu_count()).unwrap();
    let n = scale(20_000);
    eprintln!("  pool.apply_async_noop");
    let r = rate(n, 5, || {
        let pending: Vec<_> = (0..n as u64)
            .map(|i| pool.apply_async(noop_task, i).unwrap())
            .collect();
        pending.into_iter().for_each(|p| p.get().unwrap());
    });
    rows.push(("pool.apply_async_noop".into(), r, "tasks/s"));
    let n = scale(100_000);
    eprintln!("  pool.map");
    let r = rate(n, 5, || {
        pool.map_chunked(square, 0..n as u64, 1).unwrap();
    });
    rows.push(("pool.map_chunksize1".into(), r, "items/s"));
    let r = rate(n, 5, || {
        pool.map(square, 0..n as u64).unwrap();
    });
    rows.push(("pool.map_default".into(), r, "items/s"));
    pool.close();
    pool.join().unwrap();
}

/// The consumer of the queue rows: per run, takes `n` items and acks.
fn queue_consumer((q, done, n, runs): (Queue<ByteBuf>, Connection, usize, usize)) {
    for _ in 0..runs {
        for _ in 0..n {
            q.get().unwrap();
        }
        done.send(&()).unwrap();
    }
}

/// One producer (here) and one consumer process: median items per second over `trials` runs of
/// `n` items of `len` bytes, from the first put to the consumer's ack.
fn queue_rate(len: usize, n: usize, trials: usize) -> f64 {
    let q = Queue::new().unwrap();
    let (done, theirs) = Pipe::new().unwrap();
    let mut child = Process::spawn(
        queue_consumer,
        (q.try_clone().unwrap(), theirs, n, trials + 1),
    )
    .unwrap();
    let item = ByteBuf::from(vec![b'x'; len]);
    let r = rate(n, trials, || {
        for _ in 0..n {
            q.put(&item).unwrap();
        }
        done.recv::<()>().unwrap();
    });
    child.join().unwrap();
    r
}

/// An uncontended acquire+release pair of a cross-process `Lock`: median ns.
fn lock_pair(n: usize) -> f64 {
    let lock = Lock::new().unwrap();
    let samples = (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..n {
                drop(std::hint::black_box(lock.acquire()));
            }
            t.elapsed().as_secs_f64() * 1e9 / n as f64
        })
        .collect();
    median(samples)
}

/// A put+get pair on a manager's queue over loopback, both ends on CPU 0: median µs.
fn manager_round_trip(n: usize) -> f64 {
    let mut server = ManagerServer::bind("127.0.0.1:0", b"abc").unwrap();
    server.register_queue("get_queue", 0);
    let server = server.start_thread().unwrap();
    let manager = Manager::connect(server.address(), b"abc").unwrap();
    let queue = manager.get_queue::<i64>("get_queue").unwrap();
    let one = || {
        queue.put(&7).unwrap();
        queue.get().unwrap();
    };
    for _ in 0..200 {
        one();
    }
    let samples = (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..n {
                one();
            }
            t.elapsed().as_secs_f64() * 1e6 / n as f64
        })
        .collect();
    drop(queue);
    drop(manager);
    server.shutdown();
    median(samples)
}

fn main() {
    // `cargo bench` passes `--bench`; anything else selects a quick run.
    let quick = std::env::args().any(|a| a == "--quick");
    let scale = |n: usize| if quick { (n / 10).max(3) } else { n };
    let mut rows: Vec<(String, f64, &'static str)> = Vec::new();
    for (method, n) in [
        (StartMethod::Fork, 300),
        (StartMethod::Forkserver, 300),
        (StartMethod::Spawn, 60),
    ] {
        let key = format!("process.start_join.{}", method.name());
        eprintln!("  {key}");
        rows.push((key, start_join(method, scale(n)), "us"));
    }
    pool_rows(scale, &mut rows);
    eprintln!("  queue");
    rows.push((
        "queue.16B".into(),
        queue_rate(16, scale(250_000), 5),
        "items/s",
    ));
    rows.push((
        "queue.1mib".into(),
        queue_rate(1 << 20, scale(200), 5) * (1 << 20) as f64 / 1e6,
        "MB/s",
    ));
    eprintln!("  lock");
    rows.push(("lock.pair".into(), lock_pair(scale(1_000_000)), "ns"));
    pin_to_cpu0();
    eprintln!("  manager.queue_rtt");
    rows.push((
        "manager.queue_rtt".into(),
        manager_round_trip(scale(2_000)),
        "us",
    ));
    eprintln!("  pipe.rtt");
    rows.push((
        "pipe.rtt.send_bytes_8B".into(),
        round_trip(false, scale(20_000), 5),
        "us",
    ));
    rows.push((
        "pipe.rtt.send_pickled".into(),
        round_trip(true, scale(20_000), 5),
        "us",
    ));
    eprintln!("  pipe.1mib");
    rows.push((
        "pipe.1mib.send_bytes".into(),
        bandwidth(scale(500), 5),
        "MB/s",
    ));
    let body: Vec<String> = rows
        .iter()
        .map(|(k, v, unit)| format!("  \"{k}\": {{\"value\": {v:.3}, \"unit\": \"{unit}\"}}"))
        .collect();
    println!("{{\n{}\n}}", body.join(",\n"));
}
