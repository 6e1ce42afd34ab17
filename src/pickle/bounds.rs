//! Memory bounds of both decoders, measured with the counting allocator (issue 12, item 2):
//! hostile pickles of opcodes that each make a value, copy a reference or claim a length,
//! through every entry point the managers use — [`loads_with`] (server and client, whole
//! frames), [`fast::loads_items`] (the bodies of requests and `#RETURN` replies), and each
//! decoder on its own.

use super::counting::peak_growth;
use super::decode::{loads_full, loads_with, Limits};
use super::{fast, PickleError, PyValue};

/// `PROTO 4`, then `body` (no `STOP`: a hostile frame need not end well).
fn framed(body: &[u8]) -> Vec<u8> {
    [&b"\x80\x04"[..], body].concat()
}

/// `pattern` repeated to `len` bytes after `head`.
fn soup(head: &[u8], pattern: &[u8], len: usize) -> Vec<u8> {
    let mut body = head.to_vec();
    while body.len() + pattern.len() <= len {
        body.extend_from_slice(pattern);
    }
    body
}

/// Hostile bodies of about `len` bytes, each named; every one amplifies without a budget.
fn hostile(len: usize) -> Vec<(&'static str, Vec<u8>)> {
    let mut bomb = b"](K\x00".to_vec(); // [0]*10, then nine levels of ten references each
    bomb.extend([b'K', 0].repeat(9));
    bomb.extend(b"eq\x00");
    for level in 1..=9u8 {
        bomb.extend(b"](");
        for _ in 0..10 {
            bomb.extend([b'h', level - 1]);
        }
        bomb.extend([b'e', b'q', level]);
    }
    vec![
        ("EMPTY_LIST", soup(b"", b"]", len)),
        ("EMPTY_DICT", soup(b"", b"}", len)),
        ("EMPTY_TUPLE", soup(b"", b")", len)),
        ("EMPTY_SET", soup(b"", b"\x8f", len)),
        ("MARK", soup(b"", b"(", len)),
        ("NONE", soup(b"", b"N", len)),
        ("MARK TUPLE", soup(b"", b"(t", len)),
        ("MEMOIZE", soup(b"N", b"\x94", len)),
        ("EMPTY_LIST MEMOIZE", soup(b"", b"]\x94", len)),
        ("BINPUT", soup(b"N", b"q\x07", len)),
        ("LONG_BINPUT", soup(b"N", b"r\x07\x00\x00\x00", len)),
        ("BINGET", soup(b"N\x94", b"h\x00", len)),
        ("BINGET in a tuple", soup(b"]\x94(", b"h\x00", len)),
        ("DUP", soup(b"N", b"2", len)),
        ("APPEND", soup(b"]", b"Na", len)),
        ("APPENDS", soup(b"](", b"N", len)),
        ("SETITEM", soup(b"}", b"NNs", len)),
        ("SETITEMS", soup(b"}(", b"K\x01K\x02", len)),
        ("ADDITEMS", soup(b"\x8f(", b"N", len)),
        ("TUPLE1", soup(b"N", b"\x85", len)),
        ("TUPLE3", soup(b"N", b"NN\x87", len)),
        ("SHORT_BINUNICODE", soup(b"", b"\x8c\x01a", len)),
        ("SHORT_BINBYTES", soup(b"", b"C\x01a", len)),
        ("LONG1", soup(b"", &[&[0x8a, 9][..], &[1; 9]].concat(), len)),
        (
            "LONG1 of 255 bytes",
            soup(b"", &[&[0x8a, 255][..], &[1; 255]].concat(), len),
        ),
        (
            "FRAME",
            soup(b"N", b"\x95\x00\x00\x00\x00\x00\x00\x00\x00", len),
        ),
        ("STACK_GLOBAL", soup(b"", b"\x8c\x01m\x8c\x01n\x93", len)),
        ("REDUCE", soup(b"N", b")R", len)),
        ("reference bomb", soup(&bomb, b"h\x09", len)),
        (
            "BINUNICODE8 past the end",
            soup(b"\x8d\xff\xff\xff\xff\xff\xff\xff\x7f", b"a", len),
        ),
        (
            "BINBYTES past the end",
            soup(b"B\xff\xff\xff\xff", b"a", len),
        ),
        (
            "LONG4 past the end",
            soup(b"\x8b\xff\xff\xff\x7f", b"a", len),
        ),
    ]
}

/// Every way the managers decode `body`: whole (as a frame, with and without `STOP`) through
/// both decoders and `loads_with`, and bare as the items of a request or reply.
fn decodes(body: &[u8], limits: &Limits) -> Vec<(&'static str, Vec<u8>, usize, Outcome)> {
    let mut out = Vec::new();
    for (stop, input) in [
        (false, framed(body)),
        (true, [&framed(body)[..], b"."].concat()),
    ] {
        let len = input.len();
        let (r, peak) = peak_growth(|| Outcome::of(loads_with(&input, limits)));
        out.push((
            if stop { "loads_with ." } else { "loads_with" },
            input.clone(),
            peak,
            r,
        ));
        let (r, peak) = peak_growth(|| Outcome::of(loads_full(&input, limits)));
        out.push(("loads_full", input.clone(), peak, r));
        let (r, peak) = peak_growth(|| Outcome::of_fast(fast::loads(&input, limits)));
        out.push(("fast::loads", input, peak, r));
        assert!(len > 0);
    }
    for n in [1, 2] {
        let (r, peak) = peak_growth(|| Outcome::of_fast(fast::loads_items(body, n, limits)));
        out.push(("fast::loads_items", body.to_vec(), peak, r));
    }
    out
}

/// What a decode gave, without keeping the value (the measurement includes it).
#[derive(Debug, PartialEq)]
enum Outcome {
    Value,
    GaveUp,
    Error(PickleError),
}

impl Outcome {
    fn of(r: Result<PyValue, PickleError>) -> Outcome {
        r.map_or_else(Outcome::Error, |_| Outcome::Value)
    }

    fn of_fast(r: Option<PyValue>) -> Outcome {
        r.map_or(Outcome::GaveUp, |_| Outcome::Value)
    }
}

/// Asserts every decode of `body` stayed within `memory_for` its input, and returns the
/// outcomes.
fn within_budget(name: &str, body: &[u8], limits: &Limits) -> Vec<Outcome> {
    decodes(body, limits)
        .into_iter()
        .map(|(how, input, peak, outcome)| {
            let budget = limits.memory_for(input.len());
            assert!(
                peak <= budget,
                "{name} via {how}: {peak} bytes for {} bytes of input (budget {budget}), {outcome:?}",
                input.len()
            );
            outcome
        })
        .collect()
}

/// The case: 15 MiB and 4 MiB frames of `EMPTY_LIST`, default limits, every entry
/// point: refused, and the decoder's peak allocation within 4x the frame (2x, by default).
#[test]
fn a_frame_of_empty_lists_stays_within_four_times_its_size() {
    let limits = Limits::default();
    for mib in [15, 4] {
        let body = soup(b"", b"]", mib << 20);
        for (how, input, peak, outcome) in decodes(&body, &limits) {
            assert!(
                peak <= 4 * input.len(),
                "{mib} MiB via {how}: peak {peak} bytes"
            );
            assert!(
                matches!(
                    outcome,
                    Outcome::GaveUp | Outcome::Error(PickleError::TooMuchMemory { .. })
                ),
                "{mib} MiB via {how}: {outcome:?}"
            );
        }
    }
}

/// Every amplifying opcode, with the floor lifted so the ratio binds: each decode stays within
/// 2x its input, and those that would amplify are refused by the memory limit (not by running
/// out of input first, which would prove nothing).
#[test]
fn every_amplifying_opcode_stays_within_the_budget() {
    let limits = Limits {
        min_memory: 0,
        ..Limits::default()
    };
    for (name, body) in hostile(256 << 10) {
        let outcomes = within_budget(name, &body, &limits);
        let amplifies = !matches!(
            name,
            "FRAME"
                | "LONG1 of 255 bytes"
                | "BINPUT"
                | "LONG_BINPUT"
                | "BINUNICODE8 past the end"
                | "BINBYTES past the end"
                | "LONG4 past the end"
        );
        // Nesting opcodes may break the depth limit first; either way a limit, not the end.
        let refused = outcomes.iter().any(|o| {
            matches!(
                o,
                Outcome::Error(PickleError::TooMuchMemory { .. } | PickleError::TooDeep { .. })
            )
        });
        assert_eq!(refused, amplifies, "{name}: {outcomes:?}");
    }
}

/// With default limits (the 10 MiB floor) the same inputs at 1 MiB also stay within budget.
#[test]
fn hostile_pickles_stay_within_the_default_budget() {
    for (name, body) in hostile(1 << 20) {
        within_budget(name, &body, &Limits::default());
    }
}

/// The exponential shared-reference bomb: refused by memory, or by nodes with memory lifted.
#[test]
fn reference_bombs_break_a_named_limit() {
    let (_, body) = hostile(0)
        .into_iter()
        .find(|(name, _)| *name == "reference bomb")
        .expect("the bomb is in the list");
    let input = [&framed(&body)[..], b"."].concat();
    assert!(matches!(
        loads_with(&input, &Limits::default()),
        Err(PickleError::TooMuchMemory { limit }) if limit == 10 << 20
    ));
    let roomy = Limits {
        max_memory: usize::MAX,
        min_memory: 1 << 30,
        ..Limits::default()
    };
    assert_eq!(
        loads_with(&input, &roomy),
        Err(PickleError::TooLarge { limit: 1 << 20 })
    );
}

/// Plain data still decodes within budget: a long list (in `APPENDS` batches, so the stack
/// holds one batch at a time), a long dict, a long string. The single pass, which takes plain
/// data on the managers' hot path, holds about 1.5 times the value (a growing buffer and its
/// copy); the full decoder holds its arena beside the value, about 2.5 times.
#[test]
fn plain_data_decodes_within_the_budget() {
    let limits = Limits::default();
    for (n, single_pass_only) in [(100_000, true), (40_000, false)] {
        let list = PyValue::List((0..n).map(PyValue::Int).collect());
        let dict = PyValue::Dict(
            (0..n / 3)
                .map(|i| (PyValue::Int(i), PyValue::None))
                .collect(),
        );
        let text = PyValue::Str("x".repeat(n as usize * 50));
        for value in [list, dict, text] {
            plain_value_within_budget(&value, &limits, single_pass_only);
        }
    }
}

fn plain_value_within_budget(value: &PyValue, limits: &Limits, single_pass_only: bool) {
    let bytes = super::dumps(value);
    let budget = limits.memory_for(bytes.len());
    let (fast, peak) = peak_growth(|| fast::loads(&bytes, limits));
    assert!(fast.as_ref() == Some(value), "the single pass gave up");
    assert!(peak <= budget, "single pass: {peak} > {budget}");
    if !single_pass_only {
        let (full, peak) = peak_growth(|| loads_full(&bytes, limits));
        assert!(full.as_ref() == Ok(value), "{:?}", full.err());
        assert!(peak <= budget, "full: {peak} > {budget}");
    }
}

mod properties {
    //! Property tests: opcode soups (every opcode the decoders read, with arguments, in any
    //! order) stay within budget in each decoder, whatever they decode to.

    use proptest::prelude::*;

    use super::*;

    /// One opcode with its argument.
    fn token() -> impl Strategy<Value = &'static [u8]> {
        prop::sample::select(vec![
            &b"]"[..],
            b"}",
            b")",
            b"(",
            b"N",
            b"\x88",
            b"\x94",
            b"h\x00",
            b"h\x01",
            b"q\x00",
            b"j\x00\x00\x00\x00",
            b"2",
            b"0",
            b"1",
            b"a",
            b"e",
            b"s",
            b"u",
            b"t",
            b"\x85",
            b"\x86",
            b"\x87",
            b"\x8f",
            b"\x90",
            b"\x91",
            b"K\x01",
            b"M\x01\x02",
            b"J\x01\x02\x03\x04",
            b"G\x3f\xf0\x00\x00\x00\x00\x00\x00",
            b"\x8c\x01a",
            b"X\x02\x00\x00\x00bc",
            b"C\x01b",
            b"\x8a\x02\x01\x01",
            b"\x8b\x01\x00\x00\x00\x01",
            b"\x95\x00\x00\x00\x00\x00\x00\x00\x00",
            b"\x8c\x01m\x8c\x01n\x93",
            b"R",
            b"\x81",
            b"\x92",
            b"b",
            b".",
        ])
    }

    fn soup() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(token(), 0..400).prop_map(|tokens| tokens.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn opcode_soups_stay_within_budget(body in soup(), per_byte in 1usize..4, stop in any::<bool>()) {
            let limits = Limits { min_memory: 0, memory_per_byte: per_byte, ..Limits::default() };
            let mut input = framed(&body);
            if stop {
                input.push(b'.');
            }
            let budget = limits.memory_for(input.len());
            let (_, peak) = peak_growth(|| loads_full(&input, &limits));
            prop_assert!(peak <= budget, "full decoder: {} > {} {:?}", peak, budget, input);
            let (_, peak) = peak_growth(|| fast::loads(&input, &limits));
            prop_assert!(peak <= budget, "single pass: {} > {}", peak, budget);
            let (_, peak) = peak_growth(|| loads_with(&input, &limits));
            prop_assert!(peak <= budget, "loads_with: {} > {}", peak, budget);
            let budget = limits.memory_for(body.len());
            let (_, peak) = peak_growth(|| fast::loads_items(&body, 1, &limits));
            prop_assert!(peak <= budget, "bare items: {} > {}", peak, budget);
            let (_, peak) = peak_growth(|| fast::loads_items(&body, 2, &limits));
            prop_assert!(peak <= budget, "bare pair: {} > {}", peak, budget);
        }
    }
}

/// What CPython writes for a list holding a large `bytes` and the same `str` twice (a memo
/// get, so the full decoder reads it): the bytes are moved out of the arena, not copied, so
/// the decode fits in twice the input.
#[test]
fn full_decoder_moves_what_is_used_once() {
    let big = 8 << 20;
    let mut input = b"\x80\x04]\x94(\x8e".to_vec();
    input.extend_from_slice(&(big as u64).to_le_bytes());
    input.resize(input.len() + big, b'x');
    input.extend_from_slice(b"\x94\x8c\x01k\x94h\x02e.");
    let limits = Limits::default();
    assert!(
        fast::loads(&input, &limits).is_none(),
        "a memo get: the full decoder"
    );
    let (decoded, peak) = peak_growth(|| loads_with(&input, &limits));
    let expected = PyValue::List(vec![
        PyValue::Bytes(vec![b'x'; big]),
        PyValue::Str("k".into()),
        PyValue::Str("k".into()),
    ]);
    assert!(decoded.as_ref() == Ok(&expected), "{:?}", decoded.err());
    let budget = limits.memory_for(input.len());
    assert!(peak <= budget, "{peak} > {budget}");
    // The shared str is copied, the list and the bytes are moved: about one input's worth.
    assert!(peak < input.len() + (1 << 20), "{peak}");
}
