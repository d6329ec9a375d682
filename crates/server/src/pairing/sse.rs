//! One `eventsource/` stream as a response body: the SSE events the hub queues on the
//! stream's outbox, written as they come, until the stream ends.
//!
//! The stream is registered with the server's open transports like a WebSocket, so the
//! landed shutdown reaches it: its close code 1001 (going away) becomes the SSE `shutdown`
//! event, then the end. Any other close (the relay's `aborted` or `closed`, already queued
//! before it) simply ends the body; an outbox overflow (a client that does not read) ends it
//! too. When the body is dropped (the client went away, or it ended) the hub forgets the
//! connection.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use loudsync_core::pairing::ConnId;
use loudsync_protocol::close_code;
use loudsync_protocol::pairing::sse;

use super::hub::PairingHub;
use crate::outbox::{OutFrame, Outbox};
use crate::state::ServerState;

/// The body of one `eventsource/` response.
pub struct SseBody {
    state: Arc<ServerState>,
    hub: Arc<PairingHub>,
    outbox: Arc<Outbox>,
    transport_id: u64,
    conn: ConnId,
    stream_id: u64,
    pending: VecDeque<OutFrame>,
    ended: bool,
}

impl SseBody {
    /// The body of stream `stream_id` (connection `conn` of the hub), reading `outbox`, which
    /// is open transport `transport_id`.
    pub fn new(
        state: Arc<ServerState>,
        hub: Arc<PairingHub>,
        (transport_id, outbox): (u64, Arc<Outbox>),
        conn: ConnId,
        stream_id: u64,
    ) -> Self {
        SseBody {
            state,
            hub,
            outbox,
            transport_id,
            conn,
            stream_id,
            pending: VecDeque::new(),
            ended: false,
        }
    }
}

impl Stream for SseBody {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        this.outbox.register(cx.waker());
        if this.pending.is_empty() {
            this.outbox.drain_into(&mut this.pending);
        }
        // Everything queued so far in one chunk: the events of a burst leave in one write.
        let mut chunk = Vec::new();
        while let Some(frame) = this.pending.pop_front() {
            match frame {
                OutFrame::Text(bytes) | OutFrame::Numbered(_, bytes) => {
                    chunk.extend_from_slice(&bytes)
                }
                OutFrame::Close(code, _) => {
                    if code == close_code::GOING_AWAY {
                        let data = sse::shutdown(this.stream_id);
                        chunk.extend_from_slice(sse::sse_event("shutdown", &data).as_bytes());
                    }
                    this.ended = true;
                    break;
                }
                OutFrame::Ping(_) => {}
            }
        }
        if !chunk.is_empty() {
            this.state.metrics.frames_sent.increment(1);
            return Poll::Ready(Some(Ok(Bytes::from(chunk))));
        }
        if this.ended || this.outbox.overflowed() {
            this.ended = true;
            return Poll::Ready(None);
        }
        Poll::Pending
    }
}

impl Drop for SseBody {
    fn drop(&mut self) {
        if self.outbox.overflowed() {
            self.state.metrics.slow_consumer_disconnects.increment(1);
        }
        self.hub.gone(self.conn);
        self.state.transports.close(self.transport_id);
    }
}
