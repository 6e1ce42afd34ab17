//! The table of served objects: each object by ident with its typeid, exposed methods and
//! reference count (CPython's `id_to_obj` and `id_to_refcount`), the objects kept for
//! proxies stored inside served objects, and the pickled `Token` naming an object.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, MutexGuard};

use super::Inner;
use crate::managers::served::Referent;
use crate::pickle::PyValue;

/// The served objects by ident. std's SipHash: FNV-1a saved ~5 ns a lookup, under 0.2 % of a
/// 5 µs proxy call, not worth a hasher of our own.
pub(super) type Objects = HashMap<String, ServedObject>;

/// One served object in the table: what CPython's `Server` keeps in `id_to_obj` and
/// `id_to_refcount` for an ident.
#[derive(Clone)]
pub(super) struct ServedObject {
    pub(super) object: Arc<dyn Referent>,
    pub(super) typeid: String,
    /// The object's exposed methods, those of its `method_to_typeid` included.
    pub(super) exposed: Vec<String>,
    /// Methods returning a new shared object, and its typeid.
    pub(super) method_to_typeid: Vec<(String, String)>,
    pub(super) refcount: usize,
}

impl Inner {
    pub(super) fn objects(&self) -> MutexGuard<'_, Objects> {
        self.objects.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps alive the objects of this server whose proxies travel inside `args`/`kwargs`
    /// (pickled as `RebuildProxy(func, Token, serializer, kwds)`).
    pub(super) fn hold_stored_proxies(&self, args: &[PyValue], kwargs: &[(String, PyValue)]) {
        let mut idents = Vec::new();
        for value in args.iter().chain(kwargs.iter().map(|(_, v)| v)) {
            proxy_idents(value, &mut idents);
        }
        if idents.is_empty() {
            return;
        }
        let objects = self.objects();
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        for ident in idents {
            if let Some(entry) = objects.get(&ident) {
                held.entry(ident).or_insert_with(|| entry.clone());
            }
        }
    }

    /// Holds `object` under `typeid` with one more reference (for the caller's proxy), as
    /// CPython's `Server.create` does; gives its ident and exposed methods.
    pub(super) fn adopt(&self, object: Arc<dyn Referent>, typeid: String) -> (String, PyValue) {
        let ident = format!("{:x}", Arc::as_ptr(&object) as *const () as usize);
        let mut objects = self.objects();
        let entry = objects.entry(ident.clone()).or_insert_with(|| {
            let method_to_typeid = object.method_to_typeid();
            let mut exposed = object.exposed();
            for (method, _) in &method_to_typeid {
                if !exposed.contains(method) {
                    exposed.push(method.clone());
                }
            }
            ServedObject {
                exposed,
                method_to_typeid,
                object,
                typeid,
                refcount: 0,
            }
        });
        entry.refcount += 1;
        let exposed = exposed_tuple(&entry.exposed);
        (ident, exposed)
    }
}

pub(super) fn key_error(key: &str) -> String {
    format!("KeyError: {key:?}\n")
}

pub(super) fn exposed_tuple(exposed: &[String]) -> PyValue {
    PyValue::Tuple(exposed.iter().map(|s| PyValue::Str(s.clone())).collect())
}

/// A pickled `multiprocessing.managers.Token(typeid, address, ident)` (PROTOCOL.md §6.4): a
/// `NEWOBJ` of the class with no arguments and the state tuple `(typeid, (host, port), ident)`.
pub(super) fn token_value(typeid: &str, address: SocketAddr, ident: &str) -> PyValue {
    PyValue::Object {
        class: Box::new(PyValue::global("multiprocessing.managers", "Token")),
        args: Box::new(PyValue::Tuple(Vec::new())),
        kwargs: None,
        state: Some(Box::new(PyValue::Tuple(vec![
            PyValue::Str(typeid.to_string()),
            PyValue::Tuple(vec![
                PyValue::Str(address.ip().to_string()),
                PyValue::Int(address.port().into()),
            ]),
            PyValue::Str(ident.to_string()),
        ]))),
    }
}

/// Collects the idents of the proxies pickled inside `value`: CPython pickles a proxy as
/// `RebuildProxy(func, Token, serializer, kwds)`.
fn proxy_idents(value: &PyValue, out: &mut Vec<String>) {
    match value {
        PyValue::Reduce { callable, args, .. } => {
            if callable.as_ref() == &PyValue::global("multiprocessing.managers", "RebuildProxy") {
                if let PyValue::Tuple(items) = args.as_ref() {
                    if let Some(ident) = items.get(1).and_then(token_ident) {
                        out.push(ident);
                        return;
                    }
                }
            }
            proxy_idents(args, out);
        }
        PyValue::Tuple(items)
        | PyValue::List(items)
        | PyValue::Set(items)
        | PyValue::FrozenSet(items) => items.iter().for_each(|v| proxy_idents(v, out)),
        PyValue::Dict(pairs) => pairs.iter().for_each(|(k, v)| {
            proxy_idents(k, out);
            proxy_idents(v, out);
        }),
        PyValue::Object { args, state, .. } => {
            proxy_idents(args, out);
            if let Some(state) = state {
                proxy_idents(state, out);
            }
        }
        _ => {}
    }
}

/// The ident inside a pickled `Token` (PROTOCOL.md §6.4): its state is
/// `(typeid, address, ident)`.
pub(super) fn token_ident(token: &PyValue) -> Option<String> {
    match token {
        PyValue::Object {
            state: Some(state), ..
        }
        | PyValue::Reduce {
            state: Some(state), ..
        } => match &**state {
            PyValue::Tuple(items) => items.get(2).and_then(PyValue::as_str).map(str::to_string),
            _ => None,
        },
        _ => None,
    }
}
