//! Containers a manager serves, as CPython's `SyncManager` does: `list`, `dict`,
//! `Namespace`, `Value` and `Array`, with the method sets of CPython's `ListProxy`,
//! `DictProxy`, `NamespaceProxy`, `ValueProxy` and `ArrayProxy`.
//!
//! Items are kept as pickled data ([`Value`]) and compared with Python's rules for the plain
//! types (`1 == 1.0 == True`; numbers, strings, bytes, tuples and lists ordered as Python
//! orders them, other mixtures a `TypeError`). A `dict` is searched linearly: it suits the
//! small shared tables managers are used for, not large maps. A proxy stored in a container
//! stays inert data (CPython pickles it as `RebuildProxy(func, Token, ...)`); the server keeps
//! its object alive for it, so a client reading it back gets a working proxy.

use std::cmp::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use super::referent::{bind, PyException, Referent};
use crate::pickle::Value;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn attribute_error(name: &str) -> PyException {
    PyException::new(
        "builtins",
        "AttributeError",
        &format!("object has no attribute '{name}'"),
    )
}

fn index_error(message: &str) -> PyException {
    PyException::new("builtins", "IndexError", message)
}

fn key_error(key: &Value) -> PyException {
    PyException {
        module: "builtins".into(),
        name: "KeyError".into(),
        args: vec![key.clone()],
    }
}

fn strs(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// A number as Python compares it.
enum Num {
    Int(i128),
    Float(f64),
}

fn number(v: &Value) -> Option<Num> {
    match v {
        Value::Bool(b) => Some(Num::Int(i128::from(*b))),
        Value::Int(i) => Some(Num::Int(i128::from(*i))),
        Value::Float(f) => Some(Num::Float(*f)),
        _ => None,
    }
}

fn num_cmp(a: &Num, b: &Num) -> Option<Ordering> {
    match (a, b) {
        (Num::Int(a), Num::Int(b)) => Some(a.cmp(b)),
        (Num::Int(a), Num::Float(b)) => (*a as f64).partial_cmp(b),
        (Num::Float(a), Num::Int(b)) => a.partial_cmp(&(*b as f64)),
        (Num::Float(a), Num::Float(b)) => a.partial_cmp(b),
    }
}

/// `a == b` with Python's rules for plain data; other values compare as data.
fn py_eq(a: &Value, b: &Value) -> bool {
    if let (Some(x), Some(y)) = (number(a), number(b)) {
        return num_cmp(&x, &y) == Some(Ordering::Equal);
    }
    match (a, b) {
        (Value::Tuple(x), Value::Tuple(y)) | (Value::List(x), Value::List(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| py_eq(p, q))
        }
        _ => a == b,
    }
}

/// `a < b` and friends with Python's rules; `None` where Python raises `TypeError`.
fn py_cmp(a: &Value, b: &Value) -> Option<Ordering> {
    if let (Some(x), Some(y)) = (number(a), number(b)) {
        return num_cmp(&x, &y);
    }
    match (a, b) {
        (Value::Str(x), Value::Str(y)) => Some(x.cmp(y)),
        (Value::Bytes(x), Value::Bytes(y)) => Some(x.cmp(y)),
        (Value::Tuple(x), Value::Tuple(y)) | (Value::List(x), Value::List(y)) => {
            for (p, q) in x.iter().zip(y) {
                if !py_eq(p, q) {
                    return py_cmp(p, q);
                }
            }
            Some(x.len().cmp(&y.len()))
        }
        _ => None,
    }
}

fn int_arg(v: &Value, what: &str) -> Result<i64, PyException> {
    match v {
        Value::Int(i) => Ok(*i),
        Value::Bool(b) => Ok(i64::from(*b)),
        _ => Err(PyException::type_error(&format!(
            "{what} must be integers, not {v:?}"
        ))),
    }
}

/// A Python index into a sequence of `len` (negative counts from the end).
fn position(index: i64, len: usize, what: &str) -> Result<usize, PyException> {
    let i = if index < 0 { index + len as i64 } else { index };
    if i < 0 || i >= len as i64 {
        return Err(index_error(&format!("{what} index out of range")));
    }
    Ok(i as usize)
}

/// The indices a `slice(start, stop, step)` picks from a sequence of `len`.
fn slice_indices(slice: &Value, len: usize) -> Result<Option<Vec<usize>>, PyException> {
    let args = match slice {
        Value::Reduce { callable, args, .. } if matches!(&**callable, Value::Global { module, name } if module == "builtins" && name == "slice") => {
            args
        }
        _ => return Ok(None),
    };
    let parts = match &**args {
        Value::Tuple(parts) if parts.len() == 3 => parts,
        _ => return Err(PyException::type_error("a slice needs start, stop, step")),
    };
    let opt = |v: &Value| -> Result<Option<i64>, PyException> {
        match v {
            Value::None => Ok(None),
            v => int_arg(v, "slice indices").map(Some),
        }
    };
    let (start, stop, step) = (
        opt(&parts[0])?,
        opt(&parts[1])?,
        opt(&parts[2])?.unwrap_or(1),
    );
    if step == 0 {
        return Err(PyException::value_error("slice step cannot be zero"));
    }
    let len = len as i64;
    let clamp = |v: i64, lo: i64, hi: i64| v.max(lo).min(hi);
    let norm = |v: i64| if v < 0 { v + len } else { v };
    let mut out = Vec::new();
    if step > 0 {
        let start = start.map_or(0, |s| clamp(norm(s), 0, len));
        let stop = stop.map_or(len, |s| clamp(norm(s), 0, len));
        let mut i = start;
        while i < stop {
            out.push(i as usize);
            i += step;
        }
    } else {
        let start = start.map_or(len - 1, |s| clamp(norm(s), -1, len - 1));
        let stop = stop.map_or(-1, |s| clamp(norm(s), -1, len - 1));
        let mut i = start;
        while i > stop {
            out.push(i as usize);
            i += step;
        }
    }
    Ok(Some(out))
}

/// A served `list` (CPython's `manager.list()` and `ListProxy`).
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use multiproc::managers::{Manager, ManagerServer, ServedList};
/// use multiproc::pickle::Value;
///
/// let mut server = ManagerServer::bind("127.0.0.1:0", b"k").unwrap();
/// server.register("list", || Arc::new(ServedList::default()));
/// let server = server.start_thread().unwrap();
/// let list = Manager::connect(server.address(), b"k").unwrap().create("list").unwrap();
/// list.call("append", vec![Value::Int(5)], vec![]).unwrap();
/// assert_eq!(list.call("__getitem__", vec![Value::Int(-1)], vec![]).unwrap(), Value::Int(5));
/// assert_eq!(list.call("__len__", vec![], vec![]).unwrap(), Value::Int(1));
/// ```
#[derive(Debug, Default)]
pub struct ServedList(Mutex<Vec<Value>>);

impl ServedList {
    /// A list holding `items`.
    pub fn new(items: Vec<Value>) -> ServedList {
        ServedList(Mutex::new(items))
    }
}

fn sequence(v: Value) -> Result<Vec<Value>, PyException> {
    match v {
        Value::List(items) | Value::Tuple(items) | Value::Set(items) | Value::FrozenSet(items) => {
            Ok(items)
        }
        Value::Str(s) => Ok(s.chars().map(|c| Value::Str(c.to_string())).collect()),
        Value::Bytes(b) => Ok(b.into_iter().map(|x| Value::Int(x.into())).collect()),
        Value::Dict(pairs) => Ok(pairs.into_iter().map(|(k, _)| k).collect()),
        Value::Reduce { callable, args, .. } if *callable == Value::global("builtins", "range") => {
            range_items(&args)
        }
        _ => Err(PyException::type_error("object is not iterable")),
    }
}

/// The items of a pickled `range(start, stop, step)` (at most 2^20 of them).
fn range_items(args: &Value) -> Result<Vec<Value>, PyException> {
    let (start, stop, step) = match args {
        Value::Tuple(p) if p.len() == 3 => (
            int_arg(&p[0], "range bounds")?,
            int_arg(&p[1], "range bounds")?,
            int_arg(&p[2], "range bounds")?,
        ),
        _ => return Err(PyException::type_error("a range needs start, stop, step")),
    };
    if step == 0 {
        return Err(PyException::value_error("range() arg 3 must not be zero"));
    }
    let mut out = Vec::new();
    let mut i = start;
    while (step > 0 && i < stop) || (step < 0 && i > stop) {
        if out.len() >= 1 << 20 {
            return Err(PyException::value_error(
                "range too long for a served container",
            ));
        }
        out.push(Value::Int(i));
        i = match i.checked_add(step) {
            Some(next) => next,
            None => break,
        };
    }
    Ok(out)
}

fn repeat(items: &[Value], n: i64) -> Vec<Value> {
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
        args: Vec<Value>,
        kwargs: Vec<(String, Value)>,
    ) -> Result<Value, PyException> {
        let one = |args, kwargs| -> Result<Value, PyException> {
            let mut v = bind(method, args, kwargs, &[("value", None)])?;
            Ok(v.remove(0))
        };
        let mut items = lock(&self.0);
        match method {
            "__len__" => {
                bind(method, args, kwargs, &[])?;
                Ok(Value::Int(items.len() as i64))
            }
            "__contains__" => {
                let x = one(args, kwargs)?;
                Ok(Value::Bool(items.iter().any(|i| py_eq(i, &x))))
            }
            "__getitem__" => {
                let index = one(args, kwargs)?;
                if let Some(picked) = slice_indices(&index, items.len())? {
                    return Ok(Value::List(
                        picked.into_iter().map(|i| items[i].clone()).collect(),
                    ));
                }
                let i = position(int_arg(&index, "list indices")?, items.len(), "list")?;
                Ok(items[i].clone())
            }
            "__setitem__" => {
                let mut bound = bind(method, args, kwargs, &[("key", None), ("value", None)])?;
                let value = bound.pop().unwrap_or(Value::None);
                let i = position(
                    int_arg(&bound[0], "list indices")?,
                    items.len(),
                    "list assignment",
                )?;
                items[i] = value;
                Ok(Value::None)
            }
            "__delitem__" => {
                let index = one(args, kwargs)?;
                let i = position(
                    int_arg(&index, "list indices")?,
                    items.len(),
                    "list assignment",
                )?;
                items.remove(i);
                Ok(Value::None)
            }
            "append" => {
                items.push(one(args, kwargs)?);
                Ok(Value::None)
            }
            "extend" => {
                let more = sequence(one(args, kwargs)?)?;
                items.extend(more);
                Ok(Value::None)
            }
            "insert" => {
                let mut bound = bind(method, args, kwargs, &[("index", None), ("object", None)])?;
                let object = bound.pop().unwrap_or(Value::None);
                let len = items.len() as i64;
                let i = int_arg(&bound[0], "list indices")?;
                let i = if i < 0 { (i + len).max(0) } else { i.min(len) };
                items.insert(i as usize, object);
                Ok(Value::None)
            }
            "pop" => {
                let bound = bind(method, args, kwargs, &[("index", Some(Value::Int(-1)))])?;
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
                Ok(Value::None)
            }
            "count" => {
                let x = one(args, kwargs)?;
                Ok(Value::Int(
                    items.iter().filter(|i| py_eq(i, &x)).count() as i64
                ))
            }
            "index" => {
                let x = one(args, kwargs)?;
                let i = items
                    .iter()
                    .position(|i| py_eq(i, &x))
                    .ok_or_else(|| PyException::value_error("value is not in list"))?;
                Ok(Value::Int(i as i64))
            }
            "reverse" => {
                bind(method, args, kwargs, &[])?;
                items.reverse();
                Ok(Value::None)
            }
            "sort" => {
                let bound = bind(
                    method,
                    args,
                    kwargs,
                    &[
                        ("key", Some(Value::None)),
                        ("reverse", Some(Value::Bool(false))),
                    ],
                )?;
                if bound[0] != Value::None {
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
                Ok(Value::None)
            }
            "__add__" => {
                let more = match one(args, kwargs)? {
                    Value::List(more) => more,
                    _ => return Err(PyException::type_error("can only concatenate list to list")),
                };
                let mut out = items.clone();
                out.extend(more);
                Ok(Value::List(out))
            }
            "__mul__" | "__rmul__" => {
                let n = int_arg(&one(args, kwargs)?, "repeat counts")?;
                Ok(Value::List(repeat(&items, n)))
            }
            "__imul__" => {
                let n = int_arg(&one(args, kwargs)?, "repeat counts")?;
                *items = repeat(&items, n);
                Ok(Value::None)
            }
            "__reversed__" => {
                bind(method, args, kwargs, &[])?;
                Ok(Value::List(items.iter().rev().cloned().collect()))
            }
            _ => Err(attribute_error(method)),
        }
    }
}

/// The keys of a served `dict`, one `__next__` at a time (what `DictProxy.__iter__` returns,
/// typeid `Iterator`).
#[derive(Debug)]
struct KeyIter(Mutex<std::vec::IntoIter<Value>>);

impl Referent for KeyIter {
    fn exposed(&self) -> Vec<String> {
        strs(&["__next__"])
    }

    fn call(
        &self,
        method: &str,
        args: Vec<Value>,
        kwargs: Vec<(String, Value)>,
    ) -> Result<Value, PyException> {
        match method {
            "__next__" => {
                bind(method, args, kwargs, &[])?;
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
/// use multiproc::pickle::Value;
///
/// let mut server = ManagerServer::bind("127.0.0.1:0", b"k").unwrap();
/// server.register("dict", || Arc::new(ServedDict::default()));
/// let server = server.start_thread().unwrap();
/// let d = Manager::connect(server.address(), b"k").unwrap().create("dict").unwrap();
/// d.call("__setitem__", vec![Value::Str("foo".into()), Value::Int(5)], vec![]).unwrap();
/// assert_eq!(d.call("get", vec![Value::Str("foo".into())], vec![]).unwrap(), Value::Int(5));
/// let keys: Vec<String> = d.call_proxy("__iter__", vec![], vec![]).unwrap().iter().collect::<Result<_, _>>().unwrap();
/// assert_eq!(keys, ["foo"]);
/// ```
#[derive(Debug, Default)]
pub struct ServedDict(Mutex<Vec<(Value, Value)>>);

impl ServedDict {
    /// A dict holding `items` (later duplicates of a key replace earlier ones).
    pub fn new(items: Vec<(Value, Value)>) -> ServedDict {
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

fn find(map: &[(Value, Value)], key: &Value) -> Option<usize> {
    map.iter().position(|(k, _)| py_eq(k, key))
}

fn hashable(key: &Value) -> Result<(), PyException> {
    match key {
        Value::List(_) | Value::Dict(_) | Value::Set(_) | Value::ByteArray(_) => {
            Err(PyException::type_error("unhashable type"))
        }
        Value::Tuple(items) => items.iter().try_for_each(hashable),
        _ => Ok(()),
    }
}

fn insert(map: &mut Vec<(Value, Value)>, key: Value, value: Value) {
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
        args: Vec<Value>,
        kwargs: Vec<(String, Value)>,
    ) -> Result<Arc<dyn Referent>, PyException> {
        bind(method, args, kwargs, &[])?;
        let keys: Vec<Value> = lock(&self.0).iter().map(|(k, _)| k.clone()).collect();
        Ok(Arc::new(KeyIter(Mutex::new(keys.into_iter()))))
    }

    fn call(
        &self,
        method: &str,
        args: Vec<Value>,
        kwargs: Vec<(String, Value)>,
    ) -> Result<Value, PyException> {
        let mut map = lock(&self.0);
        match method {
            "__len__" => {
                bind(method, args, kwargs, &[])?;
                Ok(Value::Int(map.len() as i64))
            }
            "__contains__" => {
                let key = bind(method, args, kwargs, &[("key", None)])?.remove(0);
                Ok(Value::Bool(find(&map, &key).is_some()))
            }
            "__getitem__" => {
                let key = bind(method, args, kwargs, &[("key", None)])?.remove(0);
                find(&map, &key)
                    .map(|i| map[i].1.clone())
                    .ok_or_else(|| key_error(&key))
            }
            "get" => {
                let bound = bind(
                    method,
                    args,
                    kwargs,
                    &[("key", None), ("default", Some(Value::None))],
                )?;
                Ok(find(&map, &bound[0]).map_or_else(|| bound[1].clone(), |i| map[i].1.clone()))
            }
            "__setitem__" => {
                let mut bound = bind(method, args, kwargs, &[("key", None), ("value", None)])?;
                let value = bound.pop().unwrap_or(Value::None);
                let key = bound.pop().unwrap_or(Value::None);
                hashable(&key)?;
                insert(&mut map, key, value);
                Ok(Value::None)
            }
            "__delitem__" => {
                let key = bind(method, args, kwargs, &[("key", None)])?.remove(0);
                let i = find(&map, &key).ok_or_else(|| key_error(&key))?;
                map.remove(i);
                Ok(Value::None)
            }
            "setdefault" => {
                let mut bound = bind(
                    method,
                    args,
                    kwargs,
                    &[("key", None), ("default", Some(Value::None))],
                )?;
                let default = bound.pop().unwrap_or(Value::None);
                let key = bound.pop().unwrap_or(Value::None);
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
                bind(method, args, kwargs, &[])?;
                map.pop()
                    .map(|(k, v)| Value::Tuple(vec![k, v]))
                    .ok_or_else(|| {
                        PyException::new("builtins", "KeyError", "popitem(): dictionary is empty")
                    })
            }
            "clear" => {
                bind(method, args, kwargs, &[])?;
                map.clear();
                Ok(Value::None)
            }
            "copy" => {
                bind(method, args, kwargs, &[])?;
                Ok(Value::Dict(map.clone()))
            }
            "keys" | "values" | "items" => {
                bind(method, args, kwargs, &[])?;
                Ok(Value::List(
                    map.iter()
                        .map(|(k, v)| match method {
                            "keys" => k.clone(),
                            "values" => v.clone(),
                            _ => Value::Tuple(vec![k.clone(), v.clone()]),
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
                    Some(Value::Dict(items)) => pairs.extend(items),
                    Some(other) => {
                        for item in sequence(other)? {
                            match item {
                                Value::Tuple(mut kv) | Value::List(mut kv) if kv.len() == 2 => {
                                    let v = kv.pop().unwrap_or(Value::None);
                                    let k = kv.pop().unwrap_or(Value::None);
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
                pairs.extend(kwargs.into_iter().map(|(k, v)| (Value::Str(k), v)));
                for (k, _) in &pairs {
                    hashable(k)?;
                }
                for (k, v) in pairs {
                    insert(&mut map, k, v);
                }
                Ok(Value::None)
            }
            _ => Err(attribute_error(method)),
        }
    }
}

/// A served `Namespace` (CPython's `manager.Namespace()` and `NamespaceProxy`): attributes
/// set and read with `__setattr__`, `__getattribute__`, `__delattr__`.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use multiproc::managers::{Manager, ManagerServer, ServedNamespace};
/// use multiproc::pickle::Value;
///
/// let mut server = ManagerServer::bind("127.0.0.1:0", b"k").unwrap();
/// server.register("Namespace", || Arc::new(ServedNamespace::default()));
/// let server = server.start_thread().unwrap();
/// let ns = Manager::connect(server.address(), b"k").unwrap().create("Namespace").unwrap();
/// ns.call("__setattr__", vec![Value::Str("x".into()), Value::Int(1)], vec![]).unwrap();
/// assert_eq!(ns.call("__getattribute__", vec![Value::Str("x".into())], vec![]).unwrap(), Value::Int(1));
/// ```
#[derive(Debug, Default)]
pub struct ServedNamespace(Mutex<Vec<(String, Value)>>);

impl Referent for ServedNamespace {
    fn exposed(&self) -> Vec<String> {
        strs(&["__getattribute__", "__setattr__", "__delattr__"])
    }

    fn call(
        &self,
        method: &str,
        args: Vec<Value>,
        kwargs: Vec<(String, Value)>,
    ) -> Result<Value, PyException> {
        let name_of = |v: &Value| match v {
            Value::Str(s) => Ok(s.clone()),
            _ => Err(PyException::type_error("attribute name must be string")),
        };
        let mut attrs = lock(&self.0);
        match method {
            "__getattribute__" => {
                let bound = bind(method, args, kwargs, &[("name", None)])?;
                let name = name_of(&bound[0])?;
                attrs
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| attribute_error(&name))
            }
            "__setattr__" => {
                let mut bound = bind(method, args, kwargs, &[("name", None), ("value", None)])?;
                let value = bound.pop().unwrap_or(Value::None);
                let name = name_of(&bound[0])?;
                match attrs.iter_mut().find(|(n, _)| *n == name) {
                    Some(slot) => slot.1 = value,
                    None => attrs.push((name, value)),
                }
                Ok(Value::None)
            }
            "__delattr__" => {
                let bound = bind(method, args, kwargs, &[("name", None)])?;
                let name = name_of(&bound[0])?;
                let i = attrs
                    .iter()
                    .position(|(n, _)| *n == name)
                    .ok_or_else(|| attribute_error(&name))?;
                attrs.remove(i);
                Ok(Value::None)
            }
            _ => Err(attribute_error(method)),
        }
    }
}

/// A served `Value(typecode, value)` (CPython's `manager.Value` and `ValueProxy`): `get()`
/// and `set(value)`; the proxy's `value` attribute uses both. As in CPython, the typecode is
/// kept but not enforced.
#[derive(Debug)]
pub struct ServedValue {
    typecode: String,
    value: Mutex<Value>,
}

impl ServedValue {
    /// A value holder.
    pub fn new(typecode: &str, value: Value) -> ServedValue {
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
        args: Vec<Value>,
        kwargs: Vec<(String, Value)>,
    ) -> Result<Value, PyException> {
        match method {
            "get" => {
                bind(method, args, kwargs, &[])?;
                Ok(lock(&self.value).clone())
            }
            "set" => {
                let value = bind(method, args, kwargs, &[("value", None)])?.remove(0);
                *lock(&self.value) = value;
                Ok(Value::None)
            }
            _ => Err(attribute_error(method)),
        }
    }
}

/// A served `Array(typecode, sequence)` (CPython's `manager.Array`, an `array.array`, and
/// `ArrayProxy`): `__len__`, `__getitem__`, `__setitem__`. Integer typecodes hold ints,
/// `'f'` and `'d'` floats; a value of the wrong kind is a `TypeError`.
#[derive(Debug)]
pub struct ServedArray {
    float: bool,
    items: Mutex<Vec<Value>>,
}

impl ServedArray {
    /// An array of `typecode` (`'b' 'B' 'h' 'H' 'i' 'I' 'l' 'L' 'q' 'Q' 'f' 'd'`).
    ///
    /// # Errors
    ///
    /// `ValueError` for another typecode; `TypeError` for an item of the wrong kind.
    pub fn new(typecode: &str, items: Vec<Value>) -> Result<ServedArray, PyException> {
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

    fn item(&self, v: Value) -> Result<Value, PyException> {
        match (self.float, v) {
            (false, Value::Int(i)) => Ok(Value::Int(i)),
            (false, Value::Bool(b)) => Ok(Value::Int(b.into())),
            (true, Value::Float(f)) => Ok(Value::Float(f)),
            (true, Value::Int(i)) => Ok(Value::Float(i as f64)),
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
        args: Vec<Value>,
        kwargs: Vec<(String, Value)>,
    ) -> Result<Value, PyException> {
        match method {
            "__len__" => {
                bind(method, args, kwargs, &[])?;
                Ok(Value::Int(lock(&self.items).len() as i64))
            }
            "__getitem__" => {
                let index = bind(method, args, kwargs, &[("index", None)])?.remove(0);
                let items = lock(&self.items);
                let i = position(int_arg(&index, "array indices")?, items.len(), "array")?;
                Ok(items[i].clone())
            }
            "__setitem__" => {
                let mut bound = bind(method, args, kwargs, &[("index", None), ("value", None)])?;
                let value = self.item(bound.pop().unwrap_or(Value::None))?;
                let mut items = lock(&self.items);
                let i = position(
                    int_arg(&bound[0], "array indices")?,
                    items.len(),
                    "array assignment",
                )?;
                items[i] = value;
                Ok(Value::None)
            }
            _ => Err(attribute_error(method)),
        }
    }
}

/// Registers what CPython's `SyncManager` serves under the same typeids: `list(sequence=())`,
/// `dict(mapping=(), **kwargs)`, `Namespace()`, `Value(typecode, value, lock=True)` and
/// `Array(typecode, sequence, lock=True)`.
pub(crate) fn register_containers(server: &mut super::ManagerServer) {
    server.register_with_args("list", |args, kwargs| {
        let seq = bind(
            "list",
            args,
            kwargs,
            &[("sequence", Some(Value::Tuple(vec![])))],
        )?
        .remove(0);
        Ok(Arc::new(ServedList::new(sequence(seq)?)))
    });
    server.register_with_args("dict", |args, kwargs| {
        let d = ServedDict::default();
        d.call("update", args, kwargs)?;
        Ok(Arc::new(d))
    });
    server.register("Namespace", || Arc::new(ServedNamespace::default()));
    server.register_with_args("Value", |args, kwargs| {
        let mut bound = bind(
            "Value",
            args,
            kwargs,
            &[
                ("typecode", None),
                ("value", None),
                ("lock", Some(Value::Bool(true))),
            ],
        )?;
        bound.pop();
        let value = bound.pop().unwrap_or(Value::None);
        let typecode = match &bound[0] {
            Value::Str(t) => t.clone(),
            _ => return Err(PyException::type_error("typecode must be a str")),
        };
        Ok(Arc::new(ServedValue::new(&typecode, value)))
    });
    server.register_with_args("Array", |args, kwargs| {
        let mut bound = bind(
            "Array",
            args,
            kwargs,
            &[
                ("typecode", None),
                ("sequence", None),
                ("lock", Some(Value::Bool(true))),
            ],
        )?;
        bound.pop();
        let seq = sequence(bound.pop().unwrap_or(Value::None))?;
        let typecode = match &bound[0] {
            Value::Str(t) => t.clone(),
            _ => return Err(PyException::type_error("typecode must be a str")),
        };
        Ok(Arc::new(ServedArray::new(&typecode, seq)?))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_equality_and_order() {
        assert!(py_eq(&Value::Int(1), &Value::Float(1.0)));
        assert!(py_eq(&Value::Bool(true), &Value::Int(1)));
        assert!(!py_eq(&Value::Int(1), &Value::Str("1".into())));
        assert_eq!(
            py_cmp(&Value::Int(2), &Value::Float(1.5)),
            Some(Ordering::Greater)
        );
        assert_eq!(py_cmp(&Value::Int(2), &Value::Str("a".into())), None);
        let t = |a, b| Value::Tuple(vec![Value::Int(a), Value::Int(b)]);
        assert_eq!(py_cmp(&t(1, 2), &t(1, 3)), Some(Ordering::Less));
    }

    #[test]
    fn slices_pick_what_python_picks() {
        let slice = |a: Value, b: Value, c: Value| Value::Reduce {
            callable: Box::new(Value::global("builtins", "slice")),
            args: Box::new(Value::Tuple(vec![a, b, c])),
            state: None,
        };
        let n = Value::None;
        let i = Value::Int;
        let pick = |s: &Value| slice_indices(s, 5).unwrap().unwrap();
        assert_eq!(pick(&slice(i(1), i(3), n.clone())), [1, 2]);
        assert_eq!(pick(&slice(n.clone(), n.clone(), i(-1))), [4, 3, 2, 1, 0]);
        assert_eq!(pick(&slice(i(-2), n.clone(), n.clone())), [3, 4]);
        assert_eq!(pick(&slice(n.clone(), n.clone(), i(2))), [0, 2, 4]);
        assert!(slice_indices(&slice(n.clone(), n.clone(), i(0)), 5).is_err());
    }
}
