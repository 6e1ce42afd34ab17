//! Managers next to their baselines, all measured in one run of this binary:
//!
//! - `call RTT`: one proxy call (`qsize()`) from a Rust client to a Rust server, against a raw
//!   8-byte TCP ping-pong (`TCP_NODELAY`, an echo thread) — the floor of any request/reply.
//! - `put+get pair`: `put` then `get` on a Rust proxy, against two raw ping-pongs.
//! - `connect`: [`Manager::connect`] (TCP connect, the six handshake frames, `dummy`, close),
//!   against a raw TCP connect + one 1-byte round trip + close.
//! - `CPython client connect` / `put+get`: an unmodified CPython client
//!   (`benches/managers_client.py`) against this crate's server and against a CPython
//!   `BaseManager` server (`tests/py/server.py`, started with `manager.start()`).
//! - `8 clients`: put+get pairs per second from the same 8 Rust client threads (one proxy each)
//!   against this crate's server and against the CPython server; for reference, the same
//!   clients doing two raw 8-byte ping-pongs per pair against an echo thread per connection.
//!
//! The latency rows run with the whole process (server threads and Python children included)
//! pinned to CPU 0, as the baselines in ../shared/baselines do for their "one CPU" rows: a
//! cross-CPU wake-up costs 12–50 µs on a small VM and would swamp the comparison. The
//! throughput rows run unpinned, both servers started after unpinning. The latency rows
//! interleave baseline and ours call by call and compare medians; the throughput rows
//! alternate three rounds of a second and keep each side's best rate. Either way a burst of
//! load from elsewhere on the machine (or a change of its state) does not land on one side
//! only.
//!
//! ```text
//! cargo bench --bench managers       # prints a markdown table with the ratios and targets
//! ```
//!
//! Without `python3` the CPython rows are skipped with a message.

#![warn(clippy::undocumented_unsafe_blocks)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use multiproc::managers::{Manager, ManagerServer, ServerHandle};

const KEY: &[u8] = b"bench key";
const CLIENTS: usize = 8;

fn key_hex() -> String {
    KEY.iter().map(|b| format!("{b:02x}")).collect()
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Pins this thread (and what it starts later) to CPU 0, or back to every CPU.
fn pin(cpu0_only: bool) {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    // SAFETY: an all-zero cpu_set_t is the empty set; CPU_SET writes inside it (CPU < 1024);
    // sched_setaffinity only reads `set` during the call.
    let ret = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for cpu in 0..if cpu0_only { 1 } else { cpus.min(1024) } {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    assert_eq!(
        ret,
        0,
        "sched_setaffinity: {}",
        std::io::Error::last_os_error()
    );
}

/// The medians of `n` timings each of `a` and `b`, in microseconds, the two interleaved one
/// call at a time (after `n / 10` warm-up pairs): whatever state the machine is in (load from
/// elsewhere, CPU frequency, scheduler placement) both see it alike.
fn paired_medians_us(n: usize, mut a: impl FnMut(), mut b: impl FnMut()) -> (f64, f64) {
    for _ in 0..n / 10 {
        a();
        b();
    }
    let time = |f: &mut dyn FnMut()| {
        let t0 = Instant::now();
        f();
        t0.elapsed().as_secs_f64() * 1e6
    };
    let (mut sa, mut sb): (Vec<f64>, Vec<f64>) =
        (0..n).map(|_| (time(&mut a), time(&mut b))).unzip();
    sa.sort_by(|x, y| x.total_cmp(y));
    sb.sort_by(|x, y| x.total_cmp(y));
    (sa[n / 2], sb[n / 2])
}

fn echo_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            std::thread::spawn(move || {
                s.set_nodelay(true).unwrap();
                let mut buf = [0u8; 8];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    address
}

fn rust_server() -> ServerHandle {
    let mut server = ManagerServer::bind("127.0.0.1:0", KEY).unwrap();
    server.register_queue("get_task_queue", 0);
    server.start_thread().unwrap()
}

/// A CPython manager server (`manager.start()`), reaped on drop.
struct PyServer {
    child: Child,
    port: u16,
}

impl PyServer {
    fn start() -> Option<PyServer> {
        let mut child = Command::new("python3")
            .arg(root().join("tests/py/server.py"))
            .args([key_hex().as_str(), "native"])
            .current_dir(root().join("tests/py"))
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .ok()?;
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut()?)
            .read_line(&mut line)
            .ok()?;
        let port = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(PyServer { child, port })
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        if let Some(stdin) = self.child.stdin.as_mut() {
            let _ = writeln!(stdin, "exit");
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The CPython client's medians (connect, put+get) against the server on `port`.
fn cpython_client(port: u16) -> Option<(f64, f64)> {
    let out = Command::new("python3")
        .arg(root().join("benches/managers_client.py"))
        .args([port.to_string(), key_hex(), "30".into(), "2000".into()])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let field = |name: &str| -> Option<f64> {
        let rest = &text[text.find(name)? + name.len() + 3..];
        rest.split([',', '}']).next()?.trim().parse().ok()
    };
    Some((field("connect_us")?, field("put_get_us")?))
}

/// Pairs per second from [`CLIENTS`] threads, `seconds` long: each thread makes its client
/// with `connect` (and warms it up there), then runs `pair` on it in a loop.
fn clients_rate<C>(
    seconds: f64,
    connect: impl Fn() -> C + Sync,
    pair: impl Fn(&mut C) + Sync,
) -> f64 {
    let start = std::sync::Barrier::new(CLIENTS + 1);
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..CLIENTS)
            .map(|_| {
                scope.spawn(|| {
                    let mut client = connect();
                    start.wait();
                    let mut pairs = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        pair(&mut client);
                        pairs += 1;
                    }
                    pairs
                })
            })
            .collect();
        start.wait();
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs_f64(seconds));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let total: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
        total as f64 / t0.elapsed().as_secs_f64()
    })
}

/// Put+get pairs per second from [`CLIENTS`] threads, `seconds` long, against `port`.
fn throughput(port: u16, seconds: f64) -> f64 {
    clients_rate(
        seconds,
        || {
            let q = Manager::connect(("127.0.0.1", port), KEY)
                .unwrap()
                .get_queue::<u64>("get_task_queue")
                .unwrap();
            q.put(&0).unwrap();
            q.get().unwrap();
            q
        },
        |q| {
            q.put(&1).unwrap();
            q.get().unwrap();
        },
    )
}

/// Pairs of raw 8-byte ping-pongs per second from [`CLIENTS`] threads against the echo server
/// (one thread per connection): what put+get pairs would reach if the server cost nothing.
fn raw_throughput(echo: std::net::SocketAddr, seconds: f64) -> f64 {
    clients_rate(
        seconds,
        || {
            let s = TcpStream::connect(echo).unwrap();
            s.set_nodelay(true).unwrap();
            s
        },
        |s| {
            let mut buf = [0u8; 8];
            for _ in 0..2 {
                s.write_all(&[1; 8]).unwrap();
                s.read_exact(&mut buf).unwrap();
            }
        },
    )
}

struct Row {
    measure: &'static str,
    ours: String,
    baseline: String,
    ratio: f64,
    target: &'static str,
}

fn main() {
    // `cargo test` runs bench targets with --bench only under `cargo bench`; be quiet otherwise.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let python = Command::new("python3")
        .arg("-c")
        .arg("pass")
        .status()
        .is_ok_and(|s| s.success());
    let mut rows = Vec::new();

    pin(true);
    let echo = echo_server();
    let server = rust_server();
    {
        let mut raw = TcpStream::connect(echo).unwrap();
        raw.set_nodelay(true).unwrap();
        let mut buf = [0u8; 8];
        let mut ping = || {
            raw.write_all(&[1; 8]).unwrap();
            raw.read_exact(&mut buf).unwrap();
        };
        let q = Manager::connect(server.address(), KEY)
            .unwrap()
            .get_queue::<u64>("get_task_queue")
            .unwrap();
        // Baseline and ours interleaved call by call (see `paired_medians_us`).
        let (raw_rtt, call) = paired_medians_us(30_000, &mut ping, || {
            q.qsize().unwrap();
        });
        let (raw_pair, pair) = paired_medians_us(
            15_000,
            || {
                ping();
                ping();
            },
            || {
                q.put(&7).unwrap();
                q.get().unwrap();
            },
        );
        rows.push(Row {
            measure: "proxy call RTT (qsize), one CPU",
            ours: format!("{call:.1} µs"),
            baseline: format!("{raw_rtt:.1} µs raw TCP ping-pong"),
            ratio: call / raw_rtt,
            target: "≤ 1.1",
        });
        rows.push(Row {
            measure: "put+get pair, one CPU",
            ours: format!("{pair:.1} µs"),
            baseline: format!("{raw_pair:.1} µs two raw ping-pongs"),
            ratio: pair / raw_pair,
            target: "≤ 1.1",
        });
    }
    {
        let (raw_connect, connect) = paired_medians_us(
            2_000,
            || {
                let mut s = TcpStream::connect(echo).unwrap();
                s.set_nodelay(true).unwrap();
                s.write_all(&[1]).unwrap();
                let mut b = [0u8; 1];
                s.read_exact(&mut b).unwrap();
            },
            || {
                Manager::connect(server.address(), KEY).unwrap();
            },
        );
        rows.push(Row {
            measure: "connect + handshake + dummy, one CPU",
            ours: format!("{connect:.1} µs"),
            baseline: format!("{raw_connect:.1} µs raw connect + 1 RTT + close"),
            ratio: connect / raw_connect,
            target: "≤ 3",
        });
    }
    if python {
        match (PyServer::start(), cpython_client(server.address().port())) {
            (Some(py), Some((our_connect, our_pair))) => {
                if let Some((py_connect, py_pair)) = cpython_client(py.port) {
                    rows.push(Row {
                        measure: "CPython client connect(), one CPU",
                        ours: format!("{our_connect:.0} µs to our server"),
                        baseline: format!("{py_connect:.0} µs to a CPython server"),
                        ratio: py_connect / our_connect,
                        target: "(speed-up)",
                    });
                    rows.push(Row {
                        measure: "CPython client put+get pair, one CPU",
                        ours: format!("{our_pair:.1} µs to our server"),
                        baseline: format!("{py_pair:.1} µs to a CPython server"),
                        ratio: py_pair / our_pair,
                        target: "(speed-up)",
                    });
                }
            }
            _ => println!("SKIPPED: the CPython server or client did not start"),
        }
    } else {
        println!("SKIPPED: python3 not found; CPython comparisons not run");
    }
    server.shutdown();
    pin(false);
    if python {
        // Both servers start unpinned: threads inherit the affinity of the thread that spawns
        // them, so the server above (started on CPU 0 for the latency rows) would be held to
        // one CPU while the CPython server had both.
        let server = rust_server();
        if let Some(py) = PyServer::start() {
            // Three rounds of a second each, alternating, each side keeping its best.
            let echo = echo_server();
            let (mut ours, mut theirs, mut raw) = (0f64, 0f64, 0f64);
            for _ in 0..3 {
                ours = ours.max(throughput(server.address().port(), 1.0));
                theirs = theirs.max(throughput(py.port, 1.0));
                raw = raw.max(raw_throughput(echo, 1.0));
            }
            rows.push(Row {
                measure: "raw TCP ping-pong pairs/s, 8 Rust clients (reference)",
                ours: format!("{ours:.0}/s from our server"),
                baseline: format!("{raw:.0}/s from an echo thread per connection"),
                ratio: ours / raw,
                target: "(reference)",
            });
            rows.push(Row {
                measure: "put+get pairs/s, 8 Rust clients",
                ours: format!("{ours:.0}/s from our server"),
                baseline: format!("{theirs:.0}/s from a CPython server"),
                ratio: ours / theirs,
                target: "≥ 3",
            });
        }
        server.shutdown();
    }

    println!("| measure | multiproc | baseline (same run) | ratio | target |");
    println!("|---|---:|---:|---:|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {:.2} | {} |",
            r.measure, r.ours, r.baseline, r.ratio, r.target
        );
    }
}
