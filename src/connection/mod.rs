//! Connections: message-framed links between processes, as Python's
//! `multiprocessing.connection` has them — [`Pipe`] and [`Connection`] (this file) between
//! related processes, [`Listener`], [`Client`] and [`TcpConnection`] over TCP between any two
//! programs, Rust or CPython (`listener.rs`, with the handshake of `auth.rs`). Both kinds frame
//! messages as CPython does (`frame.rs`).
//!
//! ```
//! use multiproc::connection::{Client, Listener, Pipe};
//!
//! let (a, b) = Pipe::new().unwrap();
//! a.send(&"over a pipe").unwrap();
//! assert_eq!(b.recv::<String>().unwrap(), "over a pipe");
//!
//! let listener = Listener::bind("127.0.0.1:0", Some(b"key")).unwrap();
//! let client = Client::connect(listener.address(), Some(b"key"));
//! # drop((listener, client));
//! ```
//!
//! # The wire
//! A connection is one end of an `AF_UNIX`, `SOCK_SEQPACKET` socket pair. Each message is
//! framed as CPython frames it (`multiprocessing/connection.py`, `_send_bytes`): a 4-byte
//! big-endian signed length, or for messages over 2 GiB − 1 the value −1 followed by an 8-byte
//! big-endian length (bpo-17560), then the payload. The header and up to 64 KiB of payload form
//! the first record; a longer payload follows in further records of 64 KiB.
//!
//! Why records and not a byte stream (CPython's duplex `Pipe` is `SOCK_STREAM`): on a stream, a
//! reader must read the length and then the payload — two system calls per message — because
//! reading ahead could swallow the start of the next message, which may belong to another
//! process that shares this end. A record socket keeps message boundaries in the kernel, so
//! one `recvmsg` reads one small message, and nothing is ever read ahead: ends passed to
//! several processes stay safe to share. Descriptors of handles inside a
//! [`send`](Connection::send) ride on the first record as `SCM_RIGHTS`.
//!
//! Messages are never merged or split, whatever their size, and a zero-length message is a
//! message. Sending and receiving are each serialised by a lock (shared by the `try_clone`s of
//! an end), so one end may be used by several threads of a process at once.
//!
//! # Sharing an end between processes
//! A message of up to 64 KiB − 4 bytes is one record: the kernel delivers it whole to exactly
//! one reader, so several processes may send on, and read from, copies of one end at the same
//! time. A larger message spans several records, and the locks above do not reach into other
//! processes: there, as with CPython's `Connection`, at most one process may send on a shared
//! end at a time, and at most one may read from it at a time (the queues of this crate add the
//! cross-process lock for you).

use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub(crate) mod auth;
pub(crate) mod frame;
mod listener;
pub(crate) mod tcp;

pub use crate::error::WireError;
pub(crate) use listener::connect_authenticated;
pub use listener::{Client, Listener, TcpConnection};

use self::frame::{header, parse_header, Header};
use crate::codec::{self, FdTable};
use crate::error::connection_io;
use crate::sys::{self, OnSignal};
use crate::Error;

/// The largest first record of a message (header and start of the payload): what a receiver
/// must be ready to take before it knows the length. A record must fit in the socket's send
/// buffer whole (Linux's default is 208 KiB). Continuation records may be larger (see
/// `Endpoint::record_max`); a receiver takes them at whatever size they come.
pub(crate) const RECORD_MAX: usize = 64 * 1024;

/// The send buffer asked for on new pipes: larger records, fewer system calls per large
/// message. The kernel caps it at `net.core.wmem_max`.
pub(crate) const SEND_BUFFER: usize = 4 << 20;

thread_local! {
    /// Where the first record of each message lands before its length is known.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Sets up this thread's receive buffer ahead of use: a forkserver does this once, so that
/// each of its children inherits the buffer instead of allocating its own.
pub(crate) fn warm_up() {
    SCRATCH.with(|scratch| scratch.borrow_mut().reserve(RECORD_MAX));
}

/// The length of the message and where its payload starts in the first record.
fn record_header(record: &[u8]) -> Result<(usize, usize), Error> {
    let Header::Complete { len, size } = parse_header(record) else {
        return Err(malformed());
    };
    let len = usize::try_from(len).map_err(|_| Error::OutOfMemory { bytes: len })?;
    Ok((len, size))
}

fn malformed() -> Error {
    Error::Malformed {
        what: "message on the connection",
    }
}

/// One open end: the socket and the locks that keep messages whole.
struct Endpoint {
    fd: OwnedFd,
    /// The size of the continuation records this end sends, from its socket's send buffer.
    record_max: std::sync::OnceLock<usize>,
    /// Shared by every `try_clone` of this end in this process, so that threads using
    /// different clones still write and read whole messages. One allocation for both.
    locks: Arc<Locks>,
}

/// The locks of one end.
#[derive(Default)]
struct Locks {
    /// Held while a message is being written.
    send: Mutex<()>,
    /// Held while a message is being read.
    recv: Mutex<()>,
}

impl Endpoint {
    fn new(fd: OwnedFd) -> Endpoint {
        sys::track_fd(fd.as_raw_fd());
        Endpoint {
            fd,
            record_max: std::sync::OnceLock::new(),
            locks: Arc::new(Locks::default()),
        }
    }

    /// Another descriptor for the same socket, sharing this end's locks.
    fn try_clone(&self) -> Result<Endpoint, Error> {
        let fd = self.fd.try_clone().map_err(Error::os("dup"))?;
        sys::track_fd(fd.as_raw_fd());
        Ok(Endpoint {
            fd,
            record_max: std::sync::OnceLock::new(),
            locks: Arc::clone(&self.locks),
        })
    }

    /// Takes the receive lock, giving up at `deadline` (another thread may be blocked in a
    /// `recv` holding it).
    fn lock_recv(&self, deadline: Option<Instant>) -> Result<MutexGuard<'_, ()>, Error> {
        loop {
            match self.locks.recv.try_lock() {
                Ok(guard) => return Ok(guard),
                Err(TryLockError::Poisoned(e)) => return Ok(e.into_inner()),
                Err(TryLockError::WouldBlock) => match deadline {
                    None => return Ok(self.locks.recv.lock().unwrap_or_else(|e| e.into_inner())),
                    Some(d) if Instant::now() >= d => return Err(Error::Timeout),
                    Some(_) => std::thread::sleep(Duration::from_millis(1)),
                },
            }
        }
    }

    /// Sends one message made of `parts`, with the descriptors of `fds` attached.
    fn send_with_fds(&self, parts: &[&[u8]], fds: &[OwnedFd]) -> Result<(), Error> {
        let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
        self.send_frame(parts, &raw)
    }

    /// Sends one message whose payload is the concatenation of `parts`: the header and the
    /// start of the payload in the first record, the rest in further full records.
    fn send_frame(&self, parts: &[&[u8]], fds: &[RawFd]) -> Result<(), Error> {
        debug_assert!(parts.len() < sys::MAX_PARTS);
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let (header, size) = header(total);
        let header = &header[..size];
        let mut slots: [&[u8]; sys::MAX_PARTS] = [&[]; sys::MAX_PARTS];
        slots[0] = header;
        let first = total.min(RECORD_MAX - header.len());
        let n = sys::window(parts, 0, first, &mut slots[1..]);
        let _guard = self.locks.send.lock().unwrap_or_else(|e| e.into_inner());
        sys::send_all(self.fd.as_fd(), &slots[..=n], fds).map_err(connection_io("sendmsg"))?;
        let mut sent = first;
        let record_max = if sent < total {
            self.record_max()
        } else {
            RECORD_MAX
        };
        while sent < total {
            let chunk = (total - sent).min(record_max);
            let n = sys::window(parts, sent, chunk, &mut slots);
            sys::send_all(self.fd.as_fd(), &slots[..n], &[]).map_err(connection_io("sendmsg"))?;
            sent += chunk;
        }
        Ok(())
    }

    /// Continuation records as large as the send buffer comfortably holds (two in flight), so
    /// that a large message takes few system calls; never below the first record's size.
    fn record_max(&self) -> usize {
        *self.record_max.get_or_init(|| {
            let buffer = sys::send_buffer_size(self.fd.as_fd()).unwrap_or(0);
            (buffer / 2).saturating_sub(1024).clamp(RECORD_MAX, 8 << 20)
        })
    }

    /// Reads one whole message. `deadline` bounds the wait for it to start; `on_signal` says
    /// whether `interrupt_blocked_calls` ends that wait ([`Error::Interrupted`]). Once a message has
    /// started to arrive, its rest is read whatever happens.
    fn recv_frame(
        &self,
        deadline: Option<Instant>,
        on_signal: OnSignal,
    ) -> Result<(Vec<u8>, Vec<OwnedFd>), Error> {
        let _guard = self.lock_recv(deadline)?;
        let mut fds = Vec::new();
        let first = self.read_first_record(deadline, on_signal, &mut fds, |len, first| {
            let mut payload = Vec::new();
            payload
                .try_reserve_exact(len)
                .map_err(|_| Error::OutOfMemory { bytes: len as u64 })?;
            payload.extend_from_slice(first);
            Ok((len, payload))
        });
        let (len, mut payload) = first?;
        self.read_rest_into_vec(&mut payload, len)?;
        Ok((payload, fds))
    }

    /// Reads a message into `buf`; a message longer than `buf` is returned whole in
    /// [`Error::BufferTooShort`].
    fn recv_frame_into(&self, buf: &mut [u8]) -> Result<usize, Error> {
        let _guard = self.locks.recv.lock().unwrap_or_else(|e| e.into_inner());
        let mut fds = Vec::new();
        let first = self.read_first_record(None, OnSignal::caller(), &mut fds, |len, first| {
            if len > buf.len() {
                let mut whole = Vec::new();
                whole
                    .try_reserve_exact(len)
                    .map_err(|_| Error::OutOfMemory { bytes: len as u64 })?;
                whole.extend_from_slice(first);
                Ok((len, first.len(), Some(whole)))
            } else {
                buf[..first.len()].copy_from_slice(first);
                Ok((len, first.len(), None))
            }
        });
        let (len, copied, whole) = first?;
        if let Some(mut whole) = whole {
            self.read_rest_into_vec(&mut whole, len)?;
            return Err(Error::BufferTooShort(whole));
        }
        let mut filled = copied;
        while filled < len {
            filled += sys::recv_record_into(self.fd.as_fd(), &mut buf[filled..len])
                .map_err(connection_io("recv"))?;
        }
        Ok(len)
    }

    /// Receives the first record of a message into this thread's scratch buffer, parses the
    /// header and hands `(length, start of the payload)` to `take`.
    ///
    /// An interruptible read never sleeps in `recvmsg` (which the kernel restarts after an
    /// `SA_RESTART` handler) but in `poll` (which it never restarts): see `sys::OnSignal`.
    fn read_first_record<T>(
        &self,
        deadline: Option<Instant>,
        on_signal: OnSignal,
        fds: &mut Vec<OwnedFd>,
        take: impl FnOnce(usize, &[u8]) -> Result<T, Error>,
    ) -> Result<T, Error> {
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let wait = |deadline| {
                sys::wait_readable_or(self.fd.as_fd(), deadline, on_signal)
                    .map_err(Error::os("poll"))
            };
            let nonblocking = deadline.is_some() || on_signal != OnSignal::Retry;
            let n = loop {
                // With a deadline, wait for a record and take it without blocking: another
                // process sharing this end may take it first, and then we wait again.
                if deadline.is_some() && !wait(deadline)? {
                    return Err(Error::Timeout);
                }
                scratch.clear();
                match sys::recv_with_fds_into_vec(
                    self.fd.as_fd(),
                    &mut scratch,
                    RECORD_MAX,
                    fds,
                    nonblocking,
                ) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if deadline.is_none() {
                            wait(None)?;
                        }
                    }
                    Err(e) => return Err(connection_io("recvmsg")(e)),
                }
            };
            if n == 0 {
                return Err(Error::Disconnected);
            }
            let (len, start) = record_header(&scratch)?;
            let first = &scratch[start..];
            if first.len() > len {
                return Err(malformed());
            }
            take(len, first)
        })
    }

    /// Reads the continuation records of a message until `out` holds `len` bytes.
    fn read_rest_into_vec(&self, out: &mut Vec<u8>, len: usize) -> Result<(), Error> {
        while out.len() < len {
            let want = len - out.len();
            sys::recv_record_into_vec(self.fd.as_fd(), out, want).map_err(connection_io("recv"))?;
        }
        Ok(())
    }

    fn poll(&self, timeout: Duration) -> Result<bool, Error> {
        // A timeout too large to add to `now` waits for ever.
        let deadline = Instant::now().checked_add(timeout);
        // A check that does not wait is not interruptible (the pool's threads make such checks).
        let on_signal = if timeout.is_zero() {
            OnSignal::Retry
        } else {
            OnSignal::caller()
        };
        sys::wait_readable_or(self.fd.as_fd(), deadline, on_signal).map_err(Error::os("poll"))
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        // Before the descriptor closes (the field drops after this body), so that whoever
        // gets the number next is tracked correctly.
        sys::untrack_fd(self.fd.as_raw_fd());
    }
}

/// One end of a duplex [`Pipe`]: send and receive whole messages, pickled values or raw bytes.
///
/// The Python names are kept: `send`/`recv` move pickled values (serde-pickle, so a Python
/// peer reads them), `send_bytes`/`recv_bytes` move raw byte strings, `poll` waits for data.
/// A `Connection` is itself `Serialize`: pass it as an argument to
/// [`Process::spawn`](crate::Process::spawn), or inside a value given to [`send`](Self::send),
/// and the other process receives a working end (the descriptor travels beside the bytes).
///
/// # Examples
///
/// ```
/// use multiproc::{Connection, Pipe, Process};
///
/// fn echo(conn: Connection) {
///     while let Ok(msg) = conn.recv::<String>() {
///         conn.send(&msg.to_uppercase()).unwrap();
///     }
/// }
///
/// let (here, there) = Pipe::new().unwrap();
/// let mut child = Process::spawn(echo, there).unwrap();
/// here.send(&"hello").unwrap();
/// assert_eq!(here.recv::<String>().unwrap(), "HELLO");
/// drop(here); // the child sees Disconnected and returns
/// child.join().unwrap();
/// ```
pub struct Connection {
    end: Option<Endpoint>,
}

/// The receiving end of a one-way pipe ([`Pipe::one_way`]); it cannot send.
///
/// # Examples
///
/// ```
/// let (rx, tx) = multiproc::Pipe::one_way().unwrap();
/// tx.send(&(1, "one")).unwrap();
/// assert_eq!(rx.recv::<(i32, String)>().unwrap(), (1, "one".to_string()));
/// ```
///
/// Sending on it does not compile (CPython raises at run time):
///
/// ```compile_fail
/// let (rx, _tx) = multiproc::Pipe::one_way().unwrap();
/// rx.send(&1).unwrap();
/// ```
pub struct RecvEnd {
    end: Option<Endpoint>,
}

/// The sending end of a one-way pipe ([`Pipe::one_way`]); it cannot receive or poll.
///
/// # Examples
///
/// ```
/// let (rx, tx) = multiproc::Pipe::one_way().unwrap();
/// tx.send_bytes(b"raw").unwrap();
/// assert_eq!(rx.recv_bytes().unwrap(), b"raw");
/// ```
///
/// Receiving or polling on it does not compile (CPython raises at run time):
///
/// ```compile_fail
/// let (_rx, tx) = multiproc::Pipe::one_way().unwrap();
/// let _ = tx.recv::<i32>();
/// ```
///
/// ```compile_fail
/// let (_rx, tx) = multiproc::Pipe::one_way().unwrap();
/// let _ = tx.poll(std::time::Duration::ZERO);
/// ```
pub struct SendEnd {
    end: Option<Endpoint>,
}

/// Makes connected pairs of connection ends, like `multiprocessing.Pipe()`.
///
/// # Examples
///
/// ```
/// let (a, b) = multiproc::Pipe::new().unwrap();
/// a.send(&42u32).unwrap();
/// assert_eq!(b.recv::<u32>().unwrap(), 42);
/// b.send(&"back").unwrap();
/// assert_eq!(a.recv::<String>().unwrap(), "back");
/// ```
#[derive(Debug)]
pub enum Pipe {}

impl Pipe {
    /// A duplex pipe: two [`Connection`]s, each able to send to and receive from the other
    /// (`multiprocessing.Pipe()`).
    ///
    /// # Errors
    /// [`Error::Os`] if the OS refuses the socket pair (e.g. `EMFILE`).
    #[allow(clippy::new_ret_no_self)] // mirrors multiprocessing.Pipe(), which returns two ends
    pub fn new() -> Result<(Connection, Connection), Error> {
        let (a, b) = pipe_pair()?;
        Ok((Connection::from_fd(a), Connection::from_fd(b)))
    }

    /// A one-way pipe: `(reader, writer)`, like `multiprocessing.Pipe(duplex=False)`. The types
    /// make the wrong direction unrepresentable.
    ///
    /// # Errors
    /// [`Error::Os`] if the OS refuses the socket pair.
    pub fn one_way() -> Result<(RecvEnd, SendEnd), Error> {
        let (a, b) = pipe_pair()?;
        Ok((
            RecvEnd {
                end: Some(Endpoint::new(a)),
            },
            SendEnd {
                end: Some(Endpoint::new(b)),
            },
        ))
    }
}

/// A record socket pair with large send buffers where the system allows them.
pub(crate) fn pipe_pair() -> Result<(OwnedFd, OwnedFd), Error> {
    let (a, b) = sys::seqpacket_pair().map_err(Error::os("socketpair"))?;
    for end in [&a, &b] {
        // Best effort: the kernel caps the size, and the default still works.
        let _ = sys::set_send_buffer_size(end.as_fd(), SEND_BUFFER);
    }
    Ok((a, b))
}

fn send_value<T: Serialize>(end: &Option<Endpoint>, value: &T) -> Result<(), Error> {
    let end = end.as_ref().ok_or(Error::Closed)?;
    let mut fds = Vec::new();
    let bytes = codec::encode_in(value, &mut fds)?;
    end.send_with_fds(&[&bytes], &fds)
}

fn recv_value<T: DeserializeOwned>(
    end: &Option<Endpoint>,
    deadline: Option<Instant>,
) -> Result<T, Error> {
    let end = end.as_ref().ok_or(Error::Closed)?;
    let (bytes, fds) = end.recv_frame(deadline, OnSignal::caller())?;
    codec::decode_in(&bytes, &mut FdTable::new(fds))
}

/// The methods shared by the ends, written once.
macro_rules! sending_methods {
    () => {
        /// Pickles `value` and sends it as one message. Handles inside it (connections, …)
        /// travel with it.
        ///
        /// # Errors
        /// [`Error::Serialize`] (nothing is sent), [`Error::Disconnected`] if the peer is
        /// closed, [`Error::Closed`] after [`close`](Self::close).
        pub fn send<T: Serialize>(&self, value: &T) -> Result<(), Error> {
            send_value(&self.end, value)
        }

        /// Sends `bytes` as one message, unpickled (CPython's `send_bytes`). Use a slice to
        /// send part of a buffer: `send_bytes(&buf[off..off + n])`.
        ///
        /// # Errors
        /// [`Error::Disconnected`] if the peer is closed, [`Error::Closed`] after `close`.
        pub fn send_bytes(&self, bytes: &[u8]) -> Result<(), Error> {
            self.end
                .as_ref()
                .ok_or(Error::Closed)?
                .send_frame(&[bytes], &[])
        }
    };
}

macro_rules! receiving_methods {
    () => {
        /// Receives one message and unpickles it as a `T`, waiting as long as it takes.
        ///
        /// # Errors
        /// [`Error::Disconnected`] once every copy of the peer is closed (or the stream ends
        /// mid-message), [`Error::Deserialize`] if the message is not a `T`,
        /// [`Error::Closed`] after `close`, [`Error::Interrupted`] if
        /// [`interrupt_blocked_calls`](crate::interrupt_blocked_calls) is called while it waits
        /// for the message to start (nothing is consumed).
        pub fn recv<T: DeserializeOwned>(&self) -> Result<T, Error> {
            recv_value(&self.end, None)
        }

        /// Like [`recv`](Self::recv), but gives up with [`Error::Timeout`] if no message starts
        /// to arrive within `timeout`. Nothing is consumed on a timeout. A timeout too long to
        /// add to the clock (`Duration::MAX`) waits as long as it takes, as `recv` does.
        ///
        /// # Errors
        /// As `recv`, plus [`Error::Timeout`].
        pub fn recv_timeout<T: DeserializeOwned>(&self, timeout: Duration) -> Result<T, Error> {
            recv_value(&self.end, Instant::now().checked_add(timeout))
        }

        /// Receives one message as raw bytes (CPython's `recv_bytes`).
        ///
        /// # Errors
        /// [`Error::Disconnected`], [`Error::Closed`], [`Error::Interrupted`] (as `recv`).
        pub fn recv_bytes(&self) -> Result<Vec<u8>, Error> {
            let end = self.end.as_ref().ok_or(Error::Closed)?;
            end.recv_frame(None, OnSignal::caller())
                .map(|(bytes, _)| bytes)
        }

        /// Receives one message into `buf` and returns its length (CPython's
        /// `recv_bytes_into`; pass `&mut buf[offset..]` for an offset). Allocates nothing when
        /// the message fits.
        ///
        /// # Errors
        /// [`Error::BufferTooShort`] holding the whole message if it does not fit (nothing is
        /// lost; the next message is read normally), [`Error::Disconnected`], [`Error::Closed`],
        /// [`Error::Interrupted`] (as `recv`).
        pub fn recv_bytes_into(&self, buf: &mut [u8]) -> Result<usize, Error> {
            self.end.as_ref().ok_or(Error::Closed)?.recv_frame_into(buf)
        }

        /// Whether a message (or end of stream) is waiting, waiting up to `timeout` for one;
        /// `Duration::ZERO` checks and returns at once. Never consumes anything.
        ///
        /// # Errors
        /// [`Error::Closed`] after `close`; [`Error::Interrupted`] as `recv` (a zero
        /// `timeout` is never interrupted).
        pub fn poll(&self, timeout: Duration) -> Result<bool, Error> {
            self.end.as_ref().ok_or(Error::Closed)?.poll(timeout)
        }
    };
}

macro_rules! common_methods {
    ($ty:ident) => {
        impl $ty {
            /// Closes this end now; later calls return [`Error::Closed`]. Dropping the value
            /// closes it too. Idempotent.
            pub fn close(&mut self) {
                self.end = None;
            }

            /// Whether [`close`](Self::close) was called.
            pub fn is_closed(&self) -> bool {
                self.end.is_none()
            }

            /// Another handle on the same end (a `dup` of the descriptor), e.g. to give one copy to
            /// each of several children. The peer sees end of stream only when every copy is
            /// closed.
            ///
            /// # Errors
            /// [`Error::Closed`] after `close`, [`Error::Os`] if `dup` fails.
            pub fn try_clone(&self) -> Result<$ty, Error> {
                let end = self.end.as_ref().ok_or(Error::Closed)?;
                Ok($ty {
                    end: Some(end.try_clone()?),
                })
            }

            /// The underlying descriptor, for `poll`/`select` loops; `None` once closed.
            pub fn as_fd(&self) -> Option<BorrowedFd<'_>> {
                self.end.as_ref().map(|e| e.fd.as_fd())
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match &self.end {
                    Some(e) => f
                        .debug_struct(stringify!($ty))
                        .field("fd", &e.fd.as_raw_fd())
                        .finish(),
                    None => f
                        .debug_struct(stringify!($ty))
                        .field("closed", &true)
                        .finish(),
                }
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                match &self.end {
                    Some(e) => codec::serialize_fd(e.fd.as_fd(), serializer),
                    None => Err(serde::ser::Error::custom(concat!(
                        "cannot send a closed ",
                        stringify!($ty)
                    ))),
                }
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                codec::deserialize_fd(deserializer).map(|fd| $ty {
                    end: Some(Endpoint::new(fd)),
                })
            }
        }
    };
}

impl Connection {
    pub(crate) fn from_fd(fd: OwnedFd) -> Connection {
        Connection {
            end: Some(Endpoint::new(fd)),
        }
    }

    /// Sends one message made of `parts`, with descriptors attached (the bootstrap and result
    /// messages).
    pub(crate) fn send_parts(&self, parts: &[&[u8]], fds: &[OwnedFd]) -> Result<(), Error> {
        self.end
            .as_ref()
            .ok_or(Error::Closed)?
            .send_with_fds(parts, fds)
    }

    /// Receives a payload and the descriptors that came with it.
    pub(crate) fn recv_raw(&self) -> Result<(Vec<u8>, Vec<OwnedFd>), Error> {
        self.end
            .as_ref()
            .ok_or(Error::Closed)?
            .recv_frame(None, OnSignal::Retry)
    }

    sending_methods!();
    receiving_methods!();
}

impl RecvEnd {
    /// Receives a payload and its descriptors, waiting until `deadline` at most (`None`: for
    /// ever); [`Error::Timeout`] when it passes.
    pub(crate) fn recv_raw_until(
        &self,
        deadline: Option<Instant>,
    ) -> Result<(Vec<u8>, Vec<OwnedFd>), Error> {
        self.end
            .as_ref()
            .ok_or(Error::Closed)?
            .recv_frame(deadline, OnSignal::caller())
    }

    receiving_methods!();
}

impl SendEnd {
    /// Sends one message made of `parts`, with descriptors attached.
    pub(crate) fn send_parts(&self, parts: &[&[u8]], fds: &[OwnedFd]) -> Result<(), Error> {
        self.end
            .as_ref()
            .ok_or(Error::Closed)?
            .send_with_fds(parts, fds)
    }

    sending_methods!();
}

common_methods!(Connection);
common_methods!(RecvEnd);
common_methods!(SendEnd);

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection whose peer is a bare socket, to send records no `Connection` would.
    fn raw_peer() -> (Connection, OwnedFd) {
        let (ours, theirs) = sys::seqpacket_pair().unwrap();
        (Connection::from_fd(ours), theirs)
    }

    #[test]
    fn a_record_too_short_for_a_header_is_malformed() {
        let (conn, peer) = raw_peer();
        nix::unistd::write(&peer, &[0, 0]).unwrap();
        assert!(matches!(
            conn.recv_bytes(),
            Err(Error::Malformed {
                what: "message on the connection"
            })
        ));
    }

    #[test]
    fn a_negative_length_is_malformed() {
        let (conn, peer) = raw_peer();
        nix::unistd::write(&peer, &(-2i32).to_be_bytes()).unwrap();
        assert!(matches!(conn.recv_bytes(), Err(Error::Malformed { .. })));
    }

    #[test]
    fn a_length_that_cannot_be_allocated_is_out_of_memory() {
        let bytes: u64 = 1 << 62;
        for into in [false, true] {
            let (conn, peer) = raw_peer();
            let mut header = (-1i32).to_be_bytes().to_vec();
            header.extend_from_slice(&bytes.to_be_bytes());
            nix::unistd::write(&peer, &header).unwrap();
            // `recv_bytes_into` with a short buffer tries to allocate the whole message too.
            let got = if into {
                conn.recv_bytes_into(&mut [0u8; 4]).map(|_| ())
            } else {
                conn.recv_bytes().map(|_| ())
            };
            assert!(
                matches!(got, Err(Error::OutOfMemory { bytes: b }) if b == bytes),
                "{got:?}"
            );
        }
    }
}
