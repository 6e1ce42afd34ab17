//! The decoder: opcodes into an arena of nodes, then the arena into an owned [`PyValue`].
//!
//! Containers are nodes in an arena and the memo holds node indices, so `APPEND`s to a list
//! that was memoized before it was filled reach every reference to it, as in CPython. The final
//! tree is materialized from the root with a depth limit (which also stops self-referencing
//! containers), each copy made for a shared reference counting as a node again.
//!
//! Both phases charge one [`Budget`]: the arena, the stack, the memo's table and every string
//! as they are read, then each value as it is materialized (the scratch of reading is freed
//! and credited first). Heights are tracked as items are added, so nesting past the limit is
//! refused while reading, not only once the arena is complete.

use std::cell::Cell;
use std::collections::HashMap;

use super::args::{self, scalar, scalar_opcodes};
use super::budget::{heap, Budget};
use super::cursor::Cursor;
use super::opcodes::*;
use super::value::{PickleError, PyValue};

/// Bounds the decoder enforces, beyond "every declared length fits in the input".
///
/// All three are checked as each opcode is read, so a hostile pickle fails early and the
/// decoder's memory never exceeds [`memory_for`](Limits::memory_for) its input's length.
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
    /// How many nodes (values, containers included) the decoded value may have, each copy made
    /// to expand a shared reference (a memo entry used more than once) counting again, and a
    /// copied `str`/`bytes` one node per 8 bytes (default 2^20).
    pub max_nodes: usize,
    /// Bytes of memory the decoder may hold per byte of input (default 2: a frame and its
    /// decoding together stay within 3 times the frame, 4 with the allocator's slack). Each
    /// scalar decodes to a 48-byte [`PyValue`], so a long run of small scalars (a list of 100 000
    /// small ints, say) may need more than this once past [`min_memory`](Limits::min_memory).
    pub memory_per_byte: usize,
    /// Bytes of memory any input may use, however short (default 10 MiB), so pickles of small
    /// scalars decode whatever their ratio up to that size.
    pub min_memory: usize,
    /// Bytes of memory no input may exceed, however long (default 1 GiB).
    pub max_memory: usize,
}

impl Limits {
    /// The most memory, in bytes, decoding an input of `input_len` bytes may take:
    /// `memory_per_byte × input_len`, at least `min_memory`, at most `max_memory`.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::pickle::Limits;
    /// let limits = Limits::default();
    /// assert_eq!(limits.memory_for(100), 10 << 20);
    /// assert_eq!(limits.memory_for(15 << 20), 30 << 20);
    /// ```
    pub fn memory_for(&self, input_len: usize) -> usize {
        self.memory_per_byte
            .saturating_mul(input_len)
            .max(self.min_memory)
            .min(self.max_memory)
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_depth: 256,
            max_nodes: 1 << 20,
            memory_per_byte: 2,
            min_memory: 10 << 20,
            max_memory: 1 << 30,
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
/// use multiproc::pickle::{loads, PyValue};
/// // ('#RETURN', None) as CPython 3.11 writes it
/// let frame = b"\x80\x04\x95\x0e\x00\x00\x00\x00\x00\x00\x00\x8c\x07#RETURN\x94N\x86\x94.";
/// assert_eq!(loads(frame).unwrap(), PyValue::Tuple(vec![PyValue::Str("#RETURN".into()), PyValue::None]));
/// ```
pub fn loads(input: &[u8]) -> Result<PyValue, PickleError> {
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
pub fn loads_with(input: &[u8], limits: &Limits) -> Result<PyValue, PickleError> {
    if let Some(value) = super::fast::loads(input, limits) {
        return Ok(value);
    }
    loads_full(input, limits)
}

/// The full decoder, for every input (the single pass of [`super::fast`] gives up on some).
pub(super) fn loads_full(input: &[u8], limits: &Limits) -> Result<PyValue, PickleError> {
    let mut decoder = Decoder {
        cur: Cursor::new(input),
        arena: Vec::new(),
        heights: Vec::new(),
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        memo_charged: 0,
        budget: Budget::new(limits, input.len()),
        max_depth: limits.max_depth,
    };
    let root = decoder.run()?;
    let Decoder {
        arena, mut budget, ..
    } = decoder.release();
    budget.charge(heap(arena.len()).saturating_mul(2))?;
    let refs = count_references(&arena, root);
    let mut out = Materializer {
        arena: &arena,
        refs,
        seen: vec![false; arena.len()],
        budget: &mut budget,
        max_depth: limits.max_depth,
    };
    out.value(root, 0, false, true)
}

/// How many times each node is referenced (from the root and from other nodes, reachable or
/// not), counting up to 2: a node referenced once on a path of nodes referenced once is
/// materialized once, so its scalar can be moved out of the arena instead of copied.
fn count_references(arena: &[Node], root: usize) -> Vec<u8> {
    let mut refs = vec![0u8; arena.len()];
    let mut count = |i: usize| refs[i] = refs[i].saturating_add(1).min(2);
    count(root);
    for node in arena {
        match node {
            Node::Leaf(_) => {}
            Node::Tuple(items) | Node::List(items) | Node::Set(items) | Node::FrozenSet(items) => {
                items.iter().for_each(|&i| count(i))
            }
            Node::Dict(items) => items.iter().for_each(|&(k, v)| {
                count(k);
                count(v);
            }),
            Node::Reduce {
                callable,
                args,
                state,
            } => [Some(*callable), Some(*args), *state]
                .into_iter()
                .flatten()
                .for_each(&mut count),
            Node::Object {
                class,
                args,
                kwargs,
                state,
            } => [Some(*class), Some(*args), *kwargs, *state]
                .into_iter()
                .flatten()
                .for_each(&mut count),
        }
    }
    refs
}

/// Looks at the scalar in `cell` (taken out and put back: a `Cell` lends no reference).
fn peek<R>(cell: &Cell<PyValue>, f: impl FnOnce(&PyValue) -> R) -> R {
    let value = cell.replace(PyValue::None);
    let result = f(&value);
    cell.set(value);
    result
}

/// What one memo entry asked for can cost in its hash table: a table for `n` entries has up to
/// `16n/7` buckets (a power of two at 7/8 load), each a 16-byte entry and a control byte.
const MEMO_SLOT: usize = 40;

enum Node {
    /// A scalar (or global), in a `Cell` so that materializing can move it out when it is
    /// used once.
    Leaf(Cell<PyValue>),
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

/// Which container an `APPEND`-like opcode extends.
#[derive(Clone, Copy)]
enum Kind {
    List,
    Set,
    Dict,
}

struct Decoder<'a> {
    cur: Cursor<'a>,
    arena: Vec<Node>,
    /// For each node, a lower bound of its height (0 for a scalar or an empty container, 1 +
    /// the tallest item otherwise), kept as items are added; the exact depth is checked again
    /// when the value is materialized. Items only ever get added, so a node found taller than
    /// the limit here is at least that tall in the end.
    heights: Vec<usize>,
    stack: Vec<usize>,
    marks: Vec<usize>,
    memo: HashMap<u32, usize>,
    /// What the memo's table was charged.
    memo_charged: usize,
    budget: Budget,
    max_depth: usize,
}

impl<'a> Decoder<'a> {
    fn malformed(&self, reason: &'static str) -> PickleError {
        args::malformed(&self.cur, reason)
    }

    /// Frees what only reading needed (stack, marks, memo, heights), crediting it, so that
    /// materializing has their room.
    fn release(mut self) -> Self {
        let word = std::mem::size_of::<usize>();
        let freed = heap(self.stack.capacity() * word)
            + heap(self.marks.capacity() * word)
            + heap(self.heights.capacity() * word)
            + self.memo_charged;
        self.stack = Vec::new();
        self.marks = Vec::new();
        self.heights = Vec::new();
        self.memo = HashMap::new();
        self.budget.credit(freed);
        self
    }

    fn too_deep(&self) -> PickleError {
        PickleError::TooDeep {
            limit: self.max_depth,
        }
    }

    /// Adds a node of the given height to the arena and pushes it, within the limits.
    fn push(&mut self, node: Node, height: usize) -> Result<(), PickleError> {
        if height > self.max_depth {
            return Err(self.too_deep());
        }
        self.budget.nodes(1)?;
        self.budget.reserve(&mut self.arena, 1)?;
        self.budget.reserve(&mut self.heights, 1)?;
        self.push_index(self.arena.len())?;
        self.arena.push(node);
        self.heights.push(height);
        Ok(())
    }

    fn leaf(&mut self, value: PyValue) -> Result<(), PickleError> {
        self.push(Node::Leaf(Cell::new(value)), 0)
    }

    /// Pushes a reference to an existing node (`DUP`, memo gets).
    fn push_index(&mut self, index: usize) -> Result<(), PickleError> {
        self.budget.reserve(&mut self.stack, 1)?;
        self.stack.push(index);
        Ok(())
    }

    /// The height of a container holding `items`.
    fn height_over(&self, items: &[usize]) -> usize {
        items
            .iter()
            .map(|&i| self.heights[i].saturating_add(1))
            .max()
            .unwrap_or(0)
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
        let n = self.stack.len().saturating_sub(mark);
        self.budget.charge(heap(n * std::mem::size_of::<usize>()))?;
        Ok(self.stack.split_off(mark))
    }

    /// Frees a list of items that was copied into a container.
    fn drop_items(&mut self, items: Vec<usize>) {
        self.budget
            .credit(heap(items.capacity() * std::mem::size_of::<usize>()));
    }

    fn str_at(&mut self, index: usize) -> Result<String, PickleError> {
        let text = match &self.arena[index] {
            Node::Leaf(cell) => peek(cell, |v| v.as_str().map(str::to_owned)),
            _ => None,
        };
        let s = text.ok_or_else(|| self.malformed("STACK_GLOBAL needs two str"))?;
        self.budget.charge(heap(s.len()))?;
        Ok(s)
    }

    /// A memo put of the top of the stack; a growing table is charged before it is made.
    fn memo_put(&mut self, index: u32) -> Result<(), PickleError> {
        let top = self.top()?;
        if self.memo.len() == self.memo.capacity() && !self.memo.contains_key(&index) {
            let want = self.memo.capacity().saturating_mul(2).max(16);
            let table = heap(want.saturating_mul(MEMO_SLOT).saturating_add(16));
            self.budget.charge(table)?;
            self.memo.reserve(want - self.memo.len());
            self.budget.credit(self.memo_charged);
            self.memo_charged = table;
        }
        self.memo.insert(index, top);
        Ok(())
    }

    fn run(&mut self) -> Result<usize, PickleError> {
        loop {
            let at = self.cur.pos();
            let op = args::opcode(&mut self.cur)?;
            match op {
                PROTO => {
                    args::protocol(&mut self.cur)?;
                }
                FRAME => {
                    args::frame(&mut self.cur)?;
                }
                STOP => {
                    let root = self.pop()?;
                    if !self.cur.is_done() {
                        return Err(self.malformed("bytes after STOP"));
                    }
                    return Ok(root);
                }
                MARK => {
                    self.budget.reserve(&mut self.marks, 1)?;
                    self.marks.push(self.stack.len());
                }
                POP => {
                    if self.marks.last().is_some_and(|&m| m == self.stack.len()) {
                        self.marks.pop();
                    } else {
                        self.pop()?;
                    }
                }
                POP_MARK => {
                    let items = self.pop_mark()?;
                    self.drop_items(items);
                }
                DUP => {
                    let top = self.top()?;
                    self.push_index(top)?;
                }
                scalar_opcodes!() => {
                    let v = scalar(&mut self.cur, &mut self.budget, op)?;
                    self.leaf(v)?;
                }
                EMPTY_TUPLE => self.push(Node::Tuple(Vec::new()), 0)?,
                TUPLE1..=TUPLE3 => {
                    let n = args::tuple_arity(op);
                    let mut items = [0; 3];
                    for slot in items[..n].iter_mut().rev() {
                        *slot = self.pop()?;
                    }
                    let height = self.height_over(&items[..n]);
                    self.budget.charge(heap(n * std::mem::size_of::<usize>()))?;
                    self.push(Node::Tuple(items[..n].to_vec()), height)?;
                }
                TUPLE | FROZENSET => {
                    let items = self.pop_mark()?;
                    let height = self.height_over(&items);
                    let node = if op == TUPLE {
                        Node::Tuple(items)
                    } else {
                        Node::FrozenSet(items)
                    };
                    self.push(node, height)?;
                }
                EMPTY_LIST => self.push(Node::List(Vec::new()), 0)?,
                EMPTY_DICT => self.push(Node::Dict(Vec::new()), 0)?,
                EMPTY_SET => self.push(Node::Set(Vec::new()), 0)?,
                APPEND => {
                    let item = self.pop()?;
                    let list = self.top()?;
                    self.add_items(list, &[item], Kind::List)?;
                }
                SETITEM => {
                    let value = self.pop()?;
                    let key = self.pop()?;
                    let dict = self.top()?;
                    self.add_items(dict, &[key, value], Kind::Dict)?;
                }
                APPENDS | SETITEMS | ADDITEMS => {
                    let items = self.pop_mark()?;
                    let target = self.top()?;
                    let kind = match op {
                        APPENDS => Kind::List,
                        SETITEMS => Kind::Dict,
                        _ => Kind::Set,
                    };
                    self.add_items(target, &items, kind)?;
                    self.drop_items(items);
                }
                MEMOIZE => {
                    let index = u32::try_from(self.memo.len())
                        .map_err(|_| self.malformed("memo too large"))?;
                    self.memo_put(index)?;
                }
                BINPUT | LONG_BINPUT => {
                    let index = args::memo_index(&mut self.cur, op)?;
                    self.memo_put(index)?;
                }
                BINGET | LONG_BINGET => {
                    let index = args::memo_index(&mut self.cur, op)?;
                    let node = *self
                        .memo
                        .get(&index)
                        .ok_or_else(|| self.malformed("memo get of a missing entry"))?;
                    self.push_index(node)?;
                }
                STACK_GLOBAL => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (module, name) = (self.str_at(module)?, self.str_at(name)?);
                    self.leaf(PyValue::Global { module, name })?;
                }
                GLOBAL => {
                    let module = args::line(&mut self.cur, &mut self.budget)?;
                    let name = args::line(&mut self.cur, &mut self.budget)?;
                    self.leaf(PyValue::Global { module, name })?;
                }
                REDUCE => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let height = self.height_over(&[callable, args]);
                    let node = Node::Reduce {
                        callable,
                        args,
                        state: None,
                    };
                    self.push(node, height)?;
                }
                NEWOBJ => {
                    let args = self.pop()?;
                    let class = self.pop()?;
                    let height = self.height_over(&[class, args]);
                    let node = Node::Object {
                        class,
                        args,
                        kwargs: None,
                        state: None,
                    };
                    self.push(node, height)?;
                }
                NEWOBJ_EX => {
                    let kwargs = self.pop()?;
                    let args = self.pop()?;
                    let class = self.pop()?;
                    let height = self.height_over(&[class, args, kwargs]);
                    let node = Node::Object {
                        class,
                        args,
                        kwargs: Some(kwargs),
                        state: None,
                    };
                    self.push(node, height)?;
                }
                BUILD => {
                    let new_state = self.pop()?;
                    let target = self.top()?;
                    match &mut self.arena[target] {
                        Node::Reduce { state, .. } | Node::Object { state, .. } => {
                            *state = Some(new_state)
                        }
                        _ => return Err(self.malformed("BUILD on a plain value")),
                    }
                    self.grow(target, &[new_state])?;
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

    /// Adds `items` to the list, set or dict (key, value, key, value, …) at `target`.
    fn add_items(&mut self, target: usize, items: &[usize], kind: Kind) -> Result<(), PickleError> {
        let budget = &mut self.budget;
        let wrong = match (&mut self.arena[target], kind) {
            (Node::List(v), Kind::List) | (Node::Set(v), Kind::Set) => {
                budget.reserve(v, items.len())?;
                v.extend_from_slice(items);
                None
            }
            (Node::Dict(v), Kind::Dict) if items.len() % 2 == 0 => {
                budget.reserve(v, items.len() / 2)?;
                v.extend(items.chunks_exact(2).map(|kv| (kv[0], kv[1])));
                None
            }
            (Node::Dict(_), Kind::Dict) => Some("SETITEMS with an odd number of items"),
            (_, Kind::List) => Some("APPEND on a non-list"),
            (_, Kind::Set) => Some("ADDITEMS on a non-set"),
            (_, Kind::Dict) => Some("SETITEM on a non-dict"),
        };
        if let Some(reason) = wrong {
            return Err(self.malformed(reason));
        }
        self.grow(target, items)
    }

    /// Raises the height of `target`, which now holds `items`, refusing it past the limit.
    fn grow(&mut self, target: usize, items: &[usize]) -> Result<(), PickleError> {
        let height = self.height_over(items).max(self.heights[target]);
        if height > self.max_depth {
            return Err(self.too_deep());
        }
        self.heights[target] = height;
        Ok(())
    }
}

struct Materializer<'a> {
    arena: &'a [Node],
    /// From [`count_references`].
    refs: Vec<u8>,
    seen: Vec<bool>,
    budget: &'a mut Budget,
    max_depth: usize,
}

impl Materializer<'_> {
    /// The value of node `index` at `depth`; `copying` when it was reached through a node seen
    /// before (a shared reference), `unique` when every node on the way was referenced once.
    fn value(
        &mut self,
        index: usize,
        depth: usize,
        copying: bool,
        unique: bool,
    ) -> Result<PyValue, PickleError> {
        if depth > self.max_depth {
            return Err(PickleError::TooDeep {
                limit: self.max_depth,
            });
        }
        let copying = copying || std::mem::replace(&mut self.seen[index], true);
        let unique = unique && !copying && self.refs[index] == 1;
        if copying {
            // The arena counted each node once; a copy counts again.
            let cost = match &self.arena[index] {
                Node::Leaf(cell) => peek(cell, |v| match v {
                    PyValue::Str(s) => 1 + s.len() / 8,
                    PyValue::Bytes(b) | PyValue::ByteArray(b) | PyValue::BigInt(b) => {
                        1 + b.len() / 8
                    }
                    _ => 1,
                }),
                _ => 1,
            };
            self.budget.nodes(cost)?;
        }
        let d = depth + 1;
        let arena = self.arena;
        let (c, u) = (copying, unique);
        Ok(match &arena[index] {
            // Used once: moved out, its memory already charged when it was read.
            Node::Leaf(cell) if unique => cell.replace(PyValue::None),
            Node::Leaf(cell) => {
                self.budget.charge(peek(cell, leaf_heap))?;
                peek(cell, PyValue::clone)
            }
            Node::Tuple(items) => PyValue::Tuple(self.values(items, d, c, u)?),
            Node::List(items) => PyValue::List(self.values(items, d, c, u)?),
            Node::Set(items) => PyValue::Set(self.values(items, d, c, u)?),
            Node::FrozenSet(items) => PyValue::FrozenSet(self.values(items, d, c, u)?),
            Node::Dict(items) => {
                self.budget.charge(heap(
                    items.len() * std::mem::size_of::<(PyValue, PyValue)>(),
                ))?;
                let mut out = Vec::with_capacity(items.len());
                for &(k, v) in items {
                    out.push((self.value(k, d, c, u)?, self.value(v, d, c, u)?));
                }
                PyValue::Dict(out)
            }
            Node::Reduce {
                callable,
                args,
                state,
            } => PyValue::Reduce {
                callable: self.boxed(*callable, d, c, u)?,
                args: self.boxed(*args, d, c, u)?,
                state: self.optional(*state, d, c, u)?,
            },
            Node::Object {
                class,
                args,
                kwargs,
                state,
            } => PyValue::Object {
                class: self.boxed(*class, d, c, u)?,
                args: self.boxed(*args, d, c, u)?,
                kwargs: self.optional(*kwargs, d, c, u)?,
                state: self.optional(*state, d, c, u)?,
            },
        })
    }

    fn values(
        &mut self,
        items: &[usize],
        depth: usize,
        copying: bool,
        unique: bool,
    ) -> Result<Vec<PyValue>, PickleError> {
        self.budget
            .charge(heap(items.len() * std::mem::size_of::<PyValue>()))?;
        let mut out = Vec::with_capacity(items.len());
        for &i in items {
            out.push(self.value(i, depth, copying, unique)?);
        }
        Ok(out)
    }

    fn boxed(
        &mut self,
        index: usize,
        depth: usize,
        copying: bool,
        unique: bool,
    ) -> Result<Box<PyValue>, PickleError> {
        self.budget.charge(heap(std::mem::size_of::<PyValue>()))?;
        Ok(Box::new(self.value(index, depth, copying, unique)?))
    }

    fn optional(
        &mut self,
        index: Option<usize>,
        depth: usize,
        copying: bool,
        unique: bool,
    ) -> Result<Option<Box<PyValue>>, PickleError> {
        index
            .map(|i| self.boxed(i, depth, copying, unique))
            .transpose()
    }
}

/// The heap memory a copy of a scalar takes.
fn leaf_heap(v: &PyValue) -> usize {
    match v {
        PyValue::Str(s) => heap(s.len()),
        PyValue::Bytes(b) | PyValue::ByteArray(b) | PyValue::BigInt(b) => heap(b.len()),
        PyValue::Global { module, name } => heap(module.len()) + heap(name.len()),
        _ => 0,
    }
}
