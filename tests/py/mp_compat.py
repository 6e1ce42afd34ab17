"""Forces multiprocessing's handshake into one form, whatever this Python's native form is.

"legacy" is CPython <= 3.11's (20-byte challenge, raw HMAC-MD5 answers); "modern" is 3.12+'s
({sha256} challenge, {digest}-prefixed answers, raw MD5 still accepted). "native" leaves the
interpreter alone. Both forms follow PROTOCOL.md section 2; managers.py and connection.py look
the two functions up in multiprocessing.connection at call time, so patching them there is
enough (and a forked manager server inherits the patch).
"""
import hmac
import os
import sys
from multiprocessing import connection
from multiprocessing.context import AuthenticationError

CHALLENGE = b"#CHALLENGE#"
WELCOME = b"#WELCOME#"
FAILURE = b"#FAILURE#"
ALLOWED = {"md5", "sha256", "sha384", "sha3_256", "sha3_384"}
SEEN = []  # what the peer's challenges looked like: "legacy" or "modern"


def _split(payload):
    if payload[:1] != b"{":
        return None, payload
    end = payload.find(b"}", 0, 10)
    if end < 0:
        return None, payload
    name = payload[1:end].decode("ascii", "replace")
    if name not in ALLOWED:
        return None, payload
    return name, payload[end + 1:]


def _read_challenge(conn):
    message = conn.recv_bytes(256)
    if not message.startswith(CHALLENGE):
        raise AuthenticationError("expected a challenge")
    message = message[len(CHALLENGE):]
    SEEN.append("legacy" if len(message) in (16, 20) else "modern")
    return message


def modern_deliver(conn, authkey):
    message = b"{sha256}" + os.urandom(40)
    conn.send_bytes(CHALLENGE + message)
    response = conn.recv_bytes(256)
    if len(response) in (16, 20):
        name, mac = "md5", response
    else:
        name, mac = _split(response)
    if name is None or not hmac.compare_digest(hmac.new(authkey, message, name).digest(), mac):
        conn.send_bytes(FAILURE)
        raise AuthenticationError("digest received was wrong")
    conn.send_bytes(WELCOME)


def modern_answer(conn, authkey):
    message = _read_challenge(conn)
    if len(message) in (16, 20):
        response = hmac.new(authkey, message, "md5").digest()
    else:
        name, _ = _split(message)
        if name is None:
            raise AuthenticationError("unsupported challenge")
        response = b"{" + name.encode() + b"}" + hmac.new(authkey, message, name).digest()
    conn.send_bytes(response)
    if conn.recv_bytes(256) != WELCOME:
        raise AuthenticationError("digest sent was rejected")


def legacy_deliver(conn, authkey):
    message = os.urandom(20)
    conn.send_bytes(CHALLENGE + message)
    response = conn.recv_bytes(256)
    if response != hmac.new(authkey, message, "md5").digest():
        conn.send_bytes(FAILURE)
        raise AuthenticationError("digest received was wrong")
    conn.send_bytes(WELCOME)


def legacy_answer(conn, authkey):
    message = _read_challenge(conn)
    conn.send_bytes(hmac.new(authkey, message, "md5").digest())
    if conn.recv_bytes(256) != WELCOME:
        raise AuthenticationError("digest sent was rejected")


def native_form():
    return "modern" if sys.version_info >= (3, 12) else "legacy"


def force(form):
    """Patches the handshake to `form` ("legacy", "modern", "native" or "other"); returns the form used."""
    if form == "native":
        return native_form()
    if form == "other":
        form = "legacy" if native_form() == "modern" else "modern"
    if form == "modern":
        connection.deliver_challenge, connection.answer_challenge = modern_deliver, modern_answer
    elif form == "legacy":
        connection.deliver_challenge, connection.answer_challenge = legacy_deliver, legacy_answer
    else:
        raise SystemExit("unknown form " + form)
    return form
