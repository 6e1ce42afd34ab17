//! Shared memory that travels between processes as a descriptor: a memfd mapped
//! `MAP_SHARED` (DESIGN §5), and futex waits on words inside it.
//!
//! # Sealed sizes
//! Touching a page of a shared mapping that lies past the end of its file raises `SIGBUS`. So
//! that no process can do that to another by shrinking a region (`ftruncate`), every memfd made
//! here is sealed against shrinking and growing, and against further seals
//! (`F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`, which also rules out a later `F_SEAL_WRITE`
//! that would make a new writable mapping fail). A region that arrives from another process is
//! checked before it is mapped: those seals must be set (`F_GET_SEALS`), and its size
//! (`fstat`, fixed from then on) must cover what the receiver needs. Otherwise it is refused
//! with a [`Refusal`], which the decoder turns into `Error::UnsealedSharedMemory` or
//! `Error::SharedMemoryTooSmall`.

use std::cell::Cell;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

mod plain {
    pub trait Sealed {}
}

/// Types that may be copied out of memory another process writes: no padding, and every
/// bit pattern a valid value (integers and floats; not `bool`, `char`, references or enums,
/// which another process could leave invalid). Sealed: only the impls below exist.
pub(crate) trait Plain: plain::Sealed + Copy {}

macro_rules! plain {
    ($($t:ty),*) => {
        $(
            impl plain::Sealed for $t {}
            impl Plain for $t {}
        )*
    };
}

plain!(u8, i8, u16, i16, u32, i32, u64, i64, f32, f64);

/// A shared mapping of a memfd, and the memfd (to send to other processes).
pub(crate) struct SharedMapping {
    fd: OwnedFd,
    base: NonNull<u8>,
    len: usize,
    /// The offset of the robust lock in this mapping that a thread of this process may have
    /// linked into its robust list (`sys::lock`), `NO_LOCK` before any was.
    lock_at: AtomicUsize,
}

const NO_LOCK: usize = usize::MAX;

// SAFETY: the mapping is process-shared memory; this type only hands out a base pointer and
// length, and its users access it through atomics or under their own locks.
unsafe impl Send for SharedMapping {}
// SAFETY: as above.
unsafe impl Sync for SharedMapping {}

/// The seals every region carries (module docs).
pub(crate) const SEALS: libc::c_int = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;

/// Why a region received from another process was refused (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Its memfd lacks some of [`SEALS`]; `seals` are those it has (0 for a descriptor that
    /// cannot carry seals).
    Unsealed { seals: u32 },
    /// It is `len` bytes long, `needed` are needed.
    TooSmall { len: u64, needed: u64 },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Unsealed { seals } => write!(
                f,
                "shared memory not sealed against resizing (seals {seals:#x}, {SEALS:#x} needed)"
            ),
            Refusal::TooSmall { len, needed } => {
                write!(f, "shared memory of {len} bytes, at least {needed} needed")
            }
        }
    }
}

thread_local! {
    /// The last refusal on this thread, for the decoder to report as a typed error (serde's
    /// errors carry only text).
    static REFUSED: Cell<Option<Refusal>> = const { Cell::new(None) };
}

/// [`SEALS`], for tests that hand-craft regions.
#[cfg(test)]
pub(crate) fn shm_seals() -> libc::c_int {
    SEALS
}

/// Records `refusal` for [`take_refusal`] and returns it as an I/O error.
pub(crate) fn refuse(refusal: Refusal) -> io::Error {
    REFUSED.with(|r| r.set(Some(refusal)));
    io::Error::new(io::ErrorKind::InvalidData, refusal.to_string())
}

/// The refusal recorded on this thread since the last call, if any.
pub(crate) fn take_refusal() -> Option<Refusal> {
    REFUSED.with(Cell::take)
}

impl SharedMapping {
    /// A new zero-filled mapping of `len` bytes, its size sealed (module docs).
    pub(crate) fn new(len: usize) -> io::Result<SharedMapping> {
        // SAFETY: a plain syscall with a valid C string; it returns a descriptor nobody owns.
        let raw = unsafe {
            libc::memfd_create(
                c"multiproc-shared".as_ptr(),
                libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
            )
        };
        if raw == -1 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` was just returned by the kernel and is owned by no one else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        nix::unistd::ftruncate(&fd, len as libc::off_t)?;
        // SAFETY: F_ADD_SEALS on a memfd this function owns; no pointer is passed.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, SEALS) } == -1 {
            return Err(io::Error::last_os_error());
        }
        SharedMapping::map(fd, len)
    }

    /// Maps a memfd received from another process, once it is known to be sealed against
    /// resizing and at least `min_len` bytes long (module docs); its size is the mapping's
    /// length.
    pub(crate) fn from_fd(fd: OwnedFd, min_len: usize) -> io::Result<SharedMapping> {
        // SAFETY: F_GET_SEALS on a descriptor this function owns; no pointer is passed.
        let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
        if seals == -1 || seals & SEALS != SEALS {
            return Err(refuse(Refusal::Unsealed {
                seals: seals.max(0) as u32,
            }));
        }
        // Sealed: the size read now is the size for good.
        let len = nix::sys::stat::fstat(fd.as_fd())?.st_size as usize;
        if len < min_len {
            return Err(refuse(Refusal::TooSmall {
                len: len as u64,
                needed: min_len as u64,
            }));
        }
        SharedMapping::map(fd, len)
    }

    fn map(fd: OwnedFd, len: usize) -> io::Result<SharedMapping> {
        // SAFETY: a fresh mapping of `len` bytes of the memfd, not overlapping anything (no
        // address hint); the memfd is at least `len` bytes long.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len.max(1),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mmap gave null"))?;
        Ok(SharedMapping {
            fd,
            base,
            len,
            lock_at: AtomicUsize::new(NO_LOCK),
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Reads the `T` at `offset` (a copy). Callers hold the lock that guards it, or read
    /// a field nobody writes after creation; whatever another process left there, the result
    /// is a valid `T` ([`Plain`]).
    ///
    /// # Panics
    /// If it does not lie inside the mapping or is misaligned.
    pub(crate) fn read<T: Plain>(&self, offset: usize) -> T {
        self.check::<T>(offset);
        // SAFETY: in bounds and aligned (checked); `T: Plain` is valid for any bit pattern a
        // writer left, and a volatile read copies it out without a reference to shared memory.
        unsafe { std::ptr::read_volatile(self.base.as_ptr().add(offset).cast::<T>()) }
    }

    /// Writes `value` at `offset`, under the region's lock as for [`read`](Self::read).
    ///
    /// # Panics
    /// As `read`.
    pub(crate) fn write<T: Plain>(&self, offset: usize, value: T) {
        self.check::<T>(offset);
        // SAFETY: in bounds and aligned (checked); the mapping is writable shared memory.
        unsafe { std::ptr::write_volatile(self.base.as_ptr().add(offset).cast::<T>(), value) }
    }

    /// Copies `bytes` into the mapping at `offset`. Callers hold the lock that guards that
    /// part of the mapping, so no other process reads or writes it meanwhile.
    ///
    /// # Panics
    /// If the range does not lie inside the mapping.
    pub(crate) fn write_bytes(&self, offset: usize, bytes: &[u8]) {
        assert!(
            offset
                .checked_add(bytes.len())
                .is_some_and(|end| end <= self.len),
            "shared write of {} bytes at {offset} outside a {}-byte mapping",
            bytes.len(),
            self.len
        );
        // SAFETY: the range is inside the mapping (checked); `bytes` is ordinary memory of
        // this process, so the two do not overlap; the caller's lock excludes other accesses.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.base.as_ptr().add(offset),
                bytes.len(),
            )
        }
    }

    /// Appends the `len` bytes at `offset` to `out`, under the caller's lock as for
    /// [`write_bytes`](Self::write_bytes).
    ///
    /// # Panics
    /// If the range does not lie inside the mapping.
    pub(crate) fn read_bytes_into(&self, offset: usize, len: usize, out: &mut Vec<u8>) {
        assert!(
            offset.checked_add(len).is_some_and(|end| end <= self.len),
            "shared read of {len} bytes at {offset} outside a {}-byte mapping",
            self.len
        );
        out.reserve(len);
        let start = out.len();
        // SAFETY: the source range is inside the mapping (checked) and the destination is the
        // spare capacity of `out`, reserved above; they do not overlap. The bytes are
        // initialised (the mapping is zero-filled memory), so setting the length is sound.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.base.as_ptr().add(offset),
                out.as_mut_ptr().add(start),
                len,
            );
            out.set_len(start + len);
        }
    }

    /// Runs `f` over the `len` bytes at `offset`, borrowed in place (no copy).
    ///
    /// # Safety
    /// No process (this one or another mapping the same memfd) writes those bytes while `f`
    /// runs: the caller holds the lock that guards them, and every process that maps them
    /// follows the protocol that lock is part of (a `&[u8]` whose bytes change under it is
    /// undefined behaviour, which a bounds check cannot rule out).
    ///
    /// # Panics
    /// If the range does not lie inside the mapping.
    pub(crate) unsafe fn with_bytes<R>(
        &self,
        offset: usize,
        len: usize,
        f: impl FnOnce(&[u8]) -> R,
    ) -> R {
        assert!(
            offset.checked_add(len).is_some_and(|end| end <= self.len),
            "shared read of {len} bytes at {offset} outside a {}-byte mapping",
            self.len
        );
        // SAFETY: the range is inside the mapping (checked), which stays mapped while `self`
        // is borrowed; the bytes are initialised (zero-filled memory, or written by a
        // producer); no writer runs while the slice lives (the caller's contract).
        let bytes = unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(offset), len) };
        f(bytes)
    }

    /// Runs `f` over the `len` bytes at `offset`, writable in place.
    ///
    /// # Safety
    /// No process (this one or another mapping the same memfd) reads or writes those bytes
    /// while `f` runs: the caller holds the lock that guards them, or has reserved them under
    /// it (the queue's pending entries), and every process that maps them follows that
    /// protocol.
    ///
    /// # Panics
    /// If the range does not lie inside the mapping.
    pub(crate) unsafe fn with_bytes_mut<R>(
        &self,
        offset: usize,
        len: usize,
        f: impl FnOnce(&mut [u8]) -> R,
    ) -> R {
        assert!(
            offset.checked_add(len).is_some_and(|end| end <= self.len),
            "shared write of {len} bytes at {offset} outside a {}-byte mapping",
            self.len
        );
        // SAFETY: the range is inside the mapping (checked), which stays mapped while `self`
        // is borrowed; the memory is initialised; no other access to it runs in any process
        // while the slice lives (the caller's contract), so it is the only one.
        let bytes = unsafe { std::slice::from_raw_parts_mut(self.base.as_ptr().add(offset), len) };
        f(bytes)
    }

    fn check<T>(&self, offset: usize) {
        let size = std::mem::size_of::<T>();
        assert!(
            offset % std::mem::align_of::<T>() == 0 && offset + size <= self.len,
            "shared access of {size} bytes at {offset} outside a {}-byte mapping",
            self.len
        );
    }

    /// The address of the `len` bytes at `offset`, for the robust list links of a lock
    /// (`sys::lock`), which the kernel and glibc follow as plain pointers.
    ///
    /// # Panics
    /// If they do not lie inside the mapping.
    pub(crate) fn ptr_at(&self, offset: usize, len: usize) -> *mut u8 {
        assert!(
            offset.checked_add(len).is_some_and(|end| end <= self.len),
            "{len} bytes at {offset} outside a {}-byte mapping",
            self.len
        );
        // SAFETY: `offset + len <= self.len` (checked), so the pointer stays inside the mapping.
        unsafe { self.base.as_ptr().add(offset) }
    }

    /// Records that the robust lock at `at` may be linked into a thread's robust list, so
    /// that dropping the mapping leaves it mapped while it is (`sys::lock`). `false` if
    /// another lock of this mapping was recorded: the caller keeps the mapping alive itself.
    pub(crate) fn note_lock(&self, at: usize) -> bool {
        match self.lock_at.load(Ordering::Relaxed) {
            noted if noted == at => true,
            NO_LOCK => match self.lock_at.compare_exchange(
                NO_LOCK,
                at,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => true,
                Err(noted) => noted == at,
            },
            _ => false,
        }
    }

    /// The aligned `u32` at `offset` as an atomic.
    ///
    /// # Panics
    /// If it does not lie inside the mapping or is not 4-byte aligned.
    pub(crate) fn atomic_u32(&self, offset: usize) -> &AtomicU32 {
        assert!(
            offset % 4 == 0 && offset + 4 <= self.len,
            "bad atomic offset {offset}"
        );
        // SAFETY: in bounds and aligned (checked; the mapping is page-aligned); shared memory
        // accessed only atomically at this offset; lives as long as `self`.
        unsafe { &*self.base.as_ptr().add(offset).cast::<AtomicU32>() }
    }
}

impl SharedMapping {
    /// Loads the `size`-byte element at `offset` atomically (`size` is 1, 2, 4 or 8), as bits
    /// in the low end of a `u64`: the lock-free `RawValue`/`RawArray` read this way.
    ///
    /// # Panics
    /// If it does not lie inside the mapping, is misaligned, or `size` is not one of those.
    pub(crate) fn load_bits(&self, offset: usize, size: usize) -> u64 {
        let ptr = self.atomic_ptr(offset, size);
        // SAFETY (each arm): `atomic_ptr` checked that `size` bytes at `ptr` lie inside the
        // mapping, aligned to `size`; this shared memory is accessed only atomically at this
        // offset by the lock-free types; the reference lives only for the load.
        match size {
            // SAFETY: see above.
            1 => u64::from(unsafe { &*ptr.cast::<AtomicU8>() }.load(Ordering::Acquire)),
            // SAFETY: see above.
            2 => u64::from(unsafe { &*ptr.cast::<AtomicU16>() }.load(Ordering::Acquire)),
            // SAFETY: see above.
            4 => u64::from(unsafe { &*ptr.cast::<AtomicU32>() }.load(Ordering::Acquire)),
            // SAFETY: see above.
            _ => unsafe { &*ptr.cast::<AtomicU64>() }.load(Ordering::Acquire),
        }
    }

    /// Stores the low `size` bytes of `bits` at `offset` atomically; see [`load_bits`](Self::load_bits).
    ///
    /// # Panics
    /// As `load_bits`.
    pub(crate) fn store_bits(&self, offset: usize, size: usize, bits: u64) {
        let ptr = self.atomic_ptr(offset, size);
        // SAFETY (each arm): as in `load_bits`.
        match size {
            // SAFETY: see above.
            1 => unsafe { &*ptr.cast::<AtomicU8>() }.store(bits as u8, Ordering::Release),
            // SAFETY: see above.
            2 => unsafe { &*ptr.cast::<AtomicU16>() }.store(bits as u16, Ordering::Release),
            // SAFETY: see above.
            4 => unsafe { &*ptr.cast::<AtomicU32>() }.store(bits as u32, Ordering::Release),
            // SAFETY: see above.
            _ => unsafe { &*ptr.cast::<AtomicU64>() }.store(bits, Ordering::Release),
        }
    }

    fn atomic_ptr(&self, offset: usize, size: usize) -> *mut u8 {
        assert!(
            matches!(size, 1 | 2 | 4 | 8) && offset % size == 0 && offset + size <= self.len,
            "atomic access of {size} bytes at {offset} outside a {}-byte mapping",
            self.len
        );
        // SAFETY: `offset < len` (checked), so the pointer stays inside the mapping.
        unsafe { self.base.as_ptr().add(offset) }
    }
}

impl Drop for SharedMapping {
    fn drop(&mut self) {
        let at = *self.lock_at.get_mut();
        if at != NO_LOCK && super::lock::linked_in_this_process(self, at) {
            // A live thread of this process has the lock in its robust list (a guard leaked
            // with its lock held): the memory stays mapped for the process's life, so that
            // neither the kernel nor glibc ever follows a link into a hole.
            return;
        }
        // SAFETY: unmaps exactly the mapping made in `map`; nothing borrows it any more.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.len.max(1));
        }
    }
}

/// Sleeps while `word` holds `expected`, at most `timeout`. Spurious wake-ups happen: callers
/// check their condition again.
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: FUTEX_WAIT (shared, not PRIVATE: the word is in memory other processes map) on
    // a valid aligned u32; `ts_ptr` is null or points to a timespec alive during the call.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            ts_ptr,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Wakes up to `n` processes waiting on `word`.
pub(crate) fn futex_wake(word: &AtomicU32, n: u32) {
    // SAFETY: FUTEX_WAKE on a valid aligned u32; no other pointer is read.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            n,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Bumped in the child of every `fork` (a `pthread_atfork` handler), so that a thread id cached
/// before a fork is not trusted after it.
static FORK_GENERATION: AtomicU32 = AtomicU32::new(0);

extern "C" fn after_fork_in_child() {
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// How many forks lie between this process and the first (read beside a cached thread id:
/// per-thread state cached before a fork is void in the child).
pub(crate) fn fork_generation() -> u32 {
    FORK_GENERATION.load(Ordering::Relaxed)
}

thread_local! {
    /// This thread's id and the fork generation it was read in.
    static TID: std::cell::Cell<(u32, u32)> = const { std::cell::Cell::new((0, 0)) };
}

/// The calling thread's id (the owner recorded in a shared lock). Cached per thread: the
/// system call costs more than an uncontended lock. The cache is dropped in a forked child,
/// whose only thread has a new id.
pub(crate) fn gettid() -> u32 {
    static REGISTER: std::sync::Once = std::sync::Once::new();
    REGISTER.call_once(|| {
        // SAFETY: registers a child handler that only does an atomic add, which is
        // async-signal-safe as a fork child handler must be; no prepare or parent handler.
        unsafe {
            libc::pthread_atfork(None, None, Some(after_fork_in_child));
        }
    });
    let generation = FORK_GENERATION.load(Ordering::Relaxed);
    TID.with(|cached| {
        let (tid, seen) = cached.get();
        if tid != 0 && seen == generation {
            return tid;
        }
        // SAFETY: gettid has no arguments and cannot fail.
        let tid = unsafe { libc::gettid() as u32 };
        cached.set((tid, generation));
        tid
    })
}

/// Whether thread `tid` (of any process) still runs: `/proc/<tid>` exists and is not a
/// zombie. (`kill(tid, 0)` would call a killed but unreaped owner alive.)
pub(crate) fn thread_alive(tid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{tid}/stat")) {
        Ok(stat) => !matches!(
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next()),
            Some('Z' | 'X')
        ),
        Err(_) => false,
    }
}

/// Whether thread `tid` is known to have ended (a zombie, or no `/proc/<tid>` while `/proc`
/// is there): the conservative twin of [`thread_alive`], for decisions that are only safe
/// when the thread can no longer run (`sys::lock` relinking an entry of its list).
pub(crate) fn thread_gone(tid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{tid}/stat")) {
        Ok(stat) => matches!(
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next()),
            Some('Z' | 'X')
        ),
        Err(e) => {
            e.kind() == std::io::ErrorKind::NotFound
                && std::path::Path::new("/proc/self/stat").exists()
        }
    }
}

/// Whether thread `tid` belongs to the calling process (`/proc/self/task/<tid>` exists).
pub(crate) fn is_own_thread(tid: u32) -> bool {
    std::path::Path::new(&format!("/proc/self/task/{tid}")).exists()
}
