//! One shutdown signal for every long-running part (the worker's sessions,
//! the metrics server, the outbox relay, the scheduler), in the spirit of
//! mini-redis's `shutdown.rs`: a [`Trigger`] fires once; every [`Shutdown`]
//! cloned from it sees it, whether it was waiting at the time or asks later.
//!
//! A part loops with `tokio::select!` over its work and
//! [`Shutdown::recv`], or checks [`Shutdown::is_shutdown`] between steps.

use tokio::sync::watch;

/// Fires the shutdown. Dropping it fires it too, so a part never waits on
/// a signal that can no longer come.
#[derive(Debug)]
pub struct Trigger {
    tx: watch::Sender<bool>,
}

/// Listens for the shutdown. Cheap to clone; one per task.
#[derive(Debug, Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

/// A new trigger and its first listener.
pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger { tx }, Shutdown { rx })
}

impl Trigger {
    /// Fires the shutdown (again is harmless).
    pub(crate) fn fire(&self) {
        self.tx.send_replace(true);
    }

    /// Another listener.
    pub(crate) fn subscribe(&self) -> Shutdown {
        Shutdown {
            rx: self.tx.subscribe(),
        }
    }
}

impl Drop for Trigger {
    fn drop(&mut self) {
        self.fire();
    }
}

impl Shutdown {
    /// True once the shutdown has fired.
    pub fn is_shutdown(&self) -> bool {
        *self.rx.borrow()
    }

    /// Waits until the shutdown fires; at once if it already has.
    pub async fn recv(&mut self) {
        // An error means the trigger is gone, which fired it.
        let _ = self.rx.wait_for(|fired| *fired).await;
    }

    /// Sleeps for `duration`; false when the shutdown came first.
    pub async fn sleep(&mut self, duration: std::time::Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(duration) => true,
            () = self.recv() => false,
        }
    }
}

/// A trigger fired by SIGINT (Ctrl-C) or SIGTERM (a container stop), and
/// its first listener. The trigger must be kept alive as long as the
/// process should run.
pub fn on_signals() -> (Trigger, Shutdown) {
    let (trigger, shutdown) = channel();
    let mut listener = trigger.subscribe();
    let tx = trigger.tx.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = signal_received() => {
                tracing::info!("Shutdown requested");
                tx.send_replace(true);
            }
            () = listener.recv() => {}
        }
    });
    (trigger, shutdown)
}

#[cfg(unix)]
async fn signal_received() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn signal_received() {
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn every_listener_sees_the_shutdown_before_or_after_it_fires() {
        let (trigger, mut early) = channel();
        assert!(!early.is_shutdown());
        let waiting = tokio::spawn(async move {
            early.recv().await;
            early.is_shutdown()
        });
        trigger.fire();
        assert!(waiting.await.unwrap_or(false));
        let mut late = trigger.subscribe();
        assert!(late.is_shutdown());
        late.recv().await;
    }

    #[tokio::test]
    async fn a_dropped_trigger_fires_and_sleep_ends_early() {
        let (trigger, mut shutdown) = channel();
        let mut other = shutdown.clone();
        assert!(
            shutdown.sleep(Duration::from_millis(1)).await,
            "a sleep with no shutdown runs out"
        );
        drop(trigger);
        assert!(
            !other.sleep(Duration::from_secs(60)).await,
            "the shutdown cut the sleep short"
        );
        assert!(shutdown.is_shutdown());
    }
}
