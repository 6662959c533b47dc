//! `/v1/stream`: a WebSocket of time ticks and new checkpoints (JSON text
//! messages, spec/bridge/stream.schema.json).
//!
//! Slow consumers: every client reads from one bounded channel
//! (`bridge.stream_queue` messages). A client that falls that far behind,
//! or whose socket takes more than 10 s to accept one message, is closed
//! with code 1008 and the reason "too slow", never buffered without bound.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use tokio::sync::broadcast::error::RecvError;

use crate::Shared;
use crate::error::ServeError;

const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// RFC 6455 close codes.
const POLICY: u16 = 1008;
const GOING_AWAY: u16 = 1001;

pub(crate) async fn stream(State(shared): State<Arc<Shared>>, ws: WebSocketUpgrade) -> Response {
    if shared.metrics.stream_clients.get() >= shared.settings.stream.max_clients as i64 {
        return ServeError::Unavailable(format!(
            "{} streams are open, the most this bridge serves",
            shared.settings.stream.max_clients
        ))
        .into_response();
    }
    ws.on_upgrade(move |socket| run(socket, shared))
}

async fn close(mut socket: WebSocket, code: u16, reason: String) {
    let frame = CloseFrame { code, reason: reason.into() };
    let _ = tokio::time::timeout(Duration::from_secs(1), socket.send(Message::Close(Some(frame)))).await;
}

async fn run(mut socket: WebSocket, shared: Arc<Shared>) {
    shared.metrics.stream_clients.inc();
    let mut rx = shared.follow.stream.subscribe();
    let mut quit = shared.quit.clone();
    // The newest checkpoint first, so that a client need not wait for one.
    let first = shared.follow.latest().map(|s| crate::follow::checkpoint_message(&s));
    let mut pending: Option<String> = first;
    let outcome: Option<(u16, String)> = loop {
        let text = match pending.take() {
            Some(t) => t,
            None => tokio::select! {
                m = rx.recv() => match m {
                    Ok(t) => t.to_string(),
                    Err(RecvError::Lagged(n)) => {
                        shared.metrics.stream_closed_slow.inc();
                        break Some((POLICY, format!("too slow: fell {n} messages behind")));
                    }
                    Err(RecvError::Closed) => break Some((GOING_AWAY, "the bridge is stopping".into())),
                },
                incoming = socket.recv() => match incoming {
                    // Clients have nothing to say; pings are answered by the protocol layer.
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break None,
                    Some(Ok(_)) => continue,
                },
                _ = quit.changed() => break Some((GOING_AWAY, "the bridge is stopping".into())),
            },
        };
        match tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Text(text.into()))).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => break None,
            Err(_) => {
                shared.metrics.stream_closed_slow.inc();
                break Some((POLICY, format!("too slow: a message waited more than {} s", SEND_TIMEOUT.as_secs())));
            }
        }
    };
    if let Some((code, reason)) = outcome {
        tracing::debug!(code, reason, "closing a stream");
        close(socket, code, reason).await;
    }
    shared.metrics.stream_clients.dec();
}
