//! `AF_UNIX` socket pairs and their I/O: gathered sends with descriptors attached
//! (`SCM_RIGHTS`), records on `SOCK_SEQPACKET`, receives into spare capacity, buffer sizes,
//! and the TCP options nix does not wrap. `MSG_CMSG_CLOEXEC` and `TCP_QUICKACK` are
//! Linux-specific.

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{
    sendmsg, socketpair, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType,
};

use super::fd::append_with;

/// The most descriptors one message may carry (the kernel's `SCM_MAX_FD`).
pub(crate) const MAX_FDS_PER_MESSAGE: usize = 253;

/// A connected pair of `AF_UNIX`, `SOCK_STREAM` sockets, close-on-exec.
pub(crate) fn stream_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?)
}

/// A connected pair of `AF_UNIX`, `SOCK_SEQPACKET` sockets, close-on-exec: message boundaries
/// are kept by the kernel.
pub(crate) fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?)
}

/// Receives one continuation record of at most `max` bytes, appending it to `out` without
/// zero-filling first; returns its size. End of stream is `UnexpectedEof`.
pub(crate) fn recv_record_into_vec(
    fd: BorrowedFd<'_>,
    out: &mut Vec<u8>,
    max: usize,
) -> io::Result<usize> {
    // SAFETY: recv_record writes at most `len` bytes at `ptr` and returns the count written.
    unsafe { append_with(out, max, |ptr, len| recv_record(fd, ptr, len)) }
}

/// Receives one continuation record into `buf`; returns its size.
pub(crate) fn recv_record_into(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of its length.
    unsafe { recv_record(fd, buf.as_mut_ptr(), buf.len()) }
}

/// `recv` of one record of at most `len` bytes. With `MSG_TRUNC` the kernel reports the
/// record's real size, so a record longer than the room left is an error, not silent loss.
///
/// # Safety
/// `ptr` must be valid for writes of `len` bytes.
unsafe fn recv_record(fd: BorrowedFd<'_>, ptr: *mut u8, len: usize) -> io::Result<usize> {
    loop {
        // SAFETY: `ptr` is valid for writes of `len` bytes (the caller's contract).
        let n = unsafe { libc::recv(fd.as_raw_fd(), ptr.cast(), len, libc::MSG_TRUNC) };
        return match n {
            -1 => {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                Err(err)
            }
            0 if len > 0 => Err(io::ErrorKind::UnexpectedEof.into()),
            n if n as usize <= len => Ok(n as usize),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a record longer than the rest of its message on the connection",
            )),
        };
    }
}

/// The socket's send buffer size as the kernel accounts it (`SO_SNDBUF`).
pub(crate) fn send_buffer_size(fd: BorrowedFd<'_>) -> io::Result<usize> {
    Ok(nix::sys::socket::getsockopt(
        &fd,
        nix::sys::socket::sockopt::SndBuf,
    )?)
}

/// Asks for a send buffer of `size` bytes (`SO_SNDBUF`; capped by `net.core.wmem_max`).
pub(crate) fn set_send_buffer_size(fd: BorrowedFd<'_>, size: usize) -> io::Result<()> {
    Ok(nix::sys::socket::setsockopt(
        &fd,
        nix::sys::socket::sockopt::SndBuf,
        &size,
    )?)
}

/// Writes all of `parts` to the socket, attaching `fds` to the first byte. Retries on `EINTR`;
/// never raises `SIGPIPE` (a closed peer is `EPIPE`).
pub(crate) fn send_all(fd: BorrowedFd<'_>, parts: &[&[u8]], fds: &[RawFd]) -> io::Result<()> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut sent = 0usize;
    let mut fds_pending = !fds.is_empty();
    while sent < total || fds_pending {
        // On the stack: an allocation per message would cost more than the syscall saves.
        let mut rest: [&[u8]; MAX_PARTS] = [&[]; MAX_PARTS];
        let count = window(parts, sent, total - sent, &mut rest);
        let mut slices = [IoSlice::new(&[]); MAX_PARTS];
        for (slice, part) in slices.iter_mut().zip(&rest[..count]) {
            *slice = IoSlice::new(part);
        }
        let rights = [ControlMessage::ScmRights(fds)];
        let cmsgs: &[ControlMessage] = if fds_pending { &rights } else { &[] };
        match sendmsg::<()>(
            fd.as_raw_fd(),
            &slices[..count],
            cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(n) => {
                sent += n;
                fds_pending = false;
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Sends `parts` as one record on a `SOCK_SEQPACKET` socket with `fds` attached, without
/// waiting: `Ok(false)` if the socket's buffer has no room now. A record goes whole or not at
/// all. Never raises `SIGPIPE`.
pub(crate) fn try_send_record(
    fd: BorrowedFd<'_>,
    parts: &[&[u8]],
    fds: &[RawFd],
) -> io::Result<bool> {
    assert!(parts.len() <= MAX_PARTS, "too many parts for one record");
    let mut slices = [IoSlice::new(&[]); MAX_PARTS];
    for (slice, part) in slices.iter_mut().zip(parts) {
        *slice = IoSlice::new(part);
    }
    let slices = &slices[..parts.len()];
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    loop {
        match sendmsg::<()>(
            fd.as_raw_fd(),
            slices,
            cmsgs,
            MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
            None,
        ) {
            Ok(_) => return Ok(true),
            Err(nix::errno::Errno::EINTR) => {}
            Err(nix::errno::Errno::EAGAIN) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
    }
}

/// The most parts one [`send_all`] call may write.
pub(crate) const MAX_PARTS: usize = 6;

/// Fills `out` with the slices of `parts` that cover `len` bytes starting at byte `start` of
/// their concatenation; returns how many it filled (at most `out.len()`).
pub(crate) fn window<'a>(
    parts: &[&'a [u8]],
    mut start: usize,
    mut len: usize,
    out: &mut [&'a [u8]],
) -> usize {
    let mut count = 0;
    for part in parts {
        if len == 0 || count == out.len() {
            break;
        }
        if start >= part.len() {
            start -= part.len();
            continue;
        }
        let take = (part.len() - start).min(len);
        out[count] = &part[start..start + take];
        count += 1;
        len -= take;
        start = 0;
    }
    count
}

/// Reads up to `buf.len()` bytes with `recvmsg` without waiting (an empty socket gives
/// `WouldBlock`), collecting any descriptors attached to them into `fds` (received
/// close-on-exec). Returns the byte count; 0 means end of stream.
pub(crate) fn try_recv_with_fds(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of its length.
    unsafe { recvmsg_into(fd, buf.as_mut_ptr(), buf.len(), fds, true) }
}

/// Like [`try_recv_with_fds`], but can wait, and receives up to `max` bytes into the spare capacity of `out`
/// (appending them) without zero-filling it first: a fresh child would otherwise pay a page
/// fault for every page of a buffer it never uses.
pub(crate) fn recv_with_fds_into_vec(
    fd: BorrowedFd<'_>,
    out: &mut Vec<u8>,
    max: usize,
    fds: &mut Vec<OwnedFd>,
    nonblocking: bool,
) -> io::Result<usize> {
    // SAFETY: recvmsg_into writes at most `len` bytes at `ptr` and returns the count written.
    unsafe {
        append_with(out, max, |ptr, len| {
            recvmsg_into(fd, ptr, len, fds, nonblocking)
        })
    }
}

/// `recvmsg` of up to `len` bytes into memory that may be uninitialised, collecting the
/// descriptors of any `SCM_RIGHTS` message into `fds` (close-on-exec) before checking for
/// truncation, so that none is ever leaked. A truncated record or control message is an error.
/// With `nonblocking`, an empty socket gives `WouldBlock` instead of waiting.
///
/// # Safety
/// `ptr` must be valid for writes of `len` bytes.
unsafe fn recvmsg_into(
    fd: BorrowedFd<'_>,
    ptr: *mut u8,
    len: usize,
    fds: &mut Vec<OwnedFd>,
    nonblocking: bool,
) -> io::Result<usize> {
    let flags = libc::MSG_CMSG_CLOEXEC | if nonblocking { libc::MSG_DONTWAIT } else { 0 };
    // u64 elements: control messages need `cmsghdr` alignment.
    let mut control = [0u64; CMSG_BUFFER.div_ceil(8)];
    loop {
        let mut iov = libc::iovec {
            iov_base: ptr.cast(),
            iov_len: len,
        };
        // SAFETY: msghdr is plain old data; zeroed is a valid empty header.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        // SAFETY: `msg` points at one iovec valid for `len` bytes (the caller's contract) and at
        // a control buffer of the stated size, all alive for the call.
        let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, flags) };
        if n == -1 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        // SAFETY: the kernel filled `msg_control` with `msg_controllen` bytes of well-formed
        // control messages; CMSG_FIRSTHDR/NXTHDR/DATA walk exactly those. Each SCM_RIGHTS
        // descriptor is new in this process and owned by no one else.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                    let bytes = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                    for i in 0..bytes / std::mem::size_of::<RawFd>() {
                        fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                    }
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
        if msg.msg_flags & libc::MSG_CTRUNC != 0 {
            return Err(io::Error::other(
                "more descriptors arrived than one message may carry",
            ));
        }
        if msg.msg_flags & libc::MSG_TRUNC != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a record larger than the buffer on the connection",
            ));
        }
        return Ok(n as usize);
    }
}

/// The size of a control-message buffer for [`MAX_FDS_PER_MESSAGE`] descriptors.
const CMSG_BUFFER: usize = nix::sys::socket::cmsg_space::<[RawFd; MAX_FDS_PER_MESSAGE]>();

/// Turns on `TCP_QUICKACK` (Linux): ACK at once instead of waiting up to ~40 ms for data to
/// piggy-back on. The kernel clears it again by itself, so callers re-arm it before each read
/// (PROTOCOL.md §8.3: a CPython peer writing a frame in two pieces otherwise stalls on the
/// delayed ACK of the first).
pub(crate) fn set_quickack(fd: BorrowedFd<'_>) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: `fd` is a valid open descriptor for the duration of the borrow; the option value
    // points to a live c_int and its exact size is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_QUICKACK,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
