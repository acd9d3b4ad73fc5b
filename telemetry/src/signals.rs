//! Stopping cleanly: SIGTERM (Kubernetes, `revrepl run`) and SIGINT (Ctrl-C) cancel a token;
//! the pipeline then stops without recording anything past durable work.

use tokio_util::sync::CancellationToken;

/// Cancels `cancel` on the first SIGTERM or SIGINT. Call from within a Tokio runtime.
pub fn cancel_on_signals(cancel: CancellationToken) {
    tokio::spawn(async move {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(error) => {
                    tracing::warn!("cannot listen for SIGTERM: {error}");
                    return;
                }
            };
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM: stopping"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping"),
        }
        cancel.cancel();
    });
}
