//! # multiproc
//!
//! Python's `multiprocessing`, for Rust: run functions in real OS processes — started by
//! fork, by re-executing the current binary (spawn), or by a forkserver — and talk to them over
//! duplex pipes. Arguments and results travel pickled (serde-pickle), so a Python peer can read
//! them, and OS handles such as pipe ends travel beside the bytes.
//!
//! ## A five-minute tour
//!
//! Start a process, get its result back:
//!
//! ```
//! use multiproc::Process;
//!
//! fn fib(n: u64) -> u64 {
//!     if n < 2 { n } else { fib(n - 1) + fib(n - 2) }
//! }
//!
//! let mut child = Process::spawn(fib, 20).unwrap();
//! assert_eq!(child.join().unwrap(), 6765);
//! ```
//!
//! No setup is needed in `main`, in tests or in doctests: a re-executed child runs its function
//! from a pre-main hook and never reaches `main`.
//!
//! Choose how the child starts, name it, make it a daemon (it then dies with its parent):
//!
//! ```
//! use multiproc::{Process, StartMethod};
//!
//! fn whoami(_: ()) -> (u32, String) {
//!     let me = multiproc::current_process();
//!     (me.pid, me.name)
//! }
//!
//! let mut child = Process::builder()
//!     .start_method(StartMethod::Spawn)
//!     .name("worker-1")
//!     .daemon(true)
//!     .spawn(whoami, ())
//!     .unwrap();
//! let (pid, name) = child.join().unwrap();
//! assert_eq!((pid, name.as_str()), (child.pid(), "worker-1"));
//! ```
//!
//! Failures are typed: a panic, a signal, an early exit each have their own variant.
//!
//! ```
//! use multiproc::{Error, Process};
//!
//! fn nap(_: ()) { std::thread::sleep(std::time::Duration::from_secs(60)) }
//!
//! let mut child = Process::spawn(nap, ()).unwrap();
//! child.kill().unwrap();
//! assert!(matches!(child.join(), Err(Error::Signaled { signal: 9, .. })));
//! assert_eq!(child.exitcode(), Some(-9));
//! ```
//!
//! Talk to a child over a [`Pipe`]; pass one end as the argument:
//!
//! ```
//! use multiproc::{Connection, Pipe, Process};
//!
//! fn adder(conn: Connection) {
//!     while let Ok((a, b)) = conn.recv::<(i64, i64)>() {
//!         conn.send(&(a + b)).unwrap();
//!     }
//! }
//!
//! let (here, there) = Pipe::new().unwrap();
//! let mut child = Process::spawn(adder, there).unwrap();
//! here.send(&(40, 2)).unwrap();
//! assert_eq!(here.recv::<i64>().unwrap(), 42);
//! drop(here);
//! child.join().unwrap();
//! ```
//!
//! Run many small tasks on a [`Pool`] of long-lived workers (CPython's `multiprocessing.Pool`);
//! a worker that dies takes only its own task down, as [`Error::WorkerLost`]:
//!
//! ```
//! use multiproc::Pool;
//!
//! fn square(x: u64) -> u64 { x * x }
//!
//! let pool = Pool::new(2).unwrap();
//! assert_eq!(pool.map(square, 0..5).unwrap(), [0, 1, 4, 9, 16]);
//! let pending = pool.apply_async(square, 12).unwrap();
//! assert_eq!(pending.get().unwrap(), 144);
//! ```
//!
//! Hand work to several processes through a [`Queue`] (CPython's `multiprocessing.Queue`;
//! also [`JoinableQueue`] and [`SimpleQueue`]): every item reaches exactly one consumer, whole,
//! even if a process dies mid-`put` or mid-`get`:
//!
//! ```
//! use multiproc::{Process, Queue};
//!
//! fn double((tasks, results): (Queue<Option<u32>>, Queue<u32>)) {
//!     while let Some(n) = tasks.get().unwrap() {
//!         results.put(&(2 * n)).unwrap();
//!     }
//! }
//!
//! let (tasks, results) = (Queue::new().unwrap(), Queue::new().unwrap());
//! let mut workers: Vec<_> = (0..2)
//!     .map(|_| Process::spawn(double, (tasks.try_clone().unwrap(), results.try_clone().unwrap())).unwrap())
//!     .collect();
//! for n in 1..=4 {
//!     tasks.put(&Some(n)).unwrap();
//! }
//! let mut doubled: Vec<u32> = (0..4).map(|_| results.get().unwrap()).collect();
//! doubled.sort();
//! assert_eq!(doubled, [2, 4, 6, 8]);
//! for _ in &workers {
//!     tasks.put(&None).unwrap();
//! }
//! for w in &mut workers {
//!     w.join().unwrap();
//! }
//! ```
//!
//! Share numbers and synchronise across processes: [`Value`] / [`Array`] in shared memory,
//! and [`Lock`], [`RLock`], [`Semaphore`], [`Event`], [`Condition`], [`Barrier`] (the
//! [`sync`] module says what each does when a process dies holding it):
//!
//! ```
//! use multiproc::{Barrier, Process, Value};
//!
//! fn work((total, barrier): (Value<u64>, Barrier)) {
//!     let mut t = total.lock();
//!     t.set(t.get() + 1);
//!     drop(t);
//!     barrier.wait().unwrap(); // everyone has counted
//! }
//!
//! let (total, barrier) = (Value::new(0u64).unwrap(), Barrier::new(3).unwrap());
//! let mut children: Vec<_> = (0..2)
//!     .map(|_| Process::spawn(work, (total.try_clone().unwrap(), barrier.try_clone().unwrap())).unwrap())
//!     .collect();
//! work((total.try_clone().unwrap(), barrier.try_clone().unwrap()));
//! assert_eq!(total.get(), 3);
//! for c in &mut children {
//!     c.join().unwrap();
//! }
//! ```
//!
//! ## Bytes: use the fast path
//!
//! serde-pickle writes a `Vec<u8>` as a *list of integers* (about 30 MB/s). For byte payloads
//! use [`ByteBuf`] / [`Bytes`] (re-exported from `serde_bytes`), which pickle as Python `bytes`,
//! or skip pickling with [`Connection::send_bytes`] / [`Connection::recv_bytes`]:
//!
//! ```
//! use multiproc::{ByteBuf, Process};
//!
//! fn checksum(data: ByteBuf) -> u64 { data.iter().map(|&b| b as u64).sum() }
//!
//! let data = ByteBuf::from(vec![1u8; 1 << 20]);
//! assert_eq!(Process::spawn(checksum, data).unwrap().join().unwrap(), 1 << 20);
//! ```
//!
//! ## Managers: queues over TCP, wire-compatible with CPython
//!
//! A [`managers::ManagerServer`] serves objects — first of all queues — over TCP, guarded by an
//! authkey; a [`managers::Manager`] connects and hands out proxies whose calls run on the
//! server. Both speak CPython's `multiprocessing.managers` protocol, so either side can be an
//! unmodified Python program (`BaseManager.register('get_task_queue')`, `m.connect()`). Values
//! travel as pickles read by an inert decoder ([`pickle`]) that never executes anything.
//!
//! ```
//! use multiproc::managers::{Manager, ManagerServer};
//!
//! let mut server = ManagerServer::bind("127.0.0.1:0", b"secret").unwrap();
//! let tasks = server.register_queue("get_task_queue", 0);
//! let server = server.start_thread().unwrap();
//!
//! // Elsewhere (another process, another machine, or Python):
//! let manager = Manager::connect(server.address(), b"secret").unwrap();
//! let q = manager.get_queue::<(u32, String)>("get_task_queue").unwrap();
//! q.put(&(1, "one".to_string())).unwrap();
//!
//! assert_eq!(tasks.get::<(u32, String)>().unwrap(), (1, "one".to_string()));
//! ```
//!
//! ## Limits, stated up front
//! - Linux only for now (pidfds, `close_range`, `/proc/self/exe`); platform code lives in one
//!   module so that macOS can follow.
//! - `f` must be a plain `fn(A) -> R` in the running binary: it is found again in the child by
//!   its address. Closures that capture state are not accepted (put the state in `A`).
//! - [`StartMethod::Fork`] in a program with threads copies only the calling thread; see its
//!   docs. The default, [`StartMethod::Forkserver`], is safe with threads.
//! - A process killed while holding a [`Lock`] or [`RLock`] is noticed by the kernel (robust
//!   futexes) and the next taker is told ([`LockGuard::owner_died`]); a [`Semaphore`] permit it held is
//!   lost, and a [`Barrier`] party it was waits for it until a timeout breaks the barrier.
//! - A non-daemon child outlives its parent if the parent exits without joining it (as in
//!   CPython); a daemon child is killed when its parent exits.
//! - ipc-channel endpoints cannot travel inside arguments, messages or queue items (they
//!   serialize as indices into ipc-channel's own side table): they are refused with
//!   [`Error::IpcChannelEndpoint`] before anything is sent.
//! - A blocked `get`, `join`, `recv` or `map` keeps waiting through a handled signal (as
//!   CPython does, PEP 475) unless the handler calls [`interrupt_blocked_calls`]: the call then
//!   returns [`Error::Interrupted`] having taken nothing. Manager proxy calls keep waiting.

#![deny(missing_docs, missing_debug_implementations, unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod auto_traits;
mod codec;
pub mod connection;
mod error;
pub mod managers;
pub mod pickle;
mod pool;
mod process;
mod queue;
mod shared;
pub mod sync;
mod sys;

pub use connection::{Connection, Pipe, RecvEnd, SendEnd};
pub use error::{Error, WireError};
pub use pool::{AsyncResult, Callbacks, IMapIterator, MapResult, Pool, PoolBuilder};
pub use process::{
    active_children, cpu_count, current_process, current_start_method, get_start_method,
    parent_pid, set_start_method, AuthKey, Process, ProcessBuilder, ProcessInfo, StartMethod,
};
// The old name of `ProcessBuilder`, kept so that callers do not break.
#[allow(deprecated)]
pub use process::Builder;
pub use queue::{JoinableQueue, Queue, SimpleQueue};
pub use serde_bytes::{ByteBuf, Bytes};
pub use shared::{Array, ArrayGuard, Element, RawArray, RawValue, Value, ValueGuard};
pub use sync::{
    Barrier, BoundedSemaphore, Condition, ConditionGuard, Event, Lock, LockGuard, RLock,
    RLockGuard, Semaphore, SemaphoreGuard,
};
pub use sys::interrupt_blocked_calls;
