//! Synchronization primitives a manager serves, as CPython's `SyncManager` does: `Event`,
//! `Lock`, `RLock`, `Semaphore` and `BoundedSemaphore`, with the methods and errors of
//! `threading`'s. Their methods run on the server; a blocking `acquire` or `wait` occupies
//! only the connection of the client that called it.
//!
//! Ownership of an `RLock` is the client thread's, as in CPython: each client thread calls
//! over its own proxy connection, which the server serves on its own thread, and that thread
//! is the owner.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

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

/// Waits on `cv` until `ready` holds or `deadline` passes; gives the guard and whether
/// `ready` held.
fn wait_until<'a, T>(
    cv: &Condvar,
    mut guard: MutexGuard<'a, T>,
    deadline: Option<Instant>,
    ready: impl Fn(&T) -> bool,
) -> (MutexGuard<'a, T>, bool) {
    while !ready(&guard) {
        guard = match deadline {
            None => cv.wait(guard).unwrap_or_else(|e| e.into_inner()),
            Some(deadline) => {
                let now = Instant::now();
                if now >= deadline {
                    return (guard, false);
                }
                cv.wait_timeout(guard, deadline - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
        };
    }
    (guard, true)
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
                let (_guard, set) = wait_until(&self.changed, lock(&self.flag), deadline, |f| *f);
                Ok(Value::Bool(set))
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
                let (mut state, free) =
                    wait_until(&self.released, state, deadline, |s| s.owner.is_none());
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
                let (mut value, got) =
                    wait_until(&self.available, lock(&self.value), deadline, |v| *v > 0);
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

/// Registers what CPython's `SyncManager` serves under the same typeids: `Event`, `Lock`,
/// `RLock`, `Semaphore(value=1)` and `BoundedSemaphore(value=1)`.
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
}
