//! The fork start method: the child is a copy of the parent.
//!
//! After `fork()` in a multi-threaded parent only the calling thread exists in the child, and
//! any lock another thread held (the stdout lock, the environment lock, an application mutex)
//! stays locked for ever. glibc makes `malloc` safe across fork; the crate's own child path
//! takes no other lock until it calls `f`: it resets the per-process state
//! (`runtime::after_fork_in_child`, atomics and `close` only), closes its copies of the
//! parent's ends, and reads its bootstrap message. What `f` does is then the caller's business,
//! which is why fork is the fast, use-with-care method and not the default.
//!
//! Unlike CPython's fork children, ours close their inherited copies of the parent's
//! connection ends before reading the bootstrap message (the crate tracks which descriptors
//! its handles own). Otherwise a child would hold a copy of the very end its parent uses to
//! talk to it, and would never see `Disconnected` when the parent drops that end. Other
//! inherited descriptors (files, sockets the program opened) stay open, as fork promises.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use super::super::runtime;
use super::super::Started;
use crate::bootstrap::{self, ChildSetup, Origin, Outcome};
use crate::connection::Connection;
use crate::sys::{self, Forked};
use crate::Error;

/// Forks a child that runs `work` straight from memory and reports on `child_end`.
/// `keep` are the descriptors of the handles inside the arguments, which the child inherits
/// and must keep; every other connection end the parent owns is closed in the child.
pub(crate) fn start(
    child_end: OwnedFd,
    keep: &[RawFd],
    setup: ChildSetup,
    work: impl FnOnce() -> Outcome,
) -> Result<Started, Error> {
    // Built before the fork so that the child allocates nothing for it: every allocation in a
    // fork child writes to a copy-on-write page.
    let child_raw = child_end.as_raw_fd();
    let child_conn = Connection::from_fd(child_end);
    // SAFETY: the child runs only fork-safe code until the user's function (module docs).
    match unsafe { sys::fork() }.map_err(Error::os("fork"))? {
        Forked::Child => {
            runtime::after_fork_in_child();
            // The parent's connection ends are not ours: a peer must see end of stream when
            // the parent drops its end, which our inherited copy would prevent (a common hang
            // with CPython's fork). That includes the parent's end of `child_end`.
            sys::close_tracked_fds(child_raw, keep);
            bootstrap::run_job(child_conn, setup, Origin::Forked, work)
        }
        Forked::Parent(pid) => {
            drop(child_conn);
            Started::own_child(pid)
        }
    }
}
