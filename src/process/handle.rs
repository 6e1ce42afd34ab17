//! [`Process`]: the handle on a started child: its identity, `join` (the report, or how the
//! child ended), `terminate`/`kill`, and what happens when the handle is dropped.

use std::fmt;
use std::marker::PhantomData;
use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::child::{self, ChildShared};
use super::runtime;
use super::{ProcessBuilder, StartMethod};
use crate::codec::{self, FdTable};
use crate::connection::Connection;
use crate::process::bootstrap::{self, Failure, Report};
use crate::sys::{self, WaitStatus};
use crate::Error;

/// A running (or finished) child process that will produce an `R`.
///
/// Made by [`Process::spawn`] or [`ProcessBuilder::spawn`]. The names follow
/// `multiprocessing.Process`: `pid`, `name`, `is_alive`, `join`, `terminate`, `kill`,
/// `exitcode`, `sentinel`.
///
/// Dropping a handle without joining it neither kills nor waits for the child: it keeps
/// running (a daemon until its parent exits), and a background reaper collects its exit status
/// so that it never lingers as a zombie.
///
/// # Examples
///
/// ```
/// use multiproc::Process;
///
/// fn square(x: u64) -> u64 { x * x }
///
/// let mut child = Process::spawn(square, 12).unwrap();
/// println!("started {} as pid {}", child.name(), child.pid());
/// assert_eq!(child.join().unwrap(), 144);
/// assert_eq!(child.exitcode(), Some(0));
/// ```
pub struct Process<R> {
    pub(super) child: Arc<ChildShared>,
    /// Where the child's report comes from, until it was read.
    pub(super) source: ReportSource,
    pub(super) report: Option<Report>,
    pub(super) joined: bool,
    pub(super) method: StartMethod,
    pub(super) args_type: &'static str,
    pub(super) _result: PhantomData<fn() -> R>,
}

impl<R> fmt::Debug for Process<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Process")
            .field("pid", &self.child.pid())
            .field("name", &self.name())
            .field("start_method", &self.method)
            .field("exitcode", &self.exitcode())
            .finish()
    }
}

impl Process<()> {
    /// Starts `f(args)` in a new process with the default settings; see [`ProcessBuilder::spawn`].
    ///
    /// # Errors
    /// As [`ProcessBuilder::spawn`].
    ///
    /// # Examples
    ///
    /// ```
    /// fn add((a, b): (i32, i32)) -> i32 { a + b }
    /// let mut p = multiproc::Process::spawn(add, (2, 3)).unwrap();
    /// assert_eq!(p.join().unwrap(), 5);
    /// ```
    pub fn spawn<A, R>(f: fn(A) -> R, args: A) -> Result<Process<R>, Error>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        ProcessBuilder::new().spawn(f, args)
    }

    /// A [`ProcessBuilder`] to set the start method, name or daemon flag.
    pub fn builder() -> ProcessBuilder {
        ProcessBuilder::new()
    }
}

impl<R> Process<R> {
    /// The child's OS process id.
    pub fn pid(&self) -> u32 {
        self.child.pid() as u32
    }

    /// The child's name.
    pub fn name(&self) -> &str {
        self.child.name()
    }

    /// Whether the child dies with its parent.
    pub fn daemon(&self) -> bool {
        self.child.info().daemon
    }

    /// The method that started it.
    pub fn start_method(&self) -> StartMethod {
        self.method
    }

    /// Whether the child is still running. A finished child is reaped by this call.
    pub fn is_alive(&self) -> bool {
        self.child.is_running()
    }

    /// The exit code with CPython's meaning: `None` while running, `Some(n)` after
    /// `exit(n)` (0 after a normal return, 1 after a panic), `Some(-N)` if killed by signal `N`.
    pub fn exitcode(&self) -> Option<i32> {
        let status = match self.child.try_status() {
            Some(status) => Some(status),
            // Ended, but a forkserver has not reported the status yet: it does so promptly
            // (or is gone, and the status is lost), so wait rather than say "still running".
            None if !self.child.is_running() => self.child.wait(None).ok().flatten(),
            None => None,
        };
        status.map(|s| match s {
            WaitStatus::Exited(code) => code,
            WaitStatus::Signaled(sig) => -sig,
        })
    }

    /// A descriptor that becomes readable when the child exits (a pidfd), for `poll` loops
    /// (CPython's `sentinel`).
    pub fn sentinel(&self) -> BorrowedFd<'_> {
        self.child.pidfd()
    }

    /// Sends `SIGTERM` (CPython's `terminate`). Does nothing if the child has already been
    /// reaped; the pidfd rules out signalling a recycled pid.
    ///
    /// # Errors
    /// [`Error::Os`] if the signal cannot be sent.
    pub fn terminate(&self) -> Result<(), Error> {
        self.child
            .signal(libc::SIGTERM)
            .map_err(Error::os("pidfd_send_signal"))
    }

    /// Sends `SIGKILL` (CPython's `kill`).
    ///
    /// # Errors
    /// [`Error::Os`] if the signal cannot be sent.
    pub fn kill(&self) -> Result<(), Error> {
        self.child
            .signal(libc::SIGKILL)
            .map_err(Error::os("pidfd_send_signal"))
    }
}

impl<R: DeserializeOwned> Process<R> {
    /// Waits for the child to finish and returns its result.
    ///
    /// # Errors
    /// [`Error::Panicked`] (with the message), [`Error::Signaled`], [`Error::Exited`] when the
    /// child ended without a result; [`Error::Deserialize`] / [`Error::Serialize`] when the
    /// arguments or the result did not survive pickling; [`Error::Bootstrap`] when the child
    /// could not run the function; [`Error::AlreadyJoined`] on a second call;
    /// [`Error::Interrupted`] if [`interrupt_blocked_calls`](crate::interrupt_blocked_calls) is
    /// called while it waits (the child is untouched and the handle can be joined again).
    pub fn join(&mut self) -> Result<R, Error> {
        self.finish(None)
    }

    /// Like [`join`](Self::join), but waits at most `timeout`. On [`Error::Timeout`] the child
    /// is untouched and the handle can be joined again; `Duration::ZERO` just checks.
    ///
    /// # Errors
    /// As `join`, plus [`Error::Timeout`].
    pub fn join_timeout(&mut self, timeout: Duration) -> Result<R, Error> {
        // A timeout too large to add to `now` waits for ever.
        self.finish(Instant::now().checked_add(timeout))
    }

    fn finish(&mut self, deadline: Option<Instant>) -> Result<R, Error> {
        if self.joined {
            return Err(Error::AlreadyJoined { pid: self.pid() });
        }
        match &self.source {
            ReportSource::Socket(conn) => {
                self.report = await_report(conn, &self.child, deadline)?;
                self.source = ReportSource::Taken;
            }
            ReportSource::Ticket => {
                self.report = await_fork_report(&self.child, deadline)?;
                self.source = ReportSource::Taken;
            }
            ReportSource::Taken => {}
        }
        // With a report in hand the child has ended and the result does not depend on its
        // status, which a forkserver reports a moment later (`exitcode` waits for it).
        let status = if self.report.is_some() {
            None
        } else {
            match self.child.wait(deadline).map_err(Error::os("waitid"))? {
                Some(status) => Some(status),
                None => return Err(Error::Timeout),
            }
        };
        self.joined = true;
        runtime::runtime().unregister(self.child.pid());
        self.outcome(status)
    }

    fn outcome(&mut self, status: Option<WaitStatus>) -> Result<R, Error> {
        let pid = self.pid();
        match self.report.take() {
            Some(Report::Returned(frame, fds)) => {
                codec::decode_in(&frame[1..], &mut FdTable::new(fds))
            }
            Some(Report::Failed(failure)) => Err(match failure {
                Failure::Panicked { message, location } => Error::Panicked {
                    pid,
                    message,
                    location,
                },
                Failure::ArgsUndecodable(reason) => Error::Deserialize {
                    type_name: self.args_type,
                    reason,
                },
                Failure::ResultUnencodable(reason) => Error::Serialize {
                    type_name: std::any::type_name::<R>(),
                    reason,
                },
                Failure::Refused(reason) => Error::Bootstrap { pid, reason },
                Failure::Unauthenticated => Error::UnauthenticatedFunction {
                    what: "the bootstrap message",
                },
            }),
            None => Err(match status {
                Some(WaitStatus::Signaled(signal)) => Error::Signaled { pid, signal },
                Some(WaitStatus::Exited(code)) => Error::Exited { pid, code },
                // Not reached: without a report `finish` waits for the status.
                None => Error::Exited {
                    pid,
                    code: child::STATUS_LOST,
                },
            }),
        }
    }
}

impl<R> Drop for Process<R> {
    fn drop(&mut self) {
        // Closing our end makes a child blocked on writing a large result fail and exit.
        self.source = ReportSource::Taken;
        if self.child.needs_reaping() {
            runtime::runtime().reap_later(self.child.clone());
        } else {
            runtime::runtime().unregister(self.child.pid());
        }
    }
}

/// Where a child's report comes from.
pub(super) enum ReportSource {
    /// The child's own socket (spawn, forkserver).
    Socket(Connection),
    /// The fork ticket in the child's shared state (see `reports`).
    Ticket,
    /// Already read (or given up on, when the handle is dropped).
    Taken,
}

/// The fork child's counterpart of [`await_report`]: waits for the child to end, draining the
/// shared overflow socket meanwhile (a child blocked on it would never end otherwise), then
/// collects its report from its slot or the stash.
fn await_fork_report(
    child: &ChildShared,
    deadline: Option<Instant>,
) -> Result<Option<Report>, Error> {
    let Some(ticket) = child.ticket() else {
        return Ok(None);
    };
    // Interruptible from here on (see `interrupt_blocked_calls`).
    let since = sys::OnSignal::caller();
    let watched = [
        std::os::fd::AsRawFd::as_raw_fd(&child.pidfd()),
        std::os::fd::AsRawFd::as_raw_fd(&ticket.reports().recv_fd()),
    ];
    loop {
        let timeout = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                // Round up, so that a wait never ends just before the deadline.
                i32::try_from(left.as_micros().div_ceil(1000)).unwrap_or(i32::MAX)
            }
        };
        let ready = sys::poll_readable_or(&watched, timeout, since).map_err(Error::os("poll"))?;
        if ready.contains(&1) {
            ticket.reports().drain(None);
        }
        if ready.contains(&0) {
            break;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(Error::Timeout);
        }
    }
    // Reap it now: the status is known from here on.
    child.wait(None).map_err(Error::os("waitid"))?;
    match ticket.collect() {
        Some((frame, fds)) => bootstrap::parse_report(frame, fds).map(Some),
        None => Ok(None),
    }
}

/// Waits for the child to end, then reads its report if it sent one. A child never blocks on
/// writing its report (large results travel in a memfd, see `bootstrap`), so the exit is the
/// one event to wait for; a stray copy of the child's socket in some other process cannot
/// delay it either, as it could delay end of stream.
fn await_report(
    conn: &Connection,
    child: &ChildShared,
    deadline: Option<Instant>,
) -> Result<Option<Report>, Error> {
    if !child.wait_ended(deadline).map_err(Error::os("waitid"))? {
        return Err(Error::Timeout);
    }
    let conn_fd = conn.as_fd().ok_or(Error::Closed)?;
    if !sys::wait_readable(conn_fd, Some(Instant::now())).map_err(Error::os("poll"))? {
        return Ok(None);
    }
    match conn.recv_raw() {
        Ok((frame, fds)) => bootstrap::parse_report(frame, fds).map(Some),
        Err(_) => Ok(None),
    }
}
