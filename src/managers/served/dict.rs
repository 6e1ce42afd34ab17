//! A served `dict` (CPython's `manager.dict()` and `DictProxy`), searched linearly, and the
//! iterator over its keys that `__iter__` serves.

use std::sync::{Arc, Mutex};

use super::python::{
    attribute_error, bind_arguments, key_error, lock, py_eq, sequence, strs, PyException,
};
use super::referent::Referent;
use crate::pickle::PyValue;

/// The keys of a served `dict`, one `__next__` at a time (what `DictProxy.__iter__` returns,
/// typeid `Iterator`).
#[derive(Debug)]
struct KeyIter(Mutex<std::vec::IntoIter<PyValue>>);

impl Referent for KeyIter {
    fn exposed(&self) -> Vec<String> {
        strs(&["__next__"])
    }

    fn call(
        &self,
        method: &str,
        args: Vec<PyValue>,
        kwargs: Vec<(String, PyValue)>,
    ) -> Result<PyValue, PyException> {
        match method {
            "__next__" => {
                bind_arguments(method, args, kwargs, &[])?;
                lock(&self.0).next().ok_or_else(|| PyException {
                    module: "builtins".into(),
                    name: "StopIteration".into(),
                    args: Vec::new(),
                })
            }
            _ => Err(attribute_error(method)),
        }
    }
}

/// A served `dict` (CPython's `manager.dict()` and `DictProxy`); `__iter__` answers with a
/// proxy to an iterator over a snapshot of the keys (typeid `Iterator`).
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use multiproc::managers::{Manager, ManagerServer, ServedDict};
/// use multiproc::pickle::PyValue;
///
/// let mut server = ManagerServer::bind("127.0.0.1:0", b"k").unwrap();
/// server.register("dict", || Arc::new(ServedDict::default()));
/// let server = server.start_thread().unwrap();
/// let d = Manager::connect(server.address(), b"k").unwrap().create("dict").unwrap();
/// d.call("__setitem__", vec![PyValue::Str("foo".into()), PyValue::Int(5)], vec![]).unwrap();
/// assert_eq!(d.call("get", vec![PyValue::Str("foo".into())], vec![]).unwrap(), PyValue::Int(5));
/// let keys: Vec<String> = d.call_proxy("__iter__", vec![], vec![]).unwrap().iter().collect::<Result<_, _>>().unwrap();
/// assert_eq!(keys, ["foo"]);
/// ```
#[derive(Debug, Default)]
pub struct ServedDict(Mutex<Vec<(PyValue, PyValue)>>);

impl ServedDict {
    /// A dict holding `items` (later duplicates of a key replace earlier ones).
    pub fn new(items: Vec<(PyValue, PyValue)>) -> ServedDict {
        let d = ServedDict::default();
        {
            let mut map = lock(&d.0);
            for (k, v) in items {
                insert(&mut map, k, v);
            }
        }
        d
    }
}

fn find(map: &[(PyValue, PyValue)], key: &PyValue) -> Option<usize> {
    map.iter().position(|(k, _)| py_eq(k, key))
}

fn hashable(key: &PyValue) -> Result<(), PyException> {
    match key {
        PyValue::List(_) | PyValue::Dict(_) | PyValue::Set(_) | PyValue::ByteArray(_) => {
            Err(PyException::type_error("unhashable type"))
        }
        PyValue::Tuple(items) => items.iter().try_for_each(hashable),
        _ => Ok(()),
    }
}

fn insert(map: &mut Vec<(PyValue, PyValue)>, key: PyValue, value: PyValue) {
    match find(map, &key) {
        Some(i) => map[i].1 = value,
        None => map.push((key, value)),
    }
}

impl Referent for ServedDict {
    fn exposed(&self) -> Vec<String> {
        strs(&[
            "__contains__",
            "__delitem__",
            "__getitem__",
            "__iter__",
            "__len__",
            "__setitem__",
            "clear",
            "copy",
            "get",
            "items",
            "keys",
            "pop",
            "popitem",
            "setdefault",
            "update",
            "values",
        ])
    }

    fn method_to_typeid(&self) -> Vec<(String, String)> {
        vec![("__iter__".into(), "Iterator".into())]
    }

    fn call_for_object(
        &self,
        method: &str,
        args: Vec<PyValue>,
        kwargs: Vec<(String, PyValue)>,
    ) -> Result<Arc<dyn Referent>, PyException> {
        bind_arguments(method, args, kwargs, &[])?;
        let keys: Vec<PyValue> = lock(&self.0).iter().map(|(k, _)| k.clone()).collect();
        Ok(Arc::new(KeyIter(Mutex::new(keys.into_iter()))))
    }

    fn call(
        &self,
        method: &str,
        args: Vec<PyValue>,
        kwargs: Vec<(String, PyValue)>,
    ) -> Result<PyValue, PyException> {
        let mut map = lock(&self.0);
        match method {
            "__len__" => {
                bind_arguments(method, args, kwargs, &[])?;
                Ok(PyValue::Int(map.len() as i64))
            }
            "__contains__" => {
                let key = bind_arguments(method, args, kwargs, &[("key", None)])?.remove(0);
                Ok(PyValue::Bool(find(&map, &key).is_some()))
            }
            "__getitem__" => {
                let key = bind_arguments(method, args, kwargs, &[("key", None)])?.remove(0);
                find(&map, &key)
                    .map(|i| map[i].1.clone())
                    .ok_or_else(|| key_error(&key))
            }
            "get" => {
                let bound = bind_arguments(
                    method,
                    args,
                    kwargs,
                    &[("key", None), ("default", Some(PyValue::None))],
                )?;
                Ok(find(&map, &bound[0]).map_or_else(|| bound[1].clone(), |i| map[i].1.clone()))
            }
            "__setitem__" => {
                let mut bound =
                    bind_arguments(method, args, kwargs, &[("key", None), ("value", None)])?;
                let value = bound.pop().unwrap_or(PyValue::None);
                let key = bound.pop().unwrap_or(PyValue::None);
                hashable(&key)?;
                insert(&mut map, key, value);
                Ok(PyValue::None)
            }
            "__delitem__" => {
                let key = bind_arguments(method, args, kwargs, &[("key", None)])?.remove(0);
                let i = find(&map, &key).ok_or_else(|| key_error(&key))?;
                map.remove(i);
                Ok(PyValue::None)
            }
            "setdefault" => {
                let mut bound = bind_arguments(
                    method,
                    args,
                    kwargs,
                    &[("key", None), ("default", Some(PyValue::None))],
                )?;
                let default = bound.pop().unwrap_or(PyValue::None);
                let key = bound.pop().unwrap_or(PyValue::None);
                match find(&map, &key) {
                    Some(i) => Ok(map[i].1.clone()),
                    None => {
                        hashable(&key)?;
                        map.push((key, default.clone()));
                        Ok(default)
                    }
                }
            }
            "pop" => {
                if args.is_empty() || args.len() > 2 || !kwargs.is_empty() {
                    return Err(PyException::type_error("pop expected 1 or 2 arguments"));
                }
                let mut args = args;
                let default = if args.len() == 2 { args.pop() } else { None };
                let key = args.remove(0);
                match find(&map, &key) {
                    Some(i) => Ok(map.remove(i).1),
                    None => default.ok_or_else(|| key_error(&key)),
                }
            }
            "popitem" => {
                bind_arguments(method, args, kwargs, &[])?;
                map.pop()
                    .map(|(k, v)| PyValue::Tuple(vec![k, v]))
                    .ok_or_else(|| {
                        PyException::new("builtins", "KeyError", "popitem(): dictionary is empty")
                    })
            }
            "clear" => {
                bind_arguments(method, args, kwargs, &[])?;
                map.clear();
                Ok(PyValue::None)
            }
            "copy" => {
                bind_arguments(method, args, kwargs, &[])?;
                Ok(PyValue::Dict(map.clone()))
            }
            "keys" | "values" | "items" => {
                bind_arguments(method, args, kwargs, &[])?;
                Ok(PyValue::List(
                    map.iter()
                        .map(|(k, v)| match method {
                            "keys" => k.clone(),
                            "values" => v.clone(),
                            _ => PyValue::Tuple(vec![k.clone(), v.clone()]),
                        })
                        .collect(),
                ))
            }
            "update" => {
                if args.len() > 1 {
                    return Err(PyException::type_error(
                        "update expected at most 1 argument",
                    ));
                }
                let mut pairs = Vec::new();
                match args.into_iter().next() {
                    None => {}
                    Some(PyValue::Dict(items)) => pairs.extend(items),
                    Some(other) => {
                        for item in sequence(other)? {
                            match item {
                                PyValue::Tuple(mut kv) | PyValue::List(mut kv) if kv.len() == 2 => {
                                    let v = kv.pop().unwrap_or(PyValue::None);
                                    let k = kv.pop().unwrap_or(PyValue::None);
                                    pairs.push((k, v));
                                }
                                _ => {
                                    return Err(PyException::value_error(
                                        "dictionary update sequence element has the wrong length",
                                    ))
                                }
                            }
                        }
                    }
                }
                pairs.extend(kwargs.into_iter().map(|(k, v)| (PyValue::Str(k), v)));
                for (k, _) in &pairs {
                    hashable(k)?;
                }
                for (k, v) in pairs {
                    insert(&mut map, k, v);
                }
                Ok(PyValue::None)
            }
            _ => Err(attribute_error(method)),
        }
    }
}
