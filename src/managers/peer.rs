//! The client a served call is for, and whether it is still there (issue 12.1).
//!
//! A served method may block: a queue's `get`, a lock's `acquire`, a barrier's `wait`. If its
//! client dies meanwhile, CPython's server keeps waiting for it, takes the next item, fails to
//! write the reply and drops the item. Here:
//!
//! - the thread serving a proxy connection records that connection's socket in a thread-local
//!   ([`watch`]), once per connection;
//! - a served object waits through [`wait_until`] (or [`wait`] and [`gone`]): in slices of at
//!   most [`SLICE`], looking at the socket before each slice and after every wake-up. A peer
//!   that hung up (`POLLRDHUP`, `POLLHUP` or `POLLERR`: a killed process's socket is closed by
//!   its kernel) ends the wait with [`Outcome::PeerGone`] **before** the waiter takes
//!   anything, and the wake-up it consumed is passed on to the other waiters. So an item is
//!   never handed to a dead client, however late its death is noticed; the slices only bound
//!   how long a dead client's thread lingers (and how soon a barrier it waited on breaks);
//! - after a call that waited, the server looks at the socket once more before writing the
//!   reply; a reply that cannot be delivered (the peer is gone, or the write fails) is handed
//!   back to the object ([`Referent::reply_undelivered`](super::Referent::reply_undelivered)),
//!   which gives back what the call took (a queue puts the item back at its head).
//!
//! A call that did not wait costs a thread-local write and a read: the socket is only looked
//! at on the blocking path (a `poll` costs ≈ 0.3 µs, as much as the rest of a call's server
//! side). What stays possible: a client dying between sending a request and the server
//! running it, when the call takes something at once without waiting; and the race no
//! protocol without acknowledgements closes, a client dying after its reply was written into
//! the socket (or one on another machine whose hang-up has not arrived yet).
//!
//! A server shutting down shuts its connections down for reading, which reads as a hang-up
//! too: served waits end within a [`SLICE`], taking nothing, and their clients see the
//! connection closed.
//!
//! Outside a connection thread (a server's own code calling a [`ServedQueue`](super::ServedQueue))
//! there is no peer: waits are plain waits.

use std::cell::{Cell, RefCell};
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::sync::{Arc, Condvar, MutexGuard};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// The longest a served wait sleeps before it looks at its peer again.
pub(crate) const SLICE: Duration = Duration::from_millis(100);

thread_local! {
    /// The connection this thread serves, if it serves one.
    static PEER: RefCell<Option<Arc<TcpStream>>> = const { RefCell::new(None) };
    /// Whether the call being served has waited (then its peer is looked at before replying).
    static WAITED: Cell<bool> = const { Cell::new(false) };
}

/// Records `stream` as this thread's peer until the guard is dropped.
pub(crate) fn watch(stream: Arc<TcpStream>) -> Watch {
    PEER.with(|p| *p.borrow_mut() = Some(stream));
    Watch(())
}

/// Forgets this thread's peer when dropped ([`watch`]).
pub(crate) struct Watch(());

impl Drop for Watch {
    fn drop(&mut self) {
        PEER.with(|p| p.borrow_mut().take());
    }
}

/// Marks the start of a served call (it has not waited yet).
pub(crate) fn begin_call() {
    WAITED.with(|w| w.set(false));
}

/// Whether the call being served waited.
pub(crate) fn waited() -> bool {
    WAITED.with(Cell::get)
}

/// Whether this thread's peer has hung up; false when the thread serves no connection. One
/// `poll` system call: for blocking paths only.
pub(crate) fn gone() -> bool {
    PEER.with(|p| p.borrow().as_deref().is_some_and(hung_up))
}

/// Whether the peer of `stream` has shut down its side (`POLLRDHUP`: our clients never
/// half-close, so this is a closed or dead peer), or the connection is hung up or broken.
fn hung_up(stream: &TcpStream) -> bool {
    // Only POLLRDHUP is asked for (nix names no such flag: it is Linux's; the bits pass
    // through); the kernel adds POLLHUP and POLLERR by itself. So any event is one of the
    // three. (nix's `revents()` gives `None` for the unnamed bit, hence the count.)
    let rdhup = PollFlags::from_bits_retain(libc::POLLRDHUP);
    let mut fds = [PollFd::new(stream.as_fd(), rdhup)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
}

/// One wait on `cv`: until a notification, `deadline` (`None`: none), or, on a connection
/// thread, the end of a [`SLICE`]. Callers loop, checking their condition and [`gone`].
pub(crate) fn wait<'a, T>(
    cv: &Condvar,
    guard: MutexGuard<'a, T>,
    deadline: Option<Instant>,
) -> MutexGuard<'a, T> {
    let serving = PEER.with(|p| p.borrow().is_some());
    let until = if serving {
        WAITED.with(|w| w.set(true));
        let slice_end = Instant::now() + SLICE;
        Some(deadline.map_or(slice_end, |d| d.min(slice_end)))
    } else {
        deadline
    };
    match until {
        None => cv.wait(guard).unwrap_or_else(|e| e.into_inner()),
        Some(until) => {
            let left = until.saturating_duration_since(Instant::now());
            cv.wait_timeout(guard, left)
                .unwrap_or_else(|e| e.into_inner())
                .0
        }
    }
}

/// How a [`wait_until`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The condition holds (and the peer, if it was waited for, is there).
    Ready,
    /// The deadline passed first.
    TimedOut,
    /// The peer hung up: take nothing. Other waiters on the condition variable were woken in
    /// case this one consumed their notification.
    PeerGone,
}

/// Waits on `cv` until `ready` holds or `deadline` passes, ending early if the peer of the
/// call being served hangs up (see the module docs).
pub(crate) fn wait_until<'a, T>(
    cv: &Condvar,
    mut guard: MutexGuard<'a, T>,
    deadline: Option<Instant>,
    ready: impl Fn(&T) -> bool,
) -> (MutexGuard<'a, T>, Outcome) {
    let mut waited = false;
    loop {
        if ready(&guard) {
            if waited && gone() {
                cv.notify_all();
                return (guard, Outcome::PeerGone);
            }
            return (guard, Outcome::Ready);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return (guard, Outcome::TimedOut);
        }
        if gone() {
            return (guard, Outcome::PeerGone);
        }
        guard = wait(cv, guard, deadline);
        waited = true;
    }
}
