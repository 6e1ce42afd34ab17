//! Processes: `fork`, `posix_spawn` with descriptor placement, pidfds and `waitid`, reaping,
//! the executable's identity, and the kill-on-parent-hang-up arrangement. Linux-specific:
//! pidfds (`pidfd_open`, `pidfd_send_signal`, `waitid(P_PIDFD)`), `/proc/self/exe`,
//! `posix_spawn_file_actions_addclosefrom_np`, `F_SETSIG`.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use super::cvt::{cvt, cvt_long};
use super::signal::raise_signal;

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

/// Kills and reaps a child known only by its pid (one that could not be given a pidfd).
pub(crate) fn kill_and_reap(pid: libc::pid_t) {
    // SAFETY: `pid` is our own, not yet reaped child, so it cannot have been recycled.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
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
