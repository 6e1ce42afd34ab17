//! How fork children report to their parent without a socket of their own.
//!
//! A spawn or forkserver child gets a socket pair: the bootstrap message goes one way, the
//! report the other. A fork child has its arguments in memory, so the pair would serve only the
//! report, and making it (plus the send, the receive and the closes) cost a fork start+join
//! about 20 µs of a ~120 µs floor. Instead each runtime keeps, made once:
//! - shared-memory slots (`sys::SharedSlots`): a child whose report is small and carries no
//!   descriptors writes it into the slot its [`Ticket`] names, with no system call;
//! - one overflow socket (`SOCK_SEQPACKET`) that every fork child inherits: larger reports
//!   (the body then in a memfd, as on a child's own socket), reports carrying descriptors, and
//!   children that found no free slot send a record tagged with their ticket id.
//!
//! Records for other children met while looking for one's own are kept in a stash. A parent
//! waiting for a child also drains the overflow socket, and so does the reaper thread, so a
//! child blocked on a full overflow socket is always unblocked. A ticket is released only once
//! its child has ended (it lives in the child's shared state, which outlives the child), so a
//! slot is never reused while a writer may still write it, and records of children nobody
//! joined are dropped then.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::sys;
use crate::Error;

/// Slots per process: more un-joined fork children than this use the overflow socket.
const SLOTS: usize = 128;

/// A report as the child sent it: the tag byte first, then the body (or the body in a memfd
/// among the descriptors), as `bootstrap::parse_report` reads it.
pub(crate) type RawReport = (Vec<u8>, Vec<OwnedFd>);

/// The per-runtime channel of fork children's reports.
pub(crate) struct ForkReports {
    slots: Option<sys::SharedSlots>,
    free: Mutex<Vec<usize>>,
    /// The overflow socket: children write to `send`, the parent reads `recv`.
    send: OwnedFd,
    recv: OwnedFd,
    stash: Mutex<HashMap<u64, RawReport>>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for ForkReports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForkReports")
            .field("slots", &self.slots)
            .finish_non_exhaustive()
    }
}

impl ForkReports {
    pub(crate) fn new() -> io::Result<ForkReports> {
        let (recv, send) = sys::seqpacket_pair()?;
        // Tracked like connection ends: a fork child keeps only `send` (see fork::start), and
        // its own children close both.
        sys::track_fd(recv.as_raw_fd());
        sys::track_fd(send.as_raw_fd());
        let slots = sys::SharedSlots::new(SLOTS).ok();
        let free = (0..slots.as_ref().map_or(0, sys::SharedSlots::count)).collect();
        Ok(ForkReports {
            slots,
            free: Mutex::new(free),
            send,
            recv,
            stash: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        })
    }

    /// A ticket for the next fork child, with a slot if one is free.
    pub(crate) fn reserve(&'static self) -> Ticket {
        let slot = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop();
        if let (Some(i), Some(slots)) = (slot, &self.slots) {
            slots.clear(i);
        }
        Ticket {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            slot,
            reports: self,
            collected: AtomicBool::new(false),
        }
    }

    /// The end the parent reads, for waiting on it beside a child's pidfd.
    pub(crate) fn recv_fd(&self) -> BorrowedFd<'_> {
        self.recv.as_fd()
    }

    /// Moves every record waiting on the overflow socket into the stash; returns the one for
    /// `wanted`, if it came.
    pub(crate) fn drain(&self, wanted: Option<u64>) -> Option<RawReport> {
        let mut stash = self.stash.lock().unwrap_or_else(|e| e.into_inner());
        let mut found = wanted.and_then(|id| stash.remove(&id));
        loop {
            let mut record = Vec::new();
            let mut fds = Vec::new();
            match sys::recv_with_fds_into_vec(
                self.recv.as_fd(),
                &mut record,
                RECORD_MAX,
                &mut fds,
                true,
            ) {
                Ok(n) if n > 8 => {
                    let id = u64::from_le_bytes(record[..8].try_into().unwrap_or_default());
                    let report = (record.split_off(8), fds);
                    if found.is_none() && Some(id) == wanted {
                        found = Some(report);
                    } else {
                        stash.insert(id, report);
                    }
                }
                // Too short to be a record: drop it, and look at the next.
                Ok(n) if n > 0 => continue,
                _ => return found,
            }
        }
    }
}

/// The largest overflow record: the id, the tag and an inline body (larger bodies travel in a
/// memfd, see `bootstrap::send_outcome`).
const RECORD_MAX: usize = 8 + 1 + crate::process::bootstrap::INLINE_RESULT_MAX;

/// One fork child's way to report: its id, and its slot if it got one.
pub(crate) struct Ticket {
    id: u64,
    slot: Option<usize>,
    reports: &'static ForkReports,
    /// Set once `collect` has run: nothing of this child is left to drain.
    collected: AtomicBool,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("id", &self.id)
            .field("slot", &self.slot)
            .finish()
    }
}

impl Ticket {
    /// The channel this ticket reports on.
    pub(crate) fn reports(&self) -> &'static ForkReports {
        self.reports
    }

    /// The overflow socket's sending end, which the child keeps open.
    pub(crate) fn send_fd(&self) -> RawFd {
        self.reports.send.as_raw_fd()
    }

    /// In the child: reports `tag` and `body` (with `fds`, which may hold the body's memfd), in
    /// the slot when it can, else on the overflow socket.
    pub(crate) fn publish(&self, tag: u8, body: &[u8], fds: &[OwnedFd]) -> Result<(), Error> {
        if fds.is_empty() {
            if let (Some(i), Some(slots)) = (self.slot, &self.reports.slots) {
                if slots.publish(i, tag, body) {
                    return Ok(());
                }
            }
        }
        let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
        let id = self.id.to_le_bytes();
        sys::send_all(self.reports.send.as_fd(), &[&id, &[tag], body], &raw).map_err(|e| {
            Error::Os {
                op: "sendmsg",
                source: e.into(),
            }
        })
    }

    /// In the parent, once the child has ended: its report, if it sent one.
    pub(crate) fn collect(&self) -> Option<RawReport> {
        self.collected.store(true, Ordering::Release);
        if let (Some(i), Some(slots)) = (self.slot, &self.reports.slots) {
            if let Some((tag, mut body)) = slots.take(i) {
                body.insert(0, tag);
                return Some((body, Vec::new()));
            }
        }
        self.reports.drain(Some(self.id))
    }
}

impl Drop for Ticket {
    /// Runs once the child has ended (the ticket lives in its shared state): frees the slot and
    /// forgets any report nobody collected.
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            if let Some(slots) = &self.reports.slots {
                slots.clear(i);
            }
            self.reports
                .free
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(i);
        }
        if !self.collected.load(Ordering::Acquire) {
            drop(self.reports.drain(Some(self.id)));
        }
    }
}
