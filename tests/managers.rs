//! Tests for managers: a Rust server and Rust clients, CATALOGUE §14 and §6 ported with their
//! CPython names, and hostile peers (garbage, truncated and oversized frames, deep pickles,
//! globals, idle connections) that must cost one connection and nothing else.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use multiproc::managers::{
    bind_arguments, ChallengeForm, ConnectOptions, Manager, ManagerServer, PyException, QueueProxy,
    Referent, ServedArray, ServedBarrier, ServedCondition, ServedDict, ServedEvent, ServedList,
    ServedLock, ServedNamespace, ServedQueue, ServedSemaphore, ServedValue, ServerHandle,
};
use multiproc::pickle::{self, Limits, PyValue};
use multiproc::{ByteBuf, Error, Process, WireError};

type Log = Arc<Mutex<Vec<String>>>;

/// A server whose log lines are collected instead of printed.
fn quiet(key: &[u8]) -> (ManagerServer, Log) {
    let mut server = ManagerServer::bind("127.0.0.1:0", key).unwrap();
    let log: Log = Arc::default();
    let sink = log.clone();
    server.on_log(move |line| sink.lock().unwrap().push(line.to_string()));
    (server, log)
}

fn queue_server(key: &[u8]) -> (ServerHandle, ServedQueue, Log) {
    let (mut server, log) = quiet(key);
    let q = server.register_queue("get_task_queue", 0);
    (server.start_thread().unwrap(), q, log)
}

/// One full round trip from a fresh client: the server still serves.
fn still_serves(address: SocketAddr, key: &[u8]) {
    let q = Manager::connect(address, key)
        .unwrap()
        .get_queue::<String>("get_task_queue")
        .unwrap();
    q.put(&"alive".to_string()).unwrap();
    assert_eq!(q.get().unwrap(), "alive");
}

fn wait_for_log(log: &Log, needle: &str) -> Vec<String> {
    let found = common::eventually(Duration::from_secs(20), || {
        log.lock().unwrap().iter().any(|l| l.contains(needle))
    });
    let lines = log.lock().unwrap().clone();
    assert!(found, "no log line with {needle:?}: {lines:?}");
    lines
}

#[test]
fn smoke() {
    let (server, tasks, _) = queue_server(b"abc");
    let q = Manager::connect(server.address(), b"abc")
        .unwrap()
        .get_queue::<(u32, String)>("get_task_queue")
        .unwrap();
    q.put(&(7, "seven".into())).unwrap();
    assert_eq!(tasks.get::<(u32, String)>().unwrap(), (7, "seven".into()));
    tasks.put(&(8, "eight")).unwrap();
    assert_eq!(q.get().unwrap(), (8, "eight".into()));
}

type Remote = (String, Option<i32>, bool, f64, String, ByteBuf);

fn producer((address, key, item): (String, ByteBuf, Remote)) {
    let q = Manager::connect(address.as_str(), &key)
        .unwrap()
        .get_queue::<Remote>("get_task_queue")
        .unwrap();
    q.put(&item).unwrap();
}

/// MGR-01. CPython: _TestRemoteManager.test_remote
#[test]
fn remote_manager_carries_every_value() {
    let key: Vec<u8> = (0..32).map(|i| (i * 37 + 11) as u8).collect();
    let (server, _, _) = queue_server(&key);
    let item: Remote = (
        "hello world".into(),
        None,
        true,
        2.25,
        "h\u{e9}llo w\u{f6}rld".into(),
        ByteBuf::from(b"hall\xe5 v\xe4rlden".to_vec()),
    );
    let mut child = Process::spawn(
        producer,
        (
            server.address().to_string(),
            ByteBuf::from(key.clone()),
            item.clone(),
        ),
    )
    .unwrap();
    child.join().unwrap();
    let q = Manager::connect(server.address(), &key)
        .unwrap()
        .get_queue::<Remote>("get_task_queue")
        .unwrap();
    assert_eq!(q.get_timeout(Duration::from_secs(10)).unwrap(), item);
}

struct Unserializable;

impl serde::Serialize for Unserializable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("this value refuses to travel"))
    }
}

/// MGR-02. CPython: _TestRemoteManager.test_remote (the unpicklable value)
#[test]
fn unserializable_value_fails_at_the_client() {
    let (mut server, _) = quiet(b"k");
    server.register_queue("q", 0);
    let server = server.start_thread().unwrap();
    let q = Manager::connect(server.address(), b"k")
        .unwrap()
        .get_queue::<Unserializable>("q")
        .unwrap();
    let err = q.put(&Unserializable).unwrap_err();
    assert!(err.to_string().contains("refuses to travel"), "{err}");
    assert_eq!(q.qsize().unwrap(), 0); // the connection stays usable
}

/// MGR-03. CPython: _TestManagerRestart.test_rapid_restart
#[test]
fn rapid_restart_on_the_same_address() {
    let (server, _, _) = queue_server(b"k");
    let address = server.address();
    still_serves(address, b"k");
    server.shutdown();
    let mut again = ManagerServer::bind(address, b"k").unwrap();
    again.register_queue("get_task_queue", 0);
    let again = again.start_thread().unwrap();
    still_serves(address, b"k");
    again.shutdown();
}

struct Counter(Mutex<i64>);

impl Referent for Counter {
    fn exposed(&self) -> Vec<String> {
        vec!["add".into(), "_secret".into()]
    }

    fn call(
        &self,
        method: &str,
        args: Vec<PyValue>,
        kwargs: Vec<(String, PyValue)>,
    ) -> Result<PyValue, PyException> {
        match method {
            "add" => {
                let [by] =
                    <[PyValue; 1]>::try_from(bind_arguments("add", args, kwargs, &[("by", None)])?)
                        .map_err(|_| PyException::type_error("add() takes one argument"))?;
                let by: i64 =
                    pickle::from_value(by).map_err(|e| PyException::type_error(&e.to_string()))?;
                let mut n = self.0.lock().unwrap();
                *n += by;
                Ok(PyValue::Int(*n))
            }
            "_secret" => Ok(PyValue::Str("explicitly exposed".into())),
            "hidden" => Ok(PyValue::Str("must never be reached".into())),
            _ => Err(PyException::new("builtins", "AttributeError", method)),
        }
    }
}

/// MGR-04. CPython: _TestMyManager.test_mymanager (exposed methods)
#[test]
fn only_exposed_methods_are_callable() {
    let (mut server, _) = quiet(b"k");
    server.register("Counter", || Arc::new(Counter(Mutex::new(0))));
    let server = server.start_thread().unwrap();
    let manager = Manager::connect(server.address(), b"k").unwrap();
    let counter = manager.create("Counter").unwrap();
    assert_eq!(counter.exposed(), ["add", "_secret"]);
    assert_eq!(
        counter.call("add", vec![PyValue::Int(2)], vec![]).unwrap(),
        PyValue::Int(2)
    );
    assert_eq!(
        counter
            .call("add", vec![], vec![("by".into(), PyValue::Int(3))])
            .unwrap(),
        PyValue::Int(5)
    );
    assert_eq!(
        counter.call("_secret", vec![], vec![]).unwrap(),
        PyValue::Str("explicitly exposed".into())
    );
    match counter.call("hidden", vec![], vec![]) {
        Err(Error::Remote { message, .. }) => assert!(message.contains("hidden"), "{message}"),
        other => panic!("{other:?}"),
    }
    // A wrong argument is the method's own TypeError, reported as the Python class.
    match counter.call("add", vec![], vec![("bogus".into(), PyValue::Int(1))]) {
        Err(Error::Remote { class, message }) => {
            assert_eq!(class, "builtins.TypeError");
            assert!(message.contains("bogus"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // Each create makes a new object here: two objects, one reference each.
    let second = manager.create("Counter").unwrap();
    assert_ne!(second.ident(), counter.ident());
    assert_eq!(manager.number_of_objects().unwrap(), 2);
}

/// MGR-05. CPython: _TestMyManager.test_mymanager, TestManagerExceptions.test_queue_get
#[test]
fn remote_failures_keep_their_kind() {
    let (mut server, _) = quiet(b"k");
    server.register_queue("q", 1);
    let server = server.start_thread().unwrap();
    let q = Manager::connect(server.address(), b"k")
        .unwrap()
        .get_queue::<i32>("q")
        .unwrap();
    assert!(matches!(q.try_get(), Err(Error::Empty)));
    let t0 = Instant::now();
    assert!(matches!(
        q.get_timeout(Duration::from_millis(100)),
        Err(Error::Empty)
    ));
    assert!(t0.elapsed() >= Duration::from_millis(50));
    q.put(&1).unwrap();
    assert!(matches!(q.try_put(&2), Err(Error::Full)));
    assert!(matches!(
        q.put_timeout(&2, Duration::from_millis(50)),
        Err(Error::Full)
    ));
    let err = q
        .proxy()
        .call(
            "get",
            vec![],
            vec![("timeout".into(), PyValue::Float(-1.0))],
        )
        .unwrap_err();
    assert!(
        matches!(&err, Error::Remote { class, message } if class == "builtins.ValueError" && message.contains("non-negative")),
        "{err}"
    );
    assert!(matches!(q.task_done(), Ok(())));
    assert!(matches!(q.task_done(), Err(Error::Remote { .. })));
}

/// The served queue used in-process keeps CPython's `task_done` `ValueError` as the crate's own
/// `Error::TaskDoneTooOften`, as a `JoinableQueue` does. CPython: _TestQueue.test_task_done
#[test]
fn served_queue_task_done_too_often_is_typed() {
    let q = ServedQueue::new(0);
    assert!(matches!(q.task_done(), Err(Error::TaskDoneTooOften)));
    q.put(&1u8).unwrap();
    assert_eq!(q.get::<u8>().unwrap(), 1);
    q.task_done().unwrap();
    assert!(matches!(q.task_done(), Err(Error::TaskDoneTooOften)));
}

/// MGR-06. CPython: _TestMyManager.test_mymanager, test_mymanager_context,
/// test_mymanager_context_prestarted
#[test]
fn server_process_lifecycle() {
    // start() then shutdown(): the child exits 0.
    let (mut server, _) = quiet(b"k");
    server.register_queue("get_task_queue", 0);
    let mut child = server.start().unwrap();
    still_serves(child.address(), b"k");
    child.shutdown().unwrap();
    assert!(!common::pid_exists(child.pid()) || common::pid_state(child.pid()) == Some('Z'));

    // Scoped: dropping the handle shuts the server down.
    let (mut server, _) = quiet(b"k");
    server.register_queue("get_task_queue", 0);
    let child = server.start().unwrap();
    let (pid, address) = (child.pid(), child.address());
    still_serves(address, b"k");
    drop(child);
    assert!(!common::pid_exists(pid));
    assert!(Manager::connect(address, b"k").is_err());

    // A client's `shutdown` stops it too; shutdown() then only reaps it.
    let (server, _) = quiet(b"k");
    let mut child = server.start().unwrap();
    Manager::connect(child.address(), b"k")
        .unwrap()
        .shutdown()
        .unwrap();
    child.shutdown().unwrap();
}

fn check_bounded((address, key): (String, ByteBuf)) -> (usize, bool, bool, i32, i32) {
    let q = Manager::connect(address.as_str(), &key)
        .unwrap()
        .get_queue::<i32>("get_bounded_queue")
        .unwrap();
    let seen = (
        q.qsize().unwrap(),
        q.is_full().unwrap(),
        q.is_empty().unwrap(),
    );
    (seen.0, seen.1, seen.2, q.get().unwrap(), q.get().unwrap())
}

/// MGR-07. CPython: TestSyncManagerTypes.test_queue, test_joinable_queue
#[test]
fn bounded_queue_seen_from_another_process() {
    let (mut server, _) = quiet(b"k");
    let q = server.register_queue("get_bounded_queue", 2);
    let server = server.start_thread().unwrap();
    q.put(&5).unwrap();
    q.put(&6).unwrap();
    let mut child = Process::spawn(
        check_bounded,
        (server.address().to_string(), ByteBuf::from(b"k".to_vec())),
    )
    .unwrap();
    assert_eq!(child.join().unwrap(), (2, true, false, 5, 6));
    assert!(q.is_empty() && !q.is_full());
    // The joinable flavour: join returns once both items are marked done.
    assert!(q.join_timeout(Duration::from_millis(10)).is_err());
    q.task_done().unwrap();
    q.task_done().unwrap();
    q.join_timeout(Duration::from_secs(5)).unwrap();
}

/// MGR-08. CPython: OtherTest.test_deliver_challenge_auth_failure, _TestRemoteManager.test_remote
#[test]
fn wrong_authkey_is_refused_before_dispatch() {
    let (server, tasks, log) = queue_server(b"right");
    match Manager::connect(server.address(), b"wrong") {
        Err(Error::Wire(WireError::Auth { reason })) => {
            assert_eq!(reason, "digest sent was rejected")
        }
        other => panic!("{other:?}"),
    }
    let lines = wait_for_log(&log, "authentication failed");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(server.number_of_objects(), 0);
    assert!(tasks.is_empty());
    still_serves(server.address(), b"right");
}

fn send_frame(stream: &mut TcpStream, payload: &[u8]) {
    let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(payload);
    stream.write_all(&frame).unwrap();
}

/// Reads one frame; `None` at end of stream or on a reset.
fn recv_frame(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut header = [0u8; 4];
    stream.read_exact(&mut header).ok()?;
    let mut payload = vec![0; u32::from_be_bytes(header) as usize];
    stream.read_exact(&mut payload).ok()?;
    Some(payload)
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).unwrap();
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

fn hmac_md5(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<md5::Md5> as Mac>::new_from_slice(key).unwrap();
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// A hand-made client: answers the server's challenge (with MD5 when `md5`), then challenges
/// it in the legacy form and accepts whatever it answers. Returns whether it was welcomed.
fn raw_handshake(stream: &mut TcpStream, key: &[u8], md5: bool) -> bool {
    let challenge = recv_frame(stream).unwrap();
    let m = challenge.strip_prefix(b"#CHALLENGE#").unwrap();
    assert!(m.starts_with(b"{sha256}") && m.len() == 48, "{m:?}");
    let answer = if md5 {
        hmac_md5(key, m)
    } else {
        [&b"{sha256}"[..], &hmac_sha256(key, m)].concat()
    };
    send_frame(stream, &answer);
    if recv_frame(stream).as_deref() != Some(b"#WELCOME#") {
        return false;
    }
    send_frame(stream, &[&b"#CHALLENGE#"[..], &[7u8; 20]].concat());
    let reply = recv_frame(stream).unwrap();
    assert_eq!(
        reply,
        hmac_md5(key, &[7u8; 20]),
        "a legacy challenge gets raw MD5"
    );
    send_frame(stream, b"#WELCOME#");
    true
}

fn authenticated(address: SocketAddr, key: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    assert!(raw_handshake(&mut stream, key, false));
    stream
}

fn request(ident: Option<&str>, method: &str, args: Vec<PyValue>) -> Vec<u8> {
    pickle::dumps(&PyValue::Tuple(vec![
        ident.map_or(PyValue::None, |i| PyValue::Str(i.into())),
        PyValue::Str(method.into()),
        PyValue::Tuple(args),
        PyValue::Dict(vec![]),
    ]))
}

fn reply_kind(frame: &[u8]) -> String {
    match pickle::loads(frame).unwrap() {
        PyValue::Tuple(items) => items[0].as_str().unwrap().to_string(),
        other => panic!("{other:?}"),
    }
}

/// NET-06 on the client side: a server that rejects a right answer (bogus verdict), and one
/// that answers the client's challenge wrongly (bogus answer).
/// CPython: OtherTest.test_answer_challenge_auth_failure, test_deliver_challenge_auth_failure
#[test]
fn client_detects_bogus_verdict_and_bogus_answer() {
    for bogus_answer in [false, true] {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let fake = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let m = [&b"{sha256}"[..], &[1u8; 40]].concat();
            send_frame(&mut s, &[&b"#CHALLENGE#"[..], &m].concat());
            let _answer = recv_frame(&mut s).unwrap();
            if !bogus_answer {
                send_frame(&mut s, b"#FAILURE#");
                return;
            }
            send_frame(&mut s, b"#WELCOME#");
            let _challenge = recv_frame(&mut s).unwrap();
            send_frame(&mut s, &[&b"{sha256}"[..], &[0u8; 32]].concat());
            let verdict = recv_frame(&mut s).unwrap();
            assert_eq!(verdict, b"#FAILURE#");
        });
        match Manager::connect(address, b"k") {
            Err(Error::Wire(WireError::Auth { reason })) => assert_eq!(
                reason,
                if bogus_answer {
                    "digest received was wrong"
                } else {
                    "digest sent was rejected"
                }
            ),
            other => panic!("{other:?}"),
        }
        fake.join().unwrap();
    }
}

/// NET-07: both handshake forms, and strict mode. CPython: ChallengeResponseTest.test_challengeresponse
#[test]
fn both_challenge_forms_interoperate() {
    // A legacy-challenging server with a default client, and a legacy-challenging client.
    let (mut server, _) = quiet(b"k");
    server.challenge_form(ChallengeForm::LegacyMd5);
    server.register_queue("get_task_queue", 0);
    let server = server.start_thread().unwrap();
    still_serves(server.address(), b"k");
    let legacy = ConnectOptions {
        challenge_form: ChallengeForm::LegacyMd5,
        ..ConnectOptions::default()
    };
    Manager::connect_with(server.address(), b"k", legacy.clone()).unwrap();
    // A strict client refuses the legacy server? No: the server answers its {sha256}
    // challenge with {sha256}; strict only refuses MD5 answers.
    let strict = ConnectOptions {
        strict: true,
        ..ConnectOptions::default()
    };
    Manager::connect_with(server.address(), b"k", strict).unwrap();

    // A strict server refuses a client answering with raw MD5 (CPython <= 3.11) and welcomes
    // one answering with {sha256} (3.12+).
    let (mut server, log) = quiet(b"k");
    server.strict(true);
    let server = server.start_thread().unwrap();
    let mut md5_client = TcpStream::connect(server.address()).unwrap();
    assert!(!raw_handshake(&mut md5_client, b"k", true));
    let mut sha_client = TcpStream::connect(server.address()).unwrap();
    assert!(raw_handshake(&mut sha_client, b"k", false));
    wait_for_log(&log, "authentication failed");
    // Not strict: the same MD5 answer is welcome.
    let (server, _, _) = queue_server(b"k");
    let mut md5_client = TcpStream::connect(server.address()).unwrap();
    assert!(raw_handshake(&mut md5_client, b"k", true));
}

/// NET-09. CPython: _TestListener.test_empty_authkey (bpo-43952)
#[test]
fn empty_authkey_still_authenticates() {
    let (server, _, _) = queue_server(b"");
    still_serves(server.address(), b"");
    assert!(matches!(
        Manager::connect(server.address(), b"x"),
        Err(Error::Wire(WireError::Auth { .. }))
    ));
}

/// BEYOND-13: garbage before the handshake, an oversized handshake frame, an idle peer.
#[test]
fn hostile_peers_before_authentication() {
    let (mut server, log) = quiet(b"k");
    server.handshake_timeout(Duration::from_millis(300));
    server.register_queue("get_task_queue", 0);
    let server = server.start_thread().unwrap();
    let address = server.address();

    // Garbage instead of an answer: closed, logged, no reply but #FAILURE#.
    let mut garbage = TcpStream::connect(address).unwrap();
    let _challenge = recv_frame(&mut garbage).unwrap();
    garbage
        .write_all(b"\x00\x00\x00\x10GET / HTTP/1.1\r\n")
        .unwrap();
    assert_eq!(recv_frame(&mut garbage).as_deref(), Some(&b"#FAILURE#"[..]));
    assert_eq!(recv_frame(&mut garbage), None);

    // A 2 GiB length prefix during the handshake: rejected unread.
    let mut huge = TcpStream::connect(address).unwrap();
    let _challenge = recv_frame(&mut huge).unwrap();
    huge.write_all(&0x7fff_ffffu32.to_be_bytes()).unwrap();
    assert_eq!(recv_frame(&mut huge), None);
    wait_for_log(&log, "exceeds the limit of 256");

    // An idle peer is dropped at the handshake deadline.
    let mut idle = TcpStream::connect(address).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let _challenge = recv_frame(&mut idle).unwrap();
    assert_eq!(recv_frame(&mut idle), None);
    wait_for_log(&log, "handshake deadline");

    still_serves(address, b"k");
}

/// BEYOND-13, BEYOND-14: authenticated peers sending an absurd length, a truncated frame, a
/// negative length, garbage, a deep pickle, and globals. Each costs its own connection only.
#[test]
fn hostile_frames_after_authentication() {
    let (mut server, log) = quiet(b"k");
    let tasks = server.register_queue("get_task_queue", 0);
    let server = server.start_thread().unwrap();
    let address = server.address();
    let steady = Manager::connect(address, b"k")
        .unwrap()
        .get_queue::<i32>("get_task_queue")
        .unwrap();
    steady.put(&1).unwrap();

    // A 2 GiB length prefix, and the 64-bit form claiming 2^62 bytes.
    let mut s = authenticated(address, b"k");
    s.write_all(&0x8000_0000u32.to_be_bytes()[..]).unwrap();
    s.write_all(&[0x7f, 0xff, 0xff, 0xff]).unwrap();
    assert_eq!(recv_frame(&mut s), None);
    let mut s = authenticated(address, b"k");
    s.write_all(&[0xff, 0xff, 0xff, 0xff, 0x40, 0, 0, 0, 0, 0, 0, 0])
        .unwrap();
    assert_eq!(recv_frame(&mut s), None);
    wait_for_log(&log, "exceeds the limit");

    // A negative length other than -1.
    let mut s = authenticated(address, b"k");
    s.write_all(&(-2i32).to_be_bytes()).unwrap();
    assert_eq!(recv_frame(&mut s), None);
    wait_for_log(&log, "negative frame length");

    // A truncated frame: the header promises 100 bytes, 10 come, then the peer closes.
    let mut s = authenticated(address, b"k");
    s.write_all(&100u32.to_be_bytes()).unwrap();
    s.write_all(&[0x80; 10]).unwrap();
    drop(s);
    wait_for_log(&log, "stream ended inside a frame");

    // Garbage that is not a pickle, and a pickle nested 10 000 deep: '#ERROR', then close.
    for payload in [b"\x80\x03garbage".to_vec(), {
        let mut deep = vec![0x80, 0x03];
        deep.extend(vec![b']'; 10_000]);
        deep.extend(vec![b'a'; 9_999]);
        deep.push(b'.');
        deep
    }] {
        let mut s = authenticated(address, b"k");
        send_frame(&mut s, &payload);
        assert_eq!(reply_kind(&recv_frame(&mut s).unwrap()), "#ERROR");
        assert_eq!(recv_frame(&mut s), None);
    }
    wait_for_log(&log, "nested deeper than 256");

    // A global where the method name should be: refused with '#ERROR', nothing called.
    let mut s = authenticated(address, b"k");
    let evil = pickle::dumps(&PyValue::Tuple(vec![
        PyValue::None,
        PyValue::global("os", "system"),
        PyValue::Tuple(vec![PyValue::Str("echo pwned".into())]),
        PyValue::Dict(vec![]),
    ]));
    send_frame(&mut s, &evil);
    assert_eq!(reply_kind(&recv_frame(&mut s).unwrap()), "#ERROR");

    // A REDUCE as a queue item is stored as inert data; a typed reader refuses it as a value.
    let ident = steady.proxy().ident().to_string();
    let mut s = authenticated(address, b"k");
    send_frame(
        &mut s,
        &request(None, "accept_connection", vec![PyValue::Str("x".into())]),
    );
    assert_eq!(reply_kind(&recv_frame(&mut s).unwrap()), "#RETURN");
    let payload = PyValue::Reduce {
        callable: Box::new(PyValue::global("os", "system")),
        args: Box::new(PyValue::Tuple(vec![PyValue::Str("echo pwned".into())])),
        state: None,
    };
    send_frame(&mut s, &request(Some(&ident), "put", vec![payload]));
    assert_eq!(reply_kind(&recv_frame(&mut s).unwrap()), "#RETURN");
    assert_eq!(steady.get().unwrap(), 1);
    match tasks.try_get::<String>() {
        Err(Error::Pickle(pickle::PickleError::Global { module, name })) => {
            assert_eq!((module.as_str(), name.as_str()), ("os", "system"))
        }
        other => panic!("{other:?}"),
    }

    // The steady client and a new one were never disturbed.
    steady.put(&2).unwrap();
    assert_eq!(steady.get().unwrap(), 2);
    still_serves(address, b"k");
}

/// A bound on connections: more are closed at once, the others keep working.
#[test]
fn connections_are_bounded() {
    let (mut server, log) = quiet(b"k");
    server.max_connections(2);
    server.register_queue("get_task_queue", 0);
    let server = server.start_thread().unwrap();
    let mut a = TcpStream::connect(server.address()).unwrap();
    let mut b = TcpStream::connect(server.address()).unwrap();
    assert!(recv_frame(&mut a).is_some() && recv_frame(&mut b).is_some());
    let mut c = TcpStream::connect(server.address()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    assert_eq!(recv_frame(&mut c), None);
    wait_for_log(&log, "connections already open");
    drop((a, b));
    assert!(common::eventually(Duration::from_secs(20), || server
        .connections()
        == 0));
    still_serves(server.address(), b"k");
}

/// Runs a server and 1 000 client connections in this (fresh) process; returns the
/// descriptor counts before and after, once every connection thread has finished.
fn count_descriptors_around_cycles(cycles: usize) -> (usize, usize) {
    let (server, _, _) = queue_server(b"k");
    still_serves(server.address(), b"k");
    common::eventually(Duration::from_secs(20), || server.connections() == 0);
    let before = common::open_fds();
    for _ in 0..cycles {
        Manager::connect(server.address(), b"k").unwrap();
    }
    common::eventually(Duration::from_secs(20), || {
        server.connections() == 0 && common::open_fds() == before
    });
    (before, common::open_fds())
}

/// 1 000 connect/disconnect cycles leave the server's descriptors where they started. Run in
/// a child process, whose descriptor table no other test shares.
#[test]
fn connect_cycles_do_not_leak_descriptors() {
    let mut child = Process::spawn(count_descriptors_around_cycles, 1000).unwrap();
    let (before, after) = child.join().unwrap();
    assert_eq!(before, after);
}

/// S12 and CPython's blocking semantics: a get waiting on the server is served by a put
/// from another client; concurrent clients each get their own connection.
#[test]
fn blocked_get_is_served_by_another_client() {
    let (server, _, _) = queue_server(b"k");
    let address = server.address();
    let waiter = std::thread::spawn(move || {
        let q = Manager::connect(address, b"k")
            .unwrap()
            .get_queue::<String>("get_task_queue")
            .unwrap();
        q.get_timeout(Duration::from_secs(30))
    });
    std::thread::sleep(Duration::from_millis(100));
    let q = Manager::connect(address, b"k")
        .unwrap()
        .get_queue::<String>("get_task_queue")
        .unwrap();
    q.put(&"wake".into()).unwrap();
    assert_eq!(waiter.join().unwrap().unwrap(), "wake");

    // One proxy shared by threads: each call finds a free connection.
    let q = Arc::new(q);
    let workers: Vec<_> = (0..8)
        .map(|i| {
            let q = q.clone();
            std::thread::spawn(move || {
                for j in 0..25 {
                    q.put(&format!("{i}-{j}")).unwrap();
                    q.get_timeout(Duration::from_secs(30)).unwrap();
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(q.qsize().unwrap(), 0);
}

/// S7 / C7: references are counted as CPython counts them; dropping proxies releases them.
#[test]
fn dropping_proxies_releases_references() {
    let (server, _, _) = queue_server(b"k");
    let manager = Manager::connect(server.address(), b"k").unwrap();
    let a = manager.get_queue::<u8>("get_task_queue").unwrap();
    let b = manager.get_queue::<u8>("get_task_queue").unwrap();
    assert_eq!(a.proxy().ident(), b.proxy().ident()); // one shared queue
    assert_eq!(manager.number_of_objects().unwrap(), 1);
    assert!(manager.debug_info().unwrap().contains("refcount=2"));
    drop(a);
    assert!(manager.debug_info().unwrap().contains("refcount=1"));
    drop(b);
    assert_eq!(manager.number_of_objects().unwrap(), 0);
    assert_eq!(server.number_of_objects(), 0);
    // Unknown typeids and unknown control requests are remote errors.
    assert!(matches!(manager.create("nope"), Err(Error::Remote { .. })));
}

/// serve_forever runs on the caller's thread until a client asks for shutdown.
#[test]
fn serve_forever_until_shutdown() {
    let (mut server, _) = quiet(b"k");
    server.register_queue("get_task_queue", 0);
    let address = server.address();
    let serving = std::thread::spawn(move || server.serve_forever());
    still_serves(address, b"k");
    Manager::connect(address, b"k").unwrap().shutdown().unwrap();
    serving.join().unwrap().unwrap();
    assert!(Manager::connect(address, b"k").is_err());
}

/// BEYOND-18 (first half): a client whose server went away gets a typed error, never a hang.
#[test]
fn calls_fail_when_the_server_is_gone() {
    let (server, _, _) = queue_server(b"k");
    let q = Manager::connect(server.address(), b"k")
        .unwrap()
        .get_queue::<u8>("get_task_queue")
        .unwrap();
    q.put(&1).unwrap();
    server.shutdown();
    let err = q.get().unwrap_err();
    assert!(
        matches!(err, Error::Disconnected | Error::Os { .. }),
        "{err:?}"
    );
}

fn start_manager_and_return(_: ()) -> u32 {
    let (mut server, _) = quiet(b"k");
    server.register_queue("get_task_queue", 0);
    let child = server.start().unwrap();
    let pid = child.pid();
    std::mem::forget(child); // no shutdown: this process just ends
    pid
}

/// BEYOND-05: a manager server process does not outlive the process that started it.
#[test]
fn server_process_dies_with_its_parent() {
    let mut parent = Process::spawn(start_manager_and_return, ()).unwrap();
    let pid = parent.join().unwrap();
    assert!(common::eventually(Duration::from_secs(20), || {
        !common::pid_exists(pid) || common::pid_state(pid) == Some('Z')
    }));
}

/// Whether `pid` ignores SIGINT, from the `SigIgn` mask in /proc.
fn ignores_sigint(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .map(|m| u64::from_str_radix(m.trim(), 16).unwrap())
        .unwrap();
    mask & (1 << (libc::SIGINT - 1)) != 0
}

/// MGR-13. CPython: _TestSharedMemory.test_shared_memory_SharedMemoryServer_ignores_sigint
/// (bpo-36368): SIGINT does not stop a server process, and this process's handling is unchanged.
#[test]
fn server_process_ignores_sigint() {
    use nix::sys::signal::{kill, Signal};
    let (mut server, _) = quiet(b"k");
    server.register_queue("get_task_queue", 0);
    let mut child = server.start().unwrap();
    assert!(common::eventually(Duration::from_secs(20), || {
        ignores_sigint(child.pid())
    }));
    kill(
        nix::unistd::Pid::from_raw(child.pid() as i32),
        Signal::SIGINT,
    )
    .unwrap();
    still_serves(child.address(), b"k");
    child.shutdown().unwrap();
    assert!(!ignores_sigint(std::process::id()));
}

/// Hands out objects from its methods: `queue()` a new queue, `same()` always the same one,
/// `fail()` raises, `boom()` panics (CPython's `method_to_typeid`).
struct Factory {
    same: Arc<ServedQueue>,
}

impl Referent for Factory {
    fn exposed(&self) -> Vec<String> {
        vec!["ping".into()]
    }

    fn call(
        &self,
        method: &str,
        _: Vec<PyValue>,
        _: Vec<(String, PyValue)>,
    ) -> Result<PyValue, PyException> {
        match method {
            "ping" => Ok(PyValue::Str("pong".into())),
            _ => Err(PyException::new("builtins", "AttributeError", method)),
        }
    }

    fn method_to_typeid(&self) -> Vec<(String, String)> {
        ["queue", "same", "fail", "boom"]
            .iter()
            .map(|m| (m.to_string(), "Queue".to_string()))
            .collect()
    }

    fn call_for_object(
        &self,
        method: &str,
        args: Vec<PyValue>,
        kwargs: Vec<(String, PyValue)>,
    ) -> Result<Arc<dyn Referent>, PyException> {
        bind_arguments(method, args, kwargs, &[])?;
        match method {
            "queue" => Ok(Arc::new(ServedQueue::new(0))),
            "same" => Ok(self.same.clone()),
            "fail" => Err(PyException::value_error("no queue today")),
            _ => panic!("boom"),
        }
    }
}

/// PROTOCOL.md §6.4 and §9 C6 between Rust peers: a `method_to_typeid` method answers
/// `'#PROXY'` with the new object's exposed methods and a `Token`; the client's proxy owns
/// the one reference the server took, and every count returns to zero.
#[test]
fn method_to_typeid_answers_with_proxies() {
    let (mut server, _log) = quiet(b"k");
    let same = Arc::new(ServedQueue::new(0));
    let shared = same.clone();
    server.register("Factory", move || {
        Arc::new(Factory {
            same: shared.clone(),
        })
    });
    let server = server.start_thread().unwrap();
    let manager = Manager::connect(server.address(), b"k").unwrap();
    let factory = manager.create("Factory").unwrap();
    let mut exposed = factory.exposed().to_vec();
    exposed.sort();
    assert_eq!(exposed, ["boom", "fail", "ping", "queue", "same"]);
    assert_eq!(
        factory.call("ping", vec![], vec![]).unwrap(),
        PyValue::Str("pong".into())
    );

    let a: QueueProxy<i32> = factory.call_proxy("queue", vec![], vec![]).unwrap().into();
    let b: QueueProxy<i32> = factory.call_proxy("queue", vec![], vec![]).unwrap().into();
    a.put(&1).unwrap();
    assert!(matches!(b.try_get(), Err(Error::Empty)), "two new queues");
    assert_eq!(a.get().unwrap(), 1);
    let s1: QueueProxy<i32> = factory.call_proxy("same", vec![], vec![]).unwrap().into();
    let s2: QueueProxy<i32> = factory.call_proxy("same", vec![], vec![]).unwrap().into();
    assert_eq!(s1.proxy().ident(), s2.proxy().ident());
    s1.put(&7).unwrap();
    assert_eq!(same.get::<i32>().unwrap(), 7);
    // Factory, a, b, and the shared queue (one ident, two references).
    assert_eq!(server.number_of_objects(), 4);
    assert!(manager.debug_info().unwrap().contains("refcount=2"));

    // Failures of the method are typed errors and create nothing.
    assert!(matches!(
        factory.call_proxy("fail", vec![], vec![]),
        Err(Error::Remote { class, .. }) if class == "builtins.ValueError"
    ));
    assert!(matches!(
        factory.call_proxy("boom", vec![], vec![]),
        Err(Error::Remote { class, .. }) if class == "builtins.RuntimeError"
    ));
    assert!(matches!(
        factory.call_proxy("queue", vec![PyValue::Int(1)], vec![]),
        Err(Error::Remote { class, .. }) if class == "builtins.TypeError"
    ));
    // A plain method is not a proxy; a proxy-returning method through `call` is refused
    // and its new object released.
    assert!(matches!(
        factory.call_proxy("ping", vec![], vec![]),
        Err(Error::Wire(WireError::Protocol { .. }))
    ));
    assert!(matches!(
        factory.call("queue", vec![], vec![]),
        Err(Error::Wire(WireError::Protocol { .. }))
    ));
    assert_eq!(server.number_of_objects(), 4);

    drop((a, s1));
    assert_eq!(server.number_of_objects(), 3);
    drop((b, s2, factory));
    assert_eq!(server.number_of_objects(), 0);
}

/// The raw `'#PROXY'` reply: `(exposed, Token(typeid, (host, port), ident))`, the Token
/// pickled as CPython's client unpickles it (NEWOBJ of the class, BUILD with a state tuple).
#[test]
fn proxy_reply_carries_a_cpython_token() {
    let (mut server, _log) = quiet(b"k");
    let same = Arc::new(ServedQueue::new(0));
    server.register("Factory", move || Arc::new(Factory { same: same.clone() }));
    let server = server.start_thread().unwrap();
    let manager = Manager::connect(server.address(), b"k").unwrap();
    let factory = manager.create("Factory").unwrap();
    let mut stream = authenticated(server.address(), b"k");
    send_frame(
        &mut stream,
        &request(None, "accept_connection", vec![PyValue::Str("t".into())]),
    );
    assert_eq!(reply_kind(&recv_frame(&mut stream).unwrap()), "#RETURN");
    send_frame(
        &mut stream,
        &request(Some(factory.ident()), "queue", vec![]),
    );
    let reply = pickle::loads(&recv_frame(&mut stream).unwrap()).unwrap();
    let PyValue::Tuple(items) = reply else {
        panic!("{reply:?}")
    };
    assert_eq!(items[0], PyValue::Str("#PROXY".into()));
    let PyValue::Tuple(payload) = &items[1] else {
        panic!("{items:?}")
    };
    assert!(
        matches!(&payload[0], PyValue::Tuple(names) if names.contains(&PyValue::Str("get".into())))
    );
    let token = &payload[1];
    assert_eq!(
        token.class_name(),
        Some(("multiprocessing.managers", "Token"))
    );
    let PyValue::Object {
        args,
        state: Some(state),
        ..
    } = token
    else {
        panic!("{token:?}")
    };
    assert_eq!(**args, PyValue::Tuple(vec![]));
    let port = i64::from(server.address().port());
    assert!(matches!(&**state, PyValue::Tuple(f) if f.len() == 3
        && f[0] == PyValue::Str("Queue".into())
        && f[1] == PyValue::Tuple(vec![PyValue::Str("127.0.0.1".into()), PyValue::Int(port)])
        && matches!(&f[2], PyValue::Str(ident) if !ident.is_empty())));
    // The reference the reply took is the client's to release; this raw client does not.
    assert_eq!(server.number_of_objects(), 2);
}

/// Squares of 0..n through `__next__`, then `StopIteration`: a served iterator.
struct Squares(Mutex<std::ops::Range<i64>>);

impl Referent for Squares {
    fn exposed(&self) -> Vec<String> {
        vec!["__next__".into()]
    }

    fn call(
        &self,
        method: &str,
        args: Vec<PyValue>,
        kwargs: Vec<(String, PyValue)>,
    ) -> Result<PyValue, PyException> {
        bind_arguments(method, args, kwargs, &[])?;
        match self.0.lock().unwrap().next() {
            Some(i) => Ok(PyValue::Int(i * i)),
            None => Err(PyException {
                module: "builtins".into(),
                name: "StopIteration".into(),
                args: vec![],
            }),
        }
    }
}

fn consume_squares((address, key): (String, ByteBuf)) -> Vec<i64> {
    let manager = Manager::connect(address.as_str(), &key).unwrap();
    let squares = manager.create("baz").unwrap();
    let items = squares.iter().collect::<Result<Vec<i64>, _>>().unwrap();
    // Exhausted: the next call raises StopIteration again.
    assert!(matches!(
        squares.call("__next__", vec![], vec![]),
        Err(Error::Remote { class, .. }) if class == "builtins.StopIteration"
    ));
    items
}

each_method! {
    /// MGR-09: a registered callable returning an iterator, consumed remotely item by item
    /// from another process; each `create` makes a fresh iterator.
    /// CPython: _TestMyManager.test_mymanager (`baz` behind an `IteratorProxy`)
    fn served_iterator_is_consumed_item_by_item(method: StartMethod) {
        let (mut server, _log) = quiet(b"iter key");
        server.register("baz", || Arc::new(Squares(Mutex::new(0..10))));
        let server = server.start_thread().unwrap();
        let arg = (server.address().to_string(), ByteBuf::from(b"iter key".to_vec()));
        let expected: Vec<i64> = (0..10).map(|i| i * i).collect();
        for _ in 0..2 {
            let mut child = common::with(method).spawn(consume_squares, arg.clone()).unwrap();
            assert_eq!(child.join().unwrap(), expected);
        }
        let local = Manager::connect(server.address(), b"iter key").unwrap().create("baz").unwrap();
        let mut it = local.iter::<i64>();
        assert_eq!(it.next().unwrap().unwrap(), 0);
        assert_eq!(it.next().unwrap().unwrap(), 1);
        assert_eq!(it.count(), 8);
        drop(local);
        assert_eq!(server.number_of_objects(), 0);
    }
}

/// MGR-12: `start` with an initializer runs it in the server process before serving: the
/// first client finds what it did, and it ran in the child.
/// CPython: TestInitializers.test_manager_initializer
#[test]
fn start_runs_the_initializer_in_the_server_first() {
    let (mut server, _log) = quiet(b"init key");
    let q = server.register_queue("get_init", 0);
    let mut child = server
        .start_with_initializer(move || {
            std::thread::sleep(Duration::from_millis(100)); // a client connecting now waits
            q.put(&("initialized".to_string(), std::process::id()))
                .unwrap();
        })
        .unwrap();
    let q = Manager::connect(child.address(), b"init key")
        .unwrap()
        .get_queue::<(String, u32)>("get_init")
        .unwrap();
    assert_eq!(
        q.try_get().unwrap(),
        ("initialized".to_string(), child.pid())
    );
    drop(q);
    child.shutdown().unwrap();
}

/// The worker side of MGR-10, in a child process: each object is reached by `create` of a
/// typeid that always serves the same one.
fn sync_worker((address, key): (String, ByteBuf)) {
    let m = Manager::connect(address.as_str(), &key).unwrap();
    let call = |typeid: &str, method: &str, args: Vec<PyValue>| {
        m.create(typeid)
            .unwrap()
            .call(method, args, vec![])
            .unwrap()
    };
    // _test_event: set by the parent; wait, clear, wait briefly.
    let event = m.create("event").unwrap();
    assert_eq!(
        event.call("is_set", vec![], vec![]).unwrap(),
        PyValue::Bool(true)
    );
    assert_eq!(
        event.call("wait", vec![], vec![]).unwrap(),
        PyValue::Bool(true)
    );
    event.call("clear", vec![], vec![]).unwrap();
    assert_eq!(
        event
            .call("wait", vec![PyValue::Float(0.001)], vec![])
            .unwrap(),
        PyValue::Bool(false)
    );
    // _test_lock, _test_semaphore: acquire and leave it held; _test_rlock: acquire, release.
    assert_eq!(call("lock", "acquire", vec![]), PyValue::Bool(true));
    assert_eq!(call("semaphore", "acquire", vec![]), PyValue::Bool(true));
    assert_eq!(call("bounded", "acquire", vec![]), PyValue::Bool(true));
    let rlock = m.create("rlock").unwrap();
    assert_eq!(
        rlock.call("acquire", vec![], vec![]).unwrap(),
        PyValue::Bool(true)
    );
    rlock.call("release", vec![], vec![]).unwrap();
}

each_method! {
    /// MGR-10: served Event, Lock, RLock, Semaphore, BoundedSemaphore, Condition and Barrier
    /// behave like the local ones across processes; releasing an unheld served lock is an
    /// error.
    /// CPython: TestSyncManagerTypes.test_event, test_lock, test_rlock, test_semaphore,
    /// test_bounded_semaphore, test_condition, test_barrier
    fn served_sync_types_across_processes(method: StartMethod) {
        let (mut server, _log) = quiet(b"sync key");
        server.register_sync_types();
        let shared: [(&str, Arc<dyn Referent>); 7] = [
            ("event", Arc::new(ServedEvent::default())),
            ("lock", Arc::new(ServedLock::new())),
            ("rlock", Arc::new(ServedLock::reentrant())),
            ("semaphore", Arc::new(ServedSemaphore::new(1))),
            ("bounded", Arc::new(ServedSemaphore::bounded(1))),
            ("condition", Arc::new(ServedCondition::default())),
            ("barrier", Arc::new(ServedBarrier::new(5, None))),
        ];
        for (typeid, object) in shared {
            server.register_with_args(typeid, move |_, _| Ok(object.clone()));
        }
        let server = server.start_thread().unwrap();
        let m = Manager::connect(server.address(), b"sync key").unwrap();
        let event = m.create("event").unwrap();
        event.call("set", vec![], vec![]).unwrap();
        let arg = (server.address().to_string(), ByteBuf::from(b"sync key".to_vec()));
        common::with(method).spawn(sync_worker, arg).unwrap().join().unwrap();
        assert_eq!(event.call("is_set", vec![], vec![]).unwrap(), PyValue::Bool(false));
        let runtime_error = |r: Result<PyValue, Error>| {
            matches!(r, Err(Error::Remote { class, .. }) if class == "builtins.RuntimeError")
        };
        // The child's lock and semaphores are still held: released here.
        let lock = m.create("lock").unwrap();
        assert_eq!(lock.call("acquire", vec![PyValue::Bool(false)], vec![]).unwrap(), PyValue::Bool(false));
        lock.call("release", vec![], vec![]).unwrap();
        assert!(runtime_error(lock.call("release", vec![], vec![])));
        for sem in ["semaphore", "bounded"] {
            let sem = m.create(sem).unwrap();
            assert_eq!(sem.call("acquire", vec![PyValue::Bool(false)], vec![]).unwrap(), PyValue::Bool(false));
            sem.call("release", vec![], vec![]).unwrap();
        }
        assert!(matches!(
            m.create("bounded").unwrap().call("release", vec![], vec![]),
            Err(Error::Remote { class, .. }) if class == "builtins.ValueError"
        ));
        // The RLock the child released is free; one not held by the caller cannot be released.
        let rlock = m.create("rlock").unwrap();
        assert!(runtime_error(rlock.call("release", vec![], vec![])));
        // SyncManager's own typeids, with constructor arguments.
        let sem = m.create_with("Semaphore", vec![PyValue::Int(2)], vec![]).unwrap();
        for expected in [true, true, false] {
            assert_eq!(sem.call("acquire", vec![PyValue::Bool(false)], vec![]).unwrap(), PyValue::Bool(expected));
        }
        assert!(matches!(
            m.create_with("Semaphore", vec![PyValue::Int(-1)], vec![]),
            Err(Error::Remote { .. })
        ));
        assert!(matches!(
            m.create_with("Lock", vec![PyValue::Int(1)], vec![]),
            Err(Error::Remote { .. })
        ));
    }
}

/// A served `Lock` blocks a second client until the holder releases it; a timed acquire gives
/// up after (at least) its timeout.
#[test]
fn served_lock_blocks_other_clients() {
    let (mut server, _log) = quiet(b"k");
    server.register_sync_types();
    let lock_object = Arc::new(ServedLock::new());
    server.register("the_lock", move || lock_object.clone());
    let server = server.start_thread().unwrap();
    let m = Manager::connect(server.address(), b"k").unwrap();
    let lock = m.create("the_lock").unwrap();
    assert_eq!(
        lock.call("acquire", vec![], vec![]).unwrap(),
        PyValue::Bool(true)
    );
    let t0 = Instant::now();
    let other = m.create("the_lock").unwrap();
    assert_eq!(
        other
            .call(
                "acquire",
                vec![PyValue::Bool(true), PyValue::Float(0.1)],
                vec![]
            )
            .unwrap(),
        PyValue::Bool(false)
    );
    assert!(t0.elapsed() >= Duration::from_millis(100));
    let waiter = std::thread::spawn(move || other.call("acquire", vec![], vec![]));
    std::thread::sleep(Duration::from_millis(50));
    lock.call("release", vec![], vec![]).unwrap();
    assert_eq!(waiter.join().unwrap().unwrap(), PyValue::Bool(true));
    assert!(matches!(
        lock.call("acquire", vec![PyValue::Bool(false), PyValue::Int(1)], vec![]),
        Err(Error::Remote { class, .. }) if class == "builtins.ValueError"
    ));
}

/// A served `Condition`: a waiter in one client is woken by `notify` from another and holds
/// the lock again when `wait` returns; `wait` and `notify` need the lock.
#[test]
fn served_condition_wakes_a_waiter_in_another_client() {
    let (mut server, _log) = quiet(b"k");
    let shared = Arc::new(ServedCondition::default());
    server.register("cond", move || shared.clone());
    let server = server.start_thread().unwrap();
    let m = Manager::connect(server.address(), b"k").unwrap();
    let cond = m.create("cond").unwrap();
    let runtime_error = |r: Result<PyValue, Error>| matches!(r, Err(Error::Remote { class, .. }) if class == "builtins.RuntimeError");
    assert!(runtime_error(cond.call(
        "wait",
        vec![PyValue::Float(0.01)],
        vec![]
    )));
    assert!(runtime_error(cond.call("notify", vec![], vec![])));
    let waiter_manager = m.clone();
    let waiter = std::thread::spawn(move || {
        let cond = waiter_manager.create("cond").unwrap();
        cond.call("acquire", vec![], vec![]).unwrap();
        let woken = cond
            .call("wait", vec![PyValue::Float(30.0)], vec![])
            .unwrap();
        // The lock is ours again: releasing it works.
        cond.call("release", vec![], vec![]).unwrap();
        woken
    });
    // Notify until the waiter has entered `wait` (a notify with no waiter is lost, as in Python).
    let deadline = Instant::now() + Duration::from_secs(20);
    while !waiter.is_finished() && Instant::now() < deadline {
        cond.call("acquire", vec![], vec![]).unwrap();
        cond.call("notify_all", vec![], vec![]).unwrap();
        cond.call("release", vec![], vec![]).unwrap();
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(waiter.join().unwrap(), PyValue::Bool(true));
}

/// A served `Barrier(3)`: three clients pass it together with indices 0, 1, 2; a lone waiter
/// with a timeout breaks it (`BrokenBarrierError`), and `reset` mends it.
#[test]
fn served_barrier_releases_its_parties_together() {
    let (mut server, _log) = quiet(b"k");
    server.register_sync_types();
    let shared = Arc::new(ServedBarrier::new(3, None));
    server.register("barrier", move || shared.clone());
    let server = server.start_thread().unwrap();
    let m = Manager::connect(server.address(), b"k").unwrap();
    let parties: Vec<_> = (0..3)
        .map(|_| {
            let m = m.clone();
            std::thread::spawn(move || {
                let b = m.create("barrier").unwrap();
                b.call("wait", vec![PyValue::Float(30.0)], vec![]).unwrap()
            })
        })
        .collect();
    let mut indices: Vec<PyValue> = parties.into_iter().map(|t| t.join().unwrap()).collect();
    indices.sort_by_key(|v| format!("{v:?}"));
    assert_eq!(indices, [PyValue::Int(0), PyValue::Int(1), PyValue::Int(2)]);
    let b = m.create("barrier").unwrap();
    let broken = |r: Result<PyValue, Error>| matches!(r, Err(Error::Remote { class, .. }) if class == "threading.BrokenBarrierError");
    assert!(broken(b.call("wait", vec![PyValue::Float(0.05)], vec![])));
    let attr = |name: &str| {
        b.call("__getattribute__", vec![PyValue::Str(name.into())], vec![])
            .unwrap()
    };
    assert_eq!(attr("broken"), PyValue::Bool(true));
    assert!(broken(b.call("wait", vec![], vec![])));
    b.call("reset", vec![], vec![]).unwrap();
    assert_eq!(attr("broken"), PyValue::Bool(false));
    assert_eq!(attr("n_waiting"), PyValue::Int(0));
    // SyncManager's typeid, with its constructor arguments.
    let one = m
        .create_with("Barrier", vec![PyValue::Int(1)], vec![])
        .unwrap();
    assert_eq!(one.call("wait", vec![], vec![]).unwrap(), PyValue::Int(0));
}

/// The worker side of MGR-11, in a child process (CPython's `_test_list`, `_test_dict`,
/// `_test_value`, `_test_array`, `_test_namespace`).
fn containers_worker((address, key): (String, ByteBuf)) {
    let m = Manager::connect(address.as_str(), &key).unwrap();
    let s = |x: &str| PyValue::Str(x.into());
    let call = |p: &multiproc::managers::Proxy, method: &str, args: Vec<PyValue>| {
        p.call(method, args, vec![]).unwrap()
    };
    let list = m.create("the_list").unwrap();
    assert_eq!(
        call(&list, "__getitem__", vec![PyValue::Int(0)]),
        PyValue::Int(5)
    );
    assert_eq!(call(&list, "count", vec![PyValue::Int(5)]), PyValue::Int(1));
    assert_eq!(call(&list, "index", vec![PyValue::Int(5)]), PyValue::Int(0));
    call(&list, "sort", vec![]);
    call(&list, "reverse", vec![]);
    assert_eq!(call(&list, "__len__", vec![]), PyValue::Int(1));
    assert_eq!(call(&list, "pop", vec![PyValue::Int(0)]), PyValue::Int(5));
    let dict = m.create("the_dict").unwrap();
    assert_eq!(call(&dict, "__len__", vec![]), PyValue::Int(1));
    assert_eq!(call(&dict, "__getitem__", vec![s("foo")]), PyValue::Int(5));
    assert_eq!(call(&dict, "get", vec![s("foo")]), PyValue::Int(5));
    let pair = PyValue::Tuple(vec![s("foo"), PyValue::Int(5)]);
    assert_eq!(
        call(&dict, "items", vec![]),
        PyValue::List(vec![pair.clone()])
    );
    assert_eq!(call(&dict, "keys", vec![]), PyValue::List(vec![s("foo")]));
    assert_eq!(
        call(&dict, "values", vec![]),
        PyValue::List(vec![PyValue::Int(5)])
    );
    assert_eq!(
        call(&dict, "copy", vec![]),
        PyValue::Dict(vec![(s("foo"), PyValue::Int(5))])
    );
    assert_eq!(call(&dict, "popitem", vec![]), pair);
    let value = m.create("the_value").unwrap();
    assert_eq!(call(&value, "get", vec![]), PyValue::Int(1));
    call(&value, "set", vec![PyValue::Int(2)]);
    let array = m.create("the_array").unwrap();
    assert_eq!(
        call(&array, "__getitem__", vec![PyValue::Int(1)]),
        PyValue::Int(1)
    );
    assert_eq!(call(&array, "__len__", vec![]), PyValue::Int(2));
    let ns = m.create("the_namespace").unwrap();
    assert_eq!(call(&ns, "__getattribute__", vec![s("x")]), PyValue::Int(0));
    assert_eq!(call(&ns, "__getattribute__", vec![s("y")]), PyValue::Int(1));
}

each_method! {
    /// MGR-11 (in part): served list, dict, PyValue, Array and Namespace with their method
    /// sets, changed by one process and seen by another.
    /// CPython: TestSyncManagerTypes.test_list, test_dict, test_value, test_array,
    /// test_namespace
    fn served_containers_across_processes(method: StartMethod) {
        let (mut server, _log) = quiet(b"containers");
        server.register_containers();
        let shared: [(&str, Arc<dyn Referent>); 5] = [
            ("the_list", Arc::new(ServedList::default())),
            ("the_dict", Arc::new(ServedDict::default())),
            ("the_value", Arc::new(ServedValue::new("i", PyValue::Int(1)))),
            ("the_array", Arc::new(ServedArray::new("i", vec![PyValue::Int(0), PyValue::Int(1)]).unwrap())),
            ("the_namespace", Arc::new(ServedNamespace::default())),
        ];
        for (typeid, object) in shared {
            server.register_with_args(typeid, move |_, _| Ok(object.clone()));
        }
        let server = server.start_thread().unwrap();
        let m = Manager::connect(server.address(), b"containers").unwrap();
        let s = |x: &str| PyValue::Str(x.into());
        let list = m.create("the_list").unwrap();
        list.call("append", vec![PyValue::Int(5)], vec![]).unwrap();
        let dict = m.create("the_dict").unwrap();
        dict.call("__setitem__", vec![s("foo"), PyValue::Int(5)], vec![]).unwrap();
        let ns = m.create("the_namespace").unwrap();
        ns.call("__setattr__", vec![s("x"), PyValue::Int(0)], vec![]).unwrap();
        ns.call("__setattr__", vec![s("y"), PyValue::Int(1)], vec![]).unwrap();
        let arg = (server.address().to_string(), ByteBuf::from(b"containers".to_vec()));
        common::with(method).spawn(containers_worker, arg).unwrap().join().unwrap();
        assert_eq!(list.call("__len__", vec![], vec![]).unwrap(), PyValue::Int(0));
        assert_eq!(dict.call("__len__", vec![], vec![]).unwrap(), PyValue::Int(0));
        let value = m.create("the_value").unwrap();
        assert_eq!(value.call("get", vec![], vec![]).unwrap(), PyValue::Int(2));
        // SyncManager's typeids with constructor arguments; errors keep their Python kind.
        let made = m.create_with("list", vec![PyValue::List(vec![PyValue::Int(2), PyValue::Int(1)])], vec![]).unwrap();
        made.call("sort", vec![], vec![]).unwrap();
        assert_eq!(made.call("__getitem__", vec![PyValue::Int(0)], vec![]).unwrap(), PyValue::Int(1));
        assert!(matches!(
            made.call("__getitem__", vec![PyValue::Int(9)], vec![]),
            Err(Error::Remote { class, .. }) if class == "builtins.IndexError"
        ));
        let d = m.create_with("dict", vec![], vec![("a".into(), PyValue::Int(1))]).unwrap();
        assert_eq!(d.call("__getitem__", vec![s("a")], vec![]).unwrap(), PyValue::Int(1));
        assert!(matches!(
            d.call("__getitem__", vec![s("b")], vec![]),
            Err(Error::Remote { class, .. }) if class == "builtins.KeyError"
        ));
        let keys: Vec<String> = d.call_proxy("__iter__", vec![], vec![]).unwrap().iter().collect::<Result<_, _>>().unwrap();
        assert_eq!(keys, ["a"]);
        assert!(matches!(
            m.create_with("Array", vec![s("i"), PyValue::List(vec![s("x")])], vec![]),
            Err(Error::Remote { .. })
        ));
    }
}

/// A server of `inner` under `typeid`, reporting each call of `method` to the receiver.
fn reporting_server(
    typeid: &str,
    inner: impl Into<Box<dyn Referent>>,
    method: &'static str,
) -> (ServerHandle, std::sync::mpsc::Receiver<i32>) {
    let (mut server, _) = quiet(b"k");
    let (object, rx) = common::reporting::Reporting::new(inner, method);
    server.register(typeid, move || object.clone());
    (server.start_thread().unwrap(), rx)
}

/// Waits (hang guard 30 s) until the server serves exactly `n` connections.
fn settle(server: &ServerHandle, n: usize) {
    assert!(
        common::eventually(Duration::from_secs(30), || server.connections() == n),
        "{} connections remain, not {n}",
        server.connections()
    );
}

/// Starts client A (a forked child running `body`), waits until its call is blocked on the
/// server, and SIGKILLs it.
fn kill_while_blocked<A: serde::Serialize + serde::de::DeserializeOwned>(
    calls: &std::sync::mpsc::Receiver<i32>,
    body: fn(A),
    args: A,
) {
    // Calls of the same method by the test's own clients, all answered already.
    while calls.try_recv().is_ok() {}
    let mut a = common::with(multiproc::StartMethod::Fork)
        .spawn(body, args)
        .unwrap();
    let tid = calls
        .recv_timeout(Duration::from_secs(30))
        .expect("client A's call reached the server");
    common::await_thread_in_futex(tid);
    a.kill().unwrap();
    assert!(matches!(a.join(), Err(Error::Signaled { signal: 9, .. })));
}

/// Client A of [`dead_getter_loses_nothing`]: blocks in `get` (with a timeout when asked)
/// until it is killed.
fn blocked_getter((address, timed): (String, bool)) {
    let q = Manager::connect(address.as_str(), b"k")
        .unwrap()
        .get_queue::<u64>("q")
        .unwrap();
    let _ = if timed {
        q.get_timeout(Duration::from_secs(30))
    } else {
        q.get()
    };
}

/// Issue 12.1: a client SIGKILLed while blocked in a served `get` (or `get(timeout=30)`) takes
/// nothing with it: the item put next reaches the next client, 50 times out of 50. CPython's
/// server gives it to the dead client's serving thread, which loses it.
#[test]
fn dead_getter_loses_nothing() {
    const RUNS: u64 = 50;
    for timed in [false, true] {
        let (server, gets) = reporting_server(
            "q",
            Box::new(ServedQueue::new(0)) as Box<dyn Referent>,
            "get",
        );
        let address = server.address();
        let manager = Manager::connect(address, b"k").unwrap();
        let (putter, b) = (
            manager.get_queue::<u64>("q").unwrap(),
            manager.get_queue::<u64>("q").unwrap(),
        );
        // Open both proxy connections: they are the connections that stay.
        assert_eq!((putter.qsize().unwrap(), b.qsize().unwrap()), (0, 0));
        settle(&server, 2);
        let mut delivered = 0;
        for run in 0..RUNS {
            kill_while_blocked(&gets, blocked_getter, (address.to_string(), timed));
            putter.put(&run).unwrap();
            // A's connection is gone once its serving thread has finished with it.
            settle(&server, 2);
            match b.try_get() {
                Ok(item) => {
                    assert_eq!(item, run);
                    delivered += 1;
                }
                Err(Error::Empty) => {}
                Err(e) => panic!("{e}"),
            }
        }
        println!("timed={timed}: {delivered}/{RUNS} delivered");
        assert_eq!(delivered, RUNS, "timed={timed}: items lost to dead clients");
    }
}

/// Client A of the tests below: creates `typeid` and calls its `methods` in turn, the last
/// one blocking until A is killed.
fn blocked_caller((address, typeid, methods): (String, String, Vec<String>)) {
    let object = Manager::connect(address.as_str(), b"k")
        .unwrap()
        .create(&typeid)
        .unwrap();
    for method in methods {
        let _ = object.call(&method, vec![], vec![]);
    }
}

fn a_args(server: &ServerHandle, typeid: &str, methods: &[&str]) -> (String, String, Vec<String>) {
    let methods = methods.iter().map(|m| m.to_string()).collect();
    (server.address().to_string(), typeid.to_string(), methods)
}

fn non_blocking() -> Vec<PyValue> {
    vec![PyValue::Bool(false)]
}

/// Issue 12.1 for locks and semaphores: a client killed while blocked in `acquire` does not
/// take the lock (or the permit) released next; a live client gets it.
#[test]
fn dead_acquirer_takes_nothing() {
    for (typeid, object) in [
        ("Lock", Box::new(ServedLock::new()) as Box<dyn Referent>),
        ("RLock", Box::new(ServedLock::reentrant())),
        ("Semaphore", Box::new(ServedSemaphore::new(1))),
    ] {
        let (server, calls) = reporting_server(typeid, object, "acquire");
        let manager = Manager::connect(server.address(), b"k").unwrap();
        let holder = manager.create(typeid).unwrap();
        let other = manager.create(typeid).unwrap();
        // Both proxy connections open: they are the ones that stay.
        assert_eq!(
            other.call("acquire", non_blocking(), vec![]).unwrap(),
            PyValue::Bool(true)
        );
        other.call("release", vec![], vec![]).unwrap();
        for _ in 0..3 {
            assert_eq!(
                holder.call("acquire", vec![], vec![]).unwrap(),
                PyValue::Bool(true)
            );
            settle(&server, 2);
            kill_while_blocked(
                &calls,
                blocked_caller,
                a_args(&server, typeid, &["acquire"]),
            );
            // The lock is released while A's serving thread may still wait for it.
            holder.call("release", vec![], vec![]).unwrap();
            let got = other.call("acquire", non_blocking(), vec![]).unwrap();
            settle(&server, 2);
            let got = got == PyValue::Bool(true)
                || other.call("acquire", non_blocking(), vec![]).unwrap() == PyValue::Bool(true);
            assert!(got, "{typeid}: the dead client took it");
            other.call("release", vec![], vec![]).unwrap();
        }
    }
}

/// Issue 12.1 for a `Condition`: a client killed in `wait` neither keeps the lock nor swallows
/// a notification: `notify(1)` reaches the live waiter behind it.
#[test]
fn dead_condition_waiter_passes_its_notification_on() {
    let (server, calls) = reporting_server(
        "Condition",
        Box::new(ServedCondition::default()) as Box<dyn Referent>,
        "wait",
    );
    let manager = Manager::connect(server.address(), b"k").unwrap();
    let cond = Arc::new(manager.create("Condition").unwrap());
    assert_eq!(
        cond.call("acquire", non_blocking(), vec![]).unwrap(),
        PyValue::Bool(true)
    );
    cond.call("release", vec![], vec![]).unwrap();
    settle(&server, 1);
    for _ in 0..3 {
        kill_while_blocked(
            &calls,
            blocked_caller,
            a_args(&server, "Condition", &["acquire", "wait"]),
        );
        // A live waiter behind the dead one.
        let waiter = {
            let cond = cond.clone();
            std::thread::spawn(move || {
                cond.call("acquire", vec![], vec![]).unwrap();
                let woken = cond.call("wait", vec![PyValue::Float(30.0)], vec![]);
                cond.call("release", vec![], vec![]).unwrap();
                woken
            })
        };
        common::await_thread_in_futex(calls.recv_timeout(Duration::from_secs(30)).unwrap());
        cond.call("acquire", vec![], vec![]).unwrap();
        cond.call("notify", vec![], vec![]).unwrap();
        cond.call("release", vec![], vec![]).unwrap();
        assert_eq!(waiter.join().unwrap().unwrap(), PyValue::Bool(true));
        settle(&server, 2);
        assert_eq!(
            cond.call("acquire", non_blocking(), vec![]).unwrap(),
            PyValue::Bool(true)
        );
        cond.call("release", vec![], vec![]).unwrap();
    }
}

/// Issue 12.1 for a `Barrier`: a party killed while waiting breaks the barrier (as a party
/// that times out does in `threading`), so the live parties get `BrokenBarrierError` instead of
/// waiting for ever; `reset()` makes it usable again.
#[test]
fn dead_barrier_party_breaks_the_barrier() {
    let (server, calls) = reporting_server(
        "Barrier",
        Box::new(ServedBarrier::new(2, None)) as Box<dyn Referent>,
        "wait",
    );
    let manager = Manager::connect(server.address(), b"k").unwrap();
    let barrier = manager.create("Barrier").unwrap();
    let broken = || {
        barrier
            .call(
                "__getattribute__",
                vec![PyValue::Str("broken".into())],
                vec![],
            )
            .unwrap()
    };
    assert_eq!(broken(), PyValue::Bool(false));
    settle(&server, 1);
    kill_while_blocked(
        &calls,
        blocked_caller,
        a_args(&server, "Barrier", &["wait"]),
    );
    settle(&server, 1);
    assert_eq!(broken(), PyValue::Bool(true));
    assert!(matches!(
        barrier.call("wait", vec![], vec![]),
        Err(Error::Remote { class, .. }) if class == "threading.BrokenBarrierError"
    ));
    barrier.call("reset", vec![], vec![]).unwrap();
    assert_eq!(broken(), PyValue::Bool(false));
}

/// The `'#ERROR'` reply in `frame`: the exception's class and its message.
fn error_reply(frame: &[u8]) -> (String, String, Option<PyValue>) {
    match pickle::loads(frame).unwrap() {
        PyValue::Tuple(items) if items[0] == PyValue::Str("#ERROR".into()) => match &items[1] {
            PyValue::Reduce {
                callable,
                args,
                state,
            } => {
                let PyValue::Global { module, name } = &**callable else {
                    panic!("{callable:?}")
                };
                let PyValue::Tuple(args) = &**args else {
                    panic!("{args:?}")
                };
                let message = args[0].as_str().unwrap().to_string();
                (
                    format!("{module}.{name}"),
                    message,
                    state.as_deref().cloned(),
                )
            }
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
}

/// Issue 12.3: an item over the server's frame cap is a typed error naming the size and the
/// limit (`Error::Disconnected` before), refused by the proxy before anything is sent (the
/// server told it its cap), and the proxy goes on working.
#[test]
fn oversized_put_is_a_typed_error_and_the_proxy_goes_on() {
    let (mut server, log) = quiet(b"k");
    server.max_frame(1 << 20);
    server.register_queue("get_task_queue", 0);
    let server = server.start_thread().unwrap();
    let manager = Manager::connect(server.address(), b"k").unwrap();
    let q = manager.get_queue::<ByteBuf>("get_task_queue").unwrap();
    let big = ByteBuf::from(vec![7; 2 << 20]);
    for _ in 0..2 {
        match q.put(&big) {
            Err(Error::MessageTooLarge { size, limit }) => {
                assert!(size > 2 << 20, "{size}");
                assert_eq!(limit, 1 << 20);
            }
            other => panic!("{other:?}"),
        }
        q.put(&ByteBuf::from(vec![1, 2, 3])).unwrap();
        assert_eq!(q.get().unwrap().into_vec(), [1, 2, 3]);
    }
    // Nothing reached the server: the proxy knew the cap.
    assert!(log.lock().unwrap().is_empty(), "{:?}", log.lock().unwrap());

    // A control request knows no cap: the server reads the frame, answers with the reason
    // and closes that connection; the client gets the same typed error.
    match manager.create_with("get_task_queue", vec![PyValue::Bytes(big.to_vec())], vec![]) {
        Err(Error::MessageTooLarge { size, limit }) => {
            assert!(size > 2 << 20, "{size}");
            assert_eq!(limit, 1 << 20);
        }
        other => panic!("{other:?}"),
    }
    wait_for_log(&log, "exceeds the limit of 1048576 bytes");
    q.put(&ByteBuf::from(vec![4])).unwrap();
    assert_eq!(q.get().unwrap().into_vec(), [4]);
}

/// Issue 12.3 on the wire: a frame over the cap from a peer that does not know it is read and
/// dropped, then answered with `'#ERROR'` `ValueError` carrying `size` and `limit` (what a
/// CPython client raises), and the connection is closed.
#[test]
fn oversized_frame_is_answered_before_the_close() {
    let (mut server, log) = quiet(b"k");
    server.max_frame(1 << 20);
    server.register_queue("get_task_queue", 0);
    let server = server.start_thread().unwrap();
    let mut s = authenticated(server.address(), b"k");
    let payload = request(None, "dummy", vec![PyValue::Bytes(vec![0; 3 << 20])]);
    send_frame(&mut s, &payload);
    let (class, message, state) = error_reply(&recv_frame(&mut s).unwrap());
    assert_eq!(class, "builtins.ValueError");
    let size = payload.len() as i64;
    assert_eq!(
        message,
        format!("message of {size} bytes exceeds the limit of 1048576 bytes")
    );
    assert_eq!(
        state,
        Some(PyValue::Dict(vec![
            (PyValue::Str("size".into()), PyValue::Int(size)),
            (PyValue::Str("limit".into()), PyValue::Int(1 << 20)),
        ]))
    );
    assert_eq!(recv_frame(&mut s), None);
    wait_for_log(&log, "exceeds the limit of 1048576 bytes");
    still_serves(server.address(), b"k");
}

/// Issue 12.2 (server half): a frame that breaks a decoding limit, or carries a Python object
/// where plain data is expected, is answered with `'#ERROR'` `ValueError` naming the reason
/// (a CPython client raises it), logged, and the connection closed. Before, an object in
/// `accept_connection`'s arguments got `('#RETURN', None)` and the connection stayed open.
#[test]
fn hostile_requests_are_refused_with_the_reason() {
    let (mut server, log) = quiet(b"k");
    server.max_depth(32);
    let tasks = server.register_queue("get_task_queue", 0);
    let server = server.start_thread().unwrap();
    let address = server.address();
    let ident = {
        let q = Manager::connect(address, b"k")
            .unwrap()
            .get_queue::<i32>("get_task_queue")
            .unwrap();
        q.proxy().ident().to_string()
    };
    let system = |command: &str| PyValue::Reduce {
        callable: Box::new(PyValue::global("os", "system")),
        args: Box::new(PyValue::Tuple(vec![PyValue::Str(command.into())])),
        state: None,
    };
    let deep = {
        let mut v = PyValue::Int(1);
        for _ in 0..40 {
            v = PyValue::List(vec![v]);
        }
        v
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "a REDUCE where accept_connection's name is expected",
            request(None, "accept_connection", vec![system("echo pwned")]),
            "pickle global os.system in the arguments of \"accept_connection\"",
        ),
        (
            "a REDUCE where the arguments tuple is expected",
            pickle::dumps(&PyValue::Tuple(vec![
                PyValue::Str(ident.clone()),
                PyValue::Str("put".into()),
                system("echo pwned"),
                PyValue::Dict(vec![]),
            ])),
            "pickle global os.system in the request envelope",
        ),
        (
            "a GLOBAL where the keyword arguments are expected",
            pickle::dumps(&PyValue::Tuple(vec![
                PyValue::None,
                PyValue::Str("dummy".into()),
                PyValue::Tuple(vec![]),
                PyValue::global("builtins", "eval"),
            ])),
            "pickle global builtins.eval in the request envelope",
        ),
        (
            "a request nested deeper than the limit",
            request(Some(&ident), "put", vec![deep]),
            "pickle nested deeper than 32 levels",
        ),
    ];
    for (case, frame, reason) in cases {
        let mut s = authenticated(address, b"k");
        if case.contains("arguments tuple") || case.contains("deeper") {
            send_frame(
                &mut s,
                &request(None, "accept_connection", vec![PyValue::Str("x".into())]),
            );
            assert_eq!(
                reply_kind(&recv_frame(&mut s).unwrap()),
                "#RETURN",
                "{case}"
            );
        }
        send_frame(&mut s, &frame);
        let (class, message, _) = error_reply(&recv_frame(&mut s).unwrap());
        assert_eq!(class, "builtins.ValueError", "{case}");
        assert!(
            message.starts_with("request refused: ") && message.contains(reason),
            "{case}: {message}"
        );
        assert_eq!(
            recv_frame(&mut s),
            None,
            "{case}: the connection stays open"
        );
        wait_for_log(&log, reason);
    }
    assert!(tasks.is_empty(), "nothing was put");
    still_serves(address, b"k");
}

/// Large plain data past the default decoding budget (a million small ints decode to far more
/// than twice their frame) is refused with the reason, and passes once both ends raise their
/// limits: `ManagerServer::decode_limits` and `ConnectOptions::limits`.
#[test]
fn decode_limits_can_be_raised_for_large_plain_data() {
    let big: Vec<u64> = (0..1_000_000).map(|i| i % 200).collect();
    let raised = Limits {
        memory_per_byte: 64,
        max_nodes: 1 << 22,
        ..Limits::default()
    };

    // Default limits: the server refuses the request and says why; the client goes on.
    let (mut server, _log) = quiet(b"k");
    server.register_queue("q", 0);
    let server = server.start_thread().unwrap();
    let manager = Manager::connect(server.address(), b"k").unwrap();
    let q = manager.get_queue::<Vec<u64>>("q").unwrap();
    match q.put(&big) {
        Err(Error::Remote { message, .. }) => assert!(message.contains("refused"), "{message}"),
        other => panic!("{other:?}"),
    }
    q.put(&vec![1, 2]).unwrap();
    assert_eq!(q.get().unwrap(), [1, 2]);

    // Raised on both ends: the list travels there and back.
    let (mut server, _log) = quiet(b"k");
    server.decode_limits(raised);
    server.register_queue("q", 0);
    let server = server.start_thread().unwrap();
    let options = ConnectOptions {
        limits: raised,
        ..ConnectOptions::default()
    };
    let manager = Manager::connect_with(server.address(), b"k", options).unwrap();
    let q = manager.get_queue::<Vec<u64>>("q").unwrap();
    q.put(&big).unwrap();
    assert_eq!(q.get().unwrap(), big);
}
