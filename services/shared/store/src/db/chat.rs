//! Chat messages: written in batches by the chat service, read back by
//! `history`.

use serde::{Deserialize, Serialize};
use sqlx::Row;
use wharf_proto::chat::PresenceChange;

use super::{Backend, Store, to_i64, to_u64};
use crate::error::{Error, Result};

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
            "SELECT c.id, c.seq, COALESCE(u.name, '(deleted)') AS name, c.body, c.at \
             FROM chat_messages c LEFT JOIN users u ON u.id = c.sender_id \
             WHERE c.room = $1 ORDER BY c.seq DESC LIMIT $2",
        )
        .bind(room)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut out = rows.iter().map(history_row).collect::<Result<Vec<_>>>()?;
        out.reverse();
        Ok(out)
    }
}

/// How much chat history is kept ([`Store::trim_chat_history`]); `None`
/// keeps all of that kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryPolicy {
    /// Messages said before this time (unix ms) go.
    pub before_ms: Option<i64>,
    /// Messages kept per room, the newest.
    pub per_room: Option<u64>,
    /// Bytes of text kept per sender, over rooms and direct messages, the
    /// newest: no one user can fill the database.
    pub per_user_bytes: Option<u64>,
}

/// Rows one trimming statement removes at most: short transactions, so the
/// chat's own writes never wait long behind the trimmer.
const TRIM_BATCH: i64 = 1000;

impl Store {
    /// Removes the history `policy` does not keep, oldest first, in small
    /// batches; returns how many messages went.
    pub async fn trim_chat_history(&self, policy: HistoryPolicy) -> Result<u64> {
        let mut removed = 0;
        if let Some(before) = policy.before_ms {
            removed += self
                .delete_in_batches(|| {
                    sqlx::query(
                        "DELETE FROM chat_messages WHERE id IN \
                         (SELECT id FROM chat_messages WHERE at < $1 ORDER BY id LIMIT $2)",
                    )
                    .bind(before)
                })
                .await?;
        }
        if let Some(keep) = policy.per_room {
            let rooms = sqlx::query(
                "SELECT room FROM chat_messages WHERE room IS NOT NULL \
                 GROUP BY room HAVING COUNT(*) > $1",
            )
            .bind(to_i64(keep))
            .fetch_all(&self.pool)
            .await?;
            for row in rooms {
                let room: String = row.try_get("room")?;
                // The oldest message kept; older ones go.
                let Some(first_kept) = sqlx::query(
                    "SELECT id FROM chat_messages WHERE room = $1 \
                     ORDER BY id DESC LIMIT 1 OFFSET $2",
                )
                .bind(&room)
                .bind(to_i64(keep.saturating_sub(1)))
                .fetch_optional(&self.pool)
                .await?
                else {
                    continue;
                };
                let first_kept: i64 = first_kept.try_get("id")?;
                removed += self
                    .delete_in_batches(|| {
                        sqlx::query(
                            "DELETE FROM chat_messages WHERE id IN \
                             (SELECT id FROM chat_messages WHERE room = $1 AND id < $2 \
                              ORDER BY id LIMIT $3)",
                        )
                        .bind(room.clone())
                        .bind(first_kept)
                    })
                    .await?;
            }
        }
        if let Some(cap) = policy.per_user_bytes {
            // Bytes, not characters: LENGTH counts characters on both.
            let (over, newest_first) = match self.backend {
                Backend::Sqlite => (
                    "SELECT sender_id FROM chat_messages GROUP BY sender_id \
                     HAVING SUM(LENGTH(CAST(body AS BLOB))) > $1",
                    "SELECT id, LENGTH(CAST(body AS BLOB)) AS len FROM chat_messages \
                     WHERE sender_id = $1 ORDER BY id DESC",
                ),
                Backend::Postgres => (
                    "SELECT sender_id FROM chat_messages GROUP BY sender_id \
                     HAVING SUM(OCTET_LENGTH(body)) > $1",
                    "SELECT id, OCTET_LENGTH(body)::BIGINT AS len FROM chat_messages \
                     WHERE sender_id = $1 ORDER BY id DESC",
                ),
            };
            let senders = sqlx::query(over)
                .bind(to_i64(cap))
                .fetch_all(&self.pool)
                .await?;
            for row in senders {
                let sender: i64 = row.try_get("sender_id")?;
                // The newest of the sender's messages that fit in the cap.
                let sizes = sqlx::query(newest_first)
                    .bind(sender)
                    .fetch_all(&self.pool)
                    .await?;
                let mut total = 0u64;
                let mut first_gone = None;
                for r in &sizes {
                    total = total.saturating_add(to_u64(r.try_get("len")?));
                    if total > cap {
                        first_gone = Some(r.try_get::<i64, _>("id")?);
                        break;
                    }
                }
                if let Some(first_gone) = first_gone {
                    removed += self
                        .delete_in_batches(|| {
                            sqlx::query(
                                "DELETE FROM chat_messages WHERE id IN \
                                 (SELECT id FROM chat_messages WHERE sender_id = $1 AND id <= $2 \
                                  ORDER BY id LIMIT $3)",
                            )
                            .bind(sender)
                            .bind(first_gone)
                        })
                        .await?;
                }
            }
        }
        Ok(removed)
    }

    /// Runs the delete `build` makes (its last parameter the batch size,
    /// bound here) until a batch removes less than a full batch.
    async fn delete_in_batches<'q>(
        &self,
        build: impl Fn() -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    ) -> Result<u64> {
        let mut removed = 0;
        loop {
            let done = build()
                .bind(TRIM_BATCH)
                .execute(&self.pool)
                .await?
                .rows_affected();
            removed += done;
            if done < TRIM_BATCH as u64 {
                return Ok(removed);
            }
            tokio::task::yield_now().await;
        }
    }
}

/// The channel chat servers sharing a PostgreSQL database announce
/// messages and presence on (`NOTIFY`), as [`ChatNotice`]s.
pub const CHAT_CHANNEL: &str = "wharf_chat";

/// A message to post with [`Store::post_chat_message`]: its id and room
/// number come from the database.
#[derive(Debug, Clone)]
pub struct NewChatMessage<'a> {
    /// Sender.
    pub sender_id: i64,
    /// The sender's name (for the announcement).
    pub sender: &'a str,
    /// Room, for a room message.
    pub room: Option<&'a str>,
    /// Recipient, for a direct message.
    pub recipient_id: Option<i64>,
    /// The recipient's name, for a direct message (for the announcement).
    pub recipient: Option<&'a str>,
    /// Text.
    pub body: &'a str,
    /// When said, unix ms.
    pub at: i64,
    /// The chat server posting it (so that it can tell its own
    /// announcements from the others').
    pub replica: &'a str,
}

/// What a chat server announces on [`CHAT_CHANNEL`] (PostgreSQL's
/// `NOTIFY`) for the others sharing the database, as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChatNotice {
    /// A message was posted.
    Message(PostedMessage),
    /// A user's first session on `replica` joined `room`, or their last
    /// one there left it.
    Presence {
        /// The server where it happened.
        replica: String,
        /// The room.
        room: String,
        /// The user.
        user: String,
        /// What happened.
        change: PresenceChange,
    },
    /// A chat server stopped, or stopped refreshing its row: everyone it
    /// held is gone.
    ReplicaGone {
        /// The server.
        replica: String,
    },
}

/// A posted message as announced, and as read back by id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostedMessage {
    /// The server that posted it.
    pub replica: String,
    /// Message id.
    pub id: u64,
    /// Room, for a room message.
    pub room: Option<String>,
    /// Number in the room.
    pub seq: Option<u64>,
    /// Sender's name.
    pub from: String,
    /// Recipient's name, for a direct message.
    pub to: Option<String>,
    /// When said, unix ms.
    pub at: i64,
    /// The text; left out of an announcement it would not fit in
    /// (PostgreSQL's payloads hold under 8000 bytes): read it with
    /// [`Store::chat_message`].
    pub text: Option<String>,
}

/// The longest text (JSON-escaped) an announcement carries; past it the
/// announcement goes without it (PostgreSQL's payloads hold under 8000
/// bytes, and the other fields take a few hundred at most).
const MAX_INLINE_TEXT: i64 = 7400;

fn encode(notice: &ChatNotice) -> Result<String> {
    serde_json::to_string(notice)
        .map_err(|e| Error::Internal(format!("cannot encode a chat announcement: {e}")))
}

/// Attempts at posting a message before giving up on a busy room.
const POST_TRIES: usize = 20;

impl Store {
    /// Writes a chat message and gives it its id and, in a room, the room's
    /// next number, both from the database: several chat servers on one
    /// database number one room without gaps or repeats. On PostgreSQL one
    /// statement takes the room's next number from its row in
    /// `chat_room_seqs` (locked to the commit), the id from a sequence, and
    /// announces the message on [`CHAT_CHANNEL`] when it commits (the whole
    /// message, or without its text when that would not fit: read it with
    /// [`Store::chat_message`]); on SQLite one statement reads the
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
        // One statement, one round trip: the room's counter row is
        // updated (and locked until the commit, which numbers the room's
        // messages in commit order), the message inserted, and announced on
        // commit. A counter behind the messages (a database copied in, rows
        // written by other means) catches up with them.
        let row = match m.room {
            Some(_) => sqlx::query(
                "WITH n AS ( \
                   INSERT INTO chat_room_seqs (room, seq) \
                   VALUES ($1::text, (SELECT COALESCE(MAX(seq), 0) + 1 FROM chat_messages WHERE room = $1::text)) \
                   ON CONFLICT (room) DO UPDATE SET seq = GREATEST(chat_room_seqs.seq + 1, EXCLUDED.seq) \
                   RETURNING seq), \
                 m AS ( \
                   INSERT INTO chat_messages (id, room, seq, recipient_id, sender_id, body, at) \
                   SELECT nextval('chat_message_ids'), $1::text, n.seq, NULL, $2::bigint, $3::text, $4::bigint FROM n \
                   RETURNING id, seq) \
                 SELECT m.id, m.seq, pg_notify('wharf_chat', json_build_object( \
                   'kind', 'message', 'replica', $5::text, 'id', m.id, 'room', $1::text, 'seq', m.seq, \
                   'from', $6::text, 'to', NULL, 'at', $4::bigint, \
                   'text', CASE WHEN octet_length(to_json($3::text)::text) <= $7::bigint THEN $3::text END)::text)::text IS NULL AS sent \
                 FROM m",
            ),
            None => sqlx::query(
                "WITH m AS ( \
                   INSERT INTO chat_messages (id, room, seq, recipient_id, sender_id, body, at) \
                   VALUES (nextval('chat_message_ids'), NULL, NULL, $8::bigint, $2::bigint, $3::text, $4::bigint) \
                   RETURNING id, seq) \
                 SELECT m.id, m.seq, pg_notify('wharf_chat', json_build_object( \
                   'kind', 'message', 'replica', $5::text, 'id', m.id, 'room', $1::text, 'seq', NULL, \
                   'from', $6::text, 'to', $9::text, 'at', $4::bigint, \
                   'text', CASE WHEN octet_length(to_json($3::text)::text) <= $7::bigint THEN $3::text END)::text)::text IS NULL AS sent \
                 FROM m",
            ),
        }
        .bind(m.room)
        .bind(m.sender_id)
        .bind(m.body)
        .bind(m.at)
        .bind(m.replica)
        .bind(m.sender)
        .bind(MAX_INLINE_TEXT)
        .bind(m.recipient_id)
        .bind(m.recipient)
        .fetch_one(&self.pool)
        .await?;
        let id: i64 = row.try_get("id")?;
        let seq: Option<i64> = row.try_get("seq")?;
        Ok((to_u64(id), seq.map(to_u64)))
    }
}

async fn notify(tx: &mut sqlx::Transaction<'_, sqlx::Any>, payload: &str) -> Result<()> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHAT_CHANNEL)
        .bind(payload)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// What a [`ChatListener`] hears.
#[derive(Debug)]
pub enum ChatEvent {
    /// An announcement.
    Notice(ChatNotice),
    /// The connection to PostgreSQL was lost (and made again): what was
    /// announced meanwhile is lost, so read again what matters.
    Lost,
}

/// Listens to [`CHAT_CHANNEL`] on a connection of its own (PostgreSQL).
pub struct ChatListener {
    inner: sqlx::postgres::PgListener,
}

impl std::fmt::Debug for ChatListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChatListener")
    }
}

impl ChatListener {
    /// The next announcement, or `Lost`. An error means PostgreSQL cannot
    /// be reached now: wait a little and call again (it reconnects).
    pub async fn next(&mut self) -> Result<ChatEvent> {
        loop {
            let Some(n) = self.inner.try_recv().await? else {
                return Ok(ChatEvent::Lost);
            };
            match serde_json::from_str(n.payload()) {
                Ok(notice) => return Ok(ChatEvent::Notice(notice)),
                Err(e) => {
                    tracing::warn!(error = %e, "an announcement on the chat channel that is not Wharf's; ignored");
                }
            }
        }
    }
}

/// A chat server's state in the database after [`Store::chat_replica_beat`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Beat {
    /// The server's row was missing (first beat, or the others took it for
    /// gone): whatever presence it had written is gone and must be written
    /// again.
    pub new: bool,
    /// Servers found silent and removed (with their presence).
    pub gone: Vec<String>,
}

impl Store {
    fn require_postgres(&self, what: &str) -> Result<()> {
        if self.backend == Backend::Postgres {
            Ok(())
        } else {
            Err(Error::OtherTool(format!(
                "{what} needs PostgreSQL: chat servers share rooms only on a postgres:// database"
            )))
        }
    }

    /// Listens for what the chat servers sharing this database announce
    /// (PostgreSQL only).
    pub async fn chat_listener(&self) -> Result<ChatListener> {
        self.require_postgres("listening to other chat servers")?;
        let Some(url) = &self.url else {
            return Err(Error::OtherTool("no PostgreSQL URL to listen on".into()));
        };
        let mut inner = sqlx::postgres::PgListener::connect(url.expose()).await?;
        inner.listen(CHAT_CHANNEL).await?;
        Ok(ChatListener { inner })
    }

    /// Refreshes chat server `replica`'s row (made when missing), and
    /// removes the servers not seen for `stale_after`, with their presence,
    /// announcing each as gone. Times are the database's clock, so the
    /// replicas' own clocks need not agree.
    pub async fn chat_replica_beat(
        &self,
        replica: &str,
        stale_after: std::time::Duration,
    ) -> Result<Beat> {
        self.require_postgres("chat presence")?;
        const NOW: &str = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)";
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE chat_replicas SET seen = {NOW} WHERE id = $1"
        )))
        .bind(replica)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 0 {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO chat_replicas (id, seen) VALUES ($1, {NOW})"
            )))
            .bind(replica)
            .execute(&mut *tx)
            .await?;
        }
        let stale = i64::try_from(stale_after.as_millis()).unwrap_or(i64::MAX);
        let gone: Vec<String> = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM chat_replicas WHERE seen < {NOW} - $1 AND id <> $2 RETURNING id"
        )))
        .bind(stale)
        .bind(replica)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| r.try_get("id"))
        .collect::<std::result::Result<_, _>>()?;
        for g in &gone {
            let notice = ChatNotice::ReplicaGone { replica: g.clone() };
            notify(&mut tx, &encode(&notice)?).await?;
        }
        tx.commit().await?;
        Ok(Beat {
            new: updated == 0,
            gone,
        })
    }

    /// Chat server `replica` stops: its row and presence go, announced.
    pub async fn chat_replica_leave(&self, replica: &str) -> Result<()> {
        self.require_postgres("chat presence")?;
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM chat_replicas WHERE id = $1")
            .bind(replica)
            .execute(&mut *tx)
            .await?;
        let notice = ChatNotice::ReplicaGone {
            replica: replica.to_owned(),
        };
        notify(&mut tx, &encode(&notice)?).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records that `user` has (`present`) or no longer has a session on
    /// chat server `replica`: in `room`, announced with `change`, or, with
    /// no room, online at all.
    pub async fn chat_presence(
        &self,
        replica: &str,
        room: Option<&str>,
        user_id: i64,
        user: &str,
        present: bool,
        change: PresenceChange,
    ) -> Result<()> {
        self.require_postgres("chat presence")?;
        let mut tx = self.pool.begin().await?;
        let statement = match (room.is_some(), present) {
            (true, true) => {
                "INSERT INTO chat_members (replica, room, user_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
            }
            (true, false) => {
                "DELETE FROM chat_members WHERE replica = $1 AND room = $2 AND user_id = $3"
            }
            (false, true) => {
                "INSERT INTO chat_online (replica, user_id) VALUES ($1, $3) ON CONFLICT DO NOTHING"
            }
            (false, false) => "DELETE FROM chat_online WHERE replica = $1 AND user_id = $3",
        };
        let done = sqlx::query(statement)
            .bind(replica)
            .bind(room.unwrap_or(""))
            .bind(user_id)
            .execute(&mut *tx)
            .await;
        // A replica's row removed by the others while it was silent: it
        // writes its presence again once its heartbeat makes the row anew.
        if let Err(sqlx::Error::Database(e)) = &done
            && e.is_foreign_key_violation()
        {
            return Ok(());
        }
        done?;
        if let Some(room) = room {
            let notice = ChatNotice::Presence {
                replica: replica.to_owned(),
                room: room.to_owned(),
                user: user.to_owned(),
                change,
            };
            notify(&mut tx, &encode(&notice)?).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The users in `room` on any chat server, sorted.
    pub async fn chat_room_users(&self, room: &str) -> Result<Vec<String>> {
        self.require_postgres("chat presence")?;
        let rows = sqlx::query(
            "SELECT DISTINCT u.name FROM chat_members m JOIN users u ON u.id = m.user_id \
             WHERE m.room = $1 ORDER BY u.name",
        )
        .bind(room)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| r.try_get("name"))
            .collect::<std::result::Result<_, _>>()?)
    }

    /// Who is in `room` on which chat server: (server, user) pairs.
    pub async fn chat_room_presence(&self, room: &str) -> Result<Vec<(String, String)>> {
        self.require_postgres("chat presence")?;
        let rows = sqlx::query(
            "SELECT m.replica, u.name FROM chat_members m JOIN users u ON u.id = m.user_id \
             WHERE m.room = $1",
        )
        .bind(room)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("replica")?, r.try_get("name")?)))
            .collect()
    }

    /// Rooms with members on any chat server, sorted, with their number of
    /// users.
    pub async fn chat_rooms(&self) -> Result<Vec<(String, u32)>> {
        self.require_postgres("chat presence")?;
        let rows = sqlx::query(
            "SELECT room, COUNT(DISTINCT user_id) AS n FROM chat_members GROUP BY room ORDER BY room",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let n: i64 = r.try_get("n")?;
                Ok((r.try_get("room")?, u32::try_from(n).unwrap_or(u32::MAX)))
            })
            .collect()
    }

    /// The id of user `name` when they have a chat session on any server.
    pub async fn chat_online_user(&self, name: &str) -> Result<Option<i64>> {
        self.require_postgres("chat presence")?;
        let row = sqlx::query(
            "SELECT u.id FROM chat_online o JOIN users u ON u.id = o.user_id \
             WHERE u.name = $1 LIMIT 1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get("id")).transpose()?)
    }

    /// Message `id`, as it would have been announced (`replica` empty).
    pub async fn chat_message(&self, id: u64) -> Result<Option<PostedMessage>> {
        let row = sqlx::query(
            "SELECT c.id, c.room, c.seq, COALESCE(s.name, '(deleted)') AS sender, \
             r.name AS recipient, c.at, c.body \
             FROM chat_messages c LEFT JOIN users s ON s.id = c.sender_id \
             LEFT JOIN users r ON r.id = c.recipient_id WHERE c.id = $1",
        )
        .bind(to_i64(id))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            let seq: Option<i64> = r.try_get("seq")?;
            Ok(PostedMessage {
                replica: String::new(),
                id: to_u64(r.try_get("id")?),
                room: r.try_get("room")?,
                seq: seq.map(to_u64),
                from: r.try_get("sender")?,
                to: r.try_get("recipient")?,
                at: r.try_get("at")?,
                text: Some(r.try_get("body")?),
            })
        })
        .transpose()
    }

    /// Up to `limit` messages of `room` numbered after `after`, in order.
    pub async fn room_messages_after(
        &self,
        room: &str,
        after: u64,
        limit: u32,
    ) -> Result<Vec<HistoryRow>> {
        let rows = sqlx::query(
            "SELECT c.id, c.seq, COALESCE(u.name, '(deleted)') AS name, c.body, c.at \
             FROM chat_messages c LEFT JOIN users u ON u.id = c.sender_id \
             WHERE c.room = $1 AND c.seq > $2 ORDER BY c.seq LIMIT $3",
        )
        .bind(room)
        .bind(to_i64(after))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(history_row).collect()
    }
}

fn history_row(r: &sqlx::any::AnyRow) -> Result<HistoryRow> {
    Ok(HistoryRow {
        id: to_u64(r.try_get("id")?),
        seq: to_u64(r.try_get::<Option<i64>, _>("seq")?.unwrap_or(0)),
        sender: r.try_get("name")?,
        body: r.try_get("body")?,
        at: r.try_get("at")?,
    })
}
