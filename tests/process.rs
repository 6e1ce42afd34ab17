//! Tests for `Process`: lifecycle, exit status, start methods, typed errors.
//!
//! Behaviours ported from CPython's `Lib/test/_test_multiprocessing.py` cite the original
//! (`CPython: _TestProcess.test_process`) and the row of shared/CATALOGUE.md. Each body runs
//! under fork, spawn and forkserver (`each_method!`).

mod common;

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use common::{eventually, sleep_ms, with};
use multiproc::{
    active_children, current_process, current_start_method, parent_pid, Connection, Error, Pipe,
    Process, SendEnd, StartMethod,
};
use serde::{Deserialize, Serialize};

fn noop(_: ()) {}

fn double(x: i64) -> i64 {
    x * 2
}

fn nap(ms: u64) {
    sleep_ms(ms)
}

fn whoami(_: ()) -> (u32, String, bool, Option<u32>, Option<StartMethod>) {
    let me = current_process();
    (
        me.pid,
        me.name,
        me.daemon,
        parent_pid(),
        current_start_method(),
    )
}

#[test]
fn smoke() {
    let mut p = Process::spawn(double, 21).unwrap();
    assert_eq!(p.join().unwrap(), 42);
}

each_method! {
    /// CATALOGUE PROC-01. CPython: `_TestProcess.test_process`.
    fn lifecycle(method: StartMethod) {
        let mut p = with(method).spawn(nap, 300).unwrap();
        assert!(p.is_alive());
        assert_eq!(p.exitcode(), None);
        assert!(active_children().iter().any(|c| c.pid == p.pid()));
        p.join().unwrap();
        assert!(!p.is_alive());
        assert_eq!(p.exitcode(), Some(0));
        assert!(!active_children().iter().any(|c| c.pid == p.pid()));
        assert_eq!(p.start_method(), method);
    }
}

type Shapes = (
    u64,
    String,
    Vec<i32>,
    BTreeMap<String, i32>,
    Option<i32>,
    (bool, f64),
);

fn echo_shapes(x: Shapes) -> Shapes {
    x
}

each_method! {
    /// CATALOGUE PROC-02 and acceptance scenario 12. CPython: `_TestProcess.test_process`,
    /// `test_args_argument` (bpo-45735).
    fn arguments_round_trip(method: StartMethod) {
        let value: Shapes = (
            i64::MAX as u64,
            "héllo".to_string(),
            vec![1, 2, 3],
            BTreeMap::from([("a".to_string(), 1)]),
            None,
            (true, 2.5),
        );
        let mut p = with(method).spawn(echo_shapes, value.clone()).unwrap();
        assert_eq!(p.join().unwrap(), value);
    }
}

each_method! {
    /// The child sees the name and pid the parent reports, and knows its parent and method.
    /// CATALOGUE PROC-02, PROC-15, START-01. CPython: `_TestProcess.test_process`,
    /// `test_parent_process_attributes`, `TestStartMethod.test_context`.
    fn child_identity(method: StartMethod) {
        let mut p = with(method).name("custom-name").spawn(whoami, ()).unwrap();
        let (pid, name, daemon, parent, started_by) = p.join().unwrap();
        assert_eq!(pid, p.pid());
        assert_eq!(name, "custom-name");
        assert_eq!(p.name(), "custom-name");
        assert!(!daemon);
        assert_eq!(parent, Some(std::process::id()));
        assert_eq!(started_by, Some(method));
    }
}

/// CATALOGUE PROC-03. CPython: `_TestProcess.test_current`,
/// `test_parent_process_attributes` (the main process has no parent).
/// The builder's former name still builds and starts processes (kept as a deprecated alias).
#[test]
#[allow(deprecated)]
fn builder_alias_still_works() {
    let mut p = multiproc::Builder::new()
        .name("via-alias")
        .spawn(double, 4)
        .unwrap();
    assert_eq!(p.name(), "via-alias");
    assert_eq!(p.join().unwrap(), 8);
}

#[test]
fn current_process_in_main() {
    let me = current_process();
    assert_eq!(me.pid, std::process::id());
    assert_eq!(me.name, "MainProcess");
    assert!(!me.daemon);
    assert_eq!(parent_pid(), None);
    assert_eq!(current_start_method(), None);
}

/// Default names are numbered per parent, as in CPython (`Process-N`).
#[test]
fn default_names() {
    let mut a = Process::spawn(noop, ()).unwrap();
    assert!(a.name().starts_with("Process-"), "{}", a.name());
    a.join().unwrap();
}

fn daemon_flags(method: StartMethod) -> (bool, bool, bool) {
    let mut inherited = with(method).spawn(whoami, ()).unwrap();
    let mut set_false = with(method).daemon(false).spawn(whoami, ()).unwrap();
    let mut set_true = with(method).daemon(true).spawn(whoami, ()).unwrap();
    (
        inherited.join().unwrap().2,
        set_false.join().unwrap().2,
        set_true.join().unwrap().2,
    )
}

each_method! {
    /// CATALOGUE PROC-04. CPython: `_TestProcess.test_daemon_argument`: the flag defaults
    /// to the creator's own and can be set either way.
    fn daemon_argument(method: StartMethod) {
        assert_eq!(daemon_flags(method), (false, false, true));
        // In a daemon child, children default to daemon.
        let mut p = with(method).daemon(true).spawn(daemon_flags, method).unwrap();
        assert_eq!(p.join().unwrap(), (true, false, true));
    }
}

each_method! {
    /// CATALOGUE PROC-05, EXIT-01. CPython: `_TestProcess.test_terminate`.
    fn join_timeout_and_terminate(method: StartMethod) {
        let mut p = with(method).spawn(nap, 60_000).unwrap();
        let start = Instant::now();
        assert!(matches!(p.join_timeout(Duration::ZERO), Err(Error::Timeout)));
        assert!(matches!(p.join_timeout(Duration::from_millis(100)), Err(Error::Timeout)));
        assert!(start.elapsed() >= Duration::from_millis(50));
        assert!(p.is_alive());
        p.terminate().unwrap();
        match p.join() {
            Err(Error::Signaled { signal, pid }) => {
                assert_eq!(signal, libc::SIGTERM);
                assert_eq!(pid, p.pid());
            }
            other => panic!("expected SIGTERM, got {other:?}"),
        }
        assert_eq!(p.exitcode(), Some(-15));
        // Terminating a finished child is harmless.
        p.terminate().unwrap();
        assert!(matches!(p.join(), Err(Error::AlreadyJoined { .. })));
    }
}

each_method! {
    /// CATALOGUE EXIT-02. CPython: `_TestProcess.test_kill`.
    fn kill(method: StartMethod) {
        let mut p = with(method).spawn(nap, 60_000).unwrap();
        p.kill().unwrap();
        assert!(matches!(p.join(), Err(Error::Signaled { signal: 9, .. })));
        assert_eq!(p.exitcode(), Some(-9));
    }
}

fn exit_with(code: i32) {
    std::process::exit(code)
}

fn boom(n: u32) -> u32 {
    panic!("boom {n}")
}

each_method! {
    /// A panic, an `exit(3)`, a SIGKILL: each its own typed error. CATALOGUE EXIT-03, EXIT-04,
    /// EXIT-05 and acceptance scenario 11. CPython: `_TestSubclassingProcess.test_sys_exit`,
    /// `test_stderr_flush`, gh-74774.
    fn exit_statuses(method: StartMethod) {
        let mut normal = with(method).spawn(noop, ()).unwrap();
        let mut three = with(method).spawn(exit_with, 3).unwrap();
        let mut eight = with(method).spawn(exit_with, 8).unwrap();
        let mut zero = with(method).spawn(exit_with, 0).unwrap();
        let mut panics = with(method).spawn(boom, 42).unwrap();
        let mut killed = with(method).spawn(nap, 60_000).unwrap();
        killed.kill().unwrap();

        normal.join().unwrap();
        assert_eq!(normal.exitcode(), Some(0));

        assert!(matches!(three.join(), Err(Error::Exited { code: 3, .. })));
        assert_eq!(three.exitcode(), Some(3));
        assert!(matches!(eight.join(), Err(Error::Exited { code: 8, .. })));
        assert_eq!(eight.exitcode(), Some(8));
        // exit(0) before returning: the exit code is 0, but there is no result.
        assert!(matches!(zero.join(), Err(Error::Exited { code: 0, .. })));
        assert_eq!(zero.exitcode(), Some(0));

        match panics.join() {
            Err(Error::Panicked { message, location, pid }) => {
                assert_eq!(message, "boom 42");
                assert_eq!(pid, panics.pid());
                // A fork child leaves the panic hook alone (its lock may have been held by a
                // parent thread), so only the other methods know the location.
                if method == StartMethod::Fork {
                    assert_eq!(location, None);
                } else {
                    let location = location.expect("panic location");
                    assert!(location.contains("process.rs"), "{location}");
                }
            }
            other => panic!("expected a panic, got {other:?}"),
        }
        assert_eq!(panics.exitcode(), Some(1));

        assert!(matches!(killed.join(), Err(Error::Signaled { signal: 9, .. })));
        assert_eq!(killed.exitcode(), Some(-9));
    }
}

each_method! {
    /// CATALOGUE PROC-06. CPython: `_TestProcess.test_active_children`.
    fn active_children_lists_running_children(method: StartMethod) {
        let mut p = with(method).spawn(nap, 200).unwrap();
        let pid = p.pid();
        assert!(active_children().iter().any(|c| c.pid == pid));
        // Without join: active_children itself reaps the finished child.
        assert!(eventually(Duration::from_secs(10), || {
            !active_children().iter().any(|c| c.pid == pid)
        }));
        assert_eq!(p.exitcode(), Some(0));
        p.join().unwrap();
    }
}

/// A node of the process tree: reports its id, then starts two children one after the other.
fn tree_node((report, id, method): (SendEnd, Vec<u8>, StartMethod)) {
    report.send(&id).unwrap();
    if id.len() < 2 {
        for i in 0..2u8 {
            let mut child_id = id.clone();
            child_id.push(i);
            let args = (report.try_clone().unwrap(), child_id, method);
            with(method).spawn(tree_node, args).unwrap().join().unwrap();
        }
    }
}

each_method! {
    /// Children start children: a 3-level tree reports its 7 ids depth first through one
    /// shared pipe. CATALOGUE PROC-07. CPython: `_TestProcess.test_recursion`.
    fn recursion(method: StartMethod) {
        let (rx, tx) = Pipe::one_way().unwrap();
        with(method).spawn(tree_node, (tx, vec![], method)).unwrap().join().unwrap();
        let mut ids = Vec::new();
        while let Ok(id) = rx.recv_timeout::<Vec<u8>>(Duration::from_secs(10)) {
            ids.push(id);
            if ids.len() == 7 {
                break;
            }
        }
        let expected: Vec<Vec<u8>> =
            vec![vec![], vec![0], vec![0, 0], vec![0, 1], vec![1], vec![1, 0], vec![1, 1]];
        assert_eq!(ids, expected);
    }
}

fn poll_fd(fd: i32, timeout_ms: i32) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut pfd, 1, timeout_ms) == 1 }
}

each_method! {
    /// The sentinel is a pollable descriptor: not ready while the child runs, ready after.
    /// CATALOGUE PROC-08. CPython: `_TestProcess.test_sentinel`.
    fn sentinel(method: StartMethod) {
        let mut p = with(method).spawn(nap, 300).unwrap();
        let fd = p.sentinel().as_raw_fd();
        assert!(!poll_fd(fd, 0));
        assert!(poll_fd(fd, 10_000));
        p.join().unwrap();
    }
}

each_method! {
    /// 100 children at once all exit 0; 100 sleepers terminated at once all report -15.
    /// CATALOGUE PROC-10. CPython: `_TestProcess.test_many_processes`.
    fn many_processes(method: StartMethod) {
        let mut quick: Vec<_> = (0..100).map(|i| with(method).spawn(double, i).unwrap()).collect();
        for (i, p) in quick.iter_mut().enumerate() {
            assert_eq!(p.join().unwrap(), 2 * i as i64);
            assert_eq!(p.exitcode(), Some(0));
        }
        let mut sleepers: Vec<_> =
            (0..100).map(|_| with(method).spawn(nap, 60_000).unwrap()).collect();
        for p in &sleepers {
            p.terminate().unwrap();
        }
        for p in &mut sleepers {
            assert!(matches!(p.join(), Err(Error::Signaled { signal: 15, .. })));
            assert_eq!(p.exitcode(), Some(-15));
        }
    }
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
enum Request {
    Add(i64, i64),
    Stop,
}

fn service(conn: Connection) -> u32 {
    let mut served = 0;
    loop {
        match conn.recv::<Request>().unwrap() {
            Request::Add(a, b) => conn.send(&(a + b)).unwrap(),
            Request::Stop => return served,
        }
        served += 1;
    }
}

each_method! {
    /// A long-lived service child answers round trips until told to stop, then exits 0.
    /// CATALOGUE PROC-11. CPython: `_TestSubclassingProcess.test_subclassing`.
    fn service_child(method: StartMethod) {
        let (here, there) = Pipe::new().unwrap();
        let mut p = with(method).spawn(service, there).unwrap();
        for i in 0..50 {
            here.send(&Request::Add(i, 1)).unwrap();
            assert_eq!(here.recv::<i64>().unwrap(), i + 1);
        }
        here.send(&Request::Stop).unwrap();
        assert_eq!(p.join().unwrap(), 50);
        assert_eq!(p.exitcode(), Some(0));
    }
}

extern "C" fn on_sigusr1(_: libc::c_int) {}

/// Runs in a child: installs a SIGUSR1 handler, has a thread signal the process while the
/// main thread is blocked in `join`, and returns what `join` gave.
fn join_under_signals(method: StartMethod) -> i64 {
    // SAFETY: installing a handler that does nothing, without SA_RESTART so that blocking
    // calls see EINTR.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigusr1 as extern "C" fn(libc::c_int) as usize;
        libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut());
    }
    let me = std::process::id() as i32;
    let mut p = with(method)
        .spawn(
            |ms: u64| {
                sleep_ms(ms);
                7i64
            },
            400,
        )
        .unwrap();
    let pinger = std::thread::spawn(move || {
        for _ in 0..10 {
            sleep_ms(20);
            // SAFETY: signalling our own process.
            unsafe { libc::kill(me, libc::SIGUSR1) };
        }
    });
    let result = p.join().unwrap();
    pinger.join().unwrap();
    result
}

each_method! {
    /// `join` is not broken by a signal with a handler arriving while it waits.
    /// CATALOGUE PROC-12. CPython: `_TestPollEintr.test_poll_eintr`.
    fn join_survives_eintr(method: StartMethod) {
        // The handler is installed in a child, not in the shared test process.
        let mut p = with(method).spawn(join_under_signals, method).unwrap();
        assert_eq!(p.join().unwrap(), 7);
    }
}

/// CATALOGUE PROC-14. CPython: `_TestProcess.test_cpu_count`.
#[test]
fn cpu_count_is_positive() {
    assert!(multiproc::cpu_count() >= 1);
}

/// CATALOGUE START-02, START-03. CPython: `TestStartMethod.test_set_get`,
/// `test_get_all_start_methods`: all three exist and the default is not plain fork.
#[test]
fn start_methods() {
    assert_eq!(multiproc::get_start_method(), StartMethod::Forkserver);
    let all = StartMethod::all();
    for m in [
        StartMethod::Fork,
        StartMethod::Spawn,
        StartMethod::Forkserver,
    ] {
        assert!(all.contains(&m));
    }
    assert_eq!(StartMethod::Spawn.to_string(), "spawn");
}

fn relay((conn, method): (Connection, StartMethod)) -> String {
    let mut grandchild = with(method)
        .spawn(
            |c: Connection| c.recv::<String>().unwrap() + " via grandchild",
            conn,
        )
        .unwrap();
    grandchild.join().unwrap()
}

each_method! {
    /// A child hands what it received (a connection) on to its own child.
    /// CATALOGUE START-04. CPython: `TestStartMethod.test_nested_startmethod` (gh-108520).
    fn nested_handles(method: StartMethod) {
        let (here, there) = Pipe::new().unwrap();
        let mut p = with(method).spawn(relay, (there, method)).unwrap();
        here.send(&"hello").unwrap();
        assert_eq!(p.join().unwrap(), "hello via grandchild");
    }
}

fn fd_is_open(fd: i32) -> bool {
    // SAFETY: F_GETFD only queries the descriptor table.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

each_method! {
    /// Spawn and forkserver children do not inherit unrelated descriptors, even ones without
    /// close-on-exec; fork children do. CATALOGUE START-08. CPython: `TestCloseFds.test_closefd`.
    fn unrelated_fds_do_not_leak(method: StartMethod) {
        let file = std::fs::File::open("/proc/self/stat").unwrap();
        // SAFETY: F_DUPFD (without CLOEXEC) returns a new descriptor numbered >= 600.
        let fd = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_DUPFD, 600) };
        assert!(fd >= 600);
        let mut p = with(method).spawn(fd_is_open, fd).unwrap();
        let open_in_child = p.join().unwrap();
        // SAFETY: closing the duplicate made above, which nothing else owns.
        unsafe { libc::close(fd) };
        assert_eq!(open_in_child, method == StartMethod::Fork);
    }
}

/// A type whose serialization always fails.
#[derive(Debug, Deserialize)]
struct BadSer;

impl Serialize for BadSer {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("refuses to be pickled"))
    }
}

fn takes_bad(_: BadSer) {}

fn returns_bad(_: ()) -> BadSer {
    BadSer
}

/// How many children this process has after a spawn refused for its argument.
fn children_after_refused_spawn(method: StartMethod) -> usize {
    assert!(with(method).spawn(takes_bad, BadSer).is_err());
    active_children().len()
}

each_method! {
    /// An argument that cannot be pickled is rejected before any process starts; a result
    /// that cannot be pickled is a typed error naming its type. CATALOGUE BEYOND-04.
    fn unserializable_values(method: StartMethod) {
        match with(method).spawn(takes_bad, BadSer) {
            Err(Error::Serialize { type_name, reason }) => {
                assert!(type_name.contains("BadSer"), "{type_name}");
                assert!(reason.contains("refuses to be pickled"), "{reason}");
            }
            other => panic!("expected Serialize, got {other:?}"),
        }
        // No process was started for it: counted in a child of its own, where no other test
        // starts processes meanwhile (in this process, parallel tests do).
        let started = with(StartMethod::Spawn)
            .spawn(children_after_refused_spawn, method)
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(started, 0);
        match with(method).spawn(returns_bad, ()).unwrap().join() {
            Err(Error::Serialize { type_name, .. }) => assert!(type_name.contains("BadSer")),
            other => panic!("expected Serialize, got {other:?}"),
        }
    }
}

fn returns_string(_: ()) -> String {
    "not a number".into()
}

/// A result of the wrong shape is a typed error, not a panic. Two processes disagreeing on a
/// type is only possible through the wire; here the child sends a string the parent reads as
/// a number via a Connection.
#[test]
fn wrong_type_is_a_deserialize_error() {
    let (a, b) = Pipe::new().unwrap();
    let mut p = Process::spawn(|c: Connection| c.send(&returns_string(())).unwrap(), b).unwrap();
    assert!(matches!(a.recv::<u64>(), Err(Error::Deserialize { .. })));
    p.join().unwrap();
}

each_method! {
    /// A closure that captures nothing is a plain `fn` and can be spawned.
    fn non_capturing_closure(method: StartMethod) {
        let mut p = with(method).spawn(|(a, b): (u8, u8)| a as u32 * b as u32, (200, 200)).unwrap();
        assert_eq!(p.join().unwrap(), 40_000);
    }
}

each_method! {
    /// A handle dropped without join leaves the child running to completion.
    fn dropped_handle_does_not_kill(method: StartMethod) {
        let (rx, tx) = Pipe::one_way().unwrap();
        drop(with(method).spawn(|tx: SendEnd| { sleep_ms(100); tx.send(&"done").unwrap() }, tx).unwrap());
        assert_eq!(rx.recv_timeout::<String>(Duration::from_secs(10)).unwrap(), "done");
    }
}

/// A bootstrap marker that reaches a process multiproc did not start stops it with a message
/// naming the fix; the program's `main` (here: this test harness) never runs, so there is no
/// fork bomb. CATALOGUE START-06. CPython: `TestNoForkBomb.test_noforkbomb`.
#[test]
fn stray_marker_never_runs_main() {
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .env("MULTIPROC_BOOTSTRAP", "child:1:12345")
        .arg("--list")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("unset MULTIPROC_BOOTSTRAP"), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "main ran: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn checksum(bytes: multiproc::ByteBuf) -> (usize, u64) {
    let sum = bytes.iter().enumerate().fold(0u64, |acc, (i, &b)| {
        acc.wrapping_mul(31).wrapping_add(b as u64 ^ i as u64)
    });
    (bytes.len(), sum)
}

each_method! {
    /// Arguments of every size arrive whole: in the bootstrap message's first record, across
    /// records, and past the socket's send buffer (fork children have them in memory).
    fn arguments_of_every_size(method: StartMethod) {
        for n in [0, 64 * 1024 - 200, 64 * 1024 + 1, 9 << 20] {
            let args = big_result(n);
            let expected = checksum(args.clone());
            let mut p = with(method).spawn(checksum, args).unwrap();
            assert_eq!(p.join().unwrap(), expected, "{n} bytes");
        }
    }
}

fn big_result(n: usize) -> multiproc::ByteBuf {
    multiproc::ByteBuf::from((0..n).map(|i| (i % 251) as u8).collect::<Vec<u8>>())
}

each_method! {
    /// Results of every size come back whole: small ones inline in the report, large ones
    /// (here 16 KiB + 1 and 32 MiB) through a memfd, so the child never blocks on its report.
    fn results_of_every_size(method: StartMethod) {
        for n in [0, 1, 16 * 1024 - 16, 16 * 1024 + 1, 32 << 20] {
            let mut p = with(method).spawn(big_result, n).unwrap();
            let got = p.join().unwrap();
            assert_eq!(got.len(), n);
            assert!(got.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
            assert_eq!(p.exitcode(), Some(0));
        }
    }
}

fn make_pipe(_: ()) -> (Connection, String) {
    let (mine, yours) = Pipe::new().unwrap();
    // Buffered in the socket: it outlives this process.
    mine.send(&"written by the child").unwrap();
    (yours, "handle".into())
}

each_method! {
    /// A result may carry handles: a connection made in the child arrives working, with what
    /// the child wrote into it, and reports Disconnected once the child is gone.
    fn handle_in_result(method: StartMethod) {
        let (conn, tag) = with(method).spawn(make_pipe, ()).unwrap().join().unwrap();
        assert_eq!(tag, "handle");
        assert_eq!(conn.recv::<String>().unwrap(), "written by the child");
        assert!(matches!(conn.recv::<String>(), Err(Error::Disconnected)));
    }
}

fn long_panic(n: usize) {
    // Keep the test log small: the message still travels as the panic payload.
    std::panic::set_hook(Box::new(|_| {}));
    panic!("{}", "x".repeat(n))
}

each_method! {
    /// A panic message far larger than the socket buffer still reaches the parent (it travels
    /// in a memfd): the child never blocks on its report, so `join` cannot hang.
    fn huge_panic_message(method: StartMethod) {
        // Larger than the 4 MiB send buffer pipes ask for.
        match with(method).spawn(long_panic, 5 << 20).unwrap().join() {
            Err(Error::Panicked { message, .. }) => assert_eq!(message.len(), 5 << 20),
            other => panic!("expected a panic, got {other:?}"),
        }
    }
}

/// Runs in a child that ignores SIGCHLD, so the kernel reaps its children itself: joining
/// them must still return (the result arrived; the exit status may be lost, 255).
fn join_with_sigchld_ignored(method: StartMethod) -> (i64, Option<i32>) {
    // SAFETY: setting a disposition in this (child) process only.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
    let mut p = with(method)
        .spawn(
            |x: i64| {
                sleep_ms(50);
                x + 1
            },
            41,
        )
        .unwrap();
    let value = p.join_timeout(Duration::from_secs(20)).unwrap();
    (value, p.exitcode())
}

each_method! {
    /// Children reaped by someone else (an ignored SIGCHLD) do not hang `join`.
    fn sigchld_ignored(method: StartMethod) {
        let (value, code) = with(method).spawn(join_with_sigchld_ignored, method).unwrap().join().unwrap();
        assert_eq!(value, 42);
        assert!(matches!(code, Some(0) | Some(255)), "{code:?}");
    }
}

/// Runs in a child: holds the connection it was given, starts a long-sleeping grandchild by
/// fork, then returns (dropping the connection). Returns the grandchild's pid.
fn hold_then_fork(conn: Connection) -> u32 {
    let grandchild = with(StartMethod::Fork).spawn(nap, 60_000).unwrap();
    let pid = grandchild.pid();
    drop(conn);
    pid
}

/// A connection passed to a child is not kept alive by a grandchild forked from it: once the
/// child drops it, the parent sees Disconnected although the grandchild still runs.
#[test]
fn grandchild_does_not_keep_connections() {
    let (here, there) = Pipe::new().unwrap();
    let mut child = with(StartMethod::Fork)
        .spawn(hold_then_fork, there)
        .unwrap();
    let grandchild = child.join().unwrap();
    let outcome = here.recv_timeout::<u8>(Duration::from_secs(20));
    // SAFETY: signalling the orphaned grandchild we started (init reaps it).
    unsafe { libc::kill(grandchild as i32, libc::SIGKILL) };
    assert!(matches!(outcome, Err(Error::Disconnected)), "{outcome:?}");
}

fn pattern(n: usize) -> multiproc::ByteBuf {
    big_result(n)
}

/// More un-joined fork children than there are report slots: the rest report on the shared
/// overflow socket, and every result comes back to the right handle.
#[test]
fn fork_children_beyond_the_report_slots() {
    let mut children: Vec<_> = (0..200i64)
        .map(|i| with(StartMethod::Fork).spawn(double, i).unwrap())
        .collect();
    for (i, child) in children.iter_mut().enumerate().rev() {
        assert_eq!(child.join().unwrap(), 2 * i as i64);
    }
}

/// Fork children whose results are too large for a slot, left un-joined until the shared
/// overflow socket is full: a join drains it while it waits, so no child stays blocked on it.
#[test]
fn fork_reports_fill_the_overflow_socket() {
    let mut children: Vec<_> = (0..120)
        .map(|i| with(StartMethod::Fork).spawn(pattern, 6000 + i).unwrap())
        .collect();
    for (i, child) in children.iter_mut().enumerate().rev() {
        let got = child.join().unwrap();
        assert_eq!(got.len(), 6000 + i);
        assert!(got.iter().enumerate().all(|(j, &b)| b == (j % 251) as u8));
    }
}

/// Handles dropped before their fork children report leave nothing behind: the next children
/// still get their own results.
#[test]
fn dropped_fork_handles_do_not_confuse_later_reports() {
    for i in 0..30 {
        drop(with(StartMethod::Fork).spawn(pattern, 5000 + i).unwrap());
        drop(with(StartMethod::Fork).spawn(double, i as i64).unwrap());
    }
    for i in 0..30i64 {
        let mut p = with(StartMethod::Fork).spawn(double, i).unwrap();
        assert_eq!(p.join().unwrap(), 2 * i);
        let mut p = with(StartMethod::Fork).spawn(pattern, 7000).unwrap();
        assert_eq!(p.join().unwrap().len(), 7000);
    }
}

/// Fork children whose handles were dropped, with reports too large for a slot and more of
/// them than the shared overflow socket holds: the reaper keeps it drained, so every one of
/// them ends and is reaped.
#[test]
fn dropped_fork_children_never_block_on_their_reports() {
    let mut pids = Vec::new();
    for i in 0..100 {
        let p = with(StartMethod::Fork).spawn(pattern, 6000 + i).unwrap();
        pids.push(p.pid());
    }
    assert!(eventually(Duration::from_secs(30), || {
        let active: Vec<u32> = multiproc::active_children().iter().map(|c| c.pid).collect();
        pids.iter().all(|p| !active.contains(p))
    }));
}

/// Fork children with reports too large for a slot, more than the shared overflow socket holds,
/// watched with `is_alive` rather than joined: asking drains the socket, so all of them end.
#[test]
fn fork_children_watched_with_is_alive_all_end() {
    let mut children: Vec<_> = (0..80)
        .map(|i| with(StartMethod::Fork).spawn(pattern, 6000 + i).unwrap())
        .collect();
    assert!(eventually(Duration::from_secs(30), || children
        .iter()
        .all(|c| !c.is_alive())));
    for (i, child) in children.iter_mut().enumerate() {
        assert_eq!(child.join().unwrap().len(), 6000 + i);
    }
}

/// This process's family key, as bytes.
fn own_key(_: ()) -> [u8; 32] {
    *current_process().authkey().as_bytes()
}

/// Runs in a child: its own key and its child's.
fn family_keys(method: StartMethod) -> ([u8; 32], [u8; 32]) {
    let mut grandchild = with(method).spawn(own_key, ()).unwrap();
    (own_key(()), grandchild.join().unwrap())
}

each_method! {
    /// Children and grandchildren have their family's key. CATALOGUE PROC-03. CPython:
    /// `_TestProcess.test_current` (`authkey` is inherited).
    fn authkey_is_inherited(method: StartMethod) {
        let mine = own_key(());
        assert_ne!(mine, [0u8; 32]);
        let mut p = with(method).spawn(family_keys, method).unwrap();
        assert_eq!(p.join().unwrap(), (mine, mine));
        let mut daemon = with(method).daemon(true).spawn(own_key, ()).unwrap();
        assert_eq!(daemon.join().unwrap(), mine);
    }
}

/// Set for a run of this binary that only reports its key (see `authkey_differs_between_families`).
const PRINT_KEY: &str = "MULTIPROC_TEST_PRINT_AUTHKEY";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The key is fixed for the life of a process and never shown by `Debug`; asked by
/// `authkey_differs_between_families`, this test also prints it.
#[test]
fn authkey_is_stable_and_hidden() {
    let key = current_process().authkey();
    assert_eq!(key, current_process().authkey());
    assert_eq!(format!("{key:?}"), "AuthKey(..)");
    assert!(!format!("{:?}", current_process()).contains(&hex(key.as_bytes())));
    if std::env::var_os(PRINT_KEY).is_some() {
        println!("authkey={}", hex(key.as_bytes()));
    }
}

/// Two unrelated top-level runs make different keys. CATALOGUE PROC-03 (a random authkey).
#[test]
fn authkey_differs_between_families() {
    let run = || {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "authkey_is_stable_and_hidden", "--nocapture"])
            .env(PRINT_KEY, "1")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let stdout = String::from_utf8(out.stdout).unwrap();
        let key = stdout
            .lines()
            .find_map(|l| l.strip_prefix("authkey="))
            .unwrap_or_else(|| panic!("no key printed: {stdout}"));
        key.to_string()
    };
    let (a, b) = (run(), run());
    let mine = hex(current_process().authkey().as_bytes());
    assert_eq!(a.len(), 64);
    assert_ne!(a, b);
    assert_ne!(a, mine);
    assert_ne!(b, mine);
}

fn thread_count(_: ()) -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

each_method! {
    /// A daemon child watches its parent without a thread: under fork it must run only
    /// async-signal-safe code before its function (issue 12), so it starts none.
    fn daemon_child_starts_no_thread(method: StartMethod) {
        let mut p = with(method).daemon(true).spawn(thread_count, ()).unwrap();
        assert_eq!(p.join().unwrap(), 1);
    }
}

/// Runs in an intermediate child: starts a daemon grandchild that sleeps, reports its pid,
/// then waits (on a message that never comes) to be killed.
fn daemon_then_wait((method, report): (StartMethod, Connection)) {
    let grandchild = with(method).daemon(true).spawn(nap, 60_000).unwrap();
    report.send(&grandchild.pid()).unwrap();
    let _ = report.recv::<u8>();
}

each_method! {
    /// A daemon child dies with a parent that is SIGKILLed (no exit code of its own runs):
    /// the kernel signals it when the parent's alive pipe loses its last writer.
    /// CATALOGUE BEYOND-05.
    fn daemon_dies_with_a_killed_parent(method: StartMethod) {
        let (ours, theirs) = Pipe::new().unwrap();
        let mut parent = with(method).spawn(daemon_then_wait, (method, theirs)).unwrap();
        let grandchild: u32 = ours.recv().unwrap();
        parent.kill().unwrap();
        assert!(matches!(
            parent.join(),
            Err(Error::Signaled { signal: libc::SIGKILL, .. })
        ));
        let died = eventually(Duration::from_secs(30), || {
            !common::pid_exists(grandchild) || common::pid_state(grandchild) == Some('Z')
        });
        if !died {
            // SAFETY: signalling the grandchild this test started, before failing.
            unsafe { libc::kill(grandchild as i32, libc::SIGKILL) };
        }
        assert!(died, "{method}: daemon {grandchild} outlived its killed parent");
    }
}
