//! [`Queue`] and [`JoinableQueue`] (CPython's `multiprocessing.Queue` and `JoinableQueue`): the
//! public queues built on the shared ring of `ring.rs`, many producer and consumer processes,
//! unbounded (a feeder thread, `feeder.rs`, holds what does not fit) or bounded; `put`/`get`
//! with their `try_` and `_timeout` forms, `JoinableQueue`'s `task_done`/`join`, and how a
//! queue travels to another process as a handle.

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::feeder::Handle;
use super::ring::{Encoded, Ring, Src, Taken};
use crate::sys::OnSignal;
use crate::Error;

/// A first-in, first-out queue shared by any number of producer and consumer processes
/// (CPython's `multiprocessing.Queue`), unbounded or bounded.
///
/// Items are pickled with serde-pickle; handles inside them (pipe ends, queues, shared values)
/// travel with them. Pass the queue to children as (part of) the arguments of
/// [`Process::spawn`](crate::Process::spawn), under any start method, or clone it with
/// [`try_clone`](Self::try_clone).
///
/// # Guarantees
/// - Every item is delivered exactly once, whole, whatever its size; the items one producer
///   puts come out in the order it put them.
/// - A consumer killed at any moment loses at most the item it was taking; a producer killed
///   mid-`put` puts nothing; neither leaves anyone blocked (the queue's lock is taken over from
///   a dead holder, see `RobustLock`).
/// - On an unbounded queue `put` never waits for consumers: items beyond the shared ring's
///   4 MiB wait in this process, and a feeder thread moves them in as room appears, as
///   CPython's does. Dropping the last handle in a process waits for that thread to finish
///   (CPython's `join_thread` at exit), unless [`cancel_join_thread`](Self::cancel_join_thread)
///   was called.
/// - Unlike CPython, `put` pickles before it returns, so a value that cannot be pickled is an
///   [`Error::Serialize`] for the caller and the queue is untouched (no feeder error hook is
///   needed).
///
/// # How it works
/// Items live in a ring in shared memory (a memfd mapped by every holder), guarded by a lock
/// that a waiter takes over from a dead owner; the ring's state changes by one 8-byte store per
/// put or get, after the bytes are copied, so a death never leaves half an item in it. A
/// consumer that finds it empty spins for a few microseconds, then sleeps on a futex that
/// producers wake. Items that carry OS handles, or whose pickle exceeds 2 MiB, travel as
/// records on a `SOCK_SEQPACKET` socket (large ones in a memfd), with a marker in the ring
/// keeping their place. Taking an item is a lock, a copy and an unlock, with no system call
/// while items are waiting: several items per system call in effect, without a consumer ever
/// holding items another consumer could have had.
///
/// Why not ipc-channel (DESIGN §9): its receiver has one owner, a receiver killed in the middle
/// of a multi-packet message leaves the sender blocked for ever, its sends block after a few
/// hundred unread messages, and it has no capacity or timeouts. The ring provides all four.
///
/// # Examples
///
/// ```
/// use multiproc::{Process, Queue};
///
/// // Squares numbers until it reads `None`.
/// fn squarer(args: (Queue<Option<u64>>, Queue<u64>)) {
///     let (tasks, results) = args;
///     while let Some(n) = tasks.get().unwrap() {
///         results.put(&(n * n)).unwrap();
///     }
/// }
///
/// let tasks = Queue::new().unwrap();
/// let results = Queue::new().unwrap();
/// let workers: Vec<_> = (0..2)
///     .map(|_| {
///         let args = (tasks.try_clone().unwrap(), results.try_clone().unwrap());
///         Process::spawn(squarer, args).unwrap()
///     })
///     .collect();
/// for n in 1..=10 {
///     tasks.put(&Some(n)).unwrap();
/// }
/// for _ in &workers {
///     tasks.put(&None).unwrap();
/// }
/// let mut squares: Vec<u64> = (0..10).map(|_| results.get().unwrap()).collect();
/// squares.sort();
/// assert_eq!(squares, [1, 4, 9, 16, 25, 36, 49, 64, 81, 100]);
/// for mut w in workers {
///     w.join().unwrap();
/// }
/// ```
pub struct Queue<T> {
    handle: Arc<Handle>,
    closed: bool,
    _items: PhantomData<fn(T) -> T>,
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ring = &self.handle.ring;
        f.debug_struct("Queue")
            .field("maxsize", &ring.maxsize())
            .field("in_shared_memory", &ring.count())
            .field("closed", &self.closed)
            .finish()
    }
}

/// Pickles at least this long are written straight into the ring (after measuring them).
const DIRECT_MIN: usize = 64 * 1024;

/// Buffers kept for the next item are dropped above this size.
pub(super) const KEEP_BUFFER_MAX: usize = 4 << 20;

/// Keeps an item's pickling buffer for the next `put` on this thread.
fn recycle(encoded: Encoded) {
    if let Some(mut bytes) = encoded.into_buffer() {
        if bytes.capacity() <= KEEP_BUFFER_MAX {
            bytes.clear();
            PUT_BUF.set(bytes);
        }
    }
}

thread_local! {
    /// A producer's buffer to pickle into: reused, so that an item costs no allocation and no
    /// page faults.
    static PUT_BUF: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };

    /// A consumer's buffer for the pickle it copies out of the ring: reused, so a small item
    /// costs no allocation.
    static TAKE_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// A new, unbounded queue.
    ///
    /// # Errors
    /// [`Error::Os`] if the OS refuses the shared memory or the socket pair.
    pub fn new() -> Result<Queue<T>, Error> {
        Queue::with_maxsize(0)
    }

    /// A new queue holding at most `maxsize` items: `put` waits while it is full.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `maxsize` is 0 or above `u32::MAX`; as [`new`](Self::new).
    pub fn bounded(maxsize: usize) -> Result<Queue<T>, Error> {
        match u32::try_from(maxsize) {
            Ok(n) if n > 0 => Queue::with_maxsize(n),
            _ => Err(Error::InvalidArgument(format!(
                "a bounded queue holds 1 to {} items, not {maxsize}",
                u32::MAX
            ))),
        }
    }

    fn with_maxsize(maxsize: u32) -> Result<Queue<T>, Error> {
        Ok(Queue::from_ring(Ring::new(maxsize)?))
    }

    fn from_ring(ring: Ring) -> Queue<T> {
        Queue {
            handle: Arc::new(Handle::new(ring)),
            closed: false,
            _items: PhantomData,
        }
    }

    /// Another handle on the same queue, sharing this one's feeder thread.
    ///
    /// # Errors
    /// [`Error::Closed`] after [`close`](Self::close).
    pub fn try_clone(&self) -> Result<Queue<T>, Error> {
        self.check_open()?;
        Ok(Queue {
            handle: Arc::clone(&self.handle),
            closed: false,
            _items: PhantomData,
        })
    }

    fn check_open(&self) -> Result<&Handle, Error> {
        if self.closed {
            Err(Error::Closed)
        } else {
            Ok(&self.handle)
        }
    }

    /// The most items the queue holds, `None` if unbounded.
    pub fn maxsize(&self) -> Option<usize> {
        match self.handle.ring.maxsize() {
            0 => None,
            n => Some(n as usize),
        }
    }

    /// Puts `item` at the back of the queue. An unbounded queue never waits; a bounded one
    /// waits while it is full.
    ///
    /// # Errors
    /// [`Error::Serialize`] if `item` cannot be pickled (nothing is put); [`Error::Closed`]
    /// after [`close`](Self::close); [`Error::Os`] if a large item's memfd cannot be made;
    /// [`Error::Interrupted`] if [`interrupt_blocked_calls`](crate::interrupt_blocked_calls) is
    /// called while a bounded queue waits for room (nothing is put).
    pub fn put(&self, item: &T) -> Result<(), Error> {
        self.put_until(item, None)
    }

    /// Like [`put`](Self::put), but waits at most `timeout` for room.
    ///
    /// # Errors
    /// [`Error::Full`] if the queue stayed full; as `put`.
    pub fn put_timeout(&self, item: &T, timeout: Duration) -> Result<(), Error> {
        self.put_until(item, Instant::now().checked_add(timeout))
    }

    /// Puts `item` only if there is room now (CPython's `put_nowait`).
    ///
    /// # Errors
    /// [`Error::Full`] if the queue is full; as `put`.
    pub fn try_put(&self, item: &T) -> Result<(), Error> {
        self.put_until(item, Some(Instant::now()))
    }

    fn put_until(&self, item: &T, deadline: Option<Instant>) -> Result<(), Error> {
        let handle = self.check_open()?;
        if handle.ring.is_shut_down() {
            return Err(Error::ShutDown);
        }
        // After a large item, expect another: measure it first and pickle it straight into the
        // ring, saving a copy (and the allocation) of the whole pickle.
        if handle.last_len.load(Ordering::Relaxed) >= DIRECT_MIN {
            let (len, handles) = crate::codec::measure(item)?;
            handle.last_len.store(len, Ordering::Relaxed);
            if !handles && len >= DIRECT_MIN && Src::direct_fits(len) {
                let mut write = |bytes: &mut [u8]| crate::codec::encode_exact(item, bytes);
                if handle.place(&mut Src::Direct(len, &mut write), deadline)? {
                    return Ok(());
                }
            }
        }
        let mut buffer = PUT_BUF.take();
        if buffer.capacity() == 0 {
            if let Some(spare) = handle.local.state().spare.pop() {
                buffer = spare;
            }
        }
        let encoded = Encoded::new(item, buffer)?;
        if let Encoded::Ring(bytes) = &encoded {
            handle.last_len.store(bytes.len(), Ordering::Relaxed);
        }
        match handle.place(&mut Src::Encoded(&encoded), deadline) {
            Ok(false) => handle.defer(&mut handle.local.state(), encoded),
            placed => {
                recycle(encoded);
                placed.map(drop)
            }
        }
    }

    /// Takes the item at the front of the queue, waiting as long as it takes.
    ///
    /// # Errors
    /// [`Error::Deserialize`] if the item is not a `T` (it is consumed); [`Error::Closed`]
    /// after [`close`](Self::close); [`Error::Interrupted`] if
    /// [`interrupt_blocked_calls`](crate::interrupt_blocked_calls) is called while it waits
    /// (nothing is taken: call again to wait on).
    pub fn get(&self) -> Result<T, Error> {
        self.get_until(None)
    }

    /// Like [`get`](Self::get), but waits at most `timeout`.
    ///
    /// # Errors
    /// [`Error::Empty`] if no item came in time; as `get`.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, Error> {
        self.get_until(Instant::now().checked_add(timeout))
    }

    /// Takes an item if one is there now (CPython's `get_nowait`).
    ///
    /// # Errors
    /// [`Error::Empty`] if the queue is empty; as `get`.
    pub fn try_get(&self) -> Result<T, Error> {
        self.get_until(Some(Instant::now()))
    }

    fn get_until(&self, deadline: Option<Instant>) -> Result<T, Error> {
        let ring = &self.check_open()?.ring;
        TAKE_BUF.with(|buf| {
            // A nested `get` (from a `Deserialize` impl, say) gets a buffer of its own.
            let mut own = Vec::new();
            let mut borrowed = buf.try_borrow_mut();
            let buf = match borrowed.as_mut() {
                Ok(b) => &mut **b,
                Err(_) => &mut own,
            };
            buf.clear();
            let mut decoded = None;
            let mut in_place = |bytes: &[u8]| decoded = Some(crate::codec::decode(bytes));
            let taken = ring
                .take_until(buf, deadline, OnSignal::caller(), &mut in_place)?
                .ok_or(Error::Empty)?;
            let item = match (taken, decoded) {
                (Taken::InPlace, Some(item)) => item,
                (taken, _) => taken.decode(buf),
            };
            if buf.capacity() > KEEP_BUFFER_MAX {
                *buf = Vec::new();
            }
            item
        })
    }

    /// The number of items in the queue: those in shared memory plus those this process's
    /// feeder thread still holds. Approximate, as in CPython: other processes may put or take
    /// items the next moment, and items in other processes' feeders are not counted.
    ///
    /// # Errors
    /// [`Error::Closed`] after [`close`](Self::close).
    pub fn qsize(&self) -> Result<usize, Error> {
        let handle = self.check_open()?;
        let state = handle.local.state();
        Ok(handle.ring.count() as usize + state.pending.len() + usize::from(state.in_flight))
    }

    /// Whether a `get` would find nothing right now.
    ///
    /// # Errors
    /// [`Error::Closed`] after [`close`](Self::close).
    pub fn is_empty(&self) -> Result<bool, Error> {
        Ok(self.check_open()?.ring.count() == 0)
    }

    /// Whether a bounded queue holds `maxsize` items right now (never for an unbounded one).
    ///
    /// # Errors
    /// [`Error::Closed`] after [`close`](Self::close).
    pub fn is_full(&self) -> Result<bool, Error> {
        let ring = &self.check_open()?.ring;
        Ok(ring.maxsize() != 0 && ring.count() >= ring.maxsize())
    }

    /// Shuts the queue down for every process (CPython 3.13's `shutdown()`): later puts
    /// return [`Error::ShutDown`]; gets take what is left, then return `ShutDown`; blocked
    /// callers wake up to see it. Items this process's feeder still holds are dropped.
    pub fn shutdown(&self) {
        self.handle.ring.shut_down(false);
    }

    /// Like [`shutdown`](Self::shutdown), but also discards the items in the queue (CPython's
    /// `shutdown(immediate=True)`); on a [`JoinableQueue`] each counts as done.
    pub fn shutdown_immediate(&self) {
        self.handle.ring.shut_down(true);
    }

    /// Whether the queue was shut down, by any process.
    pub fn is_shut_down(&self) -> bool {
        self.handle.ring.is_shut_down()
    }

    /// Closes this handle: later calls on it return [`Error::Closed`]. Items it put are still
    /// delivered (the feeder thread keeps going), and other handles keep working.
    pub fn close(&mut self) {
        self.closed = true;
    }

    /// Waits until this process's feeder thread has moved every item it holds into the
    /// queue (CPython's `join_thread`).
    pub fn join_thread(&self) {
        self.handle.flush();
    }

    /// Lets this process drop its last handle without waiting for the feeder thread; items it
    /// still holds are lost (CPython's `cancel_join_thread`).
    pub fn cancel_join_thread(&self) {
        let mut state = self.handle.local.state();
        state.cancelled = true;
        self.handle.local.changed.notify_all();
    }

    fn ring(&self) -> &Ring {
        &self.handle.ring
    }
}

impl<T> Serialize for Queue<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.closed {
            return Err(serde::ser::Error::custom("cannot send a closed Queue"));
        }
        self.handle.ring.serialize(serializer)
    }
}

impl<'de, T: Serialize + DeserializeOwned> Deserialize<'de> for Queue<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ring::deserialize(deserializer).map(Queue::from_ring)
    }
}

/// A [`Queue`] that counts unfinished tasks (CPython's `multiprocessing.JoinableQueue`): every
/// `put` adds one, every [`task_done`](Self::task_done) removes one, and
/// [`join`](Self::join) waits until none is left. The other calls are [`Queue`]'s.
///
/// A consumer killed between `get` and `task_done` leaves its task unfinished for ever, as in
/// CPython; use [`join_timeout`](Self::join_timeout) where that can happen.
///
/// # Examples
///
/// ```
/// use multiproc::{JoinableQueue, Process};
///
/// fn work(q: JoinableQueue<u32>) {
///     while let Ok(n) = q.get() {
///         let _ = n * 2;
///         q.task_done().unwrap();
///     }
/// }
///
/// let q = JoinableQueue::new().unwrap();
/// let mut worker = Process::spawn(work, q.try_clone().unwrap()).unwrap();
/// for n in 0..10 {
///     q.put(&n).unwrap();
/// }
/// q.join(); // all ten are done
/// worker.terminate().unwrap();
/// let _ = worker.join();
/// ```
pub struct JoinableQueue<T> {
    queue: Queue<T>,
}

impl<T> fmt::Debug for JoinableQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinableQueue")
            .field("queue", &self.queue)
            .finish()
    }
}

impl<T: Serialize + DeserializeOwned> JoinableQueue<T> {
    /// A new, unbounded joinable queue.
    ///
    /// # Errors
    /// As [`Queue::new`].
    pub fn new() -> Result<JoinableQueue<T>, Error> {
        Ok(JoinableQueue {
            queue: Queue::new()?,
        })
    }

    /// A new joinable queue holding at most `maxsize` items.
    ///
    /// # Errors
    /// As [`Queue::bounded`].
    pub fn bounded(maxsize: usize) -> Result<JoinableQueue<T>, Error> {
        Ok(JoinableQueue {
            queue: Queue::bounded(maxsize)?,
        })
    }

    /// Another handle on the same queue.
    ///
    /// # Errors
    /// As [`Queue::try_clone`].
    pub fn try_clone(&self) -> Result<JoinableQueue<T>, Error> {
        Ok(JoinableQueue {
            queue: self.queue.try_clone()?,
        })
    }

    /// Puts `item` and counts one more unfinished task.
    ///
    /// # Errors
    /// As [`Queue::put`]; on error the task is not counted.
    pub fn put(&self, item: &T) -> Result<(), Error> {
        self.counted(|q| q.put(item))
    }

    /// As [`Queue::put_timeout`], counting a task.
    ///
    /// # Errors
    /// As [`Queue::put_timeout`]; on error the task is not counted.
    pub fn put_timeout(&self, item: &T, timeout: Duration) -> Result<(), Error> {
        self.counted(|q| q.put_timeout(item, timeout))
    }

    /// As [`Queue::try_put`], counting a task.
    ///
    /// # Errors
    /// As [`Queue::try_put`]; on error the task is not counted.
    pub fn try_put(&self, item: &T) -> Result<(), Error> {
        self.counted(|q| q.try_put(item))
    }

    fn counted(&self, put: impl FnOnce(&Queue<T>) -> Result<(), Error>) -> Result<(), Error> {
        self.queue.check_open()?;
        // Counted before the item is visible, so a `join` can never see it done early.
        self.queue.ring().task_added();
        put(&self.queue).inspect_err(|_| self.queue.ring().task_withdrawn())
    }

    /// As [`Queue::get`].
    ///
    /// # Errors
    /// As [`Queue::get`].
    pub fn get(&self) -> Result<T, Error> {
        self.queue.get()
    }

    /// As [`Queue::get_timeout`].
    ///
    /// # Errors
    /// As [`Queue::get_timeout`].
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, Error> {
        self.queue.get_timeout(timeout)
    }

    /// As [`Queue::try_get`].
    ///
    /// # Errors
    /// As [`Queue::try_get`].
    pub fn try_get(&self) -> Result<T, Error> {
        self.queue.try_get()
    }

    /// As [`Queue::qsize`].
    ///
    /// # Errors
    /// As [`Queue::qsize`].
    pub fn qsize(&self) -> Result<usize, Error> {
        self.queue.qsize()
    }

    /// As [`Queue::is_empty`].
    ///
    /// # Errors
    /// As [`Queue::is_empty`].
    pub fn is_empty(&self) -> Result<bool, Error> {
        self.queue.is_empty()
    }

    /// As [`Queue::is_full`].
    ///
    /// # Errors
    /// As [`Queue::is_full`].
    pub fn is_full(&self) -> Result<bool, Error> {
        self.queue.is_full()
    }

    /// As [`Queue::maxsize`].
    pub fn maxsize(&self) -> Option<usize> {
        self.queue.maxsize()
    }

    /// As [`Queue::shutdown`].
    pub fn shutdown(&self) {
        self.queue.shutdown();
    }

    /// As [`Queue::shutdown_immediate`]: each discarded item's task counts as done.
    pub fn shutdown_immediate(&self) {
        self.queue.shutdown_immediate();
    }

    /// As [`Queue::is_shut_down`].
    pub fn is_shut_down(&self) -> bool {
        self.queue.is_shut_down()
    }

    /// As [`Queue::close`].
    pub fn close(&mut self) {
        self.queue.close();
    }

    /// As [`Queue::join_thread`].
    pub fn join_thread(&self) {
        self.queue.join_thread();
    }

    /// As [`Queue::cancel_join_thread`].
    pub fn cancel_join_thread(&self) {
        self.queue.cancel_join_thread();
    }

    /// Marks one task taken from the queue as done.
    ///
    /// # Errors
    /// [`Error::TaskDoneTooOften`] if no task is unfinished (the count stays at 0);
    /// [`Error::Closed`] after `close`.
    pub fn task_done(&self) -> Result<(), Error> {
        self.queue.check_open()?;
        if self.queue.ring().task_done() {
            Ok(())
        } else {
            Err(Error::TaskDoneTooOften)
        }
    }

    /// The number of tasks put and not yet marked done, by every process.
    pub fn unfinished_tasks(&self) -> usize {
        self.queue.ring().unfinished() as usize
    }

    /// Waits until every task put so far has been marked done.
    pub fn join(&self) {
        // `join` returns nothing, so it cannot report an interruption: it waits on (use
        // `join_timeout` to be interruptible).
        let _ = self.queue.ring().join_until(None, OnSignal::Retry);
    }

    /// Like [`join`](Self::join), but waits at most `timeout`.
    ///
    /// # Errors
    /// [`Error::Timeout`] if tasks were still unfinished when it passed;
    /// [`Error::Interrupted`] as [`Queue::get`].
    pub fn join_timeout(&self, timeout: Duration) -> Result<(), Error> {
        let deadline = Instant::now().checked_add(timeout);
        if self.queue.ring().join_until(deadline, OnSignal::caller())? {
            Ok(())
        } else {
            Err(Error::Timeout)
        }
    }
}

impl<T> Serialize for JoinableQueue<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.queue.serialize(serializer)
    }
}

impl<'de, T: Serialize + DeserializeOwned> Deserialize<'de> for JoinableQueue<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Queue::deserialize(deserializer).map(|queue| JoinableQueue { queue })
    }
}
