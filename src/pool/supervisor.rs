//! The pool's shared state, how work is handed to workers, and the supervisor thread that
//! reads results and replaces dead workers. See the [module docs](super) for the protocol.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::connection::{Connection, Pipe};
use crate::process::{Process, StartMethod};
use crate::{sys, Error};

use super::job::{self, Reader, Task, INIT_FAILED_ID, TAG_RETURNED};
use super::result::{Collector, Raw};
use super::worker::{self, WorkerArgs, FLUSH_BYTES};

/// A batch never exceeds this many bytes unless it is a single task.
const BATCH_BYTES: usize = 60 * 1024;
/// A batch never exceeds this many tasks.
const BATCH_TASKS: usize = 4096;
/// Batches are sized to take about this long on a worker, from the measured task time.
const BATCH_TARGET_NS: f64 = 1_000_000.0;
/// Tasks at least this long (on average) are not pipelined: a worker holds one batch at a
/// time, so a slow task never has a queued neighbour stuck behind it on a busy worker.
const PIPELINE_BELOW_NS: f64 = 200_000.0;
/// The send buffer of the parent's end of each worker socket: two batches fit with room to
/// spare, so a send never blocks while the supervisor holds the state lock.
const SOCKET_BUFFER: usize = 1 << 20;
// A worker's flush must fit the buffer with room for a batch.
const _: () = assert!(FLUSH_BYTES + BATCH_BYTES < SOCKET_BUFFER);

thread_local! {
    /// Whether this thread runs a pool's supervisor loop (and so its callbacks).
    static SUPERVISING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// How often the supervisor looks around even when nothing happened.
const TICK_MS: i32 = 500;

/// How workers are made.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) processes: usize,
    pub(crate) method: StartMethod,
    pub(crate) max_tasks_per_child: Option<usize>,
    /// The initializer: entry and pickled arguments.
    pub(crate) init: Option<Vec<u8>>,
}

/// What the pool's handle, the callers' threads and the supervisor share.
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
    /// Signalled when the supervisor has finished (every worker reaped).
    finished: Condvar,
    /// Signalled when queued tasks were sent (see [`Shared::wait_queued_below`]).
    sent: Condvar,
    wake_tx: Connection,
    wake_rx: Connection,
    pub(crate) config: Config,
}

#[derive(Debug)]
struct State {
    queue: VecDeque<Task>,
    workers: Vec<Worker>,
    next_id: u64,
    next_worker: usize,
    rotate: usize,
    closed: bool,
    terminated: bool,
    broken: Option<String>,
    finished: bool,
    /// Moving average of a task's run time in a worker, in nanoseconds; 0 until measured.
    task_ns: f64,
    /// Callers in [`Shared::wait_queued_below`].
    waiting_to_queue: usize,
}

#[derive(Debug)]
struct Worker {
    process: Process<()>,
    /// `None` once closed, to retire the worker.
    conn: Option<Connection>,
    in_flight: VecDeque<Batch>,
    assigned: usize,
}

/// Tasks sent in one message, in order; `done` of them have their results.
#[derive(Debug)]
struct Batch {
    tasks: Vec<Task>,
    done: usize,
}

/// Outcomes gathered under the state lock and delivered after it is released (a callback may
/// call back into the pool).
type Deliveries = Vec<(Arc<Collector>, usize, Raw)>;

impl Shared {
    /// Starts the workers. On failure, the ones already started are killed and reaped.
    pub(crate) fn start(config: Config) -> Result<Arc<Shared>, Error> {
        let (wake_tx, wake_rx) = Pipe::new()?;
        let mut workers = Vec::with_capacity(config.processes);
        for k in 0..config.processes {
            match start_worker(&config, k) {
                Ok(w) => workers.push(w),
                Err(e) => {
                    for w in &mut workers {
                        kill_and_reap(w);
                    }
                    return Err(e);
                }
            }
        }
        Ok(Arc::new(Shared {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                next_worker: workers.len(),
                workers,
                next_id: 0,
                rotate: 0,
                closed: false,
                terminated: false,
                broken: None,
                finished: false,
                task_ns: 0.0,
                waiting_to_queue: 0,
            }),
            finished: Condvar::new(),
            sent: Condvar::new(),
            wake_tx,
            wake_rx,
            config,
        }))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reserves `n` consecutive task ids.
    pub(crate) fn ids(&self, n: usize) -> u64 {
        let mut st = self.lock();
        let first = st.next_id;
        st.next_id += n as u64;
        first
    }

    /// Queues tasks and hands out what the workers can take now.
    ///
    /// # Errors
    /// [`Error::PoolClosed`] after `close`/`terminate`, [`Error::PoolBroken`] when broken.
    pub(crate) fn submit(&self, tasks: impl IntoIterator<Item = Task>) -> Result<(), Error> {
        let mut st = self.lock();
        if st.closed {
            return Err(Error::PoolClosed);
        }
        if let Some(reason) = &st.broken {
            return Err(Error::PoolBroken {
                reason: reason.clone(),
            });
        }
        st.queue.extend(tasks);
        self.dispatch(&mut st);
        Ok(())
    }

    /// Waits until the tasks queued and not yet sent hold at most `bytes` of arguments, or
    /// the pool is closed or broken (then nothing waits to be sent for long): how a large
    /// `map` keeps few pickled chunks in memory at once.
    ///
    /// On a supervisor thread (a callback submitting work) it does not wait: only that
    /// thread could send what is queued.
    pub(crate) fn wait_queued_below(&self, bytes: usize) {
        if SUPERVISING.get() {
            return;
        }
        let mut st = self.lock();
        st.waiting_to_queue += 1;
        while st.broken.is_none()
            && !st.terminated
            && st.queue.iter().map(Task::wire_len).sum::<usize>() > bytes
        {
            // Timed as a backstop: every path that sends or drops queued tasks notifies.
            st = self
                .sent
                .wait_timeout(st, Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        st.waiting_to_queue -= 1;
    }

    /// The pids of the current workers.
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.lock()
            .workers
            .iter()
            .map(|w| w.process.pid())
            .collect()
    }

    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.wake();
    }

    pub(crate) fn terminate(&self) {
        {
            let mut st = self.lock();
            st.closed = true;
            st.terminated = true;
        }
        self.sent.notify_all();
        self.wake();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Waits until the supervisor has reaped every worker; `false` on timeout.
    pub(crate) fn wait_finished(&self, deadline: Option<Instant>) -> bool {
        let mut st = self.lock();
        while !st.finished {
            let now = Instant::now();
            st = match deadline {
                None => self.finished.wait(st).unwrap_or_else(|e| e.into_inner()),
                Some(d) if d > now => {
                    self.finished
                        .wait_timeout(st, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
                Some(_) => return false,
            };
        }
        true
    }

    fn wake(&self) {
        // A full wake socket already holds a wake-up: nothing is lost.
        let _ = self.wake_tx.send_bytes(&[1]);
    }

    /// Hands queued tasks to every worker that can take more, one batch per worker per pass
    /// (so the first worker does not fill its pipeline while another has nothing), starting
    /// from a rotating worker.
    fn dispatch(&self, st: &mut State) {
        let n = st.workers.len();
        let mut progressed = true;
        while progressed && !st.queue.is_empty() {
            progressed = false;
            for k in 0..n {
                let i = (st.rotate + k) % n;
                if self.can_take(st, i) {
                    let batch = self.take_batch(st, i);
                    send_batch(&mut st.workers[i], batch);
                    progressed = true;
                }
            }
        }
        st.rotate = st.rotate.wrapping_add(1);
        // Only when someone waits: a notify is a futex call, and this runs for every task.
        if st.waiting_to_queue > 0 {
            self.sent.notify_all();
        }
    }

    fn can_take(&self, st: &State, i: usize) -> bool {
        let Some(next) = st.queue.front() else {
            return false;
        };
        let w = &st.workers[i];
        // A message larger than a batch may not fit the socket buffer: it goes only to a
        // worker with nothing in flight, which is waiting to read it, so the send cannot
        // block on a worker that is itself blocked writing results to us.
        if next.wire_len() > BATCH_BYTES && !w.in_flight.is_empty() {
            return false;
        }
        // Until a task time is measured, no pipelining: the first tasks may be long.
        let outstanding = if st.task_ns == 0.0 || st.task_ns >= PIPELINE_BELOW_NS {
            1
        } else {
            2
        };
        w.conn.is_some()
            && w.in_flight.len() < outstanding
            && self
                .config
                .max_tasks_per_child
                .is_none_or(|m| w.assigned < m)
    }

    fn take_batch(&self, st: &mut State, i: usize) -> Vec<Task> {
        // A fair share of the queue over every worker's two pipeline slots.
        let per_worker = st.queue.len().div_ceil(2 * st.workers.len().max(1));
        let by_time = if st.task_ns > 0.0 {
            (BATCH_TARGET_NS / st.task_ns) as usize
        } else {
            1
        };
        let quota = self
            .config
            .max_tasks_per_child
            .map_or(usize::MAX, |m| m - st.workers[i].assigned);
        let count = by_time.min(per_worker).min(quota).clamp(1, BATCH_TASKS);
        let mut bytes = 0;
        let mut tasks = Vec::with_capacity(count);
        while tasks.len() < count {
            let Some(next) = st.queue.front() else { break };
            if !tasks.is_empty() && bytes + next.wire_len() > BATCH_BYTES {
                break;
            }
            bytes += next.wire_len();
            tasks.extend(st.queue.pop_front());
        }
        tasks
    }

    /// The supervisor thread's loop.
    pub(crate) fn supervise(self: Arc<Shared>) {
        SUPERVISING.set(true);
        loop {
            let (fds, owners) = self.watch_list();
            let ready = sys::poll_readable(&fds, TICK_MS).unwrap_or_default();
            let mut deliveries = Deliveries::new();
            let done = {
                let mut st = self.lock();
                self.drain_wake();
                let mut dead = Vec::new();
                for i in ready {
                    match owners[i] {
                        Owner::Wake => {}
                        Owner::Results(pid) => {
                            if !self.read_results(&mut st, pid, &mut deliveries) {
                                dead.push(pid);
                            }
                        }
                        Owner::Exit(pid) => dead.push(pid),
                    }
                }
                dead.sort_unstable();
                dead.dedup();
                for pid in dead {
                    self.bury(&mut st, pid, &mut deliveries);
                }
                self.tend(&mut st, &mut deliveries)
            };
            for (sink, index, raw) in deliveries {
                sink.deliver(index, raw);
            }
            if done {
                self.lock().finished = true;
                self.finished.notify_all();
                return;
            }
        }
    }

    /// The end of a supervisor that panicked (a bug): stop every worker, fail what is left
    /// and let `join` return, rather than leave callers waiting for ever.
    pub(crate) fn abandon(&self) {
        let mut deliveries = Deliveries::new();
        {
            let mut st = self.lock();
            st.closed = true;
            st.terminated = true;
            self.tend(&mut st, &mut deliveries);
            st.finished = true;
        }
        self.finished.notify_all();
        for (sink, index, raw) in deliveries {
            sink.deliver(index, raw);
        }
    }

    /// The descriptors to poll: the wake socket, then each worker's socket and pidfd.
    fn watch_list(&self) -> (Vec<RawFd>, Vec<Owner>) {
        let st = self.lock();
        let mut fds = Vec::with_capacity(1 + 2 * st.workers.len());
        let mut owners = Vec::with_capacity(fds.capacity());
        if let Some(fd) = self.wake_rx.as_fd() {
            fds.push(fd.as_raw_fd());
            owners.push(Owner::Wake);
        }
        for w in &st.workers {
            let pid = w.process.pid();
            if let Some(fd) = w.conn.as_ref().and_then(|c| c.as_fd()) {
                fds.push(fd.as_raw_fd());
                owners.push(Owner::Results(pid));
            }
            fds.push(w.process.sentinel().as_raw_fd());
            owners.push(Owner::Exit(pid));
        }
        (fds, owners)
    }

    fn drain_wake(&self) {
        while self.wake_rx.poll(Duration::ZERO).unwrap_or(false) {
            if self.wake_rx.recv_bytes().is_err() {
                break;
            }
        }
    }

    /// Reads every result message waiting on a worker's socket; `false` if it is closed.
    fn read_results(&self, st: &mut State, pid: u32, out: &mut Deliveries) -> bool {
        let Some(i) = st.workers.iter().position(|w| w.process.pid() == pid) else {
            return true;
        };
        loop {
            let Some(conn) = st.workers[i].conn.as_ref() else {
                return true;
            };
            let frame = match conn.poll(Duration::ZERO) {
                Ok(true) => match conn.recv_raw() {
                    Ok((frame, _)) => frame,
                    Err(_) => return false,
                },
                Ok(false) => return true,
                Err(_) => return false,
            };
            if !self.take_results(st, i, &frame, out) {
                return false;
            }
        }
    }

    /// Matches one flush of results to the worker's in-flight tasks (results come in the
    /// order the tasks were sent). `false` if the message does not fit the protocol.
    fn take_results(&self, st: &mut State, i: usize, frame: &[u8], out: &mut Deliveries) -> bool {
        let mut reader = Reader::new(frame);
        let Some(busy_ns) = reader.u64() else {
            return false;
        };
        let pid = st.workers[i].process.pid();
        let mut count = 0usize;
        while !reader.is_empty() {
            let Some((id, tag, body)) = reader.result() else {
                return false;
            };
            if id == INIT_FAILED_ID {
                let error = job::failure_error(body, pid, &Collector::new(0, "", "", None));
                self.break_pool(st, format!("the initializer failed: {error}"), out);
                return true;
            }
            let w = &mut st.workers[i];
            let Some(batch) = w.in_flight.front_mut() else {
                return false;
            };
            let Some(task) = batch.tasks.get_mut(batch.done) else {
                return false;
            };
            if task.id != id {
                return false;
            }
            let raw = if tag == TAG_RETURNED {
                Ok(body.to_vec())
            } else {
                Err(job::failure_error(body, pid, &task.sink))
            };
            out.push((task.sink.clone(), task.index, raw));
            batch.done += 1;
            count += 1;
            if batch.done == batch.tasks.len() {
                w.in_flight.pop_front();
            }
        }
        if count > 0 {
            let sample = busy_ns as f64 / count as f64;
            st.task_ns = if st.task_ns == 0.0 {
                sample
            } else {
                0.8 * st.task_ns + 0.2 * sample
            };
        }
        true
    }

    /// A worker died or closed its socket: read what it sent before, reap it, fail the batch
    /// it was running with `WorkerLost`, and queue again the batches it had not started.
    fn bury(&self, st: &mut State, pid: u32, out: &mut Deliveries) {
        if self.read_results(st, pid, out) {
            // The socket is still open (the process exited first): nothing more will come.
        }
        let Some(i) = st.workers.iter().position(|w| w.process.pid() == pid) else {
            return;
        };
        let mut w = st.workers.remove(i);
        w.conn = None;
        let (signal, code) = reap(&mut w.process);
        let mut batches = std::mem::take(&mut w.in_flight).into_iter();
        if let Some(running) = batches.next() {
            for task in running.tasks.into_iter().skip(running.done) {
                let error = match &st.broken {
                    Some(reason) => Error::PoolBroken {
                        reason: reason.clone(),
                    },
                    None => Error::WorkerLost { pid, signal, code },
                };
                out.push((task.sink, task.index, Err(error)));
            }
        }
        // Not started: they go back to the front of the queue, in order.
        for batch in batches.rev() {
            for task in batch.tasks.into_iter().rev() {
                st.queue.push_front(task);
            }
        }
    }

    /// After events: retire idle workers that reached their quota, start replacements, hand
    /// out work, and shut down when closed and idle or terminated. `true` when finished.
    fn tend(&self, st: &mut State, out: &mut Deliveries) -> bool {
        if st.terminated {
            for w in &mut st.workers {
                kill_and_reap(w);
            }
            for w in std::mem::take(&mut st.workers) {
                for batch in w.in_flight {
                    for task in batch.tasks.into_iter().skip(batch.done) {
                        out.push((task.sink, task.index, Err(Error::Cancelled)));
                    }
                }
            }
            for task in std::mem::take(&mut st.queue) {
                out.push((task.sink, task.index, Err(Error::Cancelled)));
            }
            return true;
        }
        let quota = self.config.max_tasks_per_child;
        for w in &mut st.workers {
            let spent = quota.is_some_and(|m| w.assigned >= m);
            if spent && w.in_flight.is_empty() {
                // End of stream tells the worker to exit; its pidfd then reports it.
                w.conn = None;
            }
        }
        let idle = st.queue.is_empty() && st.workers.iter().all(|w| w.in_flight.is_empty());
        if st.closed && idle {
            for w in &mut st.workers {
                w.conn = None;
            }
            return st.workers.is_empty();
        }
        let live = st.workers.iter().filter(|w| w.conn.is_some()).count();
        let retiring = st.workers.len() - live;
        if st.broken.is_none() {
            // A retiring worker still counts until it has exited: never more than n processes.
            for _ in live + retiring..self.config.processes {
                let k = st.next_worker;
                st.next_worker += 1;
                match start_worker(&self.config, k) {
                    Ok(w) => st.workers.push(w),
                    Err(e) => {
                        self.break_pool(st, format!("cannot start a worker: {e}"), out);
                        break;
                    }
                }
            }
        }
        self.dispatch(st);
        false
    }

    /// Marks the pool broken and fails every queued task with the reason.
    fn break_pool(&self, st: &mut State, reason: String, out: &mut Deliveries) {
        for task in std::mem::take(&mut st.queue) {
            out.push((
                task.sink,
                task.index,
                Err(Error::PoolBroken {
                    reason: reason.clone(),
                }),
            ));
        }
        st.broken.get_or_insert(reason);
        self.sent.notify_all();
    }
}

/// What a polled descriptor belongs to.
#[derive(Debug, Clone, Copy)]
enum Owner {
    Wake,
    Results(u32),
    Exit(u32),
}

fn start_worker(config: &Config, k: usize) -> Result<Worker, Error> {
    let (here, there) = Pipe::new()?;
    if let Some(fd) = here.as_fd() {
        // Best effort: with the default buffer the batch limits still keep sends from blocking.
        let _ = sys::set_send_buffer_size(fd, SOCKET_BUFFER);
    }
    let args = WorkerArgs {
        conn: there,
        init: config.init.clone().map(serde_bytes::ByteBuf::from),
    };
    let process = Process::builder()
        .start_method(config.method)
        .name(format!("PoolWorker-{}", k + 1))
        .daemon(true)
        .spawn(worker::main, args)?;
    Ok(Worker {
        process,
        conn: Some(here),
        in_flight: VecDeque::new(),
        assigned: 0,
    })
}

/// Sends a batch and records it as in flight. A failed send means the worker is gone: its
/// pidfd will say so and the batch is dealt with then.
///
/// A single large task goes out without a copy into a message buffer, and the arguments of
/// the batch a worker runs next are dropped once sent: if the worker dies, that batch fails
/// rather than going back to the queue (see `bury`), so they are never needed again. A large
/// `map` then holds few pickled chunks at once.
fn send_batch(w: &mut Worker, mut tasks: Vec<Task>) {
    if let Some(conn) = &w.conn {
        match tasks.as_slice() {
            [task] if task.args.len() > BATCH_BYTES => {
                let _ = conn.send_parts(&[&task.header(), &task.args], &[]);
            }
            _ => {
                let mut message = Vec::with_capacity(tasks.iter().map(Task::wire_len).sum());
                for task in &tasks {
                    task.encode_into(&mut message);
                }
                let _ = conn.send_parts(&[&message], &[]);
            }
        }
    }
    if w.in_flight.is_empty() {
        for task in &mut tasks {
            task.args = Vec::new();
        }
    }
    w.assigned += tasks.len();
    w.in_flight.push_back(Batch { tasks, done: 0 });
}

/// Waits for a worker that is exiting or has exited; kills it if it does not within a second.
/// Returns how it ended: (signal, exit code).
fn reap(process: &mut Process<()>) -> (Option<i32>, Option<i32>) {
    let mut outcome = process.join_timeout(Duration::from_secs(1));
    if matches!(outcome, Err(Error::Timeout)) {
        let _ = process.kill();
        outcome = process.join();
    }
    match outcome {
        Err(Error::Signaled { signal, .. }) => (Some(signal), None),
        Err(Error::Exited { code, .. }) => (None, Some(code)),
        _ => (None, process.exitcode()),
    }
}

fn kill_and_reap(w: &mut Worker) {
    w.conn = None;
    let _ = w.process.kill();
    let _ = w.process.join();
}

impl Drop for Shared {
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        for w in &mut st.workers {
            kill_and_reap(w);
        }
    }
}
