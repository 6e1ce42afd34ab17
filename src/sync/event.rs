//! [`Event`]: a flag word in shared memory that waiters sleep on.

use std::fmt;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{deadline_after, kind, Words};
use crate::sys::futex_wake;
use crate::Error;

const FLAG: usize = 0;
const WAITERS: usize = 1;

/// A flag that processes wait for (CPython's `multiprocessing.Event`).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use multiproc::{Event, Process};
///
/// fn wait_for_it(event: Event) -> bool {
///     event.wait_timeout(Duration::from_secs(10))
/// }
///
/// let event = Event::new().unwrap();
/// assert!(!event.wait_timeout(Duration::ZERO));
/// let mut child = Process::spawn(wait_for_it, event.try_clone().unwrap()).unwrap();
/// event.set();
/// assert!(child.join().unwrap());
/// ```
pub struct Event {
    words: Words,
}

impl Event {
    /// A new, unset event.
    ///
    /// # Errors
    /// [`Error::Os`] if the shared memory cannot be made.
    pub fn new() -> Result<Event, Error> {
        Words::new(kind::EVENT, 2).map(|words| Event { words })
    }

    /// Whether the event is set.
    pub fn is_set(&self) -> bool {
        self.words.word(FLAG).load(Ordering::Acquire) != 0
    }

    /// Sets the event, waking every waiter.
    pub fn set(&self) {
        self.words.word(FLAG).store(1, Ordering::SeqCst);
        if self.words.word(WAITERS).load(Ordering::SeqCst) > 0 {
            futex_wake(self.words.word(FLAG), i32::MAX as u32);
        }
    }

    /// Unsets the event.
    pub fn clear(&self) {
        self.words.word(FLAG).store(0, Ordering::SeqCst);
    }

    /// Waits until the event is set.
    pub fn wait(&self) {
        self.wait_until(None);
    }

    /// Waits until the event is set or `timeout` passes; whether it is set (CPython's
    /// `wait(timeout)`). A zero timeout only looks.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.wait_until(deadline_after(timeout))
    }

    fn wait_until(&self, deadline: Option<Instant>) -> bool {
        self.words
            .wait_for(|| self.is_set(), FLAG, WAITERS, deadline)
    }

    /// Another handle on the same event.
    ///
    /// # Errors
    /// None today (the handle shares this process's mapping); kept fallible like the other
    /// handles' `try_clone`.
    pub fn try_clone(&self) -> Result<Event, Error> {
        Ok(Event {
            words: self.words.share(),
        })
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("set", &self.is_set())
            .finish()
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.words.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Words::deserialize(deserializer, kind::EVENT, 2).map(|words| Event { words })
    }
}
