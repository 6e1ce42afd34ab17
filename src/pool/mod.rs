//! A pool of long-lived worker processes (CPython's `multiprocessing.Pool`).
//!
//! # How it works
//! - [`job`]: what a task is (a function named by its [`TaggedCall`], pickled arguments, the slot
//!   its result fills) and the batch wire format.
//! - [`worker`]: the loop each worker process runs until its socket closes.
//! - [`supervisor`]: the shared state, how work is handed out, and the supervisor thread.
//! - [`result`]: where results land, and [`AsyncResult`], [`MapResult`], [`IMapIterator`].
//!
//! ## The protocol (DESIGN §6)
//! Each worker is a [`Process`](crate::Process) started with the pool's start method, holding
//! one end of its own socket pair; the pool holds the other. Unlike CPython's single shared task
//! queue, every worker has its own channel, so the pool always knows which worker holds which
//! task.
//!
//! 1. A caller turns its call into tasks (one for `apply`, one per chunk for `map`) and queues
//!    them; then, still on the caller's thread, the queue is handed out: each worker with room
//!    gets one message holding a *batch* of tasks. A worker holds at most two batches (one
//!    running, one waiting in its socket), or one when tasks take ≥ 0.2 ms, so a slow task
//!    never has work stuck behind it while another worker idles. Batches are sized from the
//!    measured task time to last about 1 ms, capped at 60 KiB and at a fair share of the
//!    queue. Queued work is plain memory: no descriptor per task, however many are queued.
//! 2. The worker runs the batch in order and writes results in order, several per message;
//!    it always flushes at the end of a batch before it reads the next.
//! 3. The supervisor thread polls every worker's socket and pidfd (and a wake-up socket for
//!    `close`/`terminate`). Results are matched to the worker's in-flight batches by position,
//!    stored undecoded in their [`result::Collector`], and more work is handed out.
//! 4. When a pidfd fires, the supervisor first reads whatever the worker sent before it died,
//!    then reaps it. Because of (2), the oldest batch with missing results is the one it was
//!    running: those tasks fail with [`Error::WorkerLost`] (pid, signal or exit code); later
//!    batches were never started and go back to the front of the queue. A replacement starts
//!    and everything else completes. No task is ever run twice.
//! 5. `max_tasks_per_child` stops handing work to a worker at its quota; once its results are
//!    in, the pool closes its socket and the worker exits. `close` does the same for all
//!    workers once the queue is empty; `terminate` kills and reaps them and fails what is
//!    left with [`Error::Cancelled`].

mod job;
mod result;
mod supervisor;
mod worker;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::process::bootstrap::{self, TaggedCall, Trampoline};
use crate::process::{get_start_method, StartMethod};
use crate::sys::OnSignal;
use crate::{codec, cpu_count, Error};

pub use result::{AsyncResult, IMapIterator, MapResult};

use job::Task;
use result::{Collector, OnDone, Raw};
use supervisor::{Config, Shared};

/// A pool of worker processes that run plain `fn(A) -> R` tasks (CPython's
/// `multiprocessing.Pool`).
///
/// Workers are long-lived and reused: many tasks on `Pool::new(3)` run on at most three pids,
/// unless [`PoolBuilder::max_tasks_per_child`] retires workers. Arguments and results travel
/// pickled, as for [`Process::spawn`](crate::Process::spawn); values holding OS handles
/// (a [`Connection`](crate::Connection)) cannot be pool arguments or results.
///
/// Beyond CPython: when a worker dies in a task (killed, `abort`, `exit`) that task fails with
/// [`Error::WorkerLost`], a replacement starts and every other task completes; a panicking task
/// returns [`Error::Panicked`] and its worker carries on. Dropping the pool terminates it and
/// reaps every worker.
///
/// Tiny tasks travel to a worker in batches of about a millisecond of work; when a worker
/// dies, the unfinished tasks of the batch it was running all fail with `WorkerLost` (the pool
/// cannot tell which of them had started), while batches it had not begun go to other
/// workers. No task ever runs twice.
///
/// The method names are CPython's: `apply`, `apply_async`, `map`, `map_async`, `imap`,
/// `imap_unordered`, `starmap`, `starmap_async`, `close`, `join`, `terminate`. Python's
/// `chunksize=` keyword is an `Option<usize>` argument (or a `_chunked` variant for the
/// blocking calls), and callbacks come as [`Callbacks`].
///
/// # Examples
///
/// ```
/// use multiproc::Pool;
///
/// fn square(x: u64) -> u64 { x * x }
///
/// let pool = Pool::new(2).unwrap();
/// assert_eq!(pool.apply(square, 7).unwrap(), 49);
/// assert_eq!(pool.map(square, 0..5).unwrap(), [0, 1, 4, 9, 16]);
/// pool.close();
/// pool.join().unwrap();
/// ```
pub struct Pool {
    shared: Arc<Shared>,
    supervisor: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("processes", &self.shared.config.processes)
            .field("start_method", &self.shared.config.method)
            .field("closed", &self.shared.is_closed())
            .finish()
    }
}

/// Settings for a [`Pool`] (CPython's `Pool(processes, initializer, initargs,
/// maxtasksperchild)` and the context's start method).
///
/// # Examples
///
/// ```
/// use multiproc::{Pool, StartMethod};
///
/// fn pid(_: ()) -> u32 { std::process::id() }
///
/// let pool = Pool::builder()
///     .processes(2)
///     .start_method(StartMethod::Spawn)
///     .max_tasks_per_child(10)
///     .build()
///     .unwrap();
/// assert_eq!(pool.pids().len(), 2);
/// assert!(pool.pids().contains(&pool.apply(pid, ()).unwrap()));
/// ```
#[derive(Debug, Default)]
pub struct PoolBuilder {
    processes: Option<usize>,
    method: Option<StartMethod>,
    max_tasks_per_child: Option<usize>,
    init: Option<Result<Vec<u8>, Error>>,
}

impl PoolBuilder {
    /// The number of workers (default: [`cpu_count`]).
    pub fn processes(mut self, n: usize) -> PoolBuilder {
        self.processes = Some(n);
        self
    }

    /// How workers start (default: [`get_start_method`]).
    pub fn start_method(mut self, method: StartMethod) -> PoolBuilder {
        self.method = Some(method);
        self
    }

    /// Retires a worker after it has taken `n` tasks (a `map` chunk counts as one task, as in
    /// CPython) and starts a fresh one in its place (CPython's `maxtasksperchild`).
    pub fn max_tasks_per_child(mut self, n: usize) -> PoolBuilder {
        self.max_tasks_per_child = Some(n);
        self
    }

    /// Runs `f(args)` once in each worker before its first task (CPython's `initializer`,
    /// `initargs`). If it panics, the pool becomes broken: pending and later tasks fail with
    /// [`Error::PoolBroken`] rather than the pool starting workers for ever.
    pub fn initializer<A>(mut self, f: fn(A), args: A) -> PoolBuilder
    where
        A: Serialize + DeserializeOwned,
    {
        let entry = TaggedCall::new(bootstrap::trampoline::<A, ()> as Trampoline, f as usize);
        self.init = Some(codec::encode(&args).map(|args| {
            let mut init = entry.to_bytes().to_vec();
            init.extend_from_slice(&args);
            init
        }));
        self
    }

    /// Starts the workers and returns the pool.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for 0 processes or `max_tasks_per_child(0)`;
    /// [`Error::Serialize`] if the initializer's arguments cannot be pickled; the start error
    /// of a worker (the workers already started are then killed and reaped).
    pub fn build(self) -> Result<Pool, Error> {
        let processes = self.processes.unwrap_or_else(cpu_count);
        if processes == 0 {
            return Err(Error::InvalidArgument(
                "a pool needs at least one process".into(),
            ));
        }
        if self.max_tasks_per_child == Some(0) {
            return Err(Error::InvalidArgument(
                "max_tasks_per_child must be at least 1".into(),
            ));
        }
        let config = Config {
            processes,
            method: self.method.unwrap_or_else(get_start_method),
            max_tasks_per_child: self.max_tasks_per_child,
            init: self.init.transpose()?,
        };
        let shared = Shared::start(config)?;
        let supervisor = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("multiproc-pool".into())
                .spawn(move || {
                    let supervised = shared.clone();
                    let run = std::panic::AssertUnwindSafe(move || supervised.supervise());
                    if std::panic::catch_unwind(run).is_err() {
                        shared.abandon();
                    }
                })
        };
        let supervisor = match supervisor {
            Ok(handle) => handle,
            Err(e) => {
                shared.terminate();
                return Err(Error::Os {
                    op: "spawn the pool supervisor thread",
                    source: e.into(),
                });
            }
        };
        Ok(Pool {
            shared,
            supervisor: Mutex::new(Some(supervisor)),
        })
    }
}

/// Callbacks for [`Pool::apply_async_with`] and [`Pool::map_async_with`] (CPython's
/// `callback=` and `error_callback=`).
///
/// They run once, on the pool's supervisor thread, when the result is complete and before a
/// waiter sees it as ready; like CPython's, they should return quickly. A panic in a callback
/// is contained. A callback must not wait for the result it is called for (it runs before
/// that result reads as ready); it may submit more work, or drop the pool.
///
/// # Examples
///
/// ```
/// use std::sync::mpsc;
/// use multiproc::{Callbacks, Pool};
///
/// fn double(x: i32) -> i32 { x * 2 }
///
/// let pool = Pool::new(1).unwrap();
/// let (tx, rx) = mpsc::channel();
/// let result = pool
///     .apply_async_with(double, 4, Callbacks::new().on_success(move |v| tx.send(v).unwrap()))
///     .unwrap();
/// assert_eq!(result.get().unwrap(), 8);
/// assert_eq!(rx.recv().unwrap(), 8);
/// ```
pub struct Callbacks<T> {
    on_success: Option<Box<dyn FnOnce(T) + Send>>,
    on_error: Option<ErrorCallback>,
}

type ErrorCallback = Box<dyn FnOnce(&Error) + Send>;

impl<T> fmt::Debug for Callbacks<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Callbacks")
            .field("on_success", &self.on_success.is_some())
            .field("on_error", &self.on_error.is_some())
            .finish()
    }
}

impl<T> Default for Callbacks<T> {
    fn default() -> Self {
        Callbacks {
            on_success: None,
            on_error: None,
        }
    }
}

impl<T: DeserializeOwned + 'static> Callbacks<T> {
    /// No callbacks.
    pub fn new() -> Callbacks<T> {
        Callbacks::default()
    }

    /// Called with the result (its own decoded copy) when the call succeeds.
    pub fn on_success(mut self, f: impl FnOnce(T) + Send + 'static) -> Callbacks<T> {
        self.on_success = Some(Box::new(f));
        self
    }

    /// Called with the error when the call fails; `get` returns the same error.
    pub fn on_error(mut self, f: impl FnOnce(&Error) + Send + 'static) -> Callbacks<T> {
        self.on_error = Some(Box::new(f));
        self
    }

    /// The completion hook for a collector whose slots decode (together) into a `T`.
    fn into_on_done(self, decode: fn(&[Option<Raw>]) -> Result<T, Error>) -> Option<OnDone> {
        if self.on_success.is_none() && self.on_error.is_none() {
            return None;
        }
        Some(Box::new(move |slots: &mut [Option<Raw>]| {
            match decode(slots) {
                Ok(value) => {
                    if let Some(f) = self.on_success {
                        f(value)
                    }
                }
                Err(e) => {
                    if let Some(f) = self.on_error {
                        f(&e)
                    }
                }
            }
        }))
    }
}

/// Decodes a one-slot collector (for callbacks; the slot stays for `get`).
fn decode_single<R: DeserializeOwned>(slots: &[Option<Raw>]) -> Result<R, Error> {
    match slots.first() {
        Some(Some(Ok(bytes))) => codec::decode(bytes),
        Some(Some(Err(e))) => Err(e.clone()),
        _ => Err(Error::ResultTaken),
    }
}

/// Decodes map chunks in place (for callbacks; the slots stay for `get`).
fn decode_chunks_ref<R: DeserializeOwned>(slots: &[Option<Raw>]) -> Result<Vec<R>, Error> {
    let mut out = Vec::new();
    for slot in slots {
        match slot {
            Some(Ok(bytes)) => out.extend(codec::decode::<Vec<R>>(bytes)?),
            Some(Err(e)) => return Err(e.clone()),
            None => return Err(Error::ResultTaken),
        }
    }
    Ok(out)
}

/// Pickled `map` chunks held at once before the rest are pickled only as the queue sends
/// them (see `Pool::submit_chunks`).
const EAGER_BYTES: usize = 16 << 20;

/// CPython's default `map` chunk size: the input split in about four chunks per worker.
fn default_chunksize(len: usize, processes: usize) -> usize {
    len.div_ceil(processes * 4).max(1)
}

fn check_chunksize(chunksize: usize) -> Result<usize, Error> {
    if chunksize == 0 {
        Err(Error::InvalidArgument(
            "chunksize must be at least 1".into(),
        ))
    } else {
        Ok(chunksize)
    }
}

impl Pool {
    /// A pool of `processes` workers with the default start method.
    ///
    /// # Errors
    /// As [`PoolBuilder::build`].
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = multiproc::Pool::new(3).unwrap();
    /// assert_eq!(pool.processes(), 3);
    /// ```
    pub fn new(processes: usize) -> Result<Pool, Error> {
        Pool::builder().processes(processes).build()
    }

    /// A builder for a pool with more settings.
    pub fn builder() -> PoolBuilder {
        PoolBuilder::default()
    }

    /// The number of workers the pool keeps.
    pub fn processes(&self) -> usize {
        self.shared.config.processes
    }

    /// The pids of the current workers (they change when workers are retired or replaced).
    pub fn pids(&self) -> Vec<u32> {
        self.shared.pids()
    }

    /// Runs `f(args)` in a worker and returns the result (CPython's `apply`).
    ///
    /// # Errors
    /// As [`AsyncResult::get`], plus the submission errors of
    /// [`apply_async`](Self::apply_async).
    pub fn apply<A, R>(&self, f: fn(A) -> R, args: A) -> Result<R, Error>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + 'static,
    {
        // Interruptible from the start, submission included (see `interrupt_blocked_calls`).
        let since = OnSignal::caller();
        self.apply_async(f, args)?.get_since(since)
    }

    /// Queues `f(args)` and returns a handle to its result (CPython's `apply_async`).
    ///
    /// # Errors
    /// [`Error::Serialize`] if `args` cannot be pickled (nothing is queued);
    /// [`Error::PoolClosed`] after `close` or `terminate`; [`Error::PoolBroken`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::Pool;
    ///
    /// fn add((a, b): (i32, i32)) -> i32 { a + b }
    ///
    /// let pool = Pool::new(2).unwrap();
    /// let results: Vec<_> = (0..4).map(|i| pool.apply_async(add, (i, i)).unwrap()).collect();
    /// let sums: Vec<i32> = results.into_iter().map(|r| r.get().unwrap()).collect();
    /// assert_eq!(sums, [0, 2, 4, 6]);
    /// ```
    pub fn apply_async<A, R>(&self, f: fn(A) -> R, args: A) -> Result<AsyncResult<R>, Error>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + 'static,
    {
        self.apply_async_with(f, args, Callbacks::new())
    }

    /// [`apply_async`](Self::apply_async) with callbacks.
    ///
    /// # Errors
    /// As `apply_async`.
    pub fn apply_async_with<A, R>(
        &self,
        f: fn(A) -> R,
        args: A,
        callbacks: Callbacks<R>,
    ) -> Result<AsyncResult<R>, Error>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + 'static,
    {
        let args = codec::encode(&args)?;
        let sink = Collector::new(
            1,
            std::any::type_name::<A>(),
            std::any::type_name::<R>(),
            callbacks.into_on_done(decode_single::<R>),
        );
        let task = Task {
            id: self.shared.ids(1),
            entry: TaggedCall::new(bootstrap::trampoline::<A, R> as Trampoline, f as usize),
            args,
            sink: sink.clone(),
            index: 0,
        };
        self.shared.submit([task])?;
        Ok(AsyncResult::new(sink))
    }

    /// Applies `f` to every item and returns the results in input order (CPython's `map`),
    /// with CPython's default chunk size (about four chunks per worker).
    ///
    /// # Errors
    /// The first failed chunk's error in input order (see [`AsyncResult::get`]); the
    /// submission errors of [`apply_async`](Self::apply_async).
    pub fn map<A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
    ) -> Result<Vec<R>, Error>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let since = OnSignal::caller();
        self.map_async(f, items, None)?.get_since(since)
    }

    /// [`map`](Self::map) in chunks of `chunksize` items (CPython's `map(f, it, chunksize)`).
    ///
    /// # Errors
    /// As `map`, plus [`Error::InvalidArgument`] for a chunk size of 0.
    pub fn map_chunked<A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
        chunksize: usize,
    ) -> Result<Vec<R>, Error>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let since = OnSignal::caller();
        self.map_async(f, items, Some(chunksize))?.get_since(since)
    }

    /// Queues a `map` and returns a handle to its results (CPython's `map_async`); `None`
    /// chooses the chunk size as `map` does.
    ///
    /// # Errors
    /// As [`apply_async`](Self::apply_async), plus [`Error::InvalidArgument`] for a chunk size
    /// of 0.
    pub fn map_async<A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
        chunksize: Option<usize>,
    ) -> Result<MapResult<R>, Error>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.map_async_with(f, items, chunksize, Callbacks::new())
    }

    /// [`map_async`](Self::map_async) with callbacks (the success callback gets the whole
    /// list, once).
    ///
    /// # Errors
    /// As `map_async`.
    pub fn map_async_with<A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
        chunksize: Option<usize>,
        callbacks: Callbacks<Vec<R>>,
    ) -> Result<MapResult<R>, Error>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let entry = TaggedCall::new(
            bootstrap::chunk_trampoline::<A, R> as Trampoline,
            f as usize,
        );
        let items: Vec<A> = items.into_iter().collect();
        let chunksize = match chunksize {
            Some(n) => check_chunksize(n)?,
            None => default_chunksize(items.len(), self.processes()),
        };
        let on_done = callbacks.into_on_done(decode_chunks_ref::<R>);
        let sink = self.submit_chunks::<A, R>(entry, &items, chunksize, on_done)?;
        Ok(MapResult::new(sink))
    }

    /// Like [`map`](Self::map) for a function of two arguments, given as pairs (CPython's
    /// `starmap`; Rust has no argument unpacking, so `starmap` takes an `fn(A, B) -> R`).
    ///
    /// # Errors
    /// As `map`.
    ///
    /// # Examples
    ///
    /// ```
    /// fn pow(base: u64, exp: u32) -> u64 { base.pow(exp) }
    ///
    /// let pool = multiproc::Pool::new(2).unwrap();
    /// assert_eq!(pool.starmap(pow, [(2, 10), (3, 2)]).unwrap(), [1024, 9]);
    /// ```
    pub fn starmap<A, B, R>(
        &self,
        f: fn(A, B) -> R,
        items: impl IntoIterator<Item = (A, B)>,
    ) -> Result<Vec<R>, Error>
    where
        A: Serialize + DeserializeOwned,
        B: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let since = OnSignal::caller();
        self.starmap_async(f, items, None)?.get_since(since)
    }

    /// Queues a [`starmap`](Self::starmap) (CPython's `starmap_async`).
    ///
    /// # Errors
    /// As [`map_async`](Self::map_async).
    pub fn starmap_async<A, B, R>(
        &self,
        f: fn(A, B) -> R,
        items: impl IntoIterator<Item = (A, B)>,
        chunksize: Option<usize>,
    ) -> Result<MapResult<R>, Error>
    where
        A: Serialize + DeserializeOwned,
        B: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let entry = TaggedCall::new(
            bootstrap::star_chunk_trampoline::<A, B, R> as Trampoline,
            f as usize,
        );
        let items: Vec<(A, B)> = items.into_iter().collect();
        let chunksize = match chunksize {
            Some(n) => check_chunksize(n)?,
            None => default_chunksize(items.len(), self.processes()),
        };
        let sink = self.submit_chunks::<(A, B), R>(entry, &items, chunksize, None)?;
        Ok(MapResult::new(sink))
    }

    /// Yields `f(item)` for every item, in input order, as results become available
    /// (CPython's `imap`; `None` means chunks of 1, CPython's default). The input is read and
    /// queued at the call; results are decoded as the iterator reaches them.
    ///
    /// # Errors
    /// As [`map_async`](Self::map_async); a failed chunk appears as one `Err` item in its
    /// place.
    pub fn imap<A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
        chunksize: Option<usize>,
    ) -> Result<IMapIterator<R>, Error>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        self.imap_inner(f, items, chunksize, true)
    }

    /// Like [`imap`](Self::imap), yielding results in the order they finish (CPython's
    /// `imap_unordered`).
    ///
    /// # Errors
    /// As `imap`.
    ///
    /// # Examples
    ///
    /// ```
    /// fn square(x: u64) -> u64 { x * x }
    ///
    /// let pool = multiproc::Pool::new(2).unwrap();
    /// let mut squares: Vec<u64> =
    ///     pool.imap_unordered(square, 0..5, None).unwrap().map(Result::unwrap).collect();
    /// squares.sort();
    /// assert_eq!(squares, [0, 1, 4, 9, 16]);
    /// ```
    pub fn imap_unordered<A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
        chunksize: Option<usize>,
    ) -> Result<IMapIterator<R>, Error>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        self.imap_inner(f, items, chunksize, false)
    }

    fn imap_inner<A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
        chunksize: Option<usize>,
        ordered: bool,
    ) -> Result<IMapIterator<R>, Error>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        let entry = TaggedCall::new(
            bootstrap::chunk_trampoline::<A, R> as Trampoline,
            f as usize,
        );
        let items: Vec<A> = items.into_iter().collect();
        let chunksize = check_chunksize(chunksize.unwrap_or(1))?;
        let sink = self.submit_chunks::<A, R>(entry, &items, chunksize, None)?;
        Ok(IMapIterator::new(sink, ordered))
    }

    /// Pickles `items` in chunks and queues one task per chunk; nothing is queued if any
    /// chunk fails to pickle.
    ///
    /// Chunks are pickled up front until they hold [`EAGER_BYTES`]; the rest are checked
    /// (pickled into a counter, which keeps nothing) and then pickled one at a time, each once
    /// the queue has sent what it held: a `map` over a few huge items holds about two
    /// pickled chunks at once, not all of them (issue 13).
    fn submit_chunks<A: Serialize, R>(
        &self,
        entry: TaggedCall,
        items: &[A],
        chunksize: usize,
        on_done: Option<OnDone>,
    ) -> Result<Arc<Collector>, Error> {
        let mut chunks = items.chunks(chunksize);
        let count = chunks.len();
        let mut eager = Vec::new();
        let mut eager_bytes = 0;
        for chunk in chunks.by_ref() {
            let args = codec::encode(&chunk)?;
            eager_bytes += args.len();
            eager.push(args);
            if eager_bytes >= EAGER_BYTES {
                break;
            }
        }
        let lazy = chunks;
        let mut lengths = Vec::with_capacity(lazy.len());
        for chunk in lazy.clone() {
            match codec::measure(&chunk)? {
                (len, false) => lengths.push(len),
                // Refused with the error an eager pickling gives.
                (_, true) => drop(codec::encode(&chunk)?),
            }
        }
        let sink = Collector::new(
            count,
            std::any::type_name::<A>(),
            std::any::type_name::<R>(),
            on_done,
        );
        let first = self.shared.ids(count);
        let task = |index: usize, args: Vec<u8>| Task {
            id: first + index as u64,
            entry,
            args,
            sink: sink.clone(),
            index,
        };
        let done = eager.len();
        self.shared
            .submit(eager.into_iter().enumerate().map(|(i, args)| task(i, args)))?;
        for (k, (chunk, len)) in lazy.zip(lengths).enumerate() {
            self.shared.wait_queued_below(EAGER_BYTES);
            let mut args = vec![0; len];
            codec::encode_exact(&chunk, &mut args)?;
            self.shared.submit([task(done + k, args)])?;
        }
        Ok(sink)
    }

    /// Takes no more work; queued work still runs and the workers exit once it is done
    /// (CPython's `close`). Call [`join`](Self::join) to wait for that.
    pub fn close(&self) {
        self.shared.close()
    }

    /// Stops at once: kills and reaps every worker; unfinished tasks fail with
    /// [`Error::Cancelled`] (CPython's `terminate`). Returns when every worker is reaped.
    pub fn terminate(&self) {
        self.shared.terminate();
        let _ = self.join();
    }

    /// Waits until every worker has exited and been reaped (after `close`: once all queued
    /// work is done).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if the pool was neither closed nor terminated (CPython
    /// raises `ValueError`).
    pub fn join(&self) -> Result<(), Error> {
        self.join_until(None)
    }

    /// Like [`join`](Self::join), waiting at most `timeout`; the pool is untouched on
    /// [`Error::Timeout`].
    ///
    /// # Errors
    /// As `join`, plus [`Error::Timeout`].
    pub fn join_timeout(&self, timeout: Duration) -> Result<(), Error> {
        self.join_until(Instant::now().checked_add(timeout))
    }

    fn join_until(&self, deadline: Option<Instant>) -> Result<(), Error> {
        if !self.shared.is_closed() {
            return Err(Error::InvalidArgument(
                "join() needs close() or terminate() first".into(),
            ));
        }
        let on_supervisor = self
            .supervisor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|h| h.thread().id() == std::thread::current().id());
        if on_supervisor {
            // A callback that drops or joins its own pool: the supervisor finishes the
            // shutdown once the callback returns; waiting here would wait for ourselves.
            return Err(Error::InvalidArgument(
                "a pool cannot be joined from its own callback".into(),
            ));
        }
        if !self.shared.wait_finished(deadline) {
            return Err(Error::Timeout);
        }
        let handle = self
            .supervisor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
        Ok(())
    }
}

impl Drop for Pool {
    /// Terminates the pool: kills and reaps every worker (CPython only warns).
    fn drop(&mut self) {
        self.terminate();
    }
}
