//! The bridge's own PostgreSQL connection: read-only, reconnected when it
//! breaks. Queries from concurrent requests are pipelined on it.

use std::sync::Arc;

use tokio_postgres::Client;

use crate::error::ServeError;

#[derive(Debug)]
pub(crate) struct Db {
    url: String,
    client: tokio::sync::Mutex<Option<Arc<Client>>>,
}

impl Db {
    pub fn new(url: String) -> Db {
        Db { url, client: tokio::sync::Mutex::new(None) }
    }

    /// The open connection, or a new one if there is none or it closed.
    pub async fn client(&self) -> Result<Arc<Client>, ServeError> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let connect = chronos_tls::pg::connect(&self.url);
        let (client, conn) = tokio::time::timeout(std::time::Duration::from_secs(5), connect)
            .await
            .map_err(|_| ServeError::Unavailable("PostgreSQL did not answer within 5 s".into()))?
            .map_err(|e| ServeError::Unavailable(format!("cannot connect to PostgreSQL: {e}")))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::warn!(error = %e, "bridge database connection closed");
            }
        });
        // Read-only by construction: the bridge never writes, even by mistake.
        client
            .batch_execute("SET default_transaction_read_only = on")
            .await
            .map_err(|e| ServeError::Unavailable(format!("PostgreSQL: {e}")))?;
        let client = Arc::new(client);
        *slot = Some(client.clone());
        Ok(client)
    }
}
