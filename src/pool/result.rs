//! Where results land: [`Collector`] (untyped slots filled by the supervisor) and the typed
//! handles over it, [`AsyncResult`], [`MapResult`] and [`IMapIterator`].
//!
//! The supervisor stores each task's pickled result as it arrives and never decodes it: the
//! caller's thread does, in `get` or `next`, so a large `map` decodes in parallel with the
//! work still running and the supervisor stays short. A waiter registers itself before
//! sleeping on the collector's futex word, and the supervisor only wakes it when someone
//! waits, so completing a task nobody is waiting for costs no system call. A futex rather than
//! a condition variable, so that `interrupt_blocked_calls` can end a caller's wait
//! ([`Error::Interrupted`], see `sys::OnSignal`).

use std::collections::VecDeque;
use std::fmt;
use std::marker::PhantomData;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use crate::codec;
use crate::sys::{self, OnSignal};
use crate::Error;

/// A task's outcome as it arrived: the pickled result, or the error.
pub(crate) type Raw = Result<Vec<u8>, Error>;

/// Called once when every slot of a collector is filled.
pub(crate) type OnDone = Box<dyn FnOnce(&mut [Option<Raw>]) + Send>;

/// The results of one call (`apply_async`, or all chunks of one `map`).
pub(crate) struct Collector {
    state: Mutex<Slots>,
    /// Bumped (under the lock) whenever a slot is filled; waiters sleep on it.
    filled: AtomicU32,
    pub(crate) arg_type: &'static str,
    pub(crate) result_type: &'static str,
}

struct Slots {
    slots: Vec<Option<Raw>>,
    /// Indices in arrival order, for `imap_unordered`.
    arrived: VecDeque<usize>,
    done: usize,
    waiters: usize,
    on_done: Option<OnDone>,
}

impl fmt::Debug for Collector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.lock();
        f.debug_struct("Collector")
            .field("slots", &s.slots.len())
            .field("done", &s.done)
            .finish()
    }
}

impl Collector {
    pub(crate) fn new(
        slots: usize,
        arg_type: &'static str,
        result_type: &'static str,
        on_done: Option<OnDone>,
    ) -> Arc<Collector> {
        let collector = Arc::new(Collector {
            state: Mutex::new(Slots {
                slots: (0..slots).map(|_| None).collect(),
                arrived: VecDeque::new(),
                done: 0,
                waiters: 0,
                on_done,
            }),
            filled: AtomicU32::new(0),
            arg_type,
            result_type,
        });
        if slots == 0 {
            collector.finish(&mut collector.lock());
        }
        collector
    }

    fn lock(&self) -> MutexGuard<'_, Slots> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores the outcome of slot `index`. A slot is filled once; a second outcome for it
    /// (which the supervisor never sends) is ignored.
    pub(crate) fn deliver(&self, index: usize, raw: Raw) {
        let mut s = self.lock();
        let Some(slot) = s.slots.get_mut(index) else {
            return;
        };
        if slot.is_some() {
            return;
        }
        *slot = Some(raw);
        s.done += 1;
        s.arrived.push_back(index);
        if s.done == s.slots.len() {
            self.finish(&mut s);
        }
        self.filled.fetch_add(1, Ordering::SeqCst);
        if s.waiters > 0 {
            sys::futex_wake(&self.filled, i32::MAX as u32);
        }
    }

    /// Runs the completion callback (as CPython does, before the result reads as ready to a
    /// waiter). A panicking callback is contained: it must not take the supervisor down.
    fn finish(&self, s: &mut Slots) {
        if let Some(on_done) = s.on_done.take() {
            let slots = &mut s.slots;
            let _ = panic::catch_unwind(AssertUnwindSafe(move || on_done(slots)));
        }
    }

    /// Waits until `ready` holds or the deadline passes; returns the guard and whether it
    /// holds. [`Error::Interrupted`] as `on_signal` says.
    fn wait_for(
        &self,
        deadline: Option<Instant>,
        on_signal: OnSignal,
        mut ready: impl FnMut(&Slots) -> bool,
    ) -> Result<(MutexGuard<'_, Slots>, bool), Error> {
        let mut s = self.lock();
        loop {
            if ready(&s) {
                return Ok((s, true));
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Ok((s, false));
            }
            s.waiters += 1;
            // Read under the lock: a slot filled after this changes the word, and the wait
            // below then returns at once.
            let seen = self.filled.load(Ordering::SeqCst);
            drop(s);
            let timeout = deadline.map(|d| d.saturating_duration_since(now));
            let woken = sys::futex_wait_or(&self.filled, seen, timeout, on_signal);
            s = self.lock();
            s.waiters -= 1;
            woken.map_err(Error::os("futex"))?;
        }
    }

    fn all_done(
        &self,
        deadline: Option<Instant>,
        on_signal: OnSignal,
    ) -> Result<Option<MutexGuard<'_, Slots>>, Error> {
        let (s, ok) = self.wait_for(deadline, on_signal, |s| s.done == s.slots.len())?;
        Ok(ok.then_some(s))
    }
}

fn deadline(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

fn take_raw(slot: &mut Option<Raw>) -> Raw {
    slot.take().unwrap_or(Err(Error::ResultTaken))
}

/// The pending result of [`Pool::apply_async`](super::Pool::apply_async) (CPython's
/// `AsyncResult`).
///
/// # Examples
///
/// ```
/// use multiproc::Pool;
///
/// fn double(x: i32) -> i32 { x * 2 }
///
/// let pool = Pool::new(2).unwrap();
/// let result = pool.apply_async(double, 21).unwrap();
/// result.wait();
/// assert!(result.ready());
/// assert_eq!(result.successful(), Some(true));
/// assert_eq!(result.get().unwrap(), 42);
/// ```
pub struct AsyncResult<R> {
    collector: Arc<Collector>,
    _result: PhantomData<fn() -> R>,
}

impl<R> fmt::Debug for AsyncResult<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncResult")
            .field("ready", &self.ready())
            .finish()
    }
}

impl<R: DeserializeOwned> AsyncResult<R> {
    pub(crate) fn new(collector: Arc<Collector>) -> AsyncResult<R> {
        AsyncResult {
            collector,
            _result: PhantomData,
        }
    }

    /// Waits for the task and returns its result.
    ///
    /// # Errors
    /// The task's own error: [`Error::Panicked`] with the panic message,
    /// [`Error::Serialize`] / [`Error::Deserialize`] when the result or arguments did not
    /// survive pickling, [`Error::WorkerLost`] when its worker died, [`Error::Cancelled`] when
    /// the pool was terminated, [`Error::PoolBroken`]; [`Error::ResultTaken`] if an earlier
    /// [`get_timeout`](Self::get_timeout) already took it; [`Error::Interrupted`] if
    /// [`interrupt_blocked_calls`](crate::interrupt_blocked_calls) is called while it waits
    /// (the task carries on; its result can be fetched later).
    pub fn get(self) -> Result<R, Error> {
        self.take(None, OnSignal::caller())
    }

    /// [`get`](Self::get), interruptible by requests since `since` was taken.
    pub(crate) fn get_since(self, since: OnSignal) -> Result<R, Error> {
        self.take(None, since)
    }

    /// Like [`get`](Self::get), but waits at most `timeout`. On [`Error::Timeout`] the task
    /// carries on and its result can be fetched later; a success takes the result out.
    ///
    /// # Errors
    /// As `get`, plus [`Error::Timeout`].
    pub fn get_timeout(&mut self, timeout: Duration) -> Result<R, Error> {
        self.take(deadline(timeout), OnSignal::caller())
    }

    fn take(&self, deadline: Option<Instant>, on_signal: OnSignal) -> Result<R, Error> {
        let mut s = self
            .collector
            .all_done(deadline, on_signal)?
            .ok_or(Error::Timeout)?;
        let raw = take_raw(&mut s.slots[0]);
        drop(s);
        codec::decode(&raw?)
    }
}

impl<R> AsyncResult<R> {
    /// Waits until the result is available (`interrupt_blocked_calls` does not end this wait,
    /// which has no way to report it; use [`get`](Self::get)).
    pub fn wait(&self) {
        let _ = self.collector.all_done(None, OnSignal::Retry);
    }

    /// Waits at most `timeout`; returns whether the result is available.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        matches!(
            self.collector.all_done(deadline(timeout), OnSignal::Retry),
            Ok(Some(_))
        )
    }

    /// Whether the task has finished (successfully or not).
    pub fn ready(&self) -> bool {
        let s = self.collector.lock();
        s.done == s.slots.len()
    }

    /// Whether the task finished without error; `None` while it is still running (CPython
    /// raises `ValueError` there).
    pub fn successful(&self) -> Option<bool> {
        let s = self.collector.lock();
        (s.done == s.slots.len()).then(|| s.slots.iter().all(|r| matches!(r, Some(Ok(_)))))
    }
}

/// The pending result of [`Pool::map_async`](super::Pool::map_async) and
/// [`Pool::starmap_async`](super::Pool::starmap_async) (CPython's `MapResult`).
///
/// # Examples
///
/// ```
/// use multiproc::Pool;
///
/// fn square(x: u64) -> u64 { x * x }
///
/// let pool = Pool::new(2).unwrap();
/// let result = pool.map_async(square, 0..10, None).unwrap();
/// assert_eq!(result.get().unwrap(), vec![0, 1, 4, 9, 16, 25, 36, 49, 64, 81]);
/// ```
pub struct MapResult<R> {
    inner: AsyncResult<Vec<R>>,
}

impl<R> fmt::Debug for MapResult<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapResult")
            .field("ready", &self.inner.ready())
            .finish()
    }
}

impl<R: DeserializeOwned + Send> MapResult<R> {
    pub(crate) fn new(collector: Arc<Collector>) -> MapResult<R> {
        MapResult {
            inner: AsyncResult::new(collector),
        }
    }

    /// Waits for every chunk and returns the results in input order.
    ///
    /// # Errors
    /// The error of the first failed chunk in input order (see [`AsyncResult::get`]);
    /// [`Error::Interrupted`] as `AsyncResult::get`.
    pub fn get(self) -> Result<Vec<R>, Error> {
        self.take(None, OnSignal::caller())
    }

    /// [`get`](Self::get), interruptible by requests since `since` was taken.
    pub(crate) fn get_since(self, since: OnSignal) -> Result<Vec<R>, Error> {
        self.take(None, since)
    }

    /// Like [`get`](Self::get), waiting at most `timeout`; on [`Error::Timeout`] the work
    /// carries on and the results can be fetched later.
    ///
    /// # Errors
    /// As `get`, plus [`Error::Timeout`].
    pub fn get_timeout(&mut self, timeout: Duration) -> Result<Vec<R>, Error> {
        self.take(deadline(timeout), OnSignal::caller())
    }

    fn take(&self, deadline: Option<Instant>, on_signal: OnSignal) -> Result<Vec<R>, Error> {
        let mut s = self
            .inner
            .collector
            .all_done(deadline, on_signal)?
            .ok_or(Error::Timeout)?;
        let raws: Vec<Raw> = s.slots.iter_mut().map(take_raw).collect();
        drop(s);
        decode_chunks(raws)
    }
}

impl<R> MapResult<R> {
    /// Waits until every chunk is done.
    pub fn wait(&self) {
        self.inner.wait()
    }

    /// Waits at most `timeout`; returns whether every chunk is done.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.inner.wait_timeout(timeout)
    }

    /// Whether every chunk is done.
    pub fn ready(&self) -> bool {
        self.inner.ready()
    }

    /// Whether every chunk succeeded; `None` while some are still running.
    pub fn successful(&self) -> Option<bool> {
        self.inner.successful()
    }
}

/// Below this many pickled bytes, map chunks are decoded on the calling thread alone.
const PARALLEL_DECODE_BYTES: usize = 256 * 1024;

/// Decodes map chunks (each a pickled list) into one list, or returns the first error in
/// input order. Large results are decoded on several threads: unpickling is most of a large
/// `map`'s cost in the parent (serde-pickle builds a value tree, and a 64-bit integer goes
/// through a big integer), and the workers are idle by now.
pub(crate) fn decode_chunks<R: DeserializeOwned + Send>(raws: Vec<Raw>) -> Result<Vec<R>, Error> {
    let bytes: usize = raws.iter().map(|r| r.as_ref().map_or(0, Vec::len)).sum();
    let threads = crate::cpu_count().min(raws.len());
    let decoded: Vec<Result<Vec<R>, Error>> = if bytes < PARALLEL_DECODE_BYTES || threads < 2 {
        raws.into_iter().map(decode_chunk).collect()
    } else {
        decode_on_threads(raws, threads)
    };
    let mut out = Vec::new();
    for chunk in decoded {
        let chunk = chunk?;
        if out.is_empty() {
            out = chunk;
        } else {
            out.extend(chunk);
        }
    }
    Ok(out)
}

fn decode_chunk<R: DeserializeOwned>(raw: Raw) -> Result<Vec<R>, Error> {
    codec::decode(&raw?)
}

/// Decodes chunk `i` on thread `i % threads`, keeping input order.
fn decode_on_threads<R: DeserializeOwned + Send>(
    raws: Vec<Raw>,
    threads: usize,
) -> Vec<Result<Vec<R>, Error>> {
    let n = raws.len();
    let mut shares: Vec<Vec<(usize, Raw)>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, raw) in raws.into_iter().enumerate() {
        shares[i % threads].push((i, raw));
    }
    let mut out: Vec<Option<Result<Vec<R>, Error>>> = (0..n).map(|_| None).collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = shares
            .into_iter()
            .map(|share| {
                scope.spawn(move || {
                    share
                        .into_iter()
                        .map(|(i, raw)| (i, decode_chunk::<R>(raw)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for handle in handles {
            // A decoder thread only panics if `R`'s Deserialize impl does: pass it on.
            let decoded = handle.join().unwrap_or_else(|p| panic::resume_unwind(p));
            for (i, chunk) in decoded {
                out[i] = Some(chunk);
            }
        }
    });
    out.into_iter()
        .map(|c| c.unwrap_or(Err(Error::ResultTaken)))
        .collect()
}

/// The iterator of [`Pool::imap`](super::Pool::imap) and
/// [`Pool::imap_unordered`](super::Pool::imap_unordered): yields each result (or the error of
/// its chunk) as it becomes available, in input order or in completion order.
///
/// # Examples
///
/// ```
/// use multiproc::Pool;
///
/// fn square(x: u64) -> u64 { x * x }
///
/// let pool = Pool::new(2).unwrap();
/// let squares: Vec<u64> = pool.imap(square, 0..5, None).unwrap().map(Result::unwrap).collect();
/// assert_eq!(squares, [0, 1, 4, 9, 16]);
/// ```
pub struct IMapIterator<R> {
    collector: Arc<Collector>,
    ordered: bool,
    /// The next chunk to yield (ordered), or the number of chunks yielded (unordered).
    cursor: usize,
    buffer: std::vec::IntoIter<R>,
}

impl<R> fmt::Debug for IMapIterator<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IMapIterator")
            .field("ordered", &self.ordered)
            .field("cursor", &self.cursor)
            .finish()
    }
}

impl<R: DeserializeOwned> IMapIterator<R> {
    pub(crate) fn new(collector: Arc<Collector>, ordered: bool) -> IMapIterator<R> {
        IMapIterator {
            collector,
            ordered,
            cursor: 0,
            buffer: Vec::new().into_iter(),
        }
    }

    /// The next result, waiting at most `timeout` for it (CPython's `next(timeout)`).
    /// `Ok(None)` at the end.
    ///
    /// # Errors
    /// [`Error::Timeout`] when nothing arrived in time, [`Error::Interrupted`] as
    /// [`AsyncResult::get`] (the iterator stays usable after both); otherwise the
    /// error of the chunk in this position, as [`Iterator::next`] yields it.
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<R>, Error> {
        match self.advance(deadline(timeout)) {
            Some(Some(Ok(item))) => Ok(Some(item)),
            Some(Some(Err(e))) => Err(e),
            Some(None) => Ok(None),
            None => Err(Error::Timeout),
        }
    }

    /// `None` on timeout, `Some(None)` at the end; an interruption is yielded as an item.
    fn advance(&mut self, deadline: Option<Instant>) -> Option<Option<Result<R, Error>>> {
        loop {
            if let Some(item) = self.buffer.next() {
                return Some(Some(Ok(item)));
            }
            let raw = {
                let (ordered, cursor) = (self.ordered, self.cursor);
                let waited = self.collector.wait_for(deadline, OnSignal::caller(), |s| {
                    cursor >= s.slots.len()
                        || if ordered {
                            s.slots[cursor].is_some()
                        } else {
                            !s.arrived.is_empty()
                        }
                });
                let (mut s, ok) = match waited {
                    Ok(waited) => waited,
                    Err(e) => return Some(Some(Err(e))),
                };
                if !ok {
                    return None;
                }
                if self.cursor >= s.slots.len() {
                    return Some(None);
                }
                let index = if ordered {
                    self.cursor
                } else {
                    s.arrived.pop_front().unwrap_or(self.cursor)
                };
                self.cursor += 1;
                take_raw(&mut s.slots[index])
            };
            match raw.and_then(|bytes| codec::decode::<Vec<R>>(&bytes)) {
                Ok(chunk) => self.buffer = chunk.into_iter(),
                Err(e) => return Some(Some(Err(e))),
            }
        }
    }
}

impl<R: DeserializeOwned> Iterator for IMapIterator<R> {
    type Item = Result<R, Error>;

    fn next(&mut self) -> Option<Result<R, Error>> {
        self.advance(None).flatten()
    }
}
