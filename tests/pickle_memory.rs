//! Tests for the memory a hostile pickle can make a manager take (issue 12, item 2): a frame of
//! 15 MiB (and 4 MiB) of `EMPTY_LIST` opcodes, sent by a client to a Rust server and by a
//! server to a Rust client. Each side runs in a process of its own, whose peak resident set
//! (`VmHWM`, reset through `/proc/<pid>/clear_refs` just before the frame) must grow by no more
//! than 4 times the frame. Run with `--nocapture` to see the figures.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use hmac::{Hmac, Mac};
use multiproc::managers::{Manager, ManagerServer};
use multiproc::{ByteBuf, Process};

const KEY: &[u8] = b"bounded";

/// `PROTO 4` then `EMPTY_LIST` to `len` bytes, without `STOP`: what a hostile peer sends.
fn empty_lists(len: usize) -> Vec<u8> {
    let mut frame = vec![0x80, 0x04];
    frame.resize(len, b']');
    frame
}

/// The same run of `EMPTY_LIST` inside a request as this crate's client writes one,
/// `(None, 'get', <lists>, t.`: the server's single pass over a request's items reads it first.
fn request_of_empty_lists(len: usize) -> Vec<u8> {
    let mut frame = b"\x80\x03(NX\x03\x00\x00\x00get".to_vec();
    frame.resize(len - 2, b']');
    frame.extend_from_slice(b"t.");
    frame
}

/// A field of `/proc/<pid>/status`, in KiB.
fn status_kib(pid: &str, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Resets `pid`'s peak resident set to its current one (proc(5), `clear_refs` value 5) and
/// returns that, in KiB.
fn reset_peak(pid: &str) -> u64 {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    status_kib(pid, "VmHWM:")
}

fn send_frame(stream: &mut TcpStream, payload: &[u8]) {
    stream
        .write_all(&(payload.len() as u32).to_be_bytes())
        .unwrap();
    stream.write_all(payload).unwrap();
}

/// One frame, or `None` at end of stream or on a reset.
fn recv_frame(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut header = [0u8; 4];
    stream.read_exact(&mut header).ok()?;
    let mut payload = vec![0; u32::from_be_bytes(header) as usize];
    stream.read_exact(&mut payload).ok()?;
    Some(payload)
}

fn hmac_sha256(message: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(KEY).unwrap();
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// The client's side of the handshake (PROTOCOL.md §2), accepting whatever the server answers.
fn client_handshake(stream: &mut TcpStream) {
    let challenge = recv_frame(stream).unwrap();
    let m = challenge.strip_prefix(b"#CHALLENGE#").unwrap();
    send_frame(stream, &[&b"{sha256}"[..], &hmac_sha256(m)].concat());
    assert_eq!(recv_frame(stream).as_deref(), Some(&b"#WELCOME#"[..]));
    let m = [&b"{sha256}"[..], &[7u8; 40]].concat();
    send_frame(stream, &[&b"#CHALLENGE#"[..], &m].concat());
    recv_frame(stream).unwrap();
    send_frame(stream, b"#WELCOME#");
}

/// The server's side of the handshake, accepting whatever the client answers.
fn server_handshake(stream: &mut TcpStream) {
    let m = [&b"{sha256}"[..], &[9u8; 40]].concat();
    send_frame(stream, &[&b"#CHALLENGE#"[..], &m].concat());
    recv_frame(stream).unwrap();
    send_frame(stream, b"#WELCOME#");
    let challenge = recv_frame(stream).unwrap();
    let m = challenge.strip_prefix(b"#CHALLENGE#").unwrap();
    send_frame(stream, &[&b"{sha256}"[..], &hmac_sha256(m)].concat());
    assert_eq!(recv_frame(stream).as_deref(), Some(&b"#WELCOME#"[..]));
}

/// A Rust server in its own process gets `frame` from an authenticated client; returns its
/// peak resident set growth in KiB.
fn server_growth(frame: &[u8]) -> u64 {
    let mut server = ManagerServer::bind("127.0.0.1:0", KEY).unwrap();
    server.register_queue("q", 0);
    server.on_log(|_| {});
    let mut child = server.start().unwrap();
    let pid = child.pid().to_string();
    let mut stream = TcpStream::connect(child.address()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    client_handshake(&mut stream);
    let before = reset_peak(&pid);
    send_frame(&mut stream, frame);
    // The server answers (an error) or closes; either way it has read and decoded the frame.
    let _ = recv_frame(&mut stream);
    let after = status_kib(&pid, "VmHWM:");
    drop(stream);
    child.shutdown().unwrap();
    after.saturating_sub(before)
}

/// In a child process: connects a `Manager` to `address`, whose server answers with a hostile
/// frame; returns the child's peak resident set growth in KiB around the call, and its error.
fn client_in_child((address, key): (String, ByteBuf)) -> (u64, String) {
    let before = reset_peak("self");
    let outcome = Manager::connect(address.as_str(), &key);
    let after = status_kib("self", "VmHWM:");
    let error = match outcome {
        Ok(_) => "connected".to_string(),
        Err(e) => e.to_string(),
    };
    (after.saturating_sub(before), error)
}

/// A Rust `Manager` client in its own process gets `frame` as the reply to its first request;
/// returns its peak resident set growth in KiB and the error it reported.
fn client_growth(frame: &[u8]) -> (u64, String) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address: SocketAddr = listener.local_addr().unwrap();
    let mut client = Process::spawn(
        client_in_child,
        (address.to_string(), ByteBuf::from(KEY.to_vec())),
    )
    .unwrap();
    let (mut stream, _) = listener.accept().unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    server_handshake(&mut stream);
    recv_frame(&mut stream).expect("the client's first request");
    send_frame(&mut stream, frame);
    let result = client.join_timeout(Duration::from_secs(60)).unwrap();
    drop(stream);
    result
}

/// Issue 12 item 2: before the fix a 15 MiB frame took the server from 2 MiB to ~920 MiB and
/// the client to ~858 MiB. Now each side grows by at most 4 times the frame (the frame itself
/// included), and refuses it.
#[test]
fn hostile_frames_cost_at_most_four_times_their_size() {
    for mib in [15u64, 4] {
        let frame = empty_lists((mib << 20) as usize);
        let limit_kib = 4 * (mib << 10);
        let server = server_growth(&frame);
        let in_request = server_growth(&request_of_empty_lists(frame.len()));
        let (client, error) = client_growth(&frame);
        println!(
            "{mib} MiB frame of EMPTY_LIST: server peak RSS +{server} KiB (+{in_request} KiB \
             inside a request), client +{client} KiB ({error})"
        );
        for grew in [server, in_request] {
            assert!(grew <= limit_kib, "server grew {grew} KiB for {mib} MiB");
        }
        assert!(
            client <= limit_kib,
            "client grew {client} KiB for {mib} MiB"
        );
        assert!(
            error.contains("memory"),
            "the client names the limit: {error}"
        );
    }
}

#[test]
fn smoke() {
    // A small frame costs the server next to nothing and decodes as usual.
    let frame = empty_lists(64 << 10);
    assert!(server_growth(&frame) <= 16 << 10);
}
