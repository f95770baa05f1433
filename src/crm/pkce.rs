//! PKCE (RFC 7636, S256) and the CSRF `state` of an OAuth authorization-code
//! flow, shared by the HubSpot and Salesforce connect flows.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::secret::Secret;

/// A PKCE verifier and its S256 challenge, and the CSRF state.
pub struct Pkce {
    pub verifier: Secret,
    pub challenge: String,
    pub state: String,
}

/// The OS has no randomness to give: enrichd cannot start an OAuth flow
/// safely.
#[derive(Debug, thiserror::Error)]
#[error("no OS randomness for the OAuth state: {0}")]
pub struct NoRandomness(String);

impl NoRandomness {
    /// What to do about it.
    pub const HINT: &'static str =
        "the machine's random source is unavailable; enrichd cannot connect safely";
}

impl Pkce {
    pub fn new() -> Result<Pkce, NoRandomness> {
        let verifier = URL_SAFE_NO_PAD.encode(random::<32>()?);
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let state = URL_SAFE_NO_PAD.encode(random::<16>()?);
        Ok(Pkce {
            verifier: Secret::new(verifier),
            challenge,
            state,
        })
    }
}

fn random<const N: usize>() -> Result<[u8; N], NoRandomness> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| NoRandomness(e.to_string()))?;
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_challenge_is_s256_of_the_verifier() {
        let p = Pkce::new().unwrap();
        assert!(p.verifier.expose().len() >= 43);
        let expect = URL_SAFE_NO_PAD.encode(Sha256::digest(p.verifier.expose().as_bytes()));
        assert_eq!(p.challenge, expect);
        assert_ne!(Pkce::new().unwrap().state, p.state);
    }
}
