//! What the services count, for Prometheus: one set of metrics per
//! process, labelled by service, encoded by `prometheus-client`. The store
//! and the authenticator count here; `wharf-server`'s `metrics` module
//! serves them on `--metrics-listen ADDR`.

use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A service's label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Svc {
    /// `ftp`, `std-ftp`, `chat`, `exec`.
    pub service: String,
}
/// A service and an outcome or reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SvcOutcome {
    /// The service.
    pub service: String,
    /// What happened.
    pub outcome: String,
}
/// A transfer's direction.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Dir {
    /// `up` or `down`.
    pub direction: String,
}
/// A transfer's direction and outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirOutcome {
    /// `up` or `down`.
    pub direction: String,
    /// `ok` or `failed`.
    pub outcome: String,
}
/// An outcome alone.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// What happened.
    pub outcome: String,
}
/// Every metric of the process.
pub struct Metrics {
    registry: Registry,
    /// Sessions open now.
    pub connections_open: Family<Svc, Gauge>,
    /// Connections turned away, by reason.
    pub connections_refused: Family<SvcOutcome, Counter>,
    /// Logins, by outcome (`ok`, `wrong_password`, `locked`, ...).
    pub logins: Family<SvcOutcome, Counter>,
    /// Time a password waited for an argon2 worker.
    pub argon2_wait: Histogram,
    /// File bytes moved.
    pub bytes: Family<Dir, Counter>,
    /// Transfers, by outcome.
    pub transfers: Family<DirOutcome, Counter>,
    /// Bytes stored over all users (read from the database when scraped).
    pub quota_used: Gauge,
    /// Bytes reserved by uploads over all users (likewise).
    pub quota_reserved: Gauge,
    /// Chat messages said, room or direct.
    pub chat_messages: Family<Outcome, Counter>,
    /// `chat_messages` of rooms, held for the hot path (no label lookup
    /// per message).
    pub chat_room_messages: Counter,
    /// `chat_messages` sent direct, likewise.
    pub chat_direct_messages: Counter,
    /// Chat messages handed to a member's queue.
    pub chat_deliveries: Counter,
    /// Chat members dropped for not reading.
    pub chat_dropped: Counter,
    /// Commands run, by outcome (`exit_0`, `exit_nonzero`, `signal`).
    pub commands: Family<Outcome, Counter>,
    /// How long commands ran.
    pub command_seconds: Histogram,
}
/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}
/// The label of `service`.
pub fn svc(service: &str) -> Svc {
    Svc {
        service: service.to_owned(),
    }
}
/// The labels of `service` and `outcome`.
pub fn svc_outcome(service: &str, outcome: &str) -> SvcOutcome {
    SvcOutcome {
        service: service.to_owned(),
        outcome: outcome.to_owned(),
    }
}
/// The label of `outcome`.
pub fn outcome(outcome: &str) -> Outcome {
    Outcome {
        outcome: outcome.to_owned(),
    }
}
impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("wharf");
        let m = Metrics {
            connections_open: Family::default(),
            connections_refused: Family::default(),
            logins: Family::default(),
            argon2_wait: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            bytes: Family::default(),
            transfers: Family::default(),
            quota_used: Gauge::default(),
            quota_reserved: Gauge::default(),
            chat_messages: Family::default(),
            chat_room_messages: Counter::default(),
            chat_direct_messages: Counter::default(),
            chat_deliveries: Counter::default(),
            chat_dropped: Counter::default(),
            commands: Family::default(),
            command_seconds: Histogram::new(exponential_buckets(0.001, 4.0, 12)),
            registry: Registry::default(),
        };
        registry.register(
            "connections_open",
            "Sessions open now",
            m.connections_open.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections turned away, by reason",
            m.connections_refused.clone(),
        );
        registry.register("logins", "Logins, by outcome", m.logins.clone());
        registry.register(
            "argon2_wait_seconds",
            "Time a password waited for an argon2 worker",
            m.argon2_wait.clone(),
        );
        registry.register("transfer_bytes", "File bytes moved", m.bytes.clone());
        registry.register(
            "transfers",
            "File transfers, by outcome",
            m.transfers.clone(),
        );
        registry.register(
            "quota_used_bytes",
            "Bytes stored over all users",
            m.quota_used.clone(),
        );
        registry.register(
            "quota_reserved_bytes",
            "Bytes reserved by uploads in progress over all users",
            m.quota_reserved.clone(),
        );
        registry.register(
            "chat_messages",
            "Chat messages said",
            m.chat_messages.clone(),
        );
        registry.register(
            "chat_deliveries",
            "Chat messages handed to a member",
            m.chat_deliveries.clone(),
        );
        registry.register(
            "chat_members_dropped",
            "Chat members dropped for not reading their messages",
            m.chat_dropped.clone(),
        );
        registry.register("commands", "Commands run, by outcome", m.commands.clone());
        registry.register(
            "command_seconds",
            "How long commands ran",
            m.command_seconds.clone(),
        );
        // The usual series exist from the start, at 0, so that a rate or an
        // alert has something to read before the first event.
        for service in ["ftp", "chat", "exec"] {
            for outcome in ["ok", "wrong_password"] {
                let _ = m.logins.get_or_create(&svc_outcome(service, outcome));
            }
        }
        for direction in ["up", "down"] {
            let _ = m.bytes.get_or_create(&Dir {
                direction: direction.to_owned(),
            });
            for result in ["ok", "failed"] {
                let _ = m.transfers.get_or_create(&DirOutcome {
                    direction: direction.to_owned(),
                    outcome: result.to_owned(),
                });
            }
        }
        let chat_room_messages = m.chat_messages.get_or_create(&outcome("room")).clone();
        let chat_direct_messages = m.chat_messages.get_or_create(&outcome("direct")).clone();
        for result in ["exit_0", "exit_nonzero", "signal"] {
            let _ = m.commands.get_or_create(&outcome(result));
        }
        Metrics {
            registry,
            chat_room_messages,
            chat_direct_messages,
            ..m
        }
    }

    /// Everything, in Prometheus's text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "cannot encode the metrics");
        }
        out
    }
}
