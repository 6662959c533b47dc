//! The time service's rows in PostgreSQL: rounds' evidence, the floor, and
//! audit events. Its own connection; a failure is reported to the loop,
//! which then publishes nothing new (an agreement is published only once
//! its evidence is stored, so no batch can name evidence that is missing).

use std::time::Duration;

use tokio_postgres::Client;

pub(crate) struct Store {
    client: Client,
}

pub(crate) type StoreError = tokio_postgres::Error;

impl Store {
    pub async fn connect(url: &str) -> Result<Store, String> {
        let connect = chronos_tls::pg::connect(url);
        let (client, conn) = tokio::time::timeout(Duration::from_secs(5), connect)
            .await
            .map_err(|_| "no answer from PostgreSQL within 5 s".to_owned())?
            .map_err(|e| format!("cannot connect to PostgreSQL: {e}"))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::warn!(error = %e, "the time service's database connection closed");
            }
        });
        Ok(Store { client })
    }

    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// The last round's number and the floor.
    pub async fn load(&self) -> Result<(u64, u64), StoreError> {
        let round: i64 = self.client.query_one("SELECT coalesce(max(round), 0) FROM time_rounds", &[]).await?.get(0);
        let floor: i64 = self.client.query_one("SELECT floor_ns FROM time_floor WHERE id = 1", &[]).await?.get(0);
        Ok((round.max(0) as u64, floor.max(0) as u64))
    }

    /// Stores a round's evidence and raises the floor, in one transaction.
    pub async fn record(
        &mut self,
        round: u64,
        digest: &[u8; 32],
        agreed: Option<chronos_quorum::Interval>,
        text: &str,
        floor: u64,
    ) -> Result<(), StoreError> {
        let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let tx = self.client.transaction().await?;
        tx.execute(
            "INSERT INTO time_rounds (round, digest, agreed_from, agreed_to, evidence) VALUES ($1, $2, $3, $4, $5)",
            &[
                &as_i64(round),
                &digest.as_slice(),
                &agreed.map(|a| as_i64(a.earliest)),
                &agreed.map(|a| as_i64(a.latest)),
                &text,
            ],
        )
        .await?;
        tx.execute("UPDATE time_floor SET floor_ns = greatest(floor_ns, $1) WHERE id = 1", &[&as_i64(floor)]).await?;
        tx.commit().await
    }

    pub async fn audit(&self, kind: &str, detail: &serde_json::Value) -> Result<(), StoreError> {
        let detail = detail.to_string();
        self.client
            .execute(
                "INSERT INTO audit_events (source, kind, detail) VALUES ('time', $1, $2::text::jsonb)",
                &[&kind, &detail],
            )
            .await?;
        Ok(())
    }
}
