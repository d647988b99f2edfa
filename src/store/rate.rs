//! Fleet-wide per-minute counters (PostgreSQL only): each router adds what it counted since
//! its last exchange to its own row per (key, minute) and reads back what the other routers
//! counted. An upsert adds to the row in one statement, so concurrent exchanges never lose a
//! count. Each exchange also marks this router live (`auxot_rate_routers`) and answers how
//! many routers exchanged lately: the routers a key's limit is shared among. On redb there is
//! one router, and nothing to exchange.

use super::postgres::{pg_error, PgStore};
use super::{Backend, Store, StoreError};

/// What one router counted for a key in one minute since its last exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateDelta {
    pub key_id: String,
    pub minute: i64,
    pub requests: i64,
    pub tokens: i64,
}

/// Routers that exchanged within this long are live (eight missed exchanges).
const ROUTER_LIVE_SECS: f64 = 2.0;

/// What an exchange read back.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RateExchange {
    /// The other routers' counts per key and minute.
    pub counts: Vec<RateCount>,
    /// Routers that exchanged lately, this one included.
    pub routers: u32,
    /// The database's time (µs since the epoch) of this exchange, after this router's counts
    /// were committed: whoever exchanges later reads them.
    pub at_us: i64,
    /// The oldest last exchange of the other live routers (µs); `None` when there are none.
    pub others_seen_us: Option<i64>,
}

/// What the other routers counted for a key in one minute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateCount {
    pub key_id: String,
    pub minute: i64,
    pub requests: i64,
    pub tokens: i64,
}

impl Store {
    /// Whether per-minute counts are shared with other routers.
    pub fn shares_rates(&self) -> bool {
        self.is_postgres()
    }

    /// Adds `deltas` to this router's counters and answers the other routers' counts for
    /// minutes from `since_minute` on, and how many routers exchange; rows older than that
    /// are pruned when `prune` is set.
    pub async fn exchange_rates(
        &self,
        instance: i64,
        since_minute: i64,
        deltas: &[RateDelta],
        prune: bool,
    ) -> Result<RateExchange, StoreError> {
        match &self.backend {
            Backend::Redb(_) => Ok(RateExchange {
                counts: Vec::new(),
                routers: 1,
                at_us: 0,
                others_seen_us: None,
            }),
            Backend::Postgres(pg) => pg.exchange_rates(instance, since_minute, deltas, prune).await,
        }
    }
}

impl PgStore {
    async fn exchange_rates(
        &self,
        instance: i64,
        since_minute: i64,
        deltas: &[RateDelta],
        prune: bool,
    ) -> Result<RateExchange, StoreError> {
        let client = self.connection().await?;
        if !deltas.is_empty() {
            let keys: Vec<&str> = deltas.iter().map(|d| d.key_id.as_str()).collect();
            let minutes: Vec<i64> = deltas.iter().map(|d| d.minute).collect();
            let requests: Vec<i64> = deltas.iter().map(|d| d.requests).collect();
            let tokens: Vec<i64> = deltas.iter().map(|d| d.tokens).collect();
            client
                .execute(
                    "INSERT INTO auxot_rate (key_id, minute, instance, requests, tokens)
                     SELECT k, m, $3, r, t FROM unnest($1::text[], $2::bigint[], $4::bigint[], $5::bigint[])
                         AS d(k, m, r, t)
                     ON CONFLICT (key_id, minute, instance) DO UPDATE
                     SET requests = auxot_rate.requests + excluded.requests,
                         tokens = auxot_rate.tokens + excluded.tokens",
                    &[&keys, &minutes, &instance, &requests, &tokens],
                )
                .await
                .map_err(pg_error)?;
        }
        if prune {
            client
                .execute("DELETE FROM auxot_rate WHERE minute < $1", &[&since_minute])
                .await
                .map_err(pg_error)?;
            client
                .execute(
                    "DELETE FROM auxot_rate_routers WHERE seen_at < now() - interval '10 minutes'",
                    &[],
                )
                .await
                .map_err(pg_error)?;
        }
        // After this router's counts were committed: a router whose `seen_at` is later read
        // them in its exchange (it reads counts after it marks itself). The statement's
        // snapshot does not see its own upsert: this router counts itself.
        let beat = client
            .query_one(
                "WITH beat AS (
                     INSERT INTO auxot_rate_routers (instance, seen_at) VALUES ($1, now())
                     ON CONFLICT (instance) DO UPDATE SET seen_at = excluded.seen_at)
                 SELECT count(*) + 1,
                        (extract(epoch FROM now()) * 1000000)::bigint,
                        (extract(epoch FROM min(seen_at)) * 1000000)::bigint
                 FROM auxot_rate_routers
                 WHERE instance <> $1 AND seen_at > now() - $2::float8 * interval '1 second'",
                &[&instance, &ROUTER_LIVE_SECS],
            )
            .await
            .map_err(pg_error)?;
        let routers: i64 = beat.get(0);
        let rows = client
            .query(
                "SELECT key_id, minute, sum(requests)::bigint, sum(tokens)::bigint FROM auxot_rate
                 WHERE minute >= $1 AND instance <> $2 GROUP BY key_id, minute",
                &[&since_minute, &instance],
            )
            .await
            .map_err(pg_error)?;
        Ok(RateExchange {
            counts: rows
                .iter()
                .map(|row| RateCount {
                    key_id: row.get(0),
                    minute: row.get(1),
                    requests: row.get(2),
                    tokens: row.get(3),
                })
                .collect(),
            routers: u32::try_from(routers).unwrap_or(u32::MAX),
            at_us: beat.get(1),
            others_seen_us: beat.get(2),
        })
    }
}
