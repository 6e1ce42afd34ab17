//! [`Barrier`]: CPython's `threading.Barrier` algorithm (which `multiprocessing.Barrier`
//! reuses) over a [`Condition`] and two shared words, the state and the count.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{kind, Condition, ConditionGuard, Lock, Words};
use crate::process::bootstrap::SharedFn;
use crate::Error;

const STATE: usize = 0;
const COUNT: usize = 1;

/// Parties are arriving.
const FILLING: u32 = 0;
/// The barrier tripped; the parties of this pass are leaving.
const DRAINING: u32 = 1;
/// `reset` was called with parties waiting; they are leaving with `BrokenBarrier`.
const RESETTING: u32 = 2;
/// Broken by a timeout, `abort` or a panicking action, until `reset`.
const BROKEN: u32 = 3;

/// A barrier for a fixed number of parties in any number of processes (CPython's
/// `multiprocessing.Barrier(parties, action, timeout)`).
///
/// Each [`wait`](Self::wait) blocks until `parties` calls are waiting, then all return
/// together, each with a distinct index in `0..parties`, and the barrier is ready for the
/// next pass. The optional *action* is a plain `fn()`: the last party to arrive runs it, in
/// its own process, before anyone is released. It travels with the barrier as the function's
/// offset in the executable (as `Process::spawn` sends its function), tagged with the process
/// family's [`AuthKey`](crate::AuthKey): a barrier with an action can only be received by a
/// process of the same executable and family, and one whose action reference was forged or
/// damaged is refused with [`Error::UnauthenticatedFunction`] rather than called.
///
/// A party that dies while waiting stays counted: set a default timeout so that the others
/// get [`Error::BrokenBarrier`] instead of waiting for ever.
///
/// # Examples
///
/// ```
/// use multiproc::{Barrier, Process};
///
/// fn meet(barrier: Barrier) -> usize {
///     barrier.wait().unwrap()
/// }
///
/// let barrier = Barrier::new(2).unwrap();
/// let mut child = Process::spawn(meet, barrier.try_clone().unwrap()).unwrap();
/// let mine = barrier.wait().unwrap();
/// let theirs = child.join().unwrap();
/// assert_eq!(mine + theirs, 1); // indices 0 and 1
/// ```
pub struct Barrier {
    cond: Condition,
    words: Words,
    parties: u32,
    action: Option<SharedFn>,
    timeout: Option<Duration>,
}

impl Barrier {
    /// A barrier for `parties` parties, with no action and no default timeout.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for 0 parties; [`Error::Os`] if the shared memory cannot be
    /// made.
    pub fn new(parties: u32) -> Result<Barrier, Error> {
        Barrier::with_options(parties, None, None)
    }

    /// A barrier with an `action` run once per pass by the last party to arrive, before any
    /// party is released, and a default `timeout` for [`wait`](Self::wait).
    ///
    /// # Errors
    /// As [`new`](Self::new).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::{Barrier, Error};
    ///
    /// fn announce() {
    ///     println!("everyone is here");
    /// }
    ///
    /// let barrier = Barrier::with_options(1, Some(announce), Some(Duration::from_secs(5))).unwrap();
    /// assert_eq!(barrier.wait().unwrap(), 0);
    /// ```
    pub fn with_options(
        parties: u32,
        action: Option<fn()>,
        timeout: Option<Duration>,
    ) -> Result<Barrier, Error> {
        if parties == 0 {
            return Err(Error::InvalidArgument(
                "a barrier needs at least one party".into(),
            ));
        }
        Ok(Barrier {
            cond: Condition::with_lock(Lock::new()?)?,
            words: Words::new(kind::BARRIER, 2)?,
            parties,
            action: action.map(SharedFn),
            timeout,
        })
    }

    fn state(&self) -> &AtomicU32 {
        self.words.word(STATE)
    }

    fn count(&self) -> &AtomicU32 {
        self.words.word(COUNT)
    }

    /// Waits for the other parties (at most the default timeout, if there is one); returns
    /// this party's index in `0..parties`.
    ///
    /// # Errors
    /// [`Error::BrokenBarrier`] if the barrier is or becomes broken while waiting (a timeout,
    /// [`abort`](Self::abort), [`reset`](Self::reset) or a panicking action). A party whose
    /// timeout expires breaks the barrier for everyone.
    ///
    /// # Panics
    /// The last party resumes the action's panic, after breaking the barrier.
    pub fn wait(&self) -> Result<usize, Error> {
        self.wait_with(self.timeout)
    }

    /// As [`wait`](Self::wait) with `timeout` instead of the default.
    ///
    /// # Errors
    /// As [`wait`](Self::wait).
    pub fn wait_timeout(&self, timeout: Duration) -> Result<usize, Error> {
        self.wait_with(Some(timeout))
    }

    fn wait_with(&self, timeout: Option<Duration>) -> Result<usize, Error> {
        let mut guard = self.cond.acquire();
        // Wait while the previous pass drains or a reset completes.
        guard.wait_for(|| !matches!(self.state().load(Ordering::Relaxed), DRAINING | RESETTING));
        if self.state().load(Ordering::Relaxed) == BROKEN {
            return Err(Error::BrokenBarrier);
        }
        let index = self.count().fetch_add(1, Ordering::Relaxed);
        let outcome = if index + 1 == self.parties {
            self.trip(&guard)
        } else {
            self.wait_for_trip(&mut guard, timeout)
        };
        self.count().fetch_sub(1, Ordering::Relaxed);
        if self.count().load(Ordering::Relaxed) == 0
            && matches!(self.state().load(Ordering::Relaxed), DRAINING | RESETTING)
        {
            self.state().store(FILLING, Ordering::Relaxed);
            guard.notify_all();
        }
        drop(guard);
        match outcome {
            Ok(()) => Ok(index as usize),
            Err(Tripped::Broken) => Err(Error::BrokenBarrier),
            Err(Tripped::ActionPanicked(payload)) => std::panic::resume_unwind(payload),
        }
    }

    /// The last party: runs the action, then releases everyone.
    fn trip(&self, guard: &ConditionGuard<'_>) -> Result<(), Tripped> {
        if let Some(SharedFn(action)) = self.action {
            if let Err(payload) = std::panic::catch_unwind(action) {
                self.break_it(guard);
                return Err(Tripped::ActionPanicked(payload));
            }
        }
        self.state().store(DRAINING, Ordering::Relaxed);
        guard.notify_all();
        Ok(())
    }

    fn wait_for_trip(
        &self,
        guard: &mut ConditionGuard<'_>,
        timeout: Option<Duration>,
    ) -> Result<(), Tripped> {
        let filling = || self.state().load(Ordering::Relaxed) == FILLING;
        let tripped = match timeout {
            None => {
                guard.wait_for(|| !filling());
                true
            }
            Some(t) => guard.wait_for_timeout(|| !filling(), t),
        };
        if !tripped {
            self.break_it(guard);
            return Err(Tripped::Broken);
        }
        match self.state().load(Ordering::Relaxed) {
            DRAINING => Ok(()),
            _ => Err(Tripped::Broken),
        }
    }

    fn break_it(&self, guard: &ConditionGuard<'_>) {
        self.state().store(BROKEN, Ordering::Relaxed);
        guard.notify_all();
    }

    /// Returns the barrier to its initial state: parties waiting now get
    /// [`Error::BrokenBarrier`]; a broken barrier works again.
    pub fn reset(&self) {
        let guard = self.cond.acquire();
        let state = self.state();
        if self.count().load(Ordering::Relaxed) > 0 {
            if matches!(state.load(Ordering::Relaxed), FILLING | BROKEN) {
                state.store(RESETTING, Ordering::Relaxed);
            }
        } else {
            state.store(FILLING, Ordering::Relaxed);
        }
        guard.notify_all();
    }

    /// Breaks the barrier: waiting and later parties get [`Error::BrokenBarrier`] until
    /// [`reset`](Self::reset).
    pub fn abort(&self) {
        let guard = self.cond.acquire();
        self.break_it(&guard);
    }

    /// Whether the barrier is broken.
    pub fn broken(&self) -> bool {
        self.state().load(Ordering::Relaxed) == BROKEN
    }

    /// How many parties are waiting in the current pass.
    pub fn n_waiting(&self) -> u32 {
        let _guard = self.cond.acquire();
        match self.state().load(Ordering::Relaxed) {
            FILLING => self.count().load(Ordering::Relaxed),
            _ => 0,
        }
    }

    /// The number of parties a pass needs.
    pub fn parties(&self) -> u32 {
        self.parties
    }

    /// The default timeout of [`wait`](Self::wait).
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// Another handle on the same barrier.
    ///
    /// # Errors
    /// None today (the handle shares this process's mappings); kept fallible like the other
    /// handles' `try_clone`.
    pub fn try_clone(&self) -> Result<Barrier, Error> {
        Ok(Barrier {
            cond: self.cond.try_clone()?,
            words: self.words.share(),
            parties: self.parties,
            action: self.action,
            timeout: self.timeout,
        })
    }
}

/// Why a pass did not complete normally.
enum Tripped {
    Broken,
    ActionPanicked(Box<dyn std::any::Any + Send>),
}

impl fmt::Debug for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Barrier")
            .field("parties", &self.parties)
            .field("broken", &self.broken())
            .field("has_action", &self.action.is_some())
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// What travels: the condition, the words' descriptor, and the settings.
#[derive(Serialize)]
struct Wire<'a> {
    cond: &'a Condition,
    words: super::Fd<'a>,
    parties: u32,
    action: Option<SharedFn>,
    timeout_ns: Option<u64>,
}

#[derive(Deserialize)]
struct Received {
    cond: Condition,
    words: super::ReceivedFd,
    parties: u32,
    action: Option<SharedFn>,
    timeout_ns: Option<u64>,
}

impl Serialize for Barrier {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Wire {
            cond: &self.cond,
            words: super::Fd(self.words.fd()),
            parties: self.parties,
            action: self.action,
            timeout_ns: self
                .timeout
                .map(|t| u64::try_from(t.as_nanos()).unwrap_or(u64::MAX)),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Barrier {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let r = Received::deserialize(deserializer)?;
        if r.parties == 0 {
            return Err(D::Error::custom("a barrier of 0 parties"));
        }
        Ok(Barrier {
            cond: r.cond,
            words: Words::from_fd(r.words.0, kind::BARRIER, 2).map_err(D::Error::custom)?,
            parties: r.parties,
            action: r.action,
            timeout: r.timeout_ns.map(Duration::from_nanos),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{self, FdTable};
    use std::sync::atomic::AtomicUsize;

    static RUNS: AtomicUsize = AtomicUsize::new(0);

    fn count_run() {
        RUNS.fetch_add(1, Ordering::SeqCst);
    }

    /// A barrier as it travels, and where its action's tag sits in the pickle (a 16-byte
    /// `bytes` value, `C\x10` then the tag, in pickle protocol 3).
    fn pickled_with_action() -> (Vec<u8>, Vec<std::os::fd::OwnedFd>, usize) {
        let barrier = Barrier::with_options(1, Some(count_run), None).unwrap();
        let mut fds = Vec::new();
        let bytes = codec::encode_in(&barrier, &mut fds).unwrap();
        let at = bytes
            .windows(2)
            .position(|w| w == b"C\x10")
            .expect("the action's tag in the pickle")
            + 2;
        (bytes, fds, at)
    }

    #[test]
    fn action_travels_with_its_tag() {
        let (bytes, fds, _) = pickled_with_action();
        let received: Barrier = codec::decode_in(&bytes, &mut FdTable::new(fds)).unwrap();
        let before = RUNS.load(Ordering::SeqCst);
        assert_eq!(received.wait().unwrap(), 0);
        assert_eq!(RUNS.load(Ordering::SeqCst), before + 1);
    }

    /// A barrier whose action reference was tampered with in transit is refused with the
    /// typed error; no barrier (and so no action to call) comes of it.
    #[test]
    fn tampered_action_is_refused() {
        let (mut bytes, fds, at) = pickled_with_action();
        bytes[at + 5] ^= 0x20;
        let err = codec::decode_in::<Barrier>(&bytes, &mut FdTable::new(fds)).unwrap_err();
        assert!(
            matches!(
                err,
                Error::UnauthenticatedFunction {
                    what: "a barrier action"
                }
            ),
            "{err}"
        );
    }
}
