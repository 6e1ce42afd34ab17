//! A served `Array(typecode, sequence)` (CPython's `manager.Array` and `ArrayProxy`).

use std::sync::Mutex;

use super::python::{attribute_error, bind_arguments, int_arg, lock, position, strs, PyException};
use super::referent::Referent;
use crate::pickle::PyValue;

/// A served `Array(typecode, sequence)` (CPython's `manager.Array`, an `array.array`, and
/// `ArrayProxy`): `__len__`, `__getitem__`, `__setitem__`. Integer typecodes hold ints,
/// `'f'` and `'d'` floats; a value of the wrong kind is a `TypeError`.
#[derive(Debug)]
pub struct ServedArray {
    float: bool,
    items: Mutex<Vec<PyValue>>,
}

impl ServedArray {
    /// An array of `typecode` (`'b' 'B' 'h' 'H' 'i' 'I' 'l' 'L' 'q' 'Q' 'f' 'd'`).
    ///
    /// # Errors
    ///
    /// `ValueError` for another typecode; `TypeError` for an item of the wrong kind.
    pub fn new(typecode: &str, items: Vec<PyValue>) -> Result<ServedArray, PyException> {
        let float = match typecode {
            "f" | "d" => true,
            "b" | "B" | "h" | "H" | "i" | "I" | "l" | "L" | "q" | "Q" => false,
            _ => {
                return Err(PyException::value_error(
                    "bad typecode (must be b, B, h, H, i, I, l, L, q, Q, f or d)",
                ))
            }
        };
        let array = ServedArray {
            float,
            items: Mutex::new(Vec::new()),
        };
        let items = items
            .into_iter()
            .map(|v| array.item(v))
            .collect::<Result<_, _>>()?;
        *lock(&array.items) = items;
        Ok(array)
    }

    fn item(&self, v: PyValue) -> Result<PyValue, PyException> {
        match (self.float, v) {
            (false, PyValue::Int(i)) => Ok(PyValue::Int(i)),
            (false, PyValue::Bool(b)) => Ok(PyValue::Int(b.into())),
            (true, PyValue::Float(f)) => Ok(PyValue::Float(f)),
            (true, PyValue::Int(i)) => Ok(PyValue::Float(i as f64)),
            _ => Err(PyException::type_error(if self.float {
                "must be real number"
            } else {
                "an integer is required"
            })),
        }
    }
}

impl Referent for ServedArray {
    fn exposed(&self) -> Vec<String> {
        strs(&["__len__", "__getitem__", "__setitem__"])
    }

    fn call(
        &self,
        method: &str,
        args: Vec<PyValue>,
        kwargs: Vec<(String, PyValue)>,
    ) -> Result<PyValue, PyException> {
        match method {
            "__len__" => {
                bind_arguments(method, args, kwargs, &[])?;
                Ok(PyValue::Int(lock(&self.items).len() as i64))
            }
            "__getitem__" => {
                let index = bind_arguments(method, args, kwargs, &[("index", None)])?.remove(0);
                let items = lock(&self.items);
                let i = position(int_arg(&index, "array indices")?, items.len(), "array")?;
                Ok(items[i].clone())
            }
            "__setitem__" => {
                let mut bound =
                    bind_arguments(method, args, kwargs, &[("index", None), ("value", None)])?;
                let value = self.item(bound.pop().unwrap_or(PyValue::None))?;
                let mut items = lock(&self.items);
                let i = position(
                    int_arg(&bound[0], "array indices")?,
                    items.len(),
                    "array assignment",
                )?;
                items[i] = value;
                Ok(PyValue::None)
            }
            _ => Err(attribute_error(method)),
        }
    }
}
