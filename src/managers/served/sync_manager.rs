//! The typeids CPython's `SyncManager` serves, registered on a [`ManagerServer`]: each
//! factory binds `create`'s constructor arguments as the Python constructor would.

use std::sync::Arc;

use super::python::{bind_arguments, sequence, PyException};
use super::{
    ServedArray, ServedBarrier, ServedCondition, ServedDict, ServedEvent, ServedList, ServedLock,
    ServedNamespace, ServedSemaphore, ServedValue,
};
use crate::managers::{ManagerServer, Referent};
use crate::pickle::PyValue;

/// Registers what CPython's `SyncManager` serves under the same typeids: `Event`, `Lock`,
/// `RLock`, `Semaphore(value=1)`, `BoundedSemaphore(value=1)`, `Condition()` and
/// `Barrier(parties, timeout=None)`.
pub(crate) fn register_sync_types(server: &mut ManagerServer) {
    server.register("Event", || Arc::new(ServedEvent::default()));
    server.register("Lock", || Arc::new(ServedLock::new()));
    server.register("RLock", || Arc::new(ServedLock::reentrant()));
    server.register_with_args("Semaphore", |args, kwargs| {
        let value = ServedSemaphore::initial("Semaphore", args, kwargs)?;
        Ok(Arc::new(ServedSemaphore::new(value)))
    });
    server.register_with_args("BoundedSemaphore", |args, kwargs| {
        let value = ServedSemaphore::initial("BoundedSemaphore", args, kwargs)?;
        Ok(Arc::new(ServedSemaphore::bounded(value)))
    });
    server.register_with_args("Condition", |args, kwargs| {
        bind_arguments("Condition", args, kwargs, &[])
            .map_err(|_| PyException::type_error("a served Condition takes no lock argument"))?;
        Ok(Arc::new(ServedCondition::default()))
    });
    server.register_with_args("Barrier", |args, kwargs| {
        Ok(Arc::new(ServedBarrier::from_args(args, kwargs)?))
    });
}

/// Registers what CPython's `SyncManager` serves under the same typeids: `list(sequence=())`,
/// `dict(mapping=(), **kwargs)`, `Namespace()`, `Value(typecode, value, lock=True)` and
/// `Array(typecode, sequence, lock=True)`.
pub(crate) fn register_containers(server: &mut ManagerServer) {
    server.register_with_args("list", |args, kwargs| {
        let seq = bind_arguments(
            "list",
            args,
            kwargs,
            &[("sequence", Some(PyValue::Tuple(vec![])))],
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
        let mut bound = bind_arguments(
            "Value",
            args,
            kwargs,
            &[
                ("typecode", None),
                ("value", None),
                ("lock", Some(PyValue::Bool(true))),
            ],
        )?;
        bound.pop();
        let value = bound.pop().unwrap_or(PyValue::None);
        let typecode = match &bound[0] {
            PyValue::Str(t) => t.clone(),
            _ => return Err(PyException::type_error("typecode must be a str")),
        };
        Ok(Arc::new(ServedValue::new(&typecode, value)))
    });
    server.register_with_args("Array", |args, kwargs| {
        let mut bound = bind_arguments(
            "Array",
            args,
            kwargs,
            &[
                ("typecode", None),
                ("sequence", None),
                ("lock", Some(PyValue::Bool(true))),
            ],
        )?;
        bound.pop();
        let seq = sequence(bound.pop().unwrap_or(PyValue::None))?;
        let typecode = match &bound[0] {
            PyValue::Str(t) => t.clone(),
            _ => return Err(PyException::type_error("typecode must be a str")),
        };
        Ok(Arc::new(ServedArray::new(&typecode, seq)?))
    });
}
