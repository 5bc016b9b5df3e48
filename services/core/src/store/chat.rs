//! Chat messages: written in batches by the chat service, read back by
//! `history`.

use sqlx::Row;

use super::{Backend, Store, to_i64, to_u64};
use crate::error::Result;

/// One chat message: to a room, or direct to a user.
#[derive(Debug, Clone)]
pub struct ChatRecord {
    /// Message id, allocated by the chat server (see [`Store::last_chat_id`]).
    pub id: u64,
    /// Sender.
    pub sender_id: i64,
    /// Room, for a room message.
    pub room: Option<String>,
    /// Number in the room, for a room message.
    pub seq: Option<u64>,
    /// Recipient, for a direct message.
    pub recipient_id: Option<i64>,
    /// Text.
    pub body: String,
    /// When said, unix ms.
    pub at: i64,
}

/// A room message read back for `history`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRow {
    /// Message id.
    pub id: u64,
    /// Number in the room.
    pub seq: u64,
    /// Sender's name.
    pub sender: String,
    /// Text.
    pub body: String,
    /// When said, unix ms.
    pub at: i64,
}

impl Store {
    /// Records a batch of chat messages in one transaction.
    pub async fn record_chat_messages(&self, messages: &[ChatRecord]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for m in messages {
            sqlx::query(
                "INSERT INTO chat_messages (id, room, seq, recipient_id, sender_id, body, at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(to_i64(m.id))
            .bind(&m.room)
            .bind(m.seq.map(to_i64))
            .bind(m.recipient_id)
            .bind(m.sender_id)
            .bind(&m.body)
            .bind(m.at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The highest chat message id so far (0 for none).
    pub async fn last_chat_id(&self) -> Result<u64> {
        let row = sqlx::query("SELECT COALESCE(MAX(id), 0) AS id FROM chat_messages")
            .fetch_one(&self.pool)
            .await?;
        Ok(to_u64(row.try_get("id")?))
    }

    /// The highest `seq` in `room` so far (0 for none).
    pub async fn last_room_seq(&self, room: &str) -> Result<u64> {
        let row =
            sqlx::query("SELECT COALESCE(MAX(seq), 0) AS seq FROM chat_messages WHERE room = $1")
                .bind(room)
                .fetch_one(&self.pool)
                .await?;
        Ok(to_u64(row.try_get("seq")?))
    }

    /// The last `limit` messages of `room`, oldest first.
    pub async fn room_history(&self, room: &str, limit: u32) -> Result<Vec<HistoryRow>> {
        let rows = sqlx::query(
            "SELECT c.id, c.seq, u.name, c.body, c.at FROM chat_messages c \
             JOIN users u ON u.id = c.sender_id \
             WHERE c.room = $1 ORDER BY c.seq DESC LIMIT $2",
        )
        .bind(room)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut out = rows
            .iter()
            .map(|r| {
                Ok(HistoryRow {
                    id: to_u64(r.try_get("id")?),
                    seq: to_u64(r.try_get::<Option<i64>, _>("seq")?.unwrap_or(0)),
                    sender: r.try_get("name")?,
                    body: r.try_get("body")?,
                    at: r.try_get("at")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        out.reverse();
        Ok(out)
    }
}

/// The channel a posted chat message is announced on (PostgreSQL's
/// `NOTIFY`), its id as the payload.
pub const CHAT_CHANNEL: &str = "wharf_chat";

/// A message to post with [`Store::post_chat_message`]: its id and room
/// number come from the database.
#[derive(Debug, Clone)]
pub struct NewChatMessage<'a> {
    /// Sender.
    pub sender_id: i64,
    /// Room, for a room message.
    pub room: Option<&'a str>,
    /// Recipient, for a direct message.
    pub recipient_id: Option<i64>,
    /// Text.
    pub body: &'a str,
    /// When said, unix ms.
    pub at: i64,
}

/// Attempts at posting a message before giving up on a busy room.
const POST_TRIES: usize = 20;

impl Store {
    /// Writes a chat message and gives it its id and, in a room, the room's
    /// next number, both from the database: several chat servers on one
    /// database number one room without gaps or repeats. On PostgreSQL the
    /// room's numbering is held by a lock per room for the transaction,
    /// ids come from a sequence, and the message is announced on
    /// [`CHAT_CHANNEL`] when it commits; on SQLite one statement reads the
    /// numbers and inserts, inside SQLite's write transaction. (Should two
    /// writers ever meet on a room's number, the unique index refuses the
    /// second and it is retried.)
    pub async fn post_chat_message(&self, m: &NewChatMessage<'_>) -> Result<(u64, Option<u64>)> {
        let mut tries = 0;
        loop {
            tries += 1;
            match self.try_post_chat_message(m).await {
                Err(crate::Error::Database(e))
                    if super::is_unique_violation(&e) && tries < POST_TRIES =>
                {
                    continue;
                }
                other => return other,
            }
        }
    }

    async fn try_post_chat_message(&self, m: &NewChatMessage<'_>) -> Result<(u64, Option<u64>)> {
        if self.backend == Backend::Sqlite {
            // One statement: SQLite runs it inside its write transaction, so
            // the numbers it reads cannot be taken by another writer.
            let row = sqlx::query(
                "INSERT INTO chat_messages (id, room, seq, recipient_id, sender_id, body, at) \
                 VALUES ((SELECT COALESCE(MAX(id), 0) + 1 FROM chat_messages), $1, \
                 CASE WHEN $1 IS NULL THEN NULL \
                 ELSE (SELECT COALESCE(MAX(seq), 0) + 1 FROM chat_messages WHERE room = $1) END, \
                 $2, $3, $4, $5) RETURNING id, seq",
            )
            .bind(m.room)
            .bind(m.recipient_id)
            .bind(m.sender_id)
            .bind(m.body)
            .bind(m.at)
            .fetch_one(&self.pool)
            .await?;
            let seq: Option<i64> = row.try_get("seq")?;
            return Ok((to_u64(row.try_get("id")?), seq.map(to_u64)));
        }
        let mut tx = self.pool.begin().await?;
        let seq = match m.room {
            Some(room) => {
                // The room's numbering is this transaction's until it ends.
                sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
                    .bind(room)
                    .execute(&mut *tx)
                    .await?;
                let row = sqlx::query(
                    "SELECT CAST(COALESCE(MAX(seq), 0) + 1 AS BIGINT) AS seq FROM chat_messages WHERE room = $1",
                )
                .bind(room)
                .fetch_one(&mut *tx)
                .await?;
                Some(row.try_get::<i64, _>("seq")?)
            }
            None => None,
        };
        let row = sqlx::query(
            "INSERT INTO chat_messages (id, room, seq, recipient_id, sender_id, body, at) \
             VALUES (nextval('chat_message_ids'), $1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(m.room)
        .bind(seq)
        .bind(m.recipient_id)
        .bind(m.sender_id)
        .bind(m.body)
        .bind(m.at)
        .fetch_one(&mut *tx)
        .await?;
        let id: i64 = row.try_get("id")?;
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHAT_CHANNEL)
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((to_u64(id), seq.map(to_u64)))
    }
}
