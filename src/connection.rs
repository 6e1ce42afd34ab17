//! `Pipe` and `Connection`: message-framed, duplex links between processes.
//!
//! # The wire
//! A connection is one end of an `AF_UNIX`, `SOCK_STREAM` socket pair, as CPython's duplex
//! `Pipe()` is. Each message is framed exactly as CPython frames it
//! (`multiprocessing/connection.py`, `_send_bytes`): a 4-byte big-endian signed length, or for
//! messages over 2 GiB − 1 the value −1 followed by an 8-byte big-endian length (bpo-17560),
//! then the payload. Header and payload go out in one `sendmsg`; descriptors of handles inside
//! a [`send`](Connection::send) ride on its first byte as `SCM_RIGHTS`, and the receiver's first
//! `recvmsg` of the header collects them. Messages are never merged or split, whatever their
//! size, and a zero-length message is a message.
//!
//! Sending and receiving are each serialised by a lock, so one `Connection` may be shared by
//! threads (one sending while another receives, or several of each); a message is always
//! written and read whole.

use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::codec::{self, FdTable};
use crate::error::connection_io;
use crate::{sys, Error};

/// Payloads above this length use CPython's extended header (−1, then a 64-bit length).
const SHORT_FRAME_MAX: usize = 0x7fff_ffff;

/// One open end: the socket and the locks that keep messages whole.
struct Endpoint {
    fd: OwnedFd,
    send_lock: Mutex<()>,
    /// Held while a message is being read, so that messages are read whole.
    recv_lock: Mutex<()>,
}

impl Endpoint {
    fn new(fd: OwnedFd) -> Endpoint {
        sys::track_fd(fd.as_raw_fd());
        Endpoint {
            fd,
            send_lock: Mutex::new(()),
            recv_lock: Mutex::new(()),
        }
    }

    /// Sends one message whose payload is the concatenation of `parts`.
    fn send_frame(&self, parts: &[&[u8]], fds: &[RawFd]) -> Result<(), Error> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let mut header = [0u8; 12];
        let header: &[u8] = if len <= SHORT_FRAME_MAX {
            header[..4].copy_from_slice(&(len as u32).to_be_bytes());
            &header[..4]
        } else {
            header[..4].copy_from_slice(&(-1i32).to_be_bytes());
            header[4..].copy_from_slice(&(len as u64).to_be_bytes());
            &header[..]
        };
        let mut all: [&[u8]; sys::MAX_PARTS] = [&[]; sys::MAX_PARTS];
        all[0] = header;
        for (slot, part) in all[1..].iter_mut().zip(parts) {
            *slot = part;
        }
        debug_assert!(parts.len() < sys::MAX_PARTS);
        let _guard = self.send_lock.lock().unwrap_or_else(|e| e.into_inner());
        sys::send_all(self.fd.as_fd(), &all[..=parts.len()], fds).map_err(connection_io("sendmsg"))
    }

    /// Reads one whole message. `deadline` bounds the wait for its first byte.
    fn recv_frame(&self, deadline: Option<Instant>) -> Result<(Vec<u8>, Vec<OwnedFd>), Error> {
        let _guard = self.recv_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut fds = Vec::new();
        let len = self.read_header(deadline, &mut fds)?;
        let mut payload = Vec::new();
        sys::read_exact_into_vec(self.fd.as_fd(), &mut payload, len)
            .map_err(connection_io("read"))?;
        Ok((payload, fds))
    }

    /// Reads a message into `buf`; a message longer than `buf` is returned whole in
    /// [`Error::BufferTooShort`].
    fn recv_frame_into(&self, buf: &mut [u8]) -> Result<usize, Error> {
        let _guard = self.recv_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut fds = Vec::new();
        let len = self.read_header(None, &mut fds)?;
        if len > buf.len() {
            let mut whole = Vec::new();
            sys::read_exact_into_vec(self.fd.as_fd(), &mut whole, len)
                .map_err(connection_io("read"))?;
            return Err(Error::BufferTooShort(whole));
        }
        match sys::read_exact(self.fd.as_fd(), &mut buf[..len]) {
            Ok(true) => Ok(len),
            Ok(false) if len == 0 => Ok(0),
            Ok(false) => Err(Error::Disconnected),
            Err(e) => Err(connection_io("read")(e)),
        }
    }

    fn read_header(
        &self,
        deadline: Option<Instant>,
        fds: &mut Vec<OwnedFd>,
    ) -> Result<usize, Error> {
        if deadline.is_some()
            && !sys::wait_readable(self.fd.as_fd(), deadline).map_err(Error::os("poll"))?
        {
            return Err(Error::Timeout);
        }
        let mut cmsg = [0u8; sys::CMSG_BUFFER];
        let mut header = [0u8; 4];
        let mut got = 0;
        while got < header.len() {
            let n = sys::recv_with_fds(self.fd.as_fd(), &mut header[got..], &mut cmsg, fds)
                .map_err(connection_io("recvmsg"))?;
            if n == 0 {
                return Err(Error::Disconnected);
            }
            got += n;
        }
        let short = i32::from_be_bytes(header);
        if short >= 0 {
            return Ok(short as usize);
        }
        let mut long = [0u8; 8];
        match sys::read_exact(self.fd.as_fd(), &mut long) {
            Ok(true) => usize::try_from(u64::from_be_bytes(long))
                .map_err(|_| Error::InvalidArgument("message length exceeds memory".into())),
            Ok(false) => Err(Error::Disconnected),
            Err(e) => Err(connection_io("read")(e)),
        }
    }

    fn poll(&self, timeout: Duration) -> Result<bool, Error> {
        // A timeout too large to add to `now` waits for ever.
        let deadline = Instant::now().checked_add(timeout);
        sys::wait_readable(self.fd.as_fd(), deadline).map_err(Error::os("poll"))
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
        let (a, b) = sys::stream_pair().map_err(Error::os("socketpair"))?;
        Ok((Connection::from_fd(a), Connection::from_fd(b)))
    }

    /// A one-way pipe: `(reader, writer)`, like `multiprocessing.Pipe(duplex=False)`. The types
    /// make the wrong direction unrepresentable.
    ///
    /// # Errors
    /// [`Error::Os`] if the OS refuses the socket pair.
    pub fn one_way() -> Result<(RecvEnd, SendEnd), Error> {
        let (a, b) = sys::stream_pair().map_err(Error::os("socketpair"))?;
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

fn send_value<T: Serialize>(end: &Option<Endpoint>, value: &T) -> Result<(), Error> {
    let end = end.as_ref().ok_or(Error::Closed)?;
    let mut fds = Vec::new();
    let bytes = codec::encode_in(value, &mut fds)?;
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    end.send_frame(&[&bytes], &raw)
}

fn recv_value<T: DeserializeOwned>(
    end: &Option<Endpoint>,
    deadline: Option<Instant>,
) -> Result<T, Error> {
    let end = end.as_ref().ok_or(Error::Closed)?;
    let (bytes, fds) = end.recv_frame(deadline)?;
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
        /// [`Error::Closed`] after `close`.
        pub fn recv<T: DeserializeOwned>(&self) -> Result<T, Error> {
            recv_value(&self.end, None)
        }

        /// Like [`recv`](Self::recv), but gives up with [`Error::Timeout`] if no message starts
        /// to arrive within `timeout`. Nothing is consumed on a timeout.
        ///
        /// # Errors
        /// As `recv`, plus [`Error::Timeout`].
        pub fn recv_timeout<T: DeserializeOwned>(&self, timeout: Duration) -> Result<T, Error> {
            let deadline = Instant::now()
                .checked_add(timeout)
                .ok_or_else(|| Error::InvalidArgument("timeout too large".into()))?;
            recv_value(&self.end, Some(deadline))
        }

        /// Receives one message as raw bytes (CPython's `recv_bytes`).
        ///
        /// # Errors
        /// [`Error::Disconnected`], [`Error::Closed`].
        pub fn recv_bytes(&self) -> Result<Vec<u8>, Error> {
            let end = self.end.as_ref().ok_or(Error::Closed)?;
            end.recv_frame(None).map(|(bytes, _)| bytes)
        }

        /// Receives one message into `buf` and returns its length (CPython's
        /// `recv_bytes_into`; pass `&mut buf[offset..]` for an offset). Allocates nothing when
        /// the message fits.
        ///
        /// # Errors
        /// [`Error::BufferTooShort`] holding the whole message if it does not fit (nothing is
        /// lost; the next message is read normally), [`Error::Disconnected`], [`Error::Closed`].
        pub fn recv_bytes_into(&self, buf: &mut [u8]) -> Result<usize, Error> {
            self.end.as_ref().ok_or(Error::Closed)?.recv_frame_into(buf)
        }

        /// Whether a message (or end of stream) is waiting, waiting up to `timeout` for one;
        /// `Duration::ZERO` checks and returns at once. Never consumes anything.
        ///
        /// # Errors
        /// [`Error::Closed`] after `close`.
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
                let fd = end.fd.try_clone().map_err(Error::os("dup"))?;
                Ok($ty {
                    end: Some(Endpoint::new(fd)),
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
        let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
        self.end
            .as_ref()
            .ok_or(Error::Closed)?
            .send_frame(parts, &raw)
    }

    /// Receives a payload and the descriptors that came with it.
    pub(crate) fn recv_raw(&self) -> Result<(Vec<u8>, Vec<OwnedFd>), Error> {
        self.end.as_ref().ok_or(Error::Closed)?.recv_frame(None)
    }

    sending_methods!();
    receiving_methods!();
}

impl RecvEnd {
    receiving_methods!();
}

impl SendEnd {
    sending_methods!();
}

common_methods!(Connection);
common_methods!(RecvEnd);
common_methods!(SendEnd);
