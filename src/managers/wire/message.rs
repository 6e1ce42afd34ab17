//! The shapes of the managers' messages as pickles (PROTOCOL.md §5): a request
//! `(ident, methodname, args, kwds)` and a reply `(kind, payload)`, written without building
//! the tuple around them, and taken apart again without decoding it when they are the common
//! form this crate writes.
//!
//! Both directions stand on the pickle layer's primitives: the encoder's `write_*` functions,
//! the bounds-checked [`Cursor`], the opcode table, and the single pass over a tuple's last
//! items ([`pickle::loads_items`]). Anything not in the expected form is left to the full
//! decoder by the caller, so every error still comes from it.

use crate::pickle::cursor::Cursor;
use crate::pickle::opcodes::{
    BINUNICODE, EMPTY_DICT, MARK, NONE, PROTO, SETITEMS, STOP, TUPLE, TUPLE2,
};
use crate::pickle::{self, write_str, write_tuple, write_value, Limits, PyValue, BATCH};

/// A request `(ident, methodname, args, kwds)` (PROTOCOL.md §5.1), taken apart.
pub(crate) type Request = (Option<String>, String, Vec<PyValue>, Vec<(String, PyValue)>);

/// How a request and a reply open: protocol 3, as [`pickle::dumps_into`] writes.
const HEADER: [u8; 2] = [PROTO, 3];

/// Pickles the request `(ident, method, tuple(args), dict(kwargs))` (PROTOCOL.md §5.1),
/// appending to `out`: the bytes [`pickle::dumps_into`] writes for that tuple, without building
/// it.
pub(crate) fn request_into(
    ident: Option<&str>,
    method: &str,
    args: &[PyValue],
    kwargs: &[(String, PyValue)],
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(&HEADER);
    out.push(MARK);
    match ident {
        Some(ident) => write_str(ident, out),
        None => out.push(NONE),
    }
    write_str(method, out);
    write_tuple(args, out);
    // A dict of `str` keys, as `write_value` writes `PyValue::Dict` (batched `SETITEMS`), without
    // building the keys as values.
    out.push(EMPTY_DICT);
    for batch in kwargs.chunks(BATCH) {
        out.push(MARK);
        for (k, v) in batch {
            write_str(k, out);
            write_value(v, out);
        }
        out.push(SETITEMS);
    }
    out.extend_from_slice(&[TUPLE, STOP]);
}

/// Pickles the reply `(kind, payload)` (PROTOCOL.md §5.2), appending to `out`.
pub(crate) fn reply_into(kind: &str, payload: &PyValue, out: &mut Vec<u8>) {
    out.extend_from_slice(&HEADER);
    write_str(kind, out);
    write_value(payload, out);
    out.extend_from_slice(&[TUPLE2, STOP]);
}

/// Whether the next bytes are `expected`, consuming them if so.
fn expect(cur: &mut Cursor<'_>, expected: &[u8]) -> Option<()> {
    (cur.take(expected.len())? == expected).then_some(())
}

/// A `BINUNICODE` string, as [`write_str`] writes one under 4 GiB.
fn text<'a>(cur: &mut Cursor<'a>) -> Option<&'a str> {
    expect(cur, &[BINUNICODE])?;
    std::str::from_utf8(cur.sized(4)?).ok()
}

/// The opcodes left before the closing `suffix` (the tuple's last items), if the input ends so.
fn body_before<'a>(cur: &Cursor<'a>, suffix: &[u8]) -> Option<&'a [u8]> {
    cur.rest().strip_suffix(suffix)
}

/// The value of a reply `('#RETURN', value)` as [`reply_into`] writes it with plain data:
/// `PROTO 3`, `BINUNICODE '#RETURN'`, the value, `TUPLE2 STOP`. `None` for anything else (the
/// caller decodes it whole).
pub(crate) fn split_return(payload: &[u8], limits: &Limits) -> Option<PyValue> {
    let mut cur = Cursor::new(payload);
    expect(&mut cur, &HEADER)?;
    if text(&mut cur)? != "#RETURN" {
        return None;
    }
    pickle::loads_items(body_before(&cur, &[TUPLE2, STOP])?, 1, limits)
}

/// Takes apart a request as [`request_into`] writes it: `PROTO 3`, `MARK`, the ident
/// (`BINUNICODE` or `NONE`), the method (`BINUNICODE`), then args and kwargs, `TUPLE`,
/// `STOP`. `None` for anything else (the caller decodes it whole). The ident and method reuse
/// the strings in `spare` when there are any.
pub(crate) fn split_request(
    payload: &[u8],
    limits: &Limits,
    spare: &mut Vec<String>,
) -> Option<Request> {
    let mut cur = Cursor::new(payload);
    expect(&mut cur, &HEADER)?;
    expect(&mut cur, &[MARK])?;
    let ident = match cur.peek()? {
        NONE => {
            cur.u8()?;
            None
        }
        _ => Some(text(&mut cur)?),
    };
    let method = text(&mut cur)?;
    let body = body_before(&cur, &[TUPLE, STOP])?;
    let mut owned = |text: &str| {
        let mut s = spare.pop().unwrap_or_default();
        s.clear();
        s.push_str(text);
        s
    };
    let (ident, method) = (ident.map(&mut owned), owned(method));
    let PyValue::Tuple(pair) = pickle::loads_items(body, 2, limits)? else {
        return None;
    };
    let [args, kwargs]: [PyValue; 2] = pair.try_into().ok()?;
    let (PyValue::Tuple(args), PyValue::Dict(kwargs)) = (args, kwargs) else {
        return None;
    };
    let kwargs = kwargs
        .into_iter()
        .map(|(k, v)| match k {
            PyValue::Str(k) => Some((k, v)),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()?;
    Some((ident, method, args, kwargs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> PyValue {
        PyValue::Str(text.into())
    }

    #[test]
    fn requests_and_replies_encode_as_their_tuples() {
        let args = [vec![], vec![PyValue::Int(1)], vec![PyValue::None; 5]];
        let many: Vec<(String, PyValue)> = (0..1001)
            .map(|i| (format!("k{i}"), PyValue::Int(i)))
            .collect();
        let kwargs = [
            vec![],
            vec![("timeout".to_string(), PyValue::Float(0.5))],
            many,
        ];
        for ident in [None, Some("7f")] {
            for a in &args {
                for k in &kwargs {
                    let tuple = PyValue::Tuple(vec![
                        ident.map_or(PyValue::None, s),
                        s("get"),
                        PyValue::Tuple(a.clone()),
                        PyValue::Dict(k.iter().map(|(k, v)| (s(k), v.clone())).collect()),
                    ]);
                    let mut out = Vec::new();
                    request_into(ident, "get", a, k, &mut out);
                    assert_eq!(out, pickle::dumps(&tuple));
                }
            }
        }
        let mut out = Vec::new();
        reply_into("#RETURN", &PyValue::Int(42), &mut out);
        assert_eq!(
            out,
            pickle::dumps(&PyValue::Tuple(vec![s("#RETURN"), PyValue::Int(42)]))
        );
    }

    #[test]
    fn returns_split_as_their_tuples_decode() {
        let limits = Limits::default();
        let value = PyValue::List(vec![PyValue::Int(1), s("x")]);
        let mut out = Vec::new();
        reply_into("#RETURN", &value, &mut out);
        assert_eq!(split_return(&out, &limits), Some(value.clone()));
        let mut error = Vec::new();
        reply_into("#ERROR", &value, &mut error);
        assert_eq!(split_return(&error, &limits), None, "not a return");
        assert_eq!(split_return(&out[..out.len() - 1], &limits), None);
        assert_eq!(split_return(b"", &limits), None);
    }

    #[test]
    fn requests_split_as_their_tuples_decode() {
        let limits = Limits::default();
        type Case<'a> = (
            Option<&'a str>,
            &'a str,
            Vec<PyValue>,
            Vec<(String, PyValue)>,
        );
        let cases: Vec<Case> = vec![
            (None, "dummy", vec![], vec![]),
            (Some("7f"), "qsize", vec![], vec![]),
            (Some("7f"), "put", vec![PyValue::Int(42)], vec![]),
            (
                Some("7f"),
                "get",
                vec![],
                vec![("timeout".into(), PyValue::Float(0.5))],
            ),
            (
                Some("h\u{e9}"),
                "put",
                vec![
                    PyValue::List(vec![PyValue::None; 5]),
                    s("x"),
                    PyValue::Bytes(vec![1]),
                ],
                vec![("block".into(), PyValue::Bool(false))],
            ),
        ];
        for (ident, method, args, kwargs) in cases {
            let mut frame = Vec::new();
            request_into(ident, method, &args, &kwargs, &mut frame);
            let split = split_request(&frame, &limits, &mut Vec::new()).expect("split");
            assert_eq!(
                split,
                (
                    ident.map(str::to_string),
                    method.to_string(),
                    args.clone(),
                    kwargs.clone()
                )
            );
        }
        // Anything else is left to the full decoder.
        let cpython = b"\x80\x04\x95\x1f\x00\x00\x00\x00\x00\x00\x00(\x8c\x0c7fd0e34c5be0\x94\x8c\x03put\x94K*\x85\x94}\x94t\x94.";
        let spare = &mut Vec::new();
        assert!(split_request(cpython, &limits, spare).is_none());
        let mut frame = Vec::new();
        request_into(
            Some("7f"),
            "put",
            &[PyValue::global("os", "system")],
            &[],
            &mut frame,
        );
        assert!(
            split_request(&frame, &limits, spare).is_none(),
            "globals are not plain data"
        );
        assert!(split_request(&frame[..frame.len() - 1], &limits, spare).is_none());
        assert!(split_request(b"", &limits, spare).is_none());
    }
}
