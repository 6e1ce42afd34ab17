//! The managers' side of the wire (PROTOCOL.md §5): requests and replies over the frames of
//! [`crate::connection::frame`], the common ones written and taken apart without building their
//! tuples ([`message`]).

use std::net::TcpStream;
use std::ops::{Deref, DerefMut};

use crate::connection::frame;
use crate::pickle::{self, Limits, PyValue};
use crate::Error;

mod message;

pub(crate) use crate::connection::tcp::{configure, resolve, until, HANDSHAKE_TIMEOUT};
pub(crate) use message::Request;
use message::{reply_into, request_into, split_request, split_return};

/// How the message of the `ValueError` in a `'#ERROR'` refusal starts: the server closes the
/// connection after such a reply, so a client must not send on it again.
pub(crate) const REFUSAL_PREFIX: &str = "request refused: ";

/// A connection's framing state ([`frame::FrameReader`], which it derefs to) with the managers'
/// messages on top, and the string buffers a server reuses for the next request.
#[derive(Debug)]
pub(crate) struct FrameReader {
    frames: frame::FrameReader,
    /// String buffers given back by [`recycle`](Self::recycle), for the next request's ident
    /// and method name.
    spare: Vec<String>,
}

impl Deref for FrameReader {
    type Target = frame::FrameReader;

    fn deref(&self) -> &frame::FrameReader {
        &self.frames
    }
}

impl DerefMut for FrameReader {
    fn deref_mut(&mut self) -> &mut frame::FrameReader {
        &mut self.frames
    }
}

/// What [`FrameReader::recv_reply`] or [`FrameReader::recv_request`] read.
pub(crate) enum Incoming {
    /// The value of a `('#RETURN', value)` reply.
    Return(PyValue),
    /// A request, taken apart.
    Request(Request),
    /// Any other pickle, whole.
    Full(PyValue),
}

impl From<frame::FrameReader> for FrameReader {
    fn from(frames: frame::FrameReader) -> FrameReader {
        FrameReader {
            frames,
            spare: Vec::new(),
        }
    }
}

impl FrameReader {
    /// A server's reader ([`frame::FrameReader::server`]).
    pub(crate) fn server() -> FrameReader {
        FrameReader {
            frames: frame::FrameReader::server(),
            spare: Vec::new(),
        }
    }

    /// Reads one reply. The common one from this crate's server, `('#RETURN', value)` in
    /// protocol 3 with plain data, is decoded without building the tuple around the value.
    pub(crate) fn recv_reply(
        &mut self,
        stream: &TcpStream,
        cap: usize,
        limits: &Limits,
    ) -> Result<Incoming, Error> {
        self.frames.with_frame(stream, cap, |payload| {
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
        let spare = &mut self.spare;
        self.frames.with_frame(stream, cap, |payload| {
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
        args: &[PyValue],
        kwargs: &[(String, PyValue)],
    ) -> Result<(), Error> {
        self.frames
            .send_with(stream, |out| request_into(ident, method, args, kwargs, out))
    }

    /// Writes the reply `(kind, payload)` as one frame.
    pub(crate) fn send_reply(
        &mut self,
        stream: &TcpStream,
        kind: &str,
        payload: &PyValue,
    ) -> Result<(), Error> {
        self.frames
            .send_with(stream, |out| reply_into(kind, payload, out))
    }
}
