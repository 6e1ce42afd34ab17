//! Tests for process hygiene: no zombies, no descriptor leaks, daemons die with their parent,
//! forkserver recovery.
//!
//! These count process-wide things (open descriptors, children), so they live in their own
//! test binary and take a lock so that they never run at the same time as each other.

mod common;

use std::sync::Mutex;
use std::time::Duration;

use common::{eventually, open_fds, pid_exists, pid_state, sleep_ms, with};
use multiproc::{Connection, Error, Pipe, Process, StartMethod};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn noop(_: ()) {}

fn nap(ms: u64) {
    sleep_ms(ms)
}

/// Pids of this process's children that are zombies right now.
fn zombie_children() -> Vec<u32> {
    let me = std::process::id().to_string();
    let mut zombies = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.first() == Some(&"Z") && fields.get(1) == Some(&me.as_str()) {
            zombies.push(pid);
        }
    }
    zombies
}

#[test]
fn smoke() {
    let _guard = serial();
    let mut p = Process::spawn(noop, ()).unwrap();
    p.join().unwrap();
    assert!(!p.is_alive());
    // A forkserver child (the default) is reaped by its server a moment after it ends; its
    // exit code comes from that reaping, so once it is known no zombie is left anywhere.
    assert_eq!(p.exitcode(), Some(0));
    assert!(!pid_exists(p.pid()) || pid_state(p.pid()) != Some('Z'));
}

/// No zombie after 200 spawn/join cycles under each start method; the descriptor count is
/// back to its baseline. CATALOGUE BEYOND-06, BEYOND-11.
#[test]
fn no_zombies_after_200_cycles() {
    let _guard = serial();
    for method in StartMethod::all() {
        // Warm up (the forkserver, the alive pipe) before taking the baseline.
        with(method).spawn(noop, ()).unwrap().join().unwrap();
        let fds_before = open_fds();
        let mut pids = Vec::new();
        for _ in 0..200 {
            let mut p = with(method).spawn(noop, ()).unwrap();
            p.join().unwrap();
            pids.push(p.pid());
        }
        let zombies: Vec<u32> = zombie_children()
            .into_iter()
            .filter(|z| pids.contains(z))
            .collect();
        assert!(zombies.is_empty(), "{method}: zombies {zombies:?}");
        assert_eq!(open_fds(), fds_before, "{method}: descriptors leaked");
    }
}

/// Handles dropped without join, of running and of finished children, leave no zombie: the
/// reaper collects them. CATALOGUE BEYOND-06.
#[test]
fn dropped_handles_leave_no_zombies() {
    let _guard = serial();
    for method in StartMethod::all() {
        let mut pids = Vec::new();
        for i in 0..30 {
            let p = with(method)
                .spawn(nap, if i % 2 == 0 { 0 } else { 100 })
                .unwrap();
            pids.push(p.pid());
            drop(p);
        }
        let gone = eventually(Duration::from_secs(20), || {
            pids.iter().all(|&pid| !pid_exists(pid))
        });
        let left: Vec<_> = pids
            .iter()
            .filter(|&&p| pid_exists(p))
            .map(|&p| (p, pid_state(p)))
            .collect();
        assert!(gone, "{method}: still present: {left:?}");
    }
}

/// The parent's descriptor count is the same before and after 200 Pipe create/drop cycles,
/// duplex and one-way, used and unused. CATALOGUE BEYOND-11.
#[test]
fn no_fd_leak_from_pipes() {
    let _guard = serial();
    let before = open_fds();
    for i in 0..200 {
        let (a, b) = Pipe::new().unwrap();
        if i % 2 == 0 {
            a.send(&i).unwrap();
            assert_eq!(b.recv::<i32>().unwrap(), i);
        }
        let (rx, tx) = Pipe::one_way().unwrap();
        let _c = a.try_clone().unwrap();
        drop((rx, tx));
    }
    assert_eq!(open_fds(), before);
}

/// Passing pipe ends to children does not leak descriptors in the parent either.
#[test]
fn no_fd_leak_from_passing_pipes() {
    let _guard = serial();
    for method in StartMethod::all() {
        with(method).spawn(noop, ()).unwrap().join().unwrap();
        let before = open_fds();
        for _ in 0..50 {
            let (a, b) = Pipe::new().unwrap();
            let mut p = with(method)
                .spawn(|c: Connection| c.send(&1u8).unwrap(), b)
                .unwrap();
            assert_eq!(a.recv::<u8>().unwrap(), 1);
            p.join().unwrap();
        }
        assert_eq!(open_fds(), before, "{method}");
    }
}

/// Runs in an intermediate child: starts a grandchild that sleeps, reports its pid, and
/// returns (exits) without joining it.
fn start_grandchild((method, daemon): (StartMethod, bool)) -> u32 {
    let grandchild = with(method).daemon(daemon).spawn(nap, 30_000).unwrap();
    grandchild.pid()
}

/// A daemon child dies with its parent, however the parent ends; a non-daemon child does
/// not. CATALOGUE BEYOND-05, PROC-04.
#[test]
fn daemon_dies_with_parent() {
    let _guard = serial();
    for method in StartMethod::all() {
        let mut parent = with(method)
            .spawn(start_grandchild, (method, true))
            .unwrap();
        let grandchild = parent.join().unwrap();
        assert!(
            eventually(Duration::from_secs(10), || !pid_exists(grandchild)
                || pid_state(grandchild) == Some('Z')),
            "{method}: daemon grandchild {grandchild} outlived its parent"
        );

        let mut parent = with(method)
            .spawn(start_grandchild, (method, false))
            .unwrap();
        let grandchild = parent.join().unwrap();
        sleep_ms(200);
        let alive = pid_exists(grandchild) && pid_state(grandchild) != Some('Z');
        // Clean up: the orphan is not ours to reap; init (or a subreaper) does that.
        // SAFETY: signalling a pid we just checked belongs to our grandchild.
        unsafe { libc::kill(grandchild as i32, libc::SIGKILL) };
        assert!(
            alive,
            "{method}: a non-daemon grandchild should keep running"
        );
    }
}

/// Runs in a child: the pids of this process's children other than `except`, read from /proc.
fn children_of(pid: u32, except: &[u32]) -> Vec<u32> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    let mut out = Vec::new();
    for t in tasks.flatten() {
        let path = t.path().join("children");
        if let Ok(list) = std::fs::read_to_string(path) {
            out.extend(
                list.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    out.retain(|p| !except.contains(p));
    out
}

/// Runs in a child, so that the forkserver it kills is its own: starts a forkserver child,
/// SIGKILLs the server, then starts another child. CATALOGUE START-07, acceptance scenario 32.
/// CPython: `_TestProcess.test_forkserver_sigkill`.
fn forkserver_restart(_: ()) -> (i32, Option<i32>, i32) {
    let me = std::process::id();
    let mut first = with(StartMethod::Forkserver).spawn(nap, 300).unwrap();
    let servers = children_of(me, &[]);
    assert_eq!(
        servers.len(),
        1,
        "expected exactly one forkserver, found {servers:?}"
    );
    // SAFETY: signalling our own forkserver child.
    unsafe { libc::kill(servers[0] as i32, libc::SIGKILL) };
    sleep_ms(100);
    let mut second = with(StartMethod::Forkserver)
        .spawn(|x: i32| x + 1, 1)
        .unwrap();
    let second_result = second.join().unwrap();
    // The first child outlives its server and still reports its result; its status is lost
    // with the server (255), as in CPython.
    first.join().unwrap();
    (
        second_result,
        first.exitcode(),
        second.exitcode().unwrap_or(-1),
    )
}

#[test]
fn forkserver_is_restarted_after_sigkill() {
    let _guard = serial();
    let mut p = with(StartMethod::Spawn)
        .spawn(forkserver_restart, ())
        .unwrap();
    let (second_result, first_code, second_code) = p.join().unwrap();
    assert_eq!(second_result, 2);
    assert_eq!(second_code, 0);
    assert!(matches!(first_code, Some(0) | Some(255)), "{first_code:?}");
}

/// Runs in a child, so that the forkserver is its own: kills the server's spare (the child it
/// forks ahead of the next request), then starts another child, which must run all the same.
fn forkserver_spare_killed(_: ()) -> (usize, i32, Vec<u32>) {
    let me = std::process::id();
    with(StartMethod::Forkserver)
        .spawn(noop, ())
        .unwrap()
        .join()
        .unwrap();
    let servers = children_of(me, &[]);
    assert_eq!(servers.len(), 1, "one forkserver expected: {servers:?}");
    // The server forks its next spare when it has nothing else to do, and reaps the child
    // just joined a moment after `join` returns (join needs only the pidfd).
    let live = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|stat| {
                !stat
                    .rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(false)
    };
    let mut spares = Vec::new();
    for _ in 0..200 {
        spares = children_of(servers[0], &[]);
        spares.retain(|&p| live(p));
        if !spares.is_empty() {
            break;
        }
        sleep_ms(10);
    }
    for &spare in &spares {
        // SAFETY: signalling a process of our own forkserver.
        unsafe { libc::kill(spare as i32, libc::SIGKILL) };
    }
    sleep_ms(50);
    let mut next = with(StartMethod::Forkserver)
        .spawn(|x: i32| x * 2, 21)
        .unwrap();
    let result = next.join().unwrap();
    assert!(!spares.contains(&next.pid()));
    (spares.len(), result, children_of(me, &[]))
}

#[test]
fn forkserver_replaces_a_killed_spare() {
    let _guard = serial();
    let mut p = with(StartMethod::Spawn)
        .spawn(forkserver_spare_killed, ())
        .unwrap();
    let (spares, result, servers) = p.join().unwrap();
    assert_eq!(spares, 1, "the server keeps one spare");
    assert_eq!(result, 42);
    assert_eq!(servers.len(), 1, "the same server carries on: {servers:?}");
}

/// Many threads starting and joining processes at once (the test harness's situation, made
/// worse): every child runs and reports, under every method.
#[test]
fn concurrent_starts_from_threads() {
    let _guard = serial();
    std::thread::scope(|s| {
        for t in 0..8 {
            s.spawn(move || {
                let method = StartMethod::all()[t % 3];
                for i in 0..20i64 {
                    let mut p = with(method).spawn(|x: i64| x * 3, i).unwrap();
                    assert_eq!(p.join().unwrap(), i * 3);
                }
            });
        }
    });
    assert!(zombie_children().is_empty());
}

/// A child whose bootstrap socket vanishes (parent killed between start and send) does not
/// hang: joining a child killed at once reports the signal.
#[test]
fn killed_immediately() {
    let _guard = serial();
    for method in StartMethod::all() {
        let mut p = with(method).spawn(nap, 10_000).unwrap();
        p.kill().unwrap();
        assert!(
            matches!(p.join(), Err(Error::Signaled { signal: 9, .. })),
            "{method}"
        );
    }
}
