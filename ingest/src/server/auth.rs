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
        let given = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let matched = s.settings.tokens.matching(given)?;
        id.extend_from_slice(s.settings.tokens.get(matched)?);
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
