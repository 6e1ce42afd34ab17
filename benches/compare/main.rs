//! The Rust half of the side-by-side comparison with CPython's `multiprocessing` (issue 7):
//! the same workloads as `python.py`, printed as one JSON object on stdout. `run.sh` runs both
//! halves in one go and renders the table and the plot; see `README.md` here.
//!
//! Conventions shared with `python.py`: latencies are medians in microseconds, rates are the
//! median of several trials; round trips and transfers pin both processes to CPU 0 (a wake-up
//! across this VM's CPUs costs tens of microseconds and would hide everything else).

#![warn(clippy::undocumented_unsafe_blocks)]

use std::time::Instant;

use multiproc::{Connection, Pipe, Process, StartMethod};

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

fn main() {
    // `cargo bench` passes `--bench`; anything else selects a quick run.
    let quick = std::env::args().any(|a| a == "--quick");
    let scale = |n: usize| if quick { (n / 10).max(3) } else { n };
    let mut rows: Vec<(String, f64, &str)> = Vec::new();
    for (method, n) in [
        (StartMethod::Fork, 300),
        (StartMethod::Forkserver, 300),
        (StartMethod::Spawn, 60),
    ] {
        let key = format!("process.start_join.{}", method.name());
        eprintln!("  {key}");
        rows.push((key, start_join(method, scale(n)), "us"));
    }
    pin_to_cpu0();
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
