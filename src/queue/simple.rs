//! `SimpleQueue`: a queue between any number of processes, like CPython's
//! `multiprocessing.SimpleQueue`.
//!
//! # How it works
//! One `SOCK_SEQPACKET` socket pair carries the items, the same transport as [`Pipe`]: every
//! producer writes to one end and every consumer reads the other. Each item is exactly one
//! record, and the kernel hands a record whole to exactly one reader, so no lock is shared
//! between processes: an item is delivered once, whole, to one consumer, and a consumer killed
//! at any moment takes at most the item it was reading with it; the stream stays sound for the
//! others and no producer is left blocked by it. An item too large for one record (64 KiB)
//! travels in a memfd attached to its record, so any size fits. Items from one producer
//! arrive in the order it put them.
//!
//! Why not ipc-channel (DESIGN §9): a receiver there has one owner, a receiver killed in the
//! middle of a multi-packet message leaves the sender blocked for ever, and pickling its
//! endpoints yields garbage. Records and memfds give the many-to-many semantics directly.
//!
//! Like CPython's `SimpleQueue`, `put` writes directly: it waits when the socket's buffer is
//! full (a few hundred unread small items) until a consumer reads. [`Queue`](crate::Queue)
//! adds a feeder (so `put` never waits), a capacity, `qsize`, and more speed on small items.
//!
//! [`Pipe`]: crate::Pipe

use std::fmt;
use std::marker::PhantomData;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec::{self, FdTable};
use crate::connection::{Pipe, RecvEnd, SendEnd, RECORD_MAX};
use crate::sys;
use crate::Error;

/// Record tags: the item's pickle follows, or it is in the memfd attached last.
const INLINE: u8 = 0;
const IN_MEMFD: u8 = 1;

/// The largest pickle sent inline: one record holds the length header, the tag and the bytes.
const INLINE_MAX: usize = RECORD_MAX - 4 - 1;

/// A queue of `T` shared by any number of producer and consumer processes (CPython's
/// `multiprocessing.SimpleQueue`). Clone it with [`try_clone`](Self::try_clone), or pass it
/// to a child as (part of) the arguments of [`Process::spawn`](crate::Process::spawn) under
/// any start method.
///
/// # Examples
///
/// ```
/// use multiproc::{Process, SimpleQueue};
///
/// fn produce(q: SimpleQueue<String>) {
///     for word in ["a", "b", "c"] {
///         q.put(&word.to_string()).unwrap();
///     }
/// }
///
/// let q = SimpleQueue::new().unwrap();
/// let mut child = Process::spawn(produce, q.try_clone().unwrap()).unwrap();
/// let got: Vec<String> = (0..3).map(|_| q.get().unwrap()).collect();
/// assert_eq!(got, ["a", "b", "c"]);
/// child.join().unwrap();
/// ```
#[derive(Serialize, Deserialize)]
pub struct SimpleQueue<T> {
    reader: RecvEnd,
    writer: SendEnd,
    #[serde(skip)]
    _items: PhantomData<fn(T) -> T>,
}

impl<T> fmt::Debug for SimpleQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimpleQueue")
            .field("reader", &self.reader)
            .field("writer", &self.writer)
            .finish()
    }
}

impl<T: Serialize + DeserializeOwned> SimpleQueue<T> {
    /// A new, empty queue.
    ///
    /// # Errors
    /// [`Error::Os`] if the OS refuses the socket pair.
    pub fn new() -> Result<SimpleQueue<T>, Error> {
        let (reader, writer) = Pipe::one_way()?;
        Ok(SimpleQueue {
            reader,
            writer,
            _items: PhantomData,
        })
    }

    /// Another handle on the same queue (new descriptors for the same sockets).
    ///
    /// # Errors
    /// [`Error::Os`] if the descriptors cannot be duplicated.
    pub fn try_clone(&self) -> Result<SimpleQueue<T>, Error> {
        Ok(SimpleQueue {
            reader: self.reader.try_clone()?,
            writer: self.writer.try_clone()?,
            _items: PhantomData,
        })
    }

    /// Puts `item` at the back of the queue (CPython's `put`). Handles inside it travel
    /// with it. Waits while the queue's buffer is full.
    ///
    /// # Errors
    /// [`Error::Serialize`] (nothing is sent); [`Error::Os`] if a large item's memfd cannot be
    /// made.
    pub fn put(&self, item: &T) -> Result<(), Error> {
        let mut fds: Vec<OwnedFd> = Vec::new();
        let bytes = codec::encode_in(item, &mut fds)?;
        if bytes.len() <= INLINE_MAX {
            return self.writer.send_parts(&[&[INLINE], &bytes], &fds);
        }
        let memfd = sys::memfd_with(c"multiproc-queue-item", &bytes).map_err(Error::os("memfd"))?;
        drop(bytes);
        fds.push(memfd);
        self.writer.send_parts(&[&[IN_MEMFD]], &fds)
    }

    /// Takes the item at the front of the queue, waiting as long as it takes (CPython's
    /// `get`).
    ///
    /// # Errors
    /// [`Error::Deserialize`] if the item is not a `T`; [`Error::Disconnected`] cannot happen
    /// while this handle holds the writing end; [`Error::Interrupted`] as
    /// [`Queue::get`](crate::Queue::get).
    pub fn get(&self) -> Result<T, Error> {
        self.get_until(None)
    }

    /// Like [`get`](Self::get), but waits at most `timeout`.
    ///
    /// # Errors
    /// [`Error::Empty`] when no item came in time (CPython's `queue.Empty`); as `get`.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, Error> {
        self.get_until(Instant::now().checked_add(timeout))
    }

    /// Takes an item if one is there now.
    ///
    /// # Errors
    /// [`Error::Empty`] if the queue is empty; as `get`.
    pub fn try_get(&self) -> Result<T, Error> {
        self.get_until(Some(Instant::now()))
    }

    /// Whether the queue is empty right now (CPython's `empty`); another process may put or
    /// take an item the next moment.
    ///
    /// # Errors
    /// [`Error::Os`] if the socket cannot be polled.
    pub fn is_empty(&self) -> Result<bool, Error> {
        Ok(!self.reader.poll(Duration::ZERO)?)
    }

    /// Closes this handle's ends (CPython's `close`); other handles, in this process or
    /// others, keep working. Later calls on this handle return [`Error::Closed`].
    pub fn close(&mut self) {
        self.reader.close();
        self.writer.close();
    }

    fn get_until(&self, deadline: Option<Instant>) -> Result<T, Error> {
        let (frame, mut fds) = match self.reader.recv_raw_until(deadline) {
            Err(Error::Timeout) => return Err(Error::Empty),
            other => other?,
        };
        let malformed = || Error::Malformed {
            what: "queue record",
        };
        match frame.first() {
            Some(&INLINE) => codec::decode_in(&frame[1..], &mut FdTable::new(fds)),
            Some(&IN_MEMFD) => {
                let memfd = fds.pop().ok_or_else(malformed)?;
                let mut bytes = Vec::new();
                sys::read_whole_file(memfd.as_fd(), &mut bytes).map_err(Error::os("read memfd"))?;
                codec::decode_in(&bytes, &mut FdTable::new(fds))
            }
            _ => Err(malformed()),
        }
    }
}
