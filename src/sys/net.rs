//! TCP socket options nix does not wrap.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Turns on `TCP_QUICKACK` (Linux): ACK at once instead of waiting up to ~40 ms for data to
/// piggy-back on. The kernel clears it again by itself, so callers re-arm it before each read
/// (PROTOCOL.md §8.3: a CPython peer writing a frame in two pieces otherwise stalls on the
/// delayed ACK of the first).
pub(crate) fn set_quickack(fd: BorrowedFd<'_>) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: `fd` is a valid open descriptor for the duration of the borrow; the option value
    // points to a live c_int and its exact size is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_QUICKACK,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets `SIGINT` to ignored in this process (a manager server child: Ctrl-C in a terminal
/// goes to the whole foreground group, and the server must outlive it for its clients, as
/// CPython's does since bpo-36368).
pub(crate) fn ignore_sigint() {
    // SAFETY: installing SIG_IGN has no memory-safety preconditions.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
    }
}
