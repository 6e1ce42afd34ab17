//! [`interrupt_blocked_calls`] and [`OnSignal`]: how a blocked call of this crate learns that
//! the program asked it to stop.

use std::io;

/// Requests to end the blocked calls (see [`interrupt_blocked_calls`]), counted.
static INTERRUPTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// How long an interruptible wait sleeps at most before it looks at [`INTERRUPTS`] again: the
/// bound on how late a request made outside a signal handler (say from the `ctrlc` crate's
/// thread) is noticed.
pub(super) const INTERRUPT_CHECK: std::time::Duration = std::time::Duration::from_millis(100);

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
    pub(super) fn check(self) -> io::Result<()> {
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
    pub(super) fn slice_ms(self, timeout_ms: libc::c_int) -> libc::c_int {
        let check = INTERRUPT_CHECK.as_millis() as libc::c_int;
        match self {
            OnSignal::Interruptible(_) if timeout_ms < 0 || timeout_ms > check => check,
            _ => timeout_ms,
        }
    }
}
