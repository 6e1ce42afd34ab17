//! The fork start method: the child is a copy of the parent.
//!
//! After `fork()` in a multi-threaded parent only the calling thread exists in the child, and
//! any lock another thread held (the stdout lock, the environment lock, an application mutex)
//! stays locked for ever. glibc makes `malloc` safe across fork; the crate's own child path
//! takes no other lock until it calls `f`: it resets the per-process state
//! (`runtime::after_fork_in_child`, atomics and `close` only) and closes its copies of the
//! parent's ends; its report goes to a shared-memory slot or a shared socket made before the
//! fork (`process::reports`). What `f` does is then the caller's business,
//! which is why fork is the fast, use-with-care method and not the default.
//!
//! Unlike CPython's fork children, ours close their inherited copies of the parent's
//! connection ends before running the function (the crate tracks which descriptors
//! its handles own). Otherwise a child would hold a copy of the very end its parent uses to
//! talk to it, and would never see `Disconnected` when the parent drops that end. Other
//! inherited descriptors (files, sockets the program opened) stay open, as fork promises.

use std::os::fd::RawFd;

use super::super::runtime::{self, Runtime};
use super::super::{Started, Ticket};
use crate::bootstrap::{self, ChildSetup, Origin, Outcome, ReportTo};
use crate::sys::{self, Forked};
use crate::Error;

/// Forks a child that runs `work` straight from memory and reports through a [`Ticket`] (see
/// `process::reports`). `keep` are the descriptors of the handles inside the arguments, which
/// the child inherits and must keep; every other connection end the parent owns is closed in
/// the child.
pub(crate) fn start(
    rt: &'static Runtime,
    keep: &[RawFd],
    setup: ChildSetup,
    work: impl FnOnce() -> Outcome,
) -> Result<(Started, Ticket), Error> {
    let ticket = rt
        .fork_reports()
        .map_err(Error::os("socketpair"))?
        .reserve();
    // SAFETY: the child runs only fork-safe code until the user's function (module docs).
    match unsafe { sys::fork() }.map_err(Error::os("fork"))? {
        Forked::Child => {
            runtime::after_fork_in_child();
            // The parent's connection ends are not ours: a peer must see end of stream when
            // the parent drops its end, which our inherited copy would prevent (a common hang
            // with CPython's fork). The report socket's sending end is the one we keep.
            sys::close_tracked_fds(ticket.send_fd(), keep);
            bootstrap::run_job(ReportTo::Ticket(&ticket), setup, Origin::Forked, work)
        }
        Forked::Parent(pid) => Ok((Started::own_child(pid)?, ticket)),
    }
}
