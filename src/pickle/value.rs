//! The value model: what a pickle on the managers' wire can say, as data.

/// A decoded pickle, kept as data.
///
/// Containers own copies of their items (a pickle's shared references are expanded). Python
/// objects other than the plain built-in types stay inert: a class or function is a
/// [`Global`](Value::Global) naming it, an object made by calling something is a
/// [`Reduce`](Value::Reduce) or an [`Object`](Value::Object), with the state a `BUILD` gave it.
/// Such values can be stored and written back unchanged (a queue served by Rust carries Python
/// objects it does not understand), but [`from_value`](crate::pickle::from_value) refuses them.
///
/// # Examples
///
/// ```
/// use multiproc::pickle::Value;
///
/// let empty = Value::Reduce {
///     callable: Box::new(Value::global("queue", "Empty")),
///     args: Box::new(Value::Tuple(vec![])),
///     state: None,
/// };
/// assert_eq!(empty.class_name(), Some(("queue", "Empty")));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
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
    Tuple(Vec<Value>),
    /// `list`.
    List(Vec<Value>),
    /// `dict`, in the order the pickle gave its items.
    Dict(Vec<(Value, Value)>),
    /// `set`.
    Set(Vec<Value>),
    /// `frozenset`.
    FrozenSet(Vec<Value>),
    /// A class or function named by module and qualified name, never resolved.
    Global {
        /// The module, e.g. `"queue"`.
        module: String,
        /// The name inside it, e.g. `"Empty"`.
        name: String,
    },
    /// `callable(*args)` as `REDUCE` writes it, plus the state a `BUILD` gave the result.
    Reduce {
        /// What would be called (usually a [`Global`](Value::Global)).
        callable: Box<Value>,
        /// The arguments (usually a tuple).
        args: Box<Value>,
        /// The `BUILD` state, if any.
        state: Option<Box<Value>>,
    },
    /// `cls.__new__(cls, *args, **kwargs)` as `NEWOBJ`/`NEWOBJ_EX` write it, plus `BUILD` state.
    Object {
        /// The class (usually a [`Global`](Value::Global)).
        class: Box<Value>,
        /// Positional arguments (usually a tuple).
        args: Box<Value>,
        /// Keyword arguments (`NEWOBJ_EX` only).
        kwargs: Option<Box<Value>>,
        /// The `BUILD` state, if any.
        state: Option<Box<Value>>,
    },
}

impl Value {
    /// A [`Value::Global`] naming `module.name`.
    ///
    /// # Examples
    ///
    /// ```
    /// let g = multiproc::pickle::Value::global("builtins", "ValueError");
    /// assert!(matches!(g, multiproc::pickle::Value::Global { .. }));
    /// ```
    pub fn global(module: &str, name: &str) -> Value {
        Value::Global {
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
    /// assert_eq!(multiproc::pickle::Value::Int(3).class_name(), None);
    /// ```
    pub fn class_name(&self) -> Option<(&str, &str)> {
        let callable = match self {
            Value::Reduce { callable, .. } => callable,
            Value::Object { class, .. } => class,
            _ => return None,
        };
        match &**callable {
            Value::Global { module, name } => Some((module, name)),
            _ => None,
        }
    }

    /// The `str` inside, if this is one.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(multiproc::pickle::Value::Str("a".into()).as_str(), Some("a"));
    /// ```
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Python's truth value of a plain value (`None`, zero, empty containers are false);
    /// objects are true, as in Python by default.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::pickle::Value;
    /// assert!(!Value::Int(0).truthy());
    /// assert!(Value::Str("x".into()).truthy());
    /// ```
    pub fn truthy(&self) -> bool {
        match self {
            Value::None => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::BigInt(_) => true,
            Value::Float(f) => *f != 0.0,
            Value::Str(s) => !s.is_empty(),
            Value::Bytes(b) | Value::ByteArray(b) => !b.is_empty(),
            Value::Tuple(v) | Value::List(v) | Value::Set(v) | Value::FrozenSet(v) => !v.is_empty(),
            Value::Dict(d) => !d.is_empty(),
            Value::Global { .. } | Value::Reduce { .. } | Value::Object { .. } => true,
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
