//! From a decoded request to its reply: the request envelope checked and split, control
//! requests (`create`, `incref`, `decref`, …) answered, and proxy calls run on their object
//! (PROTOCOL.md §5–6).

use std::sync::Arc;

use super::objects::{exposed_tuple, key_error, token_ident, token_value};
use super::{Inner, ServedObject};
use crate::managers::served::{PyException, Referent};
use crate::managers::wire::{self, Request};
use crate::pickle::PyValue;

/// How a request ended a connection.
pub(super) enum Outcome {
    /// Keep serving (proxy connections).
    Continue,
    /// Close (control connections).
    Close,
    /// Close and stop the server (`shutdown`).
    Stop,
    /// Close, and log why the request was refused.
    Refused(String),
}

impl Inner {
    pub(super) fn control(
        &self,
        method: &str,
        args: Vec<PyValue>,
        kwargs: Vec<(String, PyValue)>,
    ) -> (Reply, Outcome) {
        let ok = |v| (("#RETURN", v), Outcome::Close);
        let ident_arg = |args: &[PyValue]| match args {
            [PyValue::Str(ident)] => Ok(ident.clone()),
            _ => Err(format!("TypeError: {method}() takes one str argument\n")),
        };
        let result: Result<PyValue, String> = match method {
            "dummy" => Ok(PyValue::None),
            "create" => self.create(args, kwargs),
            "incref" => ident_arg(&args).and_then(|ident| {
                let mut objects = self.objects();
                if !objects.contains_key(&ident) {
                    // A proxy rebuilt from data stored in a served object: its object comes
                    // back from the held ones, with this first reference.
                    let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
                    let entry = held.get(&ident).ok_or_else(|| key_error(&ident))?;
                    objects.insert(
                        ident.clone(),
                        ServedObject {
                            refcount: 0,
                            ..entry.clone()
                        },
                    );
                }
                if let Some(entry) = objects.get_mut(&ident) {
                    entry.refcount += 1;
                }
                Ok(PyValue::None)
            }),
            "decref" => ident_arg(&args).and_then(|ident| {
                let mut objects = self.objects();
                if !objects.contains_key(&ident)
                    && self
                        .held
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .contains_key(&ident)
                {
                    return Ok(PyValue::None);
                }
                let entry = objects.get_mut(&ident).ok_or_else(|| key_error(&ident))?;
                entry.refcount -= 1;
                if entry.refcount == 0 {
                    objects.remove(&ident);
                }
                Ok(PyValue::None)
            }),
            "number_of_objects" => Ok(PyValue::Int(self.objects().len() as i64)),
            "debug_info" => {
                let objects = self.objects();
                let mut lines: Vec<String> = objects
                    .iter()
                    .map(|(ident, e)| {
                        format!("  {ident}:       refcount={}\n    {}", e.refcount, e.typeid)
                    })
                    .collect();
                lines.sort();
                Ok(PyValue::Str(lines.join("\n")))
            }
            "get_methods" => match args.first().and_then(token_ident) {
                Some(ident) => self
                    .objects()
                    .get(&ident)
                    .map(|e| exposed_tuple(&e.exposed))
                    .ok_or_else(|| key_error(&ident)),
                None => Err("TypeError: get_methods() takes a Token\n".into()),
            },
            "shutdown" => {
                return (("#RETURN", PyValue::None), Outcome::Stop);
            }
            other => Err(format!("AssertionError: {other:?} unrecognized\n")),
        };
        match result {
            Ok(v) => ok(v),
            Err(text) => (traceback(&text), Outcome::Close),
        }
    }

    fn create(
        &self,
        mut args: Vec<PyValue>,
        kwargs: Vec<(String, PyValue)>,
    ) -> Result<PyValue, String> {
        let typeid = match args.first() {
            Some(PyValue::Str(typeid)) => typeid.clone(),
            _ => return Err("TypeError: create() needs a typeid\n".into()),
        };
        args.remove(0);
        self.hold_stored_proxies(&args, &kwargs);
        let factory = self
            .config
            .registry
            .get(&typeid)
            .ok_or_else(|| key_error(&typeid))?;
        let object =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| factory(args, kwargs)))
                .map_err(|_| format!("RuntimeError: the factory of {typeid} panicked\n"))?
                .map_err(|e| format!("{}.{}: {}\n", e.module, e.name, e.message()))?;
        let (ident, exposed) = self.adopt(object, typeid);
        Ok(PyValue::Tuple(vec![PyValue::Str(ident), exposed]))
    }

    /// Runs a `method_to_typeid` method and serves its result: `'#PROXY'` with the new
    /// object's exposed methods and `Token` (PROTOCOL.md §6.4).
    fn call_for_proxy(
        &self,
        object: &Arc<dyn Referent>,
        method: &str,
        typeid: String,
        args: Vec<PyValue>,
        kwargs: Vec<(String, PyValue)>,
    ) -> Reply {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            object.call_for_object(method, args, kwargs)
        }));
        match result {
            Ok(Ok(child)) => {
                let (ident, exposed) = self.adopt(child, typeid.clone());
                let token = token_value(&typeid, self.address, &ident);
                ("#PROXY", PyValue::Tuple(vec![exposed, token]))
            }
            Ok(Err(exception)) => ("#ERROR", exception.to_value()),
            Err(_) => (
                "#ERROR",
                PyException::new("builtins", "RuntimeError", &format!("{method}() panicked"))
                    .to_value(),
            ),
        }
    }

    pub(super) fn call(
        &self,
        ident: &Option<String>,
        method: &str,
        args: Vec<PyValue>,
        kwargs: Vec<(String, PyValue)>,
    ) -> Reply {
        let Some(ident) = ident else {
            return traceback("TypeError: a proxy call needs an object id\n");
        };
        let found = self.objects().get(ident).map(|e| {
            let to_typeid = e
                .method_to_typeid
                .iter()
                .find(|(m, _)| m == method)
                .map(|(_, typeid)| typeid.clone());
            (
                e.object.clone(),
                e.exposed.iter().any(|m| m == method),
                to_typeid,
            )
        });
        let Some((object, exposed, to_typeid)) = found else {
            return traceback(&key_error(ident));
        };
        self.hold_stored_proxies(&args, &kwargs);
        if let Some(typeid) = to_typeid {
            return self.call_for_proxy(&object, method, typeid, args, kwargs);
        }
        if exposed {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                object.call(method, args, kwargs)
            }));
            return match result {
                Ok(Ok(v)) => ("#RETURN", v),
                Ok(Err(exception)) => ("#ERROR", exception.to_value()),
                Err(_) => (
                    "#ERROR",
                    PyException::new("builtins", "RuntimeError", &format!("{method}() panicked"))
                        .to_value(),
                ),
            };
        }
        let typeid = self
            .objects()
            .get(ident)
            .map(|e| e.typeid.clone())
            .unwrap_or_default();
        match method {
            "#GETVALUE" => (
                "#UNSERIALIZABLE",
                PyValue::Str(format!("TypeError: cannot pickle a served {typeid} object")),
            ),
            "__str__" | "__repr__" => (
                "#RETURN",
                PyValue::Str(format!("<{typeid} object {ident}>")),
            ),
            _ => traceback(&format!(
                "AttributeError: method {method:?} of {typeid:?} object is not exposed\n"
            )),
        }
    }
}

/// A reply: its kind (`'#RETURN'`, `'#ERROR'`, …) and payload (PROTOCOL.md §5.2).
pub(super) type Reply = (&'static str, PyValue);

fn traceback(text: &str) -> Reply {
    ("#TRACEBACK", PyValue::Str(text.to_string()))
}

/// A refused request: `'#ERROR'` with a `ValueError` naming the reason, then close and log.
pub(super) fn refused(reason: String) -> (Reply, Outcome) {
    let reason = format!("{}{reason}", wire::REFUSAL_PREFIX);
    (("#ERROR", value_error(&reason)), Outcome::Refused(reason))
}

/// `builtins.ValueError(message)`: every CPython client can unpickle it (PROTOCOL.md §5.3).
pub(super) fn value_error(message: &str) -> PyValue {
    PyException::value_error(message).to_value()
}

/// The first Python object (a global, or one built from a global) inside `value`, named.
fn first_object(value: &PyValue) -> Option<String> {
    match value {
        PyValue::Global { module, name } => Some(format!("{module}.{name}")),
        PyValue::Reduce { callable: of, .. } | PyValue::Object { class: of, .. } => {
            Some(first_object(of).unwrap_or_else(|| "(unnamed)".into()))
        }
        PyValue::Tuple(items)
        | PyValue::List(items)
        | PyValue::Set(items)
        | PyValue::FrozenSet(items) => items.iter().find_map(first_object),
        PyValue::Dict(pairs) => pairs
            .iter()
            .find_map(|(k, v)| first_object(k).or_else(|| first_object(v))),
        _ => None,
    }
}

/// Why a control request whose arguments must be plain data carries a Python object
/// (`create` and `get_methods` may carry objects: constructor arguments, a `Token`).
pub(super) fn not_plain(
    method: &str,
    args: &[PyValue],
    kwargs: &[(String, PyValue)],
) -> Option<String> {
    if matches!(method, "create" | "get_methods") {
        return None;
    }
    let found = args
        .iter()
        .chain(kwargs.iter().map(|(_, v)| v))
        .find_map(first_object)?;
    Some(format!(
        "pickle global {found} in the arguments of {method:?}, where plain data is expected"
    ))
}

/// Splits `(ident, methodname, args, kwds)`; the error is the reason to refuse it.
pub(super) fn parse_request(request: PyValue) -> Result<Request, String> {
    let bad = |part: &PyValue| match first_object(part) {
        Some(found) => {
            format!("pickle global {found} in the request envelope, where plain data is expected")
        }
        None => "a request must be (ident, methodname, args, kwds)".to_string(),
    };
    let PyValue::Tuple(items) = request else {
        return Err(bad(&request));
    };
    let [ident, method, args, kwds]: [PyValue; 4] = match items.try_into() {
        Ok(parts) => parts,
        Err(items) => return Err(bad(&PyValue::Tuple(items))),
    };
    let ident = match ident {
        PyValue::None => None,
        PyValue::Str(s) => Some(s),
        other => return Err(bad(&other)),
    };
    let PyValue::Str(method) = method else {
        return Err(bad(&method));
    };
    let PyValue::Tuple(args) = args else {
        return Err(bad(&args));
    };
    let PyValue::Dict(kwds) = kwds else {
        return Err(bad(&kwds));
    };
    let kwargs = kwds
        .into_iter()
        .map(|(k, v)| match k {
            PyValue::Str(k) => Ok((k, v)),
            other => Err(bad(&other)),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((ident, method, args, kwargs))
}
