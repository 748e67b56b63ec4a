//! Console sessions: a random id in a cookie, held in this process's
//! memory, bounded, throttled per address on failed logins. The
//! extractors that read them are in `extract.rs`.

use crate::auth::Role;
use axum::http::{header, HeaderMap};
use rand::Rng;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub(super) const COOKIE: &str = "signal9_console";

/// The cookie's name when it is `Secure`: the browser then also insists on
/// `Path=/`, no `Domain` and HTTPS.
pub(super) const SECURE_COOKIE: &str = "__Host-signal9_console";

/// How long failed logins are counted against an address.
pub(super) const LOGIN_WINDOW: Duration = Duration::from_secs(60);

/// Addresses whose failures are remembered at most (a flood of addresses
/// forgets them all rather than grow).
pub(super) const MAX_TRACKED_ADDRESSES: usize = 10_000;

pub(super) const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

#[derive(Debug, Clone)]
pub(super) struct Login {
    pub(super) role: Role,
    /// The token's hash: a session ends when its token leaves the file.
    pub(super) token: String,
    pub(super) csrf: String,
    pub(super) expires: Instant,
    pub(super) flash: Option<String>,
}

/// Console sessions, by cookie value, and failed logins by address.
#[derive(Debug)]
pub(crate) struct Sessions {
    inner: Mutex<HashMap<String, Login>>,
    max: usize,
    attempts: u32,
    failures: Mutex<HashMap<std::net::IpAddr, (Instant, u32)>>,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions::new(1000, 10)
    }
}

pub(super) fn random_hex() -> String {
    let bytes: [u8; 24] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Sessions {
    /// At most `max` sessions; `attempts` failed logins per address a minute.
    pub(crate) fn new(max: usize, attempts: u32) -> Self {
        Sessions {
            inner: Mutex::new(HashMap::new()),
            max: max.max(1),
            attempts: attempts.max(1),
            failures: Mutex::new(HashMap::new()),
        }
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Login>> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Seconds until `address` may try again, if its failures are used up.
    pub(super) fn throttled(&self, address: std::net::IpAddr) -> Option<u64> {
        let failures = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (since, count) = failures.get(&address)?;
        let left = LOGIN_WINDOW.checked_sub(since.elapsed())?;
        (*count >= self.attempts).then(|| left.as_secs().max(1))
    }

    pub(super) fn failed(&self, address: std::net::IpAddr) {
        let mut failures = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if failures.len() >= MAX_TRACKED_ADDRESSES {
            failures.retain(|_, (since, _)| since.elapsed() < LOGIN_WINDOW);
            if failures.len() >= MAX_TRACKED_ADDRESSES {
                failures.clear();
            }
        }
        let entry = failures.entry(address).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= LOGIN_WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }

    /// How many sessions are held.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }

    pub(super) fn open(&self, role: Role, token: String) -> String {
        let id = random_hex();
        let mut map = self.lock();
        map.retain(|_, l| l.expires > Instant::now());
        while map.len() >= self.max {
            // Full: the session closest to expiring (the oldest) ends.
            let Some(oldest) = map.iter().min_by_key(|(_, l)| l.expires).map(|(k, _)| k.clone()) else {
                break;
            };
            map.remove(&oldest);
        }
        map.insert(
            id.clone(),
            Login {
                role,
                token,
                csrf: random_hex(),
                expires: Instant::now() + SESSION_TTL,
                flash: None,
            },
        );
        id
    }

    /// The live session of a request whose token `tokens` still hold,
    /// with the token's role now.
    pub(super) fn get(&self, headers: &HeaderMap, tokens: &crate::auth::Tokens) -> Option<(String, Login)> {
        let id = cookie(headers)?;
        let mut map = self.lock();
        let login = map.get_mut(&id).filter(|l| l.expires > Instant::now())?;
        let Some(role) = tokens.role_of_hash(&login.token) else {
            map.remove(&id);
            return None;
        };
        login.role = role;
        Some((id, login.clone()))
    }

    pub(super) fn take_flash(&self, id: &str) -> Option<String> {
        self.lock().get_mut(id).and_then(|l| l.flash.take())
    }

    pub(super) fn set_flash(&self, id: &str, message: String) {
        if let Some(login) = self.lock().get_mut(id) {
            login.flash = Some(message);
        }
    }

    pub(super) fn close(&self, id: &str) {
        self.lock().remove(id);
    }
}

pub(super) fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE || *name == SECURE_COOKIE)
        .map(|(_, value)| value.to_owned())
}
