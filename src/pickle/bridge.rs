//! Between [`PyValue`] and Rust types, through serde (by way of serde-pickle's value type).

use num_bigint::BigInt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_pickle::{HashableValue, Value as Plain};

use super::value::{PickleError, PyValue};

/// Maps a Rust value to a [`PyValue`], as serde-pickle would pickle it: integers, floats, strings,
/// `None` for `None`/`()`, lists for sequences, tuples for tuples, dicts for maps and structs,
/// `bytes` for [`ByteBuf`](crate::ByteBuf) / `serde_bytes`.
///
/// # Errors
///
/// [`PickleError::Serde`] when the type's `Serialize` fails.
///
/// # Examples
///
/// ```
/// use multiproc::pickle::{to_value, PyValue};
/// assert_eq!(to_value(&Some(5u8)).unwrap(), PyValue::Int(5));
/// ```
pub fn to_value<T: Serialize + ?Sized>(value: &T) -> Result<PyValue, PickleError> {
    // Refuses ipc-channel endpoints, as every other path to another process does.
    let (plain, captured) =
        super::ipc_guard::serialize_watched(value, |w| serde_pickle::to_value(w));
    if let Some(captured) = captured {
        return Err(serde_error::<T>(captured.to_string()));
    }
    let plain = plain.map_err(|e| serde_error::<T>(e.to_string()))?;
    Ok(from_plain(plain))
}

/// Maps a [`PyValue`] to a Rust type through serde. The shapes older protocols use for sets,
/// `bytearray` and `bytes` are understood; any other global is refused.
///
/// # Errors
///
/// [`PickleError::Global`] for a class, function or object where plain data is expected;
/// [`PickleError::Serde`] when the data does not fit `T`.
///
/// # Examples
///
/// ```
/// use multiproc::pickle::{from_value, PyValue, PickleError};
/// let v = PyValue::List(vec![PyValue::Int(1), PyValue::Int(2)]);
/// assert_eq!(from_value::<Vec<u32>>(v).unwrap(), vec![1, 2]);
/// let g = PyValue::global("os", "system");
/// assert!(matches!(from_value::<u32>(g), Err(PickleError::Global { .. })));
/// ```
pub fn from_value<T: DeserializeOwned>(value: PyValue) -> Result<T, PickleError> {
    let plain = to_plain(value)?;
    serde_pickle::from_value(plain).map_err(|e| serde_error::<T>(e.to_string()))
}

fn serde_error<T: ?Sized>(reason: String) -> PickleError {
    PickleError::Serde {
        type_name: std::any::type_name::<T>(),
        reason,
    }
}

fn from_plain(plain: Plain) -> PyValue {
    match plain {
        Plain::None => PyValue::None,
        Plain::Bool(b) => PyValue::Bool(b),
        Plain::I64(i) => PyValue::Int(i),
        Plain::Int(big) => match i64::try_from(&big) {
            Ok(i) => PyValue::Int(i),
            Err(_) => PyValue::BigInt(big.to_signed_bytes_le()),
        },
        Plain::F64(f) => PyValue::Float(f),
        Plain::Bytes(b) => PyValue::Bytes(b),
        Plain::String(s) => PyValue::Str(s),
        Plain::List(items) => PyValue::List(items.into_iter().map(from_plain).collect()),
        Plain::Tuple(items) => PyValue::Tuple(items.into_iter().map(from_plain).collect()),
        Plain::Set(items) => PyValue::Set(items.into_iter().map(from_hashable).collect()),
        Plain::FrozenSet(items) => {
            PyValue::FrozenSet(items.into_iter().map(from_hashable).collect())
        }
        Plain::Dict(items) => PyValue::Dict(
            items
                .into_iter()
                .map(|(k, v)| (from_hashable(k), from_plain(v)))
                .collect(),
        ),
    }
}

fn from_hashable(h: HashableValue) -> PyValue {
    from_plain(h.into_value())
}

fn to_plain(value: PyValue) -> Result<Plain, PickleError> {
    Ok(match value {
        PyValue::None => Plain::None,
        PyValue::Bool(b) => Plain::Bool(b),
        PyValue::Int(i) => Plain::I64(i),
        PyValue::BigInt(bytes) => Plain::Int(BigInt::from_signed_bytes_le(&bytes)),
        PyValue::Float(f) => Plain::F64(f),
        PyValue::Str(s) => Plain::String(s),
        PyValue::Bytes(b) | PyValue::ByteArray(b) => Plain::Bytes(b),
        PyValue::Tuple(items) => Plain::Tuple(plain_items(items)?),
        PyValue::List(items) => Plain::List(plain_items(items)?),
        PyValue::Set(items) => Plain::Set(hashable_items(items)?),
        PyValue::FrozenSet(items) => Plain::FrozenSet(hashable_items(items)?),
        PyValue::Dict(items) => {
            let mut map = std::collections::BTreeMap::new();
            for (k, v) in items {
                map.insert(hashable(k)?, to_plain(v)?);
            }
            Plain::Dict(map)
        }
        other => return known_shape(other),
    })
}

/// The reductions CPython's older protocols use for plain types (PROTOCOL.md §4.3).
fn known_shape(value: PyValue) -> Result<Plain, PickleError> {
    let refused = |value: &PyValue| match value {
        PyValue::Global { module, name } => PickleError::Global {
            module: module.clone(),
            name: name.clone(),
        },
        _ => match value.class_name() {
            Some((module, name)) => PickleError::Global {
                module: module.to_string(),
                name: name.to_string(),
            },
            None => PickleError::Global {
                module: "?".into(),
                name: "?".into(),
            },
        },
    };
    let (module, name) = match value.class_name() {
        Some((m, n)) => (m.to_string(), n.to_string()),
        None => return Err(refused(&value)),
    };
    let PyValue::Reduce {
        args, state: None, ..
    } = &value
    else {
        return Err(refused(&value));
    };
    let args: Vec<Plain> = match &**args {
        PyValue::Tuple(args) => plain_items(args.clone())?,
        _ => return Err(refused(&value)),
    };
    let builtins = module == "builtins" || module == "__builtin__";
    match (builtins, module.as_str(), name.as_str(), &args[..]) {
        (true, _, "set", [Plain::List(items)]) => Ok(Plain::Set(hashable_plain(items.clone())?)),
        (true, _, "frozenset", [Plain::List(items)]) => {
            Ok(Plain::FrozenSet(hashable_plain(items.clone())?))
        }
        (true, _, "set", []) => Ok(Plain::Set(Default::default())),
        (true, _, "frozenset", []) => Ok(Plain::FrozenSet(Default::default())),
        (true, _, "bytearray" | "bytes", [Plain::Bytes(b)]) => Ok(Plain::Bytes(b.clone())),
        (true, _, "bytearray" | "bytes", []) => Ok(Plain::Bytes(Vec::new())),
        (false, "_codecs", "encode", [Plain::String(s), Plain::String(codec)])
        | (true, _, "bytearray", [Plain::String(s), Plain::String(codec)])
            if codec == "latin1" || codec == "latin-1" =>
        {
            s.chars()
                .map(|c| u8::try_from(u32::from(c)).map_err(|_| refused(&value)))
                .collect::<Result<Vec<u8>, _>>()
                .map(Plain::Bytes)
        }
        _ => Err(refused(&value)),
    }
}

fn hashable_plain(
    items: Vec<Plain>,
) -> Result<std::collections::BTreeSet<HashableValue>, PickleError> {
    items
        .into_iter()
        .map(|p| {
            p.into_hashable()
                .map_err(|e| serde_error::<HashableValue>(e.to_string()))
        })
        .collect()
}

fn plain_items(items: Vec<PyValue>) -> Result<Vec<Plain>, PickleError> {
    items.into_iter().map(to_plain).collect()
}

fn hashable(value: PyValue) -> Result<HashableValue, PickleError> {
    to_plain(value)?
        .into_hashable()
        .map_err(|e| serde_error::<HashableValue>(e.to_string()))
}

fn hashable_items(
    items: Vec<PyValue>,
) -> Result<std::collections::BTreeSet<HashableValue>, PickleError> {
    items.into_iter().map(hashable).collect()
}
