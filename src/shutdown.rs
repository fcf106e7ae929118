//! The drain signal every long-lived task listens for.
//!
//! The topology holds the one [`Trigger`]; every listener, connection and the admin server
//! holds a [`Shutdown`] clone. Pulling the trigger is sticky: a task that starts listening
//! late still sees it.

use tokio::sync::watch;

/// Starts the drain when pulled (or dropped).
#[derive(Debug)]
pub struct Trigger(watch::Sender<bool>);

/// Tells a task that the drain has begun.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// A connected trigger and listener.
pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Shutdown(rx))
}

impl Trigger {
    pub fn pull(&self) {
        let _ = self.0.send(true);
    }
}

impl Shutdown {
    pub fn is_started(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once the drain has begun (at once if it already has, or if the trigger is
    /// gone).
    ///
    /// # Cancel safety
    /// Safe to use in `select!`: it consumes nothing.
    pub async fn started(&mut self) {
        let _ = self.0.wait_for(|s| *s).await;
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn late_listeners_see_the_trigger() {
        let (trigger, mut shutdown) = super::channel();
        assert!(!shutdown.is_started());
        trigger.pull();
        let mut late = shutdown.clone();
        late.started().await;
        shutdown.started().await;
        assert!(shutdown.is_started());
    }
}
