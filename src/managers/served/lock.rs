//! A served `threading.Lock` or `threading.RLock`: one type, reentrant or not.

use std::sync::{Condvar, Mutex};
use std::thread::ThreadId;

use super::python::{
    attribute_error, bind_arguments, lock, lock_deadline, runtime_error, PyException,
};
use super::referent::Referent;
use crate::managers::peer::{wait_until, Outcome};
use crate::pickle::PyValue;

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
/// use multiproc::pickle::PyValue;
/// use multiproc::Error;
///
/// let mut server = ManagerServer::bind("127.0.0.1:0", b"k").unwrap();
/// server.register("Lock", || Arc::new(ServedLock::new()));
/// let server = server.start_thread().unwrap();
/// let lock = Manager::connect(server.address(), b"k").unwrap().create("Lock").unwrap();
/// assert_eq!(lock.call("acquire", vec![], vec![]).unwrap(), PyValue::Bool(true));
/// assert_eq!(lock.call("acquire", vec![PyValue::Bool(false)], vec![]).unwrap(), PyValue::Bool(false));
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
    fn reply_undelivered(&self, method: &str, result: PyValue) {
        if method == "acquire" && result == PyValue::Bool(true) {
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
        args: Vec<PyValue>,
        kwargs: Vec<(String, PyValue)>,
    ) -> Result<PyValue, PyException> {
        let me = std::thread::current().id();
        match method {
            "acquire" => {
                let deadline = lock_deadline(args, kwargs)?;
                let mut state = lock(&self.state);
                if self.reentrant {
                    if let Some((owner, count)) = &mut state.owner {
                        if *owner == me {
                            *count += 1;
                            return Ok(PyValue::Bool(true));
                        }
                    }
                }
                let (mut state, outcome) =
                    wait_until(&self.released, state, deadline, |s| s.owner.is_none());
                let free = outcome == Outcome::Ready;
                if free {
                    state.owner = Some((me, 1));
                }
                Ok(PyValue::Bool(free))
            }
            "release" => {
                bind_arguments(method, args, kwargs, &[])?;
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
                        Ok(PyValue::None)
                    }
                }
            }
            _ => Err(attribute_error(method)),
        }
    }
}
