//! Stop signals. SIGTERM (Kubernetes, `docker stop`) and SIGINT (Ctrl-C) both start a drain.
//!
//! The handlers are installed by [`Signals::install`], before anything is started: a SIGTERM
//! that arrives while listeners are still being bound must start a drain, not kill the
//! process with the default action.

use tokio::signal::unix::{Signal, SignalKind, signal};

/// Installed SIGTERM and SIGINT handlers.
#[derive(Debug)]
pub struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    /// Installs the handlers; from here on these signals are queued for [`Signals::recv`].
    ///
    /// # Errors
    /// Outside a runtime with its signal driver, or when the OS refuses.
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for the next SIGTERM or SIGINT and says which arrived.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}
