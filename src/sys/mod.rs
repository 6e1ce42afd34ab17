//! The OS layer: every call that needs `unsafe`, and the socket I/O helpers built on them.
//!
//! Nothing here knows about processes, pickles or connections; the rest of the crate calls these
//! functions and never `libc` directly. Linux-specific pieces (pidfds, `close_range`,
//! `posix_spawn_file_actions_addclosefrom_np`) live here so that a macOS port replaces this one
//! module.

pub(crate) mod net;

use std::ffi::{CStr, CString};
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Instant;

mod lock;
mod shm;
mod slots;
pub(crate) use lock::{Acquired, RobustLock, LOCK_SIZE, OWNER_CHECK};
#[cfg(test)]
pub(crate) use shm::shm_seals;
pub(crate) use shm::{
    futex_wait, futex_wake, gettid, is_own_thread, refuse, take_refusal, thread_alive, Refusal,
    SharedMapping,
};
pub(crate) use slots::SharedSlots;

use nix::sys::socket::{
    sendmsg, socketpair, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType,
};

/// The most descriptors one message may carry (the kernel's `SCM_MAX_FD`).
pub(crate) const MAX_FDS_PER_MESSAGE: usize = 253;

/// Descriptors below this number can be tracked by [`track_fd`].
const TRACKED_FD_LIMIT: usize = 1 << 16;

/// The state a forked child rewrites before anything else, packed at the start of one page so
/// that the rewrite costs one copy-on-write fault instead of one per variable (each fault
/// copies 4 KiB and costs microseconds on a VM).
#[repr(C, align(4096))]
pub(crate) struct ForkPage {
    /// The per-process state (`process::runtime`), type-erased: this layer knows nothing above it.
    pub(crate) runtime: std::sync::atomic::AtomicPtr<()>,
    /// The write end of this process's parent-alive pipe, or -1.
    pub(crate) alive_write_fd: std::sync::atomic::AtomicI32,
    /// One bit per descriptor number: set while a connection end (or another crate handle)
    /// owns it. The low numbers, the common ones, share the page with the fields above.
    tracked: [std::sync::atomic::AtomicU64; TRACKED_FD_LIMIT / 64],
}

pub(crate) static FORK_PAGE: ForkPage = ForkPage {
    runtime: std::sync::atomic::AtomicPtr::new(std::ptr::null_mut()),
    alive_write_fd: std::sync::atomic::AtomicI32::new(-1),
    tracked: [const { std::sync::atomic::AtomicU64::new(0) }; TRACKED_FD_LIMIT / 64],
};
static TRACKED_FDS: &[std::sync::atomic::AtomicU64] = &FORK_PAGE.tracked;

/// Records that a crate handle owns `fd`, so that a forked child can close its inherited copy
/// ([`close_tracked_fds`]). Descriptors numbered 65536 and above are not tracked.
pub(crate) fn track_fd(fd: RawFd) {
    if let Ok(i) = usize::try_from(fd) {
        if i < TRACKED_FD_LIMIT {
            TRACKED_FDS[i / 64].fetch_or(1 << (i % 64), std::sync::atomic::Ordering::AcqRel);
        }
    }
}

/// Forgets `fd`; call before closing it, so a new owner of the number is never untracked.
pub(crate) fn untrack_fd(fd: RawFd) {
    if let Ok(i) = usize::try_from(fd) {
        if i < TRACKED_FD_LIMIT {
            TRACKED_FDS[i / 64].fetch_and(!(1 << (i % 64)), std::sync::atomic::Ordering::AcqRel);
        }
    }
}

/// In a freshly forked child: closes every tracked descriptor except `keep` and `also_keep`.
/// Async-signal-safe (atomics and `close` only).
pub(crate) fn close_tracked_fds(keep: RawFd, also_keep: &[RawFd]) {
    for (word_index, word) in TRACKED_FDS.iter().enumerate() {
        // Read first: writing every word would touch (and copy) pages for nothing.
        if word.load(std::sync::atomic::Ordering::Acquire) == 0 {
            continue;
        }
        let mut bits = word.swap(0, std::sync::atomic::Ordering::AcqRel);
        while bits != 0 {
            let bit = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let fd = (word_index * 64 + bit) as RawFd;
            if fd != keep && !also_keep.contains(&fd) {
                close_raw(fd);
            }
        }
    }
    // The kept descriptors are still owned by handles in this process: track them again, so
    // that a grandchild forked from here closes its copies too.
    track_fd(keep);
    for &fd in also_keep {
        track_fd(fd);
    }
}

/// `idtype_t` value for `waitid` on a pidfd (linux/wait.h); the libc crate does not export it.
const P_PIDFD: libc::idtype_t = 3;

/// How a process ended, as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WaitStatus {
    /// `_exit(code)`.
    Exited(i32),
    /// Killed by this signal.
    Signaled(i32),
}

impl WaitStatus {
    /// The raw `wait` status word, as a forkserver sends it on.
    pub(crate) fn to_raw(self) -> i32 {
        match self {
            WaitStatus::Exited(code) => (code & 0xff) << 8,
            WaitStatus::Signaled(sig) => sig & 0x7f,
        }
    }

    /// The inverse of [`WaitStatus::to_raw`].
    pub(crate) fn from_raw(raw: i32) -> WaitStatus {
        if libc::WIFSIGNALED(raw) {
            WaitStatus::Signaled(libc::WTERMSIG(raw))
        } else {
            WaitStatus::Exited(libc::WEXITSTATUS(raw))
        }
    }
}

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn cvt_long(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// The result of [`fork`], seen from each side.
pub(crate) enum Forked {
    Parent(libc::pid_t),
    Child,
}

/// `fork(2)`.
///
/// # Safety
/// In the child of a multi-threaded parent only the calling thread exists; locks other threads
/// held stay locked. The caller must do only fork-safe work in the child (see `process::start::fork`).
pub(crate) unsafe fn fork() -> io::Result<Forked> {
    // SAFETY: the caller upholds the contract above; fork itself has no memory-safety preconditions.
    let pid = cvt(unsafe { libc::fork() })?;
    Ok(if pid == 0 {
        Forked::Child
    } else {
        Forked::Parent(pid)
    })
}

/// Ends the calling process at once: no atexit handlers, no destructors (`_exit(2)`).
pub(crate) fn exit_immediately(code: i32) -> ! {
    // SAFETY: _exit is async-signal-safe and takes no pointers.
    unsafe { libc::_exit(code) }
}

/// Sends `signal` to the calling process.
pub(crate) fn raise_signal(signal: i32) {
    // SAFETY: kill on our own pid with a valid signal number has no memory effects.
    unsafe {
        libc::kill(libc::getpid(), signal);
    }
}

/// `pidfd_open(2)`: a descriptor that refers to process `pid` without PID-reuse races.
pub(crate) fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: a plain syscall with integer arguments; on success it returns a new descriptor
    // that nothing else owns.
    let fd = cvt_long(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })?;
    // SAFETY: `fd` was just returned by the kernel and is owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `pidfd_send_signal(2)`.
pub(crate) fn pidfd_send_signal(pidfd: BorrowedFd<'_>, signal: i32) -> io::Result<()> {
    // SAFETY: the info pointer may be null; the fd is borrowed for the duration of the call.
    cvt_long(unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    })?;
    Ok(())
}

/// `waitid(P_PIDFD, …, WEXITED)`: reaps the child behind `pidfd`. With `block == false`,
/// returns `Ok(None)` if it is still running.
pub(crate) fn waitid_pidfd(pidfd: BorrowedFd<'_>, block: bool) -> io::Result<Option<WaitStatus>> {
    let mut flags = libc::WEXITED;
    if !block {
        flags |= libc::WNOHANG;
    }
    loop {
        // SAFETY: siginfo_t is plain old data; zeroed is a valid value and the kernel fills it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid, writable siginfo_t for the duration of the call.
        let ret =
            unsafe { libc::waitid(P_PIDFD, pidfd.as_raw_fd() as libc::id_t, &mut info, flags) };
        if ret == -1 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        // SAFETY: after a successful waitid, si_pid and si_status are initialised (si_pid is
        // 0 when WNOHANG found no state change).
        let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
        if pid == 0 {
            return Ok(None);
        }
        return Ok(Some(match info.si_code {
            libc::CLD_EXITED => WaitStatus::Exited(status),
            _ => WaitStatus::Signaled(status),
        }));
    }
}

/// `waitpid(pid, WNOHANG)` for a child known by pid only (the forkserver's own children).
pub(crate) fn waitpid_nohang(pid: libc::pid_t) -> io::Result<Option<WaitStatus>> {
    let mut raw = 0;
    loop {
        // SAFETY: `raw` is a valid out-pointer for the duration of the call.
        let ret = unsafe { libc::waitpid(pid, &mut raw, libc::WNOHANG) };
        match ret {
            0 => return Ok(None),
            -1 => {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
            _ => return Ok(Some(WaitStatus::from_raw(raw))),
        }
    }
}

/// Closes every descriptor from `first` upwards (`close_range(2)`).
pub(crate) fn close_from(first: RawFd) {
    // SAFETY: close_range only closes descriptors; callers use it in a fresh child where no
    // Rust object owns the descriptors being closed, or forget those objects first.
    unsafe {
        libc::close_range(first as libc::c_uint, libc::c_uint::MAX, 0);
    }
}

/// Closes a descriptor number that no Rust object owns (an inherited copy after `fork`).
pub(crate) fn close_raw(fd: RawFd) {
    // SAFETY: the caller guarantees that no live OwnedFd refers to `fd` in this process.
    unsafe {
        libc::close(fd);
    }
}

/// Restores the default disposition of `SIGCHLD` (so that exited children wait to be reaped).
pub(crate) fn default_sigchld() {
    // SAFETY: installing SIG_DFL has no memory-safety preconditions.
    unsafe {
        libc::signal(libc::SIGCHLD, libc::SIG_DFL);
    }
}

/// Kills and reaps a child known only by its pid (one that could not be given a pidfd).
pub(crate) fn kill_and_reap(pid: libc::pid_t) {
    // SAFETY: `pid` is our own, not yet reaped child, so it cannot have been recycled.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
}

/// Sets `SIGPIPE` to ignored, as the Rust runtime does before `main`; a re-executed child runs
/// before that point and would otherwise die on a write to a closed pipe.
pub(crate) fn ignore_sigpipe() {
    // SAFETY: installing SIG_IGN has no memory-safety preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// Reads and removes an environment variable from the C environment. Used only before `main`
/// in a freshly executed, single-threaded process, where nothing else touches the environment.
pub(crate) fn take_env(name: &CStr) -> Option<String> {
    // SAFETY: getenv returns a pointer into the environment, valid until the next change to it;
    // we copy it before unsetenv. The process is single-threaded here (see above).
    unsafe {
        let value = libc::getenv(name.as_ptr());
        if value.is_null() {
            return None;
        }
        let owned = CStr::from_ptr(value).to_string_lossy().into_owned();
        libc::unsetenv(name.as_ptr());
        Some(owned)
    }
}

/// Starts `exe` with `argv` and `envp` by `posix_spawn`, placing each `(from, to)` descriptor at
/// `to` in the child and closing every other descriptor above the highest `to` (so unrelated,
/// inheritable parent descriptors do not leak: CPython's `TestCloseFds`).
pub(crate) fn spawn(
    exe: &CStr,
    argv: &[CString],
    envp: &[CString],
    fds: &[(BorrowedFd<'_>, RawFd)],
) -> io::Result<libc::pid_t> {
    let mut argv_ptrs: Vec<*mut libc::c_char> = argv.iter().map(|s| s.as_ptr() as *mut _).collect();
    argv_ptrs.push(std::ptr::null_mut());
    let mut envp_ptrs: Vec<*mut libc::c_char> = envp.iter().map(|s| s.as_ptr() as *mut _).collect();
    envp_ptrs.push(std::ptr::null_mut());
    let highest = fds.iter().map(|&(_, to)| to).max().unwrap_or(2);
    // A source that already sits at a target number would be clobbered by an earlier dup2
    // (or, at its own number, keep FD_CLOEXEC): move such sources above every target first.
    let mut moved: Vec<OwnedFd> = Vec::new();
    let mut sources: Vec<(RawFd, RawFd)> = Vec::with_capacity(fds.len());
    for &(from, to) in fds {
        if from.as_raw_fd() <= highest {
            let copy = nix::fcntl::fcntl(from, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(highest + 1))?;
            // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
            moved.push(unsafe { OwnedFd::from_raw_fd(copy) });
            sources.push((copy, to));
        } else {
            sources.push((from.as_raw_fd(), to));
        }
    }

    // SAFETY: the file-actions object is initialised before use and destroyed on every path;
    // all pointers passed to posix_spawn (exe, argv, envp) stay alive until it returns, and the
    // borrowed descriptors outlive the call.
    unsafe {
        let mut actions: libc::posix_spawn_file_actions_t = std::mem::zeroed();
        let ret = libc::posix_spawn_file_actions_init(&mut actions);
        if ret != 0 {
            return Err(io::Error::from_raw_os_error(ret));
        }
        let mut ret = 0;
        for &(from, to) in &sources {
            if ret == 0 {
                ret = libc::posix_spawn_file_actions_adddup2(&mut actions, from, to);
            }
        }
        if ret == 0 {
            ret = libc::posix_spawn_file_actions_addclosefrom_np(&mut actions, highest + 1);
        }
        let mut pid = 0;
        if ret == 0 {
            ret = libc::posix_spawn(
                &mut pid,
                exe.as_ptr(),
                &actions,
                std::ptr::null(),
                argv_ptrs.as_ptr(),
                envp_ptrs.as_ptr(),
            );
        }
        libc::posix_spawn_file_actions_destroy(&mut actions);
        drop(moved);
        if ret != 0 {
            return Err(io::Error::from_raw_os_error(ret));
        }
        Ok(pid)
    }
}

/// Takes ownership of a descriptor number handed to this process at start-up.
///
/// # Safety
/// `fd` must be open and owned by nothing else in this process.
pub(crate) unsafe fn own_fd(fd: RawFd) -> OwnedFd {
    // SAFETY: guaranteed by the caller.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// A sealed-size anonymous file (`memfd_create`, close-on-exec) holding `data`.
pub(crate) fn memfd_with(name: &CStr, data: &[u8]) -> io::Result<OwnedFd> {
    // SAFETY: a plain syscall with a valid C string; on success it returns a new descriptor
    // that nothing else owns.
    let fd = cvt(unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) })?;
    // SAFETY: `fd` was just returned by the kernel and is owned by no one else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut written = 0;
    while written < data.len() {
        match nix::unistd::write(&fd, &data[written..]) {
            Ok(n) => written += n,
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(fd)
}

/// Appends the whole content of a regular file (e.g. a memfd) to `out`, reading from offset 0.
pub(crate) fn read_whole_file(fd: BorrowedFd<'_>, out: &mut Vec<u8>) -> io::Result<()> {
    let size = nix::sys::stat::fstat(fd)?.st_size as usize;
    nix::unistd::lseek(fd, 0, nix::unistd::Whence::SeekSet)?;
    read_exact_into_vec(fd, out, size)
}

/// Moves `fd` to descriptor number `target` (`dup2`, then closes the original).
///
/// # Safety
/// Whatever owned `target` before must never be used or dropped again: the caller is a fresh
/// child that is about to run the bootstrap and `_exit`.
pub(crate) unsafe fn move_fd(fd: OwnedFd, target: RawFd) -> OwnedFd {
    use std::os::fd::IntoRawFd;
    let raw = fd.into_raw_fd();
    if raw != target {
        // SAFETY: both are valid descriptor numbers; ownership of `raw` was released above and
        // the caller guarantees `target` is free to take over.
        unsafe {
            libc::dup2(raw, target);
            libc::close(raw);
        }
    }
    // SAFETY: `target` now refers to the moved socket, owned by no one else (see above).
    unsafe { OwnedFd::from_raw_fd(target) }
}

/// Sets close-on-exec on `fd`.
pub(crate) fn set_cloexec(fd: BorrowedFd<'_>) -> io::Result<()> {
    nix::fcntl::fcntl(
        fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )?;
    Ok(())
}

/// Whether `fd` is an open socket.
pub(crate) fn is_socket(fd: RawFd) -> bool {
    // SAFETY: fstat writes into a zeroed, properly sized stat buffer.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstat(fd, &mut st) == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFSOCK
    }
}

/// Whether `fd` is an open descriptor.
pub(crate) fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only queries the descriptor table.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

/// A connected pair of `AF_UNIX`, `SOCK_STREAM` sockets, close-on-exec.
pub(crate) fn stream_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?)
}

/// A connected pair of `AF_UNIX`, `SOCK_SEQPACKET` sockets, close-on-exec: message boundaries
/// are kept by the kernel.
pub(crate) fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?)
}

/// Receives one continuation record of at most `max` bytes, appending it to `out` without
/// zero-filling first; returns its size. End of stream is `UnexpectedEof`.
pub(crate) fn recv_record_into_vec(
    fd: BorrowedFd<'_>,
    out: &mut Vec<u8>,
    max: usize,
) -> io::Result<usize> {
    // SAFETY: recv_record writes at most `len` bytes at `ptr` and returns the count written.
    unsafe { append_with(out, max, |ptr, len| recv_record(fd, ptr, len)) }
}

/// Appends what `read` puts into up to `max` bytes of `out`'s spare capacity (no zero-fill
/// first), returning the count `read` reports.
///
/// # Safety
/// `read(ptr, max)` must write at most `max` bytes at `ptr` and return exactly how many it
/// initialised.
unsafe fn append_with(
    out: &mut Vec<u8>,
    max: usize,
    read: impl FnOnce(*mut u8, usize) -> io::Result<usize>,
) -> io::Result<usize> {
    out.try_reserve(max)
        .map_err(|_| io::Error::new(io::ErrorKind::OutOfMemory, "message too large to buffer"))?;
    let n = read(out.spare_capacity_mut().as_mut_ptr().cast(), max)?;
    // SAFETY: `read` initialised the first `n` bytes of the spare capacity (caller's contract).
    unsafe { out.set_len(out.len() + n) };
    Ok(n)
}

/// Receives one continuation record into `buf`; returns its size.
pub(crate) fn recv_record_into(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of its length.
    unsafe { recv_record(fd, buf.as_mut_ptr(), buf.len()) }
}

/// `recv` of one record of at most `len` bytes. With `MSG_TRUNC` the kernel reports the
/// record's real size, so a record longer than the room left is an error, not silent loss.
///
/// # Safety
/// `ptr` must be valid for writes of `len` bytes.
unsafe fn recv_record(fd: BorrowedFd<'_>, ptr: *mut u8, len: usize) -> io::Result<usize> {
    loop {
        // SAFETY: `ptr` is valid for writes of `len` bytes (the caller's contract).
        let n = unsafe { libc::recv(fd.as_raw_fd(), ptr.cast(), len, libc::MSG_TRUNC) };
        return match n {
            -1 => {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                Err(err)
            }
            0 if len > 0 => Err(io::ErrorKind::UnexpectedEof.into()),
            n if n as usize <= len => Ok(n as usize),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a record longer than the rest of its message on the connection",
            )),
        };
    }
}

/// The socket's send buffer size as the kernel accounts it (`SO_SNDBUF`).
pub(crate) fn send_buffer_size(fd: BorrowedFd<'_>) -> io::Result<usize> {
    Ok(nix::sys::socket::getsockopt(
        &fd,
        nix::sys::socket::sockopt::SndBuf,
    )?)
}

/// Asks for a send buffer of `size` bytes (`SO_SNDBUF`; capped by `net.core.wmem_max`).
pub(crate) fn set_send_buffer_size(fd: BorrowedFd<'_>, size: usize) -> io::Result<()> {
    Ok(nix::sys::socket::setsockopt(
        &fd,
        nix::sys::socket::sockopt::SndBuf,
        &size,
    )?)
}

/// A pipe, both ends close-on-exec.
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?)
}

/// Writes all of `parts` to the socket, attaching `fds` to the first byte. Retries on `EINTR`;
/// never raises `SIGPIPE` (a closed peer is `EPIPE`).
pub(crate) fn send_all(fd: BorrowedFd<'_>, parts: &[&[u8]], fds: &[RawFd]) -> io::Result<()> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut sent = 0usize;
    let mut fds_pending = !fds.is_empty();
    while sent < total || fds_pending {
        // On the stack: an allocation per message would cost more than the syscall saves.
        let mut rest: [&[u8]; MAX_PARTS] = [&[]; MAX_PARTS];
        let count = window(parts, sent, total - sent, &mut rest);
        let mut slices = [IoSlice::new(&[]); MAX_PARTS];
        for (slice, part) in slices.iter_mut().zip(&rest[..count]) {
            *slice = IoSlice::new(part);
        }
        let rights = [ControlMessage::ScmRights(fds)];
        let cmsgs: &[ControlMessage] = if fds_pending { &rights } else { &[] };
        match sendmsg::<()>(
            fd.as_raw_fd(),
            &slices[..count],
            cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(n) => {
                sent += n;
                fds_pending = false;
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Sends `parts` as one record on a `SOCK_SEQPACKET` socket with `fds` attached, without
/// waiting: `Ok(false)` if the socket's buffer has no room now. A record goes whole or not at
/// all. Never raises `SIGPIPE`.
pub(crate) fn try_send_record(
    fd: BorrowedFd<'_>,
    parts: &[&[u8]],
    fds: &[RawFd],
) -> io::Result<bool> {
    assert!(parts.len() <= MAX_PARTS, "too many parts for one record");
    let mut slices = [IoSlice::new(&[]); MAX_PARTS];
    for (slice, part) in slices.iter_mut().zip(parts) {
        *slice = IoSlice::new(part);
    }
    let slices = &slices[..parts.len()];
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    loop {
        match sendmsg::<()>(
            fd.as_raw_fd(),
            slices,
            cmsgs,
            MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
            None,
        ) {
            Ok(_) => return Ok(true),
            Err(nix::errno::Errno::EINTR) => {}
            Err(nix::errno::Errno::EAGAIN) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
    }
}

/// The most parts one [`send_all`] call may write.
pub(crate) const MAX_PARTS: usize = 6;

/// Fills `out` with the slices of `parts` that cover `len` bytes starting at byte `start` of
/// their concatenation; returns how many it filled (at most `out.len()`).
pub(crate) fn window<'a>(
    parts: &[&'a [u8]],
    mut start: usize,
    mut len: usize,
    out: &mut [&'a [u8]],
) -> usize {
    let mut count = 0;
    for part in parts {
        if len == 0 || count == out.len() {
            break;
        }
        if start >= part.len() {
            start -= part.len();
            continue;
        }
        let take = (part.len() - start).min(len);
        out[count] = &part[start..start + take];
        count += 1;
        len -= take;
        start = 0;
    }
    count
}

/// Reads up to `buf.len()` bytes with `recvmsg` without waiting (an empty socket gives
/// `WouldBlock`), collecting any descriptors attached to them into `fds` (received
/// close-on-exec). Returns the byte count; 0 means end of stream.
pub(crate) fn try_recv_with_fds(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of its length.
    unsafe { recvmsg_into(fd, buf.as_mut_ptr(), buf.len(), fds, true) }
}

/// Like [`try_recv_with_fds`], but can wait, and receives up to `max` bytes into the spare capacity of `out`
/// (appending them) without zero-filling it first: a fresh child would otherwise pay a page
/// fault for every page of a buffer it never uses.
pub(crate) fn recv_with_fds_into_vec(
    fd: BorrowedFd<'_>,
    out: &mut Vec<u8>,
    max: usize,
    fds: &mut Vec<OwnedFd>,
    nonblocking: bool,
) -> io::Result<usize> {
    // SAFETY: recvmsg_into writes at most `len` bytes at `ptr` and returns the count written.
    unsafe {
        append_with(out, max, |ptr, len| {
            recvmsg_into(fd, ptr, len, fds, nonblocking)
        })
    }
}

/// `recvmsg` of up to `len` bytes into memory that may be uninitialised, collecting the
/// descriptors of any `SCM_RIGHTS` message into `fds` (close-on-exec) before checking for
/// truncation, so that none is ever leaked. A truncated record or control message is an error.
/// With `nonblocking`, an empty socket gives `WouldBlock` instead of waiting.
///
/// # Safety
/// `ptr` must be valid for writes of `len` bytes.
unsafe fn recvmsg_into(
    fd: BorrowedFd<'_>,
    ptr: *mut u8,
    len: usize,
    fds: &mut Vec<OwnedFd>,
    nonblocking: bool,
) -> io::Result<usize> {
    let flags = libc::MSG_CMSG_CLOEXEC | if nonblocking { libc::MSG_DONTWAIT } else { 0 };
    // u64 elements: control messages need `cmsghdr` alignment.
    let mut control = [0u64; CMSG_BUFFER.div_ceil(8)];
    loop {
        let mut iov = libc::iovec {
            iov_base: ptr.cast(),
            iov_len: len,
        };
        // SAFETY: msghdr is plain old data; zeroed is a valid empty header.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        // SAFETY: `msg` points at one iovec valid for `len` bytes (the caller's contract) and at
        // a control buffer of the stated size, all alive for the call.
        let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, flags) };
        if n == -1 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        // SAFETY: the kernel filled `msg_control` with `msg_controllen` bytes of well-formed
        // control messages; CMSG_FIRSTHDR/NXTHDR/DATA walk exactly those. Each SCM_RIGHTS
        // descriptor is new in this process and owned by no one else.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                    let bytes = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                    for i in 0..bytes / std::mem::size_of::<RawFd>() {
                        fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                    }
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
        if msg.msg_flags & libc::MSG_CTRUNC != 0 {
            return Err(io::Error::other(
                "more descriptors arrived than one message may carry",
            ));
        }
        if msg.msg_flags & libc::MSG_TRUNC != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a record larger than the buffer on the connection",
            ));
        }
        return Ok(n as usize);
    }
}

/// The size of a control-message buffer for [`MAX_FDS_PER_MESSAGE`] descriptors.
const CMSG_BUFFER: usize = nix::sys::socket::cmsg_space::<[RawFd; MAX_FDS_PER_MESSAGE]>();

/// Reads exactly `buf.len()` bytes. `Ok(false)` if the stream ended before the first byte;
/// `UnexpectedEof` if it ended part-way.
pub(crate) fn read_exact(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        match nix::unistd::read(fd, &mut buf[filled..]) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => filled += n,
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}

/// Reads exactly `len` more bytes, appending them to `out` without zero-filling first.
pub(crate) fn read_exact_into_vec(
    fd: BorrowedFd<'_>,
    out: &mut Vec<u8>,
    len: usize,
) -> io::Result<()> {
    let end = out.len() + len;
    while out.len() < end {
        let want = end - out.len();
        // SAFETY: `read(2)` writes at most `len` bytes at `ptr` and returns the count written.
        unsafe {
            append_with(out, want, |ptr, len| loop {
                match libc::read(fd.as_raw_fd(), ptr.cast(), len) {
                    0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                    -1 => {
                        let err = io::Error::last_os_error();
                        if err.kind() != io::ErrorKind::Interrupted {
                            return Err(err);
                        }
                    }
                    n => return Ok(n as usize),
                }
            })
        }?;
    }
    Ok(())
}

/// Requests to end the blocked calls (see [`interrupt_blocked_calls`]), counted.
static INTERRUPTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// How long an interruptible wait sleeps at most before it looks at [`INTERRUPTS`] again: the
/// bound on how late a request made outside a signal handler (say from the `ctrlc` crate's
/// thread) is noticed.
const INTERRUPT_CHECK: std::time::Duration = std::time::Duration::from_millis(100);

/// Makes every call of this crate that is blocked in this process at the time (`Queue::get`
/// and `put`, `Process::join`, `Connection::recv` and `poll`, `Pool::map`, `AsyncResult::get`,
/// ...) return [`Error::Interrupted`](crate::Error::Interrupted), having taken nothing. This
/// is how a program handles Ctrl-C while it waits: call it from a signal handler (it is
/// async-signal-safe: one atomic add), or from any thread.
///
/// A signal whose handler does not call it leaves the blocked calls waiting (CPython's
/// PEP 475, where a handler that does not raise does not end the call). Called from the
/// handler of a signal that interrupts the wait, it ends the call at once; from another
/// thread, within 100 ms. Calls that start afterwards wait normally. A manager proxy's call
/// waits on: abandoning it would lose what the server hands back.
///
/// # Examples
///
/// ```no_run
/// use multiproc::{Error, Queue};
///
/// extern "C" fn on_ctrl_c(_: libc::c_int) {
///     multiproc::interrupt_blocked_calls();
/// }
///
/// // SAFETY: the handler only calls an async-signal-safe function.
/// unsafe { libc::signal(libc::SIGINT, on_ctrl_c as extern "C" fn(libc::c_int) as usize) };
/// let q: Queue<String> = Queue::new().unwrap();
/// match q.get() {
///     Ok(item) => println!("got {item}"),
///     Err(Error::Interrupted) => println!("Ctrl-C: stopping"),
///     Err(e) => panic!("{e}"),
/// }
/// ```
pub fn interrupt_blocked_calls() {
    INTERRUPTS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

/// What a wait does about [`interrupt_blocked_calls`].
///
/// The waits a caller of the crate blocks in take `OnSignal::caller()` at the start of the
/// call, and return an `Interrupted` error once a request has come since (checked before
/// sleeping, after a signal handler ran (`EINTR`), and every [`INTERRUPT_CHECK`]). Their
/// sleeps are a `poll` or a futex wait with a timeout, which the kernel never restarts after a
/// handler, with or without `SA_RESTART` (signal(7)), so a request from a handler is seen at
/// once however the handler was installed. The crate's own threads, and waits in the middle of
/// a message, use `Retry`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum OnSignal {
    /// Wait on, whatever happens.
    Retry,
    /// Return once the request count differs from this one.
    Interruptible(u32),
}

impl OnSignal {
    /// For a call a caller of the crate makes: interruptible from now on.
    pub(crate) fn caller() -> OnSignal {
        OnSignal::Interruptible(INTERRUPTS.load(std::sync::atomic::Ordering::SeqCst))
    }

    /// An `Interrupted` error if a request came since the call began.
    fn check(self) -> io::Result<()> {
        match self {
            OnSignal::Interruptible(since)
                if INTERRUPTS.load(std::sync::atomic::Ordering::SeqCst) != since =>
            {
                Err(io::ErrorKind::Interrupted.into())
            }
            _ => Ok(()),
        }
    }

    /// `timeout_ms` (−1: none) cut to [`INTERRUPT_CHECK`] for an interruptible wait.
    fn slice_ms(self, timeout_ms: libc::c_int) -> libc::c_int {
        let check = INTERRUPT_CHECK.as_millis() as libc::c_int;
        match self {
            OnSignal::Interruptible(_) if timeout_ms < 0 || timeout_ms > check => check,
            _ => timeout_ms,
        }
    }
}

/// Waits until `fd` is readable (data, end of stream, or a process exit for a pidfd) or the
/// deadline passes. `None` waits for ever. Retries on `EINTR` with the time that is left.
pub(crate) fn wait_readable(fd: BorrowedFd<'_>, deadline: Option<Instant>) -> io::Result<bool> {
    wait_events(fd, libc::POLLIN, deadline, OnSignal::Retry)
}

/// [`wait_readable`], or an `Interrupted` error as `on_signal` says.
pub(crate) fn wait_readable_or(
    fd: BorrowedFd<'_>,
    deadline: Option<Instant>,
    on_signal: OnSignal,
) -> io::Result<bool> {
    wait_events(fd, libc::POLLIN, deadline, on_signal)
}

/// Waits until `fd` can be written without blocking (or is broken: the write then reports
/// why), or the deadline passes; as [`wait_readable_or`].
pub(crate) fn wait_writable_or(
    fd: BorrowedFd<'_>,
    deadline: Option<Instant>,
    on_signal: OnSignal,
) -> io::Result<bool> {
    wait_events(fd, libc::POLLOUT, deadline, on_signal)
}

fn wait_events(
    fd: BorrowedFd<'_>,
    events: libc::c_short,
    deadline: Option<Instant>,
    on_signal: OnSignal,
) -> io::Result<bool> {
    loop {
        on_signal.check()?;
        let timeout_ms: libc::c_int = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                // Round up so that a sub-millisecond remainder still waits.
                let ms = left.as_micros().div_ceil(1000);
                ms.min(libc::c_int::MAX as u128) as libc::c_int
            }
        };
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events,
            revents: 0,
        };
        // SAFETY: one valid pollfd, count 1.
        let ret = unsafe { libc::poll(&mut pfd, 1, on_signal.slice_ms(timeout_ms)) };
        match ret {
            -1 => {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
            0 => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Ok(false);
                }
            }
            _ => return Ok(true),
        }
    }
}

/// Polls several descriptors for readability; returns the indices that are ready (none if
/// interrupted by a signal).
pub(crate) fn poll_readable(fds: &[RawFd], timeout_ms: i32) -> io::Result<Vec<usize>> {
    poll_readable_or(fds, timeout_ms, OnSignal::Retry)
}

/// [`poll_readable`], or an `Interrupted` error as `on_signal` says (an interruptible poll
/// sleeps [`INTERRUPT_CHECK`] at most: callers loop).
pub(crate) fn poll_readable_or(
    fds: &[RawFd],
    timeout_ms: i32,
    on_signal: OnSignal,
) -> io::Result<Vec<usize>> {
    on_signal.check()?;
    let watch: Vec<(RawFd, libc::c_short)> = fds.iter().map(|&fd| (fd, libc::POLLIN)).collect();
    let mut ready = Vec::new();
    match poll_once(
        &watch,
        on_signal.slice_ms(timeout_ms),
        &mut Vec::new(),
        &mut ready,
    ) {
        Err(e) if e.kind() == io::ErrorKind::Interrupted => on_signal.check()?,
        other => other?,
    }
    Ok(ready)
}

/// Sleeps while `word` holds `expected`, at most `timeout` (`None`: for ever), or until a
/// request to interrupt as `on_signal` says (an `Interrupted` error). Spurious wake-ups
/// happen: callers check their condition again. An interruptible wait always has a timeout
/// (at most [`INTERRUPT_CHECK`]): the kernel restarts an untimed futex wait after an
/// `SA_RESTART` handler, but never a timed one.
pub(crate) fn futex_wait_or(
    word: &std::sync::atomic::AtomicU32,
    expected: u32,
    timeout: Option<std::time::Duration>,
    on_signal: OnSignal,
) -> io::Result<()> {
    if on_signal == OnSignal::Retry {
        futex_wait(word, expected, timeout);
        return Ok(());
    }
    on_signal.check()?;
    let t = timeout.map_or(INTERRUPT_CHECK, |t| t.min(INTERRUPT_CHECK));
    let ts = libc::timespec {
        tv_sec: t.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    };
    // SAFETY: FUTEX_WAIT (shared: the word may be in memory other processes map) on a valid,
    // aligned u32; `ts` is alive during the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    if ret == -1 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
        on_signal.check()?;
    }
    Ok(())
}

/// `poll` with caller-kept buffers: each entry of `watch` is a descriptor and the events asked
/// for (0: only hang-up and errors, which are always reported); `polled` is scratch space,
/// `ready` receives the indices of the entries with events (empty after a timeout or an
/// interruption).
pub(crate) fn poll_into(
    watch: &[(RawFd, libc::c_short)],
    timeout_ms: i32,
    polled: &mut Vec<libc::pollfd>,
    ready: &mut Vec<usize>,
) -> io::Result<()> {
    match poll_once(watch, timeout_ms, polled, ready) {
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
        other => other,
    }
}

/// One `poll` into `ready`; an interruption is an `Interrupted` error.
fn poll_once(
    watch: &[(RawFd, libc::c_short)],
    timeout_ms: i32,
    polled: &mut Vec<libc::pollfd>,
    ready: &mut Vec<usize>,
) -> io::Result<()> {
    polled.clear();
    polled.extend(watch.iter().map(|&(fd, events)| libc::pollfd {
        fd,
        events,
        revents: 0,
    }));
    ready.clear();
    // SAFETY: `polled` is a valid array of pollfd of the given length.
    let ret = unsafe {
        libc::poll(
            polled.as_mut_ptr(),
            polled.len() as libc::nfds_t,
            timeout_ms,
        )
    };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    ready.extend(
        polled
            .iter()
            .enumerate()
            .filter(|(_, p)| p.revents != 0)
            .map(|(i, _)| i),
    );
    Ok(())
}

/// The identity of the running executable, to check that a re-executed child is the same
/// binary as its parent: (device, inode, size, mtime seconds, mtime nanoseconds) of
/// `/proc/self/exe`. rustc emits no build-id of its own (DESIGN §9).
pub(crate) fn exe_identity() -> io::Result<[i64; 5]> {
    // A process's executable never changes (the link follows the inode even if the file is
    // replaced), so one stat serves the process and every fork of it.
    static IDENTITY: std::sync::OnceLock<[i64; 5]> = std::sync::OnceLock::new();
    if let Some(identity) = IDENTITY.get() {
        return Ok(*identity);
    }
    let st = nix::sys::stat::stat("/proc/self/exe")?;
    let identity = [
        st.st_dev as i64,
        st.st_ino as i64,
        st.st_size,
        st.st_mtime,
        st.st_mtime_nsec,
    ];
    Ok(*IDENTITY.get_or_init(|| identity))
}

/// This process's id.
pub(crate) fn getpid() -> libc::pid_t {
    nix::unistd::getpid().as_raw()
}

/// Fills `buf` with bytes from the kernel's random number generator (`getrandom(2)`, or
/// `/dev/urandom` on a kernel without that call).
pub(crate) fn random_bytes(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: the kernel writes at most `rest.len()` bytes into `rest`, a buffer we hold
        // exclusively for the call.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n >= 0 {
            filled += n as usize;
            continue;
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::ENOSYS) => {
                use std::io::Read;
                return std::fs::File::open("/dev/urandom")?.read_exact(rest);
            }
            _ => return Err(err),
        }
    }
    Ok(())
}

/// `F_SETSIG` (asm-generic/fcntl.h; the libc crate does not export it for glibc targets).
const F_SETSIG: libc::c_int = 10;

/// Arranges for the kernel to `SIGKILL` this process once no write end of the pipe whose read
/// end is `read_end` is left open (when the last one closes, the kernel's `pipe_release` sends
/// the readers' `O_ASYNC` signal; `F_SETSIG` makes that signal `SIGKILL`). If every write end
/// is closed already, kills this process at once. Returns the descriptor that carries the
/// arrangement (close-on-exec), which must stay open for as long as it should hold.
///
/// The read end is reopened through `/proc/self/fd` first: the owner that `F_SETOWN` records
/// belongs to the open file description, which every copy of a descriptor shares, so a copy
/// inherited from the parent (or received with `SCM_RIGHTS`) would make siblings overwrite
/// each other's ownership.
///
/// Async-signal-safe: `open`, `fcntl`, `poll`, `close`, `getpid` and `kill` only, no
/// allocation (the path is formatted on the stack).
pub(crate) fn kill_self_on_hangup(read_end: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let mut path = *b"/proc/self/fd/\0\0\0\0\0\0\0\0\0\0\0\0";
    let prefix = b"/proc/self/fd/".len();
    let mut digits = [0u8; 10];
    let mut n = read_end.as_raw_fd() as u32;
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        path[prefix + i] = digits[len - 1 - i];
    }
    // The byte after the digits is still 0: `path` is a C string.
    // SAFETY: `path` is NUL-terminated and lives across the call.
    let fd = cvt(unsafe {
        libc::open(
            path.as_ptr().cast(),
            libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NONBLOCK,
        )
    })?;
    // SAFETY: `fd` was just returned by open and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let raw = fd.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own, with integer arguments only.
    unsafe {
        cvt(libc::fcntl(raw, libc::F_SETOWN, libc::getpid()))?;
        cvt(libc::fcntl(raw, F_SETSIG, libc::SIGKILL))?;
        let flags = cvt(libc::fcntl(raw, libc::F_GETFL))?;
        cvt(libc::fcntl(raw, libc::F_SETFL, flags | libc::O_ASYNC))?;
    }
    // A parent that died before O_ASYNC was set sent no signal: look for the hang-up now.
    let mut watch = libc::pollfd {
        fd: raw,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, for the duration of the call.
    let ready = unsafe { libc::poll(&mut watch, 1, 0) };
    if ready > 0 && watch.revents & libc::POLLHUP != 0 {
        raise_signal(libc::SIGKILL);
    }
    Ok(fd)
}
