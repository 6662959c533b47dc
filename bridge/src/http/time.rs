//! `GET /v1/time`: the trusted interval now, optionally as a statement
//! signed with the log's key that a client can keep as evidence.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;

use crate::Shared;
use crate::error::ServeError;
use crate::query::{self, TimeView};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TimeQuery {
    #[serde(default)]
    signed: bool,
}

pub(crate) async fn time(
    State(shared): State<Arc<Shared>>,
    q: Result<Query<TimeQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<TimeView>, ServeError> {
    let Query(q) = q.map_err(|e| ServeError::Rejected(e.body_text()))?;
    let v = query::time(&shared, q.signed)?;
    Ok(Json(v))
}
