//! What a manager serves: the [`Referent`] contract, the Python semantics every served type
//! shares ([`python`]), and one file per served type, as CPython's `SyncManager` serves
//! them ([`sync_manager`] registers them under its typeids).
//!
//! Containers — `list`, `dict`, `Namespace`, `Value` and `Array` — have the method sets of
//! CPython's `ListProxy`, `DictProxy`, `NamespaceProxy`, `ValueProxy` and `ArrayProxy`.
//! Items are kept as pickled data ([`PyValue`](crate::pickle::PyValue)) and compared with
//! Python's rules for the plain types (`1 == 1.0 == True`; numbers, strings, bytes, tuples
//! and lists ordered as Python orders them, other mixtures a `TypeError`). A `dict` is
//! searched linearly: it suits the small shared tables managers are used for, not large maps.
//! A proxy stored in a container stays inert data (CPython pickles it as
//! `RebuildProxy(func, Token, ...)`); the server keeps its object alive for it, so a client
//! reading it back gets a working proxy.
//!
//! Synchronization primitives — `Event`, `Lock`, `RLock`, `Semaphore`, `BoundedSemaphore`,
//! `Condition` and `Barrier` — have the methods and errors of `threading`'s. Their methods
//! run on the server; a blocking `acquire` or `wait` occupies only the connection of the
//! client that called it. Ownership of an `RLock` is the client thread's, as in CPython: each
//! client thread calls over its own proxy connection, which the server serves on its own
//! thread, and that thread is the owner.
//!
//! A client that dies while it waits takes nothing (issue 12.1, [`super::peer`]): its wait
//! ends without acquiring, and a reply that cannot be delivered gives back what the call
//! acquired ([`Referent::reply_undelivered`]). For an `RLock` or a `Condition` that is every
//! level the serving thread holds: its connection is closed next, and nobody else could ever
//! release them. A party of a `Barrier` that dies while waiting **breaks** the barrier, as a
//! party that times out does in `threading`: the others get `BrokenBarrierError` at once rather
//! than wait for a party that will not come (they may `reset()` and go on with a replacement).
//! Holds acquired by a call whose reply *was* delivered stay held when the client dies later,
//! as in CPython. A [`ServedQueue`] puts an item whose reply was lost back at its head.

mod array;
mod barrier;
mod condition;
mod dict;
mod event;
mod list;
mod lock;
mod namespace;
mod python;
mod queue;
mod referent;
mod semaphore;
pub(crate) mod sync_manager;
mod value;

pub use array::ServedArray;
pub use barrier::ServedBarrier;
pub use condition::ServedCondition;
pub use dict::ServedDict;
pub use event::ServedEvent;
pub use list::ServedList;
pub use lock::ServedLock;
pub use namespace::ServedNamespace;
#[allow(deprecated)] // the old name stays exported for existing users
pub use python::bind;
pub use python::{bind_arguments, PyException};
pub use queue::ServedQueue;
pub use referent::Referent;
pub use semaphore::ServedSemaphore;
pub use value::ServedValue;
