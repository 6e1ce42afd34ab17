//! The fork page: the state a forked child rewrites first, packed into one page, and the table
//! of descriptors crate handles own, which a forked child closes (async-signal-safe).

use std::os::fd::RawFd;

use super::fd::close_raw;

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
