//! [`Semaphore`] and [`BoundedSemaphore`]: a futex counter in shared memory.
//!
//! The value word holds the number of free permits. Taking one is a compare-and-swap from
//! `v` to `v - 1`; at 0 a taker counts itself in the waiter word and sleeps on the value word.
//! Releasing adds one and wakes one sleeper if the waiter word says there is any.

use std::fmt;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{deadline_after, kind, Words};
use crate::sys::futex_wake;
use crate::Error;

const VALUE: usize = 0;
const WAITERS: usize = 1;
/// The most the value may reach: the start value for a bounded semaphore, else `u32::MAX`.
const LIMIT: usize = 2;

/// The counter both semaphores share.
struct Counter {
    words: Words,
}

impl Counter {
    fn new(value: u32, limit: u32) -> Result<Counter, Error> {
        let words = Words::new(kind::SEMAPHORE, 3)?;
        words.word(VALUE).store(value, Ordering::Relaxed);
        words.word(LIMIT).store(limit, Ordering::Relaxed);
        Ok(Counter { words })
    }

    fn value(&self) -> u32 {
        self.words.word(VALUE).load(Ordering::Relaxed)
    }

    fn try_take(&self) -> bool {
        let value = self.words.word(VALUE);
        let mut v = value.load(Ordering::Relaxed);
        while v > 0 {
            match value.compare_exchange_weak(v, v - 1, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(now) => v = now,
            }
        }
        false
    }

    fn take_until(&self, deadline: Option<Instant>) -> bool {
        self.words
            .wait_for(|| self.try_take(), VALUE, WAITERS, deadline)
    }

    fn give(&self) -> Result<(), Error> {
        let value = self.words.word(VALUE);
        let limit = self.words.word(LIMIT).load(Ordering::Relaxed);
        let mut v = value.load(Ordering::Relaxed);
        loop {
            if v >= limit {
                return Err(Error::TooManyReleases { limit });
            }
            match value.compare_exchange_weak(v, v + 1, Ordering::SeqCst, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => v = now,
            }
        }
        if self.words.word(WAITERS).load(Ordering::SeqCst) > 0 {
            futex_wake(value, 1);
        }
        Ok(())
    }

    fn share(&self) -> Counter {
        Counter {
            words: self.words.share(),
        }
    }
}

macro_rules! semaphore {
    ($(#[$doc:meta])* $name:ident, $python:literal) => {
        $(#[$doc])*
        pub struct $name {
            counter: Counter,
        }

        impl $name {
            /// The number of free permits now (CPython's `get_value()`).
            pub fn get_value(&self) -> u32 {
                self.counter.value()
            }

            /// Takes a permit, waiting as long as it takes.
            pub fn acquire(&self) -> SemaphoreGuard<'_> {
                self.counter.take_until(None);
                SemaphoreGuard { counter: &self.counter }
            }

            /// Takes a permit if one is free now.
            pub fn try_acquire(&self) -> Option<SemaphoreGuard<'_>> {
                // `then`, not `then_some`: an unused guard would give back a permit never taken.
                self.counter
                    .try_take()
                    .then(|| SemaphoreGuard { counter: &self.counter })
            }

            /// Takes a permit, waiting at most `timeout`; `None` if none came free.
            pub fn acquire_timeout(&self, timeout: Duration) -> Option<SemaphoreGuard<'_>> {
                self.counter
                    .take_until(deadline_after(timeout))
                    .then(|| SemaphoreGuard { counter: &self.counter })
            }

            /// Adds a permit (one taken with [`SemaphoreGuard::leak`], or a new one), waking
            /// one waiter; any process may release.
            ///
            /// # Errors
            #[doc = $python]
            pub fn release(&self) -> Result<(), Error> {
                self.counter.give()
            }

            /// Another handle on the same semaphore.
            ///
            /// # Errors
            /// None today (the handle shares this process's mapping); kept fallible like
            /// the other handles' `try_clone`.
            pub fn try_clone(&self) -> Result<$name, Error> {
                Ok($name { counter: self.counter.share() })
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("value", &self.get_value())
                    .finish()
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                self.counter.words.serialize(serializer)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let words = Words::deserialize(deserializer, kind::SEMAPHORE, 3)?;
                Ok($name { counter: Counter { words } })
            }
        }
    };
}

semaphore! {
    /// A counting semaphore shared by any number of processes (CPython's
    /// `multiprocessing.Semaphore`). Releases may raise the value past its start.
    ///
    /// A permit held by a process that dies is lost (the value stays one lower): a counter
    /// does not record who took a permit, so nobody can give it back for the dead process.
    /// CPython's POSIX semaphores behave the same. Where a peer may be killed, wait with
    /// [`acquire_timeout`](Self::acquire_timeout).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::Semaphore;
    ///
    /// let sem = Semaphore::new(2).unwrap();
    /// let a = sem.acquire();
    /// let b = sem.try_acquire().unwrap();
    /// assert!(sem.try_acquire().is_none());
    /// drop((a, b));
    /// assert_eq!(sem.get_value(), 2);
    /// sem.release().unwrap(); // past the start value: allowed here
    /// assert_eq!(sem.get_value(), 3);
    /// ```
    Semaphore,
    "[`Error::TooManyReleases`] only if the value would pass `u32::MAX`."
}

semaphore! {
    /// A semaphore that refuses a release above its start value (CPython's
    /// `multiprocessing.BoundedSemaphore`).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{BoundedSemaphore, Error};
    ///
    /// let sem = BoundedSemaphore::new(1).unwrap();
    /// sem.acquire().leak();
    /// sem.release().unwrap();
    /// assert!(matches!(sem.release(), Err(Error::TooManyReleases { limit: 1 })));
    /// ```
    BoundedSemaphore,
    "[`Error::TooManyReleases`] if the value is already at its start value (CPython's \
     `ValueError: semaphore or lock released too many times`)."
}

impl Semaphore {
    /// A semaphore with `value` free permits.
    ///
    /// # Errors
    /// [`Error::Os`] if the shared memory cannot be made.
    pub fn new(value: u32) -> Result<Semaphore, Error> {
        Counter::new(value, u32::MAX).map(|counter| Semaphore { counter })
    }
}

impl BoundedSemaphore {
    /// A bounded semaphore with `value` free permits, which is also its most.
    ///
    /// # Errors
    /// [`Error::Os`] if the shared memory cannot be made.
    pub fn new(value: u32) -> Result<BoundedSemaphore, Error> {
        Counter::new(value, value).map(|counter| BoundedSemaphore { counter })
    }
}

/// A permit of a [`Semaphore`] or [`BoundedSemaphore`]; given back when dropped.
#[must_use = "the permit is given back at once if the guard is not kept"]
pub struct SemaphoreGuard<'a> {
    counter: &'a Counter,
}

impl SemaphoreGuard<'_> {
    /// Keeps the permit past the guard, for a `release` later, perhaps by another process
    /// (CPython's bare `acquire()` … `release()`).
    pub fn leak(self) {
        std::mem::forget(self);
    }
}

impl Drop for SemaphoreGuard<'_> {
    fn drop(&mut self) {
        // Fails only if extra releases already filled a bounded semaphore: the permit is
        // then surplus, and dropping it keeps the bound.
        let _ = self.counter.give();
    }
}

impl fmt::Debug for SemaphoreGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SemaphoreGuard").finish_non_exhaustive()
    }
}
