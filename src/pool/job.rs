//! What a unit of pool work is, and how batches of them travel.
//!
//! A [`Task`] is one call: an [`TaggedCall`] naming the function and its trampoline, the pickled
//! arguments, and where its result goes (a [`Collector`] slot). `apply` makes one task; `map`
//! makes one task per chunk, whose trampoline runs the function on every item of the chunk.
//!
//! # Wire format (both directions are hand-encoded, little-endian; only the payloads are pickled)
//! Parent → worker, one message per batch: for each task, `id: u64`, the 32-byte entry
//! (two offsets and their tag, see `bootstrap::TaggedCall`),
//! `len: u32` and `len` bytes of pickled arguments.
//! Worker → parent, one message per flush: `busy_ns: u64` (time spent running these tasks,
//! for the parent's batch sizing), then for each task `id: u64`, `tag: u8` (0 returned, 1
//! failed), `len: u32` and the pickled result or [`Failure`].

use std::sync::Arc;

use crate::codec;
use crate::process::bootstrap::{Failure, TaggedCall};
use crate::Error;

use super::result::Collector;

/// The id of the result message a worker sends when its initializer failed.
pub(crate) const INIT_FAILED_ID: u64 = u64::MAX;

pub(crate) const TAG_RETURNED: u8 = 0;
pub(crate) const TAG_FAILED: u8 = 1;

/// One call waiting for, or held by, a worker.
pub(crate) struct Task {
    pub(crate) id: u64,
    pub(crate) entry: TaggedCall,
    pub(crate) args: Vec<u8>,
    pub(crate) sink: Arc<Collector>,
    /// The slot of `sink` that the result fills (the chunk number of a map).
    pub(crate) index: usize,
}

impl std::fmt::Debug for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Task")
            .field("id", &self.id)
            .field("index", &self.index)
            .field("args", &self.args.len())
            .finish()
    }
}

impl Task {
    /// The bytes this task adds to a batch message.
    pub(crate) fn wire_len(&self) -> usize {
        Task::HEADER_LEN + self.args.len()
    }

    /// What precedes the arguments on the wire: id, entry, length.
    pub(crate) fn header(&self) -> [u8; Task::HEADER_LEN] {
        let mut header = [0; Task::HEADER_LEN];
        header[..8].copy_from_slice(&self.id.to_le_bytes());
        header[8..8 + TaggedCall::LEN].copy_from_slice(&self.entry.to_bytes());
        header[8 + TaggedCall::LEN..].copy_from_slice(&(self.args.len() as u32).to_le_bytes());
        header
    }

    pub(crate) const HEADER_LEN: usize = 8 + TaggedCall::LEN + 4;

    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.header());
        out.extend_from_slice(&self.args);
    }
}

/// A cursor over a little-endian message.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { rest: bytes }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.rest.len() < n {
            return None;
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Some(head)
    }

    pub(crate) fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    /// The next task of a batch: id, entry, pickled arguments.
    pub(crate) fn task(&mut self) -> Option<(u64, TaggedCall, &'a [u8])> {
        let id = self.u64()?;
        let entry = TaggedCall::from_bytes(self.take(TaggedCall::LEN)?.try_into().ok()?);
        let len = self.u32()? as usize;
        Some((id, entry, self.take(len)?))
    }

    /// The next result of a flush: id, tag, body.
    pub(crate) fn result(&mut self) -> Option<(u64, u8, &'a [u8])> {
        let id = self.u64()?;
        let tag = self.u8()?;
        let len = self.u32()? as usize;
        Some((id, tag, self.take(len)?))
    }
}

/// Appends one result record to a flush buffer.
pub(crate) fn push_result(out: &mut Vec<u8>, id: u64, tag: u8, body: &[u8]) {
    out.extend_from_slice(&id.to_le_bytes());
    out.push(tag);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
}

/// Turns a worker's failure report into the caller's error.
pub(crate) fn failure_error(body: &[u8], pid: u32, sink: &Collector) -> Error {
    match codec::decode::<Failure>(body) {
        Ok(Failure::Panicked { message, location }) => Error::Panicked {
            pid,
            message,
            location,
        },
        Ok(Failure::ArgsUndecodable(reason)) => Error::Deserialize {
            type_name: sink.arg_type,
            reason,
        },
        Ok(Failure::ResultUnencodable(reason)) => Error::Serialize {
            type_name: sink.result_type,
            reason,
        },
        Ok(Failure::Refused(reason)) => Error::Bootstrap { pid, reason },
        Ok(Failure::Unauthenticated) => Error::UnauthenticatedFunction {
            what: "a pool task",
        },
        Err(e) => e,
    }
}
