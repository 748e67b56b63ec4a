//! Operations: what the producer's operator commands and the API's console
//! both do, as a library. Neither prints here; each caller shows the result
//! its own way.
//!
//! - [`session`]: one RabbitMQ connection with a confirming publisher (and
//!   a reply queue), and the properties every job is published with;
//! - [`dead_letters`]: browse, find, replay and purge the dead-letter queue;
//! - [`status`]: a snapshot of the queues, the live workers and the budgets.

pub mod dead_letters;
mod session;
pub mod status;

pub use session::{job_properties, Replies, Session};
