//! Tests for items over 2 GiB (issue 12 item 6): a 2 GiB + 1 byte message travels whole
//! through a `Connection` (raw bytes and pickled) and a `Queue`.
//!
//! CPython frames a message over 2 GiB − 1 with the length −1 and then an 8-byte length
//! (bpo-17560); a pickle of `bytes` that large needs `BINBYTES8` (protocol 4) or `BINBYTES`
//! with its 4-byte unsigned length. Each test holds a few GiB at its peak, so they take turns
//! (cargo runs the tests of a file on several threads).

mod common;

use std::sync::Mutex;
use std::time::Duration;

use multiproc::{ByteBuf, Connection, Pipe, Process, Queue, StartMethod};

/// 2 GiB + 1 byte: one past what a 4-byte signed length can frame.
const HUGE: usize = (2 << 30) + 1;

/// Serialises the tests of this file: each needs several GiB.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Every 4 KiB block starts with its index (8 bytes, little-endian); the rest is zero, except
/// the last byte of the payload, which is 0xA5.
fn payload(len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    for (i, block) in bytes.chunks_mut(4096).enumerate() {
        let mark = (i as u64).to_le_bytes();
        let n = block.len().min(8);
        block[..n].copy_from_slice(&mark[..n]);
    }
    if let Some(last) = bytes.last_mut() {
        *last = 0xA5;
    }
    bytes
}

/// Whether `bytes` is exactly `payload(len)`, compared block by block (no second copy).
fn is_payload(bytes: &[u8], len: usize) -> bool {
    if bytes.len() != len {
        return false;
    }
    let mut expected = [0u8; 4096];
    let blocks = bytes.chunks(4096).count();
    bytes.chunks(4096).enumerate().all(|(i, block)| {
        expected = [0; 4096];
        let mark = (i as u64).to_le_bytes();
        let n = block.len().min(8);
        expected[..n].copy_from_slice(&mark[..n]);
        if i + 1 == blocks {
            expected[block.len() - 1] = 0xA5;
        }
        block == &expected[..block.len()]
    })
}

#[test]
fn smoke() {
    let _turn = one_at_a_time();
    let bytes = payload(10_000);
    assert!(is_payload(&bytes, 10_000));
    assert!(!is_payload(&bytes[..9_999], 10_000));
    let (a, b) = Pipe::new().unwrap();
    a.send_bytes(&bytes).unwrap();
    assert!(is_payload(&b.recv_bytes().unwrap(), 10_000));
}

/// `send_bytes` of 2 GiB + 1 from a thread, `recv_bytes` here: the long header travels and
/// the bytes arrive whole.
#[test]
fn send_bytes_over_2_gib() {
    let _turn = one_at_a_time();
    let (a, b) = Pipe::new().unwrap();
    let sender = std::thread::spawn(move || {
        let bytes = payload(HUGE);
        a.send_bytes(&bytes)
    });
    let got = b.recv_bytes().unwrap();
    sender.join().unwrap().unwrap();
    assert!(is_payload(&got, HUGE));
}

/// The same into a caller's buffer (`recv_bytes_into`).
#[test]
fn recv_bytes_into_over_2_gib() {
    let _turn = one_at_a_time();
    let (a, b) = Pipe::new().unwrap();
    let sender = std::thread::spawn(move || {
        let bytes = payload(HUGE);
        a.send_bytes(&bytes)
    });
    let mut buf = vec![0u8; HUGE];
    assert_eq!(b.recv_bytes_into(&mut buf).unwrap(), HUGE);
    sender.join().unwrap().unwrap();
    assert!(is_payload(&buf, HUGE));
}

/// A child sends a pickled 2 GiB + 1 byte `ByteBuf` on a `Connection`.
fn send_huge_pickled(conn: Connection) {
    conn.send(&ByteBuf::from(payload(HUGE))).unwrap();
}

#[test]
fn send_pickled_over_2_gib() {
    let _turn = one_at_a_time();
    let (ours, theirs) = Pipe::new().unwrap();
    let mut child = Process::builder()
        .start_method(StartMethod::Forkserver)
        .spawn(send_huge_pickled, theirs)
        .unwrap();
    let got: ByteBuf = ours.recv_timeout(Duration::from_secs(300)).unwrap();
    child.join().unwrap();
    assert!(is_payload(&got, HUGE));
}

/// A child puts a 2 GiB + 1 byte `ByteBuf` on a queue; it arrives whole here.
fn put_huge(q: Queue<ByteBuf>) {
    q.put(&ByteBuf::from(payload(HUGE))).unwrap();
}

#[test]
fn queue_put_over_2_gib() {
    let _turn = one_at_a_time();
    let q = Queue::new().unwrap();
    let mut child = Process::builder()
        .start_method(StartMethod::Forkserver)
        .spawn(put_huge, q.try_clone().unwrap())
        .unwrap();
    let got = q.get_timeout(Duration::from_secs(300)).unwrap();
    child.join().unwrap();
    assert!(is_payload(&got, HUGE));
}
