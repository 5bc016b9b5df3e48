//! One room space for several chat servers (replicas) on one PostgreSQL
//! database.
//!
//! - **Messages** are posted through the database
//!   ([`Store::post_chat_message`]), which gives each its id and the room's
//!   next number and announces it (`NOTIFY`) on commit. The replica that
//!   posted it delivers it at once; the others deliver it from the
//!   announcement. Each replica delivers a room's messages strictly in
//!   number order: a message that arrives ahead of one numbered before it
//!   waits for it, and a gap that lasts (an announcement lost with the
//!   listening connection) is filled from the database. A number at or
//!   below the room's last delivered one is not delivered again, so every
//!   member gets every message once.
//! - **Presence** (who is in which room, who is online) is written to the
//!   database by a writer task, coalesced (a join and a leave in between
//!   two writes cost nothing), and announced; each replica keeps, per
//!   room, the users present on the others, so that a user's arrival and
//!   departure are announced once across all replicas. `who` and `rooms`
//!   read the database. Each replica refreshes its row every
//!   [`BEAT_EVERY`]; one silent for [`STALE_AFTER`] is removed by the
//!   others, with its presence.
//! - UDP sessions stay with the replica that granted them: their endpoints
//!   are local like any other.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;
use wharf_core::time::now_ms;
use wharf_proto::ErrorCode;
use wharf_proto::chat::{ChatMessage, ChatReply, PresenceChange, RoomInfo};
use wharf_server::Refusal;
use wharf_store::db::ChatEvent;
use wharf_store::db::ChatNotice;
use wharf_store::db::NewChatMessage;
use wharf_store::db::PostedMessage;

use super::replies::{
    Outgoing, Reply, check_room, check_text, database_refusal, gone, kill, members_reply, refuse,
    room_list_reply, room_message, said_for,
};
use super::{EndpointId, Hub, PresenceKey, Space, State};

/// How often a replica refreshes its row and writes waiting presence.
pub(crate) const BEAT_EVERY: Duration = Duration::from_secs(2);
/// A replica not seen for this long is taken for gone.
pub(crate) const STALE_AFTER: Duration = Duration::from_secs(15);
/// How long a message may wait for the one numbered before it before the
/// gap is filled from the database.
const GAP_WAIT: Duration = Duration::from_millis(500);
/// Messages read from the database at once when filling a gap.
const CATCH_UP_BATCH: u32 = 500;
/// Messages one room may hold back; past it the room is read again from
/// the database.
const MAX_PENDING: usize = 10_000;
/// How long `who` and `rooms` wait for presence to reach the database.
const FLUSH_WAIT: Duration = Duration::from_secs(5);

/// This replica in the shared room space.
pub(crate) struct Shared {
    /// This replica's name in the database.
    replica: Arc<str>,
    /// Wakes the presence writer.
    wake: Notify,
    /// The last `dirty_generation` the writer has written out.
    written: watch::Sender<u64>,
}

impl Shared {
    pub(crate) fn new(replica: Arc<str>) -> Shared {
        Shared {
            replica,
            wake: Notify::new(),
            written: watch::Sender::new(0),
        }
    }
}

fn from_posted(m: PostedMessage, text: String) -> ChatMessage {
    ChatMessage {
        id: m.id,
        room: m.room,
        to: m.to,
        seq: m.seq,
        from: m.from,
        at: m.at,
        text,
        truncated: false,
        replay: false,
    }
}

impl Hub {
    /// Whether rooms are shared with other replicas (PostgreSQL).
    pub(crate) fn is_shared(&self) -> bool {
        matches!(self.space, Space::Shared(_))
    }

    /// Notes that `user`'s presence in `room` (or online, for `None`)
    /// changed, for the presence writer.
    pub(super) fn mark(
        &self,
        st: &mut State,
        room: Option<&str>,
        user: &Arc<str>,
        user_id: i64,
        change: PresenceChange,
    ) {
        if let Space::Shared(shared) = &self.space {
            st.dirty.insert(
                (room.map(str::to_owned), Arc::clone(user)),
                (user_id, change),
            );
            shared.wake.notify_one();
        }
    }

    /// Hands a room message to the room's members here, in number order:
    /// delivered now when it is the next, held when one before it is
    /// missing, dropped when it was delivered already. Returns the members
    /// found slow.
    fn accept(
        &self,
        st: &mut State,
        room_name: &str,
        message: ChatMessage,
        origin: Option<EndpointId>,
    ) -> Vec<EndpointId> {
        let mut slow = Vec::new();
        let (Some(room), Some(seq)) = (st.rooms.get_mut(room_name), message.seq) else {
            return slow;
        };
        if seq <= room.seq {
            return slow;
        }
        if seq > room.seq + 1 {
            room.pending.insert(seq, (message, origin));
            room.pending_since.get_or_insert_with(Instant::now);
            return slow;
        }
        let mut next = Some((message, origin));
        while let Some((message, origin)) = next.take() {
            room.seq = message.seq.unwrap_or(room.seq + 1);
            let event = ChatReply::Message(message);
            if let Ok(mut out) = Outgoing::new(&event) {
                self.deliver(&st.endpoints, &room.members, origin, &mut out, &mut slow);
            }
            while let Some(entry) = room.pending.first_entry() {
                if *entry.key() <= room.seq {
                    entry.remove();
                } else {
                    if *entry.key() == room.seq + 1 {
                        next = Some(entry.remove());
                    }
                    break;
                }
            }
        }
        if room.pending.is_empty() {
            room.pending_since = None;
        }
        slow
    }

    /// `say` through the database (see the module's documentation).
    pub(super) async fn say_shared(
        &self,
        shared: &Shared,
        id: EndpointId,
        room_name: &str,
        text: &str,
    ) -> Reply {
        check_room(room_name)?;
        check_text(text)?;
        let (user_id, user) = self.sayer(&mut self.lock(), id, room_name, text.len())?;
        let message = self
            .post(shared, (user_id, &user), Some(room_name), None, text)
            .await?;
        let said = said_for(&message);
        let kills = {
            let mut st = self.lock();
            let slow = self.accept(&mut st, room_name, message, Some(id));
            self.drop_slow(&mut st, slow)
        };
        kill(kills);
        Ok(said)
    }

    /// Posts a message through the database (to `room`, or to
    /// `recipient`); the message as delivered.
    async fn post(
        &self,
        shared: &Shared,
        (sender_id, sender): (i64, &str),
        room: Option<&str>,
        recipient: Option<(i64, &str)>,
        text: &str,
    ) -> Result<ChatMessage, Refusal> {
        let at = now_ms();
        let (id, seq) = self
            .store
            .post_chat_message(&NewChatMessage {
                sender_id,
                sender,
                room,
                recipient_id: recipient.map(|r| r.0),
                recipient: recipient.map(|r| r.1),
                body: text,
                at,
                replica: &shared.replica,
            })
            .await
            .map_err(|e| database_refusal(&e, "post a chat message"))?;
        let counted = match room {
            Some(_) => &wharf_store::metrics::metrics().chat_room_messages,
            None => &wharf_store::metrics::metrics().chat_direct_messages,
        };
        counted.inc();
        Ok(ChatMessage {
            id,
            room: room.map(str::to_owned),
            to: recipient.map(|r| r.1.to_owned()),
            seq,
            from: sender.to_owned(),
            at,
            text: text.to_owned(),
            truncated: false,
            replay: false,
        })
    }

    /// `dm` through the database: the recipient may be on any replica.
    pub(super) async fn dm_shared(
        &self,
        shared: &Shared,
        id: EndpointId,
        to: &str,
        text: &str,
    ) -> Reply {
        check_text(text)?;
        let (user_id, user, here) = {
            let st = self.lock();
            let Some(ep) = st.endpoints.get(&id) else {
                return Err(gone());
            };
            let here = st
                .by_user
                .get(to)
                .and_then(|r| r.first())
                .and_then(|r| st.endpoints.get(r))
                .map(|r| r.user_id);
            (ep.user_id, Arc::clone(&ep.user), here)
        };
        let recipient_id = match here {
            Some(r) => r,
            None => self
                .store
                .chat_online_user(to)
                .await
                .map_err(|e| database_refusal(&e, "look up who is online"))?
                .ok_or_else(|| {
                    refuse(
                        ErrorCode::NotFound,
                        format!(
                            "no user named {to} is connected; direct messages reach users who are online"
                        ),
                    )
                })?,
        };
        self.take_flood_token(&mut self.lock(), user_id, text.len())?;
        let message = self
            .post(
                shared,
                (user_id, &user),
                None,
                Some((recipient_id, to)),
                text,
            )
            .await?;
        let said = said_for(&message);
        self.deliver_direct(message, Some(id));
        Ok(said)
    }

    /// Hands a direct message to the recipient's sessions here and the
    /// sender's, but `origin`.
    fn deliver_direct(&self, message: ChatMessage, origin: Option<EndpointId>) {
        let kills = {
            let mut guard = self.lock();
            let st = &mut *guard;
            let mut targets: Vec<EndpointId> = Vec::new();
            if let Some(to) = &message.to {
                targets.extend(st.by_user.get(to.as_str()).into_iter().flatten());
            }
            if message.to.as_deref() != Some(message.from.as_str()) {
                targets.extend(st.by_user.get(message.from.as_str()).into_iter().flatten());
            }
            let event = ChatReply::Message(message);
            let mut slow = Vec::new();
            if let Ok(mut out) = Outgoing::new(&event) {
                self.deliver(&st.endpoints, &targets, origin, &mut out, &mut slow);
            }
            self.drop_slow(st, slow)
        };
        kill(kills);
    }

    /// On PostgreSQL, waits until this server's presence is in the
    /// database: a user logged in or joined here is then seen, and
    /// reachable, from every replica.
    pub(crate) async fn settle(&self) {
        if let Space::Shared(shared) = &self.space {
            self.flush_presence(shared).await;
        }
    }

    /// Waits until the presence changed so far is in the database.
    async fn flush_presence(&self, shared: &Shared) {
        let wanted = {
            let mut st = self.lock();
            st.dirty_generation += 1;
            st.dirty_generation
        };
        shared.wake.notify_one();
        let mut written = shared.written.subscribe();
        let _ = tokio::time::timeout(FLUSH_WAIT, written.wait_for(|w| *w >= wanted)).await;
    }

    pub(super) async fn who_shared(&self, shared: &Shared, room: &str, budget: usize) -> Reply {
        check_room(room)?;
        self.flush_presence(shared).await;
        let users = self
            .store
            .chat_room_users(room)
            .await
            .map_err(|e| database_refusal(&e, "read who is in a room"))?;
        Ok(members_reply(room, users, budget))
    }

    pub(super) async fn rooms_shared(&self, shared: &Shared, budget: usize) -> Reply {
        self.flush_presence(shared).await;
        let rooms = self
            .store
            .chat_rooms()
            .await
            .map_err(|e| database_refusal(&e, "read the rooms"))?
            .into_iter()
            .map(|(name, members)| RoomInfo { name, members })
            .collect();
        Ok(room_list_reply(rooms, budget))
    }

    /// Reads again, for a room made here or after the announcements were
    /// lost, who is in it on the other replicas and the messages numbered
    /// after the last delivered here. Does nothing on SQLite.
    pub(super) async fn sync_room(&self, room: &str) {
        let Space::Shared(shared) = &self.space else {
            return;
        };
        match self.store.chat_room_presence(room).await {
            Ok(pairs) => {
                let mut st = self.lock();
                if let Some(r) = st.rooms.get_mut(room) {
                    let mut remote: HashMap<Arc<str>, HashSet<Arc<str>>> = HashMap::new();
                    for (replica, user) in pairs {
                        if *replica != *shared.replica {
                            remote
                                .entry(Arc::from(user))
                                .or_default()
                                .insert(Arc::from(replica));
                        }
                    }
                    r.remote = remote;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, room, "cannot read who is in a room on the other chat servers");
            }
        }
        self.catch_up(room).await;
    }

    /// Delivers the room's messages numbered after the last delivered here,
    /// read from the database.
    async fn catch_up(&self, room: &str) {
        loop {
            let after = match self.lock().rooms.get(room) {
                Some(r) => r.seq,
                None => return,
            };
            let rows = match self
                .store
                .room_messages_after(room, after, CATCH_UP_BATCH)
                .await
            {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::warn!(error = %e, room, "cannot read a room's messages to fill a gap; trying again shortly");
                    return;
                }
            };
            let full = rows.len() >= CATCH_UP_BATCH as usize;
            let kills = {
                let mut guard = self.lock();
                let st = &mut *guard;
                let mut slow = Vec::new();
                for r in rows {
                    // The database is the truth: a number it lacks before
                    // one it holds will never come (its sender's account was
                    // deleted with its messages), so it is not waited for.
                    if let Some(here) = st.rooms.get_mut(room) {
                        here.seq = here.seq.max(r.seq.saturating_sub(1));
                    }
                    slow.extend(self.accept(st, room, room_message(room, r, false), None));
                }
                if let Some(r) = st.rooms.get_mut(room)
                    && r.pending.len() > MAX_PENDING
                {
                    r.pending.clear();
                    r.pending_since = None;
                }
                self.drop_slow(st, slow)
            };
            kill(kills);
            if !full {
                return;
            }
        }
    }

    /// Rooms whose oldest held message has waited too long.
    fn gapped_rooms(&self) -> Vec<String> {
        let now = Instant::now();
        self.lock()
            .rooms
            .iter()
            .filter(|(_, r)| {
                r.pending.len() > MAX_PENDING
                    || r.pending_since
                        .is_some_and(|t| now.duration_since(t) >= GAP_WAIT)
            })
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// What another replica announced.
    async fn on_notice(&self, shared: &Shared, notice: ChatNotice) {
        match notice {
            ChatNotice::Message(m) => {
                if *m.replica == *shared.replica {
                    return;
                }
                let text = match m.text.clone() {
                    Some(t) => t,
                    // Too long to announce whole: read it.
                    None => match self.store.chat_message(m.id).await {
                        Ok(Some(full)) => full.text.unwrap_or_default(),
                        Ok(None) => return,
                        Err(e) => {
                            tracing::warn!(error = %e, id = m.id, "cannot read an announced chat message");
                            return;
                        }
                    },
                };
                match m.room.clone() {
                    Some(room) => {
                        let kills = {
                            let mut st = self.lock();
                            let slow = self.accept(&mut st, &room, from_posted(m, text), None);
                            self.drop_slow(&mut st, slow)
                        };
                        kill(kills);
                    }
                    None => self.deliver_direct(from_posted(m, text), None),
                }
            }
            ChatNotice::Presence {
                replica,
                room,
                user,
                change,
            } => {
                if *replica != *shared.replica {
                    self.remote_presence(&replica, &room, &user, change);
                }
            }
            ChatNotice::ReplicaGone { replica } => {
                if *replica != *shared.replica {
                    self.replica_gone(&replica);
                }
            }
        }
    }

    /// A user's presence on another replica changed.
    fn remote_presence(&self, replica: &str, room_name: &str, user: &str, change: PresenceChange) {
        let kills = {
            let mut guard = self.lock();
            let st = &mut *guard;
            let Some(room) = st.rooms.get_mut(room_name) else {
                return;
            };
            let before = room.present(user);
            if change == PresenceChange::Joined {
                room.remote
                    .entry(Arc::from(user))
                    .or_default()
                    .insert(Arc::from(replica));
            } else if let Some(on) = room.remote.get_mut(user) {
                on.remove(replica);
                if on.is_empty() {
                    room.remote.remove(user);
                }
            }
            if before == room.present(user) {
                return;
            }
            let notice = ChatReply::Presence {
                room: room_name.to_owned(),
                user: user.to_owned(),
                change,
            };
            let mut slow = Vec::new();
            if let Ok(mut out) = Outgoing::new(&notice) {
                self.deliver(&st.endpoints, &room.members, None, &mut out, &mut slow);
            }
            self.drop_slow(st, slow)
        };
        kill(kills);
    }

    /// Another replica is gone: its users leave every room here.
    fn replica_gone(&self, replica: &str) {
        let left: Vec<(String, String)> = {
            let st = self.lock();
            st.rooms
                .iter()
                .flat_map(|(name, room)| {
                    room.remote
                        .iter()
                        .filter(|(_, on)| on.contains(replica))
                        .map(|(user, _)| (name.clone(), user.to_string()))
                })
                .collect()
        };
        for (room, user) in left {
            self.remote_presence(replica, &room, &user, PresenceChange::Dropped);
        }
    }

    /// Every presence this replica holds, to write again (its row was
    /// taken for gone and removed with its presence).
    fn mark_all(&self) {
        let mut guard = self.lock();
        let st = &mut *guard;
        let mut all: Vec<(PresenceKey, i64)> = Vec::new();
        for (user, ids) in &st.by_user {
            let Some(ep) = ids.first().and_then(|i| st.endpoints.get(i)) else {
                continue;
            };
            all.push(((None, Arc::clone(user)), ep.user_id));
            for (name, room) in &st.rooms {
                if room.users.contains_key(user) {
                    all.push(((Some(name.clone()), Arc::clone(user)), ep.user_id));
                }
            }
        }
        for (key, user_id) in all {
            st.dirty.insert(key, (user_id, PresenceChange::Joined));
        }
    }

    /// Whether `key` is present here now.
    fn present_here(&self, st: &State, key: &PresenceKey) -> bool {
        match &key.0 {
            Some(room) => st
                .rooms
                .get(room)
                .is_some_and(|r| r.users.contains_key(&key.1)),
            None => st.by_user.contains_key(&key.1),
        }
    }
}

/// A name for this replica in the database: the host, the process and a
/// random part (a restarted server is a new replica).
pub(crate) fn replica_name() -> Arc<str> {
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    let mut random = [0u8; 4];
    let random = match getrandom::fill(&mut random) {
        Ok(()) => hex::encode(random),
        Err(_) => format!("{:x}", now_ms()),
    };
    Arc::from(format!("{host}-{}-{random}", std::process::id()))
}

/// Runs the shared room space's background work until `shutdown`: the
/// listener, the gap filler, the presence writer and the heartbeat. Ends
/// by removing this replica's row and presence from the database.
pub(crate) async fn run(server: Arc<super::super::ChatServer>, shutdown: CancellationToken) {
    let hub = &server.hub;
    let Space::Shared(shared) = &hub.space else {
        return;
    };
    let (events_tx, mut events) = mpsc::channel(4096);
    let listener = tokio::spawn(listen_forever(
        Arc::clone(&server),
        events_tx,
        shutdown.clone(),
    ));
    let writer = tokio::spawn(write_presence_forever(
        Arc::clone(&server),
        shutdown.clone(),
    ));
    let mut gaps = tokio::time::interval(GAP_WAIT / 2);
    gaps.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            event = events.recv() => match event {
                Some(ChatEvent::Notice(notice)) => hub.on_notice(shared, notice).await,
                Some(ChatEvent::Lost) => {
                    let rooms: Vec<String> = hub.lock().rooms.keys().cloned().collect();
                    for room in rooms {
                        hub.sync_room(&room).await;
                    }
                }
                None => break,
            },
            _ = gaps.tick() => {
                for room in hub.gapped_rooms() {
                    hub.catch_up(&room).await;
                }
            }
        }
    }
    listener.abort();
    let _ = writer.await;
    if let Err(e) = hub.store.chat_replica_leave(&shared.replica).await {
        tracing::warn!(error = %e, "cannot remove this chat server's presence from the database; the others will in {}s", STALE_AFTER.as_secs());
    }
}

/// Listens to the other replicas, connecting again when PostgreSQL goes
/// away; a (re)connection counts as `Lost` (what was said meanwhile is
/// read from the database).
async fn listen_forever(
    server: Arc<super::super::ChatServer>,
    events: mpsc::Sender<ChatEvent>,
    shutdown: CancellationToken,
) {
    loop {
        let mut listener = match server.hub.store.chat_listener().await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen to the other chat servers; trying again in 1 s");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        if events.send(ChatEvent::Lost).await.is_err() {
            return;
        }
        loop {
            match listener.next().await {
                Ok(event) => {
                    if events.send(event).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "lost the connection that listens to the other chat servers; connecting again");
                    break;
                }
            }
        }
    }
}

/// Writes presence to the database as it changes, and the heartbeat.
async fn write_presence_forever(
    server: Arc<super::super::ChatServer>,
    shutdown: CancellationToken,
) {
    let hub = &server.hub;
    let Space::Shared(shared) = &hub.space else {
        return;
    };
    // What the database holds of this replica's presence.
    let mut written: HashSet<PresenceKey> = HashSet::new();
    let mut beat = tokio::time::interval(BEAT_EVERY);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut first = true;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = shared.wake.notified() => {}
            _ = beat.tick() => {
                match hub.store.chat_replica_beat(&shared.replica, STALE_AFTER).await {
                    Ok(b) => {
                        if b.new && !first {
                            tracing::warn!("this chat server was taken for gone by the others; writing its presence again");
                            written.clear();
                            hub.mark_all();
                        }
                        first = false;
                        for g in b.gone {
                            tracing::info!(replica = %g, "a chat server stopped answering; its users left its rooms");
                            hub.replica_gone(&g);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot refresh this chat server's row in the database"),
                }
            }
        }
        if first {
            // Presence waits for the row it belongs to.
            continue;
        }
        let (batch, generation) = {
            let mut st = hub.lock();
            (std::mem::take(&mut st.dirty), st.dirty_generation)
        };
        for (key, (user_id, change)) in batch {
            let present = hub.present_here(&hub.lock(), &key);
            if present == written.contains(&key) {
                continue;
            }
            let change = if present {
                PresenceChange::Joined
            } else {
                change
            };
            match hub
                .store
                .chat_presence(
                    &shared.replica,
                    key.0.as_deref(),
                    user_id,
                    &key.1,
                    present,
                    change,
                )
                .await
            {
                Ok(()) => {
                    if present {
                        written.insert(key);
                    } else {
                        written.remove(&key);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot write chat presence to the database; trying again shortly");
                    hub.lock().dirty.entry(key).or_insert((user_id, change));
                }
            }
        }
        shared.written.send_replace(generation);
    }
}
