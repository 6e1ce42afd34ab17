//! CPython's message framing (`multiprocessing/connection.py`, `_send_bytes` and
//! `_recv_bytes`), the one place its header is written and read: a 4-byte big-endian signed
//! length, or −1 and an 8-byte big-endian length for payloads over 2 GiB − 1 (bpo-17560), then
//! the payload (PROTOCOL.md §1).
//!
//! The pipe ([`super::Connection`]) carries frames in records; a TCP stream
//! ([`super::TcpConnection`], the managers) carries them back to back, read here by a
//! [`FrameReader`]: each frame leaves in one `write`; reads are buffered so that a small frame
//! costs one `read`; `TCP_QUICKACK` is re-armed before each read.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsFd;

use crate::error::connection_io;
use crate::pickle::{self, Limits, PyValue};
use crate::{sys, Error, WireError};

/// The largest payload written with the short header.
pub(crate) const SHORT_MAX: usize = 0x7fff_ffff;

/// The longest header: −1, then the 8-byte length.
pub(crate) const HEADER_MAX: usize = 12;

/// How much a reader pulls in one `read` before it knows the frame length.
const READ_AHEAD: usize = 16 * 1024;

/// The header for a payload of `len` bytes, and how many of its bytes are used: 4, or 12 past
/// [`SHORT_MAX`].
#[inline]
pub(crate) fn header(len: usize) -> ([u8; HEADER_MAX], usize) {
    let mut header = [0u8; HEADER_MAX];
    if len <= SHORT_MAX {
        header[..4].copy_from_slice(&(len as u32).to_be_bytes());
        (header, 4)
    } else {
        header[..4].copy_from_slice(&(-1i32).to_be_bytes());
        header[4..].copy_from_slice(&(len as u64).to_be_bytes());
        (header, HEADER_MAX)
    }
}

/// What the start of a frame says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Header {
    /// A payload of `len` bytes follows the `size` bytes of the header.
    Complete {
        /// The payload's length.
        len: u64,
        /// The header's length (4 or 12).
        size: usize,
    },
    /// The header needs this many bytes, more than were given.
    Incomplete(usize),
    /// A negative length other than −1: not a frame.
    Negative(i32),
}

/// Reads the header at the start of `bytes`.
#[inline]
pub(crate) fn parse_header(bytes: &[u8]) -> Header {
    let Some(short) = bytes.first_chunk::<4>() else {
        return Header::Incomplete(4);
    };
    match i32::from_be_bytes(*short) {
        short @ 0.. => Header::Complete {
            len: short as u64,
            size: 4,
        },
        -1 => match bytes.get(4..HEADER_MAX).and_then(|b| b.first_chunk::<8>()) {
            Some(long) => Header::Complete {
                len: u64::from_be_bytes(*long),
                size: HEADER_MAX,
            },
            None => Header::Incomplete(HEADER_MAX),
        },
        short => Header::Negative(short),
    }
}

/// Writes one frame whose payload starts at byte 4 of `frame` (bytes 0..4 are room for the
/// header), in a single `write` call for payloads up to 2 GiB − 1.
pub(crate) fn send_frame(mut stream: &TcpStream, mut frame: Vec<u8>) -> Result<(), Error> {
    let len = frame.len() - 4;
    let (header, size) = header(len);
    if size == 4 {
        frame[..4].copy_from_slice(&header[..4]);
    } else {
        let mut long = Vec::with_capacity(len + size);
        long.extend_from_slice(&header[..size]);
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
pub(crate) fn send_value(stream: &TcpStream, value: &PyValue) -> Result<(), Error> {
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
    /// The largest frame the peer accepts, when it is known ([`set_send_cap`](Self::set_send_cap)).
    send_cap: u64,
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
    /// [`Error::Disconnected`]; one inside a frame is [`WireError::Protocol`]. A frame over `cap`
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
        let (len, header) = match parse_header(&self.buf[self.start..self.end]) {
            Header::Complete { len, size } => (len, size),
            Header::Incomplete(need) => {
                if !self.fill(stream, need)? {
                    return Err(truncated());
                }
                match parse_header(&self.buf[self.start..self.end]) {
                    Header::Complete { len, size } => (len, size),
                    _ => return Err(truncated()),
                }
            }
            Header::Negative(short) => {
                return Err(Error::Wire(WireError::Protocol {
                    reason: format!("negative frame length {short}"),
                }))
            }
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

    /// Reads one frame and hands its non-empty payload to `f` (no copy for a small one).
    pub(crate) fn with_frame<R>(
        &mut self,
        stream: &TcpStream,
        cap: usize,
        f: impl FnOnce(&[u8]) -> Result<R, Error>,
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
            return Err(Error::Wire(WireError::Protocol {
                reason: "empty frame where a pickle was expected".into(),
            }));
        }
        f(payload)
    }

    /// Reads one frame and unpickles it inertly.
    pub(crate) fn recv_value(
        &mut self,
        stream: &TcpStream,
        cap: usize,
        limits: &Limits,
    ) -> Result<PyValue, Error> {
        self.with_frame(stream, cap, |payload| {
            Ok(pickle::loads_with(payload, limits)?)
        })
    }

    /// Writes one frame whose payload `encode` appends to a buffer reused from frame to frame,
    /// in a single `write` call for payloads up to 2 GiB − 1.
    pub(crate) fn send_with(
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
            frame[..4].copy_from_slice(&header(len).0[..4]);
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
    Error::Wire(WireError::Protocol {
        reason: "stream ended inside a frame".into(),
    })
}

fn read_error(e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Error::Timeout,
        _ => connection_io("recv")(e),
    }
}

fn quickack(stream: &TcpStream) {
    // Best effort: a failure only costs latency.
    let _ = sys::set_quickack(stream.as_fd());
}

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

    #[test]
    fn headers_read_as_they_are_written() {
        for len in [0, 1, 255, SHORT_MAX] {
            let (bytes, size) = header(len);
            assert_eq!(size, 4);
            assert_eq!(&bytes[..4], &(len as u32).to_be_bytes());
            assert!(matches!(
                parse_header(&bytes[..4]),
                Header::Complete { len: l, size: 4 } if l == len as u64
            ));
            assert!(matches!(parse_header(&bytes[..3]), Header::Incomplete(4)));
        }
        let (bytes, size) = header(SHORT_MAX + 1);
        assert_eq!(size, 12);
        assert_eq!(&bytes[..4], &(-1i32).to_be_bytes());
        assert!(matches!(parse_header(&bytes[..4]), Header::Incomplete(12)));
        assert!(matches!(
            parse_header(&bytes),
            Header::Complete { len, size: 12 } if len == SHORT_MAX as u64 + 1
        ));
        assert!(matches!(
            parse_header(&(-2i32).to_be_bytes()),
            Header::Negative(-2)
        ));
    }
}
