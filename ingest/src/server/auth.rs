//! Authentication: the bearer token, and the client identity it gives the
//! idempotency key.

use axum::http::{HeaderMap, header};

use super::Shared;

/// The client's identity for the idempotency key, or `None` if a token is
/// required and the request has none of them. The identity is the token
/// presented (hashed into the key, never stored) and the `Chronos-Client`
/// header, which lets clients that share a token keep their bodies apart.
pub(super) fn identity(s: &Shared, headers: &HeaderMap) -> Option<Vec<u8>> {
    let mut id = Vec::new();
    if !s.settings.tokens.is_empty() {
        let v = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())?;
        // The scheme is case-insensitive (RFC 9110, 11.1).
        let (scheme, given) = v.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let given = given.trim_start().as_bytes();
        // Constant-time comparison with every token: they are secrets, and
        // which one matched must not show in the timing either.
        let mut matched = None;
        for (i, token) in s.settings.tokens.iter().enumerate() {
            if bool::from(subtle::ConstantTimeEq::ct_eq(given, token.as_bytes())) {
                matched = Some(i);
            }
        }
        id.extend_from_slice(s.settings.tokens[matched?].as_bytes());
    }
    id.push(0);
    if let Some(client) = headers.get(CLIENT_HEADER) {
        id.extend_from_slice(client.as_bytes());
    }
    Some(id)
}

/// Optional request header naming the client (a host, a Vector instance),
/// part of the idempotency key.
const CLIENT_HEADER: &str = "chronos-client";
