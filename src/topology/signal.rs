//! Stop signals. SIGTERM (Kubernetes, `docker stop`) and SIGINT (Ctrl-C) both start a drain.

use tokio::signal::unix::{SignalKind, signal};

/// Waits for SIGTERM or SIGINT and says which arrived.
///
/// # Panics
/// If the signal handlers cannot be installed (only possible before the runtime has its
/// signal driver, which `main` always has).
pub async fn stop() -> &'static str {
    let mut term = signal(SignalKind::terminate()).expect("installing SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing SIGINT handler");
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
