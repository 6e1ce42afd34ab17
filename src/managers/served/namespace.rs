//! A served `Namespace` (CPython's `manager.Namespace()` and `NamespaceProxy`).

use std::sync::Mutex;

use super::python::{attribute_error, bind_arguments, lock, strs, PyException};
use super::referent::Referent;
use crate::pickle::PyValue;

/// A served `Namespace` (CPython's `manager.Namespace()` and `NamespaceProxy`): attributes
/// set and read with `__setattr__`, `__getattribute__`, `__delattr__`.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use multiproc::managers::{Manager, ManagerServer, ServedNamespace};
/// use multiproc::pickle::PyValue;
///
/// let mut server = ManagerServer::bind("127.0.0.1:0", b"k").unwrap();
/// server.register("Namespace", || Arc::new(ServedNamespace::default()));
/// let server = server.start_thread().unwrap();
/// let ns = Manager::connect(server.address(), b"k").unwrap().create("Namespace").unwrap();
/// ns.call("__setattr__", vec![PyValue::Str("x".into()), PyValue::Int(1)], vec![]).unwrap();
/// assert_eq!(ns.call("__getattribute__", vec![PyValue::Str("x".into())], vec![]).unwrap(), PyValue::Int(1));
/// ```
#[derive(Debug, Default)]
pub struct ServedNamespace(Mutex<Vec<(String, PyValue)>>);

impl Referent for ServedNamespace {
    fn exposed(&self) -> Vec<String> {
        strs(&["__getattribute__", "__setattr__", "__delattr__"])
    }

    fn call(
        &self,
        method: &str,
        args: Vec<PyValue>,
        kwargs: Vec<(String, PyValue)>,
    ) -> Result<PyValue, PyException> {
        let name_of = |v: &PyValue| match v {
            PyValue::Str(s) => Ok(s.clone()),
            _ => Err(PyException::type_error("attribute name must be string")),
        };
        let mut attrs = lock(&self.0);
        match method {
            "__getattribute__" => {
                let bound = bind_arguments(method, args, kwargs, &[("name", None)])?;
                let name = name_of(&bound[0])?;
                attrs
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| attribute_error(&name))
            }
            "__setattr__" => {
                let mut bound =
                    bind_arguments(method, args, kwargs, &[("name", None), ("value", None)])?;
                let value = bound.pop().unwrap_or(PyValue::None);
                let name = name_of(&bound[0])?;
                match attrs.iter_mut().find(|(n, _)| *n == name) {
                    Some(slot) => slot.1 = value,
                    None => attrs.push((name, value)),
                }
                Ok(PyValue::None)
            }
            "__delattr__" => {
                let bound = bind_arguments(method, args, kwargs, &[("name", None)])?;
                let name = name_of(&bound[0])?;
                let i = attrs
                    .iter()
                    .position(|(n, _)| *n == name)
                    .ok_or_else(|| attribute_error(&name))?;
                attrs.remove(i);
                Ok(PyValue::None)
            }
            _ => Err(attribute_error(method)),
        }
    }
}
