//! Queue throughput, one producer process and one consumer process, next to the raw OS
//! primitive underneath and to Python's `multiprocessing.Queue`, all in the same run
//! (benches/queue_py.py runs the Python side).
//!
//! Workloads (one producer, the bench process; one consumer, a child process; timed from the
//! first put until the consumer reports it has taken the last item; median of 5 runs after a
//! warm-up). The whole set, Python's side included, runs in 3 rounds back to back; each ratio
//! is taken within a round and the table gives the median and range over the rounds (this
//! machine drifts between fast and slow states):
//! - 16-byte items (`bytes` of 16, pickled), 1 000 000 of them: items per second.
//!   - raw baseline: a pipe carrying the same 16 bytes, one `write` and one `read` per item.
//! - 1 MiB items, 200 of them: bytes per second, through an unbounded queue (the producer
//!   runs ahead, its feeder thread holding what the ring cannot) and through
//!   `Queue::bounded(2)` (the producer waits for room, as the raw writer waits for buffer
//!   space).
//!   - raw baseline: an `AF_UNIX` stream socket pair with default buffers, one `write` of the
//!     whole item per item, the reader reading each item whole.
//!
//! ```text
//! cargo bench --bench queue
//! ```
//!
//! Targets (issue 4): 16-byte items ≥ 10× Python's `multiprocessing.Queue`; 1 MiB items ≥ 90 %
//! of the raw bandwidth. Without `python3` on the PATH the Python column is skipped, with a
//! message saying so.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::Command;
use std::time::Instant;

use multiproc::{ByteBuf, Connection, Pipe, Process, Queue, SimpleQueue};
use serde::de::DeserializeOwned;
use serde::Serialize;

const SMALL_ITEMS: usize = 1_000_000;
const SMALL: usize = 16;
const BIG_ITEMS: usize = 200;
const MIB: usize = 1 << 20;
const RUNS: usize = 5;
/// Rounds of every workload, Python's included, one after the other.
const ROUNDS: usize = 3;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

/// Items (or bytes) per second of `RUNS` runs of `run`, which returns the seconds it took.
fn rate(per_run: usize, mut run: impl FnMut() -> f64) -> f64 {
    run(); // warm-up
    median((0..RUNS).map(|_| per_run as f64 / run()).collect())
}

/// What a run counts: items for small items, bytes for 1 MiB ones.
fn per_run(n: usize, item_len: usize) -> usize {
    if item_len >= MIB {
        n * item_len
    } else {
        n
    }
}

// ---------------------------------------------------------------------------------------------
// multiproc

/// The two queue types, for one measuring routine.
trait BenchQueue: Serialize + DeserializeOwned + Sized + 'static {
    fn put(&self, item: &ByteBuf);
    fn get(&self);
    fn dup(&self) -> Self;
}

impl BenchQueue for Queue<ByteBuf> {
    fn put(&self, item: &ByteBuf) {
        Queue::put(self, item).expect("put");
    }
    fn get(&self) {
        Queue::get(self).expect("get");
    }
    fn dup(&self) -> Self {
        self.try_clone().expect("clone")
    }
}

impl BenchQueue for SimpleQueue<ByteBuf> {
    fn put(&self, item: &ByteBuf) {
        SimpleQueue::put(self, item).expect("put");
    }
    fn get(&self) {
        SimpleQueue::get(self).expect("get");
    }
    fn dup(&self) -> Self {
        self.try_clone().expect("clone")
    }
}

/// The consumer: for each run, takes `n` items and acks on `done`.
fn consume<Q: BenchQueue>((q, done, n, runs): (Q, Connection, usize, usize)) {
    for _ in 0..runs {
        for _ in 0..n {
            q.get();
        }
        done.send(&()).expect("ack");
    }
}

/// Items (or bytes) per second through `q`, from this process to a consumer child.
fn queue_rate<Q: BenchQueue>(q: Q, item_len: usize, n: usize) -> f64 {
    let (done, theirs) = Pipe::new().expect("pipe");
    let mut child =
        Process::spawn(consume::<Q>, (q.dup(), theirs, n, RUNS + 1)).expect("spawn consumer");
    let item = ByteBuf::from(vec![b'x'; item_len]);
    let r = rate(per_run(n, item_len), || {
        let start = Instant::now();
        for _ in 0..n {
            q.put(&item);
        }
        done.recv::<()>().expect("ack");
        start.elapsed().as_secs_f64()
    });
    child.join().expect("consumer");
    r
}

// ---------------------------------------------------------------------------------------------
// raw OS baselines: a forked child on raw descriptors

fn raw_write_all(fd: RawFd, mut buf: &[u8]) {
    while !buf.is_empty() {
        // SAFETY: `buf` is valid for reads of its length.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            assert_eq!(
                std::io::Error::last_os_error().kind(),
                std::io::ErrorKind::Interrupted
            );
            continue;
        }
        buf = &buf[n as usize..];
    }
}

fn raw_read_exact(fd: RawFd, buf: &mut [u8]) -> bool {
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: the tail of `buf` is valid for writes of its length.
        let n = unsafe { libc::read(fd, buf[got..].as_mut_ptr().cast(), buf.len() - got) };
        match n {
            0 => return false,
            n if n < 0 => {
                if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                    return false;
                }
            }
            n => got += n as usize,
        }
    }
    true
}

/// Forks a child that reads `item_len`-byte items from `data`, `n` per run, and writes one byte
/// to `ack` after each run, until end of stream. Returns its pid.
fn raw_consumer(
    data: &OwnedFd,
    ack: &OwnedFd,
    ours: [&OwnedFd; 2],
    item_len: usize,
    n: usize,
) -> libc::pid_t {
    let mut buf = vec![0u8; item_len];
    // SAFETY: the child runs only libc calls (close, read, write, _exit) on memory it owns and
    // never returns into Rust code that could run destructors or take locks.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        for fd in ours {
            // SAFETY: in the child: our copies of the parent's ends, closed by number; their
            // OwnedFds are never dropped, because this branch ends in _exit.
            unsafe { libc::close(fd.as_raw_fd()) };
        }
        'runs: loop {
            for _ in 0..n {
                if !raw_read_exact(data.as_raw_fd(), &mut buf) {
                    break 'runs;
                }
            }
            raw_write_all(ack.as_raw_fd(), &[1]);
        }
        // SAFETY: _exit ends the child without running the parent's destructors.
        unsafe { libc::_exit(0) }
    }
    pid
}

fn raw_pair(kind: &str) -> (OwnedFd, OwnedFd) {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` is a valid out-array of two descriptors.
    let ret = unsafe {
        if kind == "pipe" {
            libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC)
        } else {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        }
    };
    assert_eq!(ret, 0, "{kind}: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just returned by the kernel and are owned by nothing else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// Raw items per second (or bytes per second): a `kind` ("pipe" or "socket") carrying
/// `item_len`-byte items, one write per item.
fn raw_rate(kind: &str, item_len: usize, n: usize) -> f64 {
    let (data_r, data_w) = raw_pair(kind);
    let (ack_r, ack_w) = raw_pair("pipe");
    let pid = raw_consumer(&data_r, &ack_w, [&data_w, &ack_r], item_len, n);
    drop((data_r, ack_w));
    let item = vec![b'x'; item_len];
    let r = rate(per_run(n, item_len), || {
        let start = Instant::now();
        for _ in 0..n {
            raw_write_all(data_w.as_raw_fd(), &item);
        }
        let mut ack = [0u8];
        assert!(
            raw_read_exact(ack_r.as_raw_fd(), &mut ack),
            "raw consumer died"
        );
        start.elapsed().as_secs_f64()
    });
    drop(data_w);
    let mut status = 0;
    // SAFETY: reaps our own child; `status` is a valid out-pointer.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    r
}

// ---------------------------------------------------------------------------------------------
// Python

/// Python's figures from benches/queue_py.py's JSON line: (small items/s, big bytes/s).
fn python_version() -> Option<String> {
    let out = Command::new("python3")
        .args(["-c", "import platform; print(platform.python_version())"])
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn python() -> Option<(String, f64, f64)> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/queue_py.py");
    let out = Command::new("python3")
        .args([script, "--small-items", &SMALL_ITEMS.to_string()])
        .args([
            "--big-items",
            &BIG_ITEMS.to_string(),
            "--runs",
            &RUNS.to_string(),
        ])
        .output();
    let out = match out {
        Ok(out) if out.status.success() => out,
        Ok(out) => {
            eprintln!(
                "python3 failed ({}): skipping the Python column",
                out.status
            );
            eprintln!("{}", String::from_utf8_lossy(&out.stderr));
            return None;
        }
        Err(e) => {
            eprintln!("python3 not runnable ({e}): skipping the Python column");
            return None;
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| -> Option<f64> {
        let at = text.find(&format!("\"{name}\":"))? + name.len() + 3;
        let rest = text[at..].trim_start();
        let end = rest.find([',', '}']).unwrap_or(rest.len());
        rest[..end].trim().trim_matches('"').parse().ok()
    };
    let version = text
        .split("\"python\":")
        .nth(1)
        .and_then(|r| r.split('"').nth(1))
        .unwrap_or("?")
        .to_string();
    Some((
        version,
        field("small_items_per_s")?,
        field("big_bytes_per_s")?,
    ))
}

/// One round of every workload: values keyed by name (NaN where not run).
fn round(
    wants: &dyn Fn(&str) -> bool,
    with_python: bool,
) -> std::collections::BTreeMap<&'static str, f64> {
    let mut r = std::collections::BTreeMap::new();
    if wants("small") {
        r.insert(
            "small_ours",
            queue_rate(Queue::new().expect("queue"), SMALL, SMALL_ITEMS),
        );
        let simple = SimpleQueue::new().expect("queue");
        r.insert("small_simple", queue_rate(simple, SMALL, SMALL_ITEMS / 4));
        r.insert("small_raw", raw_rate("pipe", SMALL, SMALL_ITEMS));
    }
    if wants("big") {
        r.insert(
            "big_ours",
            queue_rate(Queue::new().expect("queue"), MIB, BIG_ITEMS),
        );
        let bounded = Queue::bounded(2).expect("queue");
        r.insert("big_bounded", queue_rate(bounded, MIB, BIG_ITEMS));
        r.insert("big_raw", raw_rate("socket", MIB, BIG_ITEMS));
    }
    if with_python {
        if let Some((_, small, big)) = python() {
            r.insert("small_py", small);
            r.insert("big_py", big);
        }
    }
    r
}

fn main() {
    // `cargo bench --bench queue -- small` (or `big`) runs one workload, once, without Python.
    let only: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let wants = |name: &str| only.as_deref().is_none_or(|o| o == name);
    let rounds = if only.is_some() { 1 } else { ROUNDS };
    let started = Instant::now();
    // This machine drifts between fast and slow states over seconds: every ratio is taken
    // within one round, where both sides ran back to back, and the table gives the median and
    // the range over the rounds.
    let results: Vec<_> = (0..rounds).map(|_| round(&wants, only.is_none())).collect();
    let values = |key: &str| -> Vec<f64> {
        results
            .iter()
            .map(|r| r.get(key).copied().unwrap_or(f64::NAN))
            .collect()
    };
    let mid = |key: &str| median(values(key));
    let ratio = |ours: &str, base: &str, percent: bool| -> String {
        let mut ratios: Vec<f64> = values(ours)
            .iter()
            .zip(values(base))
            .map(|(o, b)| o / b)
            .filter(|x| x.is_finite())
            .collect();
        if ratios.is_empty() {
            return "—".into();
        }
        ratios.sort_by(|a, b| a.total_cmp(b));
        let (lo, m, hi) = (
            ratios[0],
            ratios[ratios.len() / 2],
            ratios[ratios.len() - 1],
        );
        if percent {
            format!("{:.0}% ({:.0}–{:.0}%)", 100.0 * m, 100.0 * lo, 100.0 * hi)
        } else {
            format!("{m:.1}× ({lo:.1}–{hi:.1}×)")
        }
    };
    let items = |x: f64| {
        if x.is_finite() {
            format!("{:.2} M items/s", x / 1e6)
        } else {
            "—".into()
        }
    };
    let bytes = |x: f64| {
        if x.is_finite() {
            format!("{:.2} GiB/s", x / (1u64 << 30) as f64)
        } else {
            "—".into()
        }
    };
    println!();
    println!(
        "Queue, 1 producer process -> 1 consumer process; {rounds} round(s), each the median of \
         {RUNS} runs; figures are medians over the rounds, ratios the median (range) of the \
         per-round ratios"
    );
    println!();
    println!(
        "| measure | multiproc | raw baseline | vs raw | Python mp.Queue | vs Python | target |"
    );
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| Queue, 16-byte items | {} | {} (pipe, one write per item) | {} | {} | {} | ≥ 10× Python |",
        items(mid("small_ours")),
        items(mid("small_raw")),
        ratio("small_ours", "small_raw", false),
        items(mid("small_py")),
        ratio("small_ours", "small_py", false),
    );
    println!(
        "| SimpleQueue, 16-byte items | {} | {} | {} | — | {} | — |",
        items(mid("small_simple")),
        items(mid("small_raw")),
        ratio("small_simple", "small_raw", false),
        ratio("small_simple", "small_py", false),
    );
    println!(
        "| Queue, 1 MiB items | {} | {} (socketpair, default buffers) | {} | {} | {} | ≥ 90% of raw |",
        bytes(mid("big_ours")),
        bytes(mid("big_raw")),
        ratio("big_ours", "big_raw", true),
        bytes(mid("big_py")),
        ratio("big_ours", "big_py", false),
    );
    println!(
        "| Queue::bounded(2), 1 MiB items | {} | {} | {} | {} | {} | ≥ 90% of raw |",
        bytes(mid("big_bounded")),
        bytes(mid("big_raw")),
        ratio("big_bounded", "big_raw", true),
        bytes(mid("big_py")),
        ratio("big_bounded", "big_py", false),
    );
    if only.is_none() {
        if let Some(version) = python_version() {
            println!();
            println!("Python: {version}");
        }
    }
    println!("(whole run: {:.0} s)", started.elapsed().as_secs_f64());
}
