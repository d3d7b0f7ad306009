//! [`FleetSwitch`]: one maintenance switch for every replica, kept in Redis.
//!
//! The switch is one Redis hash (`enabled`, `message`). An admin call on any replica
//! writes it ([`FleetSwitch::publish`]) and applies it locally at once; every replica
//! reads it every `poll` ([`FleetSwitch::follow`]) and applies it to its own
//! [`MaintenanceHandle`], so the whole fleet follows within one poll interval, and a
//! replica started later picks it up on its first read. Polling rather than pub/sub:
//! a replica that was disconnected when the switch flipped still converges, and
//! there is no subscription to re-establish.
//!
//! While Redis is unreachable a replica keeps the state it last read (a maintenance
//! window does not end because Redis went away).

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{AsyncCommands, RedisResult};

use crate::MaintenanceHandle;

/// The fleet-wide switch in Redis; cheap to clone.
#[derive(Clone)]
pub struct FleetSwitch {
    conn: ConnectionManager,
    key: String,
}

impl FleetSwitch {
    /// The switch stored under `key` (e.g. `codex:maintenance`).
    pub fn new(conn: ConnectionManager, key: impl Into<String>) -> Self {
        Self {
            conn,
            key: key.into(),
        }
    }

    /// Switches the fleet; `message` replaces the message when given.
    pub async fn publish(&self, enabled: bool, message: Option<&str>) -> RedisResult<()> {
        let mut conn = self.conn.clone();
        let mut fields = vec![("enabled", if enabled { "1" } else { "0" })];
        if let Some(m) = message {
            fields.push(("message", m));
        }
        conn.hset_multiple::<_, _, _, ()>(&self.key, &fields).await
    }

    /// The fleet's state: `(enabled, message)`, `None` if never switched.
    pub async fn read(&self) -> RedisResult<Option<(bool, Option<String>)>> {
        let mut conn = self.conn.clone();
        let (enabled, message): (Option<String>, Option<String>) = redis::cmd("HMGET")
            .arg(&self.key)
            .arg("enabled")
            .arg("message")
            .query_async(&mut conn)
            .await?;
        Ok(enabled.map(|e| (e == "1", message)))
    }

    /// Applies the fleet's state to `handle` every `poll`, until the task is aborted.
    /// `on_error` hears about each failed read.
    pub fn follow(
        self,
        handle: MaintenanceHandle,
        poll: Duration,
        on_error: impl Fn(&redis::RedisError) + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(poll);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match self.read().await {
                    Ok(Some((enabled, message))) => {
                        if let Some(m) = message.filter(|m| *m != *handle.message()) {
                            handle.set_message(m);
                        }
                        handle.set(enabled);
                    }
                    Ok(None) => {}
                    Err(e) => on_error(&e),
                }
            }
        })
    }
}

impl std::fmt::Debug for FleetSwitch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetSwitch")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}
