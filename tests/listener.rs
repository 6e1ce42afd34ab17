//! Tests for `Listener` / `Client` over TCP (CATALOGUE §6): authenticated, pickled messages
//! without a manager, ported from CPython's `_TestListener`, `_TestListenerClient` and
//! `OtherTest`, plus a CPython peer on each side.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use multiproc::managers::{Client, Listener, TcpConnection};
use multiproc::{ByteBuf, Error, WireError};

/// A connected pair; the handshake needs both sides at once, so one is accepted on a thread.
fn pair(key: Option<&'static [u8]>) -> (TcpConnection, TcpConnection) {
    let listener = Listener::bind("127.0.0.1:0", key).unwrap();
    let address = listener.address();
    let accepting = std::thread::spawn(move || listener.accept());
    let client = Client::connect(address, key).unwrap();
    (client, accepting.join().unwrap().unwrap())
}

#[test]
fn smoke() {
    common::hang_guard(|| {
        let (client, server) = pair(Some(b"k"));
        client.send(&(1, "one")).unwrap();
        assert_eq!(
            server.recv::<(i32, String)>().unwrap(),
            (1, "one".to_string())
        );
        server.send_bytes(b"raw").unwrap();
        assert_eq!(client.recv_bytes().unwrap(), b"raw");
    });
}

fn connect_and_send((address, key): (String, ByteBuf)) {
    let conn = Client::connect(address.parse::<SocketAddr>().unwrap(), Some(&key)).unwrap();
    conn.send(&("hello", 42)).unwrap();
}

each_method! {
    /// NET-01. CPython: _TestListenerClient.test_listener_client
    fn child_connects_to_listener(method: StartMethod) {
        let listener = Listener::bind("127.0.0.1:0", Some(b"key")).unwrap();
        let mut child = common::with(method)
            .spawn(connect_and_send, (listener.address().to_string(), ByteBuf::from(b"key".to_vec())))
            .unwrap();
        common::hang_guard(move || {
            let conn = listener.accept().unwrap();
            assert_eq!(conn.recv::<(String, i32)>().unwrap(), ("hello".to_string(), 42));
        });
        child.join_timeout(common::HANG_LIMIT).unwrap();
    }
}

/// NET-02. CPython: _TestListenerClient.test_issue14725
#[test]
fn message_sent_before_accept_is_received() {
    common::hang_guard(|| {
        let listener = Listener::bind("127.0.0.1:0", None).unwrap();
        let client = Client::connect(listener.address(), None).unwrap();
        client.send(&"early").unwrap();
        drop(client);
        std::thread::sleep(Duration::from_millis(50));
        let conn = listener.accept().unwrap();
        assert_eq!(conn.recv::<String>().unwrap(), "early");
        assert!(matches!(conn.recv::<String>(), Err(Error::Disconnected)));
    });
}

/// NET-03. CPython: _TestListenerClient.test_issue16955
#[test]
fn poll_sees_a_sent_message() {
    common::hang_guard(|| {
        let (client, server) = pair(Some(b"k"));
        assert!(!client.poll(Duration::from_millis(10)).unwrap());
        server.send(&[1u8, 2, 3]).unwrap();
        assert!(client.poll(Duration::from_secs(1)).unwrap());
        assert_eq!(client.recv::<Vec<u8>>().unwrap(), vec![1, 2, 3]);
        assert!(matches!(
            client.recv_timeout::<u8>(Duration::from_millis(20)),
            Err(Error::Timeout)
        ));
    });
}

/// NET-04. CPython: _TestListener.test_multiple_bind
#[test]
fn second_bind_to_the_same_address_fails() {
    let first = Listener::bind("127.0.0.1:0", None).unwrap();
    assert!(matches!(
        Listener::bind(first.address(), None),
        Err(Error::Os { op: "bind", .. })
    ));
}

/// NET-05. CPython: _TestListener.test_context
#[test]
fn listener_closes_at_scope_end() {
    let address = {
        let listener = Listener::bind("127.0.0.1:0", None).unwrap();
        listener.address()
    };
    assert!(matches!(
        Client::connect(address, None),
        Err(Error::Os { .. })
    ));
}

/// NET-06. CPython: OtherTest.test_deliver_challenge_auth_failure,
/// test_answer_challenge_auth_failure
#[test]
fn wrong_key_fails_on_both_sides() {
    common::hang_guard(|| {
        let listener = Listener::bind("127.0.0.1:0", Some(b"right")).unwrap();
        let address = listener.address();
        let t = std::thread::spawn(move || listener.accept());
        assert!(matches!(
            Client::connect(address, Some(b"wrong")),
            Err(Error::Wire(WireError::Auth { .. }))
        ));
        assert!(matches!(
            t.join().unwrap(),
            Err(Error::Wire(WireError::Auth { .. }))
        ));
    });
}

/// NET-09. CPython: _TestListener.test_empty_authkey (bpo-43952)
#[test]
fn empty_authkey_authenticates() {
    common::hang_guard(|| {
        let listener = Listener::bind("127.0.0.1:0", Some(b"")).unwrap();
        let address = listener.address();
        let t = std::thread::spawn(move || listener.accept().map(|c| c.recv::<u8>()));
        let client = Client::connect(address, Some(b"")).unwrap();
        client.send(&9u8).unwrap();
        assert_eq!(t.join().unwrap().unwrap().unwrap(), 9);
    });
}

/// NET-07 with CPython on the other side: `multiprocessing.connection.Client` talks to our
/// Listener, and our Client to its Listener.
#[test]
fn cpython_listener_and_client() {
    common::hang_guard(|| {
        // A missing python3 fails the test unless MULTIPROC_SKIP_PYTHON=1.
        let Some(python) = common::python3_with("multiprocessing.connection") else {
            return;
        };
        // CPython client, our listener.
        let listener = Listener::bind("127.0.0.1:0", Some(b"k")).unwrap();
        // Each Python peer ends itself (SIGALRM) if this side hangs, and is reaped (Reaped)
        // if this side fails.
        let script = format!(
            "import signal; signal.alarm(60)\n\
             from multiprocessing.connection import Client\n\
             c = Client(('127.0.0.1', {}), authkey=b'k')\n\
             c.send((1, 'x', b'y', None))\n\
             print(c.recv())\n",
            listener.address().port()
        );
        let mut child = common::Reaped(
            std::process::Command::new(&python)
                .args(["-c", &script])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let conn = listener.accept().unwrap();
        let got: (i32, String, ByteBuf, Option<i32>) = conn.recv().unwrap();
        assert_eq!(got, (1, "x".into(), ByteBuf::from(b"y".to_vec()), None));
        conn.send(&"pong").unwrap();
        let mut out = String::new();
        std::io::Read::read_to_string(child.0.stdout.as_mut().unwrap(), &mut out).unwrap();
        assert!(child.0.wait().unwrap().success());
        assert_eq!(out.trim(), "pong");

        // CPython listener, our client.
        let script = "import signal; signal.alarm(60)\n\
                      from multiprocessing.connection import Listener\n\
                      import sys\n\
                      with Listener(('127.0.0.1', 0), authkey=b'k') as l:\n\
                      \x20   print(l.address[1], flush=True)\n\
                      \x20   with l.accept() as c:\n\
                      \x20       c.send(c.recv() * 2)\n";
        let mut child = common::Reaped(
            std::process::Command::new(&python)
                .args(["-c", script])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.0.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        let port: u16 = line.trim().parse().unwrap();
        let conn = Client::connect(("127.0.0.1", port), Some(b"k")).unwrap();
        conn.send(&21).unwrap();
        assert_eq!(conn.recv::<i32>().unwrap(), 42);
        assert!(child.0.wait().unwrap().success());
    });
}

extern "C" fn on_sigusr1(_: libc::c_int) {}

/// Runs in a child: a SIGUSR1 handler without SA_RESTART, the main thread blocked in
/// `accept` while a thread signals it there repeatedly, then connects; gives what the client
/// received from the accepted connection.
fn accept_under_signals(_: ()) -> String {
    // SAFETY: a handler that does nothing; no SA_RESTART, so a blocked accept sees EINTR.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigusr1 as extern "C" fn(libc::c_int) as usize;
        libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut());
    }
    // SAFETY: pthread_self has no preconditions.
    let main = unsafe { libc::pthread_self() };
    let listener = Listener::bind("127.0.0.1:0", Some(b"eintr")).unwrap();
    let address = listener.address();
    let client = std::thread::spawn(move || {
        for _ in 0..10 {
            std::thread::sleep(Duration::from_millis(20));
            // SAFETY: `main` is this process's main thread, alive until it joins us.
            unsafe { libc::pthread_kill(main, libc::SIGUSR1) };
        }
        let conn = Client::connect(address, Some(b"eintr")).unwrap();
        conn.recv::<String>().unwrap()
    });
    let accepted = listener.accept().unwrap();
    accepted.send(&"welcome").unwrap();
    client.join().unwrap()
}

each_method! {
    /// NET-08: `accept` blocked in the listener survives signals with a handler.
    /// CPython: TestIgnoreEINTR.test_ignore_listener
    fn accept_survives_signals(method: StartMethod) {
        // The handler is installed in a child, not in the shared test process.
        let mut child = common::with(method).spawn(accept_under_signals, ()).unwrap();
        assert_eq!(child.join_timeout(common::HANG_LIMIT).unwrap(), "welcome");
    }
}

/// NET-11: an address of the wrong form for TCP (a Windows pipe name, a Unix path) is
/// refused when the listener or client is made, as `Error::Address`.
/// CPython: TestInvalidFamily.test_invalid_family (bpo-14151)
#[test]
fn address_of_the_wrong_family_is_refused() {
    for bad in [r"\\.\pipe\multiproc-test", "/run/multiproc-test.sock"] {
        assert!(
            matches!(Listener::bind(bad, None), Err(Error::Address { .. })),
            "{bad}"
        );
        assert!(
            matches!(Client::connect(bad, None), Err(Error::Address { .. })),
            "{bad}"
        );
        assert!(matches!(
            multiproc::managers::ManagerServer::bind(bad, b"k"),
            Err(Error::Address { .. })
        ));
        assert!(matches!(
            multiproc::managers::Manager::connect(bad, b"k"),
            Err(Error::Address { .. })
        ));
    }
}
