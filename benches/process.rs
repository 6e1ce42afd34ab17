//! What multiproc costs next to the raw system calls it is built on, each measured against its
//! baseline in the same run of this binary, so that the ratios mean something on a noisy machine.
//!
//! - `spawn_join`: start and join a child that does nothing. `multiproc/{fork,spawn,forkserver}`
//!   against `raw/fork_exit_waitpid` (`fork`, the child `_exit(0)`s, `waitpid`) and
//!   `raw/posix_spawn_self` (`posix_spawn` of this very binary with `MULTIPROC_BENCH_NOOP=1`, which
//!   a pre-main hook below turns into an immediate `_exit(0)`: exactly exec plus the loader). The
//!   forkserver is started before it is measured.
//! - `pipe_rtt`: an 8-byte round trip parent → child → parent. `raw/socketpair_same_cpu` (a forked
//!   child echoing with `read`/`write` on an `AF_UNIX` stream socket pair) against
//!   `multiproc/send_bytes_same_cpu` (`send_bytes`/`recv_bytes`) and
//!   `multiproc/send_recv_pickled_same_cpu` (`send(&u64)`/`recv::<u64>`), children started by
//!   the default start method.
//! - `bandwidth_1mib`: one-way 1 MiB messages, the receiver answering each with a 1-byte ack.
//!   `raw/socketpair_same_cpu` (`write` / `read` into a reused buffer) against
//!   `multiproc/send_bytes_same_cpu` (`send_bytes` / `recv_bytes_into` into a reused buffer).
//!
//! In `pipe_rtt` and `bandwidth_1mib` the parent and the child are both pinned to CPU 0
//! (`sched_setaffinity`): a wake-up on the other CPU costs 12–50 µs on a small VM and would swamp
//! the comparison. The parent's affinity is restored, and every child joined or reaped, when each
//! benchmark ends.
//!
//! Run it, then print the ratios against the targets:
//!
//! ```text
//! cargo bench --bench process
//! python3 benches/ratios.py            # reads ./target/criterion
//! ```
//!
//! With `CARGO_TARGET_DIR` set, pass it on: `python3 benches/ratios.py --target-dir "$CARGO_TARGET_DIR"`.

#![warn(clippy::undocumented_unsafe_blocks)]

use std::ffi::{CStr, CString};
use std::hint::black_box;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStringExt;
use std::sync::Once;
use std::time::Duration;

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use multiproc::{Connection, Pipe, Process, StartMethod};

/// Set in the environment of the `raw/posix_spawn_self` child, which then exits before `main`.
const NOOP_ENV: &CStr = c"MULTIPROC_BENCH_NOOP";
/// The CPU that both ends of the pipe benchmarks run on.
const CPU: usize = 0;
/// The round-trip payload.
const RTT_PAYLOAD: u64 = 0x0102_0304_0506_0708;
/// The bandwidth message size.
const MIB: usize = 1 << 20;

/// The `raw/posix_spawn_self` child: exit at once, before the Rust runtime or `main` runs, so
/// that the raw figure is exec plus the dynamic loader and nothing else.
#[ctor::ctor(unsafe)]
fn noop_child_exits_before_main() {
    // SAFETY: getenv with a valid C string; before main the process is single-threaded and
    // nothing modifies the environment concurrently. _exit takes no pointers.
    unsafe {
        if !libc::getenv(NOOP_ENV.as_ptr()).is_null() {
            libc::_exit(0);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Raw helpers (libc only; also used in forked children, where they must stay async-signal-safe).

/// Writes all of `buf`, retrying on `EINTR`. False if the peer is gone.
fn raw_write_all(fd: RawFd, mut buf: &[u8]) -> bool {
    while !buf.is_empty() {
        // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the duration of the call.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return false;
        }
        buf = &buf[n as usize..];
    }
    true
}

/// Reads exactly `buf.len()` bytes, retrying on `EINTR`. False on end of stream or error.
fn raw_read_exact(fd: RawFd, buf: &mut [u8]) -> bool {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: `rest` is valid for writes of `rest.len()` bytes for the duration of the call.
        let n = unsafe { libc::read(fd, rest.as_mut_ptr().cast(), rest.len()) };
        match n {
            0 => return false,
            n if n < 0 => {
                if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                    return false;
                }
            }
            n => filled += n as usize,
        }
    }
    true
}

/// Reaps `pid`, retrying on `EINTR`; panics unless it exited with status 0.
fn raw_waitpid(pid: libc::pid_t) {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid out-pointer for the duration of the call.
        let ret = unsafe { libc::waitpid(pid, &mut status, 0) };
        if ret == pid {
            break;
        }
        let err = std::io::Error::last_os_error();
        assert_eq!(
            err.kind(),
            std::io::ErrorKind::Interrupted,
            "waitpid({pid}): {err}"
        );
    }
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child {pid} ended with wait status {status:#x}"
    );
}

/// Pins the calling thread to [`CPU`]. Only a syscall, so it is fine in a forked child.
fn pin_to_cpu() {
    // SAFETY: an all-zero cpu_set_t is the empty set; CPU_SET writes inside it (CPU < 1024);
    // sched_setaffinity reads `set` for the duration of the call.
    let ret = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(CPU, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    assert_eq!(
        ret,
        0,
        "sched_setaffinity: {}",
        std::io::Error::last_os_error()
    );
}

/// The calling thread pinned to [`CPU`]; its previous affinity mask comes back on drop.
struct SameCpu {
    saved: libc::cpu_set_t,
}

impl SameCpu {
    fn pin() -> SameCpu {
        // SAFETY: an all-zero cpu_set_t is a valid (empty) set for the kernel to fill.
        let mut saved: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: `saved` is a valid, writable cpu_set_t of the size passed.
        let ret = unsafe {
            libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut saved)
        };
        assert_eq!(
            ret,
            0,
            "sched_getaffinity: {}",
            std::io::Error::last_os_error()
        );
        pin_to_cpu();
        SameCpu { saved }
    }
}

impl Drop for SameCpu {
    fn drop(&mut self) {
        // SAFETY: `saved` is a valid cpu_set_t of the size passed, read for the call only.
        let ret = unsafe {
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &self.saved)
        };
        assert_eq!(
            ret,
            0,
            "restoring the affinity: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// A raw forked child on the other end of a socket pair. Dropping it closes our end (the child
/// sees end of stream and exits) and reaps the child.
struct RawPeer {
    fd: Option<OwnedFd>,
    pid: libc::pid_t,
}

impl RawPeer {
    /// Forks a child that pins itself to [`CPU`] and runs `body` on its end of a fresh
    /// `AF_UNIX` stream socket pair, then `_exit(0)`s.
    fn start(body: fn(RawFd)) -> RawPeer {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: `fds` is a valid out-array of two descriptors.
        let ret = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        };
        assert_eq!(ret, 0, "socketpair: {}", std::io::Error::last_os_error());
        // SAFETY: both descriptors were just returned by the kernel and are owned by nothing else.
        let (ours, theirs) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: the child runs only libc calls (pin, read, write, close, _exit) on memory it
        // owns and never returns into Rust code that could run destructors or take locks.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            // SAFETY: in the child; our copy of the parent's end is closed by number and its
            // OwnedFd is never dropped, because this branch ends in _exit.
            unsafe { libc::close(ours.as_raw_fd()) };
            pin_to_cpu();
            body(theirs.as_raw_fd());
            // SAFETY: _exit ends the child without running the parent's destructors.
            unsafe { libc::_exit(0) }
        }
        drop(theirs);
        RawPeer {
            fd: Some(ours),
            pid,
        }
    }

    fn fd(&self) -> RawFd {
        self.fd.as_ref().expect("open until drop").as_raw_fd()
    }
}

impl Drop for RawPeer {
    fn drop(&mut self) {
        self.fd = None;
        raw_waitpid(self.pid);
    }
}

/// Raw child: echoes 8-byte messages until end of stream.
fn raw_echo(fd: RawFd) {
    let mut buf = [0u8; 8];
    while raw_read_exact(fd, &mut buf) && raw_write_all(fd, &buf) {}
}

/// Raw child: reads 1 MiB messages into one buffer, acking each with a byte, until end of stream.
fn raw_sink(fd: RawFd) {
    let mut buf = vec![0u8; MIB];
    while raw_read_exact(fd, &mut buf) && raw_write_all(fd, &[1]) {}
}

// ---------------------------------------------------------------------------------------------
// multiproc children (they run in the child; started with the default start method).

fn noop(_: ()) {}

/// Echoes byte messages until the parent hangs up.
fn echo_bytes(conn: Connection) {
    pin_to_cpu();
    while let Ok(msg) = conn.recv_bytes() {
        if conn.send_bytes(&msg).is_err() {
            break;
        }
    }
}

/// Echoes pickled `u64`s until the parent hangs up.
fn echo_pickled(conn: Connection) {
    pin_to_cpu();
    while let Ok(value) = conn.recv::<u64>() {
        if conn.send(&value).is_err() {
            break;
        }
    }
}

/// Receives 1 MiB messages into one buffer, acking each with a 1-byte message, until the parent
/// hangs up.
fn sink(conn: Connection) {
    pin_to_cpu();
    let mut buf = vec![0u8; MIB];
    while let Ok(n) = conn.recv_bytes_into(&mut buf) {
        assert_eq!(n, MIB);
        if conn.send_bytes(&[1]).is_err() {
            break;
        }
    }
}

/// A multiproc child on the other end of a pipe. Dropping it closes our end (the child sees
/// `Disconnected` and returns) and joins the child.
struct MpPeer {
    conn: Option<Connection>,
    child: Process<()>,
}

impl MpPeer {
    fn start(body: fn(Connection)) -> MpPeer {
        let (here, there) = Pipe::new().expect("pipe");
        let child = Process::spawn(body, there).expect("spawn");
        MpPeer {
            conn: Some(here),
            child,
        }
    }

    fn conn(&self) -> &Connection {
        self.conn.as_ref().expect("open until drop")
    }
}

impl Drop for MpPeer {
    fn drop(&mut self) {
        self.conn = None;
        self.child.join().expect("the child failed");
    }
}

/// A peer and the parent pinned to the same CPU. The peer is started before the parent pins
/// itself (the child pins itself), so a forkserver started here would not inherit the pin.
/// Fields drop in order: the child is joined first, then the parent's affinity restored.
struct Session<P> {
    peer: P,
    _pin: SameCpu,
}

impl<P> Session<P> {
    fn new(peer: P) -> Session<P> {
        Session {
            peer,
            _pin: SameCpu::pin(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The benchmarks.

fn spawn_join(c: &mut Criterion) {
    let mut group = c.benchmark_group("spawn_join");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8));

    group.bench_function(BenchmarkId::new("raw", "fork_exit_waitpid"), |b| {
        b.iter(|| {
            // SAFETY: the child only calls _exit, which is async-signal-safe.
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
            if pid == 0 {
                // SAFETY: ends the child at once, running nothing of the parent's.
                unsafe { libc::_exit(0) }
            }
            raw_waitpid(pid);
        })
    });

    let exe = c"/proc/self/exe";
    let argv0 = std::env::args_os()
        .next()
        .and_then(|a| CString::new(a.into_vec()).ok())
        .unwrap_or_else(|| c"process-bench".to_owned());
    let mut env: Vec<CString> = std::env::vars_os()
        .filter_map(|(k, v)| {
            let mut entry = k;
            entry.push("=");
            entry.push(v);
            CString::new(entry.into_vec()).ok()
        })
        .collect();
    env.push(CString::new(format!("{}=1", NOOP_ENV.to_str().expect("ascii"))).expect("no NUL"));
    let argv_ptrs: Vec<*mut libc::c_char> =
        [argv0.as_ptr() as *mut libc::c_char, std::ptr::null_mut()].into();
    let mut envp_ptrs: Vec<*mut libc::c_char> = env
        .iter()
        .map(|s| s.as_ptr() as *mut libc::c_char)
        .collect();
    envp_ptrs.push(std::ptr::null_mut());
    group.bench_function(BenchmarkId::new("raw", "posix_spawn_self"), |b| {
        b.iter(|| {
            let mut pid: libc::pid_t = 0;
            // SAFETY: `exe`, `argv_ptrs` and `envp_ptrs` are NUL-terminated and point into
            // `argv0` and `env`, which outlive the call; null file actions and attributes are
            // allowed.
            let ret = unsafe {
                libc::posix_spawn(
                    &mut pid,
                    exe.as_ptr(),
                    std::ptr::null(),
                    std::ptr::null(),
                    argv_ptrs.as_ptr(),
                    envp_ptrs.as_ptr(),
                )
            };
            assert_eq!(
                ret,
                0,
                "posix_spawn: {}",
                std::io::Error::from_raw_os_error(ret)
            );
            raw_waitpid(pid);
        })
    });

    let forkserver_started = Once::new();
    for method in [
        StartMethod::Fork,
        StartMethod::Spawn,
        StartMethod::Forkserver,
    ] {
        group.bench_function(BenchmarkId::new("multiproc", method.name()), |b| {
            if method == StartMethod::Forkserver {
                // The first request starts the server (a self-exec): keep it out of the figure.
                forkserver_started.call_once(|| {
                    Process::builder()
                        .start_method(method)
                        .spawn(noop, ())
                        .expect("spawn")
                        .join()
                        .expect("join");
                });
            }
            b.iter(|| {
                Process::builder()
                    .start_method(method)
                    .spawn(noop, ())
                    .expect("spawn")
                    .join()
                    .expect("join")
            })
        });
    }
    group.finish();
}

fn pipe_rtt(c: &mut Criterion) {
    let mut group = c.benchmark_group("pipe_rtt");
    group
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6));

    // Each session starts on the first call of its closure (so a filtered-out benchmark starts
    // no child) and ends, child joined and affinity restored, right after its benchmark.
    let mut raw: Option<Session<RawPeer>> = None;
    group.bench_function(BenchmarkId::new("raw", "socketpair_same_cpu"), |b| {
        let s = raw.get_or_insert_with(|| Session::new(RawPeer::start(raw_echo)));
        let fd = s.peer.fd();
        let out = RTT_PAYLOAD.to_le_bytes();
        let mut back = [0u8; 8];
        b.iter(|| {
            assert!(raw_write_all(fd, &out) && raw_read_exact(fd, &mut back));
            black_box(&back);
        })
    });
    drop(raw);

    let mut bytes: Option<Session<MpPeer>> = None;
    group.bench_function(BenchmarkId::new("multiproc", "send_bytes_same_cpu"), |b| {
        let s = bytes.get_or_insert_with(|| Session::new(MpPeer::start(echo_bytes)));
        let conn = s.peer.conn();
        let out = RTT_PAYLOAD.to_le_bytes();
        b.iter(|| {
            conn.send_bytes(&out).expect("send_bytes");
            black_box(conn.recv_bytes().expect("recv_bytes"))
        })
    });
    drop(bytes);

    let mut pickled: Option<Session<MpPeer>> = None;
    group.bench_function(
        BenchmarkId::new("multiproc", "send_recv_pickled_same_cpu"),
        |b| {
            let s = pickled.get_or_insert_with(|| Session::new(MpPeer::start(echo_pickled)));
            let conn = s.peer.conn();
            b.iter(|| {
                conn.send(&RTT_PAYLOAD).expect("send");
                black_box(conn.recv::<u64>().expect("recv"))
            })
        },
    );
    drop(pickled);
    group.finish();
}

fn bandwidth_1mib(c: &mut Criterion) {
    let mut group = c.benchmark_group("bandwidth_1mib");
    group
        .throughput(Throughput::Bytes(MIB as u64))
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6));
    let message = vec![0xa5u8; MIB];

    let mut raw: Option<Session<RawPeer>> = None;
    group.bench_function(BenchmarkId::new("raw", "socketpair_same_cpu"), |b| {
        let s = raw.get_or_insert_with(|| Session::new(RawPeer::start(raw_sink)));
        let fd = s.peer.fd();
        let mut ack = [0u8; 1];
        b.iter(|| {
            assert!(raw_write_all(fd, &message) && raw_read_exact(fd, &mut ack));
        })
    });
    drop(raw);

    let mut ours: Option<Session<MpPeer>> = None;
    group.bench_function(BenchmarkId::new("multiproc", "send_bytes_same_cpu"), |b| {
        let s = ours.get_or_insert_with(|| Session::new(MpPeer::start(sink)));
        let conn = s.peer.conn();
        let mut ack = [0u8; 1];
        b.iter(|| {
            conn.send_bytes(&message).expect("send_bytes");
            assert_eq!(conn.recv_bytes_into(&mut ack).expect("recv_bytes_into"), 1);
        })
    });
    drop(ours);
    group.finish();
}

criterion_group!(benches, spawn_join, pipe_rtt, bandwidth_1mib);
criterion_main!(benches);
