//! RabbitMQ: the topology, its names, publishing with confirms, and the
//! headers signal9 keeps on its messages.
//!
//! Every process declares the whole topology at start; declaring is
//! idempotent, so a second start changes nothing. Names carry a namespace
//! prefix (`SIGNAL9_NAMESPACE`), which is also how tests keep apart.
//!
//! - `{ns}.jobs` (direct) routes each kind to a quorum queue `{ns}.{kind}`,
//!   and `{kind}.interactive` to `{ns}.{kind}.interactive`, which workers
//!   serve first, so a request never waits behind a bulk backlog.
//! - Each retry tier is a fanout exchange and a queue `{ns}.retry.{delay}`
//!   whose messages expire after the delay and are dead-lettered back to
//!   `{ns}.jobs` with their original routing key.
//! - `{ns}.dead` (fanout) → `{ns}.dead-letter`, a classic queue so that
//!   operators can browse it without wearing out delivery counts.
//! - `{ns}.events` (topic) carries events for the downstream pipeline.

use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use std::time::Duration;

use crate::job::{routing_key, JobKind, Priority};
use signal9_alpaca::class::{Classify, ErrorClass};

/// Header: how many times the job has failed so far (our own count; the
/// broker's `x-death` is not reliable across versions).
pub const HEADER_ATTEMPT: &str = "x-signal9-attempt";
/// Header: `transient` or `permanent`.
pub const HEADER_ERROR_CLASS: &str = "x-signal9-error-class";
/// Header: the last error message.
pub const HEADER_LAST_ERROR: &str = "x-signal9-last-error";
/// Header: RFC 3339 time of the first failure.
pub const HEADER_FIRST_FAILURE: &str = "x-signal9-first-failure";
/// Header: RFC 3339 time of the last failure.
pub const HEADER_LAST_FAILURE: &str = "x-signal9-last-failure";
/// Header: how many times an operator replayed the job.
pub const HEADER_REPLAYS: &str = "x-signal9-replays";
/// Header: the routing key the job was published with.
pub const HEADER_ROUTING_KEY: &str = "x-signal9-routing-key";

/// Nodes a job queue is replicated on (where the cluster has that many).
pub const QUORUM_SIZE: i64 = 3;

/// Redeliveries a quorum queue allows before it dead-letters a message
/// that keeps killing workers (a poison message).
pub(crate) const DELIVERY_LIMIT: i64 = 10;

/// The default retry delays (`SIGNAL9_RETRY_TIERS`), as the tests check them.
#[cfg(test)]
const DEFAULT_RETRY_TIERS: [Duration; 4] = [
    Duration::from_secs(5),
    Duration::from_secs(30),
    Duration::from_secs(120),
    Duration::from_secs(600),
];

/// A broker failure: connection, channel or confirm. Always transient.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// A protocol or connection error from the client library.
    #[error("broker: {0}")]
    Amqp(#[from] lapin::Error),
    /// The broker refused a published message (nack).
    #[error("broker did not confirm a message to {exchange:?} with routing key {routing_key:?}")]
    NotConfirmed {
        /// The exchange.
        exchange: String,
        /// The routing key.
        routing_key: String,
    },
    /// No broker address answered in time.
    #[error("broker: {0} did not answer within 10 s")]
    Unreachable(String),
    /// A mandatory message that no queue takes: the broker returned it.
    #[error("no queue takes a message to {exchange:?} with routing key {routing_key:?} (the broker returned it)")]
    Unroutable {
        /// The exchange.
        exchange: String,
        /// The routing key.
        routing_key: String,
    },
}

impl Classify for BrokerError {
    fn class(&self) -> ErrorClass {
        ErrorClass::Transient
    }
}

/// Renders a delay as a queue-name label: `5s`, `2m`, `1h`.
pub(crate) fn delay_label(delay: Duration) -> String {
    let secs = delay.as_secs();
    if secs >= 3600 && secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else if secs >= 60 && secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else if delay.subsec_millis() == 0 {
        format!("{secs}s")
    } else {
        format!("{}ms", delay.as_millis())
    }
}

/// Parses `5s,30s,2m,10m` (units `ms`, `s`, `m`, `h`).
pub fn parse_tiers(text: &str) -> Result<Vec<Duration>, String> {
    let tiers: Result<Vec<Duration>, String> = text
        .split(',')
        .map(str::trim)
        .map(|part| {
            let split = part.find(|c: char| !c.is_ascii_digit()).unwrap_or(part.len());
            let (digits, unit) = part.split_at(split);
            let n: u64 = digits
                .parse()
                .map_err(|_| format!("{part:?} is not a number with a unit"))?;
            let delay = match unit {
                "ms" => Duration::from_millis(n),
                "s" => Duration::from_secs(n),
                "m" => Duration::from_secs(n * 60),
                "h" => Duration::from_secs(n * 3600),
                _ => return Err(format!("{part:?}: unit must be ms, s, m or h")),
            };
            if delay.is_zero() {
                return Err(format!("{part:?}: a delay must be positive"));
            }
            Ok(delay)
        })
        .collect();
    let tiers = tiers?;
    if tiers.is_empty() || tiers.len() > 10 {
        return Err("give 1 to 10 retry delays, e.g. 5s,30s,2m,10m".into());
    }
    Ok(tiers)
}

/// The names of one namespace's topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    namespace: String,
    retry_tiers: Vec<Duration>,
}

impl Topology {
    /// A topology under `namespace` with the given retry delays.
    pub fn new(namespace: impl Into<String>, retry_tiers: Vec<Duration>) -> Self {
        Topology {
            namespace: namespace.into(),
            retry_tiers,
        }
    }

    /// The namespace prefix.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The retry delays, in order.
    pub fn retry_tiers(&self) -> &[Duration] {
        &self.retry_tiers
    }

    /// `{ns}.jobs`.
    pub fn jobs_exchange(&self) -> String {
        format!("{}.jobs", self.namespace)
    }

    /// `{ns}.dead`.
    pub fn dead_exchange(&self) -> String {
        format!("{}.dead", self.namespace)
    }

    /// `{ns}.dead-letter`.
    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dead-letter", self.namespace)
    }

    /// `{ns}.events`.
    pub fn events_exchange(&self) -> String {
        format!("{}.events", self.namespace)
    }

    /// The queue of a kind at a priority: `{ns}.fetch-bars` or `{ns}.fetch-bars.interactive`.
    pub fn job_queue(&self, kind: JobKind, priority: Priority) -> String {
        format!("{}.{}", self.namespace, routing_key(kind, priority))
    }

    /// The exchange (and queue) of retry tier `index`: `{ns}.retry.30s`.
    pub fn retry_exchange(&self, index: usize) -> Option<String> {
        self.retry_tiers
            .get(index)
            .map(|d| format!("{}.retry.{}", self.namespace, delay_label(*d)))
    }

    /// Declares everything on one channel (an error closes it). Safe to
    /// call from every process at every start.
    pub async fn declare(&self, channel: &Channel) -> Result<(), BrokerError> {
        self.declare_replicated(channel, None).await?;
        self.declare_classic(channel).await
    }

    /// Declares everything on channels of its own, for a process's session
    /// on a cluster: the exchanges and the (quorum, replicated) job queues
    /// must be declared; the classic queues (retry tiers, dead letters)
    /// live on the node that first declared them, and while that node is
    /// down their declare fails: that is logged, and the session goes on
    /// serving jobs (a failure then waits for the node, its job unacked).
    pub async fn declare_on(&self, connection: &Connection) -> Result<(), BrokerError> {
        let channel = connection.create_channel().await?;
        self.declare_replicated(&channel, Some(connection)).await?;
        let _ = channel.close(200, "declared".into()).await;
        let classic = connection.create_channel().await?;
        match self.declare_classic(&classic).await {
            Ok(()) => {
                let _ = classic.close(200, "declared".into()).await;
            }
            Err(error) => tracing::warn!(
                %error,
                "The retry tiers or the dead-letter queue cannot be declared (is their node down?); jobs are served meanwhile"
            ),
        }
        Ok(())
    }

    /// The exchanges and the job queues with their bindings. With a
    /// `connection`, a job queue that already exists is left as it is (a
    /// queue declared by an older version, without
    /// `x-quorum-initial-group-size`, would refuse a declare with it as
    /// inequivalent): each is looked at first on a channel of its own.
    async fn declare_replicated(&self, channel: &Channel, connection: Option<&Connection>) -> Result<(), BrokerError> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        let durable_queue = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        for (name, kind) in [
            (self.jobs_exchange(), ExchangeKind::Direct),
            (self.dead_exchange(), ExchangeKind::Fanout),
            (self.events_exchange(), ExchangeKind::Topic),
        ] {
            channel
                .exchange_declare(name.as_str().into(), kind, durable, FieldTable::default())
                .await?;
        }
        for name in (0..self.retry_tiers.len()).filter_map(|i| self.retry_exchange(i)) {
            channel
                .exchange_declare(
                    name.as_str().into(),
                    ExchangeKind::Fanout,
                    durable,
                    FieldTable::default(),
                )
                .await?;
        }
        for kind in JobKind::ALL {
            for priority in Priority::ALL {
                let queue = self.job_queue(kind, priority);
                let exists = match connection {
                    Some(connection) => queue_exists(connection, &queue).await?,
                    None => false,
                };
                if !exists {
                    channel
                        .queue_declare(queue.as_str().into(), durable_queue, self.job_queue_args())
                        .await?;
                }
                self.bind(channel, &queue, &self.jobs_exchange(), &routing_key(kind, priority))
                    .await?;
            }
        }
        Ok(())
    }

    /// A job queue's arguments: quorum, replicated on three nodes where the
    /// cluster has them (on fewer, on all: a node's loss keeps every job
    /// available; only read when the queue is created), the delivery limit
    /// and the dead-letter exchange.
    fn job_queue_args(&self) -> FieldTable {
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
        args.insert(
            "x-quorum-initial-group-size".into(),
            AMQPValue::LongLongInt(QUORUM_SIZE),
        );
        args.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(DELIVERY_LIMIT));
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(self.dead_exchange().as_str().into()),
        );
        args
    }

    /// The dead-letter queue and the retry tiers' queues (classic queues).
    async fn declare_classic(&self, channel: &Channel) -> Result<(), BrokerError> {
        let durable_queue = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        channel
            .queue_declare(self.dead_letter_queue().into(), durable_queue, FieldTable::default())
            .await?;
        self.bind(channel, &self.dead_letter_queue(), &self.dead_exchange(), "")
            .await?;
        for index in 0..self.retry_tiers.len() {
            let (Some(name), Some(delay)) = (self.retry_exchange(index), self.retry_tiers.get(index)) else {
                continue;
            };
            let mut args = FieldTable::default();
            let ttl = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
            args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl));
            // No dead-letter routing key: an expired message keeps the key
            // it was published with, which is the job's original one.
            args.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString(self.jobs_exchange().as_str().into()),
            );
            channel.queue_declare(name.as_str().into(), durable_queue, args).await?;
            self.bind(channel, &name, &name, "").await?;
        }
        Ok(())
    }

    /// Deletes every queue and exchange of the namespace (tests clean up with it).
    pub async fn delete(&self, channel: &Channel) -> Result<(), BrokerError> {
        use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
        let mut queues = vec![self.dead_letter_queue()];
        for kind in JobKind::ALL {
            for priority in Priority::ALL {
                queues.push(self.job_queue(kind, priority));
            }
        }
        let tiers: Vec<String> = (0..self.retry_tiers.len())
            .filter_map(|i| self.retry_exchange(i))
            .collect();
        queues.extend(tiers.iter().cloned());
        for queue in queues {
            channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await?;
        }
        let mut exchanges = vec![self.jobs_exchange(), self.dead_exchange(), self.events_exchange()];
        exchanges.extend(tiers);
        for exchange in exchanges {
            channel
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await?;
        }
        Ok(())
    }

    async fn bind(&self, channel: &Channel, queue: &str, exchange: &str, key: &str) -> Result<(), BrokerError> {
        channel
            .queue_bind(
                queue.into(),
                exchange.into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(())
    }
}

/// Connects to RabbitMQ, naming the connection after the process.
/// A server-named queue of this connection alone (exclusive, deleted with
/// it), optionally bound to `bind` (exchange, routing key), and a consumer
/// on it that acks nothing (what it gets is for this process only: replies,
/// notifications). Returns the queue's name and the consumer.
pub async fn private_queue(
    channel: &Channel,
    bind: Option<(&str, &str)>,
) -> Result<(String, lapin::Consumer), BrokerError> {
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    if let Some((exchange, key)) = bind {
        channel
            .queue_bind(
                queue.name().clone(),
                exchange.into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    let consumer = channel
        .basic_consume(
            queue.name().clone(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok((queue.name().to_string(), consumer))
}

/// How long one broker address may take to accept a connection before
/// the next is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The AMQP heartbeat asked for, in seconds, unless an address sets its
/// own (`?heartbeat=N`): a broker node that dies without closing its
/// sockets is noticed within two of these.
pub const HEARTBEAT_SECS: u16 = 10;

/// The addresses of a `SIGNAL9_AMQP_URL` setting: one URL, or several
/// separated by commas (the nodes of one cluster, same credentials and
/// vhost), each with the heartbeat asked for unless it names one.
pub fn addresses(setting: &str) -> Vec<String> {
    setting
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|address| {
            if address.contains("heartbeat=") {
                address.to_owned()
            } else if address.contains('?') {
                format!("{address}&heartbeat={HEARTBEAT_SECS}")
            } else {
                format!("{address}?heartbeat={HEARTBEAT_SECS}")
            }
        })
        .collect()
}

/// `host:port` of an address, for logs: never its credentials.
pub fn address_label(address: &str) -> String {
    let rest = address.split_once("://").map_or(address, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap_or_default().to_owned()
}

/// True when `queue` exists (a passive declare, on a channel of its own:
/// the broker closes the channel of a passive declare that fails).
async fn queue_exists(connection: &Connection, queue: &str) -> Result<bool, BrokerError> {
    let probe = connection.create_channel().await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let exists = probe
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
        .is_ok();
    if exists {
        let _ = probe.close(200, "looked".into()).await;
    }
    Ok(exists)
}

/// Connects to the broker: the addresses of `setting`, each given
/// [`CONNECT_TIMEOUT`]; the first that answers wins. A process's first
/// connection tries them in the order given; every later one (a reconnect
/// after a lost connection, most likely to a node that is down) in a
/// random order, so the clients of a lost node spread over the others.
/// Every process connects through here, so a node's loss costs a
/// reconnect, not an outage.
pub async fn connect(setting: &str, name: &str) -> Result<Connection, BrokerError> {
    use rand::seq::SliceRandom as _;
    static CONNECTED_BEFORE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let mut addresses = addresses(setting);
    if CONNECTED_BEFORE.swap(true, std::sync::atomic::Ordering::Relaxed) {
        addresses.shuffle(&mut rand::rng());
    }
    let mut last = None;
    for address in &addresses {
        let properties = ConnectionProperties::default().with_connection_name(name.into());
        match tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(address, properties)).await {
            Ok(Ok(connection)) => {
                if addresses.len() > 1 {
                    tracing::info!(node = %address_label(address), "Connected to the broker");
                }
                return Ok(connection);
            }
            Ok(Err(error)) => {
                tracing::warn!(node = %address_label(address), %error, "A broker address did not answer");
                last = Some(BrokerError::Amqp(error));
            }
            Err(_) => {
                tracing::warn!(node = %address_label(address), "A broker address did not answer in time");
                last = Some(BrokerError::Unreachable(address_label(address)));
            }
        }
    }
    Err(last.unwrap_or_else(|| BrokerError::Unreachable("no address in SIGNAL9_AMQP_URL".into())))
}

/// A channel in confirm mode: every publish waits for the broker's ack.
#[derive(Debug, Clone)]
pub struct Publisher {
    channel: Channel,
}

impl Publisher {
    /// Opens a confirm-mode channel on `connection`.
    pub async fn open(connection: &Connection) -> Result<Self, BrokerError> {
        let channel = connection.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok(Publisher { channel })
    }

    /// The underlying channel (for declares and reads).
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Publishes one persistent message and waits until the broker confirms
    /// it. A message no queue is bound to take is dropped by the broker and
    /// still confirmed: right for events (nobody may be listening), wrong
    /// for a job or a reply; those use [`Publisher::publish_routed`].
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), BrokerError> {
        self.send(exchange, routing_key, body, properties, false).await
    }

    /// Publishes one persistent message with `mandatory` and waits until the
    /// broker confirms it: a message no queue takes comes back, and is
    /// [`BrokerError::Unroutable`], not a success.
    pub async fn publish_routed(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), BrokerError> {
        self.send(exchange, routing_key, body, properties, true).await
    }

    async fn send(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
        mandatory: bool,
    ) -> Result<(), BrokerError> {
        let properties = properties.with_delivery_mode(2);
        let confirm = self
            .channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions {
                    mandatory,
                    ..BasicPublishOptions::default()
                },
                body,
                properties,
            )
            .await?
            .await?;
        match confirm {
            lapin::Confirmation::Ack(None) => Ok(()),
            lapin::Confirmation::Ack(Some(_)) => Err(BrokerError::Unroutable {
                exchange: exchange.to_owned(),
                routing_key: routing_key.to_owned(),
            }),
            _ => Err(BrokerError::NotConfirmed {
                exchange: exchange.to_owned(),
                routing_key: routing_key.to_owned(),
            }),
        }
    }
}

/// Reads a header as a string (any string-like AMQP value).
pub fn header_str(headers: Option<&FieldTable>, name: &str) -> Option<String> {
    match headers?.inner().get(&ShortString::from(name))? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// Reads a header as an unsigned number (any integer AMQP value).
pub fn header_u32(headers: Option<&FieldTable>, name: &str) -> Option<u32> {
    let value = headers?.inner().get(&ShortString::from(name))?;
    let n: i64 = match value {
        AMQPValue::LongLongInt(n) => *n,
        AMQPValue::LongInt(n) => i64::from(*n),
        AMQPValue::LongUInt(n) => i64::from(*n),
        AMQPValue::ShortInt(n) => i64::from(*n),
        AMQPValue::ShortUInt(n) => i64::from(*n),
        AMQPValue::ShortShortInt(n) => i64::from(*n),
        AMQPValue::ShortShortUInt(n) => i64::from(*n),
        _ => return None,
    };
    u32::try_from(n).ok()
}

/// Renders any header value for people: strings as text, numbers as numbers.
pub fn header_display(value: &AMQPValue) -> String {
    match value {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.as_str().to_owned(),
        AMQPValue::LongLongInt(n) => n.to_string(),
        AMQPValue::LongInt(n) => n.to_string(),
        AMQPValue::LongUInt(n) => n.to_string(),
        AMQPValue::Boolean(b) => b.to_string(),
        other => format!("{other:?}"),
    }
}

/// Sets a string header.
pub fn set_str(headers: &mut FieldTable, name: &str, value: &str) {
    headers.insert(name.into(), AMQPValue::LongString(LongString::from(value)));
}

/// Sets a numeric header.
pub fn set_u32(headers: &mut FieldTable, name: &str, value: u32) {
    headers.insert(name.into(), AMQPValue::LongLongInt(i64::from(value)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_setting_names_one_or_several_nodes_each_with_a_heartbeat() {
        assert_eq!(
            addresses("amqp://u:p@h1:5672/%2f"),
            ["amqp://u:p@h1:5672/%2f?heartbeat=10"]
        );
        assert_eq!(
            addresses(" amqp://u:p@h1:5672/%2f , amqp://u:p@h2:5673/%2f?heartbeat=3,amqp://h3/v?x=1,"),
            [
                "amqp://u:p@h1:5672/%2f?heartbeat=10",
                "amqp://u:p@h2:5673/%2f?heartbeat=3",
                "amqp://h3/v?x=1&heartbeat=10"
            ]
        );
        assert_eq!(address_label("amqp://user:s3cret@h1:5672/%2f?heartbeat=10"), "h1:5672");
        assert_eq!(address_label("amqp://h3"), "h3");
        assert!(addresses(" , ").is_empty());
    }

    #[test]
    fn tiers_parse_and_label() {
        let tiers = parse_tiers("5s,30s,2m,10m").unwrap();
        assert_eq!(tiers, DEFAULT_RETRY_TIERS.to_vec());
        assert_eq!(
            tiers.iter().map(|d| delay_label(*d)).collect::<Vec<_>>(),
            ["5s", "30s", "2m", "10m"]
        );
        assert_eq!(delay_label(Duration::from_millis(1500)), "1500ms");
        for bad in ["", "5", "0s", "5x", "1s,,2s"] {
            assert!(parse_tiers(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_carry_the_namespace() {
        let t = Topology::new("t1", DEFAULT_RETRY_TIERS.to_vec());
        assert_eq!(t.job_queue(JobKind::FetchBars, Priority::Bulk), "t1.fetch-bars");
        assert_eq!(
            t.job_queue(JobKind::FetchBars, Priority::Interactive),
            "t1.fetch-bars.interactive"
        );
        assert_eq!(t.retry_exchange(1).as_deref(), Some("t1.retry.30s"));
        assert_eq!(t.retry_exchange(4), None);
        assert_eq!(t.dead_letter_queue(), "t1.dead-letter");
    }
}
