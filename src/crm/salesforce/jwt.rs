//! The JWT bearer assertion for headless installs (§1.5).
//!
//! ```text
//! POST https://{host}/services/oauth2/token
//! grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<JWT>
//! ```
//!
//! - Header `{"alg":"RS256"}`; claims `iss` (consumer key), `sub`
//!   (username), `aud` (`https://login.salesforce.com`,
//!   `https://test.salesforce.com` or an Experience Cloud URL), `exp`
//!   (epoch seconds, within 3 minutes).
//! - Each part base64url without padding; signature RSASSA-PKCS1-v1_5 with
//!   SHA-256 over `header.claims` (aws-lc-rs, already in the tree).
//! - `exp` is now + [`LIFETIME_SECS`] (150 s): inside the 3-minute bound
//!   with 30 s to spare for a clock running ahead (simple-salesforce uses
//!   the full 3 minutes).
//! - There is no refresh token: a new assertion is minted instead.
//!
//! The key is the PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`) whose X.509
//! certificate is uploaded to the connected app. A PKCS#1 file
//! (`BEGIN RSA PRIVATE KEY`), an encrypted one or a certificate is refused
//! with the `openssl` command that converts it. Errors never include key
//! material.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::Serialize;

use crate::core::value::UnixMillis;
use crate::secret::Secret;

/// The grant type of the token request (§1.5).
pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Seconds from now to `exp`.
pub const LIFETIME_SECS: i64 = 150;

/// Why a key could not be used or an assertion made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("the JWT key file holds no PEM block (expected `-----BEGIN PRIVATE KEY-----`)")]
    NotPem,
    #[error(
        "the JWT key is a PKCS#1 RSA key (`BEGIN RSA PRIVATE KEY`); enrichd needs PKCS#8. Convert it with: \
         openssl pkcs8 -topk8 -nocrypt -in server.key -out server.pk8.pem"
    )]
    Pkcs1,
    #[error(
        "the JWT key is encrypted (`BEGIN ENCRYPTED PRIVATE KEY`); enrichd needs an unencrypted PKCS#8 key \
         kept in a protected file. Decrypt it with: openssl pkcs8 -topk8 -nocrypt -in server.key -out server.pk8.pem"
    )]
    Encrypted,
    #[error(
        "the JWT key file holds a `{0}`, not a private key: give the private key whose certificate is uploaded to the connected app (`-----BEGIN PRIVATE KEY-----`)"
    )]
    WrongBlock(String),
    #[error("the JWT key's PEM body is not valid base64")]
    Base64,
    #[error(
        "the JWT key is not an RSA private key of 2048 to 8192 bits in PKCS#8 form ({0}); Salesforce signs with RS256. \
         Generate one with: openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out server.pk8.pem"
    )]
    Rejected(String),
    #[error("signing the JWT assertion failed")]
    Sign,
}

/// The claims of the assertion (§1.5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Claims {
    /// The connected app's consumer key.
    pub iss: String,
    /// The Salesforce username enrichd acts as.
    pub sub: String,
    /// `https://login.salesforce.com`, `https://test.salesforce.com`, or an
    /// Experience Cloud URL (see `oauth::LoginHost::jwt_audience`).
    pub aud: String,
    /// Epoch seconds.
    pub exp: i64,
}

impl Claims {
    /// Claims expiring [`LIFETIME_SECS`] after `now`.
    pub fn new(consumer_key: &str, username: &str, audience: &str, now: UnixMillis) -> Claims {
        Claims {
            iss: consumer_key.to_string(),
            sub: username.to_string(),
            aud: audience.trim_end_matches('/').to_string(),
            exp: now.div_euclid(1000).saturating_add(LIFETIME_SECS),
        }
    }
}

/// The body of the PEM block labelled `label`, decoded. Other blocks (an
/// attached certificate) are skipped; known wrong labels are named.
pub fn decode_pem(pem: &str) -> Result<Vec<u8>, JwtError> {
    let mut found_other: Option<String> = None;
    let mut rest = pem;
    while let Some(b) = rest.find("-----BEGIN ") {
        let after = &rest[b + "-----BEGIN ".len()..];
        let Some(e) = after.find("-----") else {
            return Err(JwtError::NotPem);
        };
        let label = after[..e].trim().to_string();
        let body_start = &after[e + 5..];
        let end_marker = format!("-----END {label}-----");
        let Some(end) = body_start.find(&end_marker) else {
            return Err(JwtError::NotPem);
        };
        let body = &body_start[..end];
        rest = &body_start[end + end_marker.len()..];
        match label.as_str() {
            "PRIVATE KEY" => {
                let text: String = body
                    .lines()
                    .filter(|l| !l.contains(':'))
                    .flat_map(|l| l.chars())
                    .filter(|c| !c.is_whitespace())
                    .collect();
                return STANDARD
                    .decode(text.as_bytes())
                    .map_err(|_| JwtError::Base64);
            }
            "RSA PRIVATE KEY" => return Err(JwtError::Pkcs1),
            "ENCRYPTED PRIVATE KEY" => return Err(JwtError::Encrypted),
            _ => {
                found_other.get_or_insert(label);
            }
        }
    }
    Err(found_other.map_or(JwtError::NotPem, JwtError::WrongBlock))
}

/// Signs assertions with one RSA key.
pub struct JwtSigner {
    key: RsaKeyPair,
}

impl std::fmt::Debug for JwtSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtSigner(***)")
    }
}

impl JwtSigner {
    /// From a PKCS#8 PEM file's text.
    pub fn from_pem(pem: &str) -> Result<JwtSigner, JwtError> {
        JwtSigner::from_pkcs8_der(&decode_pem(pem)?)
    }

    /// From PKCS#8 DER bytes.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<JwtSigner, JwtError> {
        let key = RsaKeyPair::from_pkcs8(der).map_err(|e| JwtError::Rejected(e.to_string()))?;
        Ok(JwtSigner { key })
    }

    /// The signed assertion `b64url(header).b64url(claims).b64url(sig)`: a
    /// credential for its lifetime, hence a [`Secret`].
    pub fn assertion(&self, claims: &Claims) -> Result<Secret, JwtError> {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256"}"#);
        let body = serde_json::to_vec(claims).map_err(|_| JwtError::Sign)?;
        let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(body));
        let mut sig = vec![0u8; self.key.public_modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                input.as_bytes(),
                &mut sig,
            )
            .map_err(|_| JwtError::Sign)?;
        Ok(Secret::new(format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(sig)
        )))
    }
}

/// The token request's form fields (§1.5).
pub fn token_form(assertion: &Secret) -> Vec<(&'static str, String)> {
    vec![
        ("grant_type", GRANT_TYPE.to_string()),
        ("assertion", assertion.expose().to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};

    const KEY: &str = include_str!("../../../fixtures/salesforce/jwt_test_key.pem");
    const PUB: &str = include_str!("../../../fixtures/salesforce/jwt_test_key.pub.pem");

    fn public_der() -> Vec<u8> {
        let body: String = PUB.lines().filter(|l| !l.starts_with("-----")).collect();
        STANDARD.decode(body).unwrap()
    }

    #[test]
    fn assertion_is_rs256_over_the_documented_claims() {
        let s = JwtSigner::from_pem(KEY).unwrap();
        let now = 1_777_620_337_123;
        let c = Claims::new(
            "3MVG9consumer",
            "api@acme.com",
            "https://login.salesforce.com/",
            now,
        );
        assert_eq!(c.exp, 1_777_620_337 + 150);
        let a = s.assertion(&c).unwrap();
        let parts: Vec<&str> = a.expose().split('.').collect();
        assert_eq!(parts.len(), 3);
        assert!(
            parts
                .iter()
                .all(|p| !p.contains('=') && !p.contains('+') && !p.contains('/'))
        );
        assert_eq!(
            URL_SAFE_NO_PAD.decode(parts[0]).unwrap(),
            br#"{"alg":"RS256"}"#
        );
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(
            claims,
            serde_json::json!({"iss":"3MVG9consumer","sub":"api@acme.com","aud":"https://login.salesforce.com","exp":1_777_620_487})
        );
        let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        assert_eq!(sig.len(), 256);
        let key = UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, public_der());
        let input = format!("{}.{}", parts[0], parts[1]);
        assert!(key.verify(input.as_bytes(), &sig).is_ok());
        // A changed claim no longer verifies.
        let forged = format!(
            "{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(br#"{"sub":"admin"}"#)
        );
        assert!(key.verify(forged.as_bytes(), &sig).is_err());
        // Never printed.
        assert_eq!(format!("{a:?} {s:?}"), "Secret(***) JwtSigner(***)");
        let form = token_form(&a);
        assert_eq!(form[0], ("grant_type", GRANT_TYPE.to_string()));
        assert_eq!(form[1].0, "assertion");
    }

    #[test]
    fn wrong_key_formats_say_how_to_fix_them() {
        let pkcs1 = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow==\n-----END RSA PRIVATE KEY-----\n";
        let e = JwtSigner::from_pem(pkcs1).unwrap_err();
        assert_eq!(e, JwtError::Pkcs1);
        assert!(
            e.to_string().contains("openssl pkcs8 -topk8 -nocrypt"),
            "{e}"
        );
        let enc =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIE\n-----END ENCRYPTED PRIVATE KEY-----";
        assert_eq!(JwtSigner::from_pem(enc).unwrap_err(), JwtError::Encrypted);
        assert_eq!(
            JwtSigner::from_pem(PUB).unwrap_err(),
            JwtError::WrongBlock("PUBLIC KEY".into())
        );
        assert_eq!(JwtSigner::from_pem("").unwrap_err(), JwtError::NotPem);
        assert_eq!(
            JwtSigner::from_pem("-----BEGIN PRIVATE KEY-----\nabc").unwrap_err(),
            JwtError::NotPem
        );
        assert_eq!(
            JwtSigner::from_pem("-----BEGIN PRIVATE KEY-----\n!!!\n-----END PRIVATE KEY-----")
                .unwrap_err(),
            JwtError::Base64
        );
        let e = JwtSigner::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----")
            .unwrap_err();
        assert!(matches!(e, JwtError::Rejected(_)), "{e:?}");
        // A certificate before the key is skipped.
        let both = format!("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n{KEY}");
        assert!(JwtSigner::from_pem(&both).is_ok());
        // CRLF line endings are fine.
        assert!(JwtSigner::from_pem(&KEY.replace('\n', "\r\n")).is_ok());
    }
}
