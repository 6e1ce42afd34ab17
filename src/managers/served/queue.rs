//! The queue a manager serves, with `queue.Queue` semantics, executed on the server.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::python::{bind_arguments, bound, no_args, PyException};
use super::referent::Referent;
use crate::managers::peer::{self, Outcome};
use crate::pickle::{self, PyValue};
use crate::Error;

/// The methods a CPython 3.8–3.12 `queue.Queue` proxy lists (PROTOCOL.md §7.1).
const EXPOSED: [&str; 9] = [
    "empty",
    "full",
    "get",
    "get_nowait",
    "join",
    "put",
    "put_nowait",
    "qsize",
    "task_done",
];

/// A FIFO queue held by a manager server: what `queue.Queue(maxsize)` is to a CPython
/// manager. Clients reach it through proxies; the server's own code uses this handle
/// directly, with typed values. Items are kept as pickled data ([`PyValue`]), so a queue served
/// by Rust also carries Python objects it cannot map to Rust types (between Python clients).
///
/// Cloning gives another handle to the same queue.
///
/// # Examples
///
/// ```
/// use multiproc::managers::ServedQueue;
///
/// let q = ServedQueue::new(0);
/// q.put(&(1, "one")).unwrap();
/// assert_eq!(q.qsize(), 1);
/// let (n, s): (i32, String) = q.get().unwrap();
/// assert_eq!((n, s.as_str()), (1, "one"));
/// assert!(matches!(q.try_get::<i32>(), Err(multiproc::Error::Empty)));
/// ```
#[derive(Clone)]
pub struct ServedQueue(Arc<Shared>);

struct Shared {
    maxsize: usize,
    state: Mutex<State>,
    not_empty: Condvar,
    not_full: Condvar,
    all_done: Condvar,
}

struct State {
    items: VecDeque<PyValue>,
    unfinished: usize,
    /// Threads waiting on each condition variable ([`NOT_EMPTY`], [`NOT_FULL`], [`ALL_DONE`]):
    /// a notification without a waiter is skipped (each would be a futex system call).
    waiting: [usize; 3],
}

const NOT_EMPTY: usize = 0;
const NOT_FULL: usize = 1;
const ALL_DONE: usize = 2;

impl std::fmt::Debug for ServedQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServedQueue")
            .field("maxsize", &self.0.maxsize)
            .field("qsize", &self.qsize())
            .finish()
    }
}

/// How long a blocking operation may wait.
#[derive(Clone, Copy)]
enum Wait {
    No,
    Forever,
    Until(Instant),
}

impl Wait {
    fn timeout(timeout: Duration) -> Wait {
        Instant::now()
            .checked_add(timeout)
            .map_or(Wait::Forever, Wait::Until)
    }
}

impl ServedQueue {
    /// A queue holding at most `maxsize` items; 0 means unbounded (as in Python).
    ///
    /// # Examples
    ///
    /// ```
    /// let q = multiproc::managers::ServedQueue::new(2);
    /// assert!(q.is_empty());
    /// ```
    pub fn new(maxsize: usize) -> ServedQueue {
        ServedQueue(Arc::new(Shared {
            maxsize,
            state: Mutex::new(State {
                items: VecDeque::new(),
                unfinished: 0,
                waiting: [0; 3],
            }),
            not_empty: Condvar::new(),
            not_full: Condvar::new(),
            all_done: Condvar::new(),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn condvar(&self, which: usize) -> &Condvar {
        match which {
            NOT_EMPTY => &self.0.not_empty,
            NOT_FULL => &self.0.not_full,
            _ => &self.0.all_done,
        }
    }

    /// Waits on condition `which` while `blocked` holds, until `wait` runs out or the client
    /// of the served call hangs up ([`peer`]: then a notification this waiter consumed is
    /// passed on, and the caller takes nothing).
    fn wait_while<'a>(
        &self,
        mut guard: MutexGuard<'a, State>,
        which: usize,
        wait: Wait,
        blocked: impl Fn(&State) -> bool,
    ) -> (MutexGuard<'a, State>, Outcome) {
        let cv = self.condvar(which);
        let deadline = match wait {
            Wait::Until(deadline) => Some(deadline),
            Wait::No | Wait::Forever => None,
        };
        let mut waited = false;
        loop {
            if !blocked(&guard) {
                if waited && peer::gone() {
                    self.notify_one(&guard, which);
                    return (guard, Outcome::PeerGone);
                }
                return (guard, Outcome::Ready);
            }
            match wait {
                Wait::No => return (guard, Outcome::TimedOut),
                Wait::Until(deadline) if Instant::now() >= deadline => {
                    return (guard, Outcome::TimedOut)
                }
                _ => {}
            }
            if peer::gone() {
                return (guard, Outcome::PeerGone);
            }
            guard.waiting[which] += 1;
            guard = peer::wait(cv, guard, deadline);
            guard.waiting[which] -= 1;
            waited = true;
        }
    }

    /// Wakes one waiter of condition `which`, if there is one.
    fn notify_one(&self, state: &State, which: usize) {
        if state.waiting[which] > 0 {
            self.condvar(which).notify_one();
        }
    }

    fn put_value(&self, item: PyValue, wait: Wait) -> bool {
        let max = self.0.maxsize;
        let guard = self.lock();
        let (mut guard, outcome) =
            self.wait_while(guard, NOT_FULL, wait, |s| max > 0 && s.items.len() >= max);
        let ok = outcome == Outcome::Ready;
        if ok {
            guard.items.push_back(item);
            guard.unfinished += 1;
            self.notify_one(&guard, NOT_EMPTY);
        }
        ok
    }

    fn get_value(&self, wait: Wait) -> Option<PyValue> {
        let guard = self.lock();
        let (mut guard, outcome) = self.wait_while(guard, NOT_EMPTY, wait, |s| s.items.is_empty());
        let item = match outcome {
            Outcome::Ready => guard.items.pop_front(),
            Outcome::TimedOut | Outcome::PeerGone => None,
        };
        if item.is_some() {
            self.notify_one(&guard, NOT_FULL);
        }
        item
    }

    fn typed_put<T: Serialize>(&self, item: &T, wait: Wait) -> Result<(), Error> {
        let value = pickle::to_value(item)?;
        if self.put_value(value, wait) {
            Ok(())
        } else {
            Err(Error::Full)
        }
    }

    fn typed_get<T: DeserializeOwned>(&self, wait: Wait) -> Result<T, Error> {
        let value = self.get_value(wait).ok_or(Error::Empty)?;
        Ok(pickle::from_value(value)?)
    }

    /// Puts `item`, waiting for room as long as it takes (Python's `put(item)`).
    ///
    /// # Errors
    ///
    /// [`Error::Pickle`] when `item` does not serialize.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = multiproc::managers::ServedQueue::new(0);
    /// q.put(&7).unwrap();
    /// ```
    pub fn put<T: Serialize>(&self, item: &T) -> Result<(), Error> {
        self.typed_put(item, Wait::Forever)
    }

    /// Puts `item` if there is room now (`put_nowait`).
    ///
    /// # Errors
    ///
    /// [`Error::Full`]; [`Error::Pickle`] when `item` does not serialize.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = multiproc::managers::ServedQueue::new(1);
    /// q.try_put(&1).unwrap();
    /// assert!(matches!(q.try_put(&2), Err(multiproc::Error::Full)));
    /// ```
    pub fn try_put<T: Serialize>(&self, item: &T) -> Result<(), Error> {
        self.typed_put(item, Wait::No)
    }

    /// Puts `item`, waiting at most `timeout` for room (`put(item, timeout=t)`).
    ///
    /// # Errors
    ///
    /// [`Error::Full`] when no room came in time; [`Error::Pickle`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let q = multiproc::managers::ServedQueue::new(1);
    /// q.put(&1).unwrap();
    /// assert!(q.put_timeout(&2, Duration::from_millis(10)).is_err());
    /// ```
    pub fn put_timeout<T: Serialize>(&self, item: &T, timeout: Duration) -> Result<(), Error> {
        self.typed_put(item, Wait::timeout(timeout))
    }

    /// Takes the oldest item, waiting as long as it takes (`get()`).
    ///
    /// # Errors
    ///
    /// [`Error::Pickle`] when the item does not map to `T` (it is then lost).
    ///
    /// # Examples
    ///
    /// ```
    /// let q = multiproc::managers::ServedQueue::new(0);
    /// q.put(&"x").unwrap();
    /// assert_eq!(q.get::<String>().unwrap(), "x");
    /// ```
    pub fn get<T: DeserializeOwned>(&self) -> Result<T, Error> {
        self.typed_get(Wait::Forever)
    }

    /// Takes the oldest item if there is one (`get_nowait`).
    ///
    /// # Errors
    ///
    /// [`Error::Empty`]; [`Error::Pickle`].
    ///
    /// # Examples
    ///
    /// ```
    /// let q = multiproc::managers::ServedQueue::new(0);
    /// assert!(matches!(q.try_get::<u8>(), Err(multiproc::Error::Empty)));
    /// ```
    pub fn try_get<T: DeserializeOwned>(&self) -> Result<T, Error> {
        self.typed_get(Wait::No)
    }

    /// Takes the oldest item, waiting at most `timeout` (`get(timeout=t)`).
    ///
    /// # Errors
    ///
    /// [`Error::Empty`] when nothing came in time; [`Error::Pickle`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let q = multiproc::managers::ServedQueue::new(0);
    /// assert!(q.get_timeout::<u8>(Duration::from_millis(10)).is_err());
    /// ```
    pub fn get_timeout<T: DeserializeOwned>(&self, timeout: Duration) -> Result<T, Error> {
        self.typed_get(Wait::timeout(timeout))
    }

    /// The number of items (`qsize()`).
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(multiproc::managers::ServedQueue::new(0).qsize(), 0);
    /// ```
    pub fn qsize(&self) -> usize {
        self.lock().items.len()
    }

    /// Whether the queue holds nothing (`empty()`).
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(multiproc::managers::ServedQueue::new(0).is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.lock().items.is_empty()
    }

    /// Whether a bounded queue is at its `maxsize` (`full()`).
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(!multiproc::managers::ServedQueue::new(0).is_full());
    /// ```
    pub fn is_full(&self) -> bool {
        self.0.maxsize > 0 && self.lock().items.len() >= self.0.maxsize
    }

    /// Marks one item taken earlier as processed (`task_done()`).
    ///
    /// # Errors
    ///
    /// [`Error::TaskDoneTooOften`] when called more often than items were put (Python's
    /// `ValueError`).
    ///
    /// # Examples
    ///
    /// ```
    /// let q = multiproc::managers::ServedQueue::new(0);
    /// assert!(matches!(q.task_done(), Err(multiproc::Error::TaskDoneTooOften)));
    /// ```
    pub fn task_done(&self) -> Result<(), Error> {
        self.task_done_inner().map_err(|_| Error::TaskDoneTooOften)
    }

    fn task_done_inner(&self) -> Result<(), PyException> {
        let mut guard = self.lock();
        if guard.unfinished == 0 {
            return Err(PyException::value_error(
                "task_done() called too many times",
            ));
        }
        guard.unfinished -= 1;
        if guard.unfinished == 0 && guard.waiting[ALL_DONE] > 0 {
            self.0.all_done.notify_all();
        }
        Ok(())
    }

    fn join_wait(&self, wait: Wait) -> bool {
        let guard = self.lock();
        self.wait_while(guard, ALL_DONE, wait, |s| s.unfinished > 0)
            .1
            == Outcome::Ready
    }

    /// Waits until every item put has been marked done (`join()`).
    ///
    /// # Examples
    ///
    /// ```
    /// let q = multiproc::managers::ServedQueue::new(0);
    /// q.join();
    /// ```
    pub fn join(&self) {
        self.join_wait(Wait::Forever);
    }

    /// As [`join`](Self::join), giving up after `timeout`.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] when items are still unfinished.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let q = multiproc::managers::ServedQueue::new(0);
    /// q.put(&1).unwrap();
    /// assert!(q.join_timeout(Duration::from_millis(10)).is_err());
    /// ```
    pub fn join_timeout(&self, timeout: Duration) -> Result<(), Error> {
        if self.join_wait(Wait::timeout(timeout)) {
            Ok(())
        } else {
            Err(Error::Timeout)
        }
    }
}

/// Python's rules for `block` and `timeout` (`queue.Queue.get`/`put`).
fn wait_for(block: &PyValue, timeout: &PyValue) -> Result<Wait, PyException> {
    if !block.truthy() {
        return Ok(Wait::No);
    }
    let seconds = match timeout {
        PyValue::None => return Ok(Wait::Forever),
        PyValue::Int(i) => *i as f64,
        PyValue::Bool(b) => f64::from(u8::from(*b)),
        PyValue::Float(f) => *f,
        PyValue::BigInt(_) => f64::INFINITY,
        _ => {
            return Err(PyException::type_error(
                "'timeout' must be a number or None",
            ))
        }
    };
    if seconds.is_nan() || seconds < 0.0 {
        return Err(PyException::value_error(
            "'timeout' must be a non-negative number",
        ));
    }
    Ok(Duration::try_from_secs_f64(seconds).map_or(Wait::Forever, Wait::timeout))
}

impl Referent for ServedQueue {
    fn exposed(&self) -> Vec<String> {
        EXPOSED.iter().map(|s| s.to_string()).collect()
    }

    /// An item taken by a `get` whose reply never reached its client goes back to the head of
    /// the queue, where it was: the order of the other items holds. A bounded queue filled
    /// meanwhile holds one item more than its `maxsize` until it is taken.
    fn reply_undelivered(&self, method: &str, result: PyValue) {
        if matches!(method, "get" | "get_nowait") {
            let mut guard = self.lock();
            guard.items.push_front(result);
            self.notify_one(&guard, NOT_EMPTY);
        }
    }

    fn call(
        &self,
        method: &str,
        args: Vec<PyValue>,
        kwargs: Vec<(String, PyValue)>,
    ) -> Result<PyValue, PyException> {
        let block_timeout = || {
            [
                ("block", Some(PyValue::Bool(true))),
                ("timeout", Some(PyValue::None)),
            ]
        };
        // The commonest calls, `put(item)` and `get()`, need no argument binding.
        match (method, args.len(), kwargs.is_empty()) {
            ("put", 1, true) => {
                let item = args.into_iter().next().unwrap_or(PyValue::None);
                return if self.put_value(item, Wait::Forever) {
                    Ok(PyValue::None)
                } else {
                    Err(PyException::full())
                };
            }
            ("get", 0, true) => {
                return self.get_value(Wait::Forever).ok_or_else(PyException::empty);
            }
            _ => {}
        }
        match method {
            "put" => {
                let [item, block, timeout] = bound::<3>(bind_arguments(
                    "put",
                    args,
                    kwargs,
                    &[
                        ("item", None),
                        ("block", Some(PyValue::Bool(true))),
                        ("timeout", Some(PyValue::None)),
                    ],
                )?);
                let wait = wait_for(&block, &timeout)?;
                if self.put_value(item, wait) {
                    Ok(PyValue::None)
                } else {
                    Err(PyException::full())
                }
            }
            "put_nowait" => {
                let [item] = bound::<1>(bind_arguments(
                    "put_nowait",
                    args,
                    kwargs,
                    &[("item", None)],
                )?);
                if self.put_value(item, Wait::No) {
                    Ok(PyValue::None)
                } else {
                    Err(PyException::full())
                }
            }
            "get" => {
                let [block, timeout] =
                    bound::<2>(bind_arguments("get", args, kwargs, &block_timeout())?);
                let wait = wait_for(&block, &timeout)?;
                self.get_value(wait).ok_or_else(PyException::empty)
            }
            "get_nowait" => {
                no_args("get_nowait", args, kwargs)?;
                self.get_value(Wait::No).ok_or_else(PyException::empty)
            }
            "qsize" => {
                no_args("qsize", args, kwargs)?;
                Ok(PyValue::Int(self.qsize() as i64))
            }
            "empty" => {
                no_args("empty", args, kwargs)?;
                Ok(PyValue::Bool(self.is_empty()))
            }
            "full" => {
                no_args("full", args, kwargs)?;
                Ok(PyValue::Bool(self.is_full()))
            }
            "task_done" => {
                no_args("task_done", args, kwargs)?;
                self.task_done_inner().map(|()| PyValue::None)
            }
            "join" => {
                no_args("join", args, kwargs)?;
                self.join_wait(Wait::Forever);
                Ok(PyValue::None)
            }
            _ => Err(PyException::new(
                "builtins",
                "AttributeError",
                &format!("'Queue' object has no attribute '{method}'"),
            )),
        }
    }
}
