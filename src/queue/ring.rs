//! The part of a [`Queue`](super::Queue) that every process shares: a ring of pickled items in
//! shared memory, guarded by a lock that survives its owner's death, beside a record socket for
//! the items that cannot live in shared memory (items carrying OS handles, and items too large
//! for the ring).
//!
//! # Layout
//! A memfd mapped `MAP_SHARED`: a 512-byte header, then `capacity` bytes of ring. The header
//! holds the ring's immutable shape (magic, capacity, maxsize), then, on separate cache lines,
//! the ring positions, the futex words that consumers, producers and joiners sleep on, and the
//! lock (a `sys::RobustLock` block). `head` and `tail` count bytes from the start of time (`u64`, never wrapping); an
//! entry is a 16-byte header (length, kind, writer) and its bytes, padded to 8. An entry that would
//! cross the ring's end is preceded by a `WRAP` marker that sends readers back to offset 0.
//!
//! # Why each item stays sound whatever dies
//! Everything under the lock is a copy followed by one 8-byte store that commits it: a producer
//! writes the entry, then `tail`; a consumer copies the entry out, then moves `head`. A process
//! killed inside its critical section leaves the ring as it was before that section, and the
//! next taker of the lock (which takes it over from the dead owner, [`sys::RobustLock`]) repairs
//! the item count, the only derived value. So a consumer killed while taking an item loses at
//! most that item, a producer killed mid-put puts nothing, and nobody waits on a dead process.
//!
//! A large item (64 KiB or more, after a large one) is the exception: its producer reserves a
//! `PENDING` entry under the lock, naming itself, writes the pickle after releasing the lock
//! (so that its copy runs beside a consumer's instead of after it), and commits the entry under
//! the lock again. Readers wait for a pending entry at the front, as the items behind it are
//! not theirs to take yet; one whose writer died (checked every 100 ms by whoever waits, reader
//! or producer waiting for room) becomes a `SKIP` entry that readers step over, giving back
//! the room it held.
//!
//! An item that travels on the socket leaves a `SOCKET` entry in the ring. The producer sends the
//! record and writes the entry under the ring's lock, and a consumer takes the entry and receives
//! the record under it too, so records and entries stay in the same order. The record is in the
//! socket before its entry is visible; if a consumer died between the two steps (taking the
//! record with it), the next one finds no record for the entry and skips it.

use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::codec;
use crate::connection::{Pipe, RecvEnd, SendEnd, RECORD_MAX};
use crate::sys::{self, Acquired, OnSignal, RobustLock, SharedMapping, OWNER_CHECK};
use crate::Error;

const MAGIC: usize = 0;
const CAPACITY: usize = 8;
const MAXSIZE: usize = 16;
const HEAD: usize = 72;
const TAIL: usize = 80;
const COUNT: usize = 88;
const UNFINISHED: usize = 92;
const INFLIGHT: usize = 96;
const SHUTDOWN: usize = 100;
const PUT_SEQ: usize = 128;
const GET_WAITERS: usize = 132;
const GET_SEQ: usize = 192;
const PUT_WAITERS: usize = 196;
const DONE_SEQ: usize = 256;
const JOIN_WAITERS: usize = 260;
/// The lock's block (`sys::LOCK_SIZE` bytes), on a cache line of its own.
const LOCK: usize = 320;
const DATA: usize = 512;

const MAGIC_VALUE: u32 = u32::from_le_bytes(*b"MPQ2");

/// Ring bytes. Pages are only allocated as the ring is first written; a queue that has carried
/// this much data holds this much shared memory until its last handle closes.
pub(crate) const RING_BYTES: usize = 4 << 20;

/// The largest pickle kept in the ring; larger ones travel in a memfd.
const RING_ITEM_MAX: usize = RING_BYTES / 2 - ENTRY_HEADER;

/// An entry's header: its length, its kind, and for a pending entry the thread writing it.
const ENTRY_HEADER: usize = 16;
const KIND_DATA: u32 = 1;
const KIND_SOCKET: u32 = 2;
const KIND_WRAP: u32 = 3;
/// Reserved by a producer that is writing it outside the lock; not yet an item.
const KIND_PENDING: u32 = 4;
/// Abandoned while pending (its writer failed or died); readers step over it.
const KIND_SKIP: u32 = 5;

/// Socket record tags (as in `SimpleQueue`): the pickle follows, or is in the memfd attached last.
const RECORD_INLINE: u8 = 0;
const RECORD_MEMFD: u8 = 1;
const RECORD_INLINE_MAX: usize = RECORD_MAX - 1;

/// Pickles at least this large are unpickled straight from the ring, under its lock.
const IN_PLACE_MIN: usize = 64 * 1024;

/// How long a waiting consumer spins on the item count before it sleeps.
const SPINS: u32 = 2000;

/// A pickled item ready to go, with the descriptors it carries.
pub(crate) enum Encoded {
    /// Lives in the ring.
    Ring(Vec<u8>),
    /// Travels as a socket record: the record's bytes (tag first) and descriptors.
    Record(Vec<u8>, Vec<OwnedFd>),
}

impl Encoded {
    /// Pickles `item`, choosing its route; a large item's memfd is made here, so that an OS
    /// failure reaches the caller.
    /// `bytes` is an empty buffer to pickle into (a recycled one saves allocations: see
    /// [`into_buffer`](Self::into_buffer)).
    pub(crate) fn new<T: Serialize>(item: &T, mut bytes: Vec<u8>) -> Result<Encoded, Error> {
        let mut fds = Vec::new();
        bytes.clear();
        codec::encode_into(&mut bytes, item, &mut fds)?;
        if fds.is_empty() && bytes.len() <= RING_ITEM_MAX {
            return Ok(Encoded::Ring(bytes));
        }
        if bytes.len() <= RECORD_INLINE_MAX {
            let mut record = Vec::with_capacity(bytes.len() + 1);
            record.push(RECORD_INLINE);
            record.extend_from_slice(&bytes);
            return Ok(Encoded::Record(record, fds));
        }
        let memfd = sys::memfd_with(c"multiproc-queue-item", &bytes).map_err(Error::os("memfd"))?;
        fds.push(memfd);
        Ok(Encoded::Record(vec![RECORD_MEMFD], fds))
    }

    /// The buffer of a ring item, for the next [`new`](Self::new).
    pub(crate) fn into_buffer(self) -> Option<Vec<u8>> {
        match self {
            Encoded::Ring(bytes) => Some(bytes),
            Encoded::Record(..) => None,
        }
    }
}

/// What a put writes.
pub(crate) enum Src<'a> {
    /// An item pickled beforehand.
    Encoded(&'a Encoded),
    /// A pickle of the given length that the function writes straight into the ring (it must
    /// fill the slice it is given, and carry no handles).
    Direct(usize, &'a mut dyn FnMut(&mut [u8]) -> Result<(), Error>),
}

impl Src<'_> {
    /// Whether the item can live in the ring (the largest pickle that fits).
    pub(crate) fn direct_fits(len: usize) -> bool {
        len <= RING_ITEM_MAX
    }
}

/// What a consumer took from the ring.
pub(crate) enum Taken {
    /// The pickle is in the caller's buffer.
    Data,
    /// A large pickle was handed to the caller's `in_place` function under the lock.
    InPlace,
    /// A socket record's payload (tag first) and descriptors.
    Record(Vec<u8>, Vec<OwnedFd>),
}

impl Taken {
    /// Unpickles what was taken; `buf` is the buffer [`Ring::take_until`] filled.
    pub(crate) fn decode<T: serde::de::DeserializeOwned>(self, buf: &[u8]) -> Result<T, Error> {
        match self {
            Taken::Data => codec::decode(buf),
            Taken::InPlace => Err(Error::Malformed {
                what: "queue item (decoded in place, it has no bytes left to decode)",
            }),
            Taken::Record(record, mut fds) => {
                let malformed = || Error::Malformed {
                    what: "queue record",
                };
                match record.first() {
                    Some(&RECORD_INLINE) => {
                        codec::decode_in(&record[1..], &mut codec::FdTable::new(fds))
                    }
                    Some(&RECORD_MEMFD) => {
                        let memfd = fds.pop().ok_or_else(malformed)?;
                        let mut bytes = Vec::new();
                        sys::read_whole_file(memfd.as_fd(), &mut bytes)
                            .map_err(Error::os("read memfd"))?;
                        codec::decode_in(&bytes, &mut codec::FdTable::new(fds))
                    }
                    _ => Err(malformed()),
                }
            }
        }
    }
}

/// One process's view of the shared queue.
pub(crate) struct Ring {
    /// Shared with the lock's robust list record while a thread holds it (`sys::RobustLock`).
    map: Arc<SharedMapping>,
    reader: RecvEnd,
    writer: SendEnd,
    capacity: u64,
    maxsize: u32,
}

/// Holds the ring's lock; releases it when dropped (also on unwind).
struct Locked<'a> {
    ring: &'a Ring,
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        self.ring.lock().unlock();
    }
}

impl Ring {
    /// A new, empty ring; `maxsize` 0 is unbounded.
    pub(crate) fn new(maxsize: u32) -> Result<Ring, Error> {
        let map = SharedMapping::new(DATA + RING_BYTES).map_err(Error::os("memfd"))?;
        map.write(CAPACITY, RING_BYTES as u64);
        map.write(MAXSIZE, maxsize);
        map.write(MAGIC, MAGIC_VALUE);
        let (reader, writer) = Pipe::one_way()?;
        Ok(Ring {
            map: Arc::new(map),
            reader,
            writer,
            capacity: RING_BYTES as u64,
            maxsize,
        })
    }

    fn from_parts(map: SharedMapping, reader: RecvEnd, writer: SendEnd) -> Result<Ring, String> {
        let capacity: u64 = map.read(CAPACITY);
        if map.read::<u32>(MAGIC) != MAGIC_VALUE
            || capacity % 8 != 0
            || capacity == 0
            || DATA as u64 + capacity > map.len() as u64
        {
            return Err("the shared memory received is not a queue".into());
        }
        let maxsize = map.read(MAXSIZE);
        Ok(Ring {
            map: Arc::new(map),
            reader,
            writer,
            capacity,
            maxsize,
        })
    }

    pub(crate) fn maxsize(&self) -> u32 {
        self.maxsize
    }

    fn word(&self, offset: usize) -> &AtomicU32 {
        self.map.atomic_u32(offset)
    }

    fn lock(&self) -> RobustLock<'_> {
        RobustLock::new(&self.map, LOCK)
    }

    /// Takes the lock (`None`: the deadline passed first), repairing the count after a dead
    /// owner.
    fn locked(&self, deadline: Option<Instant>) -> Option<Locked<'_>> {
        let how = self.lock().lock_until(deadline)?;
        let locked = Locked { ring: self };
        if how == Acquired::OwnerDied {
            self.repair();
        }
        Some(locked)
    }

    /// Recounts the items and the pending entries between head and tail (a process killed
    /// between moving a position and updating a count leaves it one off).
    fn repair(&self) {
        let (mut count, mut inflight) = (0u32, 0u32);
        for entry in self.entries() {
            match entry.kind {
                KIND_DATA | KIND_SOCKET => count += 1,
                KIND_PENDING => inflight += 1,
                _ => {}
            }
        }
        self.word(COUNT).store(count, Ordering::SeqCst);
        self.word(INFLIGHT).store(inflight, Ordering::SeqCst);
    }

    /// The entries between head and tail, wrap markers stepped over; the walk ends at an entry
    /// of no known kind. Callers hold the lock.
    fn entries(&self) -> impl Iterator<Item = RingEntry> + '_ {
        let (mut at, tail) = (self.map.read::<u64>(HEAD), self.map.read::<u64>(TAIL));
        std::iter::from_fn(move || {
            while at < tail {
                let pos = (at % self.capacity) as usize;
                let (len, kind) = self.entry_header(pos);
                match kind {
                    KIND_WRAP => at += self.capacity - pos as u64,
                    KIND_DATA | KIND_SOCKET | KIND_PENDING | KIND_SKIP => {
                        let entry = RingEntry { at, pos, len, kind };
                        at += entry_size(len as usize) as u64;
                        return Some(entry);
                    }
                    _ => return None,
                }
            }
            None
        })
    }

    fn entry_header(&self, pos: usize) -> (u32, u32) {
        (
            self.map.read::<u32>(DATA + pos),
            self.map.read::<u32>(DATA + pos + 4),
        )
    }

    /// Items in the ring now.
    pub(crate) fn count(&self) -> u32 {
        self.word(COUNT).load(Ordering::SeqCst)
    }

    /// Puts one item, waiting for room until `deadline` (`None`: for ever). `Ok(false)` if the
    /// deadline passed with the queue still full; [`Error::Interrupted`] if asked to as
    /// `on_signal` says (nothing was put).
    pub(crate) fn put_until(
        &self,
        item: &mut Src<'_>,
        deadline: Option<Instant>,
        on_signal: OnSignal,
    ) -> Result<bool, Error> {
        loop {
            let seq = self.word(GET_SEQ).load(Ordering::SeqCst);
            match self.try_put(item, deadline)? {
                Put::Done => return Ok(true),
                Put::LockTimeout => return Ok(false),
                Put::NoRoom => {
                    if !self.sleep_watching_pending(
                        GET_SEQ,
                        PUT_WAITERS,
                        seq,
                        deadline,
                        on_signal,
                    )? {
                        return Ok(false);
                    }
                }
                Put::SocketFull => {
                    let writer = self.writer.as_fd().ok_or(Error::Closed)?;
                    if !sys::wait_writable_or(writer, deadline, on_signal)
                        .map_err(Error::os("poll"))?
                    {
                        return Ok(false);
                    }
                }
            }
        }
    }

    /// One attempt to put `item`: it goes in if there is room now.
    pub(crate) fn try_put(
        &self,
        item: &mut Src<'_>,
        deadline: Option<Instant>,
    ) -> Result<Put, Error> {
        let Some(_locked) = self.locked(deadline) else {
            return Ok(Put::LockTimeout);
        };
        if self.is_shut_down() {
            return Err(Error::ShutDown);
        }
        let inflight = self.word(INFLIGHT).load(Ordering::SeqCst);
        if self.maxsize != 0 && self.count() + inflight >= self.maxsize {
            return Ok(Put::NoRoom);
        }
        let len = match item {
            Src::Encoded(Encoded::Ring(bytes)) => bytes.len(),
            Src::Encoded(Encoded::Record(..)) => 0,
            Src::Direct(len, _) => *len,
        };
        let Some((pos, wrap_at)) = self.room_for(len) else {
            return Ok(Put::NoRoom);
        };
        match item {
            Src::Encoded(Encoded::Ring(bytes)) => {
                self.map.write_bytes(DATA + pos + ENTRY_HEADER, bytes);
                self.write_entry_header(pos, len as u32, KIND_DATA);
            }
            Src::Direct(len, write) => {
                // Reserve the entry and write it after releasing the lock, so that a large
                // copy in runs beside a consumer's copy out instead of after it.
                self.write_entry_header(pos, *len as u32, KIND_PENDING);
                self.map.write(DATA + pos + 8, sys::gettid());
                if let Some(wrap_pos) = wrap_at {
                    self.write_entry_header(wrap_pos, 0, KIND_WRAP);
                }
                self.advance_tail(wrap_at, *len);
                self.word(INFLIGHT).fetch_add(1, Ordering::SeqCst);
                drop(_locked);
                let mut pending = Pending {
                    ring: self,
                    pos,
                    done: false,
                };
                // SAFETY: the entry is reserved (PENDING, naming this thread) under the lock:
                // no consumer reads it and no producer writes it until it is committed, and
                // every process mapping the ring follows that protocol (module docs).
                unsafe {
                    self.map
                        .with_bytes_mut(DATA + pos + ENTRY_HEADER, *len, |bytes| write(bytes))?
                };
                pending.done = true;
                let _locked = self.locked(None);
                self.write_entry_header(pos, *len as u32, KIND_DATA);
                self.word(INFLIGHT).fetch_sub(1, Ordering::SeqCst);
                self.word(COUNT).fetch_add(1, Ordering::SeqCst);
                drop(_locked);
                self.wake_consumers();
                return Ok(Put::Done);
            }
            Src::Encoded(Encoded::Record(record, fds)) => {
                let writer = self.writer.as_fd().ok_or(Error::Closed)?;
                let raw: Vec<RawFd> = fds.iter().map(std::os::fd::AsRawFd::as_raw_fd).collect();
                if !sys::try_send_record(writer, &[record], &raw).map_err(Error::os("sendmsg"))? {
                    return Ok(Put::SocketFull);
                }
                self.write_entry_header(pos, 0, KIND_SOCKET);
            }
        }
        if let Some(wrap_pos) = wrap_at {
            self.write_entry_header(wrap_pos, 0, KIND_WRAP);
        }
        self.advance_tail(wrap_at, len);
        self.word(COUNT).fetch_add(1, Ordering::SeqCst);
        drop(_locked);
        self.wake_consumers();
        Ok(Put::Done)
    }

    /// Moves the tail past a new entry of `len` bytes (and the wrap before it): the store that
    /// publishes it.
    fn advance_tail(&self, wrap_at: Option<usize>, len: usize) {
        let tail: u64 = self.map.read(TAIL);
        let advance = match wrap_at {
            Some(wrap_pos) => (self.capacity as usize - wrap_pos) + entry_size(len),
            None => entry_size(len),
        };
        self.map.write(TAIL, tail + advance as u64);
    }

    fn wake_consumers(&self) {
        self.word(PUT_SEQ).fetch_add(1, Ordering::SeqCst);
        if self.word(GET_WAITERS).load(Ordering::SeqCst) > 0 {
            sys::futex_wake(self.word(PUT_SEQ), 1);
        }
    }

    fn wake_producers(&self) {
        self.word(GET_SEQ).fetch_add(1, Ordering::SeqCst);
        if self.word(PUT_WAITERS).load(Ordering::SeqCst) > 0 {
            sys::futex_wake(self.word(GET_SEQ), i32::MAX as u32);
        }
    }

    /// Like [`sleep`](Self::sleep), but while entries are pending, wakes every
    /// [`OWNER_CHECK`] to abandon those whose writer died (they hold room a bounded queue's
    /// producers wait for, and their place in line).
    fn sleep_watching_pending(
        &self,
        seq_at: usize,
        waiters_at: usize,
        seq: u32,
        deadline: Option<Instant>,
        on_signal: OnSignal,
    ) -> Result<bool, Error> {
        if self.word(INFLIGHT).load(Ordering::SeqCst) == 0 {
            return self.sleep(seq_at, waiters_at, seq, deadline, on_signal);
        }
        let limit = Instant::now() + OWNER_CHECK;
        let until = deadline.map_or(limit, |d| d.min(limit));
        if !self.sleep(seq_at, waiters_at, seq, Some(until), on_signal)? {
            return Ok(false);
        }
        if Instant::now() >= limit {
            self.reap_pending();
        }
        Ok(true)
    }

    /// Abandons every pending entry whose writer is dead, and steps the head over abandoned
    /// entries at the front.
    fn reap_pending(&self) {
        let Some(locked) = self.locked(None) else {
            return;
        };
        let mut reaped = false;
        for entry in self.entries() {
            let writer = self.map.read(DATA + entry.pos + 8);
            if entry.kind == KIND_PENDING && !sys::thread_alive(writer) {
                self.write_entry_header(entry.pos, entry.len, KIND_SKIP);
                self.word(INFLIGHT).fetch_sub(1, Ordering::SeqCst);
                reaped = true;
            }
        }
        drop(locked);
        if reaped {
            self.word(PUT_SEQ).fetch_add(1, Ordering::SeqCst);
            sys::futex_wake(self.word(PUT_SEQ), i32::MAX as u32);
            self.wake_producers();
        }
    }

    /// Turns the pending entry at `pos` into one readers step over (its writer failed).
    fn abandon(&self, pos: usize) {
        let locked = self.locked(None);
        let (len, _) = self.entry_header(pos);
        self.write_entry_header(pos, len, KIND_SKIP);
        self.word(INFLIGHT).fetch_sub(1, Ordering::SeqCst);
        drop(locked);
        // A consumer may be waiting for this entry, and a producer for the room it held.
        self.word(PUT_SEQ).fetch_add(1, Ordering::SeqCst);
        sys::futex_wake(self.word(PUT_SEQ), i32::MAX as u32);
        self.wake_producers();
    }

    fn write_entry_header(&self, pos: usize, len: u32, kind: u32) {
        self.map.write(DATA + pos, len);
        self.map.write(DATA + pos + 4, kind);
    }

    /// Where an entry of `len` bytes goes: its ring offset, and the offset of the wrap marker
    /// to write if it goes back to the start. `None` if there is no room now.
    fn room_for(&self, len: usize) -> Option<(usize, Option<usize>)> {
        let (head, tail) = (self.map.read::<u64>(HEAD), self.map.read::<u64>(TAIL));
        let free = self.capacity - (tail - head);
        let need = entry_size(len) as u64;
        let pos = tail % self.capacity;
        let to_end = self.capacity - pos;
        if need <= to_end {
            (need <= free).then_some((pos as usize, None))
        } else {
            (to_end + need <= free).then_some((0, Some(pos as usize)))
        }
    }

    /// Takes the item at the front, waiting until `deadline` (`None`: for ever). A small ring
    /// item's pickle is appended to `buf`; a large one is passed to `in_place` under the lock. `Ok(None)` if the deadline passed with the queue empty.
    /// [`Error::Interrupted`] if asked to as `on_signal` says (nothing was taken).
    pub(crate) fn take_until(
        &self,
        buf: &mut Vec<u8>,
        deadline: Option<Instant>,
        on_signal: OnSignal,
        in_place: &mut dyn FnMut(&[u8]),
    ) -> Result<Option<Taken>, Error> {
        // Since when the front entry has been pending (its writer may have died).
        let mut pending_since: Option<Instant> = None;
        loop {
            let seq = self.word(PUT_SEQ).load(Ordering::SeqCst);
            if self.count() > 0 {
                let Some(locked) = self.locked(deadline) else {
                    return Ok(None);
                };
                let check_writer = pending_since.is_some_and(|t| t.elapsed() >= OWNER_CHECK);
                match self.take_locked(buf, in_place, check_writer)? {
                    Front::Taken(taken) => {
                        drop(locked);
                        self.wake_producers();
                        return Ok(Some(taken));
                    }
                    Front::Empty => {
                        // The count said an item was there and the ring disagrees: trust the
                        // ring.
                        self.repair();
                        continue;
                    }
                    Front::Pending => {
                        // Items after it must wait their turn: sleep until a put commits.
                        drop(locked);
                        pending_since.get_or_insert_with(Instant::now);
                        let limit = Instant::now() + OWNER_CHECK;
                        let until = deadline.map_or(limit, |d| d.min(limit));
                        self.sleep(PUT_SEQ, GET_WAITERS, seq, Some(until), on_signal)?;
                        if deadline.is_some_and(|d| Instant::now() >= d) {
                            return Ok(None);
                        }
                        continue;
                    }
                }
            }
            if self.is_shut_down() && self.count() == 0 {
                return Err(Error::ShutDown);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(None);
            }
            // Spin briefly: a producer on another core is often a microsecond away, and
            // sleeping would make it pay for a wake-up.
            let mut spins = 0;
            while spins < SPINS
                && self.count() == 0
                && self.word(PUT_SEQ).load(Ordering::Relaxed) == seq
            {
                spins += 1;
                if spins % 256 == 0 {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            }
            if self.count() == 0
                && !self.sleep_watching_pending(PUT_SEQ, GET_WAITERS, seq, deadline, on_signal)?
            {
                return Ok(None);
            }
        }
    }

    /// Under the lock: takes the front entry. `Empty` if the ring is empty (or held only
    /// entries whose records a dead consumer took); `Pending` if the front entry is still being
    /// written. With `check_writer`, a pending entry whose writer is dead is abandoned.
    fn take_locked(
        &self,
        buf: &mut Vec<u8>,
        in_place: &mut dyn FnMut(&[u8]),
        check_writer: bool,
    ) -> Result<Front, Error> {
        let tail: u64 = self.map.read(TAIL);
        let mut head: u64 = self.map.read(HEAD);
        let corrupt = || Error::Malformed {
            what: "queue ring in shared memory",
        };
        while head < tail {
            let pos = (head % self.capacity) as usize;
            let (len, kind) = self.entry_header(pos);
            let len = len as usize;
            let next = head + entry_size(len) as u64;
            match kind {
                KIND_WRAP => {
                    head += self.capacity - pos as u64;
                    self.map.write(HEAD, head);
                }
                KIND_SKIP => {
                    head = next;
                    self.map.write(HEAD, head);
                    self.wake_producers();
                }
                KIND_PENDING => {
                    let writer: u32 = self.map.read(DATA + pos + 8);
                    if !check_writer || sys::thread_alive(writer) {
                        return Ok(Front::Pending);
                    }
                    self.write_entry_header(pos, len as u32, KIND_SKIP);
                    self.word(INFLIGHT).fetch_sub(1, Ordering::SeqCst);
                }
                KIND_DATA => {
                    if next > tail || pos + entry_size(len) > self.capacity as usize {
                        return Err(corrupt());
                    }
                    let at = DATA + pos + ENTRY_HEADER;
                    if len >= IN_PLACE_MIN {
                        // Saves copying a large pickle out; the lock is held a little longer.
                        // SAFETY: this thread holds the ring's lock and the entry is
                        // committed: no process writes it until `head` moves past it
                        // (module docs).
                        unsafe { self.map.with_bytes(at, len, |bytes| in_place(bytes)) };
                        self.commit_take(next);
                        return Ok(Front::Taken(Taken::InPlace));
                    }
                    self.map.read_bytes_into(at, len, buf);
                    self.commit_take(next);
                    return Ok(Front::Taken(Taken::Data));
                }
                KIND_SOCKET => {
                    let reader = self.reader.as_fd().ok_or(Error::Closed)?;
                    let mut record = Vec::new();
                    let mut fds = Vec::new();
                    let got = sys::recv_with_fds_into_vec(
                        reader,
                        &mut record,
                        RECORD_MAX,
                        &mut fds,
                        true,
                    );
                    self.commit_take(next);
                    head = next;
                    match got {
                        Ok(n) if n > 0 => return Ok(Front::Taken(Taken::Record(record, fds))),
                        // No record for this entry: a consumer died after receiving it.
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                        Ok(_) => return Err(Error::Disconnected),
                        Err(e) => return Err(Error::os("recvmsg")(e)),
                    }
                }
                _ => return Err(corrupt()),
            }
        }
        Ok(Front::Empty)
    }

    fn commit_take(&self, next_head: u64) {
        self.map.write(HEAD, next_head);
        self.word(COUNT).fetch_sub(1, Ordering::SeqCst);
    }

    /// Sleeps on the futex word at `seq_at` while it still reads `seq`, counted in `waiters_at`;
    /// `false` if the deadline has passed; [`Error::Interrupted`] if interrupted and
    /// `on_signal` says to return.
    fn sleep(
        &self,
        seq_at: usize,
        waiters_at: usize,
        seq: u32,
        deadline: Option<Instant>,
        on_signal: OnSignal,
    ) -> Result<bool, Error> {
        let timeout = match deadline {
            None => None,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(false);
                }
                Some(left)
            }
        };
        let waiters = self.word(waiters_at);
        waiters.fetch_add(1, Ordering::SeqCst);
        let woken = sys::futex_wait_or(self.word(seq_at), seq, timeout, on_signal);
        waiters.fetch_sub(1, Ordering::SeqCst);
        woken.map_err(Error::os("futex"))?;
        Ok(true)
    }

    /// Whether [`shut_down`](Self::shut_down) was called, by any process.
    pub(crate) fn is_shut_down(&self) -> bool {
        self.word(SHUTDOWN).load(Ordering::SeqCst) != 0
    }

    /// Shuts the queue down: puts fail from now on, and gets once it is empty. `immediate`
    /// also discards the items in it (up to any entry still being written), marking each one's
    /// task done. Everyone waiting wakes up to see it.
    pub(crate) fn shut_down(&self, immediate: bool) {
        let locked = self.locked(None);
        self.word(SHUTDOWN).store(1, Ordering::SeqCst);
        if immediate {
            // Everything up to the first entry still being written goes.
            let mut head: u64 = self.map.read(TAIL);
            let mut discarded = 0u32;
            for entry in self.entries() {
                match entry.kind {
                    KIND_PENDING => {
                        head = entry.at;
                        break;
                    }
                    KIND_DATA => discarded += 1,
                    KIND_SOCKET => {
                        discarded += 1;
                        if let Some(reader) = self.reader.as_fd() {
                            let (mut record, mut fds) = (Vec::new(), Vec::new());
                            let _ = sys::recv_with_fds_into_vec(
                                reader,
                                &mut record,
                                RECORD_MAX,
                                &mut fds,
                                true,
                            );
                        }
                    }
                    _ => {}
                }
            }
            self.map.write(HEAD, head);
            self.word(COUNT)
                .fetch_sub(discarded.min(self.count()), Ordering::SeqCst);
            for _ in 0..discarded {
                self.task_done();
            }
        }
        drop(locked);
        for seq in [PUT_SEQ, GET_SEQ, DONE_SEQ] {
            self.word(seq).fetch_add(1, Ordering::SeqCst);
            sys::futex_wake(self.word(seq), i32::MAX as u32);
        }
    }

    // JoinableQueue's count of unfinished tasks.

    /// Counts one more unfinished task (before its item is put).
    pub(crate) fn task_added(&self) {
        self.word(UNFINISHED).fetch_add(1, Ordering::SeqCst);
    }

    /// Takes back a task count whose item was never put.
    pub(crate) fn task_withdrawn(&self) {
        let _ = self.task_done();
    }

    /// Marks one task done; `false` if none was unfinished (the count is left at 0).
    pub(crate) fn task_done(&self) -> bool {
        let unfinished = self.word(UNFINISHED);
        let mut n = unfinished.load(Ordering::SeqCst);
        loop {
            if n == 0 {
                return false;
            }
            match unfinished.compare_exchange(n, n - 1, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => break,
                Err(now) => n = now,
            }
        }
        if n == 1 {
            self.word(DONE_SEQ).fetch_add(1, Ordering::SeqCst);
            if self.word(JOIN_WAITERS).load(Ordering::SeqCst) > 0 {
                sys::futex_wake(self.word(DONE_SEQ), i32::MAX as u32);
            }
        }
        true
    }

    pub(crate) fn unfinished(&self) -> u32 {
        self.word(UNFINISHED).load(Ordering::SeqCst)
    }

    /// Waits until no task is unfinished; `false` if the deadline passed first,
    /// [`Error::Interrupted`] as [`sleep`](Self::sleep).
    pub(crate) fn join_until(
        &self,
        deadline: Option<Instant>,
        on_signal: OnSignal,
    ) -> Result<bool, Error> {
        loop {
            let seq = self.word(DONE_SEQ).load(Ordering::SeqCst);
            if self.unfinished() == 0 {
                return Ok(true);
            }
            if !self.sleep(DONE_SEQ, JOIN_WAITERS, seq, deadline, on_signal)? {
                return Ok(self.unfinished() == 0);
            }
        }
    }
}

/// One entry of the ring, as [`Ring::entries`] walks them.
struct RingEntry {
    /// Its position counted from the start of time.
    at: u64,
    /// Its offset in the ring.
    pos: usize,
    len: u32,
    kind: u32,
}

/// What a consumer found at the front of the ring.
enum Front {
    Taken(Taken),
    Empty,
    Pending,
}

/// A reserved entry being written outside the lock: abandoned if the writing fails or
/// unwinds before it is committed.
struct Pending<'a> {
    ring: &'a Ring,
    pos: usize,
    done: bool,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.ring.abandon(self.pos);
        }
    }
}

/// The outcome of one put attempt.
pub(crate) enum Put {
    Done,
    /// The ring (or a bounded queue) is full.
    NoRoom,
    /// The socket for large items has no buffer space.
    SocketFull,
    /// The lock was not free before the deadline.
    LockTimeout,
}

fn entry_size(len: usize) -> usize {
    ENTRY_HEADER + len.div_ceil(8) * 8
}

impl Serialize for Ring {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (MapFd(&self.map), &self.reader, &self.writer).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Ring {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (fd, reader, writer) = <(OwnedMapFd, RecvEnd, SendEnd)>::deserialize(deserializer)?;
        let map = SharedMapping::from_fd(fd.0, DATA).map_err(D::Error::custom)?;
        Ring::from_parts(map, reader, writer).map_err(D::Error::custom)
    }
}

struct MapFd<'a>(&'a SharedMapping);

impl Serialize for MapFd<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        codec::serialize_fd(self.0.fd(), serializer)
    }
}

struct OwnedMapFd(OwnedFd);

impl<'de> Deserialize<'de> for OwnedMapFd {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        codec::deserialize_fd(deserializer).map(OwnedMapFd)
    }
}
