//! [`Condition`]: a condition variable over a [`Lock`] or an [`RLock`], across processes.
//!
//! # Protocol
//! Three shared words beside the lock: `seq` (the futex word), `waiters` (waiters not yet
//! notified) and `signals` (notifications not yet taken). Both counts change only under the
//! lock. A waiter counts itself in `waiters`, reads `seq`, releases the lock and sleeps while
//! `seq` is unchanged; woken (or timed out) it takes the lock back and takes a signal if one
//! is left, else sleeps again or, past its deadline, uncounts itself. `notify(n)` moves
//! `k = min(n, waiters)` from `waiters` to `signals`, bumps `seq` and wakes `k` sleepers.
//! Every notification is taken by exactly one waiter, so `notify(n)` wakes exactly
//! `min(n, waiting)` (CPython's tests count this), whatever the order in which they run.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::lock::{LockGuard, RLockGuard};
use super::{deadline_after, kind, time_left, Lock, RLock, Words};
use crate::sys::{futex_wait, futex_wake};
use crate::Error;

const SEQ: usize = 0;
const WAITERS: usize = 1;
const SIGNALS: usize = 2;

/// The lock under a condition.
#[derive(Serialize, Deserialize)]
enum Under {
    Lock(Lock),
    RLock(RLock),
}

/// A condition variable shared by any number of processes (CPython's
/// `multiprocessing.Condition`).
///
/// Waiting and notifying need the lock held, so they are methods of the guard that
/// [`acquire`](Self::acquire) returns: `cond.acquire().wait()` is Python's
/// `with cond: cond.wait()`.
///
/// # Examples
///
/// ```
/// use multiproc::{Condition, Process, Value};
///
/// fn produce((cond, ready): (Condition, Value<i32>)) {
///     let guard = cond.acquire();
///     ready.set(1);
///     guard.notify_all();
/// }
///
/// let cond = Condition::new().unwrap();
/// let ready = Value::new(0).unwrap();
/// let mut guard = cond.acquire();
/// let mut child = Process::spawn(produce, (cond.try_clone().unwrap(), ready.try_clone().unwrap())).unwrap();
/// guard.wait_for(|| ready.get() == 1);
/// drop(guard);
/// child.join().unwrap();
/// ```
#[derive(Serialize, Deserialize)]
pub struct Condition {
    lock: Under,
    #[serde(
        serialize_with = "serialize_words",
        deserialize_with = "deserialize_words"
    )]
    words: Words,
}

fn serialize_words<S: Serializer>(words: &Words, serializer: S) -> Result<S::Ok, S::Error> {
    words.serialize(serializer)
}

fn deserialize_words<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Words, D::Error> {
    Words::deserialize(deserializer, kind::CONDITION, 3)
}

impl Condition {
    /// A condition over a new [`RLock`] (CPython's default).
    ///
    /// # Errors
    /// [`Error::Os`] if the shared memory cannot be made.
    pub fn new() -> Result<Condition, Error> {
        Condition::with(Under::RLock(RLock::new()?))
    }

    /// A condition over `lock` (CPython's `Condition(lock)`).
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn with_lock(lock: Lock) -> Result<Condition, Error> {
        Condition::with(Under::Lock(lock))
    }

    /// A condition over `lock`, re-entrant: waiting releases every level this thread holds
    /// and takes them all back.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn with_rlock(lock: RLock) -> Result<Condition, Error> {
        Condition::with(Under::RLock(lock))
    }

    fn with(lock: Under) -> Result<Condition, Error> {
        Ok(Condition {
            lock,
            words: Words::new(kind::CONDITION, 3)?,
        })
    }

    fn guard<'a>(&'a self, held: Option<Held<'a>>) -> Option<ConditionGuard<'a>> {
        held.map(|held| ConditionGuard { cond: self, held })
    }

    /// Takes the lock, waiting as long as it takes.
    pub fn acquire(&self) -> ConditionGuard<'_> {
        let held = match &self.lock {
            Under::Lock(l) => Held::Lock(l.acquire()),
            Under::RLock(l) => Held::RLock(l.acquire()),
        };
        ConditionGuard { cond: self, held }
    }

    /// Takes the lock if it is free now.
    pub fn try_acquire(&self) -> Option<ConditionGuard<'_>> {
        self.guard(match &self.lock {
            Under::Lock(l) => l.try_acquire().map(Held::Lock),
            Under::RLock(l) => l.try_acquire().map(Held::RLock),
        })
    }

    /// Takes the lock, waiting at most `timeout`.
    pub fn acquire_timeout(&self, timeout: Duration) -> Option<ConditionGuard<'_>> {
        self.guard(match &self.lock {
            Under::Lock(l) => l.acquire_timeout(timeout).map(Held::Lock),
            Under::RLock(l) => l.acquire_timeout(timeout).map(Held::RLock),
        })
    }

    /// Another handle on the same condition (and lock).
    ///
    /// # Errors
    /// None today (the handle shares this process's mappings); kept fallible like the other
    /// handles' `try_clone`.
    pub fn try_clone(&self) -> Result<Condition, Error> {
        Ok(Condition {
            lock: match &self.lock {
                Under::Lock(l) => Under::Lock(l.try_clone()?),
                Under::RLock(l) => Under::RLock(l.try_clone()?),
            },
            words: self.words.share(),
        })
    }

    fn word(&self, i: usize) -> &AtomicU32 {
        self.words.word(i)
    }
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Condition");
        match &self.lock {
            Under::Lock(l) => d.field("lock", l),
            Under::RLock(l) => d.field("lock", l),
        };
        d.field("waiters", &self.word(WAITERS).load(Ordering::Relaxed))
            .finish()
    }
}

/// The guard of the lock under a condition.
enum Held<'a> {
    Lock(LockGuard<'a>),
    RLock(RLockGuard<'a>),
}

/// The lock of a [`Condition`], held: wait and notify here; released when dropped.
#[must_use = "the lock is released at once if the guard is not kept"]
pub struct ConditionGuard<'a> {
    cond: &'a Condition,
    held: Held<'a>,
}

impl ConditionGuard<'_> {
    /// Whether the lock was taken over from a thread that died holding it (here or while
    /// this guard waited).
    pub fn owner_died(&self) -> bool {
        match &self.held {
            Held::Lock(g) => g.owner_died(),
            Held::RLock(g) => g.owner_died(),
        }
    }

    /// Releases the lock, sleeps until notified, and takes the lock back.
    pub fn wait(&mut self) {
        self.wait_until(None);
    }

    /// As [`wait`](Self::wait), giving up after `timeout`; whether it was notified.
    pub fn wait_timeout(&mut self, timeout: Duration) -> bool {
        self.wait_until(deadline_after(timeout))
    }

    /// Waits until `predicate` holds, checking it (under the lock) first and after every
    /// wake-up (CPython's `wait_for(predicate)`).
    pub fn wait_for(&mut self, mut predicate: impl FnMut() -> bool) {
        while !predicate() {
            self.wait();
        }
    }

    /// As [`wait_for`](Self::wait_for), giving up after `timeout`; the predicate's last value.
    pub fn wait_for_timeout(
        &mut self,
        mut predicate: impl FnMut() -> bool,
        timeout: Duration,
    ) -> bool {
        let deadline = deadline_after(timeout);
        loop {
            if predicate() {
                return true;
            }
            if time_left(deadline).is_some_and(|l| l.is_zero()) {
                return false;
            }
            self.wait_until(deadline);
        }
    }

    fn wait_until(&mut self, deadline: Option<Instant>) -> bool {
        let cond = self.cond;
        let (seq, waiters, signals) = (cond.word(SEQ), cond.word(WAITERS), cond.word(SIGNALS));
        waiters.fetch_add(1, Ordering::Relaxed);
        loop {
            let seen = seq.load(Ordering::SeqCst);
            let saved = self.suspend();
            let left = time_left(deadline);
            if !left.is_some_and(|l| l.is_zero()) {
                futex_wait(seq, seen, left);
            }
            self.resume(saved);
            let pending = signals.load(Ordering::Relaxed);
            if pending > 0 {
                signals.store(pending - 1, Ordering::Relaxed);
                return true;
            }
            if time_left(deadline).is_some_and(|l| l.is_zero()) {
                waiters.fetch_sub(1, Ordering::Relaxed);
                return false;
            }
        }
    }

    fn suspend(&mut self) -> u32 {
        match &self.held {
            Held::Lock(g) => {
                g.lock().suspend();
                1
            }
            Held::RLock(g) => g.lock().suspend(),
        }
    }

    fn resume(&mut self, saved: u32) {
        match &mut self.held {
            Held::Lock(g) => {
                let died = g.lock().resume();
                g.set_owner_died(died);
            }
            Held::RLock(g) => {
                let died = g.lock().resume(saved);
                g.set_owner_died(died);
            }
        }
    }

    /// Wakes up to `n` waiters (CPython's `notify(n)`); each wakes only once it can take the
    /// lock, after this guard is dropped.
    pub fn notify(&self, n: u32) {
        let cond = self.cond;
        let (waiters, signals) = (cond.word(WAITERS), cond.word(SIGNALS));
        let waiting = waiters.load(Ordering::Relaxed);
        let k = n.min(waiting);
        if k == 0 {
            return;
        }
        waiters.store(waiting - k, Ordering::Relaxed);
        signals.fetch_add(k, Ordering::Relaxed);
        cond.word(SEQ).fetch_add(1, Ordering::SeqCst);
        futex_wake(cond.word(SEQ), k);
    }

    /// Wakes every waiter.
    pub fn notify_all(&self) {
        self.notify(u32::MAX);
    }
}

impl fmt::Debug for ConditionGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConditionGuard")
            .field("owner_died", &self.owner_died())
            .finish()
    }
}
