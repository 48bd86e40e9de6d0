//! Console sessions: a moderator's or admin's token exchanged for a session cookie.
//!
//! - **Login** (`POST /console/login`, JSON `{"token": "..."}`) checks the token against the
//!   same credentials as gRPC (constant time, digests only) and needs the `moderator` or
//!   `admin` role. Failed attempts are limited per client address and minute
//!   (`http.login_attempts_per_minute`, then `429` with `Retry-After`).
//! - The **cookie** (`modbot_session`) is a random 256-bit id: `HttpOnly`, `SameSite=Strict`,
//!   `Path=/`, `Max-Age` of the session, `Secure` under HTTPS. The server keeps only its
//!   SHA-256 digest, with the principal's name and roles (never the token), until it expires
//!   (`http.session_ttl_secs`) or logs out; at most `http.max_sessions`, the oldest dropped.
//! - **CSRF**: every state-changing request made with the cookie must carry the session's own
//!   random token in `X-CSRF-Token` (compared in constant time). JSON bodies already force a
//!   CORS preflight, which this server never grants; the token is the second wall.
//! - Without tokens configured (a loopback-only server), login takes an empty token and signs
//!   in as `local` with every role, as gRPC trusts every caller there.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;

use crate::config::{HttpConfig, Role, Roles, token_digest};
use crate::edge::grpc::auth::{Authenticator, Principal};

/// The session cookie's name.
pub const COOKIE: &str = "modbot_session";

/// The header a state-changing console request carries its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Client addresses whose failed logins are remembered at once; beyond, the oldest minute's
/// are forgotten first (the limit then errs toward refusing: see [`Sessions::login`]).
const MAX_TRACKED_ADDRESSES: usize = 10_000;

/// One signed-in person.
#[derive(Debug, Clone)]
pub struct Session {
    /// Who, with what roles.
    pub principal: Principal,
    /// The token state-changing requests must echo.
    pub csrf: String,
    /// When it ends.
    pub expires: Instant,
    created: Instant,
}

/// Why a login failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginError {
    /// The token matches no credential.
    Invalid,
    /// The token is valid but lacks the moderator and admin roles.
    NotAModerator {
        /// The token's name.
        name: String,
        /// Its roles.
        roles: Roles,
    },
    /// Too many failed attempts from this address this minute.
    TooMany {
        /// When the next attempt may be made.
        retry_after: Duration,
    },
}

/// The sessions of this replica, and the login limiter.
#[derive(Debug)]
pub struct Sessions {
    ttl: Duration,
    max: usize,
    attempts_per_minute: u32,
    sessions: Mutex<HashMap<[u8; 32], Session>>,
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl Sessions {
    /// Sessions as `[http]` configures them.
    pub fn new(config: &HttpConfig) -> Self {
        Self {
            ttl: config.session_ttl(),
            max: config.max_sessions as usize,
            attempts_per_minute: config.login_attempts_per_minute,
            sessions: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// How long a new session lasts.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Signs in with `token` from `client`: the new session's id (for the cookie) and the
    /// session.
    pub fn login(
        &self,
        authenticator: &Authenticator,
        token: &str,
        client: IpAddr,
        now: Instant,
    ) -> Result<(String, Session), LoginError> {
        self.check_rate(client, now)?;
        let principal = if authenticator.enabled() {
            let token = token.trim();
            match (!token.is_empty())
                .then(|| authenticator.identify(token.as_bytes()))
                .flatten()
            {
                Some(principal) => principal,
                None => {
                    self.fail(client, now);
                    return Err(LoginError::Invalid);
                }
            }
        } else {
            Principal {
                name: "local".to_owned(),
                roles: Roles::of(&Role::ALL),
                binding: None,
            }
        };
        if !principal
            .roles
            .intersects(Roles::of(&[Role::Moderator, Role::Admin]))
        {
            self.fail(client, now);
            return Err(LoginError::NotAModerator {
                name: principal.name,
                roles: principal.roles,
            });
        }
        let id = random_hex();
        let session = Session {
            principal,
            csrf: random_hex(),
            expires: now + self.ttl,
            created: now,
        };
        let mut sessions = lock(&self.sessions);
        sessions.retain(|_, s| s.expires > now);
        while sessions.len() >= self.max {
            let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.created)
                .map(|(k, _)| *k)
            else {
                break;
            };
            sessions.remove(&oldest);
        }
        sessions.insert(token_digest(id.as_bytes()), session.clone());
        Ok((id, session))
    }

    /// The live session with cookie value `id`.
    pub fn get(&self, id: &str, now: Instant) -> Option<Session> {
        let key = token_digest(id.as_bytes());
        let mut sessions = lock(&self.sessions);
        match sessions.get(&key) {
            Some(session) if session.expires > now => Some(session.clone()),
            Some(_) => {
                sessions.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Ends the session with cookie value `id`.
    pub fn logout(&self, id: &str) {
        lock(&self.sessions).remove(&token_digest(id.as_bytes()));
    }

    /// Sessions held now (expired ones included until they are next looked at).
    pub fn len(&self) -> usize {
        lock(&self.sessions).len()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn check_rate(&self, client: IpAddr, now: Instant) -> Result<(), LoginError> {
        let failures = lock(&self.failures);
        if let Some((since, count)) = failures.get(&client) {
            let elapsed = now.saturating_duration_since(*since);
            if elapsed < Duration::from_secs(60) && *count >= self.attempts_per_minute {
                return Err(LoginError::TooMany {
                    retry_after: Duration::from_secs(60) - elapsed,
                });
            }
        }
        Ok(())
    }

    fn fail(&self, client: IpAddr, now: Instant) {
        let mut failures = lock(&self.failures);
        if failures.len() >= MAX_TRACKED_ADDRESSES {
            failures.retain(|_, (since, _)| {
                now.saturating_duration_since(*since) < Duration::from_secs(60)
            });
        }
        if failures.len() >= MAX_TRACKED_ADDRESSES && !failures.contains_key(&client) {
            // Flooded from more addresses than are tracked: an attacker rotating addresses
            // gains nothing by it, since every other client is still limited; this one is
            // simply not remembered.
            return;
        }
        let entry = failures.entry(client).or_insert((now, 0));
        if now.saturating_duration_since(entry.0) >= Duration::from_secs(60) {
            *entry = (now, 0);
        }
        entry.1 += 1;
        metrics::counter!("modbot_console_login_failures_total").increment(1);
    }
}

/// Whether `presented` is the session's CSRF token (constant time).
pub fn csrf_matches(session: &Session, presented: &str) -> bool {
    let expected = session.csrf.as_bytes();
    presented.len() == expected.len() && bool::from(presented.as_bytes().ct_eq(expected))
}

/// 256 random bits from the OS, as 64 hex digits.
fn random_hex() -> String {
    use std::fmt::Write as _;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random number generator works. This is a bug");
    bytes.iter().fold(String::with_capacity(64), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind, still consistent.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Credential;

    fn config() -> HttpConfig {
        HttpConfig {
            addr: None,
            session_ttl_secs: 60,
            max_sessions: 2,
            login_attempts_per_minute: 3,
            secure_cookies: false,
            pseudonym_secret: Default::default(),
        }
    }

    fn authenticator() -> Authenticator {
        Authenticator::new(vec![
            Credential::new(
                "alice",
                Roles::of(&[Role::Moderator]),
                b"aaaaaaaaaaaaaaaaaaaa",
            ),
            Credential::new(
                "backend",
                Roles::of(&[Role::Classifier]),
                b"bbbbbbbbbbbbbbbbbbbb",
            ),
        ])
    }

    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn a_moderator_token_signs_in_and_the_session_ends_at_its_time() {
        let sessions = Sessions::new(&config());
        let now = Instant::now();
        let (id, session) = sessions
            .login(&authenticator(), "aaaaaaaaaaaaaaaaaaaa", CLIENT, now)
            .expect("a moderator");
        assert_eq!(session.principal.name, "alice");
        assert_eq!(id.len(), 64);
        assert_ne!(id, session.csrf);
        assert!(sessions.get(&id, now + Duration::from_secs(59)).is_some());
        assert!(sessions.get(&id, now + Duration::from_secs(60)).is_none());
        assert!(sessions.get("not-a-session", now).is_none());
    }

    #[test]
    fn logout_ends_the_session() {
        let sessions = Sessions::new(&config());
        let now = Instant::now();
        let (id, _) = sessions
            .login(&authenticator(), "aaaaaaaaaaaaaaaaaaaa", CLIENT, now)
            .expect("a moderator");
        sessions.logout(&id);
        assert!(sessions.get(&id, now).is_none());
    }

    #[test]
    fn other_roles_and_wrong_tokens_are_refused_and_limited() {
        let sessions = Sessions::new(&config());
        let now = Instant::now();
        assert!(matches!(
            sessions.login(&authenticator(), "bbbbbbbbbbbbbbbbbbbb", CLIENT, now),
            Err(LoginError::NotAModerator { .. })
        ));
        assert_eq!(
            sessions
                .login(&authenticator(), "wrong-token-wrong-token", CLIENT, now)
                .map(|_| ()),
            Err(LoginError::Invalid)
        );
        assert_eq!(
            sessions
                .login(&authenticator(), "", CLIENT, now)
                .map(|_| ()),
            Err(LoginError::Invalid)
        );
        // Three failures: even the right token waits for the minute to pass.
        assert!(matches!(
            sessions.login(&authenticator(), "aaaaaaaaaaaaaaaaaaaa", CLIENT, now),
            Err(LoginError::TooMany { .. })
        ));
        let other = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));
        assert!(
            sessions
                .login(&authenticator(), "aaaaaaaaaaaaaaaaaaaa", other, now)
                .is_ok(),
            "another address is not limited"
        );
        assert!(
            sessions
                .login(
                    &authenticator(),
                    "aaaaaaaaaaaaaaaaaaaa",
                    CLIENT,
                    now + Duration::from_secs(61)
                )
                .is_ok(),
            "the next minute"
        );
    }

    #[test]
    fn sessions_are_bounded_and_the_oldest_goes() {
        let sessions = Sessions::new(&config());
        let now = Instant::now();
        let ids: Vec<String> = (0..3)
            .map(|i| {
                sessions
                    .login(
                        &authenticator(),
                        "aaaaaaaaaaaaaaaaaaaa",
                        CLIENT,
                        now + Duration::from_millis(i),
                    )
                    .expect("ok")
                    .0
            })
            .collect();
        assert_eq!(sessions.len(), 2);
        assert!(sessions.get(&ids[0], now).is_none());
        assert!(sessions.get(&ids[2], now).is_some());
    }

    #[test]
    fn without_tokens_login_is_local_with_every_role() {
        let sessions = Sessions::new(&config());
        let (_, session) = sessions
            .login(&Authenticator::new(Vec::new()), "", CLIENT, Instant::now())
            .expect("no tokens");
        assert_eq!(session.principal.name, "local");
        assert!(session.principal.roles.contains(Role::Admin));
    }

    #[test]
    fn csrf_is_compared_whole() {
        let sessions = Sessions::new(&config());
        let (_, session) = sessions
            .login(
                &authenticator(),
                "aaaaaaaaaaaaaaaaaaaa",
                CLIENT,
                Instant::now(),
            )
            .expect("ok");
        assert!(csrf_matches(&session, &session.csrf.clone()));
        assert!(!csrf_matches(&session, &session.csrf[..63]));
        assert!(!csrf_matches(&session, ""));
    }
}
