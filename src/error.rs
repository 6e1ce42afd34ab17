//! The crate's error types: [`Error`], what happens to a caller, and [`WireError`], what goes
//! wrong on a TCP connection's handshake and framing (managers, `Listener`, `Client`).

use std::io;
use std::sync::Arc;

/// Everything that can go wrong when starting, joining or talking to a process.
///
/// Each variant carries what a caller needs to act on it: the pid, the signal, the panic
/// message, the type that failed to serialize, the OS error. It clones without losing its
/// variant (the OS error is shared behind an [`Arc`]), so a pool can hand the same task error to
/// a callback and to `get`.
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
#[derive(Debug, Clone, thiserror::Error)]
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

    /// A programmer error CPython reports as `ValueError` on an argument: a pool of 0
    /// processes, `max_tasks_per_child(0)`, a chunk size of 0, a barrier of 0 parties, a bounded
    /// queue of size 0 or above `u32::MAX`, a pool `join` before `close` or `terminate`, or from
    /// the pool's own callback. Fix the call; nothing else makes this error.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// An index or slice past the end of a shared [`Array`](crate::Array) or
    /// [`RawArray`](crate::RawArray) (`set`, `set_slice`); nothing was written. Clamp to
    /// `len`, or make a larger array.
    #[error("{count} element(s) from index {start} do not fit an array of {len}")]
    IndexOutOfRange {
        /// The first index written.
        start: usize,
        /// How many elements were to be written.
        count: usize,
        /// The array's length.
        len: usize,
    },

    /// A shared array of more elements than its header can count (`u32::MAX`); nothing was
    /// made.
    #[error("an array of {count} elements is over the limit of {limit}")]
    TooManyElements {
        /// The elements asked for.
        count: usize,
        /// The most an array holds.
        limit: usize,
    },

    /// A message announced a length this process cannot allocate (or address); the
    /// connection is then out of step: close it.
    #[error("cannot allocate a {bytes}-byte message")]
    OutOfMemory {
        /// The message's length in bytes.
        bytes: u64,
    },

    /// A peer process or a shared memory region gave bytes that break this crate's own
    /// framing: a report from a child, a forkserver's greeting, a queue record or ring, a pool
    /// batch, a message header on a connection. A bug or a hostile peer, never the caller's
    /// argument.
    #[error("malformed {what}")]
    Malformed {
        /// What was malformed, e.g. `"queue record"`.
        what: &'static str,
    },

    /// An address given to [`Listener::bind`](crate::managers::Listener::bind),
    /// [`Client::connect`](crate::managers::Client::connect),
    /// [`Manager::connect`](crate::managers::Manager::connect) or
    /// [`ManagerServer::bind`](crate::managers::ManagerServer::bind) is not a TCP `host:port`
    /// address (a Unix path or a Windows pipe name, say: CPython's `TestInvalidFamily`), or
    /// resolves to nothing. A name the resolver cannot look up is [`Error::Os`].
    #[error("invalid address: {reason}")]
    Address {
        /// Why, e.g. `"the address resolves to nothing"`.
        reason: String,
    },

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

    /// A TCP connection's handshake or framing failed (managers, `Listener`, `Client`).
    #[error(transparent)]
    Wire(#[from] WireError),

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
        /// The OS error, with its errno (`source.raw_os_error()`); shared, so that the error
        /// clones.
        #[source]
        source: Arc<io::Error>,
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
            _ => Error::Os {
                op,
                source: Arc::new(source),
            },
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

/// A failure on a TCP connection of the managers' protocol, or of a
/// [`Listener`](crate::managers::Listener) / [`Client`](crate::managers::Client): its
/// handshake, or its framing. [`Error::Wire`] carries it.
///
/// # Examples
///
/// ```
/// use multiproc::managers::{Manager, ManagerServer};
/// use multiproc::{Error, WireError};
///
/// let server = ManagerServer::bind("127.0.0.1:0", b"key").unwrap().start_thread().unwrap();
/// match Manager::connect(server.address(), b"wrong") {
///     Err(Error::Wire(WireError::Auth { reason })) => {
///         assert_eq!(reason, "digest sent was rejected")
///     }
///     Err(other) => panic!("unexpected: {other}"),
///     Ok(_) => panic!("connected with a wrong key"),
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// A handshake failed: a wrong authkey on either side, or a peer that does not speak the
    /// handshake (CPython's `AuthenticationError`).
    #[error("authentication failed: {reason}")]
    Auth {
        /// What went wrong, e.g. `"digest sent was rejected"`.
        reason: &'static str,
    },

    /// A peer broke the wire protocol (bad frame, oversized handshake frame, a reply of the
    /// wrong shape).
    #[error("protocol error: {reason}")]
    Protocol {
        /// What was wrong.
        reason: String,
    },
}

/// Maps an I/O error on a connection: a closed peer becomes [`Error::Disconnected`].
pub(crate) fn connection_io(op: &'static str) -> impl FnOnce(io::Error) -> Error {
    move |source| match source.kind() {
        io::ErrorKind::BrokenPipe
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::UnexpectedEof => Error::Disconnected,
        io::ErrorKind::Interrupted => Error::Interrupted,
        _ => Error::Os {
            op,
            source: Arc::new(source),
        },
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pickle::PickleError;
    use std::mem::discriminant;

    /// The position of each variant: an exhaustive match, so that a new variant must be added
    /// here, and then to `one_of_each` (the test checks that every position is covered).
    fn position(e: &Error) -> usize {
        match e {
            Error::Panicked { .. } => 0,
            Error::Signaled { .. } => 1,
            Error::Exited { .. } => 2,
            Error::Serialize { .. } => 3,
            Error::Deserialize { .. } => 4,
            Error::Bootstrap { .. } => 5,
            Error::Timeout => 6,
            Error::AlreadyJoined { .. } => 7,
            Error::Disconnected => 8,
            Error::Closed => 9,
            Error::BufferTooShort(_) => 10,
            Error::InvalidArgument(_) => 11,
            Error::IndexOutOfRange { .. } => 12,
            Error::TooManyElements { .. } => 13,
            Error::OutOfMemory { .. } => 14,
            Error::Malformed { .. } => 15,
            Error::Address { .. } => 16,
            Error::Empty => 17,
            Error::Full => 18,
            Error::TaskDoneTooOften => 19,
            Error::ShutDown => 20,
            Error::Wire(_) => 21,
            Error::Remote { .. } => 22,
            Error::MessageTooLarge { .. } => 23,
            Error::Pickle(_) => 24,
            Error::WorkerLost { .. } => 25,
            Error::PoolClosed => 26,
            Error::Cancelled => 27,
            Error::PoolBroken { .. } => 28,
            Error::ResultTaken => 29,
            Error::NotHeld => 30,
            Error::TooManyReleases { .. } => 31,
            Error::BrokenBarrier => 32,
            Error::UnsealedSharedMemory { .. } => 33,
            Error::SharedMemoryTooSmall { .. } => 34,
            Error::Os { .. } => 35,
            Error::IpcChannelEndpoint { .. } => 36,
            Error::UnauthenticatedFunction { .. } => 37,
            Error::Interrupted => 38,
        }
    }
    const VARIANTS: usize = 39;

    fn one_of_each() -> Vec<Error> {
        vec![
            Error::Panicked {
                pid: 7,
                message: "boom".into(),
                location: Some("src/main.rs:1:2".into()),
            },
            Error::Signaled { pid: 7, signal: 9 },
            Error::Exited { pid: 7, code: 3 },
            Error::Serialize {
                type_name: "T",
                reason: "no".into(),
            },
            Error::Deserialize {
                type_name: "T",
                reason: "no".into(),
            },
            Error::Bootstrap {
                pid: 7,
                reason: "no".into(),
            },
            Error::Timeout,
            Error::AlreadyJoined { pid: 7 },
            Error::Disconnected,
            Error::Closed,
            Error::BufferTooShort(vec![1, 2, 3]),
            Error::InvalidArgument("chunksize must be at least 1".into()),
            Error::IndexOutOfRange {
                start: 8,
                count: 3,
                len: 10,
            },
            Error::TooManyElements {
                count: 1 << 33,
                limit: u32::MAX as usize,
            },
            Error::OutOfMemory { bytes: 1 << 60 },
            Error::Malformed {
                what: "queue record",
            },
            Error::Address {
                reason: "the address resolves to nothing".into(),
            },
            Error::Empty,
            Error::Full,
            Error::TaskDoneTooOften,
            Error::ShutDown,
            Error::Wire(WireError::Auth {
                reason: "digest sent was rejected",
            }),
            Error::Remote {
                class: "builtins.ValueError".into(),
                message: "no".into(),
            },
            Error::MessageTooLarge { size: 10, limit: 5 },
            Error::Pickle(PickleError::Truncated { offset: 4 }),
            Error::WorkerLost {
                pid: 7,
                signal: Some(9),
                code: None,
            },
            Error::PoolClosed,
            Error::Cancelled,
            Error::PoolBroken {
                reason: "no".into(),
            },
            Error::ResultTaken,
            Error::NotHeld,
            Error::TooManyReleases { limit: 2 },
            Error::BrokenBarrier,
            Error::UnsealedSharedMemory { seals: 0 },
            Error::SharedMemoryTooSmall { len: 4, needed: 8 },
            Error::os("sendmsg")(io::Error::from_raw_os_error(libc::EBADF)),
            Error::IpcChannelEndpoint {
                type_name: "T",
                channels: 1,
                regions: 0,
            },
            Error::UnauthenticatedFunction {
                what: "a pool task",
            },
            Error::Interrupted,
        ]
    }

    #[test]
    fn every_variant_clones_to_the_same_variant_and_message() {
        let all = one_of_each();
        let mut seen = [false; VARIANTS];
        for e in &all {
            seen[position(e)] = true;
            let copy = e.clone();
            assert_eq!(discriminant(e), discriminant(&copy), "{e:?}");
            assert_eq!(e.to_string(), copy.to_string());
            assert_eq!(format!("{e:?}"), format!("{copy:?}"));
            assert_eq!(e.raw_os_error(), copy.raw_os_error());
        }
        let missing: Vec<usize> = (0..VARIANTS).filter(|&i| !seen[i]).collect();
        assert!(missing.is_empty(), "variants without a sample: {missing:?}");
    }

    #[test]
    fn an_os_error_clones_with_its_errno_and_source() {
        use std::error::Error as _;
        let e = Error::os("sendmsg")(io::Error::from_raw_os_error(libc::EPIPE));
        let copy = e.clone();
        assert_eq!(copy.raw_os_error(), Some(libc::EPIPE));
        assert_eq!(copy.to_string(), e.to_string());
        let source = copy.source().expect("an Os error has a source");
        assert_eq!(
            source.to_string(),
            io::Error::from_raw_os_error(libc::EPIPE).to_string()
        );
        match (&e, &copy) {
            (Error::Os { source: a, op: x }, Error::Os { source: b, op: y }) => {
                assert!(Arc::ptr_eq(a, b));
                assert_eq!(x, y);
            }
            other => panic!("not both Os: {other:?}"),
        }
    }

    #[test]
    fn wire_errors_keep_their_messages() {
        let auth: Error = WireError::Auth {
            reason: "digest sent was rejected",
        }
        .into();
        assert_eq!(
            auth.to_string(),
            "authentication failed: digest sent was rejected"
        );
        let protocol: Error = WireError::Protocol {
            reason: "bad frame".into(),
        }
        .into();
        assert_eq!(protocol.to_string(), "protocol error: bad frame");
        assert!(matches!(
            protocol.clone(),
            Error::Wire(WireError::Protocol { reason }) if reason == "bad frame"
        ));
    }
}
