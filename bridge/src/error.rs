//! Errors, grouped by who is at fault.

/// Why the bridge could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BridgeError {
    /// A setting or an address is unusable (a restart will not help).
    #[error("{0}")]
    Setup(String),
}

/// Why one request was not answered with data. Each maps to an HTTP status.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ServeError {
    /// The request is malformed or asks for something that cannot exist (400).
    #[error("{0}")]
    Rejected(String),
    /// The route needs one of the bridge's bearer tokens and the request
    /// carried none of them (401, `WWW-Authenticate: Bearer`).
    #[error("{0}")]
    Unauthorized(String),
    /// Nothing there (yet): a tile beyond the tree, a leaf not covered (404).
    #[error("{0}")]
    NotFound(String),
    /// PostgreSQL cannot be read now, or nothing is checked yet (503, Retry-After).
    #[error("{0}")]
    Unavailable(String),
    /// Stored data failed a check: refused, logged, counted (500).
    #[error("{0}")]
    Corrupt(String),
}

impl From<chronos_vault::store::VaultError> for ServeError {
    fn from(e: chronos_vault::store::VaultError) -> ServeError {
        use chronos_vault::store::VaultError;
        match e {
            VaultError::Range(r) => ServeError::Rejected(r),
            VaultError::Corrupt { .. } => ServeError::Corrupt(e.to_string()),
            other => ServeError::Unavailable(format!("the database cannot be read: {other}")),
        }
    }
}
