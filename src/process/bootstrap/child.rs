//! The child side: the pre-main hook that turns a re-executed binary into a child or a
//! forkserver, reading and checking the bootstrap message, running the job and reporting, and a
//! daemon's watch on its parent.

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};

use super::function_ref::Verified;
use super::message::{
    read_message, send_outcome, Failure, ReportTo, ALIVE_FD, CHILD_FD, MARKER, MARKER_NAME,
};
use super::trampoline::{install_panic_hook, Outcome};
use crate::codec::FdTable;
use crate::connection::Connection;
use crate::process::runtime::{self, Identity};
use crate::process::AuthKey;
use crate::{sys, Error};

/// The pre-main entry point: turns this process into a child or a forkserver if the marker
/// says so; otherwise returns and `main` runs.
#[ctor::ctor(unsafe)]
pub(super) fn pre_main() {
    let Some(marker) = sys::take_env(MARKER) else {
        return;
    };
    let fields: Vec<&str> = marker.split(':').collect();
    // Once the marker is present `main` must never run, or a child that cannot bootstrap
    // would run the parent's program again (a fork bomb, CPython's TestNoForkBomb). The
    // parent pid in the marker is not a check: a parent may exit between starting a child
    // and the child's first instruction (the child is then an orphan that must still run).
    // The nonce, repeated in the bootstrap message, is the check; a marker that did not come
    // from a multiproc parent finds no socket at descriptor 3 and fails loudly.
    if !sys::is_socket(CHILD_FD) {
        let _ = writeln!(
            std::io::stderr(),
            "multiproc: {MARKER_NAME}={marker} is set, but this process was not started by \
             multiproc (no bootstrap socket at descriptor {CHILD_FD}); unset {MARKER_NAME}"
        );
        sys::exit_immediately(1)
    }
    sys::ignore_sigpipe();
    match (fields[0], fields.get(2).and_then(|n| n.parse::<u64>().ok())) {
        ("child", Some(nonce)) => {
            // SAFETY: the parent placed our socket at CHILD_FD with posix_spawn (checked to
            // be a socket above); nothing else in this fresh process owns it.
            let conn = unsafe { sys::own_fd(CHILD_FD) };
            run(conn, Some(nonce))
        }
        ("forkserver", Some(_)) if sys::fd_is_open(ALIVE_FD) => {
            if fields.get(3) == Some(&"bind-now") {
                // Set by the parent for the dynamic linker only (see forkserver::Server).
                let _ = sys::take_env(c"LD_BIND_NOW");
            }
            // SAFETY: as above, for the control socket and the alive pipe.
            let (control, alive) = unsafe { (sys::own_fd(CHILD_FD), sys::own_fd(ALIVE_FD)) };
            crate::process::start::forkserver::serve(control, alive)
        }
        _ => {
            let _ = writeln!(
                std::io::stderr(),
                "multiproc: malformed {MARKER_NAME}={marker}"
            );
            sys::exit_immediately(1)
        }
    }
}

/// Who the child is, and its parent's alive pipe: what every child gets besides its work.
pub(crate) struct ChildSetup {
    pub(crate) runtime: runtime::Prepared,
    pub(crate) daemon: bool,
    /// The read end of the parent's alive pipe (a daemon watches it). A fork child that is
    /// not a daemon gets none: it would only close it.
    pub(crate) alive: Option<OwnedFd>,
}

/// Whether the child is a copy of a parent that may have had other threads (fork): then it
/// must not take locks that such threads could have held (stdout, the panic hook).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// Forked from the program itself.
    Forked,
    /// Re-executed (spawn).
    Fresh,
    /// Forked from the single-threaded forkserver, which installed the panic hook already.
    Served,
}

/// The child side of spawn and forkserver: read the bootstrap message from `socket`, then run
/// the function it names. `expected_nonce` is the nonce from a spawn marker.
pub(crate) fn run(socket: OwnedFd, expected_nonce: Option<u64>) -> ! {
    // dup2 to its fixed number cleared close-on-exec: programs `f` runs must not inherit it.
    let _ = sys::set_cloexec(socket.as_fd());
    let conn = Connection::from_fd(socket);
    match receive_job(&conn, expected_nonce) {
        Ok((setup, call, frame, args_offset, mut fds)) => {
            // Only spawn children carry a nonce; forkserver children are forked from the server.
            let origin = if expected_nonce.is_some() {
                Origin::Fresh
            } else {
                Origin::Served
            };
            run_job(ReportTo::Socket(conn), setup, origin, move || {
                call.run(&frame[args_offset..], &mut fds)
            })
        }
        Err(failure) => {
            let reason = match &failure {
                Failure::Refused(reason) => reason.clone(),
                _ => "the bootstrap message's function reference was not made by this process \
                      family"
                    .to_string(),
            };
            let report = ReportTo::Socket(conn);
            let _ = send_outcome(&report, Outcome::Failed(failure));
            let _ = writeln!(
                std::io::stderr(),
                "multiproc child {}: {reason}",
                sys::getpid()
            );
            sys::exit_immediately(1)
        }
    }
}

/// Runs `work`, sends its outcome to `report`, and exits: 0 after a result, 1 after a panic
/// or any other failure (CPython's code for an uncaught exception).
pub(crate) fn run_job(
    report: ReportTo<'_>,
    setup: ChildSetup,
    origin: Origin,
    work: impl FnOnce() -> Outcome,
) -> ! {
    runtime::install_child(setup.runtime);
    if setup.daemon {
        if let Some(alive) = setup.alive {
            watch_parent(alive);
        }
    } else {
        drop(setup.alive);
    }
    if origin == Origin::Fresh {
        // Swapping the hook takes a lock that a thread of a forked parent may have held.
        install_panic_hook();
    }
    let outcome = work();
    let code = match outcome {
        Outcome::Returned(..) => 0,
        Outcome::Failed(_) => 1,
    };
    let code = match send_outcome(&report, outcome) {
        // A parent that dropped our handle no longer wants the result: not an error.
        Ok(()) | Err(Error::Disconnected) => code,
        Err(e) => {
            // Not `writeln!(stderr)`: its lock may be held by a thread of a forked parent.
            write_stderr(format!("multiproc child {}: {e}\n", sys::getpid()).as_bytes());
            1
        }
    };
    if origin != Origin::Forked {
        // Rust's stdout is line-buffered: only a partial last line can be pending. In a fork
        // child the stdout lock may be held by a thread that no longer exists, so it is left.
        let _ = std::io::stdout().flush();
    }
    sys::exit_immediately(code)
}

/// What `receive_job` finds in a bootstrap message.
pub(super) type ReceivedJob = (ChildSetup, Verified, Vec<u8>, usize, FdTable);

/// Reads and checks the bootstrap message.
pub(super) fn receive_job(
    conn: &Connection,
    expected_nonce: Option<u64>,
) -> Result<ReceivedJob, Failure> {
    let (header, frame, header_len, mut fds) =
        read_message(conn, expected_nonce).map_err(Failure::Refused)?;
    let alive = fds
        .pop()
        .ok_or_else(|| Failure::Refused("the bootstrap message carries no alive pipe".into()))?;
    // The message brings the family's key (see the module docs); the call is checked with it
    // through the one path that turns a reference into a function.
    let authkey = AuthKey::from_bytes(header.authkey);
    let call = header
        .entry
        .verify(&authkey, "the bootstrap message")
        .map_err(|_| Failure::Unauthenticated)?;
    let setup = ChildSetup {
        daemon: header.daemon,
        runtime: runtime::prepare(Identity {
            name: header.name,
            daemon: header.daemon,
            parent_pid: Some(header.parent_pid as u32),
            start_method: Some(header.start_method),
            authkey,
        }),
        alive: Some(alive),
    };
    Ok((setup, call, frame, 4 + header_len, FdTable::new(fds)))
}

/// A daemon child dies with its parent, with no thread and no allocation: the kernel sends
/// it `SIGKILL` when the last write end of the parent's alive pipe closes, i.e. when the
/// parent is gone, however it died (`sys::kill_self_on_hangup`: `O_ASYNC` on a private
/// reopening of the read end, with `F_SETSIG`). `PR_SET_PDEATHSIG` would fire on the exit of
/// the *thread* that started us instead. Async-signal-safe, so a fork child can do it before
/// running its function (see `process::start::fork`).
pub(super) fn watch_parent(alive: OwnedFd) {
    match sys::kill_self_on_hangup(alive.as_fd()) {
        Ok(watch) => {
            // Kept open for the life of this process; a child forked from us closes its copy.
            sys::track_fd(std::os::fd::AsRawFd::as_raw_fd(&watch));
            std::mem::forget(watch);
        }
        Err(_) => write_stderr(
            b"multiproc: cannot watch the parent; this daemon may outlive its parent\n",
        ),
    }
    drop(alive);
}

/// Writes `message` to standard error with one `write`, without the lock `std::io::stderr`
/// takes (a thread of a forked parent may have held it).
pub(super) fn write_stderr(message: &[u8]) {
    let _ = nix::unistd::write(std::io::stderr(), message);
}
