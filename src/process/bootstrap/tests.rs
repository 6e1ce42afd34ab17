//! Tests of the function references, the bootstrap header and the bootstrap message.

use super::child::receive_job;
use super::function_ref::{offset_of, tag_of, Kind};
use super::*;
use crate::codec::{self, FdTable};
use crate::process::runtime;
use crate::process::{AuthKey, StartMethod};
use crate::{sys, Error};

static CALLED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn action() {
    CALLED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

fn other_action() {
    CALLED.fetch_add(100, std::sync::atomic::Ordering::SeqCst);
}

fn add_one(x: u64) -> u64 {
    x + 1
}

fn times_ten(x: u64) -> u64 {
    x * 10
}

fn returned(outcome: Outcome) -> u64 {
    match outcome {
        Outcome::Returned(bytes, _) => codec::decode(&bytes).unwrap(),
        Outcome::Failed(f) => panic!("the call failed: {f:?}"),
    }
}

/// The pickle of a `SharedFn` as a peer would write it, with any tag.
fn shared_fn_bytes(function: fn(), tag: &[u8]) -> Vec<u8> {
    let exe = sys::exe_identity().unwrap();
    codec::encode(&(
        offset_of(function as usize),
        exe,
        serde_bytes::Bytes::new(tag),
    ))
    .unwrap()
}

fn family_key() -> AuthKey {
    runtime::runtime().identity().authkey
}

#[test]
fn shared_fn_round_trips_in_the_family() {
    let bytes = codec::encode(&SharedFn(action)).unwrap();
    let SharedFn(f) = codec::decode(&bytes).unwrap();
    assert_eq!(f as usize, action as fn() as usize);
}

/// A forged tag, a tag for another function, or one made with another family's key is
/// refused with the typed error, and nothing is called.
#[test]
fn forged_or_foreign_shared_fn_is_refused() {
    let exe = sys::exe_identity().unwrap();
    let good = tag_of(
        &family_key(),
        Kind::Plain,
        &exe,
        &[offset_of(action as fn() as usize)],
    );
    let mut flipped = good;
    flipped[0] ^= 1;
    let foreign = tag_of(
        &AuthKey::random(),
        Kind::Plain,
        &exe,
        &[offset_of(action as fn() as usize)],
    );
    let before = CALLED.load(std::sync::atomic::Ordering::SeqCst);
    for bytes in [
        shared_fn_bytes(action, &flipped),
        shared_fn_bytes(other_action, &good),
        shared_fn_bytes(action, &foreign),
        shared_fn_bytes(action, &good[..8]),
        shared_fn_bytes(action, &[]),
    ] {
        let err = codec::decode::<SharedFn>(&bytes).unwrap_err();
        assert!(
            matches!(
                err,
                Error::UnauthenticatedFunction {
                    what: "a barrier action"
                }
            ),
            "{err}"
        );
    }
    assert_eq!(CALLED.load(std::sync::atomic::Ordering::SeqCst), before);
    // The good tag still passes: the refusals were about the tags.
    let SharedFn(f) = codec::decode(&shared_fn_bytes(action, &good)).unwrap();
    assert_eq!(f as usize, action as fn() as usize);
}

/// A call tag never passes for a plain-function tag over the same numbers.
#[test]
fn tags_are_bound_to_their_kind() {
    let exe = sys::exe_identity().unwrap();
    let offset = offset_of(action as fn() as usize);
    let key = family_key();
    assert_ne!(
        tag_of(&key, Kind::Plain, &exe, &[offset]),
        tag_of(&key, Kind::Call, &exe, &[offset])
    );
    let other_exe = [exe[0], exe[1] + 1, exe[2], exe[3], exe[4]];
    assert_ne!(
        tag_of(&key, Kind::Plain, &exe, &[offset]),
        tag_of(&key, Kind::Plain, &other_exe, &[offset])
    );
}

#[test]
fn entry_verifies_and_runs() {
    let entry = TaggedCall::new(
        trampoline::<u64, u64> as Trampoline,
        add_one as fn(u64) -> u64 as usize,
    );
    let bytes = entry.to_bytes();
    let call = TaggedCall::from_bytes(&bytes)
        .verify(&family_key(), "a pool task")
        .unwrap();
    let args = codec::encode(&41u64).unwrap();
    assert_eq!(returned(call.run(&args, &mut FdTable::default())), 42);
}

/// An entry whose offsets were changed (here to another function of the same type, which
/// would run if the tag were not checked), whose tag was damaged, or that was tagged with
/// another family's key is refused.
#[test]
fn forged_or_foreign_entry_is_refused() {
    let good = TaggedCall::new(
        trampoline::<u64, u64> as Trampoline,
        add_one as fn(u64) -> u64 as usize,
    )
    .to_bytes();
    let other = TaggedCall::new(
        trampoline::<u64, u64> as Trampoline,
        times_ten as fn(u64) -> u64 as usize,
    )
    .to_bytes();
    let mut swapped = good;
    swapped[8..16].copy_from_slice(&other[8..16]);
    let mut damaged = good;
    damaged[TaggedCall::LEN - 1] ^= 0x80;
    for bytes in [swapped, damaged] {
        let err = TaggedCall::from_bytes(&bytes)
            .verify(&family_key(), "a pool task")
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::UnauthenticatedFunction {
                    what: "a pool task"
                }
            ),
            "{err}"
        );
    }
    let err = TaggedCall::from_bytes(&good)
        .verify(&AuthKey::random(), "a pool task")
        .unwrap_err();
    assert!(
        matches!(err, Error::UnauthenticatedFunction { .. }),
        "{err}"
    );
}

/// The verifier remembers what passed, and never what failed.
#[test]
fn verifier_remembers_only_verified_entries() {
    let mut verifier = Verifier::new();
    let good = TaggedCall::new(
        trampoline::<u64, u64> as Trampoline,
        add_one as fn(u64) -> u64 as usize,
    );
    let mut forged_bytes = good.to_bytes();
    forged_bytes[3] ^= 4;
    let forged = TaggedCall::from_bytes(&forged_bytes);
    for _ in 0..3 {
        assert!(verifier.verify(forged, "a pool task").is_err());
        assert!(verifier.verify(good, "a pool task").is_ok());
    }
    assert_eq!(verifier.passed, [good]);
}

#[test]
fn header_round_trips() {
    let header = Header {
        nonce: 7,
        exe: sys::exe_identity().unwrap(),
        entry: TaggedCall::new(
            trampoline::<u64, u64> as Trampoline,
            add_one as fn(u64) -> u64 as usize,
        ),
        authkey: *family_key().as_bytes(),
        parent_pid: 12,
        daemon: true,
        start_method: StartMethod::Spawn,
        name: "Process-1".into(),
    };
    assert_eq!(Header::from_bytes(&header.to_bytes()), Some(header));
}

/// A bootstrap message whose function reference does not verify with the key it brings
/// (here: the offsets of another function under a genuine tag) is refused as
/// unauthenticated, before anything is called; the genuine one is accepted.
#[test]
fn bootstrap_message_with_a_forged_reference_is_refused() {
    let message = |entry: TaggedCall| {
        let header = Header {
            nonce: 9,
            exe: sys::exe_identity().unwrap(),
            entry,
            authkey: *family_key().as_bytes(),
            parent_pid: 1,
            daemon: false,
            start_method: StartMethod::Spawn,
            name: "Process-9".into(),
        }
        .to_bytes();
        let (ours, theirs) = crate::Pipe::new().unwrap();
        let (alive, _write) = sys::pipe().unwrap();
        let args = codec::encode(&1u64).unwrap();
        let len = (header.len() as u32).to_le_bytes();
        ours.send_parts(&[&len, &header, &args], &[alive]).unwrap();
        receive_job(&theirs, Some(9))
    };
    let good = TaggedCall::new(
        trampoline::<u64, u64> as Trampoline,
        add_one as fn(u64) -> u64 as usize,
    );
    let other = TaggedCall::new(
        trampoline::<u64, u64> as Trampoline,
        times_ten as fn(u64) -> u64 as usize,
    );
    let mut forged = good;
    forged.function = other.function;
    assert!(matches!(message(forged), Err(Failure::Unauthenticated)));
    let Ok((_, call, frame, args_at, mut fds)) = message(good) else {
        panic!("the genuine message was refused");
    };
    assert_eq!(returned(call.run(&frame[args_at..], &mut fds)), 2);
}
