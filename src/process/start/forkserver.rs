//! The forkserver start method: a small server, re-executed from this binary on first use while
//! it is still single-threaded, forks each child on request.
//!
//! Fork is cheap in the server (a small process, no threads), and the child is a copy of a
//! process that never ran the program's `main`, so nothing another thread held is locked in it:
//! safe like spawn, fast like fork. This is the default start method.
//!
//! # Protocol
//! The server holds a control socket (descriptor 3) and the parent's alive pipe (descriptor 4).
//! - Request: one byte, carrying two descriptors by `SCM_RIGHTS`: the child's bootstrap socket
//!   and the write end of a per-child status socket.
//! - The server hands the bootstrap socket to its *spare*: a child it forked in advance, which
//!   waits for exactly that on a private socket. The spare moves the socket to descriptor 3
//!   and runs the ordinary child bootstrap: the parent sends it the bootstrap message
//!   directly. The server then forks the next spare, after replying, so a request never waits
//!   for a fork (CPython's forkserver forks on the request's critical path). If no spare is
//!   ready (it died, or could not be forked) the server forks the child on the spot.
//! - Reply: the child's pid as a little-endian `i32` (or `-errno` if fork failed), carrying the
//!   child's pidfd, which lets the parent poll and signal a process that is not its child.
//! - When a child exits the server reaps it and writes its raw wait status (little-endian
//!   `i32`) to that child's status socket, then closes it.
//!
//! The server exits when the control socket or the alive pipe reaches end of stream, i.e.
//! when its parent is gone. If the server dies, the next request finds the control socket
//! broken and starts a new server; children of the old one carry on (their status is then
//! reported as exit code 255, see `process::child`).

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use super::super::runtime::Runtime;
use super::super::Started;
use super::{child_argv, environment_with, SELF_EXE};
use crate::bootstrap::{self, ALIVE_FD, CHILD_FD};
use crate::sys::{self, Forked};
use crate::Error;

/// The dynamic linker's switch for resolving every symbol at startup.
const BIND_NOW: &str = "LD_BIND_NOW";

/// Our handle on the running server.
#[derive(Debug)]
pub(crate) struct Server {
    control: OwnedFd,
    pidfd: OwnedFd,
}

/// Asks this process's forkserver (starting it if needed) for a child that will run its
/// bootstrap from `child_end`.
pub(crate) fn start(rt: &Runtime, child_end: OwnedFd) -> Result<Started, Error> {
    let mut server = rt.forkserver.lock().unwrap_or_else(|e| e.into_inner());
    // A server that died since the last request shows up as a broken control socket when the
    // request is sent: start a fresh one and send again (CPython's test_forkserver_sigkill).
    // Once the request went out, a failure is final: the server may have forked a child that
    // already took the bootstrap message, and a second child would wait for one for ever.
    let mut last_error = None;
    for _ in 0..2 {
        let current = match server.as_mut() {
            Some(s) => s,
            None => server.insert(Server::launch(rt)?),
        };
        match current.send_request(&child_end) {
            Ok(status_read) => {
                let reply = current.read_reply(status_read);
                if reply.is_err() {
                    *server = None;
                }
                return reply.map_err(Error::os("forkserver reply"));
            }
            Err(e) => {
                last_error = Some(e);
                *server = None;
            }
        }
    }
    Err(Error::Os {
        op: "forkserver request",
        source: last_error.unwrap_or_else(|| io::Error::other("forkserver unavailable")),
    })
}

impl Server {
    fn launch(rt: &Runtime) -> Result<Server, Error> {
        let (ours, theirs) = sys::stream_pair().map_err(Error::os("socketpair"))?;
        let alive = rt.alive_reader().map_err(Error::os("pipe"))?;
        // LD_BIND_NOW: the dynamic linker resolves every symbol when the server starts, instead
        // of each child resolving (and copying the pages of) the same symbols on first call.
        // The server removes it again, so children run with the parent's environment.
        let bind_now = std::env::var_os(BIND_NOW).is_none();
        let mut env = environment_with(format!(
            "forkserver:{}:0{}",
            sys::getpid(),
            if bind_now { ":bind-now" } else { "" }
        ));
        if bind_now {
            env.extend(std::ffi::CString::new(format!("{BIND_NOW}=1")).ok());
        }
        let pid = sys::spawn(
            SELF_EXE,
            &child_argv(),
            &env,
            &[(theirs.as_fd(), CHILD_FD), (alive, ALIVE_FD)],
        )
        .map_err(Error::os("posix_spawn forkserver"))?;
        let pidfd = sys::pidfd_open(pid).map_err(Error::os("pidfd_open"))?;
        Ok(Server {
            control: ours,
            pidfd,
        })
    }

    /// Sends a request; returns the read end of the new child's status socket.
    fn send_request(&mut self, child_end: &OwnedFd) -> io::Result<OwnedFd> {
        let (status_read, status_write) = sys::stream_pair()?;
        sys::send_all(
            self.control.as_fd(),
            &[b"F"],
            &[child_end.as_raw_fd(), status_write.as_raw_fd()],
        )?;
        Ok(status_read)
    }

    /// Reads the server's reply to a request: the child's pid and pidfd.
    fn read_reply(&mut self, status_read: OwnedFd) -> io::Result<Started> {
        let mut reply = [0u8; 4];
        let mut fds = Vec::new();
        let mut got = 0;
        while got < reply.len() {
            let n = sys::recv_with_fds(self.control.as_fd(), &mut reply[got..], &mut fds)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            got += n;
        }
        let pid = i32::from_le_bytes(reply);
        if pid < 0 {
            return Err(io::Error::from_raw_os_error(-pid));
        }
        let pidfd = fds
            .pop()
            .ok_or_else(|| io::Error::other("forkserver sent no pidfd"))?;
        Ok(Started {
            pid,
            pidfd,
            status_socket: Some(status_read),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Closing the control socket tells the server to exit; reap it so no zombie is left.
        // If it does not go within a second, kill it.
        let _ =
            nix::sys::socket::shutdown(self.control.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        let deadline = Instant::now() + Duration::from_secs(1);
        if !sys::wait_readable(self.pidfd.as_fd(), Some(deadline)).unwrap_or(false) {
            let _ = sys::pidfd_send_signal(self.pidfd.as_fd(), libc::SIGKILL);
        }
        let _ = sys::waitid_pidfd(self.pidfd.as_fd(), true);
    }
}

/// One child of the server, until it is reaped.
struct ServedChild {
    pid: libc::pid_t,
    pidfd: OwnedFd,
    status: OwnedFd,
}

/// A child forked ahead of the next request, blocked reading its bootstrap socket from `sock`.
struct Spare {
    pid: libc::pid_t,
    pidfd: OwnedFd,
    sock: OwnedFd,
}

impl Spare {
    /// Forks a spare. Only descriptor 3 (its end of the private socket) stays open in it.
    fn fork() -> Option<Spare> {
        let (ours, theirs) = sys::stream_pair().ok()?;
        // SAFETY: the server is single-threaded, so the child may run anything.
        match unsafe { sys::fork() } {
            Ok(Forked::Child) => {
                // SAFETY: descriptor 3 is the server's control socket, whose OwnedFd is never
                // used or dropped in this child (it ends in _exit).
                let sock = unsafe { sys::move_fd(theirs, CHILD_FD) };
                sys::close_from(CHILD_FD + 1);
                std::mem::forget(ours);
                Spare::wait_for_work(sock)
            }
            Ok(Forked::Parent(pid)) => {
                drop(theirs);
                match sys::pidfd_open(pid) {
                    Ok(pidfd) => Some(Spare {
                        pid,
                        pidfd,
                        sock: ours,
                    }),
                    Err(_) => {
                        sys::kill_and_reap(pid);
                        None
                    }
                }
            }
            Err(_) => None,
        }
    }

    /// The spare's life: wait for a bootstrap socket, then become that child. End of stream
    /// means the server is gone.
    fn wait_for_work(sock: OwnedFd) -> ! {
        let mut byte = [0u8; 1];
        let mut fds = Vec::new();
        match sys::recv_with_fds(sock.as_fd(), &mut byte, &mut fds) {
            Ok(1) if fds.len() == 1 => {}
            _ => sys::exit_immediately(0),
        }
        let Some(child_end) = fds.pop() else {
            sys::exit_immediately(0)
        };
        drop(sock);
        // SAFETY: descriptor 3 was just closed (the private socket); nothing else owns it.
        let socket = unsafe { sys::move_fd(child_end, CHILD_FD) };
        sys::close_from(CHILD_FD + 1);
        bootstrap::run(socket, None)
    }

    /// Gives the spare its bootstrap socket; on failure (the spare died) it is reaped and the
    /// socket handed back.
    fn assign(self, child_end: OwnedFd) -> Result<(libc::pid_t, OwnedFd), OwnedFd> {
        match sys::send_all(self.sock.as_fd(), &[b"C"], &[child_end.as_raw_fd()]) {
            Ok(()) => Ok((self.pid, self.pidfd)),
            Err(_) => {
                let _ = sys::pidfd_send_signal(self.pidfd.as_fd(), libc::SIGKILL);
                let _ = sys::waitid_pidfd(self.pidfd.as_fd(), true);
                Err(child_end)
            }
        }
    }
}

/// The server's main loop; runs in the re-executed process, before `main`, and never returns.
pub(crate) fn serve(control: OwnedFd, alive: OwnedFd) -> ! {
    // An ignored SIGCHLD inherited from the parent would make the kernel reap our children
    // before we can read their status.
    sys::default_sigchld();
    // What every child needs and would otherwise set up for itself, each time, on
    // copy-on-write pages: done once here, inherited by every fork.
    let _ = sys::exe_identity();
    bootstrap::install_panic_hook();
    crate::connection::warm_up();
    crate::codec::warm_up();
    let mut children: Vec<ServedChild> = Vec::new();
    let mut spare = Spare::fork();
    let mut spare_failed = spare.is_none();
    let mut watched: Vec<RawFd> = Vec::with_capacity(64);
    let mut polled = Vec::with_capacity(64);
    let mut ready: Vec<usize> = Vec::with_capacity(64);
    loop {
        watched.clear();
        watched.extend([control.as_raw_fd(), alive.as_raw_fd()]);
        watched.extend(children.iter().map(|c| c.pidfd.as_raw_fd()));
        // Without a spare, look before waiting: a pending request or exit is served before
        // the next spare is forked, since forking takes the server tens of microseconds.
        let refill = spare.is_none() && !spare_failed;
        // Buffers kept across iterations: after each fork every page the server writes costs
        // a copy-on-write fault, so the loop allocates as little as it can.
        if sys::poll_readable_into(
            &watched,
            if refill { 0 } else { -1 },
            &mut polled,
            &mut ready,
        )
        .is_err()
        {
            sys::exit_immediately(1)
        }
        if ready.is_empty() {
            if refill {
                spare = Spare::fork();
                spare_failed = spare.is_none();
            }
            continue;
        }
        if ready.contains(&1) {
            // The parent is gone.
            sys::exit_immediately(0);
        }
        // Highest index first: reporting swap-removes from `children`, which `ready` indexes.
        for &i in ready.iter().rev().filter(|&&i| i >= 2) {
            report_exit(&mut children, i - 2);
        }
        if ready.contains(&0) {
            let mut byte = [0u8; 1];
            let mut fds = Vec::new();
            match sys::recv_with_fds(control.as_fd(), &mut byte, &mut fds) {
                Ok(0) | Err(_) => sys::exit_immediately(0),
                Ok(_) => {}
            }
            if let Some(child) = start_child(&control, fds, spare.take()) {
                children.push(child);
            }
            // A spare that could not be forked before may be possible now.
            spare_failed = false;
        }
    }
}

/// Reaps `children[index]` if it has exited and sends its status on.
fn report_exit(children: &mut Vec<ServedChild>, index: usize) {
    let status = match sys::waitpid_nohang(children[index].pid) {
        Ok(None) => return,
        Ok(Some(status)) => status,
        // Reaped by someone else: the status is lost (CPython's 255).
        Err(_) => sys::WaitStatus::Exited(255),
    };
    let child = children.swap_remove(index);
    let raw = status.to_raw().to_le_bytes();
    // The parent may be gone or have dropped the handle: nothing to do then.
    let _ = sys::send_all(child.status.as_fd(), &[&raw], &[]);
}

/// Serves one request with the spare, or by forking if there is none. Replies to the parent.
fn start_child(
    control: &OwnedFd,
    mut fds: Vec<OwnedFd>,
    spare: Option<Spare>,
) -> Option<ServedChild> {
    let reply = |value: i32, fds: &[RawFd]| {
        let _ = sys::send_all(control.as_fd(), &[&value.to_le_bytes()], fds);
    };
    if fds.len() != 2 {
        reply(-libc::EINVAL, &[]);
        return None;
    }
    let status = fds.pop()?;
    let mut child_end = fds.pop()?;
    if let Some(spare) = spare {
        match spare.assign(child_end) {
            Ok((pid, pidfd)) => {
                reply(pid, &[pidfd.as_raw_fd()]);
                return Some(ServedChild { pid, pidfd, status });
            }
            Err(returned) => child_end = returned,
        }
    }
    // SAFETY: the server is single-threaded, so the child may run anything.
    match unsafe { sys::fork() } {
        Ok(Forked::Child) => {
            // SAFETY: descriptor 3 is the server's control socket, whose OwnedFd is never used
            // or dropped in this child (the bootstrap ends in _exit).
            let socket = unsafe { sys::move_fd(child_end, CHILD_FD) };
            // Everything else the server holds (the control socket, the alive pipe, other
            // children's status sockets) must not live on in the child.
            sys::close_from(CHILD_FD + 1);
            bootstrap::run(socket, None)
        }
        Ok(Forked::Parent(pid)) => {
            drop(child_end);
            match sys::pidfd_open(pid) {
                Ok(pidfd) => {
                    reply(pid, &[pidfd.as_raw_fd()]);
                    Some(ServedChild { pid, pidfd, status })
                }
                Err(e) => {
                    // Untrackable: do not leave it running or unreaped.
                    sys::kill_and_reap(pid);
                    reply(-e.raw_os_error().unwrap_or(libc::EIO), &[]);
                    None
                }
            }
        }
        Err(e) => {
            reply(-e.raw_os_error().unwrap_or(libc::EIO), &[]);
            None
        }
    }
}
