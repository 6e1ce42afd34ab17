//! A served `threading.Event`.

use std::sync::{Condvar, Mutex};

use super::python::{attribute_error, bind_arguments, lock, timeout_deadline, PyException};
use super::referent::Referent;
use crate::managers::peer::{wait_until, Outcome};
use crate::pickle::PyValue;

/// A served `threading.Event`: `set`, `clear`, `is_set`, `wait(timeout=None)`.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use multiproc::managers::{Manager, ManagerServer, ServedEvent};
/// use multiproc::pickle::PyValue;
///
/// let mut server = ManagerServer::bind("127.0.0.1:0", b"k").unwrap();
/// server.register("Event", || Arc::new(ServedEvent::default()));
/// let server = server.start_thread().unwrap();
/// let event = Manager::connect(server.address(), b"k").unwrap().create("Event").unwrap();
/// event.call("set", vec![], vec![]).unwrap();
/// assert_eq!(event.call("wait", vec![PyValue::Float(1.0)], vec![]).unwrap(), PyValue::Bool(true));
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
        args: Vec<PyValue>,
        kwargs: Vec<(String, PyValue)>,
    ) -> Result<PyValue, PyException> {
        match method {
            "is_set" => {
                bind_arguments(method, args, kwargs, &[])?;
                Ok(PyValue::Bool(*lock(&self.flag)))
            }
            "set" => {
                bind_arguments(method, args, kwargs, &[])?;
                *lock(&self.flag) = true;
                self.changed.notify_all();
                Ok(PyValue::None)
            }
            "clear" => {
                bind_arguments(method, args, kwargs, &[])?;
                *lock(&self.flag) = false;
                Ok(PyValue::None)
            }
            "wait" => {
                let bound =
                    bind_arguments(method, args, kwargs, &[("timeout", Some(PyValue::None))])?;
                let deadline = timeout_deadline(&bound[0])?;
                let (_guard, outcome) =
                    wait_until(&self.changed, lock(&self.flag), deadline, |f| *f);
                Ok(PyValue::Bool(outcome == Outcome::Ready))
            }
            _ => Err(attribute_error(method)),
        }
    }
}
