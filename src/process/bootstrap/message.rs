//! The two messages between a parent and its child, and the marker: the bootstrap [`Header`]
//! (parent → child, encoded by hand) and how the child reads it; the child's report ([`Report`],
//! [`Failure`]), written to its socket or fork ticket ([`ReportTo`]) inline or in a memfd, and
//! how the parent parses it.

use std::os::fd::{AsFd, OwnedFd, RawFd};

use serde::{Deserialize, Serialize};

use super::function_ref::TaggedCall;
use super::trampoline::Outcome;
use crate::codec;
use crate::connection::Connection;
use crate::process::{AuthKey, StartMethod};
use crate::{sys, Error};

/// The environment variable that turns a re-executed binary into a child or a forkserver.
pub(crate) const MARKER: &std::ffi::CStr = c"MULTIPROC_BOOTSTRAP";
pub(crate) const MARKER_NAME: &str = "MULTIPROC_BOOTSTRAP";
/// Where a spawned child finds its socket, and a forkserver its control socket and alive pipe.
pub(crate) const CHILD_FD: RawFd = 3;
pub(crate) const ALIVE_FD: RawFd = 4;

pub(super) const TAG_RETURNED: u8 = 0;
pub(super) const TAG_FAILED: u8 = 1;
/// Set on the tag when the body is in a memfd, the last descriptor of the message.
pub(super) const IN_MEMFD: u8 = 0x80;

/// Report bodies (a result, or a failure such as a long panic message) up to this size travel
/// inline; larger ones in a memfd. Either way the
/// report message stays small enough to sit in the socket buffer, so a child never blocks
/// writing it and can always exit at once, and the parent waits for one event, the exit,
/// instead of two (the report, then the exit): one wake-up fewer per process.
pub(crate) const INLINE_RESULT_MAX: usize = 16 * 1024;

/// What the parent tells a spawn or forkserver child, beside the arguments. Encoded by hand
/// (fixed-width little-endian fields, then the name) rather than pickled: the child decodes
/// it before anything else, and serde-pickle's value tree would cost it allocations (each one a
/// copy-on-write page fault in a forked child). The parent-alive pipe is the last descriptor
/// of the message.
#[derive(Debug, PartialEq)]
pub(crate) struct Header {
    pub(crate) nonce: u64,
    pub(crate) exe: [i64; 5],
    /// The trampoline and the function, tagged with `authkey`.
    pub(crate) entry: TaggedCall,
    /// The family's key, which the child adopts.
    pub(crate) authkey: [u8; AuthKey::LEN],
    pub(crate) parent_pid: i32,
    pub(crate) daemon: bool,
    pub(crate) start_method: StartMethod,
    pub(crate) name: String,
}

impl Header {
    const FIXED: usize = 8 + 5 * 8 + TaggedCall::LEN + AuthKey::LEN + 4 + 1 + 1 + 4;

    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::FIXED + self.name.len());
        out.extend_from_slice(&self.nonce.to_le_bytes());
        for field in self.exe {
            out.extend_from_slice(&field.to_le_bytes());
        }
        out.extend_from_slice(&self.entry.to_bytes());
        out.extend_from_slice(&self.authkey);
        out.extend_from_slice(&self.parent_pid.to_le_bytes());
        out.push(self.daemon as u8);
        out.push(self.start_method as u8);
        out.extend_from_slice(&(self.name.len() as u32).to_le_bytes());
        out.extend_from_slice(self.name.as_bytes());
        out
    }

    pub(crate) fn from_bytes(bytes: &[u8]) -> Option<Header> {
        let mut rest = bytes;
        let mut take = |n: usize| -> Option<&[u8]> {
            let (head, tail) = (rest.get(..n)?, rest.get(n..)?);
            rest = tail;
            Some(head)
        };
        let nonce = u64::from_le_bytes(take(8)?.try_into().ok()?);
        let mut exe = [0i64; 5];
        for field in &mut exe {
            *field = i64::from_le_bytes(take(8)?.try_into().ok()?);
        }
        let entry = TaggedCall::from_bytes(take(TaggedCall::LEN)?.try_into().ok()?);
        let authkey = take(AuthKey::LEN)?.try_into().ok()?;
        let parent_pid = i32::from_le_bytes(take(4)?.try_into().ok()?);
        let daemon = take(1)?[0] != 0;
        let start_method = match take(1)?[0] {
            m if m == StartMethod::Fork as u8 => StartMethod::Fork,
            m if m == StartMethod::Spawn as u8 => StartMethod::Spawn,
            _ => StartMethod::Forkserver,
        };
        let name_len = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
        let name = String::from_utf8(take(name_len)?.to_vec()).ok()?;
        Some(Header {
            nonce,
            exe,
            entry,
            authkey,
            parent_pid,
            daemon,
            start_method,
            name,
        })
    }
}

/// Why a child produced no result.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Failure {
    Panicked {
        message: String,
        location: Option<String>,
    },
    ArgsUndecodable(String),
    ResultUnencodable(String),
    Refused(String),
    /// A function reference's tag did not verify: nothing was called.
    Unauthenticated,
}

/// Where a child sends its report: its own socket (spawn, forkserver), or its fork ticket.
pub(crate) enum ReportTo<'a> {
    Socket(Connection),
    Ticket(&'a crate::process::Ticket),
}

impl ReportTo<'_> {
    fn send(&self, tag: u8, body: &[u8], fds: &[OwnedFd]) -> Result<(), Error> {
        match self {
            ReportTo::Socket(conn) => conn.send_parts(&[&[tag], body], fds),
            ReportTo::Ticket(ticket) => ticket.publish(tag, body, fds),
        }
    }
}

/// A bootstrap message as read: its header (checked against the marker's nonce and this
/// executable), the whole frame, the header's length, and the descriptors.
pub(super) type Message = (Header, Vec<u8>, usize, Vec<OwnedFd>);

/// Reads the bootstrap message and checks who it is for.
pub(super) fn read_message(
    conn: &Connection,
    expected_nonce: Option<u64>,
) -> Result<Message, String> {
    let (frame, fds) = conn
        .recv_raw()
        .map_err(|e| format!("no bootstrap message from the parent: {e}"))?;
    let header_len = frame
        .get(..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .filter(|&n| frame.len() >= 4 + n)
        .ok_or("truncated bootstrap message")?;
    let header =
        Header::from_bytes(&frame[4..4 + header_len]).ok_or("malformed bootstrap header")?;
    if expected_nonce.is_some_and(|n| n != header.nonce) {
        return Err("the bootstrap message does not match this child's marker".into());
    }
    let exe = sys::exe_identity().map_err(|e| format!("cannot stat /proc/self/exe: {e}"))?;
    if exe != header.exe {
        return Err(
            "this executable is not the parent's, so it cannot find the function by address \
             (was the binary rebuilt, or another executable set?)"
                .into(),
        );
    }
    Ok((header, frame, header_len, fds))
}

pub(super) fn send_outcome(report: &ReportTo<'_>, outcome: Outcome) -> Result<(), Error> {
    let (tag, body, mut fds) = match outcome {
        Outcome::Returned(bytes, fds) => (TAG_RETURNED, bytes, fds),
        Outcome::Failed(failure) => (
            TAG_FAILED,
            codec::Encoded::Heap(codec::encode(&failure)?),
            Vec::new(),
        ),
    };
    if body.len() <= INLINE_RESULT_MAX {
        return report.send(tag, &body, &fds);
    }
    match sys::memfd_with(c"multiproc-report", &body) {
        Ok(memfd) => {
            drop(body);
            fds.push(memfd);
            report.send(tag | IN_MEMFD, &[], &fds)
        }
        // Say why rather than leave the parent with no report at all.
        Err(e) => {
            let failure = Failure::ResultUnencodable(format!("cannot create a memfd: {e}"));
            report.send(TAG_FAILED, &codec::encode(&failure)?, &[])?;
            Err(Error::Os {
                op: "memfd",
                source: e.into(),
            })
        }
    }
}

/// The parent's reading of the child's one message.
pub(crate) enum Report {
    /// The whole frame (the pickled result starts at byte 1, after the tag: slicing it there
    /// avoids copying a large result) and the handles that came with it.
    Returned(Vec<u8>, Vec<OwnedFd>),
    Failed(Failure),
}

/// Parses the child's message.
pub(crate) fn parse_report(frame: Vec<u8>, mut fds: Vec<OwnedFd>) -> Result<Report, Error> {
    let tag = *frame.first().ok_or_else(malformed_report)?;
    let frame = if tag & IN_MEMFD != 0 {
        let memfd = fds.pop().ok_or_else(malformed_report)?;
        // Keep a leading byte where the tag was, so the body starts at 1 as inline.
        let mut whole = vec![tag & !IN_MEMFD];
        sys::read_whole_file(memfd.as_fd(), &mut whole).map_err(Error::os("read memfd"))?;
        whole
    } else {
        frame
    };
    match tag & !IN_MEMFD {
        TAG_RETURNED => Ok(Report::Returned(frame, fds)),
        TAG_FAILED => Ok(Report::Failed(codec::decode(&frame[1..])?)),
        _ => Err(malformed_report()),
    }
}

pub(super) fn malformed_report() -> Error {
    Error::Malformed {
        what: "report from the child",
    }
}
