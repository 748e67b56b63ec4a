//! Tokens and roles. The tokens file holds one `ROLE SHA256_HEX [calls=N]`
//! line per token (the token itself is never stored, logged or echoed;
//! `calls=N` sets that token's quota of Alpaca calls per quota window,
//! instead of `SIGNAL9_API_TOKEN_CALLS`); a request
//! shows its token as `Authorization: Bearer TOKEN` (alpaca-py's
//! `oauth_token`) or as Alpaca's key pair with the key id `signal9`
//! (`APCA-API-KEY-ID: signal9`, `APCA-API-SECRET-KEY: TOKEN`), so an
//! unmodified Alpaca client works.
//!
//! Auth fails closed: a tokens file that is missing, empty or broken at
//! start stops the start; one that becomes so later revokes every token
//! until it is fixed (an error in the log at each look). The example hashes
//! shipped in `compose/api-tokens` (whose tokens are public) are refused
//! unless `SIGNAL9_API_ALLOW_EXAMPLE_TOKENS=1`.

mod require;

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;
use std::path::Path;

pub(crate) use require::{Operate, Read, RequireRole, RoleMark};

/// The key id a client sends with a token as its secret key.
pub(crate) const KEY_ID: &str = "signal9";

/// What a token may do. `Operate` includes `Read`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Role {
    /// The data routes and the console's pages.
    Read,
    /// And the console's actions (replay, purge).
    Operate,
}

impl Role {
    /// The name in the tokens file.
    pub(crate) fn as_str(self) -> &'static str {
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

/// The SHA-256 of the example tokens in `compose/api-tokens`
/// (`compose-read-token`, `compose-operate-token`): public, so refused
/// unless explicitly allowed.
pub(crate) const EXAMPLE_HASHES: [&str; 2] = [
    "8032ccfa14e47c2dbcd0bfd6674188b16b79ad37ba26eed42499c39f4c806991",
    "43b92e7d2bb8e811f31d29e7f657877ada39c171f18c5c0351f55d5150c346be",
];

/// The longest tokens file read (a real one is a few lines).
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// What one token may do and spend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Grant {
    /// Its role.
    pub(crate) role: Role,
    /// Its own quota of calls per window, if its line sets one.
    pub(crate) calls: Option<u32>,
}

/// A request's verified token: its role, the hash that names it (the
/// quota's key; never the token) and its own quota, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Caller {
    /// The role.
    pub(crate) role: Role,
    /// The token's SHA-256, hex.
    pub(crate) hash: String,
    /// The token's own quota of calls per window.
    pub(crate) calls: Option<u32>,
}

/// The accepted tokens, by the hex SHA-256 of each.
#[derive(Clone, Default)]
pub struct Tokens {
    by_hash: HashMap<String, Grant>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Hashes are not secrets, but nothing about tokens is worth printing.
        write!(f, "Tokens({} entries)", self.by_hash.len())
    }
}

/// Why a request is not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Denied {
    /// No token, or one the file does not hold: 401.
    Unauthenticated(&'static str),
    /// A valid token without the role: 403.
    Forbidden(Role),
}

/// The hex SHA-256 of a token, as the tokens file holds it.
pub(crate) fn hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

impl Tokens {
    /// Reads the tokens file. A line that is not `ROLE HEX64 [calls=N]` is
    /// an error naming its line number (never its content); so is a file
    /// that holds no token, and one holding an example hash unless
    /// `allow_example`.
    pub(crate) fn load(path: &Path, allow_example: bool) -> anyhow::Result<Tokens> {
        let size = std::fs::metadata(path)
            .map_err(|e| anyhow::anyhow!("reading the tokens file {}: {e}", path.display()))?
            .len();
        if size > MAX_FILE_BYTES {
            anyhow::bail!(
                "tokens file {} is {size} bytes, more than the {MAX_FILE_BYTES} read",
                path.display()
            );
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading the tokens file {}: {e}", path.display()))?;
        Tokens::from_text(&text, allow_example).map_err(|e| anyhow::anyhow!("tokens file {}: {e}", path.display()))
    }

    /// [`Tokens::parse`], refusing a text with no token, or with an
    /// example hash unless `allow_example`.
    pub(crate) fn from_text(text: &str, allow_example: bool) -> Result<Tokens, String> {
        let tokens = Tokens::parse(text)?;
        if tokens.by_hash.is_empty() {
            return Err("it holds no token: add a line `read SHA256_HEX` (printf %s \"$TOKEN\" | sha256sum)".into());
        }
        if !allow_example && EXAMPLE_HASHES.iter().any(|h| tokens.by_hash.contains_key(*h)) {
            return Err(
                "it holds an example token from compose/api-tokens, whose plaintext is public: \
                 make your own tokens (or set SIGNAL9_API_ALLOW_EXAMPLE_TOKENS=1 for a demo)"
                    .into(),
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
            let number = number.saturating_add(1);
            let mut parts = line.split_whitespace();
            let (Some(role), Some(hex), quota, None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
                return Err(format!("line {number}: expected `ROLE SHA256_HEX [calls=N]`"));
            };
            let Some(role) = Role::parse(role) else {
                return Err(format!("line {number}: the role must be read or operate"));
            };
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "line {number}: expected the 64 hex digits of the token's SHA-256, not the token itself"
                ));
            }
            let calls = match quota {
                None => None,
                Some(q) => match q.strip_prefix("calls=").map(str::parse::<u32>) {
                    Some(Ok(n)) if n > 0 => Some(n),
                    _ => {
                        return Err(format!(
                            "line {number}: the third field must be calls=N (N from 1 to 4294967295)"
                        ))
                    }
                },
            };
            by_hash
                .entry(hex.to_ascii_lowercase())
                .and_modify(|g: &mut Grant| {
                    g.role = g.role.max(role);
                    g.calls = g.calls.max(calls);
                })
                .or_insert(Grant { role, calls });
        }
        Ok(Tokens { by_hash })
    }

    /// How many tokens are accepted.
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    /// True when no token is accepted (a missing or broken file).
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// The role of `token`, if the file holds it.
    pub(crate) fn role_of(&self, token: &str) -> Option<Role> {
        if token.is_empty() {
            return None;
        }
        self.by_hash.get(&hash(token)).map(|g| g.role)
    }

    /// The role of the token whose hash is `hash`, if the file still holds it.
    pub(crate) fn role_of_hash(&self, hash: &str) -> Option<Role> {
        self.by_hash.get(hash).map(|g| g.role)
    }

    /// Checks a request's headers for a token with at least `needed`.
    pub(crate) fn check(&self, headers: &HeaderMap, needed: Role) -> Result<Caller, Denied> {
        let token = token_of(headers)?;
        if token.is_empty() {
            return Err(Denied::Unauthenticated("the token is not valid"));
        }
        let hash = hash(token);
        let grant = self
            .by_hash
            .get(&hash)
            .copied()
            .ok_or(Denied::Unauthenticated("the token is not valid"))?;
        if grant.role < needed {
            return Err(Denied::Forbidden(needed));
        }
        Ok(Caller {
            role: grant.role,
            hash,
            calls: grant.calls,
        })
    }
}

/// The tokens file, read again every [`RELOAD_EVERY`] and used as it is
/// then, so tokens are added and revoked without a restart. A file that
/// is deleted, emptied or no longer parses revokes every token until it
/// is fixed: auth fails closed.
#[derive(Debug)]
pub(crate) struct TokenFile {
    path: std::path::PathBuf,
    allow_example: bool,
    state: std::sync::RwLock<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    tokens: std::sync::Arc<Tokens>,
    /// What the file held when last read (`None`: it could not be read).
    text: Option<String>,
    checked: std::time::Instant,
}

/// How often the tokens file is looked at.
pub(crate) const RELOAD_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

fn read_text(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.len() > MAX_FILE_BYTES {
        return None;
    }
    std::fs::read_to_string(path).ok()
}

impl TokenFile {
    /// Reads the file: missing, empty, broken or (unless `allow_example`)
    /// holding an example hash stops the start.
    pub(crate) fn open(path: &Path, allow_example: bool) -> anyhow::Result<TokenFile> {
        let tokens = Tokens::load(path, allow_example)?;
        Ok(TokenFile {
            path: path.to_owned(),
            allow_example,
            state: std::sync::RwLock::new(Loaded {
                tokens: std::sync::Arc::new(tokens),
                text: read_text(path),
                checked: std::time::Instant::now(),
            }),
        })
    }

    /// The tokens now, reading the file again if it is due (shared, not
    /// copied: every request asks).
    pub(crate) fn current(&self) -> std::sync::Arc<Tokens> {
        {
            let loaded = self.state.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            if loaded.checked.elapsed() < RELOAD_EVERY {
                return loaded.tokens.clone();
            }
        }
        let mut loaded = self.state.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if loaded.checked.elapsed() < RELOAD_EVERY {
            return loaded.tokens.clone();
        }
        loaded.checked = std::time::Instant::now();
        let text = read_text(&self.path);
        if text == loaded.text {
            return loaded.tokens.clone();
        }
        let tokens = match &text {
            None => Err(format!(
                "tokens file {} cannot be read (missing, unreadable or over {MAX_FILE_BYTES} bytes)",
                self.path.display()
            )),
            Some(text) => Tokens::from_text(text, self.allow_example),
        };
        match tokens {
            Ok(tokens) => {
                tracing::info!(tokens = tokens.len(), "Tokens file read again");
                loaded.tokens = std::sync::Arc::new(tokens);
            }
            Err(error) => {
                tracing::error!(
                    %error,
                    "Tokens file cannot be used: every token is refused until it is fixed"
                );
                loaded.tokens = std::sync::Arc::new(Tokens::default());
            }
        }
        loaded.text = text;
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
            "# comment\n\nread {}\noperate {} calls=50 # ops\n",
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
            t.check(&headers(&[("authorization", "Bearer reader-token")]), Role::Read)
                .map(|c| c.role),
            Ok(Role::Read)
        );
        let operator = t
            .check(
                &headers(&[
                    ("apca-api-key-id", "signal9"),
                    ("apca-api-secret-key", "operator-token"),
                ]),
                Role::Operate,
            )
            .unwrap();
        assert_eq!(
            (operator.role, operator.hash, operator.calls),
            (Role::Operate, hash("operator-token"), Some(50))
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
        assert!(matches!(
            t.check(&headers(&[("authorization", "Bearer ")]), Role::Read),
            Err(Denied::Unauthenticated(_))
        ));
    }

    #[test]
    fn a_line_holding_a_raw_token_is_refused_without_echoing_it() {
        let err = Tokens::parse("read my-secret-token\n").unwrap_err();
        assert!(err.contains("line 1"), "{err}");
        assert!(!err.contains("my-secret-token"), "{err}");
        assert!(Tokens::parse("admin 00\n").unwrap_err().contains("read or operate"));
        let quota = format!("read {} calls=lots\n", hash("x"));
        assert!(Tokens::parse(&quota).unwrap_err().contains("calls=N"));
        assert!(!format!("{:?}", tokens()).contains(&hash("reader-token")));
    }

    #[test]
    fn the_example_hashes_are_the_compose_files_and_refused_unless_allowed() {
        let compose = include_str!("../../../compose/api-tokens");
        for example in EXAMPLE_HASHES {
            assert!(compose.contains(example), "{example} is not in compose/api-tokens");
        }
        assert!(Tokens::from_text(compose, false).unwrap_err().contains("example token"));
        assert_eq!(Tokens::from_text(compose, true).unwrap().len(), 2);
        assert!(Tokens::from_text("# nothing\n", true).unwrap_err().contains("no token"));
    }

    #[test]
    fn a_file_emptied_deleted_or_broken_revokes_every_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        let good = format!("read {}\n", hash("reader-token"));
        std::fs::write(&path, &good).unwrap();
        let file = TokenFile::open(&path, false).unwrap();
        let bearer = headers(&[("authorization", "Bearer reader-token")]);
        assert!(file.current().check(&bearer, Role::Read).is_ok());
        let age = |file: &TokenFile| {
            file.state.write().unwrap().checked -= RELOAD_EVERY;
        };
        for (change, what) in [
            (Some(String::new()), "emptied"),
            (Some(good.clone()), "restored"),
            (None, "deleted"),
            (Some(good.clone()), "restored"),
            (Some(format!("{good}read not-a-hash\n")), "broken"),
        ] {
            match &change {
                Some(text) => std::fs::write(&path, text).unwrap(),
                None => std::fs::remove_file(&path).unwrap(),
            }
            age(&file);
            let allowed = file.current().check(&bearer, Role::Read).is_ok();
            assert_eq!(allowed, what == "restored", "after the file was {what}");
        }
        assert!(TokenFile::open(&dir.path().join("missing"), false).is_err());
    }
}
