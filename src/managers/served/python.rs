//! The Python semantics every served type shares: the exception a method raises
//! ([`PyException`] and the builtins ones the served types raise), binding a call's
//! arguments to parameters as Python does ([`bind_arguments`]), `threading`'s timeouts,
//! Python's equality and order on plain data, its indices, slices and iteration, and the
//! lock helper that ignores poisoning (a served method that panicked is answered with
//! `RuntimeError`, and its object stays usable).

use std::cmp::Ordering;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::pickle::PyValue;

/// A Python exception instance to send as `'#ERROR'`: a class named by module and name, and its
/// `args`.
///
/// # Examples
///
/// ```
/// use multiproc::managers::PyException;
/// let e = PyException::value_error("bad");
/// assert_eq!((e.module.as_str(), e.name.as_str()), ("builtins", "ValueError"));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct PyException {
    /// The module of the class (`"builtins"`, `"queue"`).
    pub module: String,
    /// The class name (`"ValueError"`, `"Empty"`).
    pub name: String,
    /// The exception's `args`.
    pub args: Vec<PyValue>,
}

impl PyException {
    /// `module.name(message)`.
    ///
    /// # Examples
    ///
    /// ```
    /// let e = multiproc::managers::PyException::new("builtins", "KeyError", "x");
    /// assert_eq!(e.args.len(), 1);
    /// ```
    pub fn new(module: &str, name: &str, message: &str) -> PyException {
        PyException {
            module: module.into(),
            name: name.into(),
            args: vec![PyValue::Str(message.into())],
        }
    }

    /// `TypeError(message)`.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(multiproc::managers::PyException::type_error("x").name, "TypeError");
    /// ```
    pub fn type_error(message: &str) -> PyException {
        PyException::new("builtins", "TypeError", message)
    }

    /// `ValueError(message)`.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(multiproc::managers::PyException::value_error("x").name, "ValueError");
    /// ```
    pub fn value_error(message: &str) -> PyException {
        PyException::new("builtins", "ValueError", message)
    }

    /// `queue.Empty()`.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(multiproc::managers::PyException::empty().name, "Empty");
    /// ```
    pub fn empty() -> PyException {
        PyException {
            module: "queue".into(),
            name: "Empty".into(),
            args: Vec::new(),
        }
    }

    /// `queue.Full()`.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(multiproc::managers::PyException::full().name, "Full");
    /// ```
    pub fn full() -> PyException {
        PyException {
            module: "queue".into(),
            name: "Full".into(),
            args: Vec::new(),
        }
    }

    /// `str(exception)` as Python gives it for the common cases.
    pub(crate) fn message(&self) -> String {
        match &self.args[..] {
            [] => String::new(),
            [PyValue::Str(s)] => s.clone(),
            [other] => format!("{other:?}"),
            more => format!("{more:?}"),
        }
    }

    /// The pickled instance: `Reduce(Global(module, name), args)`.
    pub(crate) fn to_value(&self) -> PyValue {
        PyValue::Reduce {
            callable: Box::new(PyValue::global(&self.module, &self.name)),
            args: Box::new(PyValue::Tuple(self.args.clone())),
            state: None,
        }
    }
}

/// Binds positional and keyword arguments to `params` (name and default; `None` = required)
/// as Python binds a call to `function` (what `inspect.signature(function).bind` does, defaults
/// applied), giving one value per parameter.
///
/// # Errors
///
/// `TypeError` as Python words it: too many positional arguments, an unexpected or repeated
/// keyword, a missing required argument.
///
/// # Examples
///
/// ```
/// use multiproc::managers::bind_arguments;
/// use multiproc::pickle::PyValue;
/// let bound = bind_arguments("get", vec![], vec![("timeout".into(), PyValue::Int(1))],
///                  &[("block", Some(PyValue::Bool(true))), ("timeout", Some(PyValue::None))]).unwrap();
/// assert_eq!(bound, vec![PyValue::Bool(true), PyValue::Int(1)]);
/// ```
pub fn bind_arguments(
    function: &str,
    args: Vec<PyValue>,
    kwargs: Vec<(String, PyValue)>,
    params: &[(&str, Option<PyValue>)],
) -> Result<Vec<PyValue>, PyException> {
    if args.len() > params.len() {
        return Err(PyException::type_error(&format!(
            "{function}() takes {} positional arguments but {} were given",
            params.len(),
            args.len()
        )));
    }
    let mut slots: Vec<Option<PyValue>> = args.into_iter().map(Some).collect();
    slots.resize(params.len(), None);
    for (key, value) in kwargs {
        let i = params.iter().position(|(p, _)| *p == key).ok_or_else(|| {
            PyException::type_error(&format!(
                "{function}() got an unexpected keyword argument '{key}'"
            ))
        })?;
        if slots[i].is_some() {
            return Err(PyException::type_error(&format!(
                "{function}() got multiple values for argument '{key}'"
            )));
        }
        slots[i] = Some(value);
    }
    slots
        .into_iter()
        .zip(params)
        .map(|(slot, (name, default))| {
            slot.or_else(|| default.clone()).ok_or_else(|| {
                PyException::type_error(&format!(
                    "{function}() missing 1 required positional argument: '{name}'"
                ))
            })
        })
        .collect()
}

/// The old name of [`bind_arguments`], kept so that code written against it still builds.
///
/// # Errors
///
/// As [`bind_arguments`].
///
/// # Examples
///
/// ```
/// #![allow(deprecated)] // shows the old name still works
/// use multiproc::managers::bind;
/// use multiproc::pickle::PyValue;
/// let bound = bind("put", vec![PyValue::Int(1)], vec![], &[("item", None)]).unwrap();
/// assert_eq!(bound, vec![PyValue::Int(1)]);
/// ```
#[deprecated(note = "renamed to `bind_arguments`, which says what it binds")]
pub fn bind(
    function: &str,
    args: Vec<PyValue>,
    kwargs: Vec<(String, PyValue)>,
    params: &[(&str, Option<PyValue>)],
) -> Result<Vec<PyValue>, PyException> {
    bind_arguments(function, args, kwargs, params)
}

/// Locks `m`, ignoring poisoning: a served method that panicked is answered with
/// `RuntimeError`, and its object stays usable.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(super) fn attribute_error(name: &str) -> PyException {
    PyException::new(
        "builtins",
        "AttributeError",
        &format!("object has no attribute '{name}'"),
    )
}

pub(super) fn index_error(message: &str) -> PyException {
    PyException::new("builtins", "IndexError", message)
}

pub(super) fn key_error(key: &PyValue) -> PyException {
    PyException {
        module: "builtins".into(),
        name: "KeyError".into(),
        args: vec![key.clone()],
    }
}

pub(super) fn strs(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

pub(super) fn runtime_error(message: &str) -> PyException {
    PyException::new("builtins", "RuntimeError", message)
}

/// A number as Python compares it.
enum Num {
    Int(i128),
    Float(f64),
}

fn number(v: &PyValue) -> Option<Num> {
    match v {
        PyValue::Bool(b) => Some(Num::Int(i128::from(*b))),
        PyValue::Int(i) => Some(Num::Int(i128::from(*i))),
        PyValue::Float(f) => Some(Num::Float(*f)),
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
pub(super) fn py_eq(a: &PyValue, b: &PyValue) -> bool {
    if let (Some(x), Some(y)) = (number(a), number(b)) {
        return num_cmp(&x, &y) == Some(Ordering::Equal);
    }
    match (a, b) {
        (PyValue::Tuple(x), PyValue::Tuple(y)) | (PyValue::List(x), PyValue::List(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| py_eq(p, q))
        }
        _ => a == b,
    }
}

/// `a < b` and friends with Python's rules; `None` where Python raises `TypeError`.
pub(super) fn py_cmp(a: &PyValue, b: &PyValue) -> Option<Ordering> {
    if let (Some(x), Some(y)) = (number(a), number(b)) {
        return num_cmp(&x, &y);
    }
    match (a, b) {
        (PyValue::Str(x), PyValue::Str(y)) => Some(x.cmp(y)),
        (PyValue::Bytes(x), PyValue::Bytes(y)) => Some(x.cmp(y)),
        (PyValue::Tuple(x), PyValue::Tuple(y)) | (PyValue::List(x), PyValue::List(y)) => {
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

pub(super) fn int_arg(v: &PyValue, what: &str) -> Result<i64, PyException> {
    match v {
        PyValue::Int(i) => Ok(*i),
        PyValue::Bool(b) => Ok(i64::from(*b)),
        _ => Err(PyException::type_error(&format!(
            "{what} must be integers, not {v:?}"
        ))),
    }
}

/// A Python index into a sequence of `len` (negative counts from the end).
pub(super) fn position(index: i64, len: usize, what: &str) -> Result<usize, PyException> {
    let i = if index < 0 { index + len as i64 } else { index };
    if i < 0 || i >= len as i64 {
        return Err(index_error(&format!("{what} index out of range")));
    }
    Ok(i as usize)
}

/// The indices a `slice(start, stop, step)` picks from a sequence of `len`.
pub(super) fn slice_indices(
    slice: &PyValue,
    len: usize,
) -> Result<Option<Vec<usize>>, PyException> {
    let args = match slice {
        PyValue::Reduce { callable, args, .. } if matches!(&**callable, PyValue::Global { module, name } if module == "builtins" && name == "slice") => {
            args
        }
        _ => return Ok(None),
    };
    let parts = match &**args {
        PyValue::Tuple(parts) if parts.len() == 3 => parts,
        _ => return Err(PyException::type_error("a slice needs start, stop, step")),
    };
    let opt = |v: &PyValue| -> Result<Option<i64>, PyException> {
        match v {
            PyValue::None => Ok(None),
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

pub(super) fn sequence(v: PyValue) -> Result<Vec<PyValue>, PyException> {
    match v {
        PyValue::List(items)
        | PyValue::Tuple(items)
        | PyValue::Set(items)
        | PyValue::FrozenSet(items) => Ok(items),
        PyValue::Str(s) => Ok(s.chars().map(|c| PyValue::Str(c.to_string())).collect()),
        PyValue::Bytes(b) => Ok(b.into_iter().map(|x| PyValue::Int(x.into())).collect()),
        PyValue::Dict(pairs) => Ok(pairs.into_iter().map(|(k, _)| k).collect()),
        PyValue::Reduce { callable, args, .. }
            if *callable == PyValue::global("builtins", "range") =>
        {
            range_items(&args)
        }
        _ => Err(PyException::type_error("object is not iterable")),
    }
}

/// The items of a pickled `range(start, stop, step)` (at most 2^20 of them).
fn range_items(args: &PyValue) -> Result<Vec<PyValue>, PyException> {
    let (start, stop, step) = match args {
        PyValue::Tuple(p) if p.len() == 3 => (
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
        out.push(PyValue::Int(i));
        i = match i.checked_add(step) {
            Some(next) => next,
            None => break,
        };
    }
    Ok(out)
}

/// A timeout in seconds from a Python number.
pub(super) fn seconds(value: &PyValue) -> Result<f64, PyException> {
    match value {
        PyValue::Int(i) => Ok(*i as f64),
        PyValue::Float(f) => Ok(*f),
        PyValue::Bool(b) => Ok(f64::from(u8::from(*b))),
        _ => Err(PyException::type_error("timeout must be a number")),
    }
}

/// How long a blocking call may wait: `None` for ever.
pub(super) fn deadline_after(secs: f64) -> Option<Instant> {
    Duration::try_from_secs_f64(secs.max(0.0))
        .ok()
        .and_then(|d| Instant::now().checked_add(d))
}

/// `acquire(blocking=True, timeout=-1)` of `threading.Lock`/`RLock`: the deadline to wait
/// until (`None` for ever), or `Some(now)` for a non-blocking try.
pub(super) fn lock_deadline(
    args: Vec<PyValue>,
    kwargs: Vec<(String, PyValue)>,
) -> Result<Option<Instant>, PyException> {
    let bound = bind_arguments(
        "acquire",
        args,
        kwargs,
        &[
            ("blocking", Some(PyValue::Bool(true))),
            ("timeout", Some(PyValue::Int(-1))),
        ],
    )?;
    let timeout = match &bound[1] {
        PyValue::None => -1.0,
        t => seconds(t)?,
    };
    if !bound[0].truthy() {
        if timeout != -1.0 {
            return Err(PyException::value_error(
                "can't specify a timeout for a non-blocking call",
            ));
        }
        return Ok(Some(Instant::now()));
    }
    if timeout < 0.0 && timeout != -1.0 {
        return Err(PyException::value_error(
            "timeout value must be a non-negative number",
        ));
    }
    Ok(if timeout == -1.0 {
        None
    } else {
        deadline_after(timeout)
    })
}

/// Binds a call that takes no arguments.
pub(super) fn no_args(
    name: &str,
    args: Vec<PyValue>,
    kwargs: Vec<(String, PyValue)>,
) -> Result<(), PyException> {
    bind_arguments(name, args, kwargs, &[]).map(|_| ())
}

/// The bound values as an array (`bind_arguments` returns exactly one per parameter).
pub(super) fn bound<const N: usize>(values: Vec<PyValue>) -> [PyValue; N] {
    let mut it = values.into_iter();
    std::array::from_fn(|_| it.next().unwrap_or(PyValue::None))
}

/// The deadline of a `wait(timeout=None)`: `None` waits for ever.
pub(super) fn timeout_deadline(timeout: &PyValue) -> Result<Option<Instant>, PyException> {
    Ok(match timeout {
        PyValue::None => None,
        t => Some(deadline_after(seconds(t)?).unwrap_or_else(Instant::now)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_equality_and_order() {
        assert!(py_eq(&PyValue::Int(1), &PyValue::Float(1.0)));
        assert!(py_eq(&PyValue::Bool(true), &PyValue::Int(1)));
        assert!(!py_eq(&PyValue::Int(1), &PyValue::Str("1".into())));
        assert_eq!(
            py_cmp(&PyValue::Int(2), &PyValue::Float(1.5)),
            Some(Ordering::Greater)
        );
        assert_eq!(py_cmp(&PyValue::Int(2), &PyValue::Str("a".into())), None);
        let t = |a, b| PyValue::Tuple(vec![PyValue::Int(a), PyValue::Int(b)]);
        assert_eq!(py_cmp(&t(1, 2), &t(1, 3)), Some(Ordering::Less));
    }

    #[test]
    fn slices_pick_what_python_picks() {
        let slice = |a: PyValue, b: PyValue, c: PyValue| PyValue::Reduce {
            callable: Box::new(PyValue::global("builtins", "slice")),
            args: Box::new(PyValue::Tuple(vec![a, b, c])),
            state: None,
        };
        let n = PyValue::None;
        let i = PyValue::Int;
        let pick = |s: &PyValue| slice_indices(s, 5).unwrap().unwrap();
        assert_eq!(pick(&slice(i(1), i(3), n.clone())), [1, 2]);
        assert_eq!(pick(&slice(n.clone(), n.clone(), i(-1))), [4, 3, 2, 1, 0]);
        assert_eq!(pick(&slice(i(-2), n.clone(), n.clone())), [3, 4]);
        assert_eq!(pick(&slice(n.clone(), n.clone(), i(2))), [0, 2, 4]);
        assert!(slice_indices(&slice(n.clone(), n.clone(), i(0)), 5).is_err());
    }
}
