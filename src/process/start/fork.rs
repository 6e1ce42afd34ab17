//! The fork start method: the child is a copy of the parent.
//!
//! After `fork()` in a multi-threaded parent only the calling thread exists in the child, and
//! any lock another thread held (the stdout lock, the environment lock, an application mutex)
//! stays locked for ever. glibc makes `malloc` safe across fork; the crate's own child path
//! takes no other lock until it calls `f`: it resets the per-process state
//! (`runtime::after_fork_in_child`, atomics and `close` only), closes its copies of the
//! parent's ends, and reads its bootstrap message. What `f` does is then the caller's business,
//! which is why fork is the fast, use-with-care method and not the default.

use std::os::fd::{OwnedFd, RawFd};

use super::super::runtime;
use super::super::Started;
use crate::sys::{self, Forked};
use crate::{bootstrap, Error};

/// Forks a child that will run its bootstrap from `child_end`. `close_in_child` are the
/// parent's descriptors the child must not keep (its end of the socket, the handle copies
/// being sent), so that end of stream means what it should.
pub(crate) fn start(child_end: OwnedFd, close_in_child: &[RawFd]) -> Result<Started, Error> {
    // SAFETY: the child runs only fork-safe code until the user's function (module docs).
    match unsafe { sys::fork() }.map_err(Error::os("fork"))? {
        Forked::Child => {
            runtime::after_fork_in_child();
            for &fd in close_in_child {
                sys::close_raw(fd);
            }
            bootstrap::run(child_end, None)
        }
        Forked::Parent(pid) => {
            drop(child_end);
            let pidfd = sys::pidfd_open(pid).map_err(Error::os("pidfd_open"))?;
            Ok(Started {
                pid,
                pidfd,
                status_socket: None,
            })
        }
    }
}
