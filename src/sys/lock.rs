//! A mutex whose state is two `u32` words in shared memory, usable from any number of
//! processes, that survives the death of its owner.
//!
//! The lock word is 0 when free, else the id of the owning thread; the second word counts
//! sleepers so that an uncontended release makes no system call. Taking a free lock is one
//! compare-and-swap. A contended taker sleeps on the word with a futex, waking at least every
//! [`OWNER_CHECK`] to see whether the owner still runs; if the owner thread is gone (no
//! `/proc/<tid>`, or a zombie) it takes the lock over and reports [`Acquired::OwnerDied`], as a
//! robust pthread mutex reports `EOWNERDEAD`: data the lock guards may be half-updated. Thread
//! ids can be reused by the system; a reuse within the check window delays the takeover, it
//! never lets two threads hold the lock.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::shm::{futex_wait, futex_wake, gettid, thread_alive};

/// How long a waiter sleeps before it checks whether the owner is still alive.
pub(crate) const OWNER_CHECK: Duration = Duration::from_millis(100);

/// How the lock was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Acquired {
    /// From a free lock, or from an owner that released it.
    Clean,
    /// Taken over from an owner that died holding it.
    OwnerDied,
}

/// A robust futex mutex over two shared words (see the module docs).
#[derive(Clone, Copy)]
pub(crate) struct RobustLock<'a> {
    word: &'a AtomicU32,
    waiters: &'a AtomicU32,
}

impl<'a> RobustLock<'a> {
    pub(crate) fn new(word: &'a AtomicU32, waiters: &'a AtomicU32) -> RobustLock<'a> {
        RobustLock { word, waiters }
    }

    /// The owning thread's id, 0 when free.
    pub(crate) fn owner(&self) -> u32 {
        self.word.load(Ordering::Relaxed)
    }

    /// Takes the lock if it is free, or held by a thread that died; never sleeps.
    pub(crate) fn try_lock(&self) -> Option<Acquired> {
        let me = gettid();
        match self
            .word
            .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
        {
            Ok(_) => Some(Acquired::Clean),
            Err(owner) => self.take_over(owner, me),
        }
    }

    /// Takes the lock, waiting until `deadline` (`None`: for ever). `None` if the deadline
    /// passed first.
    pub(crate) fn lock_until(&self, deadline: Option<Instant>) -> Option<Acquired> {
        let me = gettid();
        let mut spins = 0u32;
        loop {
            let owner =
                match self
                    .word
                    .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
                {
                    Ok(_) => return Some(Acquired::Clean),
                    Err(owner) => owner,
                };
            // A short spin first: critical sections over shared memory last nanoseconds, and
            // sleeping and waking cost microseconds.
            if spins < 64 {
                spins += 1;
                if spins % 16 == 0 {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
                continue;
            }
            let mut sleep = OWNER_CHECK;
            if let Some(deadline) = deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return None;
                }
                sleep = sleep.min(left);
            }
            self.waiters.fetch_add(1, Ordering::SeqCst);
            futex_wait(self.word, owner, Some(sleep));
            self.waiters.fetch_sub(1, Ordering::SeqCst);
            if let Some(taken) = self.take_over(owner, me) {
                return Some(taken);
            }
        }
    }

    /// Takes the lock from `owner` if that thread is dead and still recorded as the owner.
    fn take_over(&self, owner: u32, me: u32) -> Option<Acquired> {
        if owner == 0 || owner == me || thread_alive(owner) {
            return None;
        }
        self.word
            .compare_exchange(owner, me, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| Acquired::OwnerDied)
    }

    /// Releases the lock; the caller holds it.
    pub(crate) fn unlock(&self) {
        self.word.store(0, Ordering::SeqCst);
        self.wake_one();
    }

    /// Releases the lock if the calling thread holds it; `false` (and nothing changes) if it
    /// does not, e.g. because someone released it for this thread (`Lock::release`).
    pub(crate) fn unlock_mine(&self) -> bool {
        let released = self
            .word
            .compare_exchange(gettid(), 0, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok();
        if released {
            self.wake_one();
        }
        released
    }

    /// Releases the lock whoever holds it (a `multiprocessing.Lock` may be released by any
    /// thread or process); `false` if it was free.
    pub(crate) fn unlock_any(&self) -> bool {
        let mut owner = self.word.load(Ordering::Relaxed);
        while owner != 0 {
            match self
                .word
                .compare_exchange(owner, 0, Ordering::SeqCst, Ordering::Relaxed)
            {
                Ok(_) => {
                    self.wake_one();
                    return true;
                }
                Err(now) => owner = now,
            }
        }
        false
    }

    fn wake_one(&self) {
        if self.waiters.load(Ordering::SeqCst) > 0 {
            futex_wake(self.word, 1);
        }
    }
}
