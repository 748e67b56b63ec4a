//! Tokens and roles. The tokens file holds one `ROLE SHA256_HEX` line per
//! token (the token itself is never stored, logged or echoed); a request
//! shows its token as `Authorization: Bearer TOKEN` (alpaca-py's
//! `oauth_token`) or as Alpaca's key pair with the key id `signal9`
//! (`APCA-API-KEY-ID: signal9`, `APCA-API-SECRET-KEY: TOKEN`), so an
//! unmodified Alpaca client works.

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;
use std::path::Path;

/// The key id a client sends with a token as its secret key.
pub const KEY_ID: &str = "signal9";

/// What a token may do. `Operate` includes `Read`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// The data routes and the console's pages.
    Read,
    /// And the console's actions (replay, purge).
    Operate,
}

impl Role {
    /// The name in the tokens file.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Operate => "operate",
        }
    }

    fn parse(text: &str) -> Option<Role> {
        match text {
            "read" => Some(Role::Read),
            "operate" => Some(Role::Operate),
            _ => None,
        }
    }
}

/// The accepted tokens, by the hex SHA-256 of each.
#[derive(Clone, Default)]
pub struct Tokens {
    by_hash: HashMap<String, Role>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Hashes are not secrets, but nothing about tokens is worth printing.
        write!(f, "Tokens({} entries)", self.by_hash.len())
    }
}

/// Why a request is not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No token, or one the file does not hold: 401.
    Unauthenticated(&'static str),
    /// A valid token without the role: 403.
    Forbidden(Role),
}

/// The hex SHA-256 of a token, as the tokens file holds it.
pub fn hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

impl Tokens {
    /// Reads the tokens file. A line that is not `ROLE HEX64` is an error
    /// naming its line number (never its content).
    pub fn load(path: &Path) -> anyhow::Result<Tokens> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading the tokens file {}: {e}", path.display()))?;
        let tokens = Tokens::parse(&text).map_err(|e| anyhow::anyhow!("tokens file {}: {e}", path.display()))?;
        if tokens.by_hash.is_empty() {
            anyhow::bail!(
                "tokens file {} holds no token: add a line `read SHA256_HEX` (printf %s \"$TOKEN\" | sha256sum)",
                path.display()
            );
        }
        Ok(tokens)
    }

    /// Parses the file's text.
    pub fn parse(text: &str) -> Result<Tokens, String> {
        let mut by_hash = HashMap::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (Some(role), Some(hex), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(format!("line {}: expected `ROLE SHA256_HEX`", number + 1));
            };
            let Some(role) = Role::parse(role) else {
                return Err(format!("line {}: the role must be read or operate", number + 1));
            };
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "line {}: expected the 64 hex digits of the token's SHA-256, not the token itself",
                    number + 1
                ));
            }
            by_hash
                .entry(hex.to_ascii_lowercase())
                .and_modify(|r: &mut Role| *r = (*r).max(role))
                .or_insert(role);
        }
        Ok(Tokens { by_hash })
    }

    /// The role of `token`, if the file holds it.
    pub fn role_of(&self, token: &str) -> Option<Role> {
        if token.is_empty() {
            return None;
        }
        self.by_hash.get(&hash(token)).copied()
    }

    /// The role of the token whose hash is `hash`, if the file still holds it.
    pub fn role_of_hash(&self, hash: &str) -> Option<Role> {
        self.by_hash.get(hash).copied()
    }

    /// Checks a request's headers for a token with at least `needed`.
    pub fn check(&self, headers: &HeaderMap, needed: Role) -> Result<Role, Denied> {
        let token = token_of(headers)?;
        let role = self
            .role_of(token)
            .ok_or(Denied::Unauthenticated("the token is not valid"))?;
        if role < needed {
            return Err(Denied::Forbidden(needed));
        }
        Ok(role)
    }
}

/// The tokens file, read again when it changes (its modification time or
/// size, looked at most every [`RELOAD_EVERY`]), so tokens are added and
/// revoked without a restart. A file that no longer parses keeps the
/// tokens read before, with an error in the log.
#[derive(Debug)]
pub struct TokenFile {
    path: std::path::PathBuf,
    state: std::sync::RwLock<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    tokens: std::sync::Arc<Tokens>,
    stamp: Option<(std::time::SystemTime, u64)>,
    checked: std::time::Instant,
}

/// How often the tokens file is looked at.
pub const RELOAD_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

fn stamp(path: &Path) -> Option<(std::time::SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

impl TokenFile {
    /// Reads the file (an error stops the start).
    pub fn open(path: &Path) -> anyhow::Result<TokenFile> {
        let stamp = stamp(path);
        let tokens = Tokens::load(path)?;
        Ok(TokenFile {
            path: path.to_owned(),
            state: std::sync::RwLock::new(Loaded {
                tokens: std::sync::Arc::new(tokens),
                stamp,
                checked: std::time::Instant::now(),
            }),
        })
    }

    /// The tokens now, reading the file again if it changed (shared, not
    /// copied: every request asks).
    pub fn current(&self) -> std::sync::Arc<Tokens> {
        {
            let loaded = self.state.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            if loaded.checked.elapsed() < RELOAD_EVERY {
                return loaded.tokens.clone();
            }
        }
        let mut loaded = self.state.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if loaded.checked.elapsed() >= RELOAD_EVERY {
            loaded.checked = std::time::Instant::now();
            let now = stamp(&self.path);
            if now != loaded.stamp {
                loaded.stamp = now;
                match Tokens::load(&self.path) {
                    Ok(tokens) => {
                        tracing::info!(tokens = tokens.by_hash.len(), "Tokens file read again");
                        loaded.tokens = std::sync::Arc::new(tokens);
                    }
                    Err(error) => {
                        tracing::error!(%error, "Tokens file changed but cannot be used; the tokens read before stay");
                    }
                }
            }
        }
        loaded.tokens.clone()
    }
}

/// The token a request shows, from either header form.
fn token_of(headers: &HeaderMap) -> Result<&str, Denied> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(auth) = text("authorization") {
        return match auth.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Ok(token.trim()),
            _ => Err(Denied::Unauthenticated("Authorization must be `Bearer TOKEN`")),
        };
    }
    match (text("apca-api-key-id"), text("apca-api-secret-key")) {
        (Some(KEY_ID), Some(secret)) => Ok(secret),
        (Some(_), _) => Err(Denied::Unauthenticated(
            "APCA-API-KEY-ID must be `signal9`, with the token as APCA-API-SECRET-KEY",
        )),
        _ => Err(Denied::Unauthenticated(
            "no token: send `Authorization: Bearer TOKEN`, or APCA-API-KEY-ID: signal9 with the token as APCA-API-SECRET-KEY",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn tokens() -> Tokens {
        Tokens::parse(&format!(
            "# comment\n\nread {}\noperate {}  # ops\n",
            hash("reader-token"),
            hash("operator-token").to_ascii_uppercase()
        ))
        .unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn a_bearer_token_or_the_signal9_key_pair_is_accepted_with_its_role() {
        let t = tokens();
        assert_eq!(
            t.check(&headers(&[("authorization", "Bearer reader-token")]), Role::Read),
            Ok(Role::Read)
        );
        assert_eq!(
            t.check(
                &headers(&[
                    ("apca-api-key-id", "signal9"),
                    ("apca-api-secret-key", "operator-token")
                ]),
                Role::Operate
            ),
            Ok(Role::Operate)
        );
    }

    #[test]
    fn a_wrong_or_missing_token_is_unauthenticated_and_a_weak_role_forbidden() {
        let t = tokens();
        assert!(matches!(
            t.check(&headers(&[]), Role::Read),
            Err(Denied::Unauthenticated(_))
        ));
        assert!(matches!(
            t.check(&headers(&[("authorization", "Bearer nope")]), Role::Read),
            Err(Denied::Unauthenticated(_))
        ));
        assert!(matches!(
            t.check(
                &headers(&[("apca-api-key-id", "someone"), ("apca-api-secret-key", "reader-token")]),
                Role::Read
            ),
            Err(Denied::Unauthenticated(_))
        ));
        assert_eq!(
            t.check(&headers(&[("authorization", "Bearer reader-token")]), Role::Operate),
            Err(Denied::Forbidden(Role::Operate))
        );
    }

    #[test]
    fn a_line_holding_a_raw_token_is_refused_without_echoing_it() {
        let err = Tokens::parse("read my-secret-token\n").unwrap_err();
        assert!(err.contains("line 1"), "{err}");
        assert!(!err.contains("my-secret-token"), "{err}");
        assert!(Tokens::parse("admin 00\n").unwrap_err().contains("read or operate"));
        assert!(!format!("{:?}", tokens()).contains(&hash("reader-token")));
    }
}
