//! One connection to RabbitMQ with what the producer's commands need on
//! it: a publisher channel in confirm mode, the declared topology and, for
//! `--wait`, an exclusive reply queue with its consumer. `fetch-bars`,
//! `status-check`, `sync`, `schedule`, `backfill` and `dlq` all open it here.

use anyhow::{Context, Result};

use signal9_shared::broker::{self, Publisher, Topology};
use signal9_shared::settings::BrokerSettings;

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
