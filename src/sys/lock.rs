//! A mutex in shared memory, usable from any number of processes, whose owner's death the
//! kernel notices: a robust futex, linked into the owning thread's glibc robust list.
//!
//! # The word
//! The lock is a 40-byte block (see [`LOCK_SIZE`]) whose first `u32` is a futex word in the
//! kernel's robust encoding: 0 when free, else the owning thread's id, with `WAITERS`
//! (`0x8000_0000`) set once someone sleeps on it, so that an uncontended release makes no
//! system call. Taking a free lock is one compare-and-swap; a contended taker spins briefly,
//! sets `WAITERS` and sleeps on the word with a (shared) futex.
//!
//! # Why the kernel notices a dead owner
//! Every thread glibc creates registers a robust list with `set_robust_list`: a circular list
//! of the robust mutexes it holds, each entry a `next` pointer at a fixed distance
//! (`futex_offset`) from its futex word. When a thread dies (its process SIGKILLed, say), the
//! kernel walks that list (`exit_robust_list` → `handle_futex_death`) and, for every entry whose
//! word's thread-id bits name the dead thread, sets `OWNER_DIED` (`0x4000_0000`), keeping
//! `WAITERS`, and wakes one waiter if `WAITERS` was set. The woken waiter sees a word with no
//! owner but `OWNER_DIED`, takes it and reports [`Acquired::OwnerDied`], as a robust pthread
//! mutex reports `EOWNERDEAD`: data the lock guards may be half-updated. Takeover is as fast as
//! a wake-up (the `takeover` benchmark in `benches/sync.rs`), not a polling period.
//!
//! There is one list per thread, and glibc owns it, so this lock joins glibc's list using
//! glibc's own entry layout (two routes were possible; see "Why not a pthread mutex"). On
//! 64-bit glibc a `pthread_mutex_t` has its `__lock` word at 0 and its list links
//! `__list.__prev` / `__list.__next` at 24 and 32; the list links the `__next` fields, and the
//! head's `futex_offset` is −32. This block has the same shape: word at 0, `prev` at 24, `next`
//! at 32; it is linked and unlinked exactly as glibc's `ENQUEUE_MUTEX` / `DEQUEUE_MUTEX` do (at
//! the head; `prev` points at the predecessor's `next` field or at the list head), so glibc's
//! own robust mutexes and these interleave in one list. The head comes from
//! `get_robust_list(0)`; linking is used only if that works and the head's `futex_offset` is
//! −32 (64-bit glibc), else holds are not linked and only the fallback below applies. Around
//! each lock and unlock the thread's `list_op_pending` names the entry, as glibc does, so a
//! death between the word's change and the list's is covered too (the kernel handles the
//! pending entry after the walk, and wakes a waiter if it finds the word already 0).
//!
//! # Releasing by anyone, and stale entries
//! A `multiprocessing.Lock` may be released by any thread or process ([`RobustLock::unlock_any`]).
//! That cannot unlink the entry from the owner's list: only the owner thread may touch its list.
//! The entry then stays *stale*: the owner unlinks it lazily, the next time it locks or
//! unlocks any of these locks, or when it exits. A stale entry is harmless to the kernel as
//! long as its memory stays mapped and its `next` pointer intact: in Linux's
//! `kernel/futex/core.c`, `exit_robust_list` reads each entry's `next` before handling it and
//! stops the walk at the first fault, and `handle_futex_death` returns without a change when
//! the word's thread-id bits are not the dying thread's (for the pending entry it also wakes
//! a waiter when the word is 0). So:
//! - an entry's links are written only by the thread whose list holds it. The block's
//!   `linked_by` word (offset 4) names that thread; a new owner links the entry only if
//!   `linked_by` is 0, or names a thread that no longer runs (whose list nobody walks any
//!   more). Otherwise (the entry is still stale in a live thread's list) that hold is not
//!   linked, and only the fallback covers its owner's death.
//! - a region is never unmapped while one of its locks is linked: an unmapped entry would
//!   make the kernel stop its walk at the fault (leaving the rest of the list unmarked), and
//!   glibc's next unlink of a neighbour would write into the hole. A mapping notes the
//!   offset of its lock when the lock is first linked, and its drop leaves the memory mapped
//!   (for the process's life) if `linked_by` names a live thread of this process: a guard
//!   leaked with its lock held, its last handle dropped, or a thread that exited holding a
//!   lock (the kernel marks it once the thread is gone). (A mapping with a second lock
//!   linked, which the crate never makes, is pinned by the linking thread instead.) This
//!   costs the fast path no atomic read-modify-write beyond the lock's own.
//! - after `fork` the child's list is empty (glibc resets it), and so is this module's record.
//!
//! # Fallback: polling
//! A hold that is not linked (the rare cases above; a libc other than 64-bit glibc) is still
//! recovered: a waiter wakes every [`OWNER_CHECK`] to see whether the owner thread still runs
//! (`/proc/<tid>`, zombies counted dead) and, if not, takes the lock over. Thread ids can be
//! reused; a reuse within the check window delays that takeover, it never lets two threads
//! hold the lock.
//!
//! # Trust
//! The list links live in shared memory, as a process-shared robust pthread mutex's do: a
//! process that can write a region can corrupt the links of a lock in it while another
//! process's thread holds it. This is the same trust glibc places in a process-shared robust
//! mutex; share regions only with processes of this program (issue 12's sealed memfds keep a
//! peer from shrinking a region under a linked lock).
//!
//! # Why not a pthread mutex
//! A process-shared robust `pthread_mutex_t` gets the same kernel support with no list code
//! here, but only its owner may unlock it: `Lock::release` from another thread or process
//! (CPython's `multiprocessing.Lock` allows it; queues and conditions rely on nothing else)
//! would need a second lock design beside it. Keeping one futex word with glibc's list layout
//! keeps one design, the one-CAS fast path, release by anyone, and the takeover latency.

use std::cell::RefCell;
use std::sync::atomic::{compiler_fence, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::shm::{
    fork_generation, futex_wait, futex_wake, gettid, is_own_thread, thread_alive, thread_gone,
    SharedMapping,
};

/// How long a waiter sleeps before it checks whether the owner is still alive (the fallback
/// for holds the kernel does not know about; see the module docs).
pub(crate) const OWNER_CHECK: Duration = Duration::from_millis(100);

/// The bytes one lock takes in shared memory, at an 8-byte aligned offset.
pub(crate) const LOCK_SIZE: usize = 40;

/// The futex word.
const WORD: usize = 0;
/// The thread whose robust list holds the entry, 0 if none.
const LINKED_BY: usize = 4;
/// glibc's `__list.__prev`: the address of the predecessor's `next` field (or of the head).
const PREV: usize = 24;
/// glibc's `__list.__next`: the entry itself, pointing at the successor's `next` field.
const NEXT: usize = 32;
/// How far a list element's `prev` field lies before its `next` field (glibc's
/// `QUEUE_PTR_ADJUST`; also the head's `robust_prev` before the head).
const PREV_GAP: usize = NEXT - PREV;

const WAITERS: u32 = 0x8000_0000;
const OWNER_DIED: u32 = 0x4000_0000;
const TID_MASK: u32 = 0x3fff_ffff;

/// The `futex_offset` glibc registers on 64-bit targets: `__lock` relative to `__list.__next`.
const GLIBC_FUTEX_OFFSET: isize = WORD as isize - NEXT as isize;

/// How the lock was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Acquired {
    /// From a free lock, or from an owner that released it.
    Clean,
    /// Taken over from an owner that died holding it.
    OwnerDied,
}

/// A robust futex mutex: the [`LOCK_SIZE`] bytes at `at` in a shared mapping (see the module
/// docs).
#[derive(Clone, Copy)]
pub(crate) struct RobustLock<'a> {
    map: &'a Arc<SharedMapping>,
    at: usize,
}

impl<'a> RobustLock<'a> {
    /// The lock at `at` in `map`.
    ///
    /// # Panics
    /// If `at` is not 8-byte aligned or the lock does not lie inside the mapping.
    pub(crate) fn new(map: &'a Arc<SharedMapping>, at: usize) -> RobustLock<'a> {
        assert!(
            at % 8 == 0
                && at
                    .checked_add(LOCK_SIZE)
                    .is_some_and(|end| end <= map.len()),
            "a lock at {at} outside a {}-byte mapping",
            map.len()
        );
        RobustLock { map, at }
    }

    fn word(&self) -> &'a AtomicU32 {
        self.map.atomic_u32(self.at + WORD)
    }

    fn linked_by(&self) -> &'a AtomicU32 {
        self.map.atomic_u32(self.at + LINKED_BY)
    }

    /// The entry's address (its `next` field) in this process.
    fn entry(&self) -> usize {
        self.map.ptr_at(self.at + NEXT, 8) as usize
    }

    /// The owning thread's id, 0 when free (also when its owner died and nobody took it yet).
    pub(crate) fn owner(&self) -> u32 {
        self.word().load(Ordering::Relaxed) & TID_MASK
    }

    /// One attempt at a lock without an owner: `Err` with the word if it has one. `flag` is
    /// `WAITERS` for a taker that slept (other sleepers may remain).
    fn attempt(&self, me: u32, flag: u32) -> Result<Acquired, u32> {
        let word = self.word();
        let mut current = word.load(Ordering::Relaxed);
        loop {
            if current & TID_MASK != 0 {
                return Err(current);
            }
            let new = me | (current & WAITERS) | flag;
            match word.compare_exchange_weak(current, new, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) if current & OWNER_DIED != 0 => return Ok(Acquired::OwnerDied),
                Ok(_) => return Ok(Acquired::Clean),
                Err(now) => current = now,
            }
        }
    }

    /// Takes the lock from `current`'s owner if that thread no longer runs (a hold the kernel
    /// did not know about).
    fn take_from_dead(&self, current: u32, me: u32, flag: u32) -> Option<Acquired> {
        let owner = current & TID_MASK;
        if owner == 0 || owner == me || thread_alive(owner) {
            return None;
        }
        let new = me | (current & WAITERS) | flag;
        self.word()
            .compare_exchange(current, new, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| Acquired::OwnerDied)
    }

    /// Takes the lock if it is free, or its owner died; never sleeps.
    pub(crate) fn try_lock(&self) -> Option<Acquired> {
        let entry = self.entry();
        with_list(|list| {
            list.announce(entry);
            let taken = self.grab(list.tid);
            if taken.is_some() {
                self.link(list, entry);
            }
            list.announce(0);
            taken
        })
        .unwrap_or_else(|| self.grab(gettid()))
    }

    fn grab(&self, me: u32) -> Option<Acquired> {
        match self.attempt(me, 0) {
            Ok(taken) => Some(taken),
            Err(current) => self.take_from_dead(current, me, 0),
        }
    }

    /// Takes the lock, waiting until `deadline` (`None`: for ever). `None` if the deadline
    /// passed first.
    pub(crate) fn lock_until(&self, deadline: Option<Instant>) -> Option<Acquired> {
        let entry = self.entry();
        // One borrow of this thread's list for the whole operation (also while it sleeps:
        // nothing else on this thread runs meanwhile).
        with_list(|list| {
            list.announce(entry);
            let taken = self.wait_for(list.tid, deadline);
            if taken.is_some() {
                self.link(list, entry);
            }
            list.announce(0);
            taken
        })
        .unwrap_or_else(|| self.wait_for(gettid(), deadline))
    }

    fn wait_for(&self, me: u32, deadline: Option<Instant>) -> Option<Acquired> {
        let word = self.word();
        let (mut spins, mut flag) = (0u32, 0u32);
        // When the owner was last checked; read only once spinning is over (the clock is
        // not free, and the uncontended path never needs it).
        let mut checked: Option<Instant> = None;
        loop {
            let current = match self.attempt(me, flag) {
                Ok(taken) => return Some(taken),
                Err(current) => current,
            };
            // A short spin first: critical sections over shared memory last nanoseconds, and
            // sleeping and waking cost microseconds.
            if spins < 64 {
                spins += 1;
                if spins % 16 == 0 {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
                continue;
            }
            match checked {
                None => checked = Some(Instant::now()),
                Some(at) if at.elapsed() >= OWNER_CHECK => {
                    checked = Some(Instant::now());
                    if let Some(taken) = self.take_from_dead(current, me, flag) {
                        return Some(taken);
                    }
                }
                Some(_) => {}
            }
            let mut sleep = OWNER_CHECK;
            if let Some(deadline) = deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return None;
                }
                sleep = sleep.min(left);
            }
            // Sleep with WAITERS set, so that the releaser, or the kernel when the owner dies,
            // wakes a sleeper.
            if current & WAITERS == 0
                && word
                    .compare_exchange(
                        current,
                        current | WAITERS,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    )
                    .is_err()
            {
                continue;
            }
            futex_wait(word, current | WAITERS, Some(sleep));
            flag = WAITERS;
        }
    }

    /// Releases the lock; the caller holds it.
    pub(crate) fn unlock(&self) {
        self.unlock_mine();
    }

    /// Releases the lock if the calling thread holds it; `false` (and nothing changes) if it
    /// does not, e.g. because someone released it for this thread (`Lock::release`).
    pub(crate) fn unlock_mine(&self) -> bool {
        let entry = self.entry();
        with_list(|list| {
            list.announce(entry);
            // Unlinked first, then released (glibc's order): a death in between leaves the
            // word naming this thread, and the pending entry lets the kernel mark it.
            if let Some(i) = list.linked.iter().position(|l| l.entry == entry) {
                list.linked.swap_remove(i).unlink();
            }
            list.sweep();
            let me = list.tid;
            let released = self.release_if(|owner| owner == me);
            list.announce(0);
            released
        })
        .unwrap_or_else(|| {
            let me = gettid();
            self.release_if(|owner| owner == me)
        })
    }

    /// Releases the lock whoever holds it (a `multiprocessing.Lock` may be released by any
    /// thread or process); `false` if nobody held it. An owner thread other than the caller
    /// keeps a stale entry in its list until it next locks or unlocks (module docs).
    pub(crate) fn unlock_any(&self) -> bool {
        if self.owner() == gettid() {
            return self.unlock_mine();
        }
        self.release_if(|owner| owner != 0)
    }

    /// Sets the word to 0 if its owner passes `held`, waking a sleeper if there is one.
    fn release_if(&self, held: impl Fn(u32) -> bool) -> bool {
        let word = self.word();
        let mut current = word.load(Ordering::Relaxed);
        loop {
            if !held(current & TID_MASK) {
                return false;
            }
            match word.compare_exchange_weak(current, 0, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => current = now,
            }
        }
        if current & WAITERS != 0 {
            futex_wake(word, 1);
        }
        true
    }

    /// Links `entry` (this lock's) into this thread's robust list, now that this thread owns
    /// the word, if it may (module docs); also drops this thread's stale entries.
    fn link(&self, list: &mut ThreadList, entry: usize) {
        if list.head == 0 {
            return;
        }
        list.sweep();
        if list.linked.iter().any(|l| l.entry == entry) {
            return; // Still linked from an earlier hold of this thread.
        }
        let me = list.tid;
        let by = self.linked_by();
        let linker = by.load(Ordering::Acquire);
        // `linker == me` without this address in the record: this thread linked the same
        // block through another mapping of the memfd (a handle received in this process), or
        // an earlier thread with this id did; it is not linked twice. Any other linker may
        // still have it in its list unless that thread is known to be gone.
        if linker != 0 && (linker == me || !thread_gone(linker)) {
            return; // Only the thread whose list holds it may unlink it.
        }
        // The mapping stays mapped while the entry is linked: its drop sees `linked_by`
        // naming a live thread of this process; if the mapping already noted another lock,
        // the record pins it instead.
        let pin = (!self.map.note_lock(self.at)).then(|| Arc::clone(self.map));
        by.store(me, Ordering::Relaxed);
        // SAFETY: `list.head` is this thread's registered glibc robust list head, checked in
        // `ThreadList::refresh`; `entry` is the `next` field of this lock's block, with its
        // `prev` field 8 bytes before it, inside a mapping that stays mapped while the entry
        // is linked (above); this thread owns the word, and no other thread's list holds the
        // entry (`linked_by` checked above).
        unsafe { enqueue(list.head, entry) };
        list.linked.push(Linked {
            entry,
            word: self.word() as *const AtomicU32 as usize,
            linked_by: by as *const AtomicU32 as usize,
            pin,
        });
    }
}

/// An entry this thread linked into its list: the addresses of its `next` field, its word
/// and its `linked_by` word, all mapped while it is linked (`link`; `linked_in_this_process`).
struct Linked {
    entry: usize,
    word: usize,
    linked_by: usize,
    /// The mapping, held here only when its drop cannot tell that it is linked (`link`).
    pin: Option<Arc<SharedMapping>>,
}

impl Linked {
    fn atomic(address: usize) -> &'static AtomicU32 {
        // SAFETY: `address` is the `word` or `linked_by` of a linked entry: an aligned `u32`
        // of shared memory, only accessed atomically, that stays mapped while the entry is
        // linked; callers use the reference only while it is.
        unsafe { &*(address as *const AtomicU32) }
    }

    /// Whether the lock's word still names `tid` (not released by another thread).
    fn held_by(&self, tid: u32) -> bool {
        Linked::atomic(self.word).load(Ordering::Relaxed) & TID_MASK == tid
    }

    fn unlink(self) {
        // SAFETY: this thread linked `entry` into its own list (only done with a registered
        // head) and has not unlinked it; it is still mapped (`link`).
        unsafe { dequeue(self.entry) };
        // Others may link it from now on; they read the links only after this store. No
        // other thread writes `linked_by` while it names this live thread (`link`); once it
        // is 0, the mapping's drop may unmap it.
        Linked::atomic(self.linked_by).store(0, Ordering::Release);
        drop(self.pin);
    }
}

/// Whether the lock at `at` in `map` is in the robust list of a live thread of this process
/// (then dropping `map` must not unmap it; see the module docs).
pub(super) fn linked_in_this_process(map: &SharedMapping, at: usize) -> bool {
    let linker = map.atomic_u32(at + LINKED_BY).load(Ordering::Acquire);
    linker != 0 && is_own_thread(linker)
}

/// This thread's robust list head and the entries it linked.
struct ThreadList {
    /// The fork generation `head` and `tid` were read in.
    generation: u32,
    tid: u32,
    /// The glibc `struct robust_list_head` registered for this thread; 0 if there is none we
    /// can use (module docs).
    head: usize,
    linked: Vec<Linked>,
}

impl ThreadList {
    /// Re-reads the head and forgets the parent's entries after a fork (glibc empties the
    /// child's list; the memory those entries name is still mapped in the parent).
    #[inline]
    fn refresh(&mut self) {
        let generation = fork_generation();
        if self.generation == generation && self.tid != 0 {
            return;
        }
        self.generation = generation;
        self.tid = gettid();
        self.head = registered_head();
        self.linked.clear();
    }

    /// Sets `list_op_pending` to `entry` (0: none), as glibc does around robust mutex
    /// operations, so that a death between the word's change and the list's is covered.
    #[inline]
    fn announce(&mut self, entry: usize) {
        if self.head != 0 {
            compiler_fence(Ordering::SeqCst);
            // SAFETY: `head` is this thread's registered robust list head (`refresh`):
            // glibc's `struct robust_list_head`, whose third field is `list_op_pending`; only
            // this thread writes it.
            unsafe { std::ptr::write_volatile((self.head + 16) as *mut usize, entry) };
            compiler_fence(Ordering::SeqCst);
        }
    }

    /// Unlinks the entries whose lock someone else released for this thread.
    #[inline]
    fn sweep(&mut self) {
        let tid = self.tid;
        let mut i = 0;
        while i < self.linked.len() {
            if self.linked[i].held_by(tid) {
                i += 1;
            } else {
                let linked = self.linked.swap_remove(i);
                linked.unlink();
            }
        }
    }
}

impl Drop for ThreadList {
    fn drop(&mut self) {
        // The thread is exiting: unlink what it no longer holds; leave what it holds linked,
        // and mapped for good, for the kernel to mark once the thread is gone.
        if self.generation != fork_generation() {
            return;
        }
        self.sweep();
        for linked in self.linked.drain(..) {
            std::mem::forget(linked.pin);
        }
    }
}

thread_local! {
    static LIST: RefCell<ThreadList> = const {
        RefCell::new(ThreadList { generation: 0, tid: 0, head: 0, linked: Vec::new() })
    };
}

/// Runs `f` on this thread's list, refreshed; `None` while the thread's locals are being torn
/// down (a hold is then not linked).
#[inline]
fn with_list<R>(f: impl FnOnce(&mut ThreadList) -> R) -> Option<R> {
    LIST.try_with(|list| {
        let mut list = list.try_borrow_mut().ok()?;
        list.refresh();
        Some(f(&mut list))
    })
    .ok()
    .flatten()
}

/// This thread's glibc robust list head, if it has one this module can join (module docs).
#[cfg(all(target_env = "gnu", target_pointer_width = "64"))]
fn registered_head() -> usize {
    let mut head: *mut libc::c_void = std::ptr::null_mut();
    let mut len: libc::size_t = 0;
    // SAFETY: get_robust_list for the calling thread (pid 0) writes the head pointer and its
    // length into the two locals, alive during the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_get_robust_list,
            0,
            &mut head as *mut *mut libc::c_void,
            &mut len as *mut libc::size_t,
        )
    };
    if rc != 0 || head.is_null() || len != 3 * std::mem::size_of::<usize>() {
        return 0;
    }
    // SAFETY: the kernel holds `head` as this thread's `struct robust_list_head` (three words:
    // list, futex_offset, list_op_pending), which glibc keeps in the thread's descriptor for
    // the thread's life.
    let offset = unsafe { std::ptr::read_volatile(head.cast::<isize>().add(1)) };
    if offset == GLIBC_FUTEX_OFFSET {
        head as usize
    } else {
        0
    }
}

#[cfg(not(all(target_env = "gnu", target_pointer_width = "64")))]
fn registered_head() -> usize {
    0
}

/// glibc's `ENQUEUE_MUTEX`: links `entry` at the front of the list at `head`.
///
/// # Safety
/// `head` is the calling thread's registered glibc robust list head; `entry` is a `next` field
/// with its `prev` field 8 bytes before it, writable, not in any list, and stays mapped until
/// [`dequeue`]d.
unsafe fn enqueue(head: usize, entry: usize) {
    // SAFETY: (each access) `head` is glibc's list head, whose first word is the list and
    // whose preceding word is glibc's `robust_prev` (the head's `prev`); every element's
    // `prev` field is 8 bytes before its `next`; all are this thread's to write (caller's
    // contract). The bit 0 of a link marks a PI mutex and is kept.
    unsafe {
        let first = std::ptr::read_volatile(head as *const usize);
        std::ptr::write_volatile(((first & !1) - PREV_GAP) as *mut usize, entry);
        std::ptr::write_volatile(entry as *mut usize, first);
        std::ptr::write_volatile((entry - PREV_GAP) as *mut usize, head);
        // The entry is complete before the kernel can reach it from the head.
        compiler_fence(Ordering::SeqCst);
        std::ptr::write_volatile(head as *mut usize, entry);
    }
}

/// glibc's `DEQUEUE_MUTEX`: unlinks `entry` from the calling thread's list.
///
/// # Safety
/// `entry` was [`enqueue`]d into the calling thread's list and not dequeued since, and is
/// still mapped.
unsafe fn dequeue(entry: usize) {
    // SAFETY: (each access) the list is this thread's and well-formed (glibc and this module
    // keep it so); `next` and `prev` name the neighbours' `next` fields (or the head), whose
    // `prev` fields are 8 bytes before them.
    unsafe {
        let next = std::ptr::read_volatile(entry as *const usize);
        let prev = std::ptr::read_volatile((entry - PREV_GAP) as *const usize);
        std::ptr::write_volatile(((next & !1) - PREV_GAP) as *mut usize, prev);
        std::ptr::write_volatile((prev & !1) as *mut usize, next);
        // Out of the list before the links the kernel reads are cleared.
        compiler_fence(Ordering::SeqCst);
        std::ptr::write_volatile((entry - PREV_GAP) as *mut usize, 0);
        std::ptr::write_volatile(entry as *mut usize, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock_map() -> Arc<SharedMapping> {
        Arc::new(SharedMapping::new(LOCK_SIZE).unwrap())
    }

    /// The glibc list head is found and has the layout this module relies on (64-bit glibc).
    #[cfg(all(target_env = "gnu", target_pointer_width = "64"))]
    #[test]
    fn glibc_head_is_found() {
        assert_ne!(registered_head(), 0);
    }

    /// A held lock is linked at the head of the thread's list, and unlinked on release.
    #[cfg(all(target_env = "gnu", target_pointer_width = "64"))]
    #[test]
    fn held_lock_is_linked_and_unlinked() {
        let map = lock_map();
        let lock = RobustLock::new(&map, 0);
        let head = registered_head();
        // SAFETY: reads the first word of this thread's registered list head.
        let first = || unsafe { std::ptr::read_volatile(head as *const usize) };
        let before = first();
        assert_eq!(lock.try_lock(), Some(Acquired::Clean));
        assert_eq!(first(), lock.entry());
        assert_eq!(lock.linked_by().load(Ordering::Relaxed), gettid());
        assert!(lock.unlock_mine());
        assert_eq!(first(), before);
        assert_eq!(lock.linked_by().load(Ordering::Relaxed), 0);
    }

    /// A lock released by another thread stays linked (stale) in its owner's list until the
    /// owner's next operation, which unlinks it; the lock can be taken meanwhile.
    #[cfg(all(target_env = "gnu", target_pointer_width = "64"))]
    #[test]
    fn stale_entry_is_swept() {
        let (map, other) = (lock_map(), lock_map());
        let lock = RobustLock::new(&map, 0);
        let head = registered_head();
        // SAFETY: as in `held_lock_is_linked_and_unlinked`.
        let first = || unsafe { std::ptr::read_volatile(head as *const usize) };
        let before = first();
        assert!(lock.try_lock().is_some());
        std::thread::scope(|s| {
            s.spawn(|| {
                assert!(RobustLock::new(&map, 0).unlock_any());
                // Taken by this thread, not linked here: the entry is in the owner's list.
                assert_eq!(RobustLock::new(&map, 0).try_lock(), Some(Acquired::Clean));
                assert!(RobustLock::new(&map, 0).unlock_mine());
            });
        });
        assert_eq!(first(), lock.entry());
        let other = RobustLock::new(&other, 0);
        assert!(other.try_lock().is_some());
        assert!(other.unlock_mine());
        assert_eq!(first(), before);
        assert_eq!(lock.owner(), 0);
    }

    /// The same block mapped twice in one process (a handle received by its own process):
    /// held through one mapping, released and taken again through the other, it is never
    /// linked twice, and the list ends as it began.
    #[cfg(all(target_env = "gnu", target_pointer_width = "64"))]
    #[test]
    fn aliased_mapping_is_not_linked_twice() {
        let m1 = lock_map();
        let dup = m1.fd().try_clone_to_owned().unwrap();
        let m2 = Arc::new(SharedMapping::from_fd(dup, LOCK_SIZE).unwrap());
        let (a, b) = (RobustLock::new(&m1, 0), RobustLock::new(&m2, 0));
        assert_ne!(a.entry(), b.entry());
        let head = registered_head();
        // SAFETY: as in `held_lock_is_linked_and_unlinked`.
        let first = || unsafe { std::ptr::read_volatile(head as *const usize) };
        let before = first();
        assert!(a.try_lock().is_some());
        assert!(b.unlock_any());
        assert!(b.try_lock().is_some());
        assert_eq!(first(), a.entry());
        assert!(b.unlock_mine());
        let other = lock_map();
        let other = RobustLock::new(&other, 0);
        assert!(other.try_lock().is_some());
        assert!(other.unlock_mine());
        assert_eq!(first(), before);
    }

    /// Whether `address` lies in a mapping of this process (`/proc/self/maps`).
    fn mapped(address: usize) -> bool {
        std::fs::read_to_string("/proc/self/maps")
            .unwrap()
            .lines()
            .filter_map(|line| line.split_once(' ')?.0.split_once('-'))
            .any(|(start, end)| {
                let start = usize::from_str_radix(start, 16).unwrap();
                let end = usize::from_str_radix(end, 16).unwrap();
                (start..end).contains(&address)
            })
    }

    /// A linked lock's memory stays mapped after its last handle is dropped (a leaked guard),
    /// so that nothing in the thread's list points at unmapped memory. (That unlinked ones
    /// are unmapped is SHM-08 in tests/shared.rs: other tests here map memory meanwhile.)
    #[cfg(all(target_env = "gnu", target_pointer_width = "64"))]
    #[test]
    fn linked_lock_stays_mapped() {
        let map = lock_map();
        let entry = RobustLock::new(&map, 0).entry();
        assert!(RobustLock::new(&map, 0).try_lock().is_some());
        drop(map);
        assert!(mapped(entry), "a linked lock was unmapped");
    }

    /// A word the kernel marked (`OWNER_DIED`, no owner) is taken with `OwnerDied`, keeping
    /// `WAITERS`.
    #[test]
    fn owner_died_word_is_taken_over() {
        let map = lock_map();
        let lock = RobustLock::new(&map, 0);
        lock.word().store(OWNER_DIED | WAITERS, Ordering::Relaxed);
        assert_eq!(lock.owner(), 0);
        assert_eq!(lock.lock_until(None), Some(Acquired::OwnerDied));
        assert_eq!(lock.word().load(Ordering::Relaxed), gettid() | WAITERS);
        assert!(lock.unlock_mine());
        assert_eq!(lock.word().load(Ordering::Relaxed), 0);
    }
}
