//! Signal dispositions this crate sets, and raising a signal in the calling process.

/// Sends `signal` to the calling process.
pub(crate) fn raise_signal(signal: i32) {
    // SAFETY: kill on our own pid with a valid signal number has no memory effects.
    unsafe {
        libc::kill(libc::getpid(), signal);
    }
}

/// Restores the default disposition of `SIGCHLD` (so that exited children wait to be reaped).
pub(crate) fn default_sigchld() {
    // SAFETY: installing SIG_DFL has no memory-safety preconditions.
    unsafe {
        libc::signal(libc::SIGCHLD, libc::SIG_DFL);
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

/// Sets `SIGINT` to ignored in this process (a manager server child: Ctrl-C in a terminal
/// goes to the whole foreground group, and the server must outlive it for its clients, as
/// CPython's does since bpo-36368).
pub(crate) fn ignore_sigint() {
    // SAFETY: installing SIG_IGN has no memory-safety preconditions.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
    }
}
