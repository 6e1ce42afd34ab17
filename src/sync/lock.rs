//! [`Lock`] and [`RLock`]: robust futex mutexes in shared memory (see `sys::RobustLock`).

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{deadline_after, kind, Fd, ReceivedFd, Words};
use crate::sys::{self, Acquired, RobustLock, SharedMapping, LOCK_SIZE};
use crate::Error;

/// Makes a guard `!Send` and `!Sync`: the lock's owner is the thread that took it.
type NotSend = PhantomData<*const ()>;

/// A lock shared by any number of processes (CPython's `multiprocessing.Lock`).
///
/// Not re-entrant: a thread that takes it twice waits for itself (use [`RLock`]). If the
/// thread holding it dies (its process killed, say), the kernel marks the lock and wakes a
/// waiter, which takes it at once; its guard says [`owner_died`](LockGuard::owner_died).
///
/// # Examples
///
/// ```
/// use multiproc::{Lock, Process};
///
/// fn hold_it(lock: Lock) -> bool {
///     let _guard = lock.acquire();
///     lock.locked()
/// }
///
/// let lock = Lock::new().unwrap();
/// let held_in_child = Process::spawn(hold_it, lock.try_clone().unwrap()).unwrap().join().unwrap();
/// assert!(held_in_child);
/// assert!(!lock.locked());
/// let guard = lock.try_acquire().unwrap();
/// assert!(lock.try_acquire().is_none());
/// drop(guard);
/// ```
pub struct Lock {
    map: Arc<SharedMapping>,
    /// Offset of the lock's block (`sys::LOCK_SIZE` bytes).
    at: usize,
}

impl Lock {
    /// A new, unlocked lock in shared memory of its own.
    ///
    /// # Errors
    /// [`Error::Os`] if the shared memory cannot be made.
    pub fn new() -> Result<Lock, Error> {
        let map = SharedMapping::new(LOCK_SIZE).map_err(Error::os("memfd"))?;
        Ok(Lock {
            map: Arc::new(map),
            at: 0,
        })
    }

    /// The lock whose block is at `at` in `map` (a `Value`'s built-in lock).
    pub(crate) fn embedded(map: Arc<SharedMapping>, at: usize) -> Lock {
        Lock { map, at }
    }

    /// Whether this is the lock at `at` inside `map`.
    pub(crate) fn is_embedded_in(&self, map: &Arc<SharedMapping>, at: usize) -> bool {
        Arc::ptr_eq(&self.map, map) && self.at == at
    }

    fn raw(&self) -> RobustLock<'_> {
        RobustLock::new(&self.map, self.at)
    }

    fn guard(&self, taken: Acquired) -> LockGuard<'_> {
        LockGuard {
            lock: self,
            owner_died: taken == Acquired::OwnerDied,
            _not_send: PhantomData,
        }
    }

    /// Takes the lock, waiting as long as it takes (CPython's `acquire()`).
    pub fn acquire(&self) -> LockGuard<'_> {
        // Without a deadline `lock_until` only returns having taken the lock.
        let taken = self.raw().lock_until(None).unwrap_or(Acquired::Clean);
        self.guard(taken)
    }

    /// Takes the lock if it is free now (CPython's `acquire(block=False)`).
    pub fn try_acquire(&self) -> Option<LockGuard<'_>> {
        self.raw().try_lock().map(|taken| self.guard(taken))
    }

    /// Takes the lock, waiting at most `timeout` (CPython's `acquire(timeout=t)`); `None` if
    /// it stayed held.
    pub fn acquire_timeout(&self, timeout: Duration) -> Option<LockGuard<'_>> {
        self.acquire_until(deadline_after(timeout))
    }

    pub(crate) fn acquire_until(&self, deadline: Option<Instant>) -> Option<LockGuard<'_>> {
        self.raw()
            .lock_until(deadline)
            .map(|taken| self.guard(taken))
    }

    /// Whether some thread of some process holds the lock now.
    pub fn locked(&self) -> bool {
        self.raw().owner() != 0
    }

    /// Releases a lock held without a guard (see [`LockGuard::leak`]), whoever took it: as in
    /// CPython, any thread or process may release a `Lock`.
    ///
    /// Meant for leaked guards. Releasing a lock that a live guard holds makes that guard's
    /// drop do nothing, unless the guard's thread has taken the lock again by then, when the
    /// drop releases that newer hold.
    ///
    /// # Errors
    /// [`Error::NotHeld`] if the lock is not locked (CPython's `ValueError` for releasing an
    /// unlocked lock).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Error, Lock};
    ///
    /// let lock = Lock::new().unwrap();
    /// lock.acquire().leak();
    /// assert!(lock.locked());
    /// lock.release().unwrap();
    /// assert!(matches!(lock.release(), Err(Error::NotHeld)));
    /// ```
    pub fn release(&self) -> Result<(), Error> {
        if self.raw().unlock_any() {
            Ok(())
        } else {
            Err(Error::NotHeld)
        }
    }

    /// Another handle on the same lock.
    ///
    /// # Errors
    /// None today (the handle shares this process's mapping); kept fallible like the other
    /// handles' `try_clone`.
    pub fn try_clone(&self) -> Result<Lock, Error> {
        Ok(Lock {
            map: Arc::clone(&self.map),
            at: self.at,
        })
    }

    /// Releases the lock for a condition wait, keeping the guard.
    pub(crate) fn suspend(&self) {
        self.raw().unlock_mine();
    }

    /// Takes the lock back after [`suspend`](Self::suspend); `true` if the owner died.
    pub(crate) fn resume(&self) -> bool {
        self.raw().lock_until(None) == Some(Acquired::OwnerDied)
    }
}

/// Who holds a lock whose word says `tid` (CPython's lock `repr`: `owner=None`,
/// `MainProcess|MainThread`, `SomeOtherThread`, `SomeOtherProcess`).
fn owner_of(tid: u32) -> &'static str {
    match tid {
        0 => "nobody",
        tid if tid == sys::gettid() => "this thread",
        tid if sys::is_own_thread(tid) => "another thread of this process",
        _ => "another process",
    }
}

impl fmt::Debug for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lock")
            .field("owner", &owner_of(self.raw().owner()))
            .finish()
    }
}

impl Serialize for Lock {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (Fd(self.map.fd()), self.at as u64).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Lock {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (fd, at) = <(ReceivedFd, u64)>::deserialize(deserializer)?;
        let at = usize::try_from(at)
            .ok()
            .filter(|at| at % 8 == 0)
            .ok_or_else(|| D::Error::custom(format!("a lock at a bad offset {at}")))?;
        let end = at
            .checked_add(LOCK_SIZE)
            .ok_or_else(|| D::Error::custom(format!("a lock at a bad offset {at}")))?;
        let map = SharedMapping::from_fd(fd.0, end).map_err(D::Error::custom)?;
        Ok(Lock::embedded(Arc::new(map), at))
    }
}

/// A held [`Lock`]; released when dropped.
#[must_use = "the lock is released at once if the guard is not kept"]
pub struct LockGuard<'a> {
    lock: &'a Lock,
    owner_died: bool,
    _not_send: NotSend,
}

impl<'a> LockGuard<'a> {
    /// Whether the lock was taken over from a thread that died holding it: what it guards
    /// may be half-updated.
    pub fn owner_died(&self) -> bool {
        self.owner_died
    }

    /// Keeps the lock held past the guard, for a [`Lock::release`] later, perhaps by another
    /// process (CPython's bare `acquire()` … `release()`).
    pub fn leak(self) {
        std::mem::forget(self);
    }

    pub(crate) fn lock(&self) -> &'a Lock {
        self.lock
    }

    pub(crate) fn set_owner_died(&mut self, died: bool) {
        self.owner_died |= died;
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        // Does nothing if someone already released it for this thread with `Lock::release`.
        self.lock.raw().unlock_mine();
    }
}

impl fmt::Debug for LockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard")
            .field("owner_died", &self.owner_died)
            .finish()
    }
}

/// The level count (word 0, at byte 4, after the kind tag), then the lock's block at byte 8.
const RLOCK_COUNT: usize = 0;
const RLOCK_AT: usize = 8;
/// Words after the tag: the count, then `LOCK_SIZE` bytes.
const RLOCK_WORDS: usize = 1 + LOCK_SIZE / 4;

/// A re-entrant lock shared by any number of processes (CPython's `multiprocessing.RLock`):
/// the thread holding it may take it again, and it is free once every guard is dropped.
///
/// The owner is a (process, thread) pair: Linux thread ids are unique across processes. If
/// the owner dies holding it, the next taker gets it with a count of 1 and
/// [`owner_died`](RLockGuard::owner_died).
///
/// # Examples
///
/// ```
/// use multiproc::RLock;
///
/// let lock = RLock::new().unwrap();
/// let outer = lock.acquire();
/// let inner = lock.acquire();
/// assert_eq!(lock.count(), 2);
/// drop(inner);
/// assert!(lock.locked());
/// drop(outer);
/// assert!(!lock.locked());
/// ```
pub struct RLock {
    words: Words,
}

impl RLock {
    /// A new, unlocked re-entrant lock.
    ///
    /// # Errors
    /// [`Error::Os`] if the shared memory cannot be made.
    pub fn new() -> Result<RLock, Error> {
        Words::new(kind::RLOCK, RLOCK_WORDS).map(|words| RLock { words })
    }

    fn raw(&self) -> RobustLock<'_> {
        RobustLock::new(&self.words.map, RLOCK_AT)
    }

    fn is_mine(&self) -> bool {
        self.raw().owner() == sys::gettid()
    }

    fn count_word(&self) -> &std::sync::atomic::AtomicU32 {
        self.words.word(RLOCK_COUNT)
    }

    /// Takes one more level if this thread holds it; otherwise `take` the lock.
    fn enter(
        &self,
        take: impl FnOnce(RobustLock<'_>) -> Option<Acquired>,
    ) -> Option<RLockGuard<'_>> {
        let owner_died = if self.is_mine() {
            self.count_word().fetch_add(1, Ordering::Relaxed);
            false
        } else {
            let taken = take(self.raw())?;
            // Only the owner writes the count; a dead owner's count is void.
            self.count_word().store(1, Ordering::Relaxed);
            taken == Acquired::OwnerDied
        };
        Some(RLockGuard {
            lock: self,
            owner_died,
            _not_send: PhantomData,
        })
    }

    /// Takes the lock (one more level if this thread holds it), waiting as long as it takes.
    pub fn acquire(&self) -> RLockGuard<'_> {
        loop {
            if let Some(guard) = self.enter(|raw| raw.lock_until(None)) {
                return guard;
            }
        }
    }

    /// Takes the lock if this thread holds it or it is free now.
    pub fn try_acquire(&self) -> Option<RLockGuard<'_>> {
        self.enter(|raw| raw.try_lock())
    }

    /// Takes the lock, waiting at most `timeout`; `None` if another thread kept it.
    pub fn acquire_timeout(&self, timeout: Duration) -> Option<RLockGuard<'_>> {
        let deadline = deadline_after(timeout);
        self.enter(|raw| raw.lock_until(deadline))
    }

    /// Whether some thread of some process holds the lock.
    pub fn locked(&self) -> bool {
        self.raw().owner() != 0
    }

    /// How many levels the owner holds (0 when free). A snapshot when another thread owns it.
    pub fn count(&self) -> u32 {
        if self.locked() {
            self.count_word().load(Ordering::Relaxed)
        } else {
            0
        }
    }

    /// Whether the calling thread holds it.
    pub fn is_owned(&self) -> bool {
        self.is_mine()
    }

    /// Gives back one level held without a guard (see [`RLockGuard::leak`]).
    ///
    /// # Errors
    /// [`Error::NotHeld`] if the calling thread does not hold the lock (CPython's
    /// `AssertionError`/`RuntimeError` for releasing an un-acquired `RLock`).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Error, RLock};
    ///
    /// let lock = RLock::new().unwrap();
    /// lock.acquire().leak();
    /// lock.release().unwrap();
    /// assert!(matches!(lock.release(), Err(Error::NotHeld)));
    /// ```
    pub fn release(&self) -> Result<(), Error> {
        if !self.is_mine() {
            return Err(Error::NotHeld);
        }
        if self.count_word().fetch_sub(1, Ordering::Relaxed) <= 1 {
            self.count_word().store(0, Ordering::Relaxed);
            self.raw().unlock();
        }
        Ok(())
    }

    /// Another handle on the same lock.
    ///
    /// # Errors
    /// None today (the handle shares this process's mapping); kept fallible like the other
    /// handles' `try_clone`.
    pub fn try_clone(&self) -> Result<RLock, Error> {
        Ok(RLock {
            words: self.words.share(),
        })
    }

    /// Releases every level for a condition wait; returns the count to restore.
    pub(crate) fn suspend(&self) -> u32 {
        let count = self.count_word().swap(0, Ordering::Relaxed);
        self.raw().unlock();
        count
    }

    /// Takes the lock back with `count` levels; `true` if the owner died meanwhile.
    pub(crate) fn resume(&self, count: u32) -> bool {
        let died = self.raw().lock_until(None) == Some(Acquired::OwnerDied);
        self.count_word().store(count, Ordering::Relaxed);
        died
    }
}

impl fmt::Debug for RLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RLock")
            .field("owner", &owner_of(self.raw().owner()))
            .field("count", &self.count())
            .finish()
    }
}

impl Serialize for RLock {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.words.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for RLock {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Words::deserialize(deserializer, kind::RLOCK, RLOCK_WORDS).map(|words| RLock { words })
    }
}

/// One level of a held [`RLock`]; given back when dropped.
#[must_use = "the level is given back at once if the guard is not kept"]
pub struct RLockGuard<'a> {
    lock: &'a RLock,
    owner_died: bool,
    _not_send: NotSend,
}

impl<'a> RLockGuard<'a> {
    /// Whether the lock was taken over from a thread that died holding it.
    pub fn owner_died(&self) -> bool {
        self.owner_died
    }

    /// Keeps this level held past the guard, for an [`RLock::release`] later by this thread.
    pub fn leak(self) {
        std::mem::forget(self);
    }

    pub(crate) fn lock(&self) -> &'a RLock {
        self.lock
    }

    pub(crate) fn set_owner_died(&mut self, died: bool) {
        self.owner_died |= died;
    }
}

impl Drop for RLockGuard<'_> {
    fn drop(&mut self) {
        // An error means the level was already given back with `RLock::release`.
        let _ = self.lock.release();
    }
}

impl fmt::Debug for RLockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RLockGuard")
            .field("owner_died", &self.owner_died)
            .finish()
    }
}
