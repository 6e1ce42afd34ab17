//! Waiting: `poll` on one or several descriptors, and the interruptible futex wait, each with
//! a deadline and the [`OnSignal`] rule.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::time::Instant;

use super::interrupt::{OnSignal, INTERRUPT_CHECK};
use super::shm::futex_wait;

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
