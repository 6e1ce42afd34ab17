//! A served `Value(typecode, value)` (CPython's `manager.Value` and `ValueProxy`).

use std::sync::Mutex;

use super::python::{attribute_error, bind_arguments, lock, strs, PyException};
use super::referent::Referent;
use crate::pickle::PyValue;

/// A served `Value(typecode, value)` (CPython's `manager.Value` and `ValueProxy`): `get()`
/// and `set(value)`; the proxy's `value` attribute uses both. As in CPython, the typecode is
/// kept but not enforced.
#[derive(Debug)]
pub struct ServedValue {
    typecode: String,
    value: Mutex<PyValue>,
}

impl ServedValue {
    /// A value holder.
    pub fn new(typecode: &str, value: PyValue) -> ServedValue {
        ServedValue {
            typecode: typecode.into(),
            value: Mutex::new(value),
        }
    }

    /// The typecode it was made with.
    pub fn typecode(&self) -> &str {
        &self.typecode
    }
}

impl Referent for ServedValue {
    fn exposed(&self) -> Vec<String> {
        strs(&["get", "set"])
    }

    fn call(
        &self,
        method: &str,
        args: Vec<PyValue>,
        kwargs: Vec<(String, PyValue)>,
    ) -> Result<PyValue, PyException> {
        match method {
            "get" => {
                bind_arguments(method, args, kwargs, &[])?;
                Ok(lock(&self.value).clone())
            }
            "set" => {
                let value = bind_arguments(method, args, kwargs, &[("value", None)])?.remove(0);
                *lock(&self.value) = value;
                Ok(PyValue::None)
            }
            _ => Err(attribute_error(method)),
        }
    }
}
