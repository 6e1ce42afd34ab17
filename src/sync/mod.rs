//! Synchronisation between processes: [`Lock`], [`RLock`], [`Semaphore`],
//! [`BoundedSemaphore`], [`Event`], [`Condition`] and [`Barrier`] (CPython's
//! `multiprocessing.Lock`, … `Barrier`), all re-exported at the crate root.
//!
//! | CPython | here |
//! |---|---|
//! | `with lock:` / `lock.acquire()` … `lock.release()` | `let _g = lock.acquire();` / `lock.acquire().leak();` … `lock.release()?` |
//! | `acquire(block=False)` / `acquire(timeout=t)` | `try_acquire()` / `acquire_timeout(t)` (→ `Option<guard>`) |
//! | `with cond: cond.wait()` | `cond.acquire().wait()` (waiting and notifying are guard methods) |
//! | `BrokenBarrierError` | [`Error::BrokenBarrier`] |
//! | `ValueError` (released too many times) | [`Error::NotHeld`], [`Error::TooManyReleases`] |
//!
//! # How they work
//! Each primitive is a few `u32` words in a memfd mapped `MAP_SHARED` into every process that
//! holds a handle (DESIGN §5). A handle travels to children as that descriptor (an argument of
//! `Process::spawn` or a message on a `Connection`), so every start method works, and
//! `try_clone` gives another handle in the same process. Waiting is a futex wait on one of the
//! words (shared futexes, not `FUTEX_PRIVATE`); the fast paths are one atomic operation and
//! make no system call.
//!
//! # When a process dies
//! - [`Lock`] and [`RLock`] record the owning thread, and link a held lock into that thread's
//!   robust futex list: when the thread dies the kernel marks the lock and wakes a waiter,
//!   which takes it over at once (a waiter also polls every 100 ms, for the rare holds the
//!   kernel does not know about; see `sys::lock`), and its guard reports
//!   [`owner_died`](LockGuard::owner_died), like a robust pthread mutex's `EOWNERDEAD`: the
//!   data the lock guarded may be half-updated. Nobody hangs for ever.
//! - A [`Semaphore`] is a counter, not an owner record: it cannot know who took a permit, so
//!   a permit held by a process that dies is lost (the count stays one lower), as with
//!   CPython's POSIX semaphores. Release permits from a guard (returned on unwinding) and
//!   use the `_timeout` forms where a peer may be killed.
//! - [`Event`] has no owner; a dead setter simply never sets it.
//! - A [`Condition`] waiter or [`Barrier`] party that dies while waiting stays counted: a
//!   `notify(1)` may go to the dead waiter, and a barrier waits for a party that will never
//!   come, until a timeout breaks it (give [`Barrier::with_options`] a default timeout).
//!
//! Guards of `Lock`, `RLock` and `Condition` are `!Send`: the owner is a thread, and a guard
//! dropped on another thread would release a lock that thread does not hold.

mod barrier;
mod condition;
mod event;
mod lock;
mod semaphore;

pub use barrier::Barrier;
pub use condition::{Condition, ConditionGuard};
pub use event::Event;
pub use lock::{Lock, LockGuard, RLock, RLockGuard};
pub use semaphore::{BoundedSemaphore, Semaphore, SemaphoreGuard};

use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::codec;
use crate::sys::SharedMapping;
use crate::Error;

/// The words of one primitive: its own memfd, a tag naming the kind at offset 0 (checked
/// when a handle arrives, so that a `Semaphore` is never read as an `Event`), then the words.
#[derive(Clone)]
pub(crate) struct Words {
    map: Arc<SharedMapping>,
}

impl Words {
    /// `count` fresh zero words after the tag `kind`.
    pub(crate) fn new(kind: u32, count: usize) -> Result<Words, Error> {
        let map = SharedMapping::new(4 * (count + 1)).map_err(Error::os("memfd"))?;
        map.write(0, kind);
        Ok(Words { map: Arc::new(map) })
    }

    /// Word `i` (from 0, after the tag).
    /// Waits until `ready()` holds (returning `true`) or `deadline` passes (`false`),
    /// sleeping on word `sleep_on` while it reads 0, counted in word `waiters` (so that the
    /// side that makes it nonzero knows to wake someone).
    pub(crate) fn wait_for(
        &self,
        mut ready: impl FnMut() -> bool,
        sleep_on: usize,
        waiters: usize,
        deadline: Option<Instant>,
    ) -> bool {
        loop {
            if ready() {
                return true;
            }
            let left = time_left(deadline);
            if left.is_some_and(|l| l.is_zero()) {
                return false;
            }
            let waiters = self.word(waiters);
            waiters.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            crate::sys::futex_wait(self.word(sleep_on), 0, left);
            waiters.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    pub(crate) fn word(&self, i: usize) -> &AtomicU32 {
        self.map.atomic_u32(4 * (i + 1))
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.map.fd()
    }

    /// Maps words received from another process, checking the tag and the size.
    fn from_fd(fd: OwnedFd, kind: u32, count: usize) -> Result<Words, String> {
        let map = SharedMapping::from_fd(fd, 4 * (count + 1)).map_err(|e| e.to_string())?;
        let found = map.read::<u32>(0);
        if found != kind {
            return Err(format!(
                "the handle is a {}, not a {}",
                kind_name(found),
                kind_name(kind)
            ));
        }
        Ok(Words { map: Arc::new(map) })
    }

    /// Another handle on the same words in this process (the mapping is shared).
    pub(crate) fn share(&self) -> Words {
        self.clone()
    }

    /// Serializes the descriptor (see [`codec::serialize_fd`]).
    pub(crate) fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        codec::serialize_fd(self.fd(), serializer)
    }

    /// Deserializes words of `kind`, at least `count` of them.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
        kind: u32,
        count: usize,
    ) -> Result<Words, D::Error> {
        let fd = codec::deserialize_fd(deserializer)?;
        Words::from_fd(fd, kind, count).map_err(D::Error::custom)
    }
}

impl std::fmt::Debug for Words {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Words").field(&self.map.fd()).finish()
    }
}

/// The kind tags of [`Words`].
pub(crate) mod kind {
    pub(crate) const RLOCK: u32 = u32::from_le_bytes(*b"RLCK");
    pub(crate) const SEMAPHORE: u32 = u32::from_le_bytes(*b"SEMA");
    pub(crate) const EVENT: u32 = u32::from_le_bytes(*b"EVNT");
    pub(crate) const CONDITION: u32 = u32::from_le_bytes(*b"COND");
    pub(crate) const BARRIER: u32 = u32::from_le_bytes(*b"BARR");
}

fn kind_name(tag: u32) -> &'static str {
    match tag {
        kind::RLOCK => "RLock",
        kind::SEMAPHORE => "Semaphore",
        kind::EVENT => "Event",
        kind::CONDITION => "Condition",
        kind::BARRIER => "Barrier",
        _ => "region of unknown kind",
    }
}

/// A descriptor as a serde value (for handles made of a descriptor and more fields).
pub(crate) struct Fd<'a>(pub(crate) BorrowedFd<'a>);

impl Serialize for Fd<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        codec::serialize_fd(self.0, serializer)
    }
}

/// The receiving side of [`Fd`].
pub(crate) struct ReceivedFd(pub(crate) OwnedFd);

impl<'de> Deserialize<'de> for ReceivedFd {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        codec::deserialize_fd(deserializer).map(ReceivedFd)
    }
}

/// The deadline `timeout` from now; `None` (for ever) if it does not fit in an `Instant`.
pub(crate) fn deadline_after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

/// The time left until `deadline` (`None`: no limit); `Some(ZERO)` once it has passed.
pub(crate) fn time_left(deadline: Option<Instant>) -> Option<Duration> {
    deadline.map(|d| d.saturating_duration_since(Instant::now()))
}
