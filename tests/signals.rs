//! Tests for SIGINT (Ctrl-C) reaching a process blocked in `Queue::get`, `Process::join`,
//! `Connection::recv`, `Pool::map` or a manager proxy's `get` (issue 12 item 6).
//!
//! What "ends the call" means:
//! - With SIGINT's default disposition the process dies by the signal, as any program does,
//!   and its daemon children, pool workers, forkserver and manager server go with it.
//! - With a handler installed by the program (`sigaction`, with or without `SA_RESTART`, as
//!   the `ctrlc` and `signal-hook` crates do) that calls `multiproc::interrupt_blocked_calls`,
//!   the blocked call returns `Error::Interrupted` having taken nothing (CPython raises
//!   `KeyboardInterrupt` in the blocked call). A handler that does not ask leaves the call
//!   waiting, as CPython's PEP 475 does for a handler that does not raise (CATALOGUE PROC-12).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::family::{await_gone, become_subreaper, descendants};
use multiproc::managers::{Manager, ManagerServer};
use multiproc::{Connection, Error, Pipe, Pool, Process, Queue, StartMethod};
use serde::{Deserialize, Serialize};

/// A generous hang guard.
const GUARD: Duration = Duration::from_secs(60);

/// Where the blocked process blocks.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
enum Call {
    QueueGet,
    BoundedQueuePut,
    JoinForkserverChild,
    JoinSpawnChild,
    JoinForkChild,
    Recv,
    PoolMap,
    ImapNext,
    ManagerGet,
}

/// How the blocked process treats SIGINT.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
enum Disposition {
    /// The default: the signal ends the process.
    Default,
    /// A handler installed with `sigaction`, with or without `SA_RESTART`; with `interrupt`,
    /// it calls `multiproc::interrupt_blocked_calls`.
    Handler { restart: bool, interrupt: bool },
}

static HANDLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    HANDLED.store(true, Ordering::SeqCst);
}

extern "C" fn on_sigint_interrupt(_: libc::c_int) {
    HANDLED.store(true, Ordering::SeqCst);
    multiproc::interrupt_blocked_calls();
}

fn install_handler(restart: bool, interrupt: bool) {
    // SAFETY: sigaction is plain old data; zeroed is a valid empty action.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = if interrupt {
        on_sigint_interrupt as extern "C" fn(libc::c_int) as usize
    } else {
        on_sigint as extern "C" fn(libc::c_int) as usize
    };
    action.sa_flags = if restart { libc::SA_RESTART } else { 0 };
    // SAFETY: `action` is a valid sigaction whose handler only stores to an atomic
    // (async-signal-safe); the mask pointer is valid for sigemptyset.
    unsafe {
        libc::sigemptyset(&mut action.sa_mask);
        assert_eq!(
            libc::sigaction(libc::SIGINT, &action, std::ptr::null_mut()),
            0
        );
    }
}

fn sleep_forever(_: ()) {
    loop {
        std::thread::sleep(Duration::from_secs(600));
    }
}

fn sleep_forever_then_echo(x: u32) -> u32 {
    sleep_forever(());
    x
}

/// The process that blocks: sets up `call`, starts a daemon child (a forkserver and a spawn
/// one) for the default disposition to take along, says `"blocking"` on `report`, and blocks.
/// Returns what the call returned (its `Debug`), and whether the handler ran.
fn block_in((call, disposition, report): (Call, Disposition, Connection)) -> (String, bool) {
    if let Disposition::Handler { restart, interrupt } = disposition {
        install_handler(restart, interrupt);
    }
    let mut daemons = Vec::new();
    for method in [StartMethod::Forkserver, StartMethod::Spawn] {
        let daemon = Process::builder()
            .start_method(method)
            .daemon(true)
            .spawn(sleep_forever, ())
            .unwrap();
        daemons.push(daemon);
    }
    let blocking = || report.send(&"blocking").unwrap();
    let outcome = match call {
        Call::QueueGet => {
            let q: Queue<u32> = Queue::new().unwrap();
            // A handler that does not ask to interrupt leaves `get` waiting: once it has run,
            // a thread puts the item `get` waits for.
            let other = q.try_clone().unwrap();
            let putter = std::thread::spawn(move || {
                if disposition
                    != (Disposition::Handler {
                        restart: false,
                        interrupt: false,
                    })
                {
                    return;
                }
                while !HANDLED.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                other.put(&5).unwrap();
            });
            blocking();
            let got = format!("{:?}", q.get());
            putter.join().unwrap();
            // Nothing was taken: the queue still works.
            q.put(&7).unwrap();
            assert_eq!(q.get().unwrap(), 7);
            got
        }
        Call::BoundedQueuePut => {
            let q: Queue<u32> = Queue::bounded(1).unwrap();
            q.put(&1).unwrap();
            blocking();
            let got = format!("{:?}", q.put(&2));
            assert_eq!(q.get().unwrap(), 1);
            assert!(q.is_empty().unwrap(), "the interrupted put put nothing");
            got
        }
        Call::JoinForkserverChild | Call::JoinSpawnChild | Call::JoinForkChild => {
            let method = match call {
                Call::JoinForkserverChild => StartMethod::Forkserver,
                Call::JoinSpawnChild => StartMethod::Spawn,
                _ => StartMethod::Fork,
            };
            let mut child = Process::builder()
                .start_method(method)
                .daemon(true)
                .spawn(sleep_forever, ())
                .unwrap();
            blocking();
            let got = format!("{:?}", child.join());
            // The handle is untouched: it can be joined again.
            child.kill().unwrap();
            assert!(matches!(child.join(), Err(Error::Signaled { .. })));
            got
        }
        Call::Recv => {
            let (ours, _theirs) = Pipe::new().unwrap();
            blocking();
            format!("{:?}", ours.recv::<u32>())
        }
        Call::PoolMap | Call::ImapNext => {
            let pool = Pool::new(1).unwrap();
            let got = if call == Call::PoolMap {
                blocking();
                format!("{:?}", pool.map(sleep_forever_then_echo, [1u32]))
            } else {
                let mut results = pool.imap(sleep_forever_then_echo, [1u32], None).unwrap();
                blocking();
                format!("{:?}", results.next())
            };
            pool.terminate();
            got
        }
        Call::ManagerGet => {
            let mut server = ManagerServer::bind("127.0.0.1:0", b"k").unwrap();
            server.register_queue("q", 0);
            let mut served = server.start().unwrap();
            let manager = Manager::connect(served.address(), b"k").unwrap();
            let q = manager.get_queue::<u32>("q").unwrap();
            // With a handler, the call waits on (see the test below): once the handler has
            // run, another client puts the item it waits for.
            let address = served.address();
            let putter = std::thread::spawn(move || {
                if disposition == Disposition::Default {
                    return;
                }
                // Waits for the handler to have run.
                while !HANDLED.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                let other = Manager::connect(address, b"k").unwrap();
                other.get_queue::<u32>("q").unwrap().put(&5).unwrap();
            });
            blocking();
            let got = format!("{:?}", q.get());
            putter.join().unwrap();
            drop(q);
            drop(manager);
            served.shutdown().unwrap();
            got
        }
    };
    (outcome, HANDLED.load(Ordering::SeqCst))
}

/// The state letter of thread `tid` of `pid` from /proc.
fn thread_state(pid: u32, tid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Waits until the main thread of `pid` sleeps: in the call, since it said it was about to
/// make it, and each call is interruptible from its first step (a request that comes before it
/// sleeps still ends it), so from then on SIGINT finds it inside the call.
fn await_asleep(pid: u32) {
    let since = Instant::now();
    while thread_state(pid, pid) != Some('S') {
        assert!(since.elapsed() < GUARD, "process {pid} never blocked");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Starts a process blocked in `call`, interrupts it with SIGINT, and returns its join result.
fn interrupt(call: Call, disposition: Disposition) -> Result<(String, bool), Error> {
    let (ours, theirs) = Pipe::new().unwrap();
    let mut blocked = Process::builder()
        .start_method(StartMethod::Spawn)
        .spawn(block_in, (call, disposition, theirs))
        .unwrap();
    assert_eq!(ours.recv_timeout::<String>(GUARD).unwrap(), "blocking");
    await_asleep(blocked.pid());
    // SAFETY: kill(2) has no memory effects.
    unsafe { libc::kill(blocked.pid() as i32, libc::SIGINT) };
    let joined = blocked.join_timeout(GUARD);
    if matches!(joined, Err(Error::Timeout)) {
        // Still blocked: the interruption was swallowed. End it, so that nothing is left.
        blocked.kill().unwrap();
        let _ = blocked.join();
    }
    joined
}

/// What the subreaper saw: the process's join result (`Debug`), its descendants, those left
/// alive 10 s later, and how long the last took to go.
type Aftermath = (String, Vec<(u32, String)>, Vec<(u32, String)>, Duration);

/// Runs in a child of the test, as a subreaper: starts a process blocked in `call`, sends it
/// SIGINT (default disposition), and watches its descendants go.
fn interrupt_default(call: Call) -> Aftermath {
    become_subreaper();
    let (ours, theirs) = Pipe::new().unwrap();
    let mut blocked = Process::builder()
        .start_method(StartMethod::Spawn)
        .spawn(block_in, (call, Disposition::Default, theirs))
        .unwrap();
    assert_eq!(ours.recv_timeout::<String>(GUARD).unwrap(), "blocking");
    await_asleep(blocked.pid());
    let family: Vec<(u32, String)> = descendants(blocked.pid())
        .into_iter()
        .map(|pid| {
            (
                pid,
                std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default(),
            )
        })
        .collect();
    // SAFETY: kill(2) has no memory effects.
    unsafe { libc::kill(blocked.pid() as i32, libc::SIGINT) };
    let sent = Instant::now();
    let joined = blocked.join_timeout(GUARD);
    if matches!(joined, Err(Error::Timeout)) {
        blocked.kill().unwrap();
        let _ = blocked.join();
    }
    let joined = format!("{joined:?}");
    let (left, took) = await_gone(&family, sent, Duration::from_secs(10));
    (joined, family, left, took)
}

const EVERY_CALL: [Call; 9] = [
    Call::QueueGet,
    Call::BoundedQueuePut,
    Call::JoinForkserverChild,
    Call::JoinSpawnChild,
    Call::JoinForkChild,
    Call::Recv,
    Call::PoolMap,
    Call::ImapNext,
    Call::ManagerGet,
];

#[test]
fn smoke() {
    let (ours, theirs) = Pipe::new().unwrap();
    let mut child = Process::spawn(
        block_in,
        (
            Call::Recv,
            Disposition::Handler {
                restart: false,
                interrupt: true,
            },
            theirs,
        ),
    )
    .unwrap();
    assert_eq!(ours.recv_timeout::<String>(GUARD).unwrap(), "blocking");
    child.kill().unwrap();
    assert!(matches!(child.join(), Err(Error::Signaled { .. })));
}

/// With SIGINT's default disposition, a process blocked in any of the calls dies by the
/// signal, and its daemon children, pool workers, forkserver and manager server go with it.
#[test]
fn sigint_by_default_ends_the_process_and_its_family() {
    for call in EVERY_CALL {
        let mut watcher = Process::builder()
            .start_method(StartMethod::Spawn)
            .spawn(interrupt_default, call)
            .unwrap();
        let (joined, family, left, took) = watcher.join_timeout(Duration::from_secs(120)).unwrap();
        eprintln!(
            "{call:?}: {} descendants gone {took:?} after SIGINT",
            family.len()
        );
        assert!(
            joined.contains("Signaled") && joined.contains(&format!("signal: {}", libc::SIGINT)),
            "{call:?}: the process ended with {joined}"
        );
        assert!(
            family.len() >= 2,
            "{call:?}: the daemon children were seen: {family:?}"
        );
        assert!(
            left.is_empty(),
            "{call:?}: still alive 10 s after SIGINT: {left:?}"
        );
    }
}

/// With a handler installed (with or without `SA_RESTART`) that calls
/// `interrupt_blocked_calls`, the blocked call returns `Error::Interrupted` having taken nothing
/// (each call checks that it can be made again) and the process carries on.
#[test]
fn sigint_with_a_handler_interrupts_blocked_calls() {
    for restart in [false, true] {
        for call in EVERY_CALL {
            if call == Call::ManagerGet {
                continue; // see `a_served_get_waits_on_through_a_handled_sigint`
            }
            let joined = interrupt(
                call,
                Disposition::Handler {
                    restart,
                    interrupt: true,
                },
            );
            let (outcome, handled) = joined.unwrap_or_else(|e| {
                panic!("{call:?} (SA_RESTART: {restart}): the process failed: {e}")
            });
            assert!(handled, "{call:?}: the handler ran");
            assert!(
                outcome.contains("Interrupted"),
                "{call:?} (SA_RESTART: {restart}): the call returned {outcome}"
            );
        }
    }
}

/// The exception: a manager proxy's blocked `get` waits on through a handled SIGINT (the
/// handler runs, the call is not broken, and it returns the item put afterwards). Returning
/// `Interrupted` there would abandon a request the server is still serving: the item the
/// server then takes would be lost with its unread reply, until the server releases a claim
/// whose client hung up (issue 12 item 1).
#[test]
fn a_served_get_waits_on_through_a_handled_sigint() {
    for restart in [false, true] {
        let disposition = Disposition::Handler {
            restart,
            interrupt: true,
        };
        let joined = interrupt(Call::ManagerGet, disposition);
        let (outcome, handled) = joined.unwrap();
        assert!(handled, "the handler ran");
        assert_eq!(outcome, "Ok(5)", "SA_RESTART: {restart}");
    }
}

/// A handler that does not call `interrupt_blocked_calls` leaves a blocked `get` waiting: it
/// returns the item put after the handler ran (PEP 475; CATALOGUE PROC-12 for `join`).
#[test]
fn a_handler_that_does_not_ask_leaves_the_call_waiting() {
    let disposition = Disposition::Handler {
        restart: false,
        interrupt: false,
    };
    let (outcome, handled) = interrupt(Call::QueueGet, disposition).unwrap();
    assert!(handled, "the handler ran");
    assert_eq!(outcome, "Ok(5)");
}

/// Runs in a child of its own (the request reaches every blocked call of the process): a
/// thread calls `interrupt_blocked_calls` once the main thread sleeps in `get`, as the
/// `ctrlc` crate runs its handler on a thread of its own.
fn interrupted_from_a_thread(_: ()) -> String {
    let q: Queue<u32> = Queue::new().unwrap();
    let main = std::process::id();
    let interrupter = std::thread::spawn(move || {
        await_asleep(main);
        multiproc::interrupt_blocked_calls();
    });
    let got = format!("{:?}", q.get());
    interrupter.join().unwrap();
    got
}

#[test]
fn interrupt_blocked_calls_from_another_thread() {
    let mut child = Process::builder()
        .start_method(StartMethod::Spawn)
        .spawn(interrupted_from_a_thread, ())
        .unwrap();
    let joined = child.join_timeout(GUARD);
    if matches!(joined, Err(Error::Timeout)) {
        child.kill().unwrap();
        let _ = child.join();
    }
    assert_eq!(joined.unwrap(), "Err(Interrupted)");
}
