//! [`ResponseStore`]: stored Responses API responses, the embedded state a
//! conversation is rebuilt from when its codex thread is gone.
//!
//! SQLite (through `rusqlite`, the library compiled in): one file under the
//! state directory, transactions, an index on expiry, and a recursive query
//! that walks a conversation from any response back to its first, which is
//! exactly what `previous_response_id` needs. Every call runs on tokio's
//! blocking pool with the one connection behind a mutex taken inside the
//! blocking closure, never across an `.await`. See `docs/conversations.md`
//! for why this store and what it holds.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;

/// One stored response: what `GET /v1/responses/{id}` answers and what a
/// follow-up rebuilds from.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredResponse {
    pub id: String,
    /// The key name it was created with (`""` on a gateway without keys).
    /// Every read is scoped to it: another key sees nothing.
    pub owner: String,
    /// `previous_response_id` of the request that produced it.
    pub parent: Option<String>,
    pub created_at: u64,
    /// The request's own input items (ids added), as `input_items` lists them.
    pub input_items: Value,
    /// The response object as the client received it.
    pub response: Value,
}

/// Why a store call failed. Callers answer 500 and log it; the store never
/// panics the request path.
#[derive(Debug)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "response store: {}", self.0)
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        StoreError(e.to_string())
    }
}

/// How a conversation's chain of responses came back.
#[derive(Debug, Clone, PartialEq)]
pub enum Chain {
    /// Oldest first, ending with the response asked for.
    Complete(Vec<StoredResponse>),
    /// The response is not stored (never was, expired, deleted, another key's).
    NotFound,
    /// The response is there but an earlier one of its conversation is gone,
    /// so the conversation can no longer be rebuilt faithfully.
    Broken { missing: String },
}

/// A future of a [`SharedCopies`] call.
pub type SharedFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Copies of the records that other replicas can read (with several replicas,
/// Redis: `crate::fleet`). Declared here, by the store that uses it, so the
/// store does not depend on who provides it. Failures are the provider's to
/// count and log: a copy that cannot be written or read only means the
/// conversation cannot move to another replica, never a failed request.
pub trait SharedCopies: Send + Sync + 'static {
    fn put<'a>(&'a self, record: &'a StoredResponse) -> SharedFuture<'a, ()>;
    /// The copy of `id`, whoever owns it (the store checks the owner).
    fn get<'a>(&'a self, id: &'a str) -> SharedFuture<'a, Option<StoredResponse>>;
    fn delete<'a>(&'a self, id: &'a str) -> SharedFuture<'a, ()>;
}

/// The response store. Cheap to clone.
#[derive(Clone)]
pub struct ResponseStore {
    inner: Arc<Inner>,
    /// With several replicas (`PROXY_REDIS_URL`): every record is also written
    /// there, and what this replica lacks is copied from there before a read.
    shared: Option<Arc<dyn SharedCopies>>,
}

struct Inner {
    conn: Mutex<Connection>,
    ttl: Duration,
    max_bytes: u64,
    /// Bytes of all rows, kept here so the size cap costs no table scan.
    bytes: AtomicU64,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS responses (
    id          TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    parent      TEXT,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    input_items TEXT NOT NULL,
    response    TEXT NOT NULL,
    bytes       INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS responses_expiry ON responses (expires_at);
";

impl ResponseStore {
    /// Opens (or creates) the store at `path`; its directory is created too.
    pub fn open(path: &Path, ttl: Duration, max_bytes: u64) -> Result<ResponseStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError(format!("cannot create {}: {e}", dir.display())))?;
        }
        let conn = Connection::open(path)?;
        // WAL: readers never wait for the writer; NORMAL sync is durable
        // against a crash of the gateway (only an OS crash may lose the
        // last transactions), which is the right price for a cache of
        // conversations.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(Duration::from_secs(5))?;
        ResponseStore::with_connection(conn, ttl, max_bytes)
    }

    /// A store that lives in memory only (tests, and `PROXY_STATE_DIR=`).
    pub fn in_memory(ttl: Duration, max_bytes: u64) -> Result<ResponseStore, StoreError> {
        ResponseStore::with_connection(Connection::open_in_memory()?, ttl, max_bytes)
    }

    fn with_connection(
        conn: Connection,
        ttl: Duration,
        max_bytes: u64,
    ) -> Result<ResponseStore, StoreError> {
        conn.execute_batch(SCHEMA)?;
        let bytes: i64 =
            conn.query_row("SELECT COALESCE(SUM(bytes), 0) FROM responses", [], |r| {
                r.get(0)
            })?;
        Ok(ResponseStore {
            shared: None,
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                ttl,
                max_bytes,
                bytes: AtomicU64::new(u64::try_from(bytes).unwrap_or(0)),
            }),
        })
    }

    /// Runs `f` with the connection on the blocking pool.
    async fn with<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner, &mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = inner.conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&inner, &mut conn)
        })
        .await
        .map_err(|e| StoreError(format!("store task failed: {e}")))?
    }

    /// Shares the records with the other replicas (through Redis: `src/fleet.rs`).
    pub fn shared(self, shared: Option<Arc<dyn SharedCopies>>) -> Self {
        Self { shared, ..self }
    }

    /// Stores a response; over the size cap, the oldest responses go first.
    pub async fn put(&self, record: StoredResponse) -> Result<(), StoreError> {
        if let Some(shared) = &self.shared {
            shared.put(&record).await;
        }
        self.put_local(record).await
    }

    /// Copies the shared records of `id`'s conversation that this replica lacks,
    /// newest first, until one it holds (or the first of the conversation).
    async fn import(&self, owner: &str, id: &str) -> Result<(), StoreError> {
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        let mut next = Some(id.to_owned());
        // Bounded like the chain query: a cycle cannot be stored, but a bound costs nothing.
        for _ in 0..100_000 {
            let Some(id) = next.take() else { break };
            if self.get_local(owner, &id).await?.is_some() {
                break;
            }
            let Some(record) = shared.get(&id).await.filter(|r| r.owner == owner) else {
                break;
            };
            next = record.parent.clone();
            self.put_local(record).await?;
        }
        Ok(())
    }

    async fn put_local(&self, record: StoredResponse) -> Result<(), StoreError> {
        self.with(move |inner, conn| {
            let input = record.input_items.to_string();
            let response = record.response.to_string();
            let size = (input.len() + response.len() + record.id.len()) as u64;
            let expires = record.created_at.saturating_add(inner.ttl.as_secs().max(1));
            let tx = conn.transaction()?;
            let replaced: Option<i64> = tx
                .query_row(
                    "SELECT bytes FROM responses WHERE id = ?1",
                    [&record.id],
                    |r| r.get(0),
                )
                .optional()?;
            tx.execute(
                "INSERT OR REPLACE INTO responses
                 (id, owner, parent, created_at, expires_at, input_items, response, bytes)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    record.id,
                    record.owner,
                    record.parent,
                    record.created_at as i64,
                    expires as i64,
                    input,
                    response,
                    size as i64
                ],
            )?;
            tx.commit()?;
            inner.bytes.fetch_add(size, Ordering::Relaxed);
            if let Some(old) = replaced {
                inner.bytes.fetch_sub(old as u64, Ordering::Relaxed);
            }
            if inner.bytes.load(Ordering::Relaxed) > inner.max_bytes {
                shrink(inner, conn)?;
            }
            Ok(())
        })
        .await
    }

    /// The response `id` of `owner`, unless expired.
    pub async fn get(&self, owner: &str, id: &str) -> Result<Option<StoredResponse>, StoreError> {
        match self.get_local(owner, id).await? {
            None if self.shared.is_some() => {
                self.import(owner, id).await?;
                self.get_local(owner, id).await
            }
            found => Ok(found),
        }
    }

    async fn get_local(&self, owner: &str, id: &str) -> Result<Option<StoredResponse>, StoreError> {
        let (owner, id) = (owner.to_owned(), id.to_owned());
        self.with(move |_, conn| {
            Ok(conn
                .query_row(
                    "SELECT id, owner, parent, created_at, input_items, response FROM responses
                     WHERE id = ?1 AND owner = ?2 AND expires_at > ?3",
                    params![id, owner, now() as i64],
                    row,
                )
                .optional()?)
        })
        .await
    }

    /// Deletes the response `id` of `owner`; `false` when there was none.
    pub async fn delete(&self, owner: &str, id: &str) -> Result<bool, StoreError> {
        if self.shared.is_some() {
            // Held elsewhere only: bring it here so it is deleted everywhere.
            self.get(owner, id).await?;
        }
        let deleted = self.delete_local(owner, id).await?;
        if let (true, Some(shared)) = (deleted, &self.shared) {
            shared.delete(id).await;
        }
        Ok(deleted)
    }

    async fn delete_local(&self, owner: &str, id: &str) -> Result<bool, StoreError> {
        let (owner, id) = (owner.to_owned(), id.to_owned());
        self.with(move |inner, conn| {
            let bytes: Option<i64> = conn
                .query_row(
                    "DELETE FROM responses WHERE id = ?1 AND owner = ?2 AND expires_at > ?3
                     RETURNING bytes",
                    params![id, owner, now() as i64],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(b) = bytes {
                inner.bytes.fetch_sub(b as u64, Ordering::Relaxed);
            }
            Ok(bytes.is_some())
        })
        .await
    }

    /// The conversation that ends with response `id`, oldest first.
    pub async fn chain(&self, owner: &str, id: &str) -> Result<Chain, StoreError> {
        let chain = self.chain_local(owner, id).await?;
        let missing = match &chain {
            Chain::Complete(_) => return Ok(chain),
            _ if self.shared.is_none() => return Ok(chain),
            Chain::NotFound => id.to_owned(),
            Chain::Broken { missing } => missing.clone(),
        };
        self.import(owner, &missing).await?;
        self.chain_local(owner, id).await
    }

    async fn chain_local(&self, owner: &str, id: &str) -> Result<Chain, StoreError> {
        let (owner, id) = (owner.to_owned(), id.to_owned());
        self.with(move |_, conn| {
            let mut stmt = conn.prepare_cached(
                "WITH RECURSIVE chain(id, depth) AS (
                     SELECT id, 0 FROM responses WHERE id = ?1 AND owner = ?2 AND expires_at > ?3
                     UNION ALL
                     SELECT r.parent, c.depth + 1 FROM chain c JOIN responses r ON r.id = c.id
                     WHERE r.parent IS NOT NULL AND c.depth < 100000
                 )
                 SELECT r.id, r.owner, r.parent, r.created_at, r.input_items, r.response, c.id
                 FROM chain c LEFT JOIN responses r
                   ON r.id = c.id AND r.owner = ?2 AND r.expires_at > ?3
                 ORDER BY c.depth DESC",
            )?;
            let mut rows = stmt.query(params![id, owner, now() as i64])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                // No stored row for an id of the chain: it is gone.
                if r.get::<_, Option<String>>(0)?.is_none() {
                    return Ok(Chain::Broken { missing: r.get(6)? });
                }
                out.push(row(r)?);
            }
            Ok(if out.is_empty() {
                Chain::NotFound
            } else {
                Chain::Complete(out)
            })
        })
        .await
    }

    /// Deletes expired responses; returns how many went.
    pub async fn sweep(&self) -> Result<usize, StoreError> {
        self.with(|inner, conn| {
            let mut stmt = conn
                .prepare_cached("DELETE FROM responses WHERE expires_at <= ?1 RETURNING bytes")?;
            let freed: Vec<i64> = stmt
                .query_map([now() as i64], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let total: i64 = freed.iter().sum();
            inner.bytes.fetch_sub(total as u64, Ordering::Relaxed);
            Ok(freed.len())
        })
        .await
    }

    /// Bytes the stored responses take (input and response JSON).
    pub fn bytes(&self) -> u64 {
        self.inner.bytes.load(Ordering::Relaxed)
    }

    /// Sweeps expired responses every `every` until the store is dropped
    /// everywhere else.
    pub fn spawn_sweeper(&self, every: Duration) {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let store = ResponseStore {
                    inner,
                    shared: None,
                };
                match store.sweep().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(removed = n, "expired stored responses removed"),
                    Err(e) => tracing::warn!(error = %e, "sweeping the response store failed"),
                }
            }
        });
    }
}

/// Deletes the oldest responses until the store is under 90 % of its cap
/// (some room, so the next puts do not each pay for a delete).
fn shrink(inner: &Inner, conn: &mut Connection) -> Result<(), StoreError> {
    let target = inner.max_bytes / 10 * 9;
    let mut removed = 0usize;
    while inner.bytes.load(Ordering::Relaxed) > target {
        let freed: Vec<i64> = conn
            .prepare_cached(
                "DELETE FROM responses WHERE id IN
                   (SELECT id FROM responses ORDER BY created_at, rowid LIMIT 64)
                 RETURNING bytes",
            )?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        if freed.is_empty() {
            break;
        }
        removed += freed.len();
        inner
            .bytes
            .fetch_sub(freed.iter().sum::<i64>() as u64, Ordering::Relaxed);
    }
    tracing::info!(
        removed,
        cap_bytes = inner.max_bytes,
        "response store over its size cap: oldest responses removed"
    );
    Ok(())
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredResponse> {
    Ok(StoredResponse {
        id: r.get(0)?,
        owner: r.get(1)?,
        parent: r.get(2)?,
        created_at: r.get::<_, i64>(3)? as u64,
        input_items: json_column(r.get::<_, String>(4)?),
        response: json_column(r.get::<_, String>(5)?),
    })
}

/// The store writes only JSON it serialized itself.
fn json_column(text: String) -> Value {
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// Unix seconds (the store sits below the API and keeps its own clock).
fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(id: &str, owner: &str, parent: Option<&str>) -> StoredResponse {
        StoredResponse {
            id: id.into(),
            owner: owner.into(),
            parent: parent.map(Into::into),
            created_at: now(),
            input_items: json!([{"type": "message", "role": "user", "content": id}]),
            response: json!({"id": id, "object": "response"}),
        }
    }

    fn store() -> ResponseStore {
        ResponseStore::in_memory(Duration::from_secs(3600), 1 << 30).unwrap()
    }

    #[tokio::test]
    async fn a_chain_comes_back_oldest_first_and_only_for_its_owner() {
        let s = store();
        s.put(record("r1", "alice", None)).await.unwrap();
        s.put(record("r2", "alice", Some("r1"))).await.unwrap();
        s.put(record("r3", "alice", Some("r2"))).await.unwrap();
        s.put(record("b3", "alice", Some("r2"))).await.unwrap();
        let Chain::Complete(chain) = s.chain("alice", "r3").await.unwrap() else {
            panic!("complete chain expected")
        };
        let ids: Vec<_> = chain.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["r1", "r2", "r3"]);
        let Chain::Complete(branch) = s.chain("alice", "b3").await.unwrap() else {
            panic!()
        };
        assert_eq!(branch.last().unwrap().id, "b3");
        assert_eq!(branch.len(), 3);
        assert_eq!(s.chain("mallory", "r3").await.unwrap(), Chain::NotFound);
        assert_eq!(s.get("mallory", "r1").await.unwrap(), None);
        assert!(!s.delete("mallory", "r1").await.unwrap());
        assert_eq!(s.get("alice", "r1").await.unwrap().unwrap().id, "r1");
    }

    #[tokio::test]
    async fn a_deleted_ancestor_breaks_the_chain_instead_of_shortening_it() {
        let s = store();
        s.put(record("r1", "a", None)).await.unwrap();
        s.put(record("r2", "a", Some("r1"))).await.unwrap();
        assert!(s.delete("a", "r1").await.unwrap());
        assert!(!s.delete("a", "r1").await.unwrap());
        assert_eq!(
            s.chain("a", "r2").await.unwrap(),
            Chain::Broken {
                missing: "r1".into()
            }
        );
    }

    #[tokio::test]
    async fn expired_responses_are_invisible_and_swept() {
        let s = ResponseStore::in_memory(Duration::from_secs(60), 1 << 30).unwrap();
        let mut old = record("old", "a", None);
        old.created_at = now() - 120;
        s.put(old).await.unwrap();
        s.put(record("new", "a", None)).await.unwrap();
        assert_eq!(s.get("a", "old").await.unwrap(), None);
        assert_eq!(s.sweep().await.unwrap(), 1);
        assert!(s.get("a", "new").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn the_size_cap_removes_the_oldest_first() {
        let one = {
            let r = record("r0", "a", None);
            (r.input_items.to_string().len() + r.response.to_string().len() + 2) as u64
        };
        let s = ResponseStore::in_memory(Duration::from_secs(3600), one * 5).unwrap();
        for i in 0..8 {
            let mut r = record(&format!("r{i}"), "a", None);
            r.created_at = now() - 100 + i;
            s.put(r).await.unwrap();
        }
        assert!(s.bytes() <= one * 5, "{} > {}", s.bytes(), one * 5);
        assert_eq!(s.get("a", "r0").await.unwrap(), None);
        assert!(s.get("a", "r7").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn the_store_survives_a_reopen() {
        let dir = std::env::temp_dir().join(format!("store-{:x}", rand::random::<u64>()));
        let path = dir.join("responses.sqlite3");
        {
            let s = ResponseStore::open(&path, Duration::from_secs(3600), 1 << 30).unwrap();
            s.put(record("r1", "a", None)).await.unwrap();
        }
        let s = ResponseStore::open(&path, Duration::from_secs(3600), 1 << 30).unwrap();
        assert_eq!(s.get("a", "r1").await.unwrap().unwrap().parent, None);
        assert!(s.bytes() > 0);
        let _ = std::fs::remove_dir_all(dir);
    }
}
