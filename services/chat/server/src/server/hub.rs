//! The room space both transports share.
//!
//! Every TCP session and every UDP session is an *endpoint*: a user and a
//! way to reach them ([`Sink`]). Rooms hold endpoints. Saying something
//! encodes the `message` frame once, then hands the same bytes to every
//! member's bounded queue without waiting: a member whose queue is full is
//! dropped (with a notice to the room), so one slow reader never stalls a
//! room or the server. Everything here runs under one short lock; nothing in
//! it waits.
//!
//! On SQLite the hub numbers messages itself and writes them through the
//! [`Journal`]. On PostgreSQL several chat servers (replicas) share one
//! room space: see [`shared`].

mod replies;
pub(crate) mod shared;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::mpsc;
use wharf_core::time::now_ms;
use wharf_proto::ErrorCode;
use wharf_proto::chat::{ChatMessage, ChatReply, PresenceChange, RoomInfo};
use wharf_proto::datagram::SessionId;
use wharf_server::Refusal;
use wharf_store::Store;
use wharf_store::db::ChatRecord;

use self::replies::{
    Outgoing, check_room, database_refusal, gone, kill, members_reply, refuse, room_list_reply,
    room_message, said_for,
};
pub(crate) use self::replies::{Reply, check_text, datagram_frame};
use super::bucket::{Bucket, Rate};
use super::journal::Journal;
use super::outbox::Outbox;

pub(crate) type EndpointId = u64;

/// How to reach an endpoint.
pub(crate) enum Sink {
    /// A TCP session's outgoing queue of encoded frames, through which the
    /// session is also dropped.
    Tcp(Outbox),
    /// A UDP session: frames go through the shared UDP sender.
    Udp(SessionId),
}

/// Limits the hub enforces.
#[derive(Debug, Clone)]
pub(crate) struct HubConfig {
    pub flood: Rate,
    pub flood_bytes: Rate,
    pub max_rooms: usize,
    pub max_rooms_per_endpoint: usize,
    pub max_rooms_per_user: usize,
    pub max_rooms_per_address: usize,
    pub history_default: u32,
    pub history_max: u32,
}

struct Endpoint {
    user_id: i64,
    user: Arc<str>,
    /// The client's address (behind a load balancer, the one it named).
    address: IpAddr,
    sink: Sink,
    rooms: Vec<String>,
}

struct Room {
    /// The number of the last message delivered here.
    seq: u64,
    /// Who made the room and from where: a room counts against both until
    /// its last member leaves (and it goes).
    maker: (i64, IpAddr),
    members: Vec<EndpointId>,
    /// Sessions per user in the room: presence notices go out when a user's
    /// first session joins and when their last one leaves.
    users: HashMap<Arc<str>, u32>,
    /// Shared rooms: the other replicas each user is in the room on (a user
    /// present there is present here too: no notice when they join here).
    remote: HashMap<Arc<str>, HashSet<Arc<str>>>,
    /// Shared rooms: messages that came before the ones numbered ahead of
    /// them, held until those arrive, and since when the oldest waits.
    pending: BTreeMap<u64, (ChatMessage, Option<EndpointId>)>,
    pending_since: Option<std::time::Instant>,
}

impl Room {
    fn new(seq: u64, maker: (i64, IpAddr)) -> Room {
        Room {
            seq,
            maker,
            members: Vec::new(),
            users: HashMap::new(),
            remote: HashMap::new(),
            pending: BTreeMap::new(),
            pending_since: None,
        }
    }

    /// Whether `user` is in the room here or on another replica.
    fn present(&self, user: &str) -> bool {
        self.users.contains_key(user) || self.remote.contains_key(user)
    }
}

/// A user's presence the shared database must learn of: in a room, or
/// (`None`) online at all.
type PresenceKey = (Option<String>, Arc<str>);

#[derive(Default)]
struct State {
    rooms: HashMap<String, Room>,
    endpoints: HashMap<EndpointId, Endpoint>,
    by_user: HashMap<Arc<str>, Vec<EndpointId>>,
    /// Per user: messages, and bytes of text.
    floods: HashMap<i64, (Bucket, Bucket)>,
    next_endpoint: EndpointId,
    last_id: u64,
    /// Shared rooms: presence changed here and not yet written to the
    /// database, with the user's id and what to announce.
    dirty: HashMap<PresenceKey, (i64, PresenceChange)>,
    /// Bumped by each wait for the presence writer.
    dirty_generation: u64,
}

/// Where the rooms live, the hub's one strategy: this server's alone
/// (SQLite: messages numbered here and written through the journal), or
/// one space shared with the other replicas on PostgreSQL (messages
/// numbered by the database, presence written to it; see [`shared`]).
/// `say`, `dm`, `who`, `rooms`, `settle` and `sync_room` are its interface.
enum Space {
    Local,
    Shared(shared::Shared),
}

pub(crate) struct Hub {
    state: Mutex<State>,
    /// Held while a room is created, so its numbering is read from the
    /// database once and never twice concurrently.
    creating: tokio::sync::Mutex<()>,
    journal: Journal,
    store: Store,
    udp_out: mpsc::Sender<(SessionId, Bytes)>,
    config: HubConfig,
    /// The server is stopping: members go without notices (every member
    /// is told the server is shutting down instead, and notices of all
    /// leaving at once would only flood the queues).
    closing: AtomicBool,
    /// Where the rooms live: here alone, or shared with other replicas.
    space: Space,
}

impl Hub {
    pub(crate) fn new(
        store: Store,
        journal: Journal,
        last_id: u64,
        udp_out: mpsc::Sender<(SessionId, Bytes)>,
        config: HubConfig,
        replica: Option<Arc<str>>,
    ) -> Self {
        Hub {
            space: match replica {
                Some(replica) => Space::Shared(shared::Shared::new(replica)),
                None => Space::Local,
            },
            state: Mutex::new(State {
                last_id,
                ..State::default()
            }),
            creating: tokio::sync::Mutex::new(()),
            journal,
            store,
            udp_out,
            config,
            closing: AtomicBool::new(false),
        }
    }

    /// The server is stopping: from now on members leave without notices.
    pub(crate) fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    pub(crate) fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Adds an endpoint for `user`.
    pub(crate) fn register(
        &self,
        user_id: i64,
        user: &str,
        address: IpAddr,
        sink: Sink,
    ) -> EndpointId {
        let mut st = self.lock();
        st.next_endpoint += 1;
        let id = st.next_endpoint;
        let user: Arc<str> = Arc::from(user);
        let sessions = st.by_user.entry(Arc::clone(&user)).or_default();
        sessions.push(id);
        if sessions.len() == 1 {
            self.mark(&mut st, None, &user, user_id, PresenceChange::Joined);
        }
        st.endpoints.insert(
            id,
            Endpoint {
                user_id,
                user,
                address,
                sink,
                rooms: Vec::new(),
            },
        );
        id
    }

    /// Removes an endpoint (its session ended); its rooms hear `change`.
    /// Its own session is not killed: it is ending by itself, and what it
    /// queued last (a reason, say) still goes out.
    pub(crate) fn unregister(&self, id: EndpointId, change: PresenceChange) {
        let kills = {
            let mut st = self.lock();
            self.remove(&mut st, vec![(id, change)], Some(id))
        };
        kill(kills);
    }

    /// Endpoints connected now.
    pub(crate) fn endpoint_count(&self) -> usize {
        self.lock().endpoints.len()
    }

    /// Removes endpoints and everything their leaving causes (notices that
    /// overflow other queues drop those members too). Returns the queues
    /// of the TCP sessions removed, to drop them by once the lock is gone.
    fn remove(
        &self,
        st: &mut State,
        mut work: Vec<(EndpointId, PresenceChange)>,
        ending: Option<EndpointId>,
    ) -> Vec<Outbox> {
        let mut kills = Vec::new();
        while let Some((id, change)) = work.pop() {
            let Some(ep) = st.endpoints.remove(&id) else {
                continue;
            };
            if let Some(list) = st.by_user.get_mut(&ep.user) {
                list.retain(|e| *e != id);
                if list.is_empty() {
                    st.by_user.remove(&ep.user);
                    st.floods.remove(&ep.user_id);
                    self.mark(st, None, &ep.user, ep.user_id, change);
                }
            }
            for room in &ep.rooms {
                let mut slow = Vec::new();
                self.leave_room(st, id, (ep.user_id, &ep.user), room, change, &mut slow);
                work.extend(slow.into_iter().map(|s| (s, PresenceChange::Dropped)));
            }
            if let Sink::Tcp(tx) = ep.sink
                && ending != Some(id)
            {
                kills.push(tx);
            }
        }
        kills
    }

    /// Takes endpoint `id` out of `room`; the others hear of it when it was
    /// the user's last session there.
    fn leave_room(
        &self,
        st: &mut State,
        id: EndpointId,
        (user_id, user): (i64, &Arc<str>),
        room_name: &str,
        change: PresenceChange,
        slow: &mut Vec<EndpointId>,
    ) {
        let Some(room) = st.rooms.get_mut(room_name) else {
            return;
        };
        room.members.retain(|m| *m != id);
        let last_of_user = match room.users.get_mut(user) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                room.users.remove(user);
                true
            }
            None => false,
        };
        let elsewhere = room.remote.contains_key(user);
        if room.members.is_empty() {
            st.rooms.remove(room_name);
        }
        if last_of_user {
            self.mark(st, Some(room_name), user, user_id, change);
        }
        let Some(room) = st.rooms.get(room_name) else {
            return;
        };
        if last_of_user && !elsewhere && !self.closing.load(Ordering::SeqCst) {
            let notice = ChatReply::Presence {
                room: room_name.to_owned(),
                user: user.to_string(),
                change,
            };
            if let Ok(mut out) = Outgoing::new(&notice) {
                self.deliver(&st.endpoints, &room.members, None, &mut out, slow);
            }
        }
    }

    /// Hands `out` to each of `targets` but `skip`, without waiting. Full
    /// TCP queues are noted in `slow`; UDP is lossy by nature and a full
    /// UDP queue just loses the datagram (the client sees the gap).
    fn deliver(
        &self,
        endpoints: &HashMap<EndpointId, Endpoint>,
        targets: &[EndpointId],
        skip: Option<EndpointId>,
        out: &mut Outgoing<'_>,
        slow: &mut Vec<EndpointId>,
    ) {
        let mut delivered = 0u64;
        for id in targets {
            if Some(*id) == skip {
                continue;
            }
            let Some(ep) = endpoints.get(id) else {
                continue;
            };
            match &ep.sink {
                Sink::Tcp(tx) => match tx.try_send(out.tcp.clone()) {
                    Ok(()) => delivered += 1,
                    Err(super::outbox::Refused::Full) => slow.push(*id),
                    // The session is ending and will unregister itself.
                    Err(super::outbox::Refused::Closed) => {}
                },
                Sink::Udp(session) => {
                    if let Some(frame) = out.udp()
                        && self.udp_out.try_send((*session, frame)).is_ok()
                    {
                        delivered += 1;
                    }
                }
            }
        }
        wharf_store::metrics::metrics()
            .chat_deliveries
            .inc_by(delivered);
    }

    /// Drops the members found slow during a delivery.
    fn drop_slow(&self, st: &mut State, slow: Vec<EndpointId>) -> Vec<Outbox> {
        if slow.is_empty() {
            return Vec::new();
        }
        wharf_store::metrics::metrics()
            .chat_dropped
            .inc_by(slow.len() as u64);
        for id in &slow {
            if let Some(ep) = st.endpoints.get(id) {
                tracing::info!(user = %ep.user, "dropping a chat session that does not read its messages");
            }
        }
        self.remove(
            st,
            slow.into_iter()
                .map(|id| (id, PresenceChange::Dropped))
                .collect(),
            None,
        )
    }

    /// `join`: answers with the room's last `seq`.
    pub(crate) async fn join(&self, id: EndpointId, room: &str) -> Reply {
        let joined = self.join_or_make(id, room).await?;
        self.settle().await;
        Ok(joined)
    }

    async fn join_or_make(&self, id: EndpointId, room: &str) -> Reply {
        check_room(room)?;
        if let Some(reply) = self.join_existing(id, room)? {
            return Ok(reply);
        }
        let _creating = self.creating.lock().await;
        if let Some(reply) = self.join_existing(id, room)? {
            return Ok(reply);
        }
        let maker = {
            let st = self.lock();
            let ep = st.endpoints.get(&id).ok_or_else(gone)?;
            self.may_make_room(&st, ep.user_id, ep.address)?;
            (ep.user_id, ep.address)
        };
        // Messages of an earlier life of this room may still be queued.
        self.journal.flush().await;
        let seq = self.store.last_room_seq(room).await.map_err(|e| {
            database_refusal(&e, &format!("read the last message number of room {room}"))
        })?;
        {
            let mut st = self.lock();
            if !st.endpoints.contains_key(&id) {
                return Err(gone());
            }
            // Checked again: others may have made rooms while the number
            // was read.
            self.may_make_room(&st, maker.0, maker.1)?;
            st.rooms.insert(room.to_owned(), Room::new(seq, maker));
        }
        let joined = match self.join_existing(id, room)? {
            Some(reply) => reply,
            None => return Err(refuse(ErrorCode::Internal, "the room vanished; join again")),
        };
        // What the other replicas said and who joined there while the
        // room was being made here.
        self.sync_room(room).await;
        Ok(joined)
    }

    /// Whether a user at an address may make one more room: the server's
    /// rooms, the user's and the address's (rooms made and not yet empty)
    /// each have a maximum, so no one user or address can take every room.
    fn may_make_room(&self, st: &State, user_id: i64, address: IpAddr) -> Result<(), Refusal> {
        if st.rooms.len() >= self.config.max_rooms {
            return Err(refuse(
                ErrorCode::Busy,
                format!(
                    "the server has its maximum of {} rooms; join an existing one (see /rooms)",
                    self.config.max_rooms
                ),
            ));
        }
        let by_user = st.rooms.values().filter(|r| r.maker.0 == user_id).count();
        if by_user >= self.config.max_rooms_per_user {
            return Err(refuse(
                ErrorCode::Busy,
                format!(
                    "you have made {by_user} rooms that still have members, the most one user may; join an existing room (see /rooms), or leave rooms you made so they close"
                ),
            ));
        }
        let by_address = st.rooms.values().filter(|r| r.maker.1 == address).count();
        if by_address >= self.config.max_rooms_per_address {
            return Err(refuse(
                ErrorCode::Busy,
                format!(
                    "{by_address} rooms made from your address still have members, the most one address may; join an existing room (see /rooms), or leave rooms made from here so they close"
                ),
            ));
        }
        Ok(())
    }

    /// Joins `room` if it exists; `None` when it must be created first.
    fn join_existing(&self, id: EndpointId, room_name: &str) -> Result<Option<ChatReply>, Refusal> {
        let mut guard = self.lock();
        let st = &mut *guard;
        let Some(ep) = st.endpoints.get_mut(&id) else {
            return Err(gone());
        };
        let Some(room) = st.rooms.get_mut(room_name) else {
            return Ok(None);
        };
        let joined = ChatReply::Joined {
            room: room_name.to_owned(),
            seq: room.seq,
        };
        if ep.rooms.iter().any(|r| r == room_name) {
            return Ok(Some(joined));
        }
        if ep.rooms.len() >= self.config.max_rooms_per_endpoint {
            return Err(refuse(
                ErrorCode::Busy,
                format!(
                    "a session may be in at most {} rooms; leave one first",
                    self.config.max_rooms_per_endpoint
                ),
            ));
        }
        ep.rooms.push(room_name.to_owned());
        let (user_id, user) = (ep.user_id, Arc::clone(&ep.user));
        room.members.push(id);
        let elsewhere = room.remote.contains_key(&user);
        let count = room.users.entry(Arc::clone(&user)).or_insert(0);
        *count += 1;
        let first = *count == 1;
        if first {
            self.mark(st, Some(room_name), &user, user_id, PresenceChange::Joined);
        }
        let Some(room) = st.rooms.get(room_name) else {
            return Ok(None);
        };
        let mut slow = Vec::new();
        if first && !elsewhere {
            let notice = ChatReply::Presence {
                room: room_name.to_owned(),
                user: user.to_string(),
                change: PresenceChange::Joined,
            };
            let mut out = Outgoing::new(&notice)?;
            self.deliver(&st.endpoints, &room.members, Some(id), &mut out, &mut slow);
        }
        let kills = self.drop_slow(st, slow);
        drop(guard);
        kill(kills);
        Ok(Some(joined))
    }

    /// `leave`.
    pub(crate) fn leave(&self, id: EndpointId, room: &str) -> Reply {
        check_room(room)?;
        let kills = {
            let mut guard = self.lock();
            let st = &mut *guard;
            let Some(ep) = st.endpoints.get_mut(&id) else {
                return Err(gone());
            };
            let Some(pos) = ep.rooms.iter().position(|r| r == room) else {
                return Err(refuse(
                    ErrorCode::NotFound,
                    format!("you are not in room {room}"),
                ));
            };
            ep.rooms.swap_remove(pos);
            let who = (ep.user_id, Arc::clone(&ep.user));
            let mut slow = Vec::new();
            self.leave_room(
                st,
                id,
                (who.0, &who.1),
                room,
                PresenceChange::Left,
                &mut slow,
            );
            self.drop_slow(st, slow)
        };
        kill(kills);
        Ok(ChatReply::Left {
            room: room.to_owned(),
        })
    }

    /// Takes a message of `bytes` from the user's flood allowance: one
    /// message and its bytes, both or neither.
    fn take_flood_token(&self, st: &mut State, user_id: i64, bytes: usize) -> Result<(), Refusal> {
        let (rate, byte_rate) = (self.config.flood, self.config.flood_bytes);
        let (messages, text) = st
            .floods
            .entry(user_id)
            .or_insert_with(|| (Bucket::full(rate), Bucket::full(byte_rate)));
        if !messages.has(1.0, rate) {
            return Err(refuse(
                ErrorCode::RateLimited,
                format!(
                    "too many messages: at most {} at once and {} per second; wait a moment",
                    rate.burst, rate.per_sec
                ),
            ));
        }
        if !text.take_n(bytes as f64, byte_rate) {
            return Err(refuse(
                ErrorCode::RateLimited,
                format!(
                    "too much text: at most {} at once and {} per second; wait a moment",
                    wharf_core::size::format_size(u64::from(byte_rate.burst)),
                    wharf_core::size::format_size(byte_rate.per_sec as u64)
                ),
            ));
        }
        messages.take(rate);
        Ok(())
    }

    /// Who may say something in `room_name` now: endpoint `id`'s user, when
    /// it is in the room and within its flood allowance (one taken).
    fn sayer(
        &self,
        st: &mut State,
        id: EndpointId,
        room_name: &str,
        bytes: usize,
    ) -> Result<(i64, Arc<str>), Refusal> {
        let Some(ep) = st.endpoints.get(&id) else {
            return Err(gone());
        };
        if !ep.rooms.iter().any(|r| r == room_name) {
            return Err(refuse(
                ErrorCode::NotFound,
                format!("you are not in room {room_name}; join it first"),
            ));
        }
        let who = (ep.user_id, Arc::clone(&ep.user));
        self.take_flood_token(st, who.0, bytes)?;
        Ok(who)
    }

    /// Queues a message for the database; `busy` when the database is not
    /// keeping up (nothing is delivered then).
    fn enqueue(&self, record: ChatRecord) -> Result<(), Refusal> {
        if self.journal.try_record(record) {
            Ok(())
        } else {
            Err(refuse(
                ErrorCode::Busy,
                "the server's history is not keeping up; try again in a moment",
            ))
        }
    }

    /// Delivers `message` to `targets` but its sender's endpoint `origin`;
    /// returns the sender's `said` and the members found slow.
    fn publish(
        &self,
        endpoints: &HashMap<EndpointId, Endpoint>,
        targets: &[EndpointId],
        origin: EndpointId,
        message: ChatMessage,
    ) -> Result<(ChatReply, Vec<EndpointId>), Refusal> {
        let said = said_for(&message);
        let event = ChatReply::Message(message);
        let mut out = Outgoing::new(&event)?;
        let mut slow = Vec::new();
        self.deliver(endpoints, targets, Some(origin), &mut out, &mut slow);
        Ok((said, slow))
    }

    /// `say`: everyone else in the room gets the message; the sayer gets
    /// `said`. On SQLite it never waits (see [`Hub::say_here`]).
    pub(crate) async fn say(&self, id: EndpointId, room_name: &str, text: &str) -> Reply {
        match &self.space {
            Space::Shared(shared) => self.say_shared(shared, id, room_name, text).await,
            Space::Local => self.say_here(id, room_name, text),
        }
    }

    /// `say` numbered here and written through the journal (SQLite: one
    /// chat server per database).
    pub(crate) fn say_here(&self, id: EndpointId, room_name: &str, text: &str) -> Reply {
        check_room(room_name)?;
        check_text(text)?;
        let (said, kills) = {
            let mut guard = self.lock();
            let st = &mut *guard;
            let (user_id, user) = self.sayer(st, id, room_name, text.len())?;
            let Some(room) = st.rooms.get_mut(room_name) else {
                return Err(refuse(ErrorCode::NotFound, format!("no room {room_name}")));
            };
            let (msg_id, seq, at) = (st.last_id + 1, room.seq + 1, now_ms());
            self.enqueue(ChatRecord {
                id: msg_id,
                sender_id: user_id,
                room: Some(room_name.to_owned()),
                seq: Some(seq),
                recipient_id: None,
                body: text.to_owned(),
                at,
            })?;
            room.seq = seq;
            st.last_id = msg_id;
            wharf_store::metrics::metrics().chat_room_messages.inc();
            let (said, slow) = self.publish(
                &st.endpoints,
                &room.members,
                id,
                ChatMessage {
                    id: msg_id,
                    room: Some(room_name.to_owned()),
                    to: None,
                    seq: Some(seq),
                    from: user.to_string(),
                    at,
                    text: text.to_owned(),
                    truncated: false,
                    replay: false,
                },
            )?;
            (said, self.drop_slow(st, slow))
        };
        kill(kills);
        Ok(said)
    }

    /// `dm`: every session of the recipient, and the sender's other
    /// sessions, get the message.
    pub(crate) async fn dm(&self, id: EndpointId, to: &str, text: &str) -> Reply {
        match &self.space {
            Space::Shared(shared) => self.dm_shared(shared, id, to, text).await,
            Space::Local => self.dm_here(id, to, text),
        }
    }

    /// `dm` numbered here and written through the journal.
    pub(crate) fn dm_here(&self, id: EndpointId, to: &str, text: &str) -> Reply {
        check_text(text)?;
        let (said, kills) = {
            let mut guard = self.lock();
            let st = &mut *guard;
            let Some(ep) = st.endpoints.get(&id) else {
                return Err(gone());
            };
            let (user_id, user) = (ep.user_id, Arc::clone(&ep.user));
            let recipients = st.by_user.get(to).cloned().unwrap_or_default();
            let Some(recipient_id) = recipients
                .first()
                .and_then(|r| st.endpoints.get(r))
                .map(|r| r.user_id)
            else {
                return Err(refuse(
                    ErrorCode::NotFound,
                    format!(
                        "no user named {to} is connected; direct messages reach users who are online"
                    ),
                ));
            };
            self.take_flood_token(st, user_id, text.len())?;
            let (msg_id, at) = (st.last_id + 1, now_ms());
            self.enqueue(ChatRecord {
                id: msg_id,
                sender_id: user_id,
                room: None,
                seq: None,
                recipient_id: Some(recipient_id),
                body: text.to_owned(),
                at,
            })?;
            st.last_id = msg_id;
            wharf_store::metrics::metrics().chat_direct_messages.inc();
            let mut targets = recipients;
            if *user != *to {
                targets.extend(st.by_user.get(&user).into_iter().flatten().copied());
            }
            let (said, slow) = self.publish(
                &st.endpoints,
                &targets,
                id,
                ChatMessage {
                    id: msg_id,
                    room: None,
                    to: Some(to.to_owned()),
                    seq: None,
                    from: user.to_string(),
                    at,
                    text: text.to_owned(),
                    truncated: false,
                    replay: false,
                },
            )?;
            (said, self.drop_slow(st, slow))
        };
        kill(kills);
        Ok(said)
    }

    /// `who`: the room's users (on every replica), sorted; at most
    /// `budget` bytes of names.
    pub(crate) async fn who(&self, room: &str, budget: usize) -> Reply {
        match &self.space {
            Space::Shared(shared) => self.who_shared(shared, room, budget).await,
            Space::Local => self.who_here(room, budget),
        }
    }

    /// `who` of the rooms of this server.
    pub(crate) fn who_here(&self, room: &str, budget: usize) -> Reply {
        check_room(room)?;
        let users: Vec<String> = self
            .lock()
            .rooms
            .get(room)
            .map(|r| r.users.keys().map(|u| u.to_string()).collect())
            .unwrap_or_default();
        Ok(members_reply(room, users, budget))
    }

    /// `rooms`: rooms with members (on every replica), sorted; at most
    /// `budget` bytes' worth.
    pub(crate) async fn rooms(&self, budget: usize) -> Reply {
        match &self.space {
            Space::Shared(shared) => self.rooms_shared(shared, budget).await,
            Space::Local => self.rooms_here(budget),
        }
    }

    /// `rooms` of this server.
    pub(crate) fn rooms_here(&self, budget: usize) -> Reply {
        let rooms: Vec<RoomInfo> = self
            .lock()
            .rooms
            .iter()
            .map(|(name, r)| RoomInfo {
                name: name.clone(),
                members: u32::try_from(r.users.len()).unwrap_or(u32::MAX),
            })
            .collect();
        Ok(room_list_reply(rooms, budget))
    }

    /// `history`: the room's last messages, oldest first.
    pub(crate) async fn history(
        &self,
        room: &str,
        limit: Option<u32>,
        most: u32,
    ) -> Result<Vec<ChatMessage>, Refusal> {
        check_room(room)?;
        let limit = limit
            .unwrap_or(self.config.history_default)
            .min(self.config.history_max)
            .min(most);
        self.journal.flush().await;
        let rows = self
            .store
            .room_history(room, limit)
            .await
            .map_err(|e| database_refusal(&e, &format!("read the history of room {room}")))?;
        Ok(rows
            .into_iter()
            .map(|r| room_message(room, r, true))
            .collect())
    }
}
