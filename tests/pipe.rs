//! Tests for `Pipe` and `Connection`: duplex and one-way pipes, framing, poll, large messages,
//! closed peers, and connection ends passed to children.
//!
//! Behaviours ported from CPython cite the original test and the CATALOGUE.md row.

mod common;

use std::time::{Duration, Instant};

use common::{sleep_ms, with};
use multiproc::{ByteBuf, Connection, Error, Pipe, Process, RecvEnd, SendEnd};
use sha2::{Digest, Sha256};

/// Echoes every message back, bytes for bytes, until the peer hangs up.
fn echo_bytes(conn: Connection) -> usize {
    let mut n = 0;
    while let Ok(msg) = conn.recv_bytes() {
        conn.send_bytes(&msg).unwrap();
        n += 1;
    }
    n
}

/// Receives pickled values of one shape, sends them back re-pickled, until the peer hangs up.
fn echo_values(conn: Connection) {
    while let Ok(v) = conn.recv::<(i32, String, f64)>() {
        conn.send(&v).unwrap();
        let list: Vec<Option<u8>> = conn.recv().unwrap();
        conn.send(&list).unwrap();
        let bytes: ByteBuf = conn.recv().unwrap();
        conn.send(&bytes).unwrap();
    }
}

#[test]
fn smoke() {
    let (a, b) = Pipe::new().unwrap();
    a.send(&"ping").unwrap();
    assert_eq!(b.recv::<String>().unwrap(), "ping");
    b.send(&"pong").unwrap();
    assert_eq!(a.recv::<String>().unwrap(), "pong");
}

each_method! {
    /// Values sent from either end arrive at the other in order and unchanged.
    /// CATALOGUE CONN-01. CPython: `_TestConnection.test_connection`.
    fn duplex_echo_child(method: StartMethod) {
        let (here, there) = Pipe::new().unwrap();
        let mut child = with(method).spawn(echo_values, there).unwrap();
        here.send(&(1, "two", 3.0)).unwrap();
        here.send(&vec![Some(1u8), None]).unwrap();
        here.send(&ByteBuf::from(b"bytes".to_vec())).unwrap();
        assert_eq!(here.recv::<(i32, String, f64)>().unwrap(), (1, "two".into(), 3.0));
        assert_eq!(here.recv::<Vec<Option<u8>>>().unwrap(), vec![Some(1), None]);
        assert_eq!(here.recv::<ByteBuf>().unwrap().into_vec(), b"bytes");
        drop(here);
        child.join().unwrap();
    }
}

fn sha(data: &[u8]) -> Vec<u8> {
    Sha256::digest(data).to_vec()
}

fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    // xorshift: deterministic, incompressible enough to catch reordering or truncation.
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

each_method! {
    /// 16 MiB and 64 MiB messages round-trip whole through a child (compared by hash); after
    /// the child exits, `recv` reports `Disconnected`. CATALOGUE CONN-02, acceptance
    /// scenario 16. CPython: `_TestConnection.test_connection`.
    fn large_messages(method: StartMethod) {
        let (here, there) = Pipe::new().unwrap();
        let mut child = with(method).spawn(echo_bytes, there).unwrap();
        for (size, seed) in [(16 << 20, 1), (64 << 20, 2), (0, 3), (1, 4)] {
            let data = random_bytes(size, seed);
            here.send_bytes(&data).unwrap();
            let back = here.recv_bytes().unwrap();
            assert_eq!(back.len(), size);
            assert_eq!(sha(&back), sha(&data));
        }
        // A large pickled value, on the fast bytes path.
        let data = ByteBuf::from(random_bytes(8 << 20, 5));
        here.send(&data).unwrap();
        assert_eq!(sha(&here.recv_bytes().map(|b| serde_pickle::from_slice::<ByteBuf>(&b, Default::default()).unwrap()).unwrap()), sha(&data));
        let mut writer = here.try_clone().unwrap();
        writer.close();
        // Only our last copy closing ends the child's loop.
        drop(here);
        assert_eq!(child.join().unwrap(), 5);
    }
}

/// CATALOGUE CONN-03, acceptance scenario 18. CPython: `_TestConnection.test_connection`
/// (`recv_bytes_into` with an offset, `BufferTooShort`).
#[test]
fn recv_bytes_into_and_buffer_too_short() {
    let (a, b) = Pipe::new().unwrap();
    a.send_bytes(b"hello").unwrap();
    let mut buf = [0u8; 16];
    let n = b.recv_bytes_into(&mut buf[3..]).unwrap();
    assert_eq!(n, 5);
    assert_eq!(&buf[3..8], b"hello");
    assert_eq!(&buf[..3], &[0, 0, 0]);

    let long: Vec<u8> = (0..110).collect();
    a.send_bytes(&long).unwrap();
    a.send_bytes(b"next").unwrap();
    let mut small = [0u8; 40];
    match b.recv_bytes_into(&mut small) {
        Err(Error::BufferTooShort(whole)) => assert_eq!(whole, long),
        other => panic!("expected BufferTooShort, got {other:?}"),
    }
    assert_eq!(b.recv_bytes().unwrap(), b"next");
}

/// CATALOGUE CONN-04, CONN-09. CPython: `_TestConnection.test_connection`,
/// `_TestPoll.test_empty_string`, `test_dont_merge`.
#[test]
fn poll_semantics() {
    let (a, b) = Pipe::new().unwrap();
    assert!(!b.poll(Duration::ZERO).unwrap());
    let start = Instant::now();
    assert!(!b.poll(Duration::from_millis(100)).unwrap());
    assert!(start.elapsed() >= Duration::from_millis(50));

    a.send_bytes(b"").unwrap();
    for _ in 0..3 {
        assert!(b.poll(Duration::ZERO).unwrap(), "polling must not consume");
    }
    assert_eq!(b.recv_bytes().unwrap(), b"");
    assert!(!b.poll(Duration::ZERO).unwrap());
}

fn send_boundaries(tx: SendEnd) {
    for m in [&b"a"[..], b"", b"bc", b"", b"", b"def"] {
        tx.send_bytes(m).unwrap();
    }
}

each_method! {
    /// Messages keep their boundaries, empty ones included; nothing is merged or split.
    /// CATALOGUE CONN-10, CONN-11, acceptance scenario 17. CPython: `_TestPoll.test_strings`,
    /// `test_dont_merge`.
    fn boundaries(method: StartMethod) {
        let (rx, tx) = Pipe::one_way().unwrap();
        let mut child = with(method).spawn(send_boundaries, tx).unwrap();
        child.join().unwrap();
        let mut got = Vec::new();
        while rx.poll(Duration::ZERO).unwrap() {
            match rx.recv_bytes() {
                Ok(m) => got.push(m),
                Err(Error::Disconnected) => break,
                Err(e) => panic!("{e}"),
            }
        }
        let expected: Vec<Vec<u8>> =
            vec![b"a".to_vec(), vec![], b"bc".to_vec(), vec![], vec![], b"def".to_vec()];
        assert_eq!(got, expected);
    }
}

each_method! {
    /// Once every copy of the peer is closed, `recv` returns `Disconnected`, also when the
    /// peer was a child that exited. CATALOGUE CONN-05, CONN-07. CPython:
    /// `_TestConnection.test_connection`, `test_spawn_close`.
    fn peer_closed(method: StartMethod) {
        let (here, there) = Pipe::new().unwrap();
        // `there` moves into the child; the parent's copy is gone right after start.
        let mut child = with(method).spawn(|c: Connection| c.send(&"bye").unwrap(), there).unwrap();
        assert_eq!(here.recv::<String>().unwrap(), "bye");
        child.join().unwrap();
        assert!(matches!(here.recv::<String>(), Err(Error::Disconnected)));
        assert!(matches!(here.recv_bytes(), Err(Error::Disconnected)));
        assert!(matches!(here.send(&1), Err(Error::Disconnected)));
    }
}

/// CATALOGUE CONN-06. CPython: `_TestConnection.test_duplex_false`. The wrong direction does
/// not compile (see the `compile_fail` examples on `RecvEnd` and `SendEnd`); here, the right
/// one works and each end reports its own closure.
#[test]
fn one_way_pipe() {
    let (rx, tx): (RecvEnd, SendEnd) = Pipe::one_way().unwrap();
    tx.send(&[1u8, 2, 3]).unwrap();
    assert_eq!(rx.recv::<Vec<u8>>().unwrap(), vec![1, 2, 3]);
    drop(tx);
    assert!(matches!(rx.recv_bytes(), Err(Error::Disconnected)));
}

/// After `close()`, every call returns `Closed`; closing twice is fine.
/// CATALOGUE CONN-08. CPython: `_TestConnection.test_context`.
#[test]
fn closed_end() {
    let (mut a, _b) = Pipe::new().unwrap();
    a.close();
    a.close();
    assert!(a.is_closed());
    assert!(matches!(a.send(&1), Err(Error::Closed)));
    assert!(matches!(a.send_bytes(b"x"), Err(Error::Closed)));
    assert!(matches!(a.recv::<i32>(), Err(Error::Closed)));
    assert!(matches!(a.poll(Duration::ZERO), Err(Error::Closed)));
    assert!(matches!(a.try_clone(), Err(Error::Closed)));
    // A closed end cannot be sent to a child either.
    assert!(matches!(
        Process::spawn(|_: Connection| (), a),
        Err(Error::Serialize { .. })
    ));
}

/// `recv_timeout` gives up after about the timeout and consumes nothing.
#[test]
fn recv_timeout() {
    let (a, b) = Pipe::new().unwrap();
    let start = Instant::now();
    assert!(matches!(
        b.recv_timeout::<u8>(Duration::from_millis(100)),
        Err(Error::Timeout)
    ));
    assert!(start.elapsed() >= Duration::from_millis(50));
    a.send(&9u8).unwrap();
    assert_eq!(b.recv_timeout::<u8>(Duration::from_secs(10)).unwrap(), 9);
}

/// A timeout too long to add to the clock waits as long as it takes, as `recv` does, rather
/// than failing (CPython's `Connection.poll` takes any timeout).
#[test]
fn recv_timeout_of_duration_max_waits_without_limit() {
    let (a, b) = Pipe::new().unwrap();
    a.send(&7u8).unwrap();
    assert_eq!(b.recv_timeout::<u8>(Duration::MAX).unwrap(), 7);
    a.send(&8u8).unwrap();
    assert_eq!(b.recv_timeout::<u8>(Duration::MAX).unwrap(), 8);
}

fn talk_back(conn: Connection) -> Vec<String> {
    let mut heard = Vec::new();
    for i in 0..3 {
        let msg: String = conn.recv().unwrap();
        conn.send(&format!("{msg} -> reply {i}")).unwrap();
        heard.push(msg);
    }
    heard
}

each_method! {
    /// A pipe end passed to a child (spawn: a re-executed binary) works both ways.
    fn pass_pipe_end_to_child(method: StartMethod) {
        let (here, there) = Pipe::new().unwrap();
        let mut child = with(method).spawn(talk_back, there).unwrap();
        for i in 0..3 {
            here.send(&format!("msg {i}")).unwrap();
            assert_eq!(here.recv::<String>().unwrap(), format!("msg {i} -> reply {i}"));
        }
        assert_eq!(child.join().unwrap(), vec!["msg 0", "msg 1", "msg 2"]);
    }
}

fn receive_a_connection(control: Connection) -> String {
    let inner: Connection = control.recv().unwrap();
    let msg: String = inner.recv().unwrap();
    inner.send(&format!("{msg}!")).unwrap();
    msg
}

each_method! {
    /// A connection sent inside a message arrives working in another process.
    /// CATALOGUE CONN-17. CPython: `_TestPicklingConnections.test_pickling`.
    fn connection_inside_a_message(method: StartMethod) {
        let (control, control_there) = Pipe::new().unwrap();
        let mut child = with(method).spawn(receive_a_connection, control_there).unwrap();
        let (inner_here, inner_there) = Pipe::new().unwrap();
        control.send(&inner_there).unwrap();
        drop(inner_there);
        inner_here.send(&"hi").unwrap();
        assert_eq!(inner_here.recv::<String>().unwrap(), "hi!");
        assert_eq!(child.join().unwrap(), "hi");
    }
}

/// A connection cannot be pickled outside a message to another process: a typed error, not
/// garbage bytes.
#[test]
fn connection_outside_a_message() {
    let (a, _b) = Pipe::new().unwrap();
    let err = serde_pickle::to_vec(&a, Default::default()).unwrap_err();
    assert!(err.to_string().contains("can only be serialized"), "{err}");
}

/// Two threads share one connection: one sends while the other receives, messages stay whole.
#[test]
fn shared_between_threads() {
    let (a, b) = Pipe::new().unwrap();
    let mut child = Process::spawn(echo_bytes, b).unwrap();
    let payload = random_bytes(1 << 20, 9);
    std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..20 {
                a.send_bytes(&payload).unwrap();
            }
        });
        s.spawn(|| {
            for _ in 0..20 {
                assert_eq!(sha(&a.recv_bytes().unwrap()), sha(&payload));
            }
        });
    });
    drop(a);
    assert_eq!(child.join().unwrap(), 20);
}

extern "C" fn on_sigusr1(_: libc::c_int) {}

/// Runs in a child: a handler without SA_RESTART is installed and the process is signalled
/// repeatedly while the main thread is blocked sending into a full pipe and receiving.
fn io_under_signals(_: ()) -> usize {
    // SAFETY: a handler that does nothing; no SA_RESTART, so blocking calls see EINTR.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigusr1 as extern "C" fn(libc::c_int) as usize;
        libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut());
    }
    let me = std::process::id() as i32;
    let (a, b) = Pipe::new().unwrap();
    let pinger = std::thread::spawn(move || {
        for _ in 0..20 {
            sleep_ms(10);
            // SAFETY: signalling our own process.
            unsafe { libc::kill(me, libc::SIGUSR1) };
        }
        sleep_ms(100);
        b.recv_bytes().unwrap().len()
    });
    // 4 MiB does not fit in the socket buffer: the send blocks until the pinger reads.
    a.send_bytes(&vec![7u8; 4 << 20]).unwrap();
    pinger.join().unwrap()
}

/// Blocking send and recv survive signals with handlers (EINTR is retried).
/// CATALOGUE CONN-13. CPython: `TestIgnoreEINTR.test_ignore` (bpo-17097).
#[test]
fn io_survives_eintr() {
    let mut p = Process::spawn(io_under_signals, ()).unwrap();
    assert_eq!(p.join().unwrap(), 4 << 20);
}

/// Messages keep CPython's length framing (`multiprocessing.connection`): a raw reader of a
/// small message's record sees the 4-byte big-endian length, then the bytes.
#[test]
fn cpython_framing() {
    use std::io::Read;
    use std::os::fd::FromRawFd;
    let (a, b) = Pipe::new().unwrap();
    a.send_bytes(b"abc").unwrap();
    let fd = b.as_fd().unwrap().try_clone_to_owned().unwrap();
    // SAFETY: the duplicate is owned by this File alone.
    let mut raw = unsafe { std::fs::File::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(fd)) };
    let mut buf = [0u8; 7];
    raw.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"\0\0\0\x03abc");
}

/// Reads `Some(n)` messages from a shared end until a `None` arrives; returns what it got.
fn shared_reader(rx: RecvEnd) -> Vec<u32> {
    let mut got = Vec::new();
    while let Some(n) = rx.recv::<Option<u32>>().unwrap() {
        got.push(n);
    }
    got
}

each_method! {
    /// Two processes reading one shared end at the same time each receive whole messages, and
    /// every message reaches exactly one of them: a reader never reads ahead into a message
    /// that another process could take. CATALOGUE CONN-12. CPython: `_TestPoll.test_boundaries`.
    fn shared_end_delivers_each_message_once(method: StartMethod) {
        let (rx, tx) = Pipe::one_way().unwrap();
        let mut a = with(method).spawn(shared_reader, rx.try_clone().unwrap()).unwrap();
        let mut b = with(method).spawn(shared_reader, rx.try_clone().unwrap()).unwrap();
        drop(rx);
        for n in 0..2000u32 {
            tx.send(&Some(n)).unwrap();
        }
        tx.send(&None::<u32>).unwrap();
        tx.send(&None::<u32>).unwrap();
        let mut all = a.join().unwrap();
        all.extend(b.join().unwrap());
        all.sort_unstable();
        assert_eq!(all, (0..2000).collect::<Vec<_>>());
    }
}

/// `recv_timeout` keeps its deadline even while another thread is blocked in `recv` on the
/// same end.
#[test]
fn recv_timeout_with_a_blocked_reader() {
    let (a, b) = Pipe::new().unwrap();
    std::thread::scope(|s| {
        let blocked = s.spawn(|| b.recv::<u8>());
        sleep_ms(100);
        let start = Instant::now();
        assert!(matches!(
            b.recv_timeout::<u8>(Duration::from_millis(200)),
            Err(Error::Timeout)
        ));
        assert!(start.elapsed() >= Duration::from_millis(150));
        a.send(&7u8).unwrap();
        assert_eq!(blocked.join().unwrap().unwrap(), 7);
    });
}

/// Threads sending large (multi-record) messages through different clones of one end never
/// interleave their records.
#[test]
fn clones_send_large_messages_whole() {
    let (a, b) = Pipe::new().unwrap();
    let payloads: Vec<Vec<u8>> = (0..4).map(|i| random_bytes(300_000, i + 10)).collect();
    std::thread::scope(|s| {
        for p in &payloads {
            let tx = a.try_clone().unwrap();
            s.spawn(move || {
                for _ in 0..10 {
                    tx.send_bytes(p).unwrap();
                }
            });
        }
        let wanted: Vec<Vec<u8>> = payloads.iter().map(|p| sha(p)).collect();
        for _ in 0..40 {
            let got = sha(&b.recv_bytes().unwrap());
            assert!(wanted.contains(&got));
        }
    });
}
