//! Passwords out of connection URLs, for logs and error messages.

/// `url` with its password replaced by `***`, fit for error messages and logs:
///
/// - in the user info: `postgres://u:s3cret@db/x` → `postgres://u:***@db/x`;
/// - a user info without a `:` is a user name (`postgres://u@db/x` stays), except
///   for Redis, whose `redis://secret@host` form carries the password alone
///   (→ `redis://***@host`);
/// - in a `password=` query parameter (any case): `?password=p` → `?password=***`.
///
/// Text that is not a URL comes back unchanged.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let scheme = &url[..scheme_end];
    let auth_start = scheme_end + 3;
    let auth_end = url[auth_start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| auth_start + i);
    let mut out = String::with_capacity(url.len());
    out.push_str(&url[..auth_start]);
    let authority = &url[auth_start..auth_end];
    match authority.rfind('@') {
        Some(at) => {
            let (userinfo, host) = (&authority[..at], &authority[at..]);
            match userinfo.split_once(':') {
                Some((user, _)) => {
                    out.push_str(user);
                    out.push_str(":***");
                }
                None if scheme.eq_ignore_ascii_case("redis")
                    || scheme.eq_ignore_ascii_case("rediss") =>
                {
                    out.push_str("***");
                }
                None => out.push_str(userinfo),
            }
            out.push_str(host);
        }
        None => out.push_str(authority),
    }
    let rest = &url[auth_end..];
    match rest.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            let (query, fragment) = match query.split_once('#') {
                Some((q, f)) => (q, Some(f)),
                None => (query, None),
            };
            for (i, pair) in query.split('&').enumerate() {
                if i > 0 {
                    out.push('&');
                }
                match pair.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => {
                        out.push_str(k);
                        out.push_str("=***");
                    }
                    _ => out.push_str(pair),
                }
            }
            if let Some(f) = fragment {
                out.push('#');
                out.push_str(f);
            }
        }
        None => out.push_str(rest),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_in_every_place_are_redacted() {
        for (url, want) in [
            (
                "postgres://u:s3cret@db:5432/x",
                "postgres://u:***@db:5432/x",
            ),
            ("postgres://u@db/x", "postgres://u@db/x"),
            (
                "postgres://db/x?user=u&password=p&sslmode=require",
                "postgres://db/x?user=u&password=***&sslmode=require",
            ),
            (
                "postgres://u:a@b@db/x?PASSWORD=p#f",
                "postgres://u:***@db/x?PASSWORD=***#f",
            ),
            ("mysql://a:b@h/db", "mysql://a:***@h/db"),
            ("mysql://a:@h", "mysql://a:***@h"),
            ("sqlite://x.db", "sqlite://x.db"),
            ("sqlite::memory:", "sqlite::memory:"),
            (
                "redis://user:hunter2@host:6379/0",
                "redis://user:***@host:6379/0",
            ),
            ("redis://:hunter2@host", "redis://:***@host"),
            ("rediss://hunter2@host", "rediss://***@host"),
            ("redis://host:6379", "redis://host:6379"),
            ("http://h/p?q=user@x", "http://h/p?q=user@x"),
            ("not a url", "not a url"),
        ] {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }

    /// The union of the cases the former copies tested, and their edges: a user
    /// without a password stays (except Redis), `password=` in any case and
    /// place, a password that itself holds `@` or an escape, no path at all.
    #[test]
    fn user_info_and_query_edges() {
        for (url, want) in [
            (
                "mysql://root@127.0.0.1:3306/db",
                "mysql://root@127.0.0.1:3306/db",
            ),
            ("postgres://u@db", "postgres://u@db"),
            ("postgres://u:p@db", "postgres://u:***@db"),
            (
                "postgres://u:p%40ss@db/x?sslmode=require&password=q",
                "postgres://u:***@db/x?sslmode=require&password=***",
            ),
            (
                "postgresql://user@db/x?Password=secret",
                "postgresql://user@db/x?Password=***",
            ),
            (
                "postgres://db/x?passwordless=1",
                "postgres://db/x?passwordless=1",
            ),
            (
                "sqlite://file.db?password=x",
                "sqlite://file.db?password=***",
            ),
            ("redis://user@host:6379", "redis://***@host:6379"),
            ("http://user@h/p", "http://user@h/p"),
            (
                "postgres://u:p@db/x#password=f",
                "postgres://u:***@db/x#password=f",
            ),
        ] {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }
}
