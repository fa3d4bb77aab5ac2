//! The inference mode (and, in mode (a), the collective key) a requester accepts, from its site
//! config: a server that answers otherwise is refused before any image is encrypted, so a server
//! (or whoever holds its certificate) cannot have an image of a mode (b) hospital encrypted under
//! a key of its own.

use protocol::site::{InferenceMode, SiteSection};

use super::error::InferenceError;

/// What this requester accepts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Accepted {
    pub mode: InferenceMode,
    /// Mode (a): BLAKE3 of the only collective public key accepted; `None`: any.
    pub collective_key: Option<[u8; 32]>,
}

impl Accepted {
    /// From a site's `[site]` section (`inference`, `collective_key`).
    pub fn from_site(site: &SiteSection) -> Result<Self, InferenceError> {
        let collective_key = site
            .collective_key
            .as_deref()
            .map(|hex| {
                parse_hex32(hex).ok_or_else(|| {
                    InferenceError::Usage(format!(
                        "[site] collective_key = \"{hex}\" is not 64 hex digits (a BLAKE3 hash)"
                    ))
                })
            })
            .transpose()?;
        Ok(Self {
            mode: site.inference,
            collective_key,
        })
    }

    /// The mode a server answers in (with its collective key in mode (a), none in mode (b)),
    /// if this requester accepts it.
    pub fn check(&self, collective_key: Option<&[u8]>) -> Result<InferenceMode, InferenceError> {
        let answered = match collective_key {
            Some(_) => InferenceMode::Collective,
            None => InferenceMode::Released,
        };
        if answered != self.mode {
            return Err(InferenceError::ModeRefused(format!(
                "the server answers in {answered}, and this site accepts only {} ([site] inference in its site.toml)",
                self.mode
            )));
        }
        if let (Some(want), Some(key)) = (&self.collective_key, collective_key) {
            let got = blake3::hash(key);
            if got.as_bytes() != want {
                return Err(InferenceError::ModeRefused(format!(
                    "the server's collective key has BLAKE3 {}, not the {} this site accepts ([site] collective_key)",
                    got.to_hex(),
                    to_hex(want)
                )));
            }
        }
        Ok(answered)
    }
}

pub fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn to_hex(b: &[u8; 32]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(inference: InferenceMode, collective_key: Option<String>) -> SiteSection {
        SiteSection {
            index: 1,
            federation: "00".repeat(16),
            name: "t".into(),
            coordinator: "127.0.0.1:1".into(),
            hospitals: 3,
            threshold: 2,
            kit: None,
            inference,
            collective_key,
            rounds: None,
        }
    }

    #[test]
    fn a_requester_takes_only_the_mode_and_key_its_site_names() {
        let released = Accepted::from_site(&site(InferenceMode::Released, None)).unwrap();
        assert_eq!(released.check(None).unwrap(), InferenceMode::Released);
        // a mode (b) site answered with a collective key (the downgrade): refused
        let err = released.check(Some(b"server's own key")).unwrap_err();
        assert!(
            err.to_string().contains("accepts only released (mode b)"),
            "{err}"
        );
        let pinned = blake3::hash(b"the consortium's key").to_hex().to_string();
        let collective =
            Accepted::from_site(&site(InferenceMode::Collective, Some(pinned))).unwrap();
        assert_eq!(
            collective.check(Some(b"the consortium's key")).unwrap(),
            InferenceMode::Collective
        );
        assert!(collective.check(Some(b"another key")).is_err());
        assert!(collective.check(None).is_err());
        assert!(Accepted::from_site(&site(InferenceMode::Collective, Some("zz".into()))).is_err());
    }
}
