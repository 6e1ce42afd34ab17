//! A served `threading.Barrier(parties, timeout=None)`, with `threading`'s states (filling,
//! draining, resetting, broken).

use std::sync::{Condvar, Mutex};
use std::time::Instant;

use super::python::{attribute_error, bind_arguments, deadline_after, lock, seconds, PyException};
use super::referent::Referent;
use crate::managers::peer::{wait_until, Outcome};
use crate::pickle::PyValue;

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
/// use multiproc::pickle::PyValue;
/// use multiproc::Error;
///
/// let mut server = ManagerServer::bind("127.0.0.1:0", b"k").unwrap();
/// server.register("Barrier", || Arc::new(ServedBarrier::new(1, None)));
/// let server = server.start_thread().unwrap();
/// let barrier = Manager::connect(server.address(), b"k").unwrap().create("Barrier").unwrap();
/// assert_eq!(barrier.call("wait", vec![], vec![]).unwrap(), PyValue::Int(0));
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
    pub(super) fn from_args(
        args: Vec<PyValue>,
        kwargs: Vec<(String, PyValue)>,
    ) -> Result<Self, PyException> {
        let bound = bind_arguments(
            "Barrier",
            args,
            kwargs,
            &[
                ("parties", None),
                ("action", Some(PyValue::None)),
                ("timeout", Some(PyValue::None)),
            ],
        )?;
        let parties = match &bound[0] {
            PyValue::Int(n) if *n >= 1 => *n as usize,
            _ => return Err(PyException::value_error("parties must be >= 1")),
        };
        if bound[1] != PyValue::None {
            return Err(PyException::type_error(
                "a served Barrier takes no action (a callable cannot travel)",
            ));
        }
        let timeout = match &bound[2] {
            PyValue::None => None,
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
        args: Vec<PyValue>,
        kwargs: Vec<(String, PyValue)>,
    ) -> Result<PyValue, PyException> {
        match method {
            "wait" => {
                let bound =
                    bind_arguments(method, args, kwargs, &[("timeout", Some(PyValue::None))])?;
                let timeout = match &bound[0] {
                    PyValue::None => self.timeout,
                    t => Some(seconds(t)?),
                };
                self.wait(timeout).map(|i| PyValue::Int(i as i64))
            }
            "abort" => {
                bind_arguments(method, args, kwargs, &[])?;
                lock(&self.state).state = BROKEN;
                self.changed.notify_all();
                Ok(PyValue::None)
            }
            "reset" => {
                bind_arguments(method, args, kwargs, &[])?;
                let mut s = lock(&self.state);
                if s.count > 0 {
                    if s.state == FILLING || s.state == BROKEN {
                        s.state = RESETTING;
                    }
                } else {
                    s.state = FILLING;
                }
                self.changed.notify_all();
                Ok(PyValue::None)
            }
            "__getattribute__" => {
                let name = match &bind_arguments(method, args, kwargs, &[("name", None)])?[..] {
                    [PyValue::Str(name)] => name.clone(),
                    _ => return Err(PyException::type_error("attribute name must be a str")),
                };
                let s = lock(&self.state);
                match name.as_str() {
                    "parties" => Ok(PyValue::Int(self.parties as i64)),
                    "n_waiting" => Ok(PyValue::Int(if s.state == FILLING {
                        s.count as i64
                    } else {
                        0
                    })),
                    "broken" => Ok(PyValue::Bool(s.state == BROKEN)),
                    _ => Err(attribute_error(&name)),
                }
            }
            _ => Err(attribute_error(method)),
        }
    }
}
