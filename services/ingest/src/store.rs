//! The durable CDC position (sled): where binlog reading resumes after a
//! restart. Written only after every event before it is confirmed by RabbitMQ.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::Path;

const POSITION_KEY: &[u8] = b"binlog_position";

/// Errors of the position store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("failed to open the position store at {path}")]
    Open {
        path: String,
        #[source]
        source: sled::Error,
    },
    #[error("failed to access the position store")]
    Io(#[from] sled::Error),
    #[error("the saved position is unreadable")]
    Corrupt(#[from] serde_json::Error),
}

/// A place in the source's binlog: file name and byte offset. Positions saved
/// by ingest are always transaction boundaries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinlogPosition {
    pub file: String,
    pub pos: u64,
}

impl BinlogPosition {
    /// The numeric suffix of the file name (`binlog.000003` → 3).
    pub fn file_seq(&self) -> u64 {
        self.file
            .rsplit('.')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }
}

impl fmt::Display for BinlogPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.pos)
    }
}

/// The saved position with the time it was saved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedPosition {
    #[serde(flatten)]
    pub position: BinlogPosition,
    pub saved_at_ms: i64,
    /// What the position belongs to (see [`PositionStore::open`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// sled-backed store of the saved position.
#[derive(Clone)]
pub struct PositionStore {
    db: sled::Db,
    source: String,
}

impl PositionStore {
    /// Opens (creating if needed) the store in `dir`. `source` identifies
    /// what is captured (server, database, tables, tenant columns): a
    /// position saved for another source is not resumed from.
    pub fn open(dir: &Path, source: &str) -> Result<Self, StoreError> {
        let path = dir.join("position");
        let db = sled::open(&path).map_err(|source| StoreError::Open {
            path: path.display().to_string(),
            source,
        })?;
        Ok(PositionStore {
            db,
            source: source.to_string(),
        })
    }

    /// The saved position; `None` before the first snapshot completed, or
    /// when the position was saved while capturing another source (then a
    /// new snapshot is taken; its reset events replace everything the
    /// previous source left downstream).
    pub fn load(&self) -> Result<Option<SavedPosition>, StoreError> {
        let Some(bytes) = self.db.get(POSITION_KEY)? else {
            return Ok(None);
        };
        let saved: SavedPosition = serde_json::from_slice(&bytes)?;
        match &saved.source {
            Some(s) if *s != self.source => {
                tracing::warn!(
                    saved_for = %s,
                    now = %self.source,
                    position = %saved.position,
                    "saved position belongs to another source: taking a new snapshot"
                );
                Ok(None)
            }
            _ => Ok(Some(saved)),
        }
    }

    /// Saves `position` durably (flushed before returning).
    pub async fn save(&self, position: &BinlogPosition) -> Result<SavedPosition, StoreError> {
        let saved = SavedPosition {
            position: position.clone(),
            saved_at_ms: mdp_types::now_ms(),
            source: Some(self.source.clone()),
        };
        self.db.insert(POSITION_KEY, serde_json::to_vec(&saved)?)?;
        self.db.flush_async().await?;
        Ok(saved)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn position_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = PositionStore::open(dir.path(), "db1").unwrap();
            assert_eq!(store.load().unwrap(), None);
            store
                .save(&BinlogPosition {
                    file: "binlog.000002".into(),
                    pos: 1234,
                })
                .await
                .unwrap();
        }
        let store = PositionStore::open(dir.path(), "db1").unwrap();
        let saved = store.load().unwrap().unwrap();
        assert_eq!(
            saved.position,
            BinlogPosition {
                file: "binlog.000002".into(),
                pos: 1234
            }
        );
        assert_eq!(saved.position.file_seq(), 2);
    }

    #[tokio::test]
    async fn a_position_saved_for_another_source_is_not_resumed() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = PositionStore::open(dir.path(), "127.0.0.1:3307/shop").unwrap();
            let p = BinlogPosition {
                file: "binlog.000001".into(),
                pos: 99,
            };
            store.save(&p).await.unwrap();
        }
        {
            let other = PositionStore::open(dir.path(), "127.0.0.1:3307/other").unwrap();
            assert_eq!(other.load().unwrap(), None);
        }
        let same = PositionStore::open(dir.path(), "127.0.0.1:3307/shop").unwrap();
        assert_eq!(same.load().unwrap().unwrap().position.pos, 99);
    }
}
