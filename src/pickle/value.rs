//! The value model: what a pickle on the managers' wire can say, as data.

/// A decoded pickle, kept as data.
///
/// Containers own copies of their items (a pickle's shared references are expanded). Python
/// objects other than the plain built-in types stay inert: a class or function is a
/// [`Global`](PyValue::Global) naming it, an object made by calling something is a
/// [`Reduce`](PyValue::Reduce) or an [`Object`](PyValue::Object), with the state a `BUILD` gave it.
/// Such values can be stored and written back unchanged (a queue served by Rust carries Python
/// objects it does not understand), but [`from_value`](crate::pickle::from_value) refuses them.
///
/// # Examples
///
/// ```
/// use multiproc::pickle::PyValue;
///
/// let empty = PyValue::Reduce {
///     callable: Box::new(PyValue::global("queue", "Empty")),
///     args: Box::new(PyValue::Tuple(vec![])),
///     state: None,
/// };
/// assert_eq!(empty.class_name(), Some(("queue", "Empty")));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum PyValue {
    /// `None`.
    None,
    /// `bool`.
    Bool(bool),
    /// An `int` that fits in 64 bits.
    Int(i64),
    /// A larger `int`, as little-endian two's complement bytes (minimal length).
    BigInt(Vec<u8>),
    /// `float`.
    Float(f64),
    /// `str`.
    Str(String),
    /// `bytes`.
    Bytes(Vec<u8>),
    /// `bytearray` (protocol 5's `BYTEARRAY8`; older protocols write it as a `Reduce`).
    ByteArray(Vec<u8>),
    /// `tuple`.
    Tuple(Vec<PyValue>),
    /// `list`.
    List(Vec<PyValue>),
    /// `dict`, in the order the pickle gave its items.
    Dict(Vec<(PyValue, PyValue)>),
    /// `set`.
    Set(Vec<PyValue>),
    /// `frozenset`.
    FrozenSet(Vec<PyValue>),
    /// A class or function named by module and qualified name, never resolved.
    Global {
        /// The module, e.g. `"queue"`.
        module: String,
        /// The name inside it, e.g. `"Empty"`.
        name: String,
    },
    /// `callable(*args)` as `REDUCE` writes it, plus the state a `BUILD` gave the result.
    Reduce {
        /// What would be called (usually a [`Global`](PyValue::Global)).
        callable: Box<PyValue>,
        /// The arguments (usually a tuple).
        args: Box<PyValue>,
        /// The `BUILD` state, if any.
        state: Option<Box<PyValue>>,
    },
    /// `cls.__new__(cls, *args, **kwargs)` as `NEWOBJ`/`NEWOBJ_EX` write it, plus `BUILD` state.
    Object {
        /// The class (usually a [`Global`](PyValue::Global)).
        class: Box<PyValue>,
        /// Positional arguments (usually a tuple).
        args: Box<PyValue>,
        /// Keyword arguments (`NEWOBJ_EX` only).
        kwargs: Option<Box<PyValue>>,
        /// The `BUILD` state, if any.
        state: Option<Box<PyValue>>,
    },
}

impl PyValue {
    /// A [`PyValue::Global`] naming `module.name`.
    ///
    /// # Examples
    ///
    /// ```
    /// let g = multiproc::pickle::PyValue::global("builtins", "ValueError");
    /// assert!(matches!(g, multiproc::pickle::PyValue::Global { .. }));
    /// ```
    pub fn global(module: &str, name: &str) -> PyValue {
        PyValue::Global {
            module: module.to_string(),
            name: name.to_string(),
        }
    }

    /// For a `Reduce` or `Object` whose callable is a global: its module and name (the class of
    /// an exception instance, for example).
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(multiproc::pickle::PyValue::Int(3).class_name(), None);
    /// ```
    pub fn class_name(&self) -> Option<(&str, &str)> {
        let callable = match self {
            PyValue::Reduce { callable, .. } => callable,
            PyValue::Object { class, .. } => class,
            _ => return None,
        };
        match &**callable {
            PyValue::Global { module, name } => Some((module, name)),
            _ => None,
        }
    }

    /// The `str` inside, if this is one.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(multiproc::pickle::PyValue::Str("a".into()).as_str(), Some("a"));
    /// ```
    pub fn as_str(&self) -> Option<&str> {
        match self {
            PyValue::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Python's truth value of a plain value (`None`, zero, empty containers are false);
    /// objects are true, as in Python by default.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::pickle::PyValue;
    /// assert!(!PyValue::Int(0).truthy());
    /// assert!(PyValue::Str("x".into()).truthy());
    /// ```
    pub fn truthy(&self) -> bool {
        match self {
            PyValue::None => false,
            PyValue::Bool(b) => *b,
            PyValue::Int(i) => *i != 0,
            PyValue::BigInt(_) => true,
            PyValue::Float(f) => *f != 0.0,
            PyValue::Str(s) => !s.is_empty(),
            PyValue::Bytes(b) | PyValue::ByteArray(b) => !b.is_empty(),
            PyValue::Tuple(v) | PyValue::List(v) | PyValue::Set(v) | PyValue::FrozenSet(v) => {
                !v.is_empty()
            }
            PyValue::Dict(d) => !d.is_empty(),
            PyValue::Global { .. } | PyValue::Reduce { .. } | PyValue::Object { .. } => true,
        }
    }
}

/// Why a pickle could not be read, or a value could not be mapped to or from Rust.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PickleError {
    /// The input ended inside an opcode or before `STOP`.
    #[error("pickle truncated at byte {offset}")]
    Truncated {
        /// Where the input ran out.
        offset: usize,
    },
    /// An opcode this decoder does not read (text protocols, persistent ids, extensions,
    /// out-of-band buffers) or does not know.
    #[error("unsupported pickle opcode 0x{opcode:02x} at byte {offset}")]
    UnsupportedOpcode {
        /// The opcode byte.
        opcode: u8,
        /// Where it was.
        offset: usize,
    },
    /// The opcodes do not make a valid pickle (stack underflow, a missing mark, a bad memo
    /// index, invalid UTF-8, trailing bytes, …).
    #[error("malformed pickle at byte {offset}: {reason}")]
    Malformed {
        /// Where the problem was found.
        offset: usize,
        /// What was wrong.
        reason: &'static str,
    },
    /// Containers nested deeper than [`Limits::max_depth`](crate::pickle::Limits).
    #[error("pickle nested deeper than {limit} levels")]
    TooDeep {
        /// The limit.
        limit: usize,
    },
    /// The value has more nodes than [`Limits::max_nodes`](crate::pickle::Limits) (each copy a
    /// shared reference makes counting again).
    #[error("pickle expands beyond {limit} nodes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// Decoding would take more memory than [`Limits::memory_for`](crate::pickle::Limits::memory_for)
    /// allows for an input of this length: the pickle expands too much (a run of one-byte
    /// opcodes that each make a container, say). Checked before each allocation.
    #[error("pickle needs more than {limit} bytes of memory to decode")]
    TooMuchMemory {
        /// The limit, in bytes, for this input.
        limit: usize,
    },
    /// A Python global (class, function, or an object built from one) where a plain value is
    /// expected. Nothing was executed.
    #[error("pickle global {module}.{name} where a plain value is expected")]
    Global {
        /// Its module.
        module: String,
        /// Its name.
        name: String,
    },
    /// serde could not map the value to or from the Rust type.
    #[error("cannot map pickle value to or from {type_name}: {reason}")]
    Serde {
        /// The Rust type.
        type_name: &'static str,
        /// serde's explanation.
        reason: String,
    },
}
