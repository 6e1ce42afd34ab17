//! Authenticated function references: how a function crosses to another process of the
//! family. Addresses are offsets from [`anchor`]; a [`TaggedCall`] (a trampoline and its
//! function) or a [`SharedFn`] (a plain `fn()`) carries an HMAC tag under the family's key, and
//! only a verified reference ([`Verified`], [`Verifier`]) reaches [`resolve`], the one place
//! where a number becomes a function pointer.

use std::cell::RefCell;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::trampoline::{Outcome, Trampoline};
use crate::codec::FdTable;
use crate::process::runtime;
use crate::process::AuthKey;
use crate::{sys, Error};

/// The address of a function in this process, which only a verified reference or a real
/// function of this process can make: what [`resolve`] takes.
#[derive(Clone, Copy)]
pub(crate) struct FnAddress(usize);

/// The one place where a number becomes a function pointer.
///
/// # Safety
/// `address` must be the address of a function of type `F` in this process: made from a
/// reference whose tag verified (the family's processes tag only offsets taken from functions,
/// paired with the trampoline that expects their type), or from a function of type `F` here.
pub(super) unsafe fn resolve<F: Copy>(address: FnAddress) -> F {
    const { assert!(std::mem::size_of::<F>() == std::mem::size_of::<usize>()) };
    // SAFETY: per this function's contract `address.0` is the address of an `F`, a function
    // pointer type (pointer-sized, checked above).
    unsafe { std::mem::transmute_copy::<usize, F>(&address.0) }
}

/// A fixed point of this crate's code that function addresses are measured from.
#[inline(never)]
pub(super) fn anchor() -> u64 {
    std::hint::black_box(0x6d75_6c74_6970_726f)
}

pub(crate) fn offset_of(addr: usize) -> i64 {
    addr.wrapping_sub(anchor as fn() -> u64 as usize) as i64
}

pub(super) fn address_at(offset: i64) -> FnAddress {
    FnAddress((anchor as fn() -> u64 as usize).wrapping_add(offset as usize))
}

/// The length of a function reference's tag: HMAC-SHA256 truncated to 128 bits.
pub(super) const TAG_LEN: usize = 16;
pub(super) type Tag = [u8; TAG_LEN];

/// What a tag vouches for, so that one kind of reference never passes for another.
#[derive(Clone, Copy)]
pub(super) enum Kind {
    /// A trampoline and the function it calls ([`TaggedCall`]).
    Call = 1,
    /// A plain `fn()` ([`SharedFn`]).
    Plain = 2,
}

/// The executable's identity as the tags cover it. If `/proc/self/exe` cannot be examined
/// (then no spawn works either) the identity is all zeros: a process that can examine it
/// computes other tags and refuses ours, so nothing worse than a refusal comes of it.
pub(super) fn exe_for_tags() -> [i64; 5] {
    sys::exe_identity().unwrap_or_default()
}

/// The tag of a reference of `kind` to `offsets` in executable `exe`, under `key`.
pub(super) fn tagger(key: &AuthKey, kind: Kind, exe: &[i64; 5], offsets: &[i64]) -> Hmac<Sha256> {
    // HMAC pads a key shorter than the hash's block (64 bytes) with zeros, so this is the
    // HMAC of the 32-byte key, made without `new_from_slice`'s (never taken) error path.
    let mut block = [0u8; 64];
    block[..AuthKey::LEN].copy_from_slice(key.as_bytes());
    let mut mac = <Hmac<Sha256> as hmac::digest::KeyInit>::new(&block.into());
    mac.update(b"multiproc function reference\0");
    mac.update(&[kind as u8]);
    for field in exe.iter().chain(offsets) {
        mac.update(&field.to_le_bytes());
    }
    mac
}

pub(super) fn tag_of(key: &AuthKey, kind: Kind, exe: &[i64; 5], offsets: &[i64]) -> Tag {
    let full = tagger(key, kind, exe, offsets).finalize().into_bytes();
    let mut tag = [0u8; TAG_LEN];
    tag.copy_from_slice(&full[..TAG_LEN]);
    tag
}

/// Whether `tag` is the tag of that reference (compared in constant time).
pub(super) fn tag_matches(
    key: &AuthKey,
    kind: Kind,
    exe: &[i64; 5],
    offsets: &[i64],
    tag: &[u8],
) -> bool {
    tag.len() == TAG_LEN
        && tagger(key, kind, exe, offsets)
            .verify_truncated_left(tag)
            .is_ok()
}

/// How many tags a thread remembers for [`TaggedCall::new`] (a pool caller makes the same few
/// entries over and over: one HMAC each, then lookups).
pub(super) const TAG_CACHE: usize = 16;

thread_local! {
    /// Recently made call tags: (trampoline, function, tag), the newest last. A process's key
    /// never changes (a fork child's is its parent's, which is why the copy a fork child
    /// inherits stays right), so the key is not part of the lookup.
    static CALL_TAGS: RefCell<Vec<(i64, i64, Tag)>> = const { RefCell::new(Vec::new()) };
}

/// A call as it travels to another process of this family: the offsets of a trampoline and of the
/// function it calls (as in the bootstrap [`Header`](super::Header)), and their tag. Running one
/// takes a [`Verified`], which only [`TaggedCall::verify`] (or [`Verifier`]) makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TaggedCall {
    pub(super) trampoline: i64,
    pub(super) function: i64,
    tag: Tag,
}

impl TaggedCall {
    /// The size of [`to_bytes`](Self::to_bytes).
    pub(crate) const LEN: usize = 16 + TAG_LEN;

    /// Names `function` (an `fn` of the type that `trampoline` expects) for another process
    /// of this family running this same executable, tagged with this process's key.
    pub(crate) fn new(trampoline: Trampoline, function: usize) -> TaggedCall {
        let (trampoline, function) = (offset_of(trampoline as usize), offset_of(function));
        let tag = CALL_TAGS.with(|cache| {
            let mut cache = cache.borrow_mut();
            let known = cache
                .iter()
                .rev()
                .find(|(t, f, _)| (*t, *f) == (trampoline, function));
            if let Some((.., tag)) = known {
                return *tag;
            }
            let key = runtime::runtime().identity().authkey;
            let tag = tag_of(&key, Kind::Call, &exe_for_tags(), &[trampoline, function]);
            if cache.len() == TAG_CACHE {
                cache.remove(0);
            }
            cache.push((trampoline, function, tag));
            tag
        });
        TaggedCall {
            trampoline,
            function,
            tag,
        }
    }

    pub(crate) fn to_bytes(self) -> [u8; TaggedCall::LEN] {
        let mut out = [0u8; TaggedCall::LEN];
        out[..8].copy_from_slice(&self.trampoline.to_le_bytes());
        out[8..16].copy_from_slice(&self.function.to_le_bytes());
        out[16..].copy_from_slice(&self.tag);
        out
    }

    /// Reads an entry from bytes: nothing is trusted until [`verify`](Self::verify).
    pub(crate) fn from_bytes(bytes: &[u8; TaggedCall::LEN]) -> TaggedCall {
        let mut trampoline = [0u8; 8];
        let mut function = [0u8; 8];
        let mut tag = [0u8; TAG_LEN];
        trampoline.copy_from_slice(&bytes[..8]);
        function.copy_from_slice(&bytes[8..16]);
        tag.copy_from_slice(&bytes[16..]);
        TaggedCall {
            trampoline: i64::from_le_bytes(trampoline),
            function: i64::from_le_bytes(function),
            tag,
        }
    }

    /// Checks the tag against `key` and this executable.
    ///
    /// # Errors
    /// [`Error::UnauthenticatedFunction`] (naming `what` carried the entry) if the tag does not
    /// match: the entry was forged or damaged, or made by another family or executable.
    pub(crate) fn verify(&self, key: &AuthKey, what: &'static str) -> Result<Verified, Error> {
        let offsets = [self.trampoline, self.function];
        if tag_matches(key, Kind::Call, &exe_for_tags(), &offsets, &self.tag) {
            Ok(Verified {
                trampoline: self.trampoline,
                function: self.function,
            })
        } else {
            Err(Error::UnauthenticatedFunction { what })
        }
    }
}

/// A call whose tag verified: the offsets name a [`Trampoline`] of this executable and the
/// function it expects. Made only by [`TaggedCall::verify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Verified {
    trampoline: i64,
    function: i64,
}

impl Verified {
    /// Runs the call on pickled `args`, with the descriptors of the handles inside them.
    pub(crate) fn run(self, args: &[u8], fds: &mut FdTable) -> Outcome {
        // SAFETY: the pair's tag verified, so a process of this family running this executable
        // made it with `TaggedCall::new` from a `Trampoline` and a function of the type that
        // trampoline expects; offsets from the anchor name the same functions here.
        let trampoline = unsafe { resolve::<Trampoline>(address_at(self.trampoline)) };
        trampoline(address_at(self.function), args, fds)
    }
}

/// Verifies entries for a long-lived worker, remembering the ones that passed: a pool sends
/// the same few entries with every batch, so each distinct entry costs one HMAC per worker.
#[derive(Debug)]
pub(crate) struct Verifier {
    key: AuthKey,
    pub(super) passed: Vec<TaggedCall>,
}

/// How many verified entries a [`Verifier`] remembers before it starts over.
pub(super) const VERIFIED_CACHE: usize = 256;

impl Verifier {
    /// A verifier with this process's key.
    pub(crate) fn new() -> Verifier {
        Verifier {
            key: runtime::runtime().identity().authkey,
            passed: Vec::new(),
        }
    }

    /// [`TaggedCall::verify`], or the remembered result of an earlier call for the same entry.
    ///
    /// # Errors
    /// As [`TaggedCall::verify`].
    pub(crate) fn verify(
        &mut self,
        entry: TaggedCall,
        what: &'static str,
    ) -> Result<Verified, Error> {
        if self.passed.contains(&entry) {
            return Ok(Verified {
                trampoline: entry.trampoline,
                function: entry.function,
            });
        }
        let verified = entry.verify(&self.key, what)?;
        if self.passed.len() == VERIFIED_CACHE {
            self.passed.clear();
        }
        self.passed.push(entry);
        Ok(verified)
    }
}

/// A plain `fn()` that travels to other processes of this family and executable (a
/// `Barrier`'s action): its offset from the anchor, the executable's identity, and a tag made
/// with the family's key. Deserializing it checks the tag; a forged or foreign one fails, and
/// the codec reports [`Error::UnauthenticatedFunction`] (see `codec::refusal`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct SharedFn(pub(crate) fn());

impl serde::Serialize for SharedFn {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error as _;
        let exe = sys::exe_identity().map_err(S::Error::custom)?;
        let offset = offset_of(self.0 as usize);
        let key = runtime::runtime().identity().authkey;
        let tag = tag_of(&key, Kind::Plain, &exe, &[offset]);
        (offset, exe, serde_bytes::Bytes::new(&tag)).serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for SharedFn {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let (offset, exe, tag) =
            <(i64, [i64; 5], serde_bytes::ByteBuf)>::deserialize(deserializer)?;
        if sys::exe_identity().map_err(D::Error::custom)? != exe {
            return Err(D::Error::custom(
                "a function from a different executable cannot run here",
            ));
        }
        let key = runtime::runtime().identity().authkey;
        if !tag_matches(&key, Kind::Plain, &exe, &[offset], &tag) {
            crate::codec::refusal::refuse(Error::UnauthenticatedFunction {
                what: "a barrier action",
            });
            return Err(D::Error::custom(
                "the function reference was not made by this process family",
            ));
        }
        // SAFETY: the tag verified: a process of this family running this executable (both
        // covered by the tag) serialized it above, from an `fn()`, so the offset names that
        // function here too.
        Ok(SharedFn(unsafe { resolve::<fn()>(address_at(offset)) }))
    }
}
