//! The portal's local users: `users.json` in the portal directory, one argon2id hash (PHC
//! string, random salt) per user, written by `client user add` and read at every sign-in so a
//! user added while the portal runs can sign in at once.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2};
use serde::{Deserialize, Serialize};

use super::error::{PortalError, write_private};

const FORMAT: &str = "heal-portal-users/1";
/// Below this a password is guessable offline from a stolen users file in minutes.
pub const MIN_PASSWORD: usize = 8;
/// Bounds the hashing work an attacker can make one sign-in cost.
pub const MAX_PASSWORD: usize = 1024;
const MAX_USERS_FILE: u64 = 4 << 20;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    format: String,
    users: Vec<UserRecord>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserRecord {
    name: String,
    /// argon2id PHC string.
    hash: String,
}

/// The users file of a portal directory.
pub fn users_path(dir: &Path) -> PathBuf {
    dir.join("users.json")
}

/// Names double as directory names (history, uploads), so they are kept to a safe alphabet.
pub fn validate_name(name: &str) -> Result<(), PortalError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(PortalError::InvalidUserName(name.to_string()))
    }
}

fn check_password_length(password: &str) -> Result<(), PortalError> {
    if (MIN_PASSWORD..=MAX_PASSWORD).contains(&password.len()) {
        Ok(())
    } else {
        Err(PortalError::PasswordLength {
            min: MIN_PASSWORD,
            max: MAX_PASSWORD,
        })
    }
}

fn argon2id() -> Argon2<'static> {
    // OWASP's argon2id minimum (19 MiB, 2 passes, 1 lane) is the crate's default.
    Argon2::new(
        Algorithm::Argon2id,
        argon2::Version::V0x13,
        argon2::Params::default(),
    )
}

/// An argon2id PHC string for `password` with a fresh 16-byte salt from the OS.
pub fn hash_password(password: &str) -> Result<String, PortalError> {
    check_password_length(password)?;
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| PortalError::Random(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| PortalError::Hash(e.to_string()))?;
    argon2id()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PortalError::Hash(e.to_string()))
}

/// Whether `password` matches the PHC string `hash` (false for a malformed hash).
pub fn verify_password(hash: &str, password: &str) -> bool {
    if password.len() > MAX_PASSWORD {
        return false;
    }
    match PasswordHash::new(hash) {
        Ok(parsed) => argon2id()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A hash no password matches in practice, verified for unknown user names so that a sign-in
/// takes as long whether or not the name exists.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| {
        hash_password("decoy password that nobody types")
            .unwrap_or_else(|_| "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaA".into())
    })
}

/// The users of a portal directory.
#[derive(Clone, Debug, Default)]
pub struct Users {
    records: Vec<UserRecord>,
}

impl Users {
    /// Reads and validates `users.json`; a missing file is an empty list.
    pub fn load(dir: &Path) -> Result<Self, PortalError> {
        let path = users_path(dir);
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(PortalError::io(&path, e)),
        };
        if meta.len() > MAX_USERS_FILE {
            return Err(PortalError::invalid(&path, "larger than 4 MiB"));
        }
        let text = std::fs::read_to_string(&path).map_err(|e| PortalError::io(&path, e))?;
        let file: UsersFile =
            serde_json::from_str(&text).map_err(|e| PortalError::invalid(&path, e.to_string()))?;
        if file.format != FORMAT {
            return Err(PortalError::invalid(
                &path,
                format!("format {:?}, expected {FORMAT:?}", file.format),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for u in &file.users {
            validate_name(&u.name).map_err(|e| PortalError::invalid(&path, e.to_string()))?;
            if !seen.insert(u.name.as_str()) {
                return Err(PortalError::invalid(
                    &path,
                    format!("user {:?} twice", u.name),
                ));
            }
            let parsed = PasswordHash::new(&u.hash)
                .map_err(|e| PortalError::invalid(&path, format!("hash of {:?}: {e}", u.name)))?;
            if parsed.algorithm.as_str() != "argon2id" {
                return Err(PortalError::invalid(
                    &path,
                    format!("hash of {:?} is not argon2id", u.name),
                ));
            }
        }
        Ok(Self {
            records: file.users,
        })
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Whether `name` exists and `password` is its password. Unknown names cost one hash
    /// verification too.
    pub fn verify(&self, name: &str, password: &str) -> bool {
        match self.records.iter().find(|u| u.name == name) {
            Some(u) => verify_password(&u.hash, password),
            None => {
                let _ = verify_password(decoy_hash(), password);
                false
            }
        }
    }

    /// Adds `name` (or, with `replace`, sets its new password) and writes the file.
    pub fn add(dir: &Path, name: &str, password: &str, replace: bool) -> Result<(), PortalError> {
        validate_name(name)?;
        let hash = hash_password(password)?;
        super::error::create_private_dir(dir)?;
        let mut users = Self::load(dir)?;
        match users.records.iter_mut().find(|u| u.name == name) {
            Some(_) if !replace => return Err(PortalError::UserExists(name.to_string())),
            Some(u) => u.hash = hash,
            None => users.records.push(UserRecord {
                name: name.to_string(),
                hash,
            }),
        }
        let file = UsersFile {
            format: FORMAT.into(),
            users: users.records,
        };
        let text = serde_json::to_string_pretty(&file)
            .map_err(|e| PortalError::Hash(format!("cannot serialise the users file: {e}")))?;
        write_private(&users_path(dir), text.as_bytes())
    }
}
