//! The fork start method: the child is a copy of the parent.
//!
//! After `fork()` in a multi-threaded parent only the calling thread exists in the child, and
//! any lock another thread held (the stdout lock, the environment lock, the panic hook's lock,
//! an application mutex) stays locked for ever. POSIX allows such a child only
//! async-signal-safe functions until it calls `exec` (fork(2), signal-safety(7)). The child
//! therefore runs only async-signal-safe code until it calls the user's function; what `f`
//! does is then the caller's business, which is why fork is the fast, use-with-care method and
//! not the default.
//!
//! Unlike CPython's fork children, ours close their inherited copies of the parent's
//! connection ends before running the function (the crate tracks which descriptors
//! its handles own). Otherwise a child would hold a copy of the very end its parent uses to
//! talk to it, and would never see `Disconnected` when the parent drops that end. Other
//! inherited descriptors (files, sockets the program opened) stay open, as fork promises.
//!
//! # What the child does between `fork()` and `f`, step by step
//! Everything the child needs is made by the parent *before* the fork: its runtime state
//! (`runtime::prepare`, a `Box` allocated in the parent, with the family's key), its report
//! ticket (`process::reports`), the list of descriptors to keep, a copy of the parent's alive
//! pipe for a daemon, and the arguments themselves, moved into the closure unpickled. The
//! executable's identity is looked up here before forking too, so no `OnceLock` is first
//! initialised in a child (a pool worker under fork verifies task entries with it).
//! In the child, in order:
//! 1. `runtime::after_fork_in_child`: an atomic store, an atomic swap and `close(2)`.
//! 2. `sys::close_tracked_fds`: atomic loads and swaps on the fork page, `close(2)`.
//! 3. `bootstrap::run_job`:
//!    - `runtime::install_child`: `getpid(2)`, a write into the parent-made `Box`,
//!      `Box::into_raw` (no allocation) and an atomic store.
//!    - a daemon: `bootstrap::watch_parent` → `sys::kill_self_on_hangup`: `open(2)` of
//!      `/proc/self/fd/N` (the path formatted on the stack), four `fcntl(2)`s, `poll(2)`, maybe
//!      `kill(2)` of itself; then an atomic (`sys::track_fd`) and `close(2)` of the copy. On
//!      failure one `write(2)` of a constant message to stderr, without `std::io::stderr`'s
//!      lock. No thread is started: the kernel delivers `SIGKILL` when the parent's last write
//!      end closes (`O_ASYNC` + `F_SETSIG`, see `sys::kill_self_on_hangup`). A non-daemon has
//!      no copy of the pipe (nothing to close).
//!    - no panic hook is installed (`std::panic::set_hook` takes a lock).
//!    - `bootstrap::call`: `catch_unwind` (no allocation, no lock) around `f(args)`.
//!
//! Every call above is on the async-signal-safe list of signal-safety(7) (`close`, `getpid`,
//! `open`, `fcntl`, `poll`, `kill`, `write`) or is a plain memory access or atomic operation;
//! none allocates or takes a lock.
//!
//! # After `f` returns
//! The rule above ends where `f` starts, but the child's own epilogue is fork-safe too: the
//! result is pickled (allocating with the global allocator), then written into a shared-memory
//! slot (plain stores and atomics) or sent with `sendmsg(2)` (a large body first goes to a
//! `memfd_create(2)`), and the child ends with `_exit(2)`, running no destructor or `atexit`
//! handler and not flushing stdout (its lock may be held). Allocating is safe because glibc's
//! `fork` takes every malloc arena lock before forking and reinitialises them in the child
//! (`__malloc_fork_lock_parent` / `__malloc_fork_unlock_child`, called from `posix/fork.c`;
//! glibc's malloc/arena.c). A program that installs another `#[global_allocator]` needs one
//! that is fork-safe the same way (jemalloc and mimalloc install `pthread_atfork` handlers).
//! A panic location is read with `try_lock`, and an error is reported with a single
//! `write(2)`, not through `std::io::stderr`'s lock. A panic in `f` runs the default panic
//! hook, which takes the stderr lock: that is part of running `f`.
//!
//! # The other start methods
//! A spawn child is a fresh `exec` of the binary, and a forkserver child (or spare) is a fork
//! of the server, which is single-threaded: no lock in either can be held by a thread that is
//! gone, so they decode their bootstrap message and arguments, allocate, and install the panic
//! hook before `f` without these constraints.
//!
//! # Pool workers
//! A pool worker under fork is an ordinary fork child whose `f` is the worker loop
//! (`pool::worker`), crate code that then runs the tasks: it allocates (fork-safe, above),
//! reads and writes its own socket, whose locks no other thread has ever seen (the
//! connection was made by the thread that forked), reads the clock through the vDSO, and
//! verifies task entries with HMAC-SHA256 (pure computation) and the identity looked up
//! before the fork.

use std::os::fd::RawFd;

use super::super::runtime::{self, Runtime};
use super::super::Ticket;
use super::Started;
use crate::process::bootstrap::{self, ChildSetup, Origin, Outcome, ReportTo};
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
    // Cached after the first call: the child never initialises it (module docs).
    let _ = sys::exe_identity();
    // SAFETY: the child runs only async-signal-safe code until the user's function (the step
    // by step audit in the module docs).
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
