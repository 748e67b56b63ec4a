//! One connection to RabbitMQ with what an operation needs on it: a
//! publisher channel in confirm mode, the declared topology and, for
//! replies, an exclusive reply queue with its consumer. The producer's
//! publishing commands and `dlq`, the API's fetches and the console all
//! open it here; [`job_properties`] is how each of them publishes a job.

use anyhow::{Context, Result};

use lapin::types::FieldTable;
use lapin::BasicProperties;

use crate::broker::{self, set_str, Publisher, Topology, HEADER_ROUTING_KEY};
use crate::job::Job;
use crate::settings::BrokerSettings;

/// The reply queue of a session: its channel, name and consumer.
#[derive(Debug)]
pub struct Replies {
    // Kept open for the consumer.
    _channel: lapin::Channel,
    pub queue: String,
    pub consumer: lapin::Consumer,
}

/// One connection to the broker with a confirming publisher on it.
#[derive(Debug)]
pub struct Session {
    pub connection: lapin::Connection,
    pub publisher: Publisher,
    pub topology: Topology,
    /// With `--wait`: where the workers' replies arrive.
    pub replies: Option<Replies>,
}

impl Session {
    /// Connects as `client` (the name the broker shows), declares the
    /// topology, and opens a reply queue when `replies` is set.
    pub async fn open(settings: &BrokerSettings, client: &str, replies: bool) -> Result<Session> {
        let connection = broker::connect(&settings.amqp_url, client)
            .await
            .context("connecting to RabbitMQ")?;
        let publisher = Publisher::open(&connection).await?;
        let topology = settings.topology();
        topology
            .declare_on(&connection)
            .await
            .context("declaring the topology")?;
        let replies = if replies {
            Some(open_replies(&connection).await?)
        } else {
            None
        };
        Ok(Session {
            connection,
            publisher,
            topology,
            replies,
        })
    }

    /// True while the publisher's channel (and so its connection) is open.
    pub fn is_alive(&self) -> bool {
        self.publisher.channel().status().connected()
    }
}

async fn open_replies(connection: &lapin::Connection) -> Result<Replies> {
    let channel = connection.create_channel().await?;
    let (queue, consumer) = broker::private_queue(&channel, None).await?;
    Ok(Replies {
        queue,
        consumer,
        _channel: channel,
    })
}

/// The properties of a job message: persistent, its id as message id, its
/// routing key recorded for replays, its trace continued in the worker
/// (W3C traceparent header) and, with `reply_to`, where the worker replies.
pub fn job_properties(job: &Job, reply_to: Option<&str>, span: &tracing::Span) -> BasicProperties {
    let mut headers = FieldTable::default();
    set_str(&mut headers, HEADER_ROUTING_KEY, &job.routing_key());
    crate::telemetry::inject(span, &mut headers);
    let mut properties = BasicProperties::default()
        .with_message_id(job.id.as_str().into())
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_headers(headers);
    if let Some(queue) = reply_to {
        properties = properties
            .with_reply_to(queue.into())
            .with_correlation_id(job.id.as_str().into());
    }
    properties
}
