//! Framing on a TCP stream (PROTOCOL.md §1): a 4-byte big-endian signed length, or −1 and an
//! 8-byte length, then the payload. Each frame leaves in one `write`; reads are buffered so
//! that a small frame costs one `read`; `TCP_QUICKACK` is re-armed before each read.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use crate::error::connection_io;
use crate::pickle::{self, Limits, Value};
use crate::{sys, Error};

mod message;

pub(crate) use message::Request;
use message::{reply_into, request_into, split_request, split_return};

/// The largest payload written with the short header.
const SHORT_MAX: usize = 0x7fff_ffff;

/// Handshake frames are capped at 256 bytes, as CPython caps them.
pub(crate) const HANDSHAKE_FRAME_MAX: usize = 256;

/// How the message of the `ValueError` in a `'#ERROR'` refusal starts: the server closes the
/// connection after such a reply, so a client must not send on it again.
pub(crate) const REFUSAL_PREFIX: &str = "request refused: ";

/// How much a reader pulls in one `read` before it knows the frame length.
const READ_AHEAD: usize = 16 * 1024;

/// Resolves a TCP address. An address of another form (no `host:port`, such as a Unix path or
/// a Windows pipe name, CPython's `TestInvalidFamily`) is [`Error::InvalidArgument`] before
/// any socket is made; a name that does not resolve is [`Error::Os`].
pub(crate) fn resolve(address: impl ToSocketAddrs) -> Result<Vec<SocketAddr>, Error> {
    let addresses: Vec<SocketAddr> = address
        .to_socket_addrs()
        .map_err(|e| match e.kind() {
            io::ErrorKind::InvalidInput => {
                Error::InvalidArgument(format!("not a TCP address (host:port): {e}"))
            }
            _ => Error::Os {
                op: "resolve address",
                source: e,
            },
        })?
        .collect();
    if addresses.is_empty() {
        return Err(Error::InvalidArgument(
            "the address resolves to nothing".into(),
        ));
    }
    Ok(addresses)
}

/// Prepares a fresh socket: no Nagle delay (each frame is one write anyway).
pub(crate) fn configure(stream: &TcpStream) -> Result<(), Error> {
    stream
        .set_nodelay(true)
        .map_err(Error::os("setsockopt(TCP_NODELAY)"))
}

/// Writes one frame whose payload starts at byte 4 of `frame` (bytes 0..4 are room for the
/// header), in a single `write` call for payloads up to 2 GiB − 1.
pub(crate) fn send_frame(mut stream: &TcpStream, mut frame: Vec<u8>) -> Result<(), Error> {
    let len = frame.len() - 4;
    if len <= SHORT_MAX {
        frame[..4].copy_from_slice(&(len as u32).to_be_bytes());
    } else {
        let mut long = Vec::with_capacity(len + 12);
        long.extend_from_slice(&[0xff; 4]);
        long.extend_from_slice(&(len as u64).to_be_bytes());
        long.extend_from_slice(&frame[4..]);
        frame = long;
    }
    stream.write_all(&frame).map_err(connection_io("send"))
}

/// Writes `payload` as one frame.
pub(crate) fn send_bytes(stream: &TcpStream, payload: &[u8]) -> Result<(), Error> {
    let mut frame = Vec::with_capacity(payload.len() + 4);
    frame.extend_from_slice(&[0; 4]);
    frame.extend_from_slice(payload);
    send_frame(stream, frame)
}

/// Pickles `value` and writes it as one frame.
pub(crate) fn send_value(stream: &TcpStream, value: &Value) -> Result<(), Error> {
    let mut frame = Vec::with_capacity(128);
    frame.extend_from_slice(&[0; 4]);
    pickle::dumps_into(value, &mut frame);
    send_frame(stream, frame)
}

/// One stream's framing state: reads frames, keeping bytes read past the end of a frame for
/// the next, and writes frames from a reused buffer.
#[derive(Debug)]
pub(crate) struct FrameReader {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Re-arm `TCP_QUICKACK` before every read, not only inside a frame.
    eager_quickack: bool,
    /// Reused for each frame written with the `send_*` methods.
    out: Vec<u8>,
    /// String buffers given back by [`recycle`](Self::recycle), for the next request's ident
    /// and method name.
    spare: Vec<String>,
    /// The largest frame the peer accepts, when it is known ([`set_send_cap`](Self::set_send_cap)).
    send_cap: u64,
}

/// What [`FrameReader::recv_reply`] or [`FrameReader::recv_request`] read.
pub(crate) enum Incoming {
    /// The value of a `('#RETURN', value)` reply.
    Return(Value),
    /// A request, taken apart.
    Request(Request),
    /// Any other pickle, whole.
    Full(Value),
}

/// Where a frame's payload is.
enum Frame {
    /// In the reader's buffer, between these offsets.
    Buffered(usize, usize),
    Owned(Vec<u8>),
}

impl FrameReader {
    /// A reader for a server: `TCP_QUICKACK` before every read. A CPython client (no
    /// `TCP_NODELAY`) writes its last handshake frame and its first request back to back, and
    /// Nagle holds the request until the previous frame is ACKed: an ACK delayed by the
    /// kernel costs ≈ 40 ms there. Re-arming the option before the read that waits for the
    /// request sends the pending ACK at once.
    pub(crate) fn server() -> FrameReader {
        FrameReader {
            buf: vec![0; READ_AHEAD],
            start: 0,
            end: 0,
            eager_quickack: true,
            out: Vec::new(),
            spare: Vec::new(),
            send_cap: u64::MAX,
        }
    }

    /// From now on, `TCP_QUICKACK` only inside a frame: once a peer's first request has been
    /// read, it alternates request and reply, and an ACK forced before every read would only
    /// add a packet to each call.
    pub(crate) fn quickack_inside_frames_only(&mut self) {
        self.eager_quickack = false;
    }

    /// A reader for a client: `TCP_QUICKACK` only inside a frame. A CPython server writes a
    /// frame above 16 KiB as the header and then the payload, the payload waiting for the
    /// header's ACK; the client acknowledges the header at once. Between frames nothing waits
    /// on the client's ACKs, so the common small reply costs no extra system call.
    pub(crate) fn client() -> FrameReader {
        FrameReader {
            eager_quickack: false,
            ..FrameReader::server()
        }
    }

    /// Refuses, from now on, to send frames larger than `cap` (the peer's limit): they fail
    /// with [`Error::MessageTooLarge`] before anything is written.
    pub(crate) fn set_send_cap(&mut self, cap: u64) {
        self.send_cap = cap;
    }

    /// Whether bytes read ahead wait in the buffer.
    pub(crate) fn has_buffered(&self) -> bool {
        self.end > self.start
    }

    /// Reads one frame of at most `cap` bytes. The cap is checked on the declared length,
    /// before anything is allocated. A clean end of stream before a frame starts is
    /// [`Error::Disconnected`]; one inside a frame is [`Error::Protocol`]. A frame over `cap`
    /// is [`Error::MessageTooLarge`], its header consumed and its payload not read.
    pub(crate) fn recv(&mut self, stream: &TcpStream, cap: usize) -> Result<Vec<u8>, Error> {
        Ok(match self.next_frame(stream, cap)? {
            Frame::Buffered(start, end) => self.buf[start..end].to_vec(),
            Frame::Owned(payload) => payload,
        })
    }

    /// Reads one frame: a small one stays in the buffer (no copy), a large one is read into
    /// its own allocation.
    fn next_frame(&mut self, stream: &TcpStream, cap: usize) -> Result<Frame, Error> {
        if !self.fill(stream, 4)? {
            return Err(if self.end == self.start {
                Error::Disconnected
            } else {
                truncated()
            });
        }
        let b = &self.buf[self.start..self.start + 4];
        let short = i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let (len, header) = if short >= 0 {
            (short as u64, 4)
        } else if short == -1 {
            if !self.fill(stream, 12)? {
                return Err(truncated());
            }
            let mut a = [0u8; 8];
            a.copy_from_slice(&self.buf[self.start + 4..self.start + 12]);
            (u64::from_be_bytes(a), 12)
        } else {
            return Err(Error::Protocol {
                reason: format!("negative frame length {short}"),
            });
        };
        self.start += header;
        if len > cap as u64 {
            // The header is consumed: the caller may `discard` the payload and go on.
            return Err(Error::MessageTooLarge {
                size: len,
                limit: cap as u64,
            });
        }
        let len = len as usize;
        let available = self.end - self.start;
        if available >= len {
            let start = self.start;
            self.start += len;
            return Ok(Frame::Buffered(start, start + len));
        }
        let mut payload = Vec::with_capacity(len.min(1 << 20));
        payload.extend_from_slice(&self.buf[self.start..self.end]);
        self.start = 0;
        self.end = 0;
        while payload.len() < len {
            quickack(stream);
            let want = (len - payload.len()) as u64;
            let n = (&mut &*stream)
                .take(want)
                .read_to_end(&mut payload)
                .map_err(read_error)?;
            if n == 0 {
                return Err(truncated());
            }
        }
        Ok(Frame::Owned(payload))
    }

    /// Reads and drops `n` bytes: the payload of a frame refused for its size
    /// ([`Error::MessageTooLarge`]), so that its sender, still writing it, gets to read the
    /// reply. Uses the reader's buffer only.
    pub(crate) fn discard(&mut self, stream: &TcpStream, mut n: u64) -> Result<(), Error> {
        let buffered = (self.end - self.start).min(n.try_into().unwrap_or(usize::MAX));
        self.start += buffered;
        n -= buffered as u64;
        if n == 0 {
            return Ok(());
        }
        // The buffer is empty now: reuse it as scratch space.
        self.start = 0;
        self.end = 0;
        while n > 0 {
            quickack(stream);
            let want = n.min(self.buf.len() as u64) as usize;
            let got = match (&*stream).read(&mut self.buf[..want]) {
                Ok(0) => return Err(truncated()),
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(read_error(e)),
            };
            n -= got as u64;
        }
        Ok(())
    }

    /// Makes at least `n` unread bytes available; false on end of stream first.
    fn fill(&mut self, stream: &TcpStream, n: usize) -> Result<bool, Error> {
        if self.end - self.start >= n {
            return Ok(true);
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        while self.end < n {
            if self.eager_quickack || self.end > 0 {
                quickack(stream);
            }
            let got = loop {
                match (&*stream).read(&mut self.buf[self.end..]) {
                    Ok(got) => break got,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(read_error(e)),
                }
            };
            if got == 0 {
                return Ok(false);
            }
            self.end += got;
        }
        Ok(true)
    }

    /// Reads one frame and hands its non-empty payload to `f`, with the spare strings.
    fn with_frame<R>(
        &mut self,
        stream: &TcpStream,
        cap: usize,
        f: impl FnOnce(&[u8], &mut Vec<String>) -> Result<R, Error>,
    ) -> Result<R, Error> {
        let owned;
        let payload = match self.next_frame(stream, cap)? {
            Frame::Buffered(start, end) => &self.buf[start..end],
            Frame::Owned(payload) => {
                owned = payload;
                &owned[..]
            }
        };
        if payload.is_empty() {
            return Err(Error::Protocol {
                reason: "empty frame where a pickle was expected".into(),
            });
        }
        f(payload, &mut self.spare)
    }

    /// Reads one frame and unpickles it inertly.
    pub(crate) fn recv_value(
        &mut self,
        stream: &TcpStream,
        cap: usize,
        limits: &Limits,
    ) -> Result<Value, Error> {
        self.with_frame(stream, cap, |payload, _| {
            Ok(pickle::loads_with(payload, limits)?)
        })
    }

    /// Reads one reply. The common one from this crate's server, `('#RETURN', value)` in
    /// protocol 3 with plain data, is decoded without building the tuple around the value.
    pub(crate) fn recv_reply(
        &mut self,
        stream: &TcpStream,
        cap: usize,
        limits: &Limits,
    ) -> Result<Incoming, Error> {
        self.with_frame(stream, cap, |payload, _| {
            if let Some(value) = split_return(payload, limits) {
                return Ok(Incoming::Return(value));
            }
            Ok(Incoming::Full(pickle::loads_with(payload, limits)?))
        })
    }

    /// Reads one request. The common one from this crate's client, `(ident, method, args,
    /// kwargs)` in protocol 3 with plain data, is taken apart without building the tuple;
    /// anything else is decoded whole (`Incoming::Full`).
    pub(crate) fn recv_request(
        &mut self,
        stream: &TcpStream,
        cap: usize,
        limits: &Limits,
    ) -> Result<Incoming, Error> {
        self.with_frame(stream, cap, |payload, spare| {
            if let Some(request) = split_request(payload, limits, spare) {
                return Ok(Incoming::Request(request));
            }
            Ok(Incoming::Full(pickle::loads_with(payload, limits)?))
        })
    }

    /// Gives back a string of a request read earlier, for reuse (at most two are kept).
    pub(crate) fn recycle(&mut self, s: String) {
        if self.spare.len() < 2 && s.capacity() <= 256 {
            self.spare.push(s);
        }
    }

    /// Writes the request `(ident, method, args, kwargs)` as one frame.
    pub(crate) fn send_request(
        &mut self,
        stream: &TcpStream,
        ident: Option<&str>,
        method: &str,
        args: &[Value],
        kwargs: &[(String, Value)],
    ) -> Result<(), Error> {
        self.send_with(stream, |out| request_into(ident, method, args, kwargs, out))
    }

    /// Writes the reply `(kind, payload)` as one frame.
    pub(crate) fn send_reply(
        &mut self,
        stream: &TcpStream,
        kind: &str,
        payload: &Value,
    ) -> Result<(), Error> {
        self.send_with(stream, |out| reply_into(kind, payload, out))
    }

    fn send_with(
        &mut self,
        mut stream: &TcpStream,
        encode: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), Error> {
        let mut frame = std::mem::take(&mut self.out);
        frame.clear();
        frame.extend_from_slice(&[0; 4]);
        encode(&mut frame);
        let len = frame.len() - 4;
        let sent = if len as u64 > self.send_cap {
            Err(Error::MessageTooLarge {
                size: len as u64,
                limit: self.send_cap,
            })
        } else if len <= SHORT_MAX {
            frame[..4].copy_from_slice(&(len as u32).to_be_bytes());
            stream.write_all(&frame).map_err(connection_io("send"))
        } else {
            send_frame(stream, std::mem::take(&mut frame))
        };
        // A buffer grown by one large message is not kept for the life of the connection.
        if frame.capacity() <= READ_AHEAD {
            self.out = frame;
        }
        sent
    }
}

fn truncated() -> Error {
    Error::Protocol {
        reason: "stream ended inside a frame".into(),
    }
}

fn read_error(e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Error::Timeout,
        _ => connection_io("recv")(e),
    }
}

fn quickack(stream: &TcpStream) {
    // Best effort: a failure only costs latency.
    let _ = sys::net::set_quickack(stream.as_fd());
}

/// Sets the read and write timeouts to what is left until `deadline`.
pub(crate) fn until(stream: &TcpStream, deadline: Option<Instant>) -> Result<(), Error> {
    let left = match deadline {
        None => None,
        Some(d) => Some(
            d.checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
                .ok_or(Error::Timeout)?,
        ),
    };
    stream
        .set_read_timeout(left)
        .and_then(|()| stream.set_write_timeout(left))
        .map_err(Error::os("setsockopt(SO_RCVTIMEO)"))
}

/// A default for how long a whole handshake may take.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame over the cap is reported with its size, and once its payload is discarded
    /// (read ahead into the buffer or not) the next frame reads whole.
    #[test]
    fn oversized_frame_is_skipped_whole() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut writer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (stream, _) = listener.accept().unwrap();
        for size in [100usize, 100_000] {
            let mut bytes = (size as u32).to_be_bytes().to_vec();
            bytes.extend(vec![7u8; size]);
            bytes.extend(3u32.to_be_bytes());
            bytes.extend(b"abc");
            writer.write_all(&bytes).unwrap();
            let mut reader = FrameReader::client();
            match reader.recv(&stream, 50) {
                Err(Error::MessageTooLarge {
                    size: got,
                    limit: 50,
                }) => {
                    assert_eq!(got, size as u64)
                }
                other => panic!("{other:?}"),
            }
            reader.discard(&stream, size as u64).unwrap();
            assert_eq!(reader.recv(&stream, 50).unwrap(), b"abc");
        }
    }
}
