//! One started child as the OS sees it: its pid, its pidfd, and how it ended. Waiting, reaping
//! and signalling happen here and nowhere else.
//!
//! A child started by fork or spawn is ours to reap: `waitid(P_PIDFD)` on its pidfd. A child of
//! the forkserver is the server's child; the server reaps it and writes the raw wait status to
//! a per-child status socket. We wait on the child's pidfd (sent to us by the server), which
//! becomes readable when the child ends, then read the status; if the server died first, the
//! status socket reports end of stream and we report exit code 255, as CPython does for a lost
//! status.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use super::ProcessInfo;
use crate::sys::{self, OnSignal, WaitStatus};

/// The exit code reported when a forkserver died before it could report a child's status.
pub(crate) const STATUS_LOST: i32 = 255;

#[derive(Debug)]
pub(crate) struct ChildShared {
    pid: libc::pid_t,
    pidfd: OwnedFd,
    /// Forkserver children only: where the server writes the wait status.
    status_socket: Option<OwnedFd>,
    /// Fork children only: how the child reports (see `process::reports`). Released when this
    /// state is dropped, which is after the child has ended.
    ticket: Option<super::Ticket>,
    /// Set once the forkserver that owned `status_socket` is known to be gone.
    server_lost: AtomicBool,
    /// Set once the pidfd has shown the child ended (it stays so).
    ended: AtomicBool,
    status: Mutex<Option<WaitStatus>>,
    name: String,
    daemon: bool,
}

impl ChildShared {
    pub(crate) fn new(
        pid: libc::pid_t,
        pidfd: OwnedFd,
        status_socket: Option<OwnedFd>,
        ticket: Option<super::Ticket>,
        name: String,
        daemon: bool,
    ) -> ChildShared {
        ChildShared {
            pid,
            pidfd,
            status_socket,
            ticket,
            server_lost: AtomicBool::new(false),
            ended: AtomicBool::new(false),
            status: Mutex::new(None),
            name,
            daemon,
        }
    }

    pub(crate) fn pid(&self) -> libc::pid_t {
        self.pid
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn ticket(&self) -> Option<&super::Ticket> {
        self.ticket.as_ref()
    }

    pub(crate) fn pidfd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    pub(crate) fn info(&self) -> ProcessInfo {
        ProcessInfo {
            pid: self.pid as u32,
            name: self.name.clone(),
            daemon: self.daemon,
            // A child has the key its parent had when it started: the family's.
            authkey: super::runtime::runtime().identity().authkey,
        }
    }

    /// The descriptor to wait on for the status: the pidfd, readable once the child has ended;
    /// for a forkserver child that has ended, the status socket, readable once the server has
    /// sent the status (or died). Waiting on the pidfd first lets us and the server be woken by
    /// the exit in parallel.
    pub(crate) fn ready_fd(&self) -> BorrowedFd<'_> {
        match &self.status_socket {
            Some(socket)
                if !self.server_lost.load(Ordering::Acquire)
                    && self.has_ended().unwrap_or(false) =>
            {
                socket.as_fd()
            }
            _ => self.pidfd.as_fd(),
        }
    }

    /// The status if the child has ended (reaping it if need be), without blocking.
    pub(crate) fn try_status(&self) -> Option<WaitStatus> {
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        if status.is_none() {
            *status = match self.collect() {
                Ok(s) => s,
                // Someone else reaped it (SIGCHLD ignored, a waitpid(-1) elsewhere): it has
                // ended and its status is lost, as when a forkserver dies.
                Err(e) if e.raw_os_error() == Some(libc::ECHILD) => {
                    Some(WaitStatus::Exited(STATUS_LOST))
                }
                Err(_) => None,
            };
        }
        *status
    }

    /// Waits for the child to end, until `deadline` (`None`: for ever). `Ok(None)` on timeout;
    /// an `Interrupted` error on `interrupt_blocked_calls` (`Process::join`).
    pub(crate) fn wait(&self, deadline: Option<Instant>) -> io::Result<Option<WaitStatus>> {
        let since = OnSignal::caller();
        loop {
            if let Some(s) = *self.status.lock().unwrap_or_else(|e| e.into_inner()) {
                return Ok(Some(s));
            }
            // Wait first, then collect: a child that has already ended makes the wait return
            // at once, and a running one is not asked for a status it cannot have yet.
            let ready = sys::wait_readable_or(self.ready_fd(), deadline, since)?;
            if let Some(s) = self.try_status() {
                return Ok(Some(s));
            }
            if !ready || deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(None);
            }
        }
    }

    /// Waits until the child has ended, until `deadline`; `Ok(false)` on timeout. A child of
    /// this process is reaped on the way; for a forkserver child this needs only the pidfd, not
    /// the server's report of the status.
    pub(crate) fn wait_ended(&self, deadline: Option<Instant>) -> io::Result<bool> {
        if self.status_socket.is_none() {
            return Ok(self.wait(deadline)?.is_some());
        }
        if self.has_ended()? {
            return Ok(true);
        }
        sys::wait_readable_or(self.pidfd.as_fd(), deadline, OnSignal::caller())?;
        self.has_ended()
    }

    /// Whether the child is still running (a forkserver child that has ended counts as ended
    /// even before its server reports the status).
    pub(crate) fn is_running(&self) -> bool {
        if self
            .status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
        {
            return false;
        }
        if self.status_socket.is_some() {
            return !self.has_ended().unwrap_or(false);
        }
        let running = self.try_status().is_none();
        if running {
            // A fork child may be blocked on a full shared report socket: whoever watches it
            // keeps that socket drained (see `process::reports`).
            if let Some(ticket) = &self.ticket {
                ticket.reports().drain(None);
            }
        }
        running
    }

    /// Whether someone must still wait for this child: a child of ours until it is reaped; a
    /// forkserver child until it has ended (its server reaps it).
    pub(crate) fn needs_reaping(&self) -> bool {
        if self.status_socket.is_some() {
            !self.has_ended().unwrap_or(false)
        } else {
            self.try_status().is_none()
        }
    }

    /// Sends `signal` unless the child is already reaped (then there is nothing to signal, and
    /// the pidfd guarantees we never hit a recycled pid).
    pub(crate) fn signal(&self, signal: i32) -> io::Result<()> {
        match sys::pidfd_send_signal(self.pidfd.as_fd(), signal) {
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            other => other,
        }
    }

    fn has_ended(&self) -> io::Result<bool> {
        if self.ended.load(Ordering::Acquire) {
            return Ok(true);
        }
        let ended = sys::wait_readable(self.pidfd.as_fd(), Some(Instant::now()))?;
        if ended {
            self.ended.store(true, Ordering::Release);
        }
        Ok(ended)
    }

    /// One non-blocking attempt to learn the status. Called with `status` locked.
    fn collect(&self) -> io::Result<Option<WaitStatus>> {
        let Some(socket) = &self.status_socket else {
            return sys::waitid_pidfd(self.pidfd.as_fd(), false);
        };
        if !self.has_ended()? {
            return Ok(None);
        }
        // The child has ended; its server reaps it and sends the status within moments, or has
        // died itself (end of stream: the status is lost, as CPython reports it, 255). A slow
        // server only delays the answer; it never changes it.
        if self.server_lost.load(Ordering::Acquire) {
            return Ok(Some(WaitStatus::Exited(STATUS_LOST)));
        }
        if !sys::wait_readable(socket.as_fd(), Some(Instant::now()))? {
            return Ok(None);
        }
        let mut raw = [0u8; 4];
        Ok(Some(match sys::read_exact(socket.as_fd(), &mut raw) {
            Ok(true) => WaitStatus::from_raw(i32::from_le_bytes(raw)),
            Ok(false) | Err(_) => {
                self.server_lost.store(true, Ordering::Release);
                WaitStatus::Exited(STATUS_LOST)
            }
        }))
    }
}
