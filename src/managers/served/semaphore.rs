//! A served `threading.Semaphore` or `threading.BoundedSemaphore`.

use std::sync::{Condvar, Mutex};
use std::time::Instant;

use super::python::{attribute_error, bind_arguments, lock, timeout_deadline, PyException};
use super::referent::Referent;
use crate::managers::peer::{wait_until, Outcome};
use crate::pickle::PyValue;

/// A served `threading.Semaphore` or `threading.BoundedSemaphore`:
/// `acquire(blocking=True, timeout=None)` and `release(n=1)`. A bounded one raises
/// `ValueError` when released above its initial value.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use multiproc::managers::{Manager, ManagerServer, ServedSemaphore};
/// use multiproc::pickle::PyValue;
///
/// let mut server = ManagerServer::bind("127.0.0.1:0", b"k").unwrap();
/// server.register("Semaphore", || Arc::new(ServedSemaphore::new(1)));
/// let server = server.start_thread().unwrap();
/// let sem = Manager::connect(server.address(), b"k").unwrap().create("Semaphore").unwrap();
/// assert_eq!(sem.call("acquire", vec![], vec![]).unwrap(), PyValue::Bool(true));
/// assert_eq!(sem.call("acquire", vec![], vec![("timeout".into(), PyValue::Float(0.01))]).unwrap(), PyValue::Bool(false));
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
    pub(super) fn initial(
        name: &str,
        args: Vec<PyValue>,
        kwargs: Vec<(String, PyValue)>,
    ) -> Result<u64, PyException> {
        match &bind_arguments(name, args, kwargs, &[("value", Some(PyValue::Int(1)))])?[..] {
            [PyValue::Int(n)] if *n >= 0 => Ok(*n as u64),
            [PyValue::Int(_)] => Err(PyException::value_error(
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
    fn reply_undelivered(&self, method: &str, result: PyValue) {
        if method == "acquire" && result == PyValue::Bool(true) {
            *lock(&self.value) += 1;
            self.available.notify_one();
        }
    }

    fn call(
        &self,
        method: &str,
        args: Vec<PyValue>,
        kwargs: Vec<(String, PyValue)>,
    ) -> Result<PyValue, PyException> {
        match method {
            "acquire" => {
                let bound = bind_arguments(
                    method,
                    args,
                    kwargs,
                    &[
                        ("blocking", Some(PyValue::Bool(true))),
                        ("timeout", Some(PyValue::None)),
                    ],
                )?;
                let deadline = match (&bound[0], &bound[1]) {
                    (blocking, PyValue::None) if blocking.truthy() => None,
                    (blocking, t) if blocking.truthy() => timeout_deadline(t)?,
                    (_, PyValue::None) => Some(Instant::now()),
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
                Ok(PyValue::Bool(got))
            }
            "release" => {
                let n = match &bind_arguments(
                    method,
                    args,
                    kwargs,
                    &[("n", Some(PyValue::Int(1)))],
                )?[..]
                {
                    [PyValue::Int(n)] if *n >= 1 => *n as u64,
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
                Ok(PyValue::None)
            }
            _ => Err(attribute_error(method)),
        }
    }
}
