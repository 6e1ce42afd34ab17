//! Descriptors: owning, moving and closing them, pipes, memfds, and exact reads into
//! buffers that are not zero-filled first. `memfd_create` and `close_range` are Linux-specific.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use super::cvt::cvt;

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

/// Appends what `read` puts into up to `max` bytes of `out`'s spare capacity (no zero-fill
/// first), returning the count `read` reports.
///
/// # Safety
/// `read(ptr, max)` must write at most `max` bytes at `ptr` and return exactly how many it
/// initialised.
pub(super) unsafe fn append_with(
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

/// A pipe, both ends close-on-exec.
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?)
}

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
