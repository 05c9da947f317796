//! Who is asking: bearer tokens with roles, dashboard sessions in a cookie, and
//! CSRF protection for the cookie's state-changing requests.
//!
//! - An API client sends `Authorization: Bearer TOKEN`; the token's name and
//!   role ([`crate::config::Role`]) come from `[server] admin_token` and
//!   `[[server.tokens]]`.
//! - The dashboard's login exchanges a token for the cookie [`SESSION_COOKIE`]
//!   (`HttpOnly`, `SameSite=Strict`): `v1.NAME.EXPIRES.MAC`, where MAC is an
//!   HMAC-SHA256 keyed by the token itself over the name and the expiry. No
//!   state is kept: every node checks a cookie alone, a forged or expired one is
//!   refused, and a token removed from the config ends its sessions.
//! - A request authenticated by the cookie that changes state must carry the
//!   header [`CSRF_HEADER`] (or the form field `csrf`) with `csrf_token` of
//!   that cookie: another site can make the browser send the cookie, never read
//!   the token. Bearer requests need none (no ambient credential).
//!
//! Handlers state the role they need with an extractor ([`Viewer`],
//! [`Operator`], [`Admin`]); the middleware [`authenticate`] has put the
//! [`Principal`] in the request by then, or answered 401.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::{ApiToken, Role};
use crate::http::ApiError;

/// The dashboard's session cookie.
pub const SESSION_COOKIE: &str = "sluice_session";
/// The header carrying the CSRF token of a cookie-authenticated request.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The holder of a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's name.
    pub name: String,
    /// The token's role.
    pub role: Role,
    /// How it was shown: a session cookie (then CSRF applies) or a bearer token.
    pub by_cookie: bool,
    /// The CSRF token of the session (empty for a bearer request).
    pub csrf: String,
}

/// Every configured token.
#[derive(Debug, Clone)]
pub struct Tokens {
    tokens: Arc<Vec<ApiToken>>,
    session_ttl: Duration,
}

fn mac(key: &str, parts: &[&str]) -> Vec<u8> {
    // HMAC takes a key of any length.
    let mut m = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap_or_else(|_| unreachable!());
    for p in parts {
        m.update(p.as_bytes());
        m.update(b"\n");
    }
    m.finalize().into_bytes().to_vec()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

impl Tokens {
    /// The tokens of the settings; sessions last `session_ttl`.
    pub fn new(tokens: Vec<ApiToken>, session_ttl: Duration) -> Self {
        Self {
            tokens: Arc::new(tokens),
            session_ttl,
        }
    }

    /// Whether any token is configured (else the API and dashboard do not
    /// exist).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The token whose value is `given`, compared in constant time.
    pub fn by_value(&self, given: &str) -> Option<&ApiToken> {
        self.tokens
            .iter()
            .find(|t| constant_time_eq(t.secret.expose().as_bytes(), given.as_bytes()))
    }

    /// A session cookie value for the holder of `token`, valid for the
    /// configured lifetime from now.
    pub fn session_for(&self, token: &ApiToken) -> String {
        let expires = now_secs() + self.session_ttl.as_secs() as i64;
        self.session_until(token, expires)
    }

    fn session_until(&self, token: &ApiToken, expires: i64) -> String {
        let exp = expires.to_string();
        let m = mac(token.secret.expose(), &["session", &token.name, &exp]);
        format!("v1.{}.{exp}.{}", token.name, B64.encode(m))
    }

    /// The `Set-Cookie` value for a session (`Secure` when `secure`).
    pub fn set_cookie(&self, session: &str, secure: bool) -> String {
        format!(
            "{SESSION_COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
            self.session_ttl.as_secs(),
            if secure { "; Secure" } else { "" }
        )
    }

    /// The `Set-Cookie` value that ends a session.
    pub fn clear_cookie() -> String {
        format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
    }

    /// The principal of a session cookie value, if it is well formed, signed
    /// by a configured token and not expired.
    pub fn check_session(&self, value: &str) -> Option<Principal> {
        let mut it = value.splitn(4, '.');
        let (Some("v1"), Some(name), Some(exp), Some(sig)) =
            (it.next(), it.next(), it.next(), it.next())
        else {
            return None;
        };
        let expires: i64 = exp.parse().ok()?;
        if expires <= now_secs() {
            return None;
        }
        let token = self.tokens.iter().find(|t| t.name == name)?;
        let want = mac(token.secret.expose(), &["session", name, exp]);
        let got = B64.decode(sig).ok()?;
        constant_time_eq(&want, &got).then(|| Principal {
            name: token.name.clone(),
            role: token.role,
            by_cookie: true,
            csrf: csrf_token(token, value),
        })
    }

    /// The principal of a request: its bearer token, else its session cookie.
    ///
    /// # Errors
    ///
    /// `401` when neither is given or valid.
    pub fn principal(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
        if let Some(auth) = headers.get(header::AUTHORIZATION) {
            let given = auth
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            return self
                .by_value(given.trim())
                .map(|t| Principal {
                    name: t.name.clone(),
                    role: t.role,
                    by_cookie: false,
                    csrf: String::new(),
                })
                .ok_or_else(|| ApiError::unauthorized("the bearer token is not valid"));
        }
        match session_cookie(headers) {
            Some(v) => self.check_session(v).ok_or_else(|| {
                ApiError::unauthorized("the session is not valid or has expired: log in again")
            }),
            None => Err(ApiError::unauthorized(
                "a valid 'Authorization: Bearer <token>' header or a dashboard session is required",
            )),
        }
    }
}

/// The CSRF token of session `cookie` of `token`'s holder.
fn csrf_token(token: &ApiToken, cookie: &str) -> String {
    B64.encode(mac(token.secret.expose(), &["csrf", cookie]))
}

/// The value of the session cookie of a request.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(SESSION_COOKIE)?.strip_prefix('='))
}

/// Whether `method` changes state (anything but GET, HEAD and OPTIONS).
pub fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Checks a cookie-authenticated state-changing request's CSRF token
/// (`given`, from the header or the form).
///
/// # Errors
///
/// `403 csrf` when it is missing or wrong.
pub fn check_csrf(p: &Principal, given: Option<&str>) -> Result<(), ApiError> {
    if !p.by_cookie {
        return Ok(());
    }
    match given {
        Some(g) if constant_time_eq(g.as_bytes(), p.csrf.as_bytes()) => Ok(()),
        _ => Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "csrf",
            format!(
                "a state-changing request with a session cookie needs the {CSRF_HEADER} header of the session"
            ),
        )),
    }
}

/// Middleware: authenticates the request (401 without a valid credential),
/// checks the CSRF header of cookie-authenticated state changes (403) and
/// puts the [`Principal`] in the request's extensions.
pub async fn authenticate(State(tokens): State<Tokens>, mut req: Request, next: Next) -> Response {
    let p = match tokens.principal(req.headers()) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if changes_state(req.method()) {
        let given = req.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok());
        if let Err(e) = check_csrf(&p, given) {
            return e.into_response();
        }
    }
    req.extensions_mut().insert(p);
    next.run(req).await
}

fn principal_of(parts: &Parts, need: Role) -> Result<Principal, ApiError> {
    let p = parts
        .extensions
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| ApiError::unauthorized("not authenticated"))?;
    if p.role < need {
        return Err(ApiError::forbidden(format!(
            "this needs the {} role; the token {:?} has {}",
            need.as_str(),
            p.name,
            p.role.as_str()
        )));
    }
    Ok(p)
}

macro_rules! role_extractor {
    ($(#[$doc:meta])* $name:ident, $role:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name(pub Principal);

        impl<S: Send + Sync> FromRequestParts<S> for $name {
            type Rejection = ApiError;

            async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
                principal_of(parts, $role).map($name)
            }
        }
    };
}

role_extractor!(
    /// A request by any authenticated holder.
    Viewer,
    Role::Viewer
);
role_extractor!(
    /// A request by an `operator` or `admin`; `403` for a viewer.
    Operator,
    Role::Operator
);
role_extractor!(
    /// A request by an `admin`; `403` for the others.
    Admin,
    Role::Admin
);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::Secret;

    fn tokens() -> Tokens {
        Tokens::new(
            vec![
                ApiToken {
                    name: "ops".into(),
                    role: Role::Operator,
                    secret: Secret::new("operator-token-0123456789"),
                },
                ApiToken {
                    name: "ro".into(),
                    role: Role::Viewer,
                    secret: Secret::new("viewer-token-0123456789"),
                },
            ],
            Duration::from_secs(3600),
        )
    }

    fn cookie(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            format!("a=b; {SESSION_COOKIE}={v}").parse().unwrap(),
        );
        h
    }

    #[test]
    fn sessions_are_signed_expire_and_carry_a_csrf_token() {
        let t = tokens();
        let ops = t.by_value("operator-token-0123456789").unwrap().clone();
        let s = t.session_for(&ops);
        let p = t.principal(&cookie(&s)).unwrap();
        assert_eq!(
            (p.name.as_str(), p.role, p.by_cookie),
            ("ops", Role::Operator, true)
        );
        assert!(check_csrf(&p, Some(&p.csrf)).is_ok());
        assert_eq!(check_csrf(&p, None).unwrap_err().code, "csrf");
        assert_eq!(check_csrf(&p, Some("forged")).unwrap_err().code, "csrf");
        // Forged: another name with ops's signature, or a changed expiry.
        let forged = s.replace("v1.ops.", "v1.ro.");
        assert_eq!(
            t.principal(&cookie(&forged)).unwrap_err().code,
            "unauthorized"
        );
        let exp: i64 = s.split('.').nth(2).unwrap().parse().unwrap();
        let longer = s.replace(&exp.to_string(), &(exp + 1000).to_string());
        assert!(t.principal(&cookie(&longer)).is_err());
        // Expired.
        let old = t.session_until(&ops, now_secs() - 1);
        assert!(t.principal(&cookie(&old)).is_err());
        assert!(t.principal(&cookie("garbage")).is_err());
    }

    #[test]
    fn bearer_tokens_need_no_csrf_and_bad_ones_are_refused() {
        let t = tokens();
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            "Bearer viewer-token-0123456789".parse().unwrap(),
        );
        let p = t.principal(&h).unwrap();
        assert_eq!((p.role, p.by_cookie), (Role::Viewer, false));
        assert!(check_csrf(&p, None).is_ok());
        h.insert(
            header::AUTHORIZATION,
            "Bearer viewer-token-012345678".parse().unwrap(),
        );
        assert_eq!(t.principal(&h).unwrap_err().status, 401);
        assert_eq!(t.principal(&HeaderMap::new()).unwrap_err().status, 401);
    }
}
