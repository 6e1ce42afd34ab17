//! The budget both decoders charge as they read: bytes of memory live at once, and nodes.
//!
//! A pickle opcode of one byte can become tens of bytes of decoded value (`EMPTY_LIST` is one
//! byte and a 56-byte stack slot), so without a budget a 15 MiB frame could take a gigabyte.
//! Every allocation a decoder makes is charged here *before* it is made, at its real size
//! (element size times capacity, plus [`ALLOC_OVERHEAD`]); a buffer freed or outgrown is
//! credited back, so the count is the decoder's live memory and the check bounds its peak.
//! The limit is [`Limits::memory_for`] the input's length; nodes are counted against
//! [`Limits::max_nodes`]. Each check is an add and a compare.

use super::decode::Limits;
use super::value::PickleError;

/// What one heap allocation costs beyond its bytes: the allocator's header and rounding
/// (glibc's `malloc` takes 8 bytes of header and rounds chunks to 16).
pub(super) const ALLOC_OVERHEAD: usize = 16;

/// The memory a heap allocation of `bytes` takes (nothing for an empty one).
#[inline]
pub(super) fn heap(bytes: usize) -> usize {
    if bytes == 0 {
        0
    } else {
        bytes.saturating_add(ALLOC_OVERHEAD)
    }
}

/// Which limit a decode ran into, and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Exceeded {
    /// [`Limits::memory_for`] the input.
    Memory(usize),
    /// [`Limits::max_nodes`].
    Nodes(usize),
}

impl From<Exceeded> for PickleError {
    fn from(exceeded: Exceeded) -> PickleError {
        match exceeded {
            Exceeded::Memory(limit) => PickleError::TooMuchMemory { limit },
            Exceeded::Nodes(limit) => PickleError::TooLarge { limit },
        }
    }
}

/// Live bytes and nodes so far, against their limits.
#[derive(Debug)]
pub(super) struct Budget {
    live: usize,
    memory: usize,
    nodes: usize,
    max_nodes: usize,
}

impl Budget {
    /// The budget for decoding `input_len` bytes under `limits`.
    pub(super) fn new(limits: &Limits, input_len: usize) -> Budget {
        Budget {
            live: 0,
            memory: limits.memory_for(input_len),
            nodes: 0,
            max_nodes: limits.max_nodes,
        }
    }

    /// Charges `bytes` about to be allocated.
    #[inline]
    pub(super) fn charge(&mut self, bytes: usize) -> Result<(), Exceeded> {
        self.live = self.live.saturating_add(bytes);
        if self.live > self.memory {
            return Err(Exceeded::Memory(self.memory));
        }
        Ok(())
    }

    /// Gives back `bytes` freed.
    #[inline]
    pub(super) fn credit(&mut self, bytes: usize) {
        self.live = self.live.saturating_sub(bytes);
    }

    /// Counts `n` more nodes.
    #[inline]
    pub(super) fn nodes(&mut self, n: usize) -> Result<(), Exceeded> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > self.max_nodes {
            return Err(Exceeded::Nodes(self.max_nodes));
        }
        Ok(())
    }

    /// Makes room in `v` for `additional` more elements, charging the new buffer before it is
    /// allocated (while the old one still lives: growing copies) and crediting the old one.
    /// Growth doubles, as `Vec`'s own does.
    pub(super) fn reserve<T>(&mut self, v: &mut Vec<T>, additional: usize) -> Result<(), Exceeded> {
        let need = v.len().saturating_add(additional);
        let old = v.capacity();
        if need <= old {
            return Ok(());
        }
        let size = std::mem::size_of::<T>();
        let want = need.max(old.saturating_mul(2)).max(4);
        self.charge(heap(want.saturating_mul(size)))?;
        v.reserve_exact(want - v.len());
        self.credit(heap(old * size));
        // `reserve_exact` may round up; charge whatever it gave beyond the request.
        let extra = (v.capacity() - want) * size;
        self.charge(extra)
    }
}
