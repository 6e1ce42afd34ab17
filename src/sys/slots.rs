//! Report slots in shared memory, for fork children: a `MAP_SHARED` anonymous mapping made by
//! the parent before it forks, so that a child writes its small report where the parent reads
//! it, with no system call and no copy-on-write fault (a shared page is not write-protected by
//! `fork`). Creating a socket pair per child, sending and receiving on it, cost a fork
//! start+join about 20 µs of its ~120 µs floor here.
//!
//! A slot is a 4 KiB page: a state word, the length and tag of the report, then its bytes. The
//! child fills the bytes, then sets the state with release ordering; the parent reads the state
//! with acquire ordering once the child has exited, copies the report out and clears the slot.

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

/// The size of one slot.
const SLOT_SIZE: usize = 4096;
/// State word, length (u32), tag (u8), padding.
const HEADER: usize = 16;
/// The most report bytes one slot holds.
const SLOT_PAYLOAD: usize = SLOT_SIZE - HEADER;

const EMPTY: u32 = 0;
const READY: u32 = 1;

/// `count` slots in one shared anonymous mapping.
pub(crate) struct SharedSlots {
    base: NonNull<u8>,
    count: usize,
}

// SAFETY: the mapping is plain shared memory owned by this value; every access goes through
// the state word (an atomic) or copies bounded by the slot size, as the module docs describe.
unsafe impl Send for SharedSlots {}
// SAFETY: as above; concurrent users work on different slots (a slot is owned by one ticket).
unsafe impl Sync for SharedSlots {}

impl SharedSlots {
    /// Maps `count` slots (no memory is committed until a slot is used).
    pub(crate) fn new(count: usize) -> io::Result<SharedSlots> {
        let len = count * SLOT_SIZE;
        // SAFETY: a fresh anonymous mapping, not overlapping anything (no address hint).
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base =
            NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(SharedSlots { base, count })
    }

    pub(crate) fn count(&self) -> usize {
        self.count
    }

    fn slot(&self, i: usize) -> *mut u8 {
        assert!(i < self.count, "slot {i} out of range");
        // SAFETY: `i < count`, so the offset stays inside the mapping.
        unsafe { self.base.as_ptr().add(i * SLOT_SIZE) }
    }

    fn state(&self, i: usize) -> &AtomicU32 {
        // SAFETY: the slot starts page-aligned, so its first four bytes are an aligned u32 that
        // is only ever accessed atomically, and the mapping lives as long as `self`.
        unsafe { &*self.slot(i).cast::<AtomicU32>() }
    }

    /// Makes slot `i` empty for a new child (in the parent, before the fork: the write also
    /// brings the page in, so the child's write to it costs no fault).
    pub(crate) fn clear(&self, i: usize) {
        self.state(i).store(EMPTY, Ordering::Release);
    }

    /// In the child: stores a report in slot `i`. `false` if it does not fit.
    pub(crate) fn publish(&self, i: usize, tag: u8, body: &[u8]) -> bool {
        if body.len() > SLOT_PAYLOAD {
            return false;
        }
        let slot = self.slot(i);
        // SAFETY: header and body lie inside slot `i`, which only this child writes until it
        // exits (the parent reads it only after that).
        unsafe {
            slot.add(4)
                .cast::<[u8; 4]>()
                .write((body.len() as u32).to_le_bytes());
            slot.add(8).write(tag);
            std::ptr::copy_nonoverlapping(body.as_ptr(), slot.add(HEADER), body.len());
        }
        self.state(i).store(READY, Ordering::Release);
        true
    }

    /// In the parent, once the child has exited: the report in slot `i` if there is one; the
    /// slot is empty afterwards. A length beyond the slot (a child that scribbled) is clipped.
    pub(crate) fn take(&self, i: usize) -> Option<(u8, Vec<u8>)> {
        if self.state(i).load(Ordering::Acquire) != READY {
            return None;
        }
        let slot = self.slot(i);
        // SAFETY: inside slot `i`; the child that wrote it has exited, so nothing writes it now.
        let (len, tag, body) = unsafe {
            let len = u32::from_le_bytes(slot.add(4).cast::<[u8; 4]>().read()) as usize;
            let len = len.min(SLOT_PAYLOAD);
            let tag = slot.add(8).read();
            let body = std::slice::from_raw_parts(slot.add(HEADER), len).to_vec();
            (len, tag, body)
        };
        debug_assert_eq!(body.len(), len);
        self.clear(i);
        Some((tag, body))
    }
}

impl Drop for SharedSlots {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`, which nothing references any more.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.count * SLOT_SIZE);
        }
    }
}

impl std::fmt::Debug for SharedSlots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedSlots")
            .field("count", &self.count)
            .finish()
    }
}
