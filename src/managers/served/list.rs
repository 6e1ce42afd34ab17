//! A served `list` (CPython's `manager.list()` and `ListProxy`).

use std::cmp::Ordering;
use std::sync::Mutex;

use super::python::{
    attribute_error, bind_arguments, index_error, int_arg, lock, position, py_cmp, py_eq, sequence,
    slice_indices, strs, PyException,
};
use super::referent::Referent;
use crate::pickle::PyValue;

/// A served `list` (CPython's `manager.list()` and `ListProxy`).
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use multiproc::managers::{Manager, ManagerServer, ServedList};
/// use multiproc::pickle::PyValue;
///
/// let mut server = ManagerServer::bind("127.0.0.1:0", b"k").unwrap();
/// server.register("list", || Arc::new(ServedList::default()));
/// let server = server.start_thread().unwrap();
/// let list = Manager::connect(server.address(), b"k").unwrap().create("list").unwrap();
/// list.call("append", vec![PyValue::Int(5)], vec![]).unwrap();
/// assert_eq!(list.call("__getitem__", vec![PyValue::Int(-1)], vec![]).unwrap(), PyValue::Int(5));
/// assert_eq!(list.call("__len__", vec![], vec![]).unwrap(), PyValue::Int(1));
/// ```
#[derive(Debug, Default)]
pub struct ServedList(Mutex<Vec<PyValue>>);

impl ServedList {
    /// A list holding `items`.
    pub fn new(items: Vec<PyValue>) -> ServedList {
        ServedList(Mutex::new(items))
    }
}

fn repeat(items: &[PyValue], n: i64) -> Vec<PyValue> {
    let n = n.max(0) as usize;
    let mut out = Vec::with_capacity(items.len() * n);
    for _ in 0..n {
        out.extend_from_slice(items);
    }
    out
}

impl Referent for ServedList {
    fn exposed(&self) -> Vec<String> {
        strs(&[
            "__add__",
            "__contains__",
            "__delitem__",
            "__getitem__",
            "__len__",
            "__mul__",
            "__reversed__",
            "__rmul__",
            "__setitem__",
            "append",
            "count",
            "extend",
            "index",
            "insert",
            "pop",
            "remove",
            "reverse",
            "sort",
            "__imul__",
        ])
    }

    fn call(
        &self,
        method: &str,
        args: Vec<PyValue>,
        kwargs: Vec<(String, PyValue)>,
    ) -> Result<PyValue, PyException> {
        let one = |args, kwargs| -> Result<PyValue, PyException> {
            let mut v = bind_arguments(method, args, kwargs, &[("value", None)])?;
            Ok(v.remove(0))
        };
        let mut items = lock(&self.0);
        match method {
            "__len__" => {
                bind_arguments(method, args, kwargs, &[])?;
                Ok(PyValue::Int(items.len() as i64))
            }
            "__contains__" => {
                let x = one(args, kwargs)?;
                Ok(PyValue::Bool(items.iter().any(|i| py_eq(i, &x))))
            }
            "__getitem__" => {
                let index = one(args, kwargs)?;
                if let Some(picked) = slice_indices(&index, items.len())? {
                    return Ok(PyValue::List(
                        picked.into_iter().map(|i| items[i].clone()).collect(),
                    ));
                }
                let i = position(int_arg(&index, "list indices")?, items.len(), "list")?;
                Ok(items[i].clone())
            }
            "__setitem__" => {
                let mut bound =
                    bind_arguments(method, args, kwargs, &[("key", None), ("value", None)])?;
                let value = bound.pop().unwrap_or(PyValue::None);
                let i = position(
                    int_arg(&bound[0], "list indices")?,
                    items.len(),
                    "list assignment",
                )?;
                items[i] = value;
                Ok(PyValue::None)
            }
            "__delitem__" => {
                let index = one(args, kwargs)?;
                let i = position(
                    int_arg(&index, "list indices")?,
                    items.len(),
                    "list assignment",
                )?;
                items.remove(i);
                Ok(PyValue::None)
            }
            "append" => {
                items.push(one(args, kwargs)?);
                Ok(PyValue::None)
            }
            "extend" => {
                let more = sequence(one(args, kwargs)?)?;
                items.extend(more);
                Ok(PyValue::None)
            }
            "insert" => {
                let mut bound =
                    bind_arguments(method, args, kwargs, &[("index", None), ("object", None)])?;
                let object = bound.pop().unwrap_or(PyValue::None);
                let len = items.len() as i64;
                let i = int_arg(&bound[0], "list indices")?;
                let i = if i < 0 { (i + len).max(0) } else { i.min(len) };
                items.insert(i as usize, object);
                Ok(PyValue::None)
            }
            "pop" => {
                let bound =
                    bind_arguments(method, args, kwargs, &[("index", Some(PyValue::Int(-1)))])?;
                if items.is_empty() {
                    return Err(index_error("pop from empty list"));
                }
                let i = position(int_arg(&bound[0], "list indices")?, items.len(), "pop")?;
                Ok(items.remove(i))
            }
            "remove" => {
                let x = one(args, kwargs)?;
                let i = items
                    .iter()
                    .position(|i| py_eq(i, &x))
                    .ok_or_else(|| PyException::value_error("list.remove(x): x not in list"))?;
                items.remove(i);
                Ok(PyValue::None)
            }
            "count" => {
                let x = one(args, kwargs)?;
                Ok(PyValue::Int(
                    items.iter().filter(|i| py_eq(i, &x)).count() as i64
                ))
            }
            "index" => {
                let x = one(args, kwargs)?;
                let i = items
                    .iter()
                    .position(|i| py_eq(i, &x))
                    .ok_or_else(|| PyException::value_error("value is not in list"))?;
                Ok(PyValue::Int(i as i64))
            }
            "reverse" => {
                bind_arguments(method, args, kwargs, &[])?;
                items.reverse();
                Ok(PyValue::None)
            }
            "sort" => {
                let bound = bind_arguments(
                    method,
                    args,
                    kwargs,
                    &[
                        ("key", Some(PyValue::None)),
                        ("reverse", Some(PyValue::Bool(false))),
                    ],
                )?;
                if bound[0] != PyValue::None {
                    return Err(PyException::type_error(
                        "a served list sorts without a key function (a callable cannot travel)",
                    ));
                }
                let mut sorted = items.clone();
                let mut failed = false;
                sorted.sort_by(|a, b| {
                    py_cmp(a, b).unwrap_or_else(|| {
                        failed = true;
                        Ordering::Equal
                    })
                });
                if failed {
                    return Err(PyException::type_error(
                        "'<' not supported between these items",
                    ));
                }
                if bound[1].truthy() {
                    sorted.reverse();
                }
                *items = sorted;
                Ok(PyValue::None)
            }
            "__add__" => {
                let more = match one(args, kwargs)? {
                    PyValue::List(more) => more,
                    _ => return Err(PyException::type_error("can only concatenate list to list")),
                };
                let mut out = items.clone();
                out.extend(more);
                Ok(PyValue::List(out))
            }
            "__mul__" | "__rmul__" => {
                let n = int_arg(&one(args, kwargs)?, "repeat counts")?;
                Ok(PyValue::List(repeat(&items, n)))
            }
            "__imul__" => {
                let n = int_arg(&one(args, kwargs)?, "repeat counts")?;
                *items = repeat(&items, n);
                Ok(PyValue::None)
            }
            "__reversed__" => {
                bind_arguments(method, args, kwargs, &[])?;
                Ok(PyValue::List(items.iter().rev().cloned().collect()))
            }
            _ => Err(attribute_error(method)),
        }
    }
}
