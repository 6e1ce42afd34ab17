//! The forkserver start method: a small server, re-executed from this binary on first use while
//! it is still single-threaded, forks the children.
//!
//! Fork is cheap in the server (a small process, no threads), and the child is a copy of a
//! process that never ran the program's `main`, so nothing another thread held is locked in it:
//! safe like spawn, fast like fork. This is the default start method.
//!
//! # Protocol
//! The server holds the far end of a `SOCK_SEQPACKET` control socket (descriptor 3) and the
//! parent's alive pipe (descriptor 4). It keeps one *spare*: a child forked in advance, with
//! its own private socket to the server, waiting on the control socket. CPython's forkserver
//! forks on each request; here no request waits for a fork, nor even for the server.
//! - Request (parent → control socket): one byte, carrying two descriptors by `SCM_RIGHTS`:
//!   the child's bootstrap socket and the write end of a per-child status socket. Records are
//!   read whole by one reader, so exactly one spare takes each request.
//! - The spare that takes it passes the status socket to the server on its private socket
//!   (the server forks the next spare when it is idle), moves the bootstrap socket to
//!   descriptor 3, closes everything else, and greets the parent on the bootstrap socket:
//!   `H` and its pid (little-endian `i32`) in one framed message, carrying its own pidfd, which
//!   lets the parent poll and signal a process that is not its child. Then it runs the
//!   ordinary child bootstrap; the parent sends the bootstrap message directly.
//! - With no spare (forking one failed), the server takes requests itself, forks the child on
//!   the spot, and on failure answers on the bootstrap socket with `E` and the errno.
//! - When a child exits the server reaps it and writes its raw wait status (little-endian
//!   `i32`) to that child's status socket, then closes it.
//!
//! The server exits when the control socket hangs up or the alive pipe reaches end of stream,
//! i.e. when its parent is gone; a spare exits when the server does. If the server dies, the
//! next request finds the control socket broken and starts a new server; children of the old
//! one carry on (their status is then reported as exit code 255, see `process::child`).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use super::super::runtime::Runtime;
use super::Started;
use super::{child_argv, environment_with, SELF_EXE};
use crate::connection::Connection;
use crate::process::bootstrap::{self, ALIVE_FD, CHILD_FD};
use crate::sys::{self, Forked};
use crate::Error;

/// Asks this process's forkserver (starting it if needed) for a child that will run its
/// bootstrap from `child_end`, and reads the child's greeting on `conn`, our end of it.
pub(crate) fn start(rt: &Runtime, child_end: OwnedFd, conn: &Connection) -> Result<Started, Error> {
    let status_read = {
        let mut server = rt.forkserver.lock().unwrap_or_else(|e| e.into_inner());
        // A server that died since the last request shows up as a broken control socket when
        // the request is sent: start a fresh one and send again (CPython's
        // test_forkserver_sigkill). Once the request went out it is the child's to answer.
        let mut sent = None;
        let mut last_error = None;
        for _ in 0..2 {
            let current = match server.as_mut() {
                Some(s) => s,
                None => server.insert(Server::launch(rt)?),
            };
            match current.send_request(&child_end) {
                Ok(status_read) => {
                    sent = Some(status_read);
                    break;
                }
                Err(e) => {
                    last_error = Some(e);
                    *server = None;
                }
            }
        }
        sent.ok_or_else(|| Error::Os {
            op: "forkserver request",
            source: last_error
                .unwrap_or_else(|| io::Error::other("forkserver unavailable"))
                .into(),
        })?
    };
    // The child (or the server) has its own copy now; ours would keep the greeting from ever
    // failing with end of stream if they died.
    drop(child_end);
    read_greeting(conn, status_read)
}

/// Reads the child's greeting: its pid and pidfd, or the server's errno.
fn read_greeting(conn: &Connection, status_read: OwnedFd) -> Result<Started, Error> {
    let (frame, mut fds) = conn.recv_raw().map_err(|e| match e {
        Error::Disconnected => Error::Os {
            op: "forkserver child",
            source: io::Error::other("the forkserver went away before the child started").into(),
        },
        other => other,
    })?;
    let value = frame
        .get(1..5)
        .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(Error::Malformed {
            what: "forkserver greeting",
        })?;
    match (frame.first(), fds.pop()) {
        (Some(&GREETING), Some(pidfd)) if value > 0 => Ok(Started {
            pid: value,
            pidfd,
            status_socket: Some(status_read),
        }),
        (Some(&REFUSAL), _) => Err(Error::Os {
            op: "forkserver fork",
            source: io::Error::from_raw_os_error(value).into(),
        }),
        _ => Err(Error::Malformed {
            what: "forkserver greeting",
        }),
    }
}

/// The first byte of a child's greeting, and of the server's refusal.
const GREETING: u8 = b'H';
const REFUSAL: u8 = b'E';

/// The dynamic linker's switch for resolving every symbol at startup.
const BIND_NOW: &str = "LD_BIND_NOW";

/// Our handle on the running server.
#[derive(Debug)]
pub(crate) struct Server {
    control: OwnedFd,
    pidfd: OwnedFd,
}

impl Server {
    fn launch(rt: &Runtime) -> Result<Server, Error> {
        let (ours, theirs) = sys::seqpacket_pair().map_err(Error::os("socketpair"))?;
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

/// A child forked ahead of the next request, waiting on the control socket; `private` is the
/// server's end of its private socket.
struct Spare {
    pid: libc::pid_t,
    pidfd: OwnedFd,
    private: OwnedFd,
}

/// Where the control socket sits in the server and in its spares.
const CONTROL_FD: RawFd = CHILD_FD;
/// Where a spare's private socket to the server sits.
const PRIVATE_FD: RawFd = CHILD_FD + 1;

impl Spare {
    /// Forks a spare. In it only the control socket and its private socket stay open.
    fn fork() -> Option<Spare> {
        let (ours, theirs) = sys::seqpacket_pair().ok()?;
        // SAFETY: the server is single-threaded, so the child may run anything.
        match unsafe { sys::fork() } {
            Ok(Forked::Child) => {
                // SAFETY: descriptor PRIVATE_FD is the alive pipe, whose OwnedFd is never used
                // or dropped in this child (it ends in _exit).
                let private = unsafe { sys::move_fd(theirs, PRIVATE_FD) };
                sys::close_from(PRIVATE_FD + 1);
                std::mem::forget(ours);
                Spare::wait_for_request(private)
            }
            Ok(Forked::Parent(pid)) => {
                drop(theirs);
                match sys::pidfd_open(pid) {
                    Ok(pidfd) => Some(Spare {
                        pid,
                        pidfd,
                        private: ours,
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

    /// The spare's life: take one request from the control socket, tell the server, become
    /// that child. The server hanging up (its end of `private`) or the control socket hanging
    /// up (the parent is gone) ends it.
    fn wait_for_request(private: OwnedFd) -> ! {
        let watch = [
            (private.as_raw_fd(), libc::POLLIN),
            (CONTROL_FD, libc::POLLIN),
        ];
        let (mut polled, mut ready) = (Vec::with_capacity(2), Vec::with_capacity(2));
        loop {
            if sys::poll_into(&watch, -1, &mut polled, &mut ready).is_err() || ready.contains(&0) {
                sys::exit_immediately(0);
            }
            if ready.is_empty() {
                continue;
            }
            let mut byte = [0u8; 1];
            let mut fds = Vec::new();
            // SAFETY: CONTROL_FD is the control socket, open for the life of this process.
            let control = unsafe { BorrowedFd::borrow_raw(CONTROL_FD) };
            match sys::try_recv_with_fds(control, &mut byte, &mut fds) {
                Ok(0) => sys::exit_immediately(0),
                Ok(_) if fds.len() == 2 => {}
                // Malformed: nobody to answer. Taken by another reader first: wait again.
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(_) => sys::exit_immediately(0),
            }
            let status = fds.pop();
            // The server keeps the status socket to report our exit. If the server is gone,
            // carry on: the parent then learns the status is lost (255), as for any child of a
            // dead server.
            let status_fd: Vec<RawFd> = status.iter().map(AsRawFd::as_raw_fd).collect();
            let _ = sys::send_all(private.as_fd(), &[b"T"], &status_fd);
            drop(status);
            drop(private);
            if let Some(child_end) = fds.pop() {
                become_child(child_end)
            }
            sys::exit_immediately(1)
        }
    }
}

/// In a freshly forked child that took a request: keep only the bootstrap socket, greet the
/// parent with our pid and pidfd, and run the child bootstrap.
fn become_child(child_end: OwnedFd) -> ! {
    // SAFETY: descriptor 3 is the control socket; the OwnedFd that holds it in the server is
    // never used or dropped in this child (it ends in _exit), and replacing it is all we want.
    let socket = unsafe { sys::move_fd(child_end, CHILD_FD) };
    sys::close_from(CHILD_FD + 1);
    let pid = sys::getpid();
    let greeted = match sys::pidfd_open(pid) {
        Ok(pidfd) => send_greeting(&socket, GREETING, pid, Some(&pidfd)),
        Err(e) => send_greeting(
            &socket,
            REFUSAL,
            e.raw_os_error().unwrap_or(libc::EIO),
            None,
        ),
    };
    if greeted.is_err() {
        // The parent is gone: nobody wants this child.
        sys::exit_immediately(1)
    }
    bootstrap::run(socket, None)
}

/// Sends a greeting or refusal in the connection's framing (a 4-byte big-endian length).
fn send_greeting(socket: &OwnedFd, tag: u8, value: i32, pidfd: Option<&OwnedFd>) -> io::Result<()> {
    let mut frame = [0u8; 9];
    frame[..4].copy_from_slice(&5u32.to_be_bytes());
    frame[4] = tag;
    frame[5..].copy_from_slice(&value.to_le_bytes());
    let fds: Vec<RawFd> = pidfd.iter().map(|fd| fd.as_raw_fd()).collect();
    sys::send_all(socket.as_fd(), &[&frame], &fds)
}

/// The server's state: its sockets, its children, its spare.
struct ServerLoop {
    control: OwnedFd,
    alive: OwnedFd,
    children: Vec<ServedChild>,
    spare: Option<Spare>,
    /// Set when forking a spare failed; the server then takes requests itself until one is
    /// served, and tries again.
    spare_failed: bool,
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
    let mut server = ServerLoop {
        control,
        alive,
        children: Vec::new(),
        spare: None,
        spare_failed: false,
    };
    server.refill();
    // Buffers kept across iterations: after each fork every page the server writes costs a
    // copy-on-write fault, so the loop allocates as little as it can.
    let mut watch: Vec<(RawFd, libc::c_short)> = Vec::with_capacity(64);
    let (mut polled, mut ready) = (Vec::with_capacity(64), Vec::with_capacity(64));
    loop {
        // 0: the alive pipe; 1: the control socket (hang-up only, unless we serve requests
        // ourselves); 2: the spare's private socket, if any; then the children's pidfds.
        watch.clear();
        watch.push((server.alive.as_raw_fd(), libc::POLLIN));
        let serve_requests = server.spare.is_none() && server.spare_failed;
        watch.push((
            server.control.as_raw_fd(),
            if serve_requests { libc::POLLIN } else { 0 },
        ));
        let spare_fd = server.spare.as_ref().map_or(-1, |s| s.private.as_raw_fd());
        watch.push((spare_fd, libc::POLLIN));
        watch.extend(
            server
                .children
                .iter()
                .map(|c| (c.pidfd.as_raw_fd(), libc::POLLIN)),
        );
        // Without a spare, look before waiting: pending work is done before the next spare
        // is forked, since forking takes the server tens of microseconds.
        let refill = server.spare.is_none() && !server.spare_failed;
        if sys::poll_into(&watch, if refill { 0 } else { -1 }, &mut polled, &mut ready).is_err() {
            sys::exit_immediately(1)
        }
        if ready.is_empty() {
            if refill {
                server.refill();
            }
            continue;
        }
        if ready.contains(&0) {
            // The parent is gone.
            sys::exit_immediately(0);
        }
        if ready.contains(&2) {
            server.spare_taken();
        }
        // Highest index first: reporting swap-removes from `children`, which `ready` indexes.
        for &i in ready.iter().rev().filter(|&&i| i >= 3) {
            report_exit(&mut server.children, i - 3);
        }
        if ready.contains(&1) {
            if !serve_requests || polled[1].revents & libc::POLLIN == 0 {
                // Hang-up: the parent closed the control socket.
                sys::exit_immediately(0);
            }
            server.serve_request();
        }
    }
}

impl ServerLoop {
    fn refill(&mut self) {
        self.spare = Spare::fork();
        self.spare_failed = self.spare.is_none();
    }

    /// The spare's private socket is readable: it took a request (and sent the status
    /// socket), or it died.
    fn spare_taken(&mut self) {
        let Some(spare) = self.spare.take() else {
            return;
        };
        let mut byte = [0u8; 1];
        let mut fds = Vec::new();
        match sys::try_recv_with_fds(spare.private.as_fd(), &mut byte, &mut fds) {
            Ok(1) if fds.len() == 1 => {
                if let Some(status) = fds.pop() {
                    self.children.push(ServedChild {
                        pid: spare.pid,
                        pidfd: spare.pidfd,
                        status,
                    });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.spare = Some(spare),
            // End of stream (it died) or nonsense: reap it; the next spare replaces it.
            _ => {
                let _ = sys::pidfd_send_signal(spare.pidfd.as_fd(), libc::SIGKILL);
                let _ = sys::waitid_pidfd(spare.pidfd.as_fd(), true);
            }
        }
    }

    /// With no spare to be had, takes a request itself and forks its child on the spot.
    fn serve_request(&mut self) {
        let mut byte = [0u8; 1];
        let mut fds = Vec::new();
        match sys::try_recv_with_fds(self.control.as_fd(), &mut byte, &mut fds) {
            Ok(0) => sys::exit_immediately(0),
            Ok(_) if fds.len() == 2 => {}
            Ok(_) => return,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(_) => sys::exit_immediately(1),
        }
        self.spare_failed = false;
        let (Some(status), Some(child_end)) = (fds.pop(), fds.pop()) else {
            return;
        };
        // SAFETY: the server is single-threaded, so the child may run anything.
        match unsafe { sys::fork() } {
            Ok(Forked::Child) => become_child(child_end),
            Ok(Forked::Parent(pid)) => match sys::pidfd_open(pid) {
                Ok(pidfd) => self.children.push(ServedChild { pid, pidfd, status }),
                Err(_) => sys::kill_and_reap(pid),
            },
            Err(e) => {
                let errno = e.raw_os_error().unwrap_or(libc::EIO);
                let _ = send_greeting(&child_end, REFUSAL, errno, None);
            }
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
