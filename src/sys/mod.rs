//! The OS layer: every call that needs `unsafe`, and the socket I/O helpers built on them.
//!
//! Nothing here knows about processes, pickles or connections; the rest of the crate calls these
//! functions and never `libc` directly. One file per kind of OS object:
//!
//! - `fd`: owning, moving and closing descriptors, pipes, memfds, exact reads;
//! - `socket`: `AF_UNIX` pairs, sends with descriptors attached, records, TCP options;
//! - `poll`: waits on descriptors and the interruptible futex wait;
//! - `interrupt`: [`interrupt_blocked_calls`] and the `OnSignal` rule the waits follow;
//! - `process`: fork, spawn, pidfds, reaping, the executable's identity, dying with the parent;
//! - `signal`: the signal dispositions the crate sets;
//! - `fork_page`: the page a forked child rewrites first, and the descriptors it closes;
//! - `shm`, `lock`, `slots`: shared memory, the robust process-shared lock, shared slots;
//! - `random`, `cvt`: kernel random bytes; C return values as `io::Result`.
//!
//! # Platforms
//!
//! Written for Linux; a macOS port replaces the Linux-specific items behind these same names:
//! pidfds (`pidfd_open`, `pidfd_send_signal`, `waitid_pidfd`), `close_from` (`close_range`),
//! `spawn`'s `posix_spawn_file_actions_addclosefrom_np`, `memfd_with` (`memfd_create`),
//! `exe_identity` (`/proc/self/exe`), `kill_self_on_hangup` (`F_SETSIG`, `/proc/self/fd`),
//! `recv_with_fds_into_vec`'s `MSG_CMSG_CLOEXEC`, `set_quickack` (`TCP_QUICKACK`),
//! `random_bytes` (`getrandom`), and in `shm`/`lock` the futex calls, robust lists and
//! `gettid`. The rest is POSIX.

mod cvt;
mod fd;
mod fork_page;
mod interrupt;
mod lock;
mod poll;
mod process;
mod random;
mod shm;
mod signal;
mod slots;
mod socket;

pub(crate) use fd::{
    close_from, close_raw, fd_is_open, is_socket, memfd_with, move_fd, own_fd, pipe, read_exact,
    read_whole_file, set_cloexec,
};
pub(crate) use fork_page::{close_tracked_fds, track_fd, untrack_fd, FORK_PAGE};
pub use interrupt::interrupt_blocked_calls;
pub(crate) use interrupt::OnSignal;
pub(crate) use lock::{Acquired, RobustLock, LOCK_SIZE, OWNER_CHECK};
pub(crate) use poll::{
    futex_wait_or, poll_into, poll_readable, poll_readable_or, wait_readable, wait_readable_or,
    wait_writable_or,
};
pub(crate) use process::{
    exe_identity, exit_immediately, fork, getpid, kill_and_reap, kill_self_on_hangup, pidfd_open,
    pidfd_send_signal, spawn, take_env, waitid_pidfd, waitpid_nohang, Forked, WaitStatus,
};
pub(crate) use random::random_bytes;
#[cfg(test)]
pub(crate) use shm::shm_seals;
pub(crate) use shm::{
    futex_wait, futex_wake, gettid, is_own_thread, refuse, take_refusal, thread_alive, Refusal,
    SharedMapping,
};
pub(crate) use signal::{default_sigchld, ignore_sigint, ignore_sigpipe};
pub(crate) use slots::SharedSlots;
pub(crate) use socket::{
    recv_record_into, recv_record_into_vec, recv_with_fds_into_vec, send_all, send_buffer_size,
    seqpacket_pair, set_quickack, set_send_buffer_size, stream_pair, try_recv_with_fds,
    try_send_record, window, MAX_FDS_PER_MESSAGE, MAX_PARTS,
};
