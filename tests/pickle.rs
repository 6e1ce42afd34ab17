//! Tests for the managers' pickle codec: CPython's frames, the protocol 3 encoder, inert
//! globals, limits, and a fuzz-style run over random and mutated input.

use multiproc::pickle::{self, Limits, PickleError, PyValue};

// The same counting allocator as the crate's own unit tests use.
#[path = "../src/pickle/counting.rs"]
mod counting;

#[global_allocator]
static COUNTING: counting::Counting = counting::Counting;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn s(text: &str) -> PyValue {
    PyValue::Str(text.into())
}

fn tuple(items: Vec<PyValue>) -> PyValue {
    PyValue::Tuple(items)
}

#[test]
fn smoke() {
    let v = tuple(vec![
        PyValue::Int(1),
        s("x"),
        PyValue::Bytes(b"y".to_vec()),
        PyValue::None,
    ]);
    assert_eq!(pickle::loads(&pickle::dumps(&v)).unwrap(), v);
}

/// PROTOCOL.md Appendix A: frames CPython 3.11/3.13 wrote (protocol 4, framed, memoized).
#[test]
fn decodes_cpython_frames() {
    let cases = [
        (
            "8004951000000000000000284e8c0564756d6d7994297d9474942e",
            tuple(vec![PyValue::None, s("dummy"), tuple(vec![]), PyValue::Dict(vec![])]),
        ),
        (
            "8004952300000000000000284e8c06637265617465948c0e6765745f7461736b5f71756575659485947d9474942e",
            tuple(vec![
                PyValue::None,
                s("create"),
                tuple(vec![s("get_task_queue")]),
                PyValue::Dict(vec![]),
            ]),
        ),
        (
            "8004950f000000000000008c072352455455524e944b2a86942e",
            tuple(vec![s("#RETURN"), PyValue::Int(42)]),
        ),
        (
            "8004953000000000000000288c0c376664306533346335626530948c0367657494297d948c0774696d656f757494473fc999999999999a7374942e",
            tuple(vec![
                s("7fd0e34c5be0"),
                s("get"),
                tuple(vec![]),
                PyValue::Dict(vec![(s("timeout"), PyValue::Float(0.2))]),
            ]),
        ),
    ];
    for (bytes, expected) in cases {
        assert_eq!(pickle::loads(&hex(bytes)).unwrap(), expected, "{bytes}");
    }
}

/// PROTOCOL.md §5.3: exceptions arrive as inert reductions naming their class.
#[test]
fn decodes_exceptions_inertly() {
    let empty = pickle::loads(&hex(
        "80049522000000000000008c06234552524f52948c065f7175657565948c05456d70747994939429529486942e",
    ))
    .unwrap();
    let PyValue::Tuple(items) = empty else {
        panic!()
    };
    assert_eq!(items[0], s("#ERROR"));
    assert_eq!(items[1].class_name(), Some(("_queue", "Empty")));
    let full = pickle::loads(&hex(
        "80049520000000000000008c06234552524f52948c057175657565948c0446756c6c94939429529486942e",
    ))
    .unwrap();
    let PyValue::Tuple(items) = full else {
        panic!()
    };
    assert_eq!(items[1].class_name(), Some(("queue", "Full")));
}

/// PROTOCOL.md §6.4: a Token is NEWOBJ of the class plus a BUILD with a state tuple.
#[test]
fn decodes_a_token() {
    let body = hex(
        "8c 18 6d756c746970726f63657373696e672e6d616e6167657273 94 8c 05 546f6b656e 94 93 94
         29 81 94 8c 05 5175657565 94 8c 09 3132372e302e302e31 94 4d 44c5 86 94
         8c 0c 376662353932653235626530 94 87 94 62",
    );
    let mut bytes = vec![0x80, 0x04];
    bytes.extend(body);
    bytes.push(b'.');
    let token = pickle::loads(&bytes).unwrap();
    assert_eq!(
        token.class_name(),
        Some(("multiprocessing.managers", "Token"))
    );
    let PyValue::Object {
        state: Some(state), ..
    } = token
    else {
        panic!("{token:?}")
    };
    assert_eq!(
        *state,
        tuple(vec![
            s("Queue"),
            tuple(vec![s("127.0.0.1"), PyValue::Int(50500)]),
            s("7fb592e25be0")
        ])
    );
}

/// PROTOCOL.md Appendix A, the canonical protocol 3 frames multiproc emits.
#[test]
fn encodes_canonical_protocol_3() {
    let request = |ident: Option<&str>, method: &str, args, kwds| {
        tuple(vec![
            ident.map_or(PyValue::None, s),
            s(method),
            tuple(args),
            PyValue::Dict(kwds),
        ])
    };
    let exception = |module: &str, name: &str| PyValue::Reduce {
        callable: Box::new(PyValue::global(module, name)),
        args: Box::new(tuple(vec![])),
        state: None,
    };
    let cases = [
        (request(None, "dummy", vec![], vec![]), "8003284e580500000064756d6d79297d742e"),
        (
            request(None, "create", vec![s("get_task_queue")], vec![]),
            "8003284e5806000000637265617465580e0000006765745f7461736b5f7175657565857d742e",
        ),
        (
            request(Some("1a2b"), "put", vec![PyValue::Int(42)], vec![]),
            "80032858040000003161326258030000007075744b2a857d742e",
        ),
        (
            request(Some("1a2b"), "get", vec![], vec![(s("timeout"), PyValue::Float(10.0))]),
            "8003285804000000316132625803000000676574297d28580700000074696d656f757447402400000000000075742e",
        ),
        (tuple(vec![s("#RETURN"), PyValue::None]), "800358070000002352455455524e4e862e"),
        (
            tuple(vec![s("#ERROR"), exception("queue", "Empty")]),
            "80035806000000234552524f526371756575650a456d7074790a2952862e",
        ),
        (
            tuple(vec![s("#ERROR"), exception("queue", "Full")]),
            "80035806000000234552524f526371756575650a46756c6c0a2952862e",
        ),
        (
            tuple(vec![s("#TRACEBACK"), s("KeyError: x\n")]),
            "8003580a0000002354524143454241434b580c0000004b65794572726f723a20780a862e",
        ),
    ];
    for (value, bytes) in cases {
        assert_eq!(pickle::dumps(&value), hex(bytes), "{value:?}");
        assert_eq!(pickle::loads(&hex(bytes)).unwrap(), value);
    }
}

#[test]
fn integers_of_every_width_round_trip() {
    let mut values: Vec<i64> = vec![0, 1, 255, 256, 65535, 65536, -1, -5, -128, -129, -256];
    values.extend([
        i32::MAX as i64,
        i32::MIN as i64,
        1 << 31,
        -(1 << 31) - 1,
        1 << 40,
    ]);
    values.extend([i64::MAX, i64::MIN, (1 << 62) - 1]);
    for v in values {
        let back = pickle::loads(&pickle::dumps(&PyValue::Int(v))).unwrap();
        assert_eq!(back, PyValue::Int(v), "{v}");
    }
    // 2**70 and -2**70 as CPython's LONG1 writes them
    let big = pickle::loads(&hex("80048a09000000000000000040942e")).unwrap();
    assert_eq!(big, PyValue::BigInt(hex("000000000000000040")));
    assert_eq!(pickle::loads(&pickle::dumps(&big)).unwrap(), big);
    // Beyond 64 bits there is no Rust primitive to map to: a typed error, not a wrap-around.
    assert!(matches!(
        pickle::from_value::<i64>(big),
        Err(PickleError::Serde { .. })
    ));
    // u64 values above i64::MAX are written as Python ints.
    let v = pickle::to_value(&u64::MAX).unwrap();
    assert_eq!(
        v,
        PyValue::BigInt(vec![0xff; 8].into_iter().chain([0]).collect())
    );
    assert_eq!(pickle::loads(&pickle::dumps(&v)).unwrap(), v);
}

type Mixed = (
    u8,
    String,
    multiproc::ByteBuf,
    Option<i32>,
    f64,
    bool,
    Vec<i64>,
    std::collections::BTreeMap<String, u32>,
    std::collections::BTreeSet<i32>,
);

#[test]
fn serde_bridge_maps_plain_data() {
    use std::collections::{BTreeMap, BTreeSet};
    let value = (
        1u8,
        "h\u{e9}llo".to_string(),
        multiproc::ByteBuf::from(vec![0u8, 255]),
        None::<i32>,
        2.5f64,
        true,
        vec![1i64, -2],
        BTreeMap::from([("a".to_string(), 1u32)]),
        BTreeSet::from([3i32, 4]),
    );
    let v = pickle::to_value(&value).unwrap();
    let back = pickle::loads(&pickle::dumps(&v)).unwrap();
    let decoded: Mixed = pickle::from_value(back).unwrap();
    assert_eq!(decoded, value);
}

#[test]
fn protocol_2_shapes_map_to_plain_values() {
    // set([1]) as protocol 2 writes it: builtins.set applied to a list
    let set = PyValue::Reduce {
        callable: Box::new(PyValue::global("builtins", "set")),
        args: Box::new(tuple(vec![PyValue::List(vec![PyValue::Int(1)])])),
        state: None,
    };
    let got: std::collections::BTreeSet<i32> = pickle::from_value(set).unwrap();
    assert_eq!(got.into_iter().collect::<Vec<_>>(), vec![1]);
    // b'\xff' as protocol 2 writes it: _codecs.encode('\xff', 'latin1')
    let bytes = PyValue::Reduce {
        callable: Box::new(PyValue::global("_codecs", "encode")),
        args: Box::new(tuple(vec![s("\u{ff}"), s("latin1")])),
        state: None,
    };
    let got: multiproc::ByteBuf = pickle::from_value(bytes).unwrap();
    assert_eq!(got.as_slice(), &[0xff]);
}

/// A global where a plain value is expected is refused, never resolved: the classic
/// `os.system` payload stays data.
#[test]
fn globals_are_inert_and_refused_as_values() {
    // cos\nsystem\n(S'echo pwned'\ntR. in protocol 3 binary form
    let mut evil = b"\x80\x03cos\nsystem\nX\x0a\x00\x00\x00echo pwned\x85R.".to_vec();
    let v = pickle::loads(&evil).unwrap();
    assert_eq!(v.class_name(), Some(("os", "system")));
    let err = pickle::from_value::<String>(v.clone()).unwrap_err();
    assert!(
        matches!(err, PickleError::Global { ref module, ref name } if module == "os" && name == "system"),
        "{err}"
    );
    // Re-encoding keeps it unchanged, for carrying between Python peers.
    assert_eq!(pickle::loads(&pickle::dumps(&v)).unwrap(), v);
    evil.truncate(evil.len() - 1);
    assert!(matches!(
        pickle::loads(&evil),
        Err(PickleError::Truncated { .. })
    ));
}

#[test]
fn memo_shares_mutations_like_cpython() {
    // x = [1]; (x, x) as CPython writes it: EMPTY_LIST MEMOIZE, append, then BINGET 0.
    let bytes = hex("8004 95 00 00 00 00 00 00 00 00 5d 94 4b 01 61 68 00 86 94 2e");
    let v = pickle::loads(&bytes).unwrap();
    let one = PyValue::List(vec![PyValue::Int(1)]);
    assert_eq!(v, tuple(vec![one.clone(), one]));
}

#[test]
fn deep_nesting_is_refused() {
    let mut bytes = vec![0x80, 0x03];
    // 10 000 levels: 100 000 would break the memory limit (each list a node) before any
    // APPEND made them nest.
    bytes.extend(vec![b']'; 10_000]); // EMPTY_LIST
    bytes.extend(vec![b'a'; 9_999]); // APPEND
    bytes.push(b'.');
    assert!(matches!(
        pickle::loads(&bytes),
        Err(PickleError::TooDeep { limit: 256 })
    ));
    let limits = Limits {
        max_depth: 1_000_000,
        ..Limits::default()
    };
    // Even with the depth limit lifted by the caller, nothing overflows the stack beyond it;
    // 100 000 levels is what this test's thread can take only if materialization is bounded.
    let shallow: Vec<u8> = [&[0x80, 0x03, b']', b']', b'a'][..], b"."].concat();
    assert!(pickle::loads_with(&shallow, &limits).is_ok());
}

#[test]
fn shared_reference_bombs_are_refused() {
    // l0 = [0,0,...]; l1 = [l0]*10; l2 = [l1]*10 ... nine levels: 10^9 nodes if expanded.
    let mut bytes = vec![0x80, 0x03, b']', b'(', b'K', 0];
    bytes.extend([b'K', 0].repeat(9));
    bytes.extend([b'e', b'q', 0]);
    for level in 1..=9u8 {
        bytes.extend([b']', b'(']);
        for _ in 0..10 {
            bytes.extend([b'h', level - 1]);
        }
        bytes.extend([b'e', b'q', level]);
    }
    bytes.push(b'.');
    // The copies' memory breaks the limit first; with memory lifted, the node count does.
    assert!(matches!(
        pickle::loads(&bytes),
        Err(PickleError::TooMuchMemory { .. })
    ));
    let roomy = Limits {
        min_memory: 1 << 30,
        ..Limits::default()
    };
    assert!(matches!(
        pickle::loads_with(&bytes, &roomy),
        Err(PickleError::TooLarge { .. })
    ));
}

#[test]
fn lengths_beyond_the_input_are_refused_before_allocating() {
    for bytes in [
        &b"\x80\x04\x8d\xff\xff\xff\xff\xff\xff\xff\x7f"[..], // BINUNICODE8 of 2^63 bytes
        &b"\x80\x04\x8e\x00\x00\x00\x00\x01\x00\x00\x00"[..], // BINBYTES8 of 4 GiB
        &b"\x80\x03B\xff\xff\xff\xff"[..],                    // BINBYTES of 4 GiB
        &b"\x80\x03\x8b\xff\xff\xff\x7f"[..],                 // LONG4 of 2 GiB
    ] {
        assert!(
            matches!(pickle::loads(bytes), Err(PickleError::Truncated { .. })),
            "{bytes:?}"
        );
    }
    assert!(pickle::loads(b"\x80\x03\x8b\xff\xff\xff\xff").is_err()); // negative LONG4
}

#[test]
fn unsupported_opcodes_are_typed_errors() {
    for op in [
        b'I', b'L', b'F', b'S', b'V', b'P', b'Q', 0x82, 0x83, 0x84, 0x97, 0x98, b'd',
    ] {
        let bytes = [0x80, 0x03, op, b'.'];
        match pickle::loads(&bytes) {
            Err(PickleError::UnsupportedOpcode { opcode, offset: 2 }) => assert_eq!(opcode, op),
            other => panic!("opcode {op:#x}: {other:?}"),
        }
    }
    assert!(pickle::loads(b"").is_err());
    assert!(pickle::loads(b"\x80\x03N.trailing").is_err());
    assert!(pickle::loads(b"\x80\x03\x8c\x02\xff\xfe.").is_err()); // invalid UTF-8
}

/// A tiny deterministic PRNG (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Fuzz-style: random bytes, and valid pickles with bytes flipped, inserted, deleted or cut.
/// Every input must give a value or an error: no panic, no hang, no allocation beyond the
/// input's size (a declared length is checked against the bytes left before allocating).
#[test]
fn fuzz_decoder_never_panics() {
    let seeds: Vec<Vec<u8>> = vec![
        hex("8004952300000000000000284e8c06637265617465948c0e6765745f7461736b5f71756575659485947d9474942e"),
        hex("80049522000000000000008c06234552524f52948c065f7175657565948c05456d70747994939429529486942e"),
        hex("8004 95 00 00 00 00 00 00 00 00 5d 94 4b 01 61 68 00 86 94 2e"),
        pickle::dumps(&pickle::to_value(&(1u8, "x", vec![1.5f64], Some(-70i64))).unwrap()),
        pickle::dumps(&PyValue::Object {
            class: Box::new(PyValue::global("m", "C")),
            args: Box::new(tuple(vec![])),
            kwargs: Some(Box::new(PyValue::Dict(vec![(s("k"), PyValue::Set(vec![PyValue::Int(1)]))]))),
            state: Some(Box::new(PyValue::FrozenSet(vec![PyValue::BigInt(vec![1; 20])]))),
        }),
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut outcomes = [0usize; 2];
    let interesting = [
        0x80, 0x95, 0x94, 0x68, 0x6a, 0x71, 0x72, 0x28, 0x2e, 0x62, 0x52, 0x81, 0x93, 0xff,
    ];
    for i in 0..60_000 {
        let input: Vec<u8> = if i % 4 == 0 {
            let n = rng.below(64);
            (0..n).map(|_| rng.next() as u8).collect()
        } else {
            let mut b = seeds[rng.below(seeds.len())].clone();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(b.len() + 1);
                match rng.below(5) {
                    0 if at < b.len() => b[at] = rng.next() as u8,
                    1 if at < b.len() => b[at] = interesting[rng.below(interesting.len())],
                    2 => b.insert(at, interesting[rng.below(interesting.len())]),
                    3 if at < b.len() => {
                        b.remove(at);
                    }
                    _ => b.truncate(at),
                }
            }
            b
        };
        outcomes[pickle::loads(&input).is_ok() as usize] += 1;
    }
    // Both outcomes occur, so the mutations reach past the first opcode.
    assert!(outcomes[0] > 0 && outcomes[1] > 0, "{outcomes:?}");
}

mod properties {
    //! Property tests (proptest) over the decoder: whatever the input, a value or an error,
    //! never a panic, a hang or an allocation out of proportion to the input (measured by the
    //! counting allocator against `Limits::memory_for` the input); and every plain value
    //! survives `dumps` then `loads`.
    use proptest::prelude::*;

    use super::*;

    /// Plain Python data, nested a few levels.
    fn plain_value() -> impl Strategy<Value = PyValue> {
        let leaf = prop_oneof![
            Just(PyValue::None),
            any::<bool>().prop_map(PyValue::Bool),
            any::<i64>().prop_map(PyValue::Int),
            (-1e300f64..1e300).prop_map(PyValue::Float),
            ".{0,20}".prop_map(PyValue::Str),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(PyValue::Bytes),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(PyValue::Tuple),
                proptest::collection::vec(inner.clone(), 0..8).prop_map(PyValue::List),
                proptest::collection::vec((any::<i64>().prop_map(PyValue::Int), inner), 0..8)
                    .prop_map(PyValue::Dict),
            ]
        })
    }

    /// Decodes `input` under the default limits and under a tight ratio (no floor, 1 or 2
    /// bytes per input byte): the peak allocation stays within each budget.
    fn within_budget(input: &[u8]) -> Result<(), TestCaseError> {
        for limits in [
            Limits::default(),
            Limits {
                min_memory: 0,
                memory_per_byte: 1,
                ..Limits::default()
            },
            Limits {
                min_memory: 0,
                ..Limits::default()
            },
        ] {
            let peak = counting::peak_growth(|| pickle::loads_with(input, &limits)).1;
            let budget = limits.memory_for(input.len());
            prop_assert!(peak <= budget, "{} > {} for {:?}", peak, budget, input);
        }
        Ok(())
    }

    /// Opcodes that make values, copy references or group items, with their arguments.
    fn opcode_soup() -> impl Strategy<Value = Vec<u8>> {
        let token = prop::sample::select(vec![
            &b"]"[..],
            b"}",
            b")",
            b"(",
            b"N",
            b"\x94",
            b"h\x00",
            b"q\x01",
            b"2",
            b"0",
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
            b"\x8c\x01a",
            b"C\x01b",
            b"\x8a\x02\x01\x01",
            b"R",
            b"b",
            b".",
        ]);
        proptest::collection::vec(token, 0..600)
            .prop_map(|t| [&b"\x80\x04"[..], &t.concat()].concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn any_bytes_decode_or_fail_cleanly(input in proptest::collection::vec(any::<u8>(), 0..512)) {
            within_budget(&input)?;
        }

        #[test]
        fn any_bytes_after_a_protocol_header_decode_or_fail_cleanly(
            proto in 2u8..=5,
            body in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let mut input = vec![0x80, proto];
            input.extend(body);
            within_budget(&input)?;
        }

        #[test]
        fn opcode_soups_stay_within_budget(input in opcode_soup()) {
            within_budget(&input)?;
        }

        #[test]
        fn plain_values_round_trip(value in plain_value()) {
            let bytes = pickle::dumps(&value);
            prop_assert_eq!(pickle::loads(&bytes).unwrap(), value);
        }

        #[test]
        fn edited_pickles_decode_or_fail_cleanly(
            value in plain_value(),
            edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..6),
        ) {
            let mut bytes = pickle::dumps(&value);
            for (at, byte, kind) in edits {
                let at = at % (bytes.len() + 1);
                match kind {
                    0 if at < bytes.len() => bytes[at] = byte,
                    1 => bytes.insert(at, byte),
                    _ => bytes.truncate(at),
                }
            }
            within_budget(&bytes)?;
        }
    }
}
