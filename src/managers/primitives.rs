//! Synchronization primitives a manager serves, as CPython's `SyncManager` does: `Event`,
//! `Lock`, `RLock`, `Semaphore`, `BoundedSemaphore`, `Condition` and `Barrier`, with the
//! methods and errors of `threading`'s. Their methods run on the server; a blocking `acquire` or `wait` occupies
//! only the connection of the client that called it.
//!
//! Ownership of an `RLock` is the client thread's, as in CPython: each client thread calls
//! over its own proxy connection, which the server serves on its own thread, and that thread
//! is the owner.
//!
//! A client that dies while it waits takes nothing (issue 12.1, [`super::peer`]): its wait
//! ends without acquiring, and a reply that cannot be delivered gives back what the call
//! acquired ([`Referent::reply_undelivered`]). For an `RLock` or a `Condition` that is every
//! level the serving thread holds: its connection is closed next, and nobody else could ever
//! release them. A party of a `Barrier` that dies while waiting **breaks** the barrier, as a
//! party that times out does in `threading`: the others get `BrokenBarrierError` at once rather
//! than wait for a party that will not come (they may `reset()` and go on with a replacement).
//! Holds acquired by a call whose reply *was* delivered stay held when the client dies later,
//! as in CPython.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use super::peer::{wait_until, Outcome};
use super::referent::{bind, PyException, Referent};
use crate::pickle::Value;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn runtime_error(message: &str) -> PyException {
    PyException::new("builtins", "RuntimeError", message)
}

fn attribute_error(method: &str) -> PyException {
    PyException::new(
        "builtins",
        "AttributeError",
        &format!("object has no attribute '{method}'"),
    )
}

/// A timeout in seconds from a Python number.
fn seconds(value: &Value) -> Result<f64, PyException> {
    match value {
        Value::Int(i) => Ok(*i as f64),
        Value::Float(f) => Ok(*f),
        Value::Bool(b) => Ok(f64::from(u8::from(*b))),
        _ => Err(PyException::type_error("timeout must be a number")),
    }
}

/// How long a blocking call may wait: `None` for ever.
fn deadline_after(secs: f64) -> Option<Instant> {
    Duration::try_from_secs_f64(secs.max(0.0))
        .ok()
        .and_then(|d| Instant::now().checked_add(d))
}

/// `acquire(blocking=True, timeout=-1)` of `threading.Lock`/`RLock`: the deadline to wait
/// until (`None` for ever), or `Some(now)` for a non-blocking try.
fn lock_deadline(
    args: Vec<Value>,
    kwargs: Vec<(String, Value)>,
) -> Result<Option<Instant>, PyException> {
    let bound = bind(
        "acquire",
        args,
        kwargs,
        &[
            ("blocking", Some(Value::Bool(true))),
            ("timeout", Some(Value::Int(-1))),
        ],
    )?;
    let timeout = match &bound[1] {
        Value::None => -1.0,
        t => seconds(t)?,
    };
    if !bound[0].truthy() {
        if timeout != -1.0 {
            return Err(PyException::value_error(
                "can't specify a timeout for a non-blocking call",
            ));
        }
        return Ok(Some(Instant::now()));
    }
    if timeout < 0.0 && timeout != -1.0 {
        return Err(PyException::value_error(
            "timeout value must be a non-negative number",
        ));
    }
    Ok(if timeout == -1.0 {
        None
    } else {
        deadline_after(timeout)
    })
}

/// A served `threading.Event`: `set`, `clear`, `is_set`, `wait(timeout=None)`.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use multiproc::managers::{Manager, ManagerServer, ServedEvent};
/// use multiproc::pickle::Value;
///
/// let mut server = ManagerServer::bind("127.0.0.1:0", b"k").unwrap();
/// server.register("Event", || Arc::new(ServedEvent::default()));
/// let server = server.start_thread().unwrap();
/// let event = Manager::connect(server.address(), b"k").unwrap().create("Event").unwrap();
/// event.call("set", vec![], vec![]).unwrap();
/// assert_eq!(event.call("wait", vec![Value::Float(1.0)], vec![]).unwrap(), Value::Bool(true));
/// ```
#[derive(Debug, Default)]
pub struct ServedEvent {
    flag: Mutex<bool>,
    changed: Condvar,
}

impl Referent for ServedEvent {
    fn exposed(&self) -> Vec<String> {
        ["is_set", "set", "clear", "wait"]
            .map(String::from)
            .to_vec()
    }

    fn call(
        &self,
        method: &str,
        args: Vec<Value>,
        kwargs: Vec<(String, Value)>,
    ) -> Result<Value, PyException> {
        match method {
            "is_set" => {
                bind(method, args, kwargs, &[])?;
                Ok(Value::Bool(*lock(&self.flag)))
            }
            "set" => {
                bind(method, args, kwargs, &[])?;
                *lock(&self.flag) = true;
                self.changed.notify_all();
                Ok(Value::None)
            }
            "clear" => {
                bind(method, args, kwargs, &[])?;
                *lock(&self.flag) = false;
                Ok(Value::None)
            }
            "wait" => {
                let bound = bind(method, args, kwargs, &[("timeout", Some(Value::None))])?;
                let deadline = match &bound[0] {
                    Value::None => None,
                    t => Some(deadline_after(seconds(t)?).unwrap_or_else(Instant::now)),
                };
                let (_guard, outcome) =
                    wait_until(&self.changed, lock(&self.flag), deadline, |f| *f);
                Ok(Value::Bool(outcome == Outcome::Ready))
            }
            _ => Err(attribute_error(method)),
        }
    }
}

#[derive(Debug, Default)]
struct LockState {
    /// The owning server thread (one per client connection) and its recursion count.
    owner: Option<(ThreadId, usize)>,
}

/// A served `threading.Lock` or `threading.RLock`: `acquire(blocking=True, timeout=-1)` and
/// `release()` (CPython's `AcquirerProxy`). Releasing an unlocked `Lock`, or an `RLock` the
/// caller does not hold, raises `RuntimeError`.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use multiproc::managers::{Manager, ManagerServer, ServedLock};
/// use multiproc::pickle::Value;
/// use multiproc::Error;
///
/// let mut server = ManagerServer::bind("127.0.0.1:0", b"k").unwrap();
/// server.register("Lock", || Arc::new(ServedLock::new()));
/// let server = server.start_thread().unwrap();
/// let lock = Manager::connect(server.address(), b"k").unwrap().create("Lock").unwrap();
/// assert_eq!(lock.call("acquire", vec![], vec![]).unwrap(), Value::Bool(true));
/// assert_eq!(lock.call("acquire", vec![Value::Bool(false)], vec![]).unwrap(), Value::Bool(false));
/// lock.call("release", vec![], vec![]).unwrap();
/// assert!(matches!(lock.call("release", vec![], vec![]), Err(Error::Remote { class, .. }) if class == "builtins.RuntimeError"));
/// ```
#[derive(Debug, Default)]
pub struct ServedLock {
    reentrant: bool,
    state: Mutex<LockState>,
    released: Condvar,
}

impl ServedLock {
    /// A `threading.Lock`.
    pub fn new() -> ServedLock {
        ServedLock::default()
    }

    /// A `threading.RLock`: the owner may acquire it again, and must release it as often.
    pub fn reentrant() -> ServedLock {
        ServedLock {
            reentrant: true,
            ..ServedLock::default()
        }
    }
}

impl Referent for ServedLock {
    fn exposed(&self) -> Vec<String> {
        ["acquire", "release"].map(String::from).to_vec()
    }

    /// An `acquire` whose `True` never reached its client releases the lock: a `Lock`, or
    /// every level of an `RLock` the serving thread holds (see the module docs).
    fn reply_undelivered(&self, method: &str, result: Value) {
        if method == "acquire" && result == Value::Bool(true) {
            let mut state = lock(&self.state);
            if matches!(state.owner, Some((owner, _)) if owner == std::thread::current().id()) {
                state.owner = None;
                self.released.notify_one();
            }
        }
    }

    fn call(
        &self,
        method: &str,
        args: Vec<Value>,
        kwargs: Vec<(String, Value)>,
    ) -> Result<Value, PyException> {
        let me = std::thread::current().id();
        match method {
            "acquire" => {
                let deadline = lock_deadline(args, kwargs)?;
                let mut state = lock(&self.state);
                if self.reentrant {
                    if let Some((owner, count)) = &mut state.owner {
                        if *owner == me {
                            *count += 1;
                            return Ok(Value::Bool(true));
                        }
                    }
                }
                let (mut state, outcome) =
                    wait_until(&self.released, state, deadline, |s| s.owner.is_none());
                let free = outcome == Outcome::Ready;
                if free {
                    state.owner = Some((me, 1));
                }
                Ok(Value::Bool(free))
            }
            "release" => {
                bind(method, args, kwargs, &[])?;
                let mut state = lock(&self.state);
                match &mut state.owner {
                    None if self.reentrant => Err(runtime_error("cannot release un-acquired lock")),
                    None => Err(runtime_error("release unlocked lock")),
                    Some((owner, _)) if self.reentrant && *owner != me => {
                        Err(runtime_error("cannot release un-acquired lock"))
                    }
                    Some((_, count)) => {
                        *count -= 1;
                        if *count == 0 || !self.reentrant {
                            state.owner = None;
                            self.released.notify_one();
                        }
                        Ok(Value::None)
                    }
                }
            }
            _ => Err(attribute_error(method)),
        }
    }
}

/// A served `threading.Semaphore` or `threading.BoundedSemaphore`:
/// `acquire(blocking=True, timeout=None)` and `release(n=1)`. A bounded one raises
/// `ValueError` when released above its initial value.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use multiproc::managers::{Manager, ManagerServer, ServedSemaphore};
/// use multiproc::pickle::Value;
///
/// let mut server = ManagerServer::bind("127.0.0.1:0", b"k").unwrap();
/// server.register("Semaphore", || Arc::new(ServedSemaphore::new(1)));
/// let server = server.start_thread().unwrap();
/// let sem = Manager::connect(server.address(), b"k").unwrap().create("Semaphore").unwrap();
/// assert_eq!(sem.call("acquire", vec![], vec![]).unwrap(), Value::Bool(true));
/// assert_eq!(sem.call("acquire", vec![], vec![("timeout".into(), Value::Float(0.01))]).unwrap(), Value::Bool(false));
/// ```
#[derive(Debug)]
pub struct ServedSemaphore {
    bound: Option<u64>,
    value: Mutex<u64>,
    available: Condvar,
}

impl ServedSemaphore {
    /// A `threading.Semaphore(value)`.
    pub fn new(value: u64) -> ServedSemaphore {
        ServedSemaphore {
            bound: None,
            value: Mutex::new(value),
            available: Condvar::new(),
        }
    }

    /// A `threading.BoundedSemaphore(value)`.
    pub fn bounded(value: u64) -> ServedSemaphore {
        ServedSemaphore {
            bound: Some(value),
            ..ServedSemaphore::new(value)
        }
    }

    /// The argument of `Semaphore(value=1)` sent with `create`.
    fn initial(
        name: &str,
        args: Vec<Value>,
        kwargs: Vec<(String, Value)>,
    ) -> Result<u64, PyException> {
        match &bind(name, args, kwargs, &[("value", Some(Value::Int(1)))])?[..] {
            [Value::Int(n)] if *n >= 0 => Ok(*n as u64),
            [Value::Int(_)] => Err(PyException::value_error(
                "semaphore initial value must be >= 0",
            )),
            _ => Err(PyException::type_error("value must be an int")),
        }
    }
}

impl Referent for ServedSemaphore {
    fn exposed(&self) -> Vec<String> {
        ["acquire", "release"].map(String::from).to_vec()
    }

    /// An `acquire` whose `True` never reached its client gives its permit back.
    fn reply_undelivered(&self, method: &str, result: Value) {
        if method == "acquire" && result == Value::Bool(true) {
            *lock(&self.value) += 1;
            self.available.notify_one();
        }
    }

    fn call(
        &self,
        method: &str,
        args: Vec<Value>,
        kwargs: Vec<(String, Value)>,
    ) -> Result<Value, PyException> {
        match method {
            "acquire" => {
                let bound = bind(
                    method,
                    args,
                    kwargs,
                    &[
                        ("blocking", Some(Value::Bool(true))),
                        ("timeout", Some(Value::None)),
                    ],
                )?;
                let deadline = match (&bound[0], &bound[1]) {
                    (blocking, Value::None) if blocking.truthy() => None,
                    (blocking, t) if blocking.truthy() => {
                        Some(deadline_after(seconds(t)?).unwrap_or_else(Instant::now))
                    }
                    (_, Value::None) => Some(Instant::now()),
                    _ => {
                        return Err(PyException::value_error(
                            "can't specify timeout for non-blocking acquire",
                        ))
                    }
                };
                let (mut value, outcome) =
                    wait_until(&self.available, lock(&self.value), deadline, |v| *v > 0);
                let got = outcome == Outcome::Ready;
                if got {
                    *value -= 1;
                }
                Ok(Value::Bool(got))
            }
            "release" => {
                let n = match &bind(method, args, kwargs, &[("n", Some(Value::Int(1)))])?[..] {
                    [Value::Int(n)] if *n >= 1 => *n as u64,
                    _ => return Err(PyException::value_error("n must be one or more")),
                };
                let mut value = lock(&self.value);
                if self.bound.is_some_and(|b| *value + n > b) {
                    return Err(PyException::value_error(
                        "Semaphore released too many times",
                    ));
                }
                *value += n;
                for _ in 0..n {
                    self.available.notify_one();
                }
                Ok(Value::None)
            }
            _ => Err(attribute_error(method)),
        }
    }
}

#[derive(Debug, Default)]
struct ConditionState {
    /// The owner of the condition's `RLock` and its recursion count.
    owner: Option<(ThreadId, usize)>,
    /// Tickets of the threads in `wait`, oldest first.
    waiting: VecDeque<u64>,
    /// Tickets that `notify` picked and whose threads have not yet woken.
    notified: Vec<u64>,
    next_ticket: u64,
}

/// A served `threading.Condition()` over its own `RLock`: `acquire`, `release`,
/// `wait(timeout=None)`, `notify(n=1)`, `notify_all()` (CPython's `ConditionProxy`, whose
/// `wait_for` loops over `wait` on the client). `wait` and `notify` without holding the lock
/// raise `RuntimeError`. A condition over another served lock (`Condition(lock)`) is not
/// supported.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use multiproc::managers::{Manager, ManagerServer, ServedCondition};
/// use multiproc::pickle::Value;
///
/// let mut server = ManagerServer::bind("127.0.0.1:0", b"k").unwrap();
/// server.register("Condition", || Arc::new(ServedCondition::default()));
/// let server = server.start_thread().unwrap();
/// let cond = Manager::connect(server.address(), b"k").unwrap().create("Condition").unwrap();
/// cond.call("acquire", vec![], vec![]).unwrap();
/// // Nobody notifies: the wait times out (and gives the lock back before returning).
/// assert_eq!(cond.call("wait", vec![Value::Float(0.01)], vec![]).unwrap(), Value::Bool(false));
/// cond.call("notify", vec![], vec![]).unwrap();
/// cond.call("release", vec![], vec![]).unwrap();
/// ```
#[derive(Debug, Default)]
pub struct ServedCondition {
    state: Mutex<ConditionState>,
    changed: Condvar,
}

impl ServedCondition {
    fn acquire(&self, me: ThreadId, count: usize, deadline: Option<Instant>) -> bool {
        let mut state = lock(&self.state);
        if let Some((owner, held)) = &mut state.owner {
            if *owner == me {
                *held += count;
                return true;
            }
        }
        let (mut state, outcome) =
            wait_until(&self.changed, state, deadline, |s| s.owner.is_none());
        let free = outcome == Outcome::Ready;
        if free {
            state.owner = Some((me, count));
        }
        free
    }

    fn owned_by(state: &ConditionState, me: ThreadId) -> bool {
        matches!(state.owner, Some((owner, _)) if owner == me)
    }
}

impl Referent for ServedCondition {
    fn exposed(&self) -> Vec<String> {
        ["acquire", "release", "wait", "notify", "notify_all"]
            .map(String::from)
            .to_vec()
    }

    /// An `acquire` or a `wait` (which takes the lock back) whose reply never reached its
    /// client releases every level of the lock the serving thread holds (see the module docs).
    fn reply_undelivered(&self, method: &str, result: Value) {
        let acquired = match method {
            "acquire" => result == Value::Bool(true),
            "wait" => true,
            _ => false,
        };
        let mut state = lock(&self.state);
        if acquired && Self::owned_by(&state, std::thread::current().id()) {
            state.owner = None;
            self.changed.notify_all();
        }
    }

    fn call(
        &self,
        method: &str,
        args: Vec<Value>,
        kwargs: Vec<(String, Value)>,
    ) -> Result<Value, PyException> {
        let me = std::thread::current().id();
        match method {
            "acquire" => {
                let deadline = lock_deadline(args, kwargs)?;
                Ok(Value::Bool(self.acquire(me, 1, deadline)))
            }
            "release" => {
                bind(method, args, kwargs, &[])?;
                let mut state = lock(&self.state);
                match &mut state.owner {
                    Some((owner, count)) if *owner == me => {
                        *count -= 1;
                        if *count == 0 {
                            state.owner = None;
                            self.changed.notify_all();
                        }
                        Ok(Value::None)
                    }
                    _ => Err(runtime_error("cannot release un-acquired lock")),
                }
            }
            "wait" => {
                let bound = bind(method, args, kwargs, &[("timeout", Some(Value::None))])?;
                let deadline = match &bound[0] {
                    Value::None => None,
                    t => Some(deadline_after(seconds(t)?).unwrap_or_else(Instant::now)),
                };
                let mut state = lock(&self.state);
                if !Self::owned_by(&state, me) {
                    return Err(runtime_error("cannot wait on un-acquired lock"));
                }
                // Release the lock entirely, remembering how deep it was held.
                let held = state.owner.take().map_or(1, |(_, count)| count);
                let ticket = state.next_ticket;
                state.next_ticket += 1;
                state.waiting.push_back(ticket);
                self.changed.notify_all();
                let (mut state, outcome) = wait_until(&self.changed, state, deadline, |s| {
                    s.notified.contains(&ticket)
                });
                let woken = outcome == Outcome::Ready;
                if woken {
                    state.notified.retain(|&t| t != ticket);
                } else {
                    state.waiting.retain(|&t| t != ticket);
                }
                if outcome == Outcome::PeerGone {
                    // The client is gone: a notification it was picked for goes to the next
                    // waiter, and the lock it gave up to wait is not taken back for it.
                    if state.notified.contains(&ticket) {
                        state.notified.retain(|&t| t != ticket);
                        if let Some(next) = state.waiting.pop_front() {
                            state.notified.push(next);
                        }
                        self.changed.notify_all();
                    }
                    return Ok(Value::Bool(false));
                }
                drop(state);
                // Take the lock back, however long that takes, as Python does.
                self.acquire(me, held, None);
                Ok(Value::Bool(woken))
            }
            "notify" | "notify_all" => {
                let n = if method == "notify" {
                    match &bind(method, args, kwargs, &[("n", Some(Value::Int(1)))])?[..] {
                        [Value::Int(n)] => (*n).max(0) as usize,
                        _ => return Err(PyException::type_error("n must be an int")),
                    }
                } else {
                    bind(method, args, kwargs, &[])?;
                    usize::MAX
                };
                let mut state = lock(&self.state);
                if !Self::owned_by(&state, me) {
                    return Err(runtime_error("cannot notify on un-acquired lock"));
                }
                let n = n.min(state.waiting.len());
                let picked: Vec<u64> = state.waiting.drain(..n).collect();
                state.notified.extend(picked);
                self.changed.notify_all();
                Ok(Value::None)
            }
            _ => Err(attribute_error(method)),
        }
    }
}

/// `threading.BrokenBarrierError()`.
fn broken_barrier() -> PyException {
    PyException {
        module: "threading".into(),
        name: "BrokenBarrierError".into(),
        args: Vec::new(),
    }
}

/// Barrier states, as CPython's `threading.Barrier` numbers them.
const FILLING: i8 = 0;
const DRAINING: i8 = 1;
const RESETTING: i8 = -1;
const BROKEN: i8 = -2;

#[derive(Debug)]
struct BarrierState {
    state: i8,
    count: usize,
}

/// A served `threading.Barrier(parties, timeout=None)`: `wait(timeout=None)` (the arrival
/// index), `abort()`, `reset()`, and the attributes `parties`, `n_waiting` and `broken`
/// through `__getattribute__` (CPython's `BarrierProxy`). A wait that times out, or is
/// aborted or reset, raises `threading.BrokenBarrierError`. An `action` is not supported.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use multiproc::managers::{Manager, ManagerServer, ServedBarrier};
/// use multiproc::pickle::Value;
/// use multiproc::Error;
///
/// let mut server = ManagerServer::bind("127.0.0.1:0", b"k").unwrap();
/// server.register("Barrier", || Arc::new(ServedBarrier::new(1, None)));
/// let server = server.start_thread().unwrap();
/// let barrier = Manager::connect(server.address(), b"k").unwrap().create("Barrier").unwrap();
/// assert_eq!(barrier.call("wait", vec![], vec![]).unwrap(), Value::Int(0));
/// barrier.call("abort", vec![], vec![]).unwrap();
/// assert!(matches!(barrier.call("wait", vec![], vec![]), Err(Error::Remote { class, .. }) if class == "threading.BrokenBarrierError"));
/// ```
#[derive(Debug)]
pub struct ServedBarrier {
    parties: usize,
    timeout: Option<f64>,
    state: Mutex<BarrierState>,
    changed: Condvar,
}

impl ServedBarrier {
    /// A barrier for `parties` waiters; `timeout` (seconds) is the default of `wait`.
    pub fn new(parties: usize, timeout: Option<f64>) -> ServedBarrier {
        ServedBarrier {
            parties,
            timeout,
            state: Mutex::new(BarrierState {
                state: FILLING,
                count: 0,
            }),
            changed: Condvar::new(),
        }
    }

    fn wait(&self, timeout: Option<f64>) -> Result<usize, PyException> {
        let mut s = lock(&self.state);
        // _enter: block while the barrier drains or resets.
        while s.state == DRAINING || s.state == RESETTING {
            s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        if s.state < 0 {
            return Err(broken_barrier());
        }
        let index = s.count;
        s.count += 1;
        let result = if index + 1 == self.parties {
            s.state = DRAINING;
            self.changed.notify_all();
            Ok(index)
        } else {
            let deadline = timeout.map(|t| deadline_after(t).unwrap_or_else(Instant::now));
            let (guard, outcome) = wait_until(&self.changed, s, deadline, |b| b.state != FILLING);
            s = guard;
            // A party whose client died before the barrier filled breaks it, as a timeout
            // does (see the module docs); one released already has passed it.
            let released = outcome == Outcome::Ready || s.state != FILLING;
            if !released {
                s.state = BROKEN;
                self.changed.notify_all();
                Err(broken_barrier())
            } else if s.state < 0 {
                Err(broken_barrier())
            } else {
                Ok(index)
            }
        };
        // _exit: the last one out ends draining or resetting.
        s.count -= 1;
        if s.count == 0 && (s.state == DRAINING || s.state == RESETTING) {
            s.state = FILLING;
            self.changed.notify_all();
        }
        result
    }

    /// The arguments of `Barrier(parties, action=None, timeout=None)` sent with `create`.
    fn from_args(args: Vec<Value>, kwargs: Vec<(String, Value)>) -> Result<Self, PyException> {
        let bound = bind(
            "Barrier",
            args,
            kwargs,
            &[
                ("parties", None),
                ("action", Some(Value::None)),
                ("timeout", Some(Value::None)),
            ],
        )?;
        let parties = match &bound[0] {
            Value::Int(n) if *n >= 1 => *n as usize,
            _ => return Err(PyException::value_error("parties must be >= 1")),
        };
        if bound[1] != Value::None {
            return Err(PyException::type_error(
                "a served Barrier takes no action (a callable cannot travel)",
            ));
        }
        let timeout = match &bound[2] {
            Value::None => None,
            t => Some(seconds(t)?),
        };
        Ok(ServedBarrier::new(parties, timeout))
    }
}

impl Referent for ServedBarrier {
    fn exposed(&self) -> Vec<String> {
        ["__getattribute__", "wait", "abort", "reset"]
            .map(String::from)
            .to_vec()
    }

    fn call(
        &self,
        method: &str,
        args: Vec<Value>,
        kwargs: Vec<(String, Value)>,
    ) -> Result<Value, PyException> {
        match method {
            "wait" => {
                let bound = bind(method, args, kwargs, &[("timeout", Some(Value::None))])?;
                let timeout = match &bound[0] {
                    Value::None => self.timeout,
                    t => Some(seconds(t)?),
                };
                self.wait(timeout).map(|i| Value::Int(i as i64))
            }
            "abort" => {
                bind(method, args, kwargs, &[])?;
                lock(&self.state).state = BROKEN;
                self.changed.notify_all();
                Ok(Value::None)
            }
            "reset" => {
                bind(method, args, kwargs, &[])?;
                let mut s = lock(&self.state);
                if s.count > 0 {
                    if s.state == FILLING || s.state == BROKEN {
                        s.state = RESETTING;
                    }
                } else {
                    s.state = FILLING;
                }
                self.changed.notify_all();
                Ok(Value::None)
            }
            "__getattribute__" => {
                let name = match &bind(method, args, kwargs, &[("name", None)])?[..] {
                    [Value::Str(name)] => name.clone(),
                    _ => return Err(PyException::type_error("attribute name must be a str")),
                };
                let s = lock(&self.state);
                match name.as_str() {
                    "parties" => Ok(Value::Int(self.parties as i64)),
                    "n_waiting" => Ok(Value::Int(if s.state == FILLING {
                        s.count as i64
                    } else {
                        0
                    })),
                    "broken" => Ok(Value::Bool(s.state == BROKEN)),
                    _ => Err(attribute_error(&name)),
                }
            }
            _ => Err(attribute_error(method)),
        }
    }
}

/// Registers what CPython's `SyncManager` serves under the same typeids: `Event`, `Lock`,
/// `RLock`, `Semaphore(value=1)`, `BoundedSemaphore(value=1)`, `Condition()` and
/// `Barrier(parties, timeout=None)`.
pub(crate) fn register_sync_types(server: &mut super::ManagerServer) {
    server.register("Event", || std::sync::Arc::new(ServedEvent::default()));
    server.register("Lock", || std::sync::Arc::new(ServedLock::new()));
    server.register("RLock", || std::sync::Arc::new(ServedLock::reentrant()));
    server.register_with_args("Semaphore", |args, kwargs| {
        let value = ServedSemaphore::initial("Semaphore", args, kwargs)?;
        Ok(std::sync::Arc::new(ServedSemaphore::new(value)))
    });
    server.register_with_args("BoundedSemaphore", |args, kwargs| {
        let value = ServedSemaphore::initial("BoundedSemaphore", args, kwargs)?;
        Ok(std::sync::Arc::new(ServedSemaphore::bounded(value)))
    });
    server.register_with_args("Condition", |args, kwargs| {
        bind("Condition", args, kwargs, &[])
            .map_err(|_| PyException::type_error("a served Condition takes no lock argument"))?;
        Ok(std::sync::Arc::new(ServedCondition::default()))
    });
    server.register_with_args("Barrier", |args, kwargs| {
        Ok(std::sync::Arc::new(ServedBarrier::from_args(args, kwargs)?))
    });
}
