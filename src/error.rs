//! The crate's error type.

use std::io;

/// Everything that can go wrong when starting, joining or talking to a process.
///
/// Each variant carries what a caller needs to act on it: the pid, the signal, the panic
/// message, the type that failed to serialize, the OS error.
///
/// # Examples
///
/// ```
/// use multiproc::{Error, Process};
///
/// fn boom(n: u32) -> u32 {
///     panic!("boom {n}");
/// }
///
/// let mut child = Process::spawn(boom, 42).unwrap();
/// match child.join() {
///     Err(Error::Panicked { message, .. }) => assert!(message.contains("boom 42")),
///     other => panic!("unexpected: {other:?}"),
/// }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The child's function panicked. Its exit code is 1, as for an uncaught Python exception.
    #[error("process {pid} panicked: {message}{}", location.as_deref().map(|l| format!(" (at {l})")).unwrap_or_default())]
    Panicked {
        /// The child's pid.
        pid: u32,
        /// The panic message (`"Box<dyn Any>"` when the payload was not a string).
        message: String,
        /// `file:line:column` of the panic, when known.
        location: Option<String>,
    },

    /// The child was killed by a signal before it returned a result.
    #[error("process {pid} was killed by signal {signal} ({})", signal_name(*signal))]
    Signaled {
        /// The child's pid.
        pid: u32,
        /// The signal number (`SIGTERM` = 15, `SIGKILL` = 9, …).
        signal: i32,
    },

    /// The child exited (e.g. by `std::process::exit`) before it returned a result.
    #[error("process {pid} exited with code {code} before returning a result")]
    Exited {
        /// The child's pid.
        pid: u32,
        /// Its exit code; 255 when a forkserver that was reporting it died.
        code: i32,
    },

    /// A value could not be pickled (the argument in the parent, or the result in the child).
    #[error("cannot serialize {type_name}: {reason}")]
    Serialize {
        /// The Rust type that failed.
        type_name: &'static str,
        /// Why, as serde-pickle or the type's `Serialize` impl said.
        reason: String,
    },

    /// Received bytes could not be unpickled into the expected type.
    #[error("cannot deserialize {type_name}: {reason}")]
    Deserialize {
        /// The Rust type expected.
        type_name: &'static str,
        /// Why, as serde-pickle or the type's `Deserialize` impl said.
        reason: String,
    },

    /// The child process started but could not run the function: a different executable
    /// answered, or its bootstrap failed.
    #[error("process {pid} could not run its function: {reason}")]
    Bootstrap {
        /// The child's pid.
        pid: u32,
        /// What went wrong.
        reason: String,
    },

    /// `join_timeout` or `recv_timeout` ran out of time; the handle stays usable.
    #[error("timed out")]
    Timeout,

    /// The result was already taken by an earlier `join`.
    #[error("process {pid} was already joined")]
    AlreadyJoined {
        /// The child's pid.
        pid: u32,
    },

    /// The other end of a connection is closed (every copy of it), or the stream ended
    /// part-way through a message.
    #[error("the other end of the connection is closed")]
    Disconnected,

    /// This end of the connection was closed with `close()`.
    #[error("the connection is closed")]
    Closed,

    /// `recv_bytes_into` was given a buffer too small for the message; the whole message is
    /// here, nothing is lost.
    #[error("buffer too short: the message has {} bytes", .0.len())]
    BufferTooShort(Vec<u8>),

    /// An argument was out of range (an offset past the buffer, too many handles in one
    /// message, …).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// A queue `get` found nothing: at once (`try_get`) or within its timeout. Also what a
    /// manager's remote `queue.Empty` becomes.
    #[error("the queue is empty")]
    Empty,

    /// A queue `put` found no room: at once (`try_put`) or within its timeout. Also what a
    /// manager's remote `queue.Full` becomes. The caller still owns the value it offered.
    #[error("the queue is full")]
    Full,

    /// `JoinableQueue::task_done` was called more times than items were put (CPython's
    /// `ValueError`); the count of unfinished tasks stays at 0.
    #[error("task_done() called more times than items were put")]
    TaskDoneTooOften,

    /// The queue was shut down (`Queue::shutdown`, CPython 3.13's `queue.ShutDown`): no more
    /// puts, and gets once it is empty.
    #[error("the queue is shut down")]
    ShutDown,

    /// A manager handshake failed: a wrong authkey on either side, or a peer that does not
    /// speak the handshake.
    #[error("authentication failed: {reason}")]
    Auth {
        /// What went wrong, e.g. `"digest sent was rejected"`.
        reason: &'static str,
    },

    /// A manager's served object raised a Python exception, or the server reported a failure
    /// (`RemoteError`, for an unknown object, method or request).
    #[error("remote {class}: {message}")]
    Remote {
        /// The exception's class, `module.Name` (`"builtins.ValueError"`,
        /// `"multiprocessing.managers.RemoteError"`).
        class: String,
        /// Its message (the first argument, or the traceback text the server sent).
        message: String,
    },

    /// A peer broke the managers' wire protocol (bad frame, oversized handshake frame, a reply
    /// of the wrong shape).
    #[error("protocol error: {reason}")]
    Protocol {
        /// What was wrong.
        reason: String,
    },

    /// A message is larger than the receiver accepts: a manager request over the server's
    /// frame cap ([`ManagerServer::max_frame`](crate::managers::ManagerServer::max_frame)),
    /// refused before it is sent when the server's cap is known, or refused by the server
    /// (which reads and drops it, and closes that connection); or a frame over this side's own
    /// cap. The proxy stays usable: the next call opens a new connection if it needs one.
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    MessageTooLarge {
        /// The message's size in bytes (its pickle, without the frame header).
        size: u64,
        /// The receiver's cap in bytes.
        limit: u64,
    },

    /// A pickle on a manager's wire could not be read or mapped to the Rust type.
    #[error(transparent)]
    Pickle(#[from] crate::pickle::PickleError),

    /// A pool worker died (killed by a signal, or exited) while it held this task; the pool
    /// has started a replacement and every other task carries on (CPython's `Pool` hangs here,
    /// bpo-22393).
    #[error("pool worker {pid} died while running the task ({})", describe_death(*signal, *code))]
    WorkerLost {
        /// The worker's pid.
        pid: u32,
        /// The signal that killed it, if a signal did.
        signal: Option<i32>,
        /// Its exit code, if it exited.
        code: Option<i32>,
    },

    /// The pool was closed (`close`, `terminate` or drop) before this call: it takes no new work.
    #[error("the pool is closed")]
    PoolClosed,

    /// The pool was terminated before this task produced a result.
    #[error("the task was cancelled: the pool was terminated")]
    Cancelled,

    /// The pool cannot run work: its initializer failed in a worker, or a worker could not be
    /// started. Pending and later tasks fail with this error rather than wait.
    #[error("the pool is broken: {reason}")]
    PoolBroken {
        /// What broke it (the worker's pid and panic message, or the start error).
        reason: String,
    },

    /// The result was already taken out by an earlier `get_timeout`.
    #[error("the result was already taken")]
    ResultTaken,

    /// `release` of a lock that is not held: a [`Lock`](crate::Lock) that is unlocked, or an
    /// [`RLock`](crate::RLock) the calling thread does not hold (CPython's `ValueError` /
    /// `RuntimeError` for releasing an un-acquired lock).
    #[error("release of a lock that is not held (by this thread, for an RLock)")]
    NotHeld,

    /// `release` of a semaphore already at its most: a
    /// [`BoundedSemaphore`](crate::BoundedSemaphore) at its start value (CPython's
    /// `ValueError: semaphore or lock released too many times`).
    #[error("semaphore released too many times (its most is {limit})")]
    TooManyReleases {
        /// The value the semaphore may not pass.
        limit: u32,
    },

    /// A [`Barrier`](crate::Barrier) was broken (a timeout, `abort`, `reset` or a panicking
    /// action) before or while this party waited (CPython's `BrokenBarrierError`).
    #[error("the barrier is broken")]
    BrokenBarrier,

    /// Shared memory received from another process (a [`Value`](crate::Value),
    /// [`Queue`](crate::Queue), `Lock`, …) was refused: its memfd is not sealed against
    /// shrinking, growing and further seals, so a peer could shrink it under this process and
    /// make it fault with `SIGBUS`. Every region this crate makes is sealed; this one was not
    /// made by it (or not by this version).
    #[error("shared memory not sealed against resizing (seals {seals:#x})")]
    UnsealedSharedMemory {
        /// The seals it has (`F_GET_SEALS`; 0 for a descriptor that is not a memfd).
        seals: u32,
    },

    /// Shared memory received from another process is smaller than what it must hold (its
    /// header, or the elements its header counts).
    #[error("shared memory of {len} bytes, at least {needed} needed")]
    SharedMemoryTooSmall {
        /// Its size in bytes.
        len: u64,
        /// The bytes needed.
        needed: u64,
    },

    /// The operating system refused a call.
    #[error("{op} failed: {source}")]
    Os {
        /// The call or step that failed (`"fork"`, `"posix_spawn"`, `"sendmsg"`, …).
        op: &'static str,
        /// The OS error, with its errno (`source.raw_os_error()`).
        #[source]
        source: io::Error,
    },

    /// A value to send to another process holds ipc-channel endpoints (`IpcSender`,
    /// `IpcReceiver`, `IpcSharedMemory`, …). They serialize as indices into ipc-channel's own
    /// side table, which only ipc-channel's `send` carries, so they cannot be pickled. Nothing
    /// was sent; the endpoints' entries were taken back out of that table, so this thread's
    /// next ipc-channel message is unaffected. An `IpcReceiver` inside the value was consumed by
    /// its own `Serialize` impl (ipc-channel moves its descriptor out) and is closed.
    #[error(
        "cannot pickle {type_name}: it holds {channels} ipc-channel endpoint(s) and {regions} \
         ipc-channel shared memory region(s), which only travel inside ipc-channel's own send; \
         send them over an ipc-channel, or use a multiproc Connection or Queue instead"
    )]
    IpcChannelEndpoint {
        /// The Rust type that was refused.
        type_name: &'static str,
        /// How many senders and receivers it held.
        channels: usize,
        /// How many shared memory regions it held.
        regions: usize,
    },

    /// A function reference that came from another process failed authentication: its tag
    /// does not match this process family's [`AuthKey`](crate::AuthKey) and executable. It
    /// was forged, damaged, or made by a process of another family or another executable;
    /// nothing was called.
    #[error("refused {what}: its function reference was not made by this process family")]
    UnauthenticatedFunction {
        /// What carried it: `"a barrier action"`, `"a pool task"`, `"the bootstrap message"`.
        what: &'static str,
    },

    /// [`interrupt_blocked_calls`](crate::interrupt_blocked_calls) was called (typically from
    /// a Ctrl-C handler) while the call waited: it gave up having taken nothing, so that the
    /// program can act on the signal; call again to wait on. CPython raises
    /// `KeyboardInterrupt` in the blocked call.
    #[error("interrupted while waiting (interrupt_blocked_calls)")]
    Interrupted,
}

impl Error {
    /// Wraps an OS error with the name of the step that failed.
    pub(crate) fn os(op: &'static str) -> impl FnOnce(io::Error) -> Error {
        move |source| match source.kind() {
            // Only the interruptible waits report it (`sys::OnSignal`).
            io::ErrorKind::Interrupted => Error::Interrupted,
            _ => Error::Os { op, source },
        }
    }

    /// The errno of an [`Error::Os`], if this is one.
    ///
    /// # Examples
    ///
    /// ```
    /// let err = multiproc::Error::Timeout;
    /// assert_eq!(err.raw_os_error(), None);
    /// ```
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Os { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// Maps an I/O error on a connection: a closed peer becomes [`Error::Disconnected`].
pub(crate) fn connection_io(op: &'static str) -> impl FnOnce(io::Error) -> Error {
    move |source| match source.kind() {
        io::ErrorKind::BrokenPipe
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::UnexpectedEof => Error::Disconnected,
        io::ErrorKind::Interrupted => Error::Interrupted,
        _ => Error::Os { op, source },
    }
}

/// The conventional name of a signal number, for messages.
pub(crate) fn signal_name(signal: i32) -> &'static str {
    nix::sys::signal::Signal::try_from(signal)
        .map(|s| s.as_str())
        .unwrap_or("unknown signal")
}

/// How a worker ended, for [`Error::WorkerLost`]'s message.
fn describe_death(signal: Option<i32>, code: Option<i32>) -> String {
    match (signal, code) {
        (Some(signal), _) => format!("killed by signal {signal} ({})", signal_name(signal)),
        (None, Some(code)) => format!("exited with code {code}"),
        (None, None) => "ended".to_string(),
    }
}
