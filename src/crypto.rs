//! Tokens encrypted at rest (product §3.11): OAuth access and refresh tokens
//! are stored sealed with XChaCha20-Poly1305 under a 32-byte master key that
//! comes from an environment variable, never from `config.toml`.
//!
//! Sealed text is `v1.<key id>.<base64url(nonce || ciphertext || tag)>`:
//! - `v1`: the format version, so the scheme can change without guessing;
//! - `<key id>`: the first 8 hex characters of SHA-256(master key), so a
//!   token sealed under another key is reported as such instead of as
//!   "corrupt" (it reveals nothing usable about the key);
//! - a fresh 24-byte nonce from the OS for every seal (XChaCha's nonce is
//!   large enough for random nonces to never repeat in practice);
//! - the AAD binds a ciphertext to its row (e.g.
//!   `oauth:hubspot:<workspace>:<portal>`): a token copied into another row
//!   does not decrypt. The AAD is not secret (it is not encrypted) and is
//!   quoted in error messages to say which token failed.
//!
//! Neither errors nor `Debug` ever contain key material or plaintext.
//!
//! Not done here: wiping the key from memory on drop (needs the
//! `zeroize` feature of chacha20poly1305, which is not enabled), and
//! decrypting with several keys during a key rotation.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{Key, KeyInit, XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};

use crate::secret::Secret;

/// Format version written in front of every sealed token.
const VERSION: &str = "v1";
const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Hex characters of SHA-256(key) kept as the key id.
const KEY_ID_LEN: usize = 8;

/// base64url without padding for output; padding accepted on input.
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
/// Standard base64, padding optional (for keys pasted by hand).
const B64_STD_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error(
        "environment variable {var} is not set: it must hold the master key that encrypts CRM \
         tokens at rest; create one with `enrichd keygen` and export it as {var} (keep it out \
         of config.toml)"
    )]
    MissingKey { var: String },
    #[error(
        "environment variable {var} does not hold a valid master key ({reason}); expected 32 \
         random bytes written as 64 hex characters or as base64 (standard or URL-safe), as \
         printed by `enrichd keygen`"
    )]
    MalformedKey { var: String, reason: String },
    #[error(
        "token `{aad}` was sealed with master key {found} but the configured key is {expected}: \
         tokens were encrypted with another master key; set the key they were sealed with or \
         reconnect"
    )]
    WrongKey {
        aad: String,
        expected: String,
        found: String,
    },
    #[error(
        "token `{aad}` cannot be decrypted: the stored ciphertext is corrupt, was modified, or \
         belongs to another row; reconnect to store a fresh token"
    )]
    Undecryptable { aad: String },
    #[error(
        "token `{aad}` is not a sealed token ({reason}); expected `v1.<key id>.<base64url>` as \
         written by enrichd; reconnect to store a fresh token"
    )]
    MalformedSealed { aad: String, reason: String },
    #[error("token `{aad}` cannot be encrypted: {reason}")]
    Seal { aad: String, reason: String },
    #[error("the operating system's random number generator failed: {0}")]
    Random(String),
}

/// Seals and opens tokens under one master key. `Debug` shows only the key id.
#[derive(Clone)]
pub struct TokenCipher {
    aead: XChaCha20Poly1305,
    key_id: String,
}

impl fmt::Debug for TokenCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCipher")
            .field("key_id", &self.key_id)
            .field("key", &"***")
            .finish()
    }
}

impl TokenCipher {
    /// The key from environment variable `var`: 64 hex characters, or
    /// standard / URL-safe base64 (padding optional) of 32 bytes; surrounding
    /// whitespace is ignored.
    pub fn from_env(var: &str) -> Result<Self, CryptoError> {
        match std::env::var(var) {
            Ok(text) => Self::from_key_text(var, &text),
            Err(std::env::VarError::NotPresent) => Err(CryptoError::MissingKey {
                var: var.to_string(),
            }),
            Err(std::env::VarError::NotUnicode(_)) => Err(CryptoError::MalformedKey {
                var: var.to_string(),
                reason: "the value is not valid UTF-8".into(),
            }),
        }
    }

    /// Parses a key written as text; `var` names where it came from (for
    /// error messages only: the text itself is never repeated).
    pub fn from_key_text(var: &str, text: &str) -> Result<Self, CryptoError> {
        let bad = |reason: String| CryptoError::MalformedKey {
            var: var.to_string(),
            reason,
        };
        let text = text.trim();
        if text.is_empty() {
            return Err(bad("the variable is empty".into()));
        }
        let bytes = if text.len() == 2 * KEY_LEN && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            decode_hex(text).ok_or_else(|| bad("invalid hex".into()))?
        } else if let Ok(b) = B64_STD_LENIENT.decode(text) {
            b
        } else if let Ok(b) = B64URL.decode(text) {
            b
        } else {
            return Err(bad(format!(
                "{} characters that are neither 64 hex digits nor base64",
                text.chars().count()
            )));
        };
        let key: [u8; KEY_LEN] = bytes.as_slice().try_into().map_err(|_| {
            if text.bytes().all(|b| b.is_ascii_hexdigit()) {
                bad(format!(
                    "it has {} hex digits, not {}",
                    text.len(),
                    2 * KEY_LEN
                ))
            } else {
                bad(format!(
                    "its base64 decodes to {} bytes, not {KEY_LEN}",
                    bytes.len()
                ))
            }
        })?;
        Ok(Self::from_key(key))
    }

    pub fn from_key(bytes: [u8; KEY_LEN]) -> Self {
        let digest = Sha256::digest(bytes);
        let key_id: String = encode_hex(&digest).chars().take(KEY_ID_LEN).collect();
        TokenCipher {
            aead: XChaCha20Poly1305::new(&Key::from(bytes)),
            key_id,
        }
    }

    /// First 8 hex characters of SHA-256(key): identifies the key without
    /// revealing it.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Encrypts `plaintext` bound to `aad` (which names the row, e.g.
    /// `oauth:hubspot:<workspace>:<portal>`; it is not secret).
    pub fn seal(&self, plaintext: &str, aad: &str) -> Result<String, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| CryptoError::Random(e.to_string()))?;
        let ct = self
            .aead
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| CryptoError::Seal {
                aad: aad.to_string(),
                reason: "the token or its label is too long for XChaCha20-Poly1305".into(),
            })?;
        let mut blob = Vec::with_capacity(NONCE_LEN + ct.len());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&ct);
        Ok(format!(
            "{VERSION}.{}.{}",
            self.key_id,
            B64URL.encode(&blob)
        ))
    }

    /// Decrypts text written by [`TokenCipher::seal`] with the same `aad`.
    pub fn open(&self, sealed: &str, aad: &str) -> Result<Secret, CryptoError> {
        let malformed = |reason: &str| CryptoError::MalformedSealed {
            aad: aad.to_string(),
            reason: reason.to_string(),
        };
        let mut parts = sealed.trim().splitn(3, '.');
        let (Some(version), Some(key_id), Some(body)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed("it does not have three dot-separated parts"));
        };
        if version != VERSION {
            return Err(malformed("unknown format version"));
        }
        if key_id.len() != KEY_ID_LEN || !key_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(malformed("the key id is not 8 hex characters"));
        }
        if !key_id.eq_ignore_ascii_case(&self.key_id) {
            return Err(CryptoError::WrongKey {
                aad: aad.to_string(),
                expected: self.key_id.clone(),
                found: key_id.to_ascii_lowercase(),
            });
        }
        let blob = B64URL
            .decode(body)
            .map_err(|_| malformed("the payload is not base64url"))?;
        if blob.len() < NONCE_LEN + TAG_LEN {
            return Err(malformed("the payload is too short"));
        }
        let (nonce, ct) = blob.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce
            .try_into()
            .map_err(|_| malformed("the payload is too short"))?;
        let plain = self
            .aead
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: ct,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| CryptoError::Undecryptable {
                aad: aad.to_string(),
            })?;
        String::from_utf8(plain)
            .map(Secret::new)
            .map_err(|_| malformed("the decrypted token is not UTF-8"))
    }
}

/// A new random master key (32 bytes from the OS, standard base64), for
/// `enrichd keygen`.
pub fn generate_key() -> Result<String, CryptoError> {
    let mut key = [0u8; KEY_LEN];
    getrandom::fill(&mut key).map_err(|e| CryptoError::Random(e.to_string()))?;
    Ok(STANDARD.encode(key))
}

fn encode_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 0x0f) as usize] as char);
    }
    s
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return None;
    }
    b.chunks(2)
        .map(|p| Some((nibble(p[0])? << 4) | nibble(p[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE;

    const AAD: &str = "oauth:hubspot:acme:62515";
    const TOKEN: &str = "CIrToaiiMhICAQEYs-gDIIGOBii1hQIyGQAf3xBKmlwHjX7OIpuIFEavB2-qYAGQsF4";

    fn key(b: u8) -> [u8; 32] {
        let mut k = [0u8; 32];
        for (i, x) in k.iter_mut().enumerate() {
            *x = b.wrapping_add(i as u8);
        }
        k
    }

    fn payload(sealed: &str) -> Vec<u8> {
        let body = sealed.splitn(3, '.').nth(2).unwrap();
        B64URL.decode(body).unwrap()
    }

    fn with_payload(sealed: &str, blob: &[u8]) -> String {
        let mut p = sealed.splitn(3, '.');
        format!(
            "{}.{}.{}",
            p.next().unwrap(),
            p.next().unwrap(),
            B64URL.encode(blob)
        )
    }

    #[test]
    fn round_trip() {
        let c = TokenCipher::from_key(key(1));
        let sealed = c.seal(TOKEN, AAD).unwrap();
        assert!(sealed.starts_with(&format!("v1.{}.", c.key_id())));
        assert_eq!(c.key_id().len(), 8);
        assert!(!sealed.contains(TOKEN));
        assert_eq!(c.open(&sealed, AAD).unwrap().expose(), TOKEN);
        // Empty and non-ASCII plaintexts too.
        for p in ["", "tökén ✓"] {
            let s = c.seal(p, AAD).unwrap();
            assert_eq!(c.open(&s, AAD).unwrap().expose(), p);
        }
        // Same key bytes → same key id → opens.
        let c2 = TokenCipher::from_key(key(1));
        assert_eq!(c2.open(&sealed, AAD).unwrap().expose(), TOKEN);
        // The payload is nonce || ciphertext || tag.
        assert_eq!(payload(&sealed).len(), 24 + TOKEN.len() + 16);
    }

    #[test]
    fn fresh_nonce_every_seal() {
        let c = TokenCipher::from_key(key(1));
        let a = c.seal(TOKEN, AAD).unwrap();
        let b = c.seal(TOKEN, AAD).unwrap();
        assert_ne!(a, b);
        assert_ne!(payload(&a)[..24], payload(&b)[..24]);
    }

    #[test]
    fn wrong_aad_fails() {
        let c = TokenCipher::from_key(key(1));
        let sealed = c.seal(TOKEN, AAD).unwrap();
        let err = c.open(&sealed, "oauth:hubspot:acme:99999").unwrap_err();
        assert_eq!(
            err,
            CryptoError::Undecryptable {
                aad: "oauth:hubspot:acme:99999".into()
            }
        );
        let msg = err.to_string();
        assert!(msg.contains("cannot be decrypted"), "{msg}");
        assert!(!msg.contains(TOKEN));
    }

    #[test]
    fn wrong_key_reports_key_mismatch() {
        let a = TokenCipher::from_key(key(1));
        let b = TokenCipher::from_key(key(2));
        assert_ne!(a.key_id(), b.key_id());
        let sealed = a.seal(TOKEN, AAD).unwrap();
        let err = b.open(&sealed, AAD).unwrap_err();
        assert!(matches!(err, CryptoError::WrongKey { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("tokens were encrypted with another master key"),
            "{msg}"
        );
        assert!(msg.contains(a.key_id()) && msg.contains(b.key_id()));
        assert!(!msg.contains(TOKEN));
    }

    #[test]
    fn flipped_byte_fails() {
        let c = TokenCipher::from_key(key(1));
        let sealed = c.seal(TOKEN, AAD).unwrap();
        let blob = payload(&sealed);
        // Nonce, ciphertext and tag: every region is authenticated.
        for i in [0, 23, 24, 30, blob.len() - 1] {
            let mut b = blob.clone();
            b[i] ^= 0x01;
            let err = c.open(&with_payload(&sealed, &b), AAD).unwrap_err();
            assert!(matches!(err, CryptoError::Undecryptable { .. }), "{err:?}");
        }
        // Truncated / garbage payloads.
        let err = c
            .open(&with_payload(&sealed, &blob[..20]), AAD)
            .unwrap_err();
        assert!(
            matches!(err, CryptoError::MalformedSealed { .. }),
            "{err:?}"
        );
        for bad in [
            "",
            "v1",
            "plain-token",
            "v2.00000000.AAAA",
            "v1.xyz.AAAA",
            &format!("v1.{}.!!!", c.key_id()),
        ] {
            let err = c.open(bad, AAD).unwrap_err();
            assert!(
                matches!(err, CryptoError::MalformedSealed { .. }),
                "{bad}: {err:?}"
            );
        }
    }

    #[test]
    fn hex_and_base64_keys_accepted() {
        let k = key(7);
        let expected = TokenCipher::from_key(k);
        let sealed = expected.seal(TOKEN, AAD).unwrap();
        let texts = [
            encode_hex(&k),
            encode_hex(&k).to_ascii_uppercase(),
            format!("  {}\n", encode_hex(&k)),
            STANDARD.encode(k),
            STANDARD.encode(k).trim_end_matches('=').to_string(),
            URL_SAFE.encode(k),
            B64URL.encode(k),
            format!("\t{}\n", STANDARD.encode(k)),
        ];
        for t in &texts {
            let c = TokenCipher::from_key_text("ENRICHD_MASTER_KEY", t).unwrap();
            assert_eq!(c.key_id(), expected.key_id(), "{t}");
            assert_eq!(c.open(&sealed, AAD).unwrap().expose(), TOKEN);
        }
        // A key with bytes that differ between the two base64 alphabets.
        let k = [0xfb; 32];
        let a = TokenCipher::from_key_text("K", &STANDARD.encode(k)).unwrap();
        let b = TokenCipher::from_key_text("K", &URL_SAFE.encode(k)).unwrap();
        assert_eq!(a.key_id(), TokenCipher::from_key(k).key_id());
        assert_eq!(b.key_id(), a.key_id());
    }

    #[test]
    fn generated_keys_parse_and_differ() {
        let a = generate_key().unwrap();
        let b = generate_key().unwrap();
        assert_ne!(a, b);
        let c = TokenCipher::from_key_text("K", &a).unwrap();
        let sealed = c.seal(TOKEN, AAD).unwrap();
        assert_eq!(c.open(&sealed, AAD).unwrap().expose(), TOKEN);
    }

    #[test]
    fn bad_keys_rejected_naming_the_variable_only() {
        let short_hex = encode_hex(&[0xab; 16]);
        let long_b64 = STANDARD.encode([0xcd; 48]);
        let short_b64 = STANDARD.encode([0xef; 31]);
        let cases = [
            "",
            "   ",
            short_hex.as_str(),
            long_b64.as_str(),
            short_b64.as_str(),
            "not a key at all!",
            "s3cr3t-passphrase",
        ];
        for value in cases {
            let err = TokenCipher::from_key_text("ENRICHD_MASTER_KEY", value).unwrap_err();
            assert!(matches!(err, CryptoError::MalformedKey { .. }), "{err:?}");
            let msg = err.to_string();
            assert!(msg.contains("ENRICHD_MASTER_KEY"), "{msg}");
            assert!(msg.contains("64 hex characters"), "{msg}");
            if !value.trim().is_empty() {
                assert!(!msg.contains(value.trim()), "value echoed: {msg}");
            }
        }
    }

    #[test]
    fn missing_env_var_says_how_to_create_a_key() {
        let var = "ENRICHD_TEST_KEY_THAT_IS_NEVER_SET_9F2C";
        let err = TokenCipher::from_env(var).unwrap_err();
        assert_eq!(err, CryptoError::MissingKey { var: var.into() });
        let msg = err.to_string();
        assert!(msg.contains(var) && msg.contains("enrichd keygen"), "{msg}");
    }

    #[test]
    fn debug_redacts() {
        let k = key(3);
        let c = TokenCipher::from_key(k);
        let dbg = format!("{c:?}");
        assert!(dbg.contains(c.key_id()) && dbg.contains("***"), "{dbg}");
        assert!(!dbg.contains(&encode_hex(&k)));
        assert!(!dbg.contains(&STANDARD.encode(k)));
        assert!(!dbg.contains("3, 4, 5"), "{dbg}");
        let opened = c.open(&c.seal(TOKEN, AAD).unwrap(), AAD).unwrap();
        assert!(!format!("{opened:?}").contains(TOKEN));
    }
}
