//! A single-pass decoder for the common case: plain data without shared references.
//!
//! The full decoder ([`super::decode`]) builds an arena of nodes, then copies it into a
//! [`PyValue`] (shared references need that). Every manager request and reply made of plain data
//! (scalars, strings, bytes, tuples, lists, dicts, sets) and without memo *gets* decodes here in
//! one pass, straight into the value: memo *puts* are skipped, as nothing reads them back.
//! Anything else — a memo get, a global, `REDUCE`, a malformed or over-deep input — makes this
//! pass give up (`None`) and the full decoder decide, so both agree on every input this one
//! accepts and every error comes from the full decoder.
//!
//! Memory is charged to a [`Budget`] as it is allocated (a stack slot as the stack grows, a
//! container's buffer before it is made), so a run of one-byte opcodes that each make a value
//! gives up at the budget instead of growing the stack to many times the input.

use super::args::{self, scalar, scalar_opcodes};
use super::budget::{heap, Budget};
use super::cursor::Cursor;
use super::decode::Limits;
use super::opcodes::*;
use super::value::PyValue;

/// A value on the stack and its height (0 for a scalar, 1 + the tallest item for a container).
type Slot = (PyValue, usize);

/// Which container an `APPEND`-like opcode extends.
#[derive(Clone, Copy)]
enum Kind {
    List,
    Set,
    Dict,
}

struct Fast<'a> {
    cur: Cursor<'a>,
    stack: Vec<Slot>,
    marks: Vec<usize>,
    max_depth: usize,
    budget: Budget,
    /// Decoding a bare body (no `PROTO`, no `STOP`) that must leave this many values.
    bare: Option<usize>,
}

/// Decodes `input` if it is plain data the single pass handles; `None` otherwise (the caller
/// then runs the full decoder).
pub(crate) fn loads(input: &[u8], limits: &Limits) -> Option<PyValue> {
    decode(input, limits, limits.max_depth, None)
}

/// Decodes `body`, the opcodes of the last items of a tuple without the pickle around them
/// (no `PROTO`, no `STOP`), into the `n` values it leaves: one value as itself, more as a
/// tuple. Those values sit one level down in the whole pickle, so they get one level less
/// of the depth limit. `None` where [`loads`] would give up.
pub(crate) fn loads_items(body: &[u8], n: usize, limits: &Limits) -> Option<PyValue> {
    decode(body, limits, limits.max_depth.checked_sub(1)?, Some(n))
}

fn decode(input: &[u8], limits: &Limits, max_depth: usize, bare: Option<usize>) -> Option<PyValue> {
    // The stack and marks of the last decode on this thread are reused: a manager decodes a
    // small pickle per call, and two allocations would be a good part of its work.
    let (stack, marks) = SCRATCH.with(|s| s.take());
    let mut fast = Fast {
        cur: Cursor::new(input),
        stack,
        marks,
        max_depth,
        budget: Budget::new(limits, input.len()),
        bare,
    };
    let value = fast.run();
    let (mut stack, mut marks) = (fast.stack, fast.marks);
    if stack.capacity() <= SCRATCH_KEPT && marks.capacity() <= SCRATCH_KEPT {
        stack.clear();
        marks.clear();
        SCRATCH.with(|s| s.set((stack, marks)));
    }
    value
}

/// The most stack slots (and marks) kept between decodes.
const SCRATCH_KEPT: usize = 64;

thread_local! {
    static SCRATCH: std::cell::Cell<(Vec<Slot>, Vec<usize>)> =
        const { std::cell::Cell::new((Vec::new(), Vec::new())) };
}

impl<'a> Fast<'a> {
    /// The lowest stack index not protected by a mark.
    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self) -> Option<Slot> {
        if self.stack.len() <= self.floor() {
            return None;
        }
        self.stack.pop()
    }

    /// Pushes a value within the budget: one more node, and a stack slot if the stack is full.
    #[inline]
    fn push(&mut self, v: PyValue, height: usize) -> Option<()> {
        self.budget.nodes(1).ok()?;
        if self.stack.len() == self.stack.capacity() {
            self.budget.reserve(&mut self.stack, 1).ok()?;
        }
        self.stack.push((v, height));
        Some(())
    }

    fn push_leaf(&mut self, v: PyValue) -> Option<()> {
        self.push(v, 0)
    }

    /// Pushes a container of `height`, unless that is deeper than allowed.
    fn push_container(&mut self, v: PyValue, height: usize) -> Option<()> {
        if height > self.max_depth {
            return None;
        }
        self.push(v, height)
    }

    /// The items above the last mark (removing it) and their tallest height; their buffer is
    /// charged before it is made.
    fn pop_mark(&mut self) -> Option<(Vec<PyValue>, usize)> {
        let mark = self.marks.pop()?;
        let n = self.stack.len().checked_sub(mark)?;
        self.budget
            .charge(heap(n * std::mem::size_of::<PyValue>()))
            .ok()?;
        let mut tallest = 0;
        let items = self
            .stack
            .drain(mark..)
            .map(|(v, h)| {
                tallest = tallest.max(h);
                v
            })
            .collect();
        Some((items, tallest))
    }

    /// Adds `items` (of tallest height `tallest`) to the container on top of the stack. The
    /// container's buffer grows within the budget; `items`' own buffer is then given back.
    fn extend_top(&mut self, items: Vec<PyValue>, tallest: usize, kind: Kind) -> Option<()> {
        let given = heap(items.capacity() * std::mem::size_of::<PyValue>());
        self.add_to_top(items.len(), items, tallest, kind)?;
        self.budget.credit(given);
        Some(())
    }

    /// Adds the `n` values of `items` (of tallest height `tallest`) to the container on top of
    /// the stack, growing its buffer within the budget.
    fn add_to_top(
        &mut self,
        n: usize,
        items: impl IntoIterator<Item = PyValue>,
        tallest: usize,
        kind: Kind,
    ) -> Option<()> {
        if self.stack.len() <= self.floor() {
            return None;
        }
        let max_depth = self.max_depth;
        let (top, height) = self.stack.last_mut()?;
        let new_height = (*height).max(if n == 0 { 0 } else { tallest + 1 });
        if new_height > max_depth {
            return None;
        }
        match (top, kind) {
            (PyValue::List(v), Kind::List) | (PyValue::Set(v), Kind::Set) => {
                self.budget.reserve(v, n).ok()?;
                v.extend(items);
            }
            (PyValue::Dict(d), Kind::Dict) => {
                if n % 2 != 0 {
                    return None;
                }
                self.budget.reserve(d, n / 2).ok()?;
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    d.push((k, v));
                }
            }
            _ => return None,
        }
        *height = new_height;
        Some(())
    }

    fn run(&mut self) -> Option<PyValue> {
        loop {
            if let Some(n) = self.bare {
                if self.cur.is_done() {
                    if !self.marks.is_empty() || self.stack.len() != n {
                        return None;
                    }
                    if n == 1 {
                        return self.stack.pop().map(|(v, _)| v);
                    }
                    self.budget
                        .charge(heap(n * std::mem::size_of::<PyValue>()))
                        .ok()?;
                    return Some(PyValue::Tuple(
                        self.stack.drain(..).map(|(v, _)| v).collect(),
                    ));
                }
            }
            let op = self.cur.u8()?;
            match op {
                PROTO | STOP if self.bare.is_some() => return None,
                PROTO => {
                    args::protocol(&mut self.cur).ok()?;
                }
                FRAME => {
                    args::frame(&mut self.cur).ok()?;
                }
                STOP => {
                    let (root, _) = self.pop()?;
                    if !self.cur.is_done() || !self.marks.is_empty() {
                        return None;
                    }
                    return Some(root);
                }
                MARK => {
                    if self.marks.len() == self.marks.capacity() {
                        self.budget.reserve(&mut self.marks, 1).ok()?;
                    }
                    self.marks.push(self.stack.len());
                }
                scalar_opcodes!() => {
                    let v = scalar(&mut self.cur, &mut self.budget, op).ok()?;
                    self.push_leaf(v)?;
                }
                EMPTY_TUPLE => self.push_leaf(PyValue::Tuple(Vec::new()))?,
                TUPLE1..=TUPLE3 => {
                    let n = args::tuple_arity(op);
                    if self.stack.len() < self.floor() + n {
                        return None;
                    }
                    self.budget
                        .charge(heap(n * std::mem::size_of::<PyValue>()))
                        .ok()?;
                    let mut tallest = 0;
                    let items = self
                        .stack
                        .drain(self.stack.len() - n..)
                        .map(|(v, h)| {
                            tallest = tallest.max(h);
                            v
                        })
                        .collect();
                    self.push_container(PyValue::Tuple(items), tallest + 1)?;
                }
                TUPLE | FROZENSET => {
                    let (items, tallest) = self.pop_mark()?;
                    let height = if items.is_empty() { 0 } else { tallest + 1 };
                    let v = if op == TUPLE {
                        PyValue::Tuple(items)
                    } else {
                        PyValue::FrozenSet(items)
                    };
                    self.push_container(v, height)?;
                }
                EMPTY_LIST => self.push_leaf(PyValue::List(Vec::new()))?,
                EMPTY_DICT => self.push_leaf(PyValue::Dict(Vec::new()))?,
                EMPTY_SET => self.push_leaf(PyValue::Set(Vec::new()))?,
                APPEND => {
                    let (item, h) = self.pop()?;
                    self.add_to_top(1, [item], h, Kind::List)?;
                }
                SETITEM => {
                    let (value, hv) = self.pop()?;
                    let (key, hk) = self.pop()?;
                    self.add_to_top(2, [key, value], hk.max(hv), Kind::Dict)?;
                }
                APPENDS | ADDITEMS | SETITEMS => {
                    let (items, tallest) = self.pop_mark()?;
                    let kind = match op {
                        APPENDS => Kind::List,
                        ADDITEMS => Kind::Set,
                        _ => Kind::Dict,
                    };
                    self.extend_top(items, tallest, kind)?;
                }
                // Memo puts: nothing reads them back unless a get follows, and a get gives up.
                MEMOIZE => {
                    if self.stack.len() <= self.floor() {
                        return None;
                    }
                }
                BINPUT | LONG_BINPUT => {
                    args::memo_index(&mut self.cur, op).ok()?;
                    if self.stack.len() <= self.floor() {
                        return None;
                    }
                }
                _ => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The single pass must agree with the full decoder on everything it accepts.

    use super::super::decode::{loads_full, Limits};
    use super::super::encode::dumps;
    use super::super::opcodes::PROTO;
    use super::super::value::PyValue;
    use proptest::prelude::*;

    fn plain_value() -> impl Strategy<Value = PyValue> {
        let leaf = prop_oneof![
            Just(PyValue::None),
            any::<bool>().prop_map(PyValue::Bool),
            any::<i64>().prop_map(PyValue::Int),
            any::<f64>()
                .prop_filter("NaN is not equal to itself", |f| !f.is_nan())
                .prop_map(PyValue::Float),
            "\\PC{0,12}".prop_map(PyValue::Str),
            proptest::collection::vec(any::<u8>(), 0..300).prop_map(PyValue::Bytes),
        ];
        leaf.prop_recursive(5, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(PyValue::Tuple),
                proptest::collection::vec(inner.clone(), 0..6).prop_map(PyValue::List),
                proptest::collection::vec((inner.clone(), inner), 0..6).prop_map(PyValue::Dict),
            ]
        })
    }

    fn agrees(input: &[u8], limits: &Limits) -> Result<(), TestCaseError> {
        if let Some(fast) = super::loads(input, limits) {
            prop_assert_eq!(Ok(fast), loads_full(input, limits));
        }
        Ok(())
    }

    #[test]
    fn bare_items_decode_as_inside_their_tuple() {
        let limits = Limits::default();
        // ('#RETURN', [1, 'x']) as this crate writes it; the body is the value alone.
        let reply = dumps(&PyValue::Tuple(vec![
            PyValue::Str("#RETURN".into()),
            PyValue::List(vec![PyValue::Int(1), PyValue::Str("x".into())]),
        ]));
        let body = &reply[14..reply.len() - 2];
        assert_eq!(
            super::loads_items(body, 1, &limits),
            Some(PyValue::List(vec![
                PyValue::Int(1),
                PyValue::Str("x".into())
            ]))
        );
        assert_eq!(super::loads_items(body, 2, &limits), None);
        assert_eq!(super::loads_items(&reply, 1, &limits), None, "PROTO inside");
        // Depth: [[1]] is two levels inside the tuple, too deep for a limit of 2.
        let deep = Limits {
            max_depth: 2,
            ..limits
        };
        let nested = dumps(&PyValue::Tuple(vec![
            PyValue::Str("#RETURN".into()),
            PyValue::List(vec![PyValue::List(vec![PyValue::Int(1)])]),
        ]));
        assert!(loads_full(&nested, &deep).is_err());
        assert_eq!(
            super::loads_items(&nested[14..nested.len() - 2], 1, &deep),
            None
        );
    }

    #[test]
    fn cpython_protocol_4_frames_take_the_single_pass() {
        // ('7fd0e34c5be0', 'get', (), {'timeout': 10}) as CPython 3.13 writes it (memo puts).
        let frame = b"\x80\x04\x95\x29\x00\x00\x00\x00\x00\x00\x00(\x8c\x0c7fd0e34c5be0\x94\x8c\x03get\x94)}\x94\x8c\x07timeout\x94K\nst\x94.";
        let fast = super::loads(frame, &Limits::default()).expect("single pass");
        assert_eq!(Ok(fast), loads_full(frame, &Limits::default()));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn plain_values_decode_alike(value in plain_value(), depth in 0usize..6) {
            let bytes = dumps(&value);
            let limits = Limits { max_depth: depth, ..Limits::default() };
            agrees(&bytes, &limits)?;
            prop_assert_eq!(super::loads(&bytes, &Limits::default()), Some(value));
        }

        #[test]
        fn edited_pickles_decode_alike(
            value in plain_value(),
            edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..6),
        ) {
            let mut bytes = dumps(&value);
            for (at, byte, how) in edits {
                let at = at % (bytes.len() + 1);
                match how {
                    0 if at < bytes.len() => bytes[at] = byte,
                    1 => bytes.insert(at, byte),
                    _ if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    _ => {}
                }
            }
            agrees(&bytes, &Limits::default())?;
            agrees(&bytes, &Limits { max_depth: 2, ..Limits::default() })?;
        }

        #[test]
        fn any_bytes_decode_alike(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut bytes = vec![PROTO, 4];
            bytes.extend(body);
            agrees(&bytes, &Limits::default())?;
        }
    }
}
