//! The HMAC challenge/response of `multiprocessing.connection` (`deliver_challenge`,
//! `answer_challenge`), in both forms (PROTOCOL.md §2).

use std::io::Read;
use std::net::TcpStream;

use hmac::{Hmac, Mac};

use super::frame::{self, FrameReader};
use crate::{Error, WireError};

/// Handshake frames are capped at 256 bytes, as CPython caps them.
pub(crate) const HANDSHAKE_FRAME_MAX: usize = 256;

const CHALLENGE: &[u8] = b"#CHALLENGE#";
const WELCOME: &[u8] = b"#WELCOME#";
const FAILURE: &[u8] = b"#FAILURE#";

/// Which challenge this side sends when it is the challenger.
///
/// # Examples
///
/// ```
/// use multiproc::managers::ChallengeForm;
/// assert_eq!(ChallengeForm::default(), ChallengeForm::Sha256);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChallengeForm {
    /// CPython 3.12+: `"{sha256}"` and 40 random bytes; the peer may answer with any allowed
    /// digest. Every CPython 3.8–3.14 answers it.
    #[default]
    Sha256,
    /// CPython ≤ 3.11: 20 random bytes, answered with a raw HMAC-MD5. For tests; no CPython
    /// version needs it.
    LegacyMd5,
}

/// The authentication settings of one side.
#[derive(Clone, Default)]
pub(crate) struct AuthConfig {
    pub(crate) key: Vec<u8>,
    pub(crate) form: ChallengeForm,
    /// Refuse MD5 answers (locks out CPython ≤ 3.11 peers).
    pub(crate) strict: bool,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is a credential: never print it.
        f.debug_struct("AuthConfig")
            .field("key", &format_args!("<{} bytes>", self.key.len()))
            .field("form", &self.form)
            .field("strict", &self.strict)
            .finish()
    }
}

/// The digests a `{name}` prefix may select.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Digest {
    Md5,
    Sha256,
    Sha384,
    Sha3_256,
    Sha3_384,
}

impl Digest {
    fn from_name(name: &[u8]) -> Option<Digest> {
        Some(match name {
            b"md5" => Digest::Md5,
            b"sha256" => Digest::Sha256,
            b"sha384" => Digest::Sha384,
            b"sha3_256" => Digest::Sha3_256,
            b"sha3_384" => Digest::Sha3_384,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Digest::Md5 => "md5",
            Digest::Sha256 => "sha256",
            Digest::Sha384 => "sha384",
            Digest::Sha3_256 => "sha3_256",
            Digest::Sha3_384 => "sha3_384",
        }
    }

    fn mac(self, key: &[u8], message: &[u8]) -> Vec<u8> {
        fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], message: &[u8]) -> Vec<u8> {
            let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(key)
                .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
            mac.update(message);
            mac.finalize().into_bytes().to_vec()
        }
        match self {
            Digest::Md5 => run::<Hmac<md5::Md5>>(key, message),
            Digest::Sha256 => run::<Hmac<sha2::Sha256>>(key, message),
            Digest::Sha384 => run::<Hmac<sha2::Sha384>>(key, message),
            Digest::Sha3_256 => run::<Hmac<sha3::Sha3_256>>(key, message),
            Digest::Sha3_384 => run::<Hmac<sha3::Sha3_384>>(key, message),
        }
    }

    /// Constant-time check of `tag` against the MAC of `message`.
    fn verify(self, key: &[u8], message: &[u8], tag: &[u8]) -> bool {
        let expected = self.mac(key, message);
        expected.len() == tag.len()
            && expected
                .iter()
                .zip(tag)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

/// Splits a `{name}`-prefixed payload (the name within the first 10 bytes).
fn split_prefix(payload: &[u8]) -> Option<(Digest, &[u8])> {
    if payload.first() != Some(&b'{') {
        return None;
    }
    let close = payload.iter().take(10).position(|&b| b == b'}')?;
    Some((
        Digest::from_name(&payload[1..close])?,
        &payload[close + 1..],
    ))
}

/// The MAC a challenge message `m` asks for (PROTOCOL.md §2.3, answerer's rules).
fn response_for(key: &[u8], m: &[u8]) -> Result<Vec<u8>, Error> {
    if m.len() < 20 && m.len() != 16 {
        return Err(Error::Wire(WireError::Auth {
            reason: "challenge too short",
        }));
    }
    if m.len() == 20 || m.len() == 16 {
        return Ok(Digest::Md5.mac(key, m));
    }
    let (digest, _) = split_prefix(m).ok_or(Error::Wire(WireError::Auth {
        reason: "challenge names no supported digest",
    }))?;
    let mut out = format!("{{{}}}", digest.name()).into_bytes();
    out.extend(digest.mac(key, m));
    Ok(out)
}

/// Checks an answer `r` to our challenge `m` (PROTOCOL.md §2.3, challenger's rules).
fn answer_is_valid(config: &AuthConfig, m: &[u8], r: &[u8]) -> bool {
    let (digest, tag) = if r.len() == 16 || r.len() == 20 {
        (Digest::Md5, r)
    } else {
        match split_prefix(r) {
            Some(split) => split,
            None => return false,
        }
    };
    if config.strict && digest == Digest::Md5 {
        return false;
    }
    if config.form == ChallengeForm::LegacyMd5 && (digest != Digest::Md5 || tag.len() != r.len()) {
        // A legacy challenger compares raw MD5 bytes only (PROTOCOL.md §2.4, last row).
        return false;
    }
    digest.verify(&config.key, m, tag)
}

fn random_bytes(n: usize) -> Result<Vec<u8>, Error> {
    let mut out = vec![0; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut out))
        .map_err(Error::os("read /dev/urandom"))?;
    Ok(out)
}

/// As the challenger: sends a challenge, checks the answer, sends the verdict.
pub(crate) fn deliver_challenge(
    stream: &TcpStream,
    reader: &mut FrameReader,
    config: &AuthConfig,
) -> Result<(), Error> {
    let m = match config.form {
        ChallengeForm::Sha256 => {
            let mut m = b"{sha256}".to_vec();
            m.extend(random_bytes(40)?);
            m
        }
        ChallengeForm::LegacyMd5 => random_bytes(20)?,
    };
    let mut frame = CHALLENGE.to_vec();
    frame.extend_from_slice(&m);
    frame::send_bytes(stream, &frame)?;
    let answer = reader.recv(stream, HANDSHAKE_FRAME_MAX)?;
    if answer_is_valid(config, &m, &answer) {
        frame::send_bytes(stream, WELCOME)
    } else {
        // Best effort: the peer learns why before we close.
        let _ = frame::send_bytes(stream, FAILURE);
        Err(Error::Wire(WireError::Auth {
            reason: "digest received was wrong",
        }))
    }
}

/// As the answerer: reads a challenge, answers it, reads the verdict.
pub(crate) fn answer_challenge(
    stream: &TcpStream,
    reader: &mut FrameReader,
    config: &AuthConfig,
) -> Result<(), Error> {
    let challenge = reader.recv(stream, HANDSHAKE_FRAME_MAX)?;
    let m = challenge
        .strip_prefix(CHALLENGE)
        .ok_or(Error::Wire(WireError::Auth {
            reason: "the peer sent no challenge",
        }))?;
    let response = response_for(&config.key, m)?;
    frame::send_bytes(stream, &response)?;
    let verdict = reader.recv(stream, HANDSHAKE_FRAME_MAX)?;
    if verdict == WELCOME {
        Ok(())
    } else {
        Err(Error::Wire(WireError::Auth {
            reason: "digest sent was rejected",
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// PROTOCOL.md §2.7, legacy vector.
    #[test]
    fn legacy_vector() {
        let m: Vec<u8> = (0..20).collect();
        assert_eq!(
            response_for(b"abc", &m).unwrap(),
            hex("1b373176a84c1b044d9ba09795b53791")
        );
    }

    #[test]
    fn modern_answers_and_md5_answers_are_both_accepted() {
        let config = AuthConfig {
            key: b"abc".to_vec(),
            ..AuthConfig::default()
        };
        let mut m = b"{sha256}".to_vec();
        m.extend(0..40u8);
        let r = response_for(b"abc", &m).unwrap();
        assert!(r.starts_with(b"{sha256}") && r.len() == 40);
        assert!(answer_is_valid(&config, &m, &r));
        let raw_md5 = Digest::Md5.mac(b"abc", &m);
        assert!(answer_is_valid(&config, &m, &raw_md5));
        let strict = AuthConfig {
            strict: true,
            ..config.clone()
        };
        assert!(!answer_is_valid(&strict, &m, &raw_md5));
        assert!(answer_is_valid(&strict, &m, &r));
        // A MAC over the random part only is wrong (PROTOCOL.md §2.3).
        let mut wrong = b"{sha256}".to_vec();
        wrong.extend(Digest::Sha256.mac(b"abc", &m[8..]));
        assert!(!answer_is_valid(&config, &m, &wrong));
    }

    #[test]
    fn bad_challenges_are_refused() {
        assert!(response_for(b"k", b"short").is_err());
        assert!(response_for(b"k", b"{whirlpool}0123456789012345678901234567").is_err());
        assert!(response_for(b"k", b"no prefix at all, but long enough").is_err());
    }
}
