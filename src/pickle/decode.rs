//! The decoder: opcodes into an arena of nodes, then the arena into an owned [`Value`].
//!
//! Containers are nodes in an arena and the memo holds node indices, so `APPEND`s to a list
//! that was memoized before it was filled reach every reference to it, as in CPython. The final
//! tree is materialized from the root with a depth limit (which also stops self-referencing
//! containers) and a budget on copies made for shared references.

use std::collections::HashMap;

use super::value::{PickleError, Value};

/// Bounds the decoder enforces, beyond "every declared length fits in the input".
///
/// # Examples
///
/// ```
/// use multiproc::pickle::{self, Limits};
///
/// let limits = Limits { max_depth: 2, ..Limits::default() };
/// let nested = pickle::dumps(&pickle::to_value(&vec![vec![vec![1]]]).unwrap());
/// assert!(pickle::loads_with(&nested, &limits).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The deepest nesting of containers and objects (default 256).
    pub max_depth: usize,
    /// How many nodes may be copied to expand shared references (a memo entry used more than
    /// once), each `str`/`bytes` counting one node per 8 bytes (default 2^20).
    pub max_nodes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_depth: 256,
            max_nodes: 1 << 20,
        }
    }
}

/// Decodes one pickle with the default [`Limits`].
///
/// # Errors
///
/// [`PickleError`] for anything but a complete, well-formed pickle within the limits, followed
/// by nothing.
///
/// # Examples
///
/// ```
/// use multiproc::pickle::{loads, Value};
/// // ('#RETURN', None) as CPython 3.11 writes it
/// let frame = b"\x80\x04\x95\x0e\x00\x00\x00\x00\x00\x00\x00\x8c\x07#RETURN\x94N\x86\x94.";
/// assert_eq!(loads(frame).unwrap(), Value::Tuple(vec![Value::Str("#RETURN".into()), Value::None]));
/// ```
pub fn loads(input: &[u8]) -> Result<Value, PickleError> {
    loads_with(input, &Limits::default())
}

/// Decodes one pickle with the given limits.
///
/// # Errors
///
/// As [`loads`].
///
/// # Examples
///
/// ```
/// use multiproc::pickle::{loads_with, Limits};
/// assert!(loads_with(b"\x80\x03K\x01.", &Limits::default()).is_ok());
/// ```
pub fn loads_with(input: &[u8], limits: &Limits) -> Result<Value, PickleError> {
    if let Some(value) = super::fast::loads(input, limits) {
        return Ok(value);
    }
    loads_full(input, limits)
}

/// The full decoder, for every input (the single pass of [`super::fast`] gives up on some).
pub(super) fn loads_full(input: &[u8], limits: &Limits) -> Result<Value, PickleError> {
    let mut decoder = Decoder {
        input,
        pos: 0,
        arena: Vec::new(),
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
    };
    let root = decoder.run()?;
    let mut out = Materializer {
        arena: &decoder.arena,
        seen: vec![false; decoder.arena.len()],
        budget: limits.max_nodes,
        limits,
    };
    out.value(root, 0, false)
}

enum Node {
    Leaf(Value),
    Tuple(Vec<usize>),
    List(Vec<usize>),
    Dict(Vec<(usize, usize)>),
    Set(Vec<usize>),
    FrozenSet(Vec<usize>),
    Reduce {
        callable: usize,
        args: usize,
        state: Option<usize>,
    },
    Object {
        class: usize,
        args: usize,
        kwargs: Option<usize>,
        state: Option<usize>,
    },
}

struct Decoder<'a> {
    input: &'a [u8],
    pos: usize,
    arena: Vec<Node>,
    stack: Vec<usize>,
    marks: Vec<usize>,
    memo: HashMap<u32, usize>,
}

impl<'a> Decoder<'a> {
    fn malformed(&self, reason: &'static str) -> PickleError {
        PickleError::Malformed {
            offset: self.pos,
            reason,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], PickleError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.input.len())
            .ok_or(PickleError::Truncated {
                offset: self.input.len(),
            })?;
        let bytes = &self.input[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, PickleError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, PickleError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64_len(&mut self) -> Result<usize, PickleError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        // A length beyond the input is caught by `take`; beyond usize it cannot fit either.
        Ok(usize::try_from(u64::from_le_bytes(a)).unwrap_or(usize::MAX))
    }

    fn push(&mut self, node: Node) {
        self.arena.push(node);
        self.stack.push(self.arena.len() - 1);
    }

    fn pop(&mut self) -> Result<usize, PickleError> {
        if self.marks.last().is_some_and(|&m| m >= self.stack.len()) {
            return Err(self.malformed("pop across a mark"));
        }
        self.stack
            .pop()
            .ok_or_else(|| self.malformed("stack underflow"))
    }

    fn top(&self) -> Result<usize, PickleError> {
        if self.marks.last().is_some_and(|&m| m >= self.stack.len()) {
            return Err(self.malformed("no object above the mark"));
        }
        self.stack
            .last()
            .copied()
            .ok_or_else(|| self.malformed("stack underflow"))
    }

    /// The items pushed since the last mark, removing the mark.
    fn pop_mark(&mut self) -> Result<Vec<usize>, PickleError> {
        let mark = self.marks.pop().ok_or_else(|| self.malformed("no mark"))?;
        Ok(self.stack.split_off(mark))
    }

    fn text(&mut self, n: usize) -> Result<String, PickleError> {
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.malformed("invalid utf-8 in a str"))
    }

    fn line(&mut self) -> Result<String, PickleError> {
        let rest = &self.input[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(PickleError::Truncated {
                offset: self.input.len(),
            })?;
        let s = self.text(n)?;
        self.pos += 1;
        Ok(s)
    }

    fn str_at(&self, index: usize) -> Result<String, PickleError> {
        match &self.arena[index] {
            Node::Leaf(Value::Str(s)) => Ok(s.clone()),
            _ => Err(self.malformed("STACK_GLOBAL needs two str")),
        }
    }

    fn run(&mut self) -> Result<usize, PickleError> {
        loop {
            let at = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if !(2..=5).contains(&proto) {
                        return Err(self.malformed("unsupported protocol"));
                    }
                }
                0x95 => {
                    self.u64_len()?; // FRAME: advisory
                }
                0x2e => {
                    let root = self.pop()?;
                    if self.pos != self.input.len() {
                        return Err(self.malformed("bytes after STOP"));
                    }
                    return Ok(root);
                }
                0x28 => self.marks.push(self.stack.len()),
                0x30 => {
                    if self.marks.last().is_some_and(|&m| m == self.stack.len()) {
                        self.marks.pop();
                    } else {
                        self.pop()?;
                    }
                }
                0x31 => {
                    self.pop_mark()?;
                }
                0x32 => {
                    let top = self.top()?;
                    self.stack.push(top);
                }
                0x4e => self.push(Node::Leaf(Value::None)),
                0x88 => self.push(Node::Leaf(Value::Bool(true))),
                0x89 => self.push(Node::Leaf(Value::Bool(false))),
                0x4b => {
                    let v = self.u8()?;
                    self.push(Node::Leaf(Value::Int(v.into())));
                }
                0x4d => {
                    let v = self.u16()?;
                    self.push(Node::Leaf(Value::Int(v.into())));
                }
                0x4a => {
                    let v = self.u32()? as i32;
                    self.push(Node::Leaf(Value::Int(v.into())));
                }
                0x8a => {
                    let n = self.u8()? as usize;
                    let bytes = self.take(n)?;
                    self.push(Node::Leaf(int_from_le(bytes)));
                }
                0x8b => {
                    let n = self.u32()? as i32;
                    let n = usize::try_from(n).map_err(|_| self.malformed("negative length"))?;
                    let bytes = self.take(n)?;
                    self.push(Node::Leaf(int_from_le(bytes)));
                }
                0x47 => {
                    let b = self.take(8)?;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    self.push(Node::Leaf(Value::Float(f64::from_be_bytes(a))));
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let s = self.text(n)?;
                    self.push(Node::Leaf(Value::Str(s)));
                }
                0x58 => {
                    let n = self.u32()? as usize;
                    let s = self.text(n)?;
                    self.push(Node::Leaf(Value::Str(s)));
                }
                0x8d => {
                    let n = self.u64_len()?;
                    let s = self.text(n)?;
                    self.push(Node::Leaf(Value::Str(s)));
                }
                0x43 | 0x42 | 0x8e | 0x96 => {
                    let n = match op {
                        0x43 => self.u8()? as usize,
                        0x42 => self.u32()? as usize,
                        _ => self.u64_len()?,
                    };
                    let b = self.take(n)?.to_vec();
                    let v = if op == 0x96 {
                        Value::ByteArray(b)
                    } else {
                        Value::Bytes(b)
                    };
                    self.push(Node::Leaf(v));
                }
                0x29 => self.push(Node::Tuple(Vec::new())),
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = vec![0; n];
                    for slot in items.iter_mut().rev() {
                        *slot = self.pop()?;
                    }
                    self.push(Node::Tuple(items));
                }
                0x74 => {
                    let items = self.pop_mark()?;
                    self.push(Node::Tuple(items));
                }
                0x5d => self.push(Node::List(Vec::new())),
                0x61 => {
                    let item = self.pop()?;
                    let list = self.top()?;
                    self.extend_list(list, vec![item])?;
                }
                0x65 => {
                    let items = self.pop_mark()?;
                    let list = self.top()?;
                    self.extend_list(list, items)?;
                }
                0x7d => self.push(Node::Dict(Vec::new())),
                0x73 => {
                    let value = self.pop()?;
                    let key = self.pop()?;
                    let dict = self.top()?;
                    self.extend_dict(dict, vec![key, value])?;
                }
                0x75 => {
                    let items = self.pop_mark()?;
                    let dict = self.top()?;
                    self.extend_dict(dict, items)?;
                }
                0x8f => self.push(Node::Set(Vec::new())),
                0x90 => {
                    let items = self.pop_mark()?;
                    let set = self.top()?;
                    match &mut self.arena[set] {
                        Node::Set(v) => v.extend(items),
                        _ => return Err(self.malformed("ADDITEMS on a non-set")),
                    }
                }
                0x91 => {
                    let items = self.pop_mark()?;
                    self.push(Node::FrozenSet(items));
                }
                0x94 => {
                    let top = self.top()?;
                    let index = u32::try_from(self.memo.len())
                        .map_err(|_| self.malformed("memo too large"))?;
                    self.memo.insert(index, top);
                }
                0x71 | 0x72 => {
                    let index = if op == 0x71 {
                        self.u8()?.into()
                    } else {
                        self.u32()?
                    };
                    let top = self.top()?;
                    self.memo.insert(index, top);
                }
                0x68 | 0x6a => {
                    let index = if op == 0x68 {
                        self.u8()?.into()
                    } else {
                        self.u32()?
                    };
                    let node = *self
                        .memo
                        .get(&index)
                        .ok_or_else(|| self.malformed("memo get of a missing entry"))?;
                    self.stack.push(node);
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (module, name) = (self.str_at(module)?, self.str_at(name)?);
                    self.push(Node::Leaf(Value::Global { module, name }));
                }
                0x63 => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.push(Node::Leaf(Value::Global { module, name }));
                }
                0x52 => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    self.push(Node::Reduce {
                        callable,
                        args,
                        state: None,
                    });
                }
                0x81 => {
                    let args = self.pop()?;
                    let class = self.pop()?;
                    self.push(Node::Object {
                        class,
                        args,
                        kwargs: None,
                        state: None,
                    });
                }
                0x92 => {
                    let kwargs = self.pop()?;
                    let args = self.pop()?;
                    let class = self.pop()?;
                    self.push(Node::Object {
                        class,
                        args,
                        kwargs: Some(kwargs),
                        state: None,
                    });
                }
                0x62 => {
                    let new_state = self.pop()?;
                    let target = self.top()?;
                    match &mut self.arena[target] {
                        Node::Reduce { state, .. } | Node::Object { state, .. } => {
                            *state = Some(new_state)
                        }
                        _ => return Err(self.malformed("BUILD on a plain value")),
                    }
                }
                _ => {
                    return Err(PickleError::UnsupportedOpcode {
                        opcode: op,
                        offset: at,
                    })
                }
            }
        }
    }

    fn extend_list(&mut self, list: usize, items: Vec<usize>) -> Result<(), PickleError> {
        match &mut self.arena[list] {
            Node::List(v) => {
                v.extend(items);
                Ok(())
            }
            _ => Err(self.malformed("APPEND on a non-list")),
        }
    }

    fn extend_dict(&mut self, dict: usize, items: Vec<usize>) -> Result<(), PickleError> {
        if items.len() % 2 != 0 {
            return Err(self.malformed("SETITEMS with an odd number of items"));
        }
        match &mut self.arena[dict] {
            Node::Dict(v) => {
                v.extend(items.chunks_exact(2).map(|kv| (kv[0], kv[1])));
                Ok(())
            }
            _ => Err(self.malformed("SETITEM on a non-dict")),
        }
    }
}

/// An int from little-endian two's complement bytes (`LONG1`/`LONG4`), minimal form.
pub(super) fn int_from_le(bytes: &[u8]) -> Value {
    if bytes.is_empty() {
        return Value::Int(0);
    }
    let negative = bytes[bytes.len() - 1] & 0x80 != 0;
    let fill = if negative { 0xff } else { 0 };
    // Drop redundant sign bytes.
    let mut len = bytes.len();
    while len > 1 && bytes[len - 1] == fill && (bytes[len - 2] & 0x80 != 0) == negative {
        len -= 1;
    }
    let bytes = &bytes[..len];
    if len <= 8 {
        let mut a = [fill; 8];
        a[..len].copy_from_slice(bytes);
        Value::Int(i64::from_le_bytes(a))
    } else {
        Value::BigInt(bytes.to_vec())
    }
}

struct Materializer<'a> {
    arena: &'a [Node],
    seen: Vec<bool>,
    budget: usize,
    limits: &'a Limits,
}

impl Materializer<'_> {
    fn value(&mut self, index: usize, depth: usize, copying: bool) -> Result<Value, PickleError> {
        if depth > self.limits.max_depth {
            return Err(PickleError::TooDeep {
                limit: self.limits.max_depth,
            });
        }
        let copying = copying || std::mem::replace(&mut self.seen[index], true);
        if copying {
            let cost = match &self.arena[index] {
                Node::Leaf(Value::Str(s)) => 1 + s.len() / 8,
                Node::Leaf(Value::Bytes(b) | Value::ByteArray(b) | Value::BigInt(b)) => {
                    1 + b.len() / 8
                }
                _ => 1,
            };
            self.budget = self.budget.checked_sub(cost).ok_or(PickleError::TooLarge {
                limit: self.limits.max_nodes,
            })?;
        }
        let d = depth + 1;
        let arena = self.arena;
        Ok(match &arena[index] {
            Node::Leaf(v) => v.clone(),
            Node::Tuple(items) => Value::Tuple(self.values(items, d, copying)?),
            Node::List(items) => Value::List(self.values(items, d, copying)?),
            Node::Set(items) => Value::Set(self.values(items, d, copying)?),
            Node::FrozenSet(items) => Value::FrozenSet(self.values(items, d, copying)?),
            Node::Dict(items) => {
                let mut out = Vec::with_capacity(items.len());
                for &(k, v) in items {
                    out.push((self.value(k, d, copying)?, self.value(v, d, copying)?));
                }
                Value::Dict(out)
            }
            Node::Reduce {
                callable,
                args,
                state,
            } => Value::Reduce {
                callable: Box::new(self.value(*callable, d, copying)?),
                args: Box::new(self.value(*args, d, copying)?),
                state: self.optional(*state, d, copying)?,
            },
            Node::Object {
                class,
                args,
                kwargs,
                state,
            } => Value::Object {
                class: Box::new(self.value(*class, d, copying)?),
                args: Box::new(self.value(*args, d, copying)?),
                kwargs: self.optional(*kwargs, d, copying)?,
                state: self.optional(*state, d, copying)?,
            },
        })
    }

    fn values(
        &mut self,
        items: &[usize],
        depth: usize,
        copying: bool,
    ) -> Result<Vec<Value>, PickleError> {
        items
            .iter()
            .map(|&i| self.value(i, depth, copying))
            .collect()
    }

    fn optional(
        &mut self,
        index: Option<usize>,
        depth: usize,
        copying: bool,
    ) -> Result<Option<Box<Value>>, PickleError> {
        index
            .map(|i| self.value(i, depth, copying).map(Box::new))
            .transpose()
    }
}
