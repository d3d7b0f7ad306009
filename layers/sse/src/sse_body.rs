//! The `text/event-stream` response body.
//!
//! Four promises, each one a client or an operator would notice:
//!
//! - **Backpressure.** Events are pulled only inside `poll_frame`, that is
//!   when hyper has room to write another frame. Nothing is buffered between
//!   frames, so with a bounded channel upstream a slow reader stalls the
//!   producer and memory stays bounded by the channel's capacity (plus one
//!   frame).
//! - **Coalescing.** Events that are ready together go out as one frame: after
//!   the first, the source is polled again while it has more ready, up to a
//!   byte budget. A frame never waits for an event that is not there yet, so
//!   the first token goes out as soon as it exists; what is saved is the
//!   per-frame work (the chunk header, every body layer's `poll_frame`, an
//!   allocation per event) when a burst arrives at once.
//! - **Keep-alive.** After `keep_alive` with no frame sent, a comment frame
//!   (`: keep-alive\n\n`) goes out, so proxies and load balancers with idle
//!   timeouts do not cut a stream while the model is thinking. The timer is not
//!   re-armed on every event (that would touch the timer wheel once per token);
//!   the time of the last frame is recorded, and when the timer fires early
//!   relative to it, it is pushed to `last frame + keep_alive`.
//! - **Clean end.** When the event stream ends, `data: [DONE]\n\n` is sent
//!   once (unless the stream opted out) and the body ends. The event source is
//!   dropped at that point, not when the connection is closed.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_core::Stream;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{sleep_until, Instant, Sleep};

use crate::{EventStream, Framing, SseEvent};

const DONE_FRAME: &[u8] = b"data: [DONE]\n\n";

/// The default interval of silence after which a keep-alive comment is sent.
pub(crate) const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(15);
/// The default keep-alive comment text.
pub(crate) const DEFAULT_KEEP_ALIVE_TEXT: &str = "keep-alive";
/// The default budget of one frame that gathers ready events: a few dozen
/// chunks, well under the 64 KiB a socket takes in one write, and small
/// enough that one frame of a long burst is not held up for long.
pub(crate) const DEFAULT_COALESCE_BYTES: usize = 16 * 1024;

/// What each body is built with: shared by the layer, the service and the
/// response future.
#[derive(Clone, Debug)]
pub(crate) struct BodySettings {
    pub(crate) keep_alive: KeepAlive,
    /// Bytes after which a frame stops gathering ready events; 0 sends one
    /// event per frame.
    pub(crate) coalesce: usize,
}

impl Default for BodySettings {
    fn default() -> Self {
        Self {
            keep_alive: KeepAlive::default(),
            coalesce: DEFAULT_COALESCE_BYTES,
        }
    }
}

/// Keep-alive settings, shared by the layer and each body it builds.
#[derive(Clone, Debug)]
pub(crate) struct KeepAlive {
    interval: Duration,
    /// The encoded comment frame, built once; each send is a refcount bump.
    frame: Bytes,
}

impl KeepAlive {
    pub(crate) fn set_interval(&mut self, interval: Duration) {
        self.interval = interval;
    }

    pub(crate) fn set_text(&mut self, text: &'static str) {
        self.frame = SseEvent::comment(text).to_bytes();
    }
}

impl Default for KeepAlive {
    fn default() -> Self {
        Self {
            interval: DEFAULT_KEEP_ALIVE,
            frame: SseEvent::comment(DEFAULT_KEEP_ALIVE_TEXT).to_bytes(),
        }
    }
}

/// An [`http_body::Body`] that writes an [`EventStream`] as Server-Sent Events.
///
/// [`SseLayer`](crate::SseLayer) builds one for every `Payload::Events`
/// response; a gateway that does not use the layer can build one itself with
/// [`SseBody::new`]. It never fails (`Error = Infallible`), and is
/// `Send + Sync + Unpin`.
pub struct SseBody {
    /// `None` once the stream has ended and the closing frame was sent.
    events: Option<EventStream>,
    keep_alive: KeepAlive,
    /// Byte budget of a frame that gathers ready events (0: one per frame).
    coalesce: usize,
    /// When the last frame was handed out; `None` until the first poll, so
    /// the silence is counted from when the client starts reading.
    last_frame: Option<Instant>,
    /// Created on the first `Pending`, so building a body needs no runtime.
    timer: Option<Pin<Box<Sleep>>>,
}

// === impl SseBody ===

impl SseBody {
    /// A body for `events`, with a `: keep-alive` comment after 15 s of
    /// silence and up to 16 KiB of ready events per frame.
    pub fn new(events: EventStream) -> Self {
        Self::with_settings(events, BodySettings::default())
    }

    pub(crate) fn with_settings(events: EventStream, settings: BodySettings) -> Self {
        Self {
            events: Some(events),
            keep_alive: settings.keep_alive,
            coalesce: settings.coalesce,
            last_frame: None,
            timer: None,
        }
    }

    /// Gathers events that are ready together into one frame of up to
    /// `max_bytes` (a frame passes it by at most its last event). `0` sends
    /// each event in a frame of its own. A frame never waits for an event.
    #[must_use]
    pub fn coalesce(mut self, max_bytes: usize) -> Self {
        self.coalesce = max_bytes;
        self
    }

    /// Sends a keep-alive comment after `interval` without any frame.
    /// `Duration::ZERO` turns keep-alives off.
    #[must_use]
    pub fn keep_alive(mut self, interval: Duration) -> Self {
        self.keep_alive.set_interval(interval);
        self
    }

    /// The text of the keep-alive comment (default `"keep-alive"`).
    #[must_use]
    pub fn keep_alive_text(mut self, text: &'static str) -> Self {
        self.keep_alive.set_text(text);
        self
    }

    fn sent(&mut self, frame: Bytes) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if !self.keep_alive.interval.is_zero() {
            self.last_frame = Some(Instant::now());
        }
        Poll::Ready(Some(Ok(Frame::data(frame))))
    }

    /// Ready with a keep-alive frame once `keep_alive` has passed since the
    /// last frame; registers for a wake-up otherwise.
    fn poll_keep_alive(&mut self, cx: &mut Context<'_>) -> Poll<Bytes> {
        let interval = self.keep_alive.interval;
        // Every NDJSON line must parse as JSON: there is no comment to keep
        // a quiet stream alive with.
        let ndjson = self
            .events
            .as_ref()
            .is_some_and(|e| e.framing() == Framing::Ndjson);
        if interval.is_zero() || ndjson {
            return Poll::Pending;
        }
        let last = *self.last_frame.get_or_insert_with(Instant::now);
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(sleep_until(last + interval)));
        loop {
            ready!(timer.as_mut().poll(cx));
            let due = last + interval;
            if Instant::now() >= due {
                return Poll::Ready(self.keep_alive.frame.clone());
            }
            // Frames went out since the timer was set: wait out the rest.
            timer.as_mut().reset(due);
        }
    }

    /// The source is spent: `frame` (what was gathered before the end) and
    /// the `[DONE]` marker go out together, and the source (with its
    /// channel) is released now, not when the connection closes.
    fn end(&mut self, mut frame: BytesMut) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let done_marker = self
            .events
            .as_ref()
            .is_some_and(EventStream::has_done_marker);
        self.events = None;
        self.timer = None;
        let frame = match (frame.is_empty(), done_marker) {
            (true, false) => return Poll::Ready(None),
            (true, true) => Bytes::from_static(DONE_FRAME),
            (false, marker) => {
                if marker {
                    frame.extend_from_slice(DONE_FRAME);
                }
                frame.freeze()
            }
        };
        Poll::Ready(Some(Ok(Frame::data(frame))))
    }
}

/// What one pull from the source gave.
enum Pulled {
    /// An event, now encoded at the end of the frame.
    Event,
    /// Nothing ready; the source will wake the task.
    Pending,
    /// The source has ended.
    End,
}

/// Polls `events` for its next event and encodes it onto `frame` in the
/// stream's framing (an NDJSON stream skips comments, which have no line).
fn pull_into(events: &mut EventStream, cx: &mut Context<'_>, frame: &mut BytesMut) -> Pulled {
    let framing = events.framing();
    loop {
        match Pin::new(&mut *events).poll_next(cx) {
            Poll::Ready(Some(event)) => {
                let encoded = match framing {
                    Framing::Sse => {
                        event.encode_into(frame);
                        true
                    }
                    Framing::Ndjson => event.encode_ndjson_into(frame),
                };
                if encoded {
                    return Pulled::Event;
                }
            }
            Poll::Ready(None) => return Pulled::End,
            Poll::Pending => return Pulled::Pending,
        }
    }
}

impl Body for SseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        let Some(events) = this.events.as_mut() else {
            return Poll::Ready(None);
        };
        let mut frame = BytesMut::new();
        match pull_into(events, cx, &mut frame) {
            Pulled::Event => {}
            Pulled::End => return this.end(frame),
            Pulled::Pending => {
                let frame = ready!(this.poll_keep_alive(cx));
                let timer_due = Instant::now() + this.keep_alive.interval;
                if let Some(timer) = this.timer.as_mut() {
                    timer.as_mut().reset(timer_due);
                }
                return this.sent(frame);
            }
        }
        // Gather what else is ready, without waiting for anything: a
        // `Pending` here sends what there is (the source has our waker).
        while frame.len() < this.coalesce {
            match pull_into(events, cx, &mut frame) {
                Pulled::Event => {}
                Pulled::Pending => break,
                Pulled::End => return this.end(frame),
            }
        }
        this.sent(frame.freeze())
    }

    fn is_end_stream(&self) -> bool {
        self.events.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        if self.events.is_none() {
            SizeHint::with_exact(0)
        } else {
            // A live stream's length is unknown; the `[DONE]` marker is the
            // only thing still owed for certain.
            let mut hint = SizeHint::new();
            if self
                .events
                .as_ref()
                .is_some_and(EventStream::has_done_marker)
            {
                hint.set_lower(DONE_FRAME.len() as u64);
            }
            hint
        }
    }
}

impl fmt::Debug for SseBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SseBody")
            .field("events", &self.events)
            .field("keep_alive", &self.keep_alive.interval)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use http_body_util::BodyExt;
    use tokio::sync::mpsc;

    use super::*;

    fn chunk(n: usize) -> SseEvent {
        SseEvent::json(&serde_json::json!({ "n": n })).unwrap()
    }

    fn iter(events: Vec<SseEvent>) -> EventStream {
        EventStream::new(IterStream(events.into_iter()))
    }

    /// `futures_util::stream::iter`, without the dev-dependency.
    struct IterStream(std::vec::IntoIter<SseEvent>);

    impl Stream for IterStream {
        type Item = SseEvent;
        fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<SseEvent>> {
            Poll::Ready(self.0.next())
        }
    }

    /// Polls the body once without waiting.
    fn poll_once(body: &mut SseBody) -> Poll<Option<Bytes>> {
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        Pin::new(body)
            .poll_frame(&mut cx)
            .map(|f| f.map(|f| f.unwrap().into_data().unwrap()))
    }

    async fn next(body: &mut SseBody) -> Option<Bytes> {
        body.frame().await.map(|f| f.unwrap().into_data().unwrap())
    }

    async fn collect(body: SseBody) -> String {
        let bytes = body.collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn events_then_done_marker_then_end() {
        let mut body = SseBody::new(iter(vec![chunk(1), chunk(2)])).coalesce(0);
        assert!(!body.is_end_stream());
        assert_eq!(next(&mut body).await.unwrap(), "data: {\"n\":1}\n\n");
        assert_eq!(next(&mut body).await.unwrap(), "data: {\"n\":2}\n\n");
        assert_eq!(next(&mut body).await.unwrap(), "data: [DONE]\n\n");
        assert!(body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(0));
        assert!(next(&mut body).await.is_none());
        // Still over when polled again: the marker is sent once.
        assert!(next(&mut body).await.is_none());
    }

    #[tokio::test]
    async fn ndjson_writes_one_line_per_event_without_marker_or_comments() {
        let events = iter(vec![
            chunk(1),
            SseEvent::comment("not json"),
            SseEvent::data("{\"a\":\n1}").with_event("ignored"),
        ]);
        let body = SseBody::new(events.done_marker(true).ndjson());
        assert_eq!(collect(body).await, "{\"n\":1}\n{\"a\": 1}\n");
    }

    #[tokio::test(start_paused = true)]
    async fn ndjson_sends_no_keep_alive_however_long_the_silence() {
        let (tx, rx) = mpsc::channel(1);
        let mut body = SseBody::new(EventStream::from_receiver(rx).ndjson())
            .keep_alive(Duration::from_secs(1));
        let waiting = tokio::spawn(async move { next(&mut body).await.map(|b| (b, body)) });
        tokio::time::sleep(Duration::from_secs(60)).await;
        tx.send(chunk(7)).await.unwrap();
        let (first, _body) = waiting.await.unwrap().unwrap();
        assert_eq!(first, "{\"n\":7}\n");
    }

    #[tokio::test]
    async fn done_marker_off_ends_right_after_the_last_event() {
        let events = iter(vec![SseEvent::data("{}").with_event("response.completed")]);
        let body = SseBody::new(events.done_marker(false));
        assert_eq!(
            collect(body).await,
            "event: response.completed\ndata: {}\n\n"
        );
    }

    #[tokio::test]
    async fn empty_stream_sends_only_the_marker() {
        assert_eq!(
            collect(SseBody::new(iter(vec![]))).await,
            "data: [DONE]\n\n"
        );
        let body = SseBody::new(iter(vec![]).done_marker(false));
        assert_eq!(collect(body).await, "");
    }

    #[tokio::test]
    async fn size_hint_while_streaming() {
        let body = SseBody::new(iter(vec![chunk(1)]));
        assert_eq!(body.size_hint().lower(), DONE_FRAME.len() as u64);
        assert_eq!(body.size_hint().upper(), None);
        let body = SseBody::new(iter(vec![chunk(1)]).done_marker(false));
        assert_eq!(body.size_hint().lower(), 0);
        assert_eq!(body.size_hint().upper(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn keep_alive_after_silence_and_reset_by_each_frame() {
        let (tx, rx) = mpsc::channel(4);
        let mut body = SseBody::new(EventStream::from_receiver(rx));
        let start = Instant::now();

        // Silence from the first poll: a comment exactly 15 s later.
        assert_eq!(next(&mut body).await.unwrap(), ": keep-alive\n\n");
        assert_eq!(start.elapsed(), Duration::from_secs(15));

        // An event 10 s into the next interval pushes the next comment to
        // 15 s after that event, not 15 s after the previous comment.
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(poll_once(&mut body).is_pending());
        tx.send(chunk(1)).await.unwrap();
        assert_eq!(next(&mut body).await.unwrap(), "data: {\"n\":1}\n\n");
        let sent = Instant::now();
        tokio::time::advance(Duration::from_secs(14)).await;
        assert!(poll_once(&mut body).is_pending(), "comment came early");
        assert_eq!(next(&mut body).await.unwrap(), ": keep-alive\n\n");
        assert_eq!(sent.elapsed(), Duration::from_secs(15));

        // The comment itself counts as a frame.
        let sent = Instant::now();
        assert_eq!(next(&mut body).await.unwrap(), ": keep-alive\n\n");
        assert_eq!(sent.elapsed(), Duration::from_secs(15));

        drop(tx);
        assert_eq!(next(&mut body).await.unwrap(), "data: [DONE]\n\n");
        assert!(next(&mut body).await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn keep_alive_interval_and_text_are_configurable() {
        let (_tx, rx) = mpsc::channel(1);
        let mut body = SseBody::new(EventStream::from_receiver(rx))
            .keep_alive(Duration::from_secs(2))
            .keep_alive_text("ping");
        let start = Instant::now();
        assert_eq!(next(&mut body).await.unwrap(), ": ping\n\n");
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn zero_interval_disables_keep_alive() {
        let (tx, rx) = mpsc::channel(1);
        let mut body = SseBody::new(EventStream::from_receiver(rx)).keep_alive(Duration::ZERO);
        assert!(poll_once(&mut body).is_pending());
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert!(poll_once(&mut body).is_pending());
        tx.send(chunk(7)).await.unwrap();
        assert_eq!(next(&mut body).await.unwrap(), "data: {\"n\":7}\n\n");
    }

    /// A producer of up to 1,000 events into `tx`, and how many the
    /// channel has taken so far.
    fn produce(tx: mpsc::Sender<SseEvent>) -> (Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
        let produced = Arc::new(AtomicUsize::new(0));
        let producer = tokio::spawn({
            let produced = produced.clone();
            async move {
                for n in 0..1000 {
                    if tx.send(chunk(n)).await.is_err() {
                        return;
                    }
                    produced.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        (produced, producer)
    }

    /// Waits for a producer whose body was dropped to stop.
    async fn stopped(producer: tokio::task::JoinHandle<()>) {
        tokio::time::timeout(Duration::from_secs(1), producer)
            .await
            .expect("producer kept running after the body was dropped")
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn slow_reader_stalls_producer() {
        let (tx, rx) = mpsc::channel(4);
        let (produced, producer) = produce(tx);
        let mut body = SseBody::new(EventStream::from_receiver(rx)).coalesce(0);

        // The reader does not poll: the producer fills the channel and stops.
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        let ahead = produced.load(Ordering::SeqCst);
        assert!(
            (4..=5).contains(&ahead),
            "producer ran {ahead} events ahead"
        );

        // Each frame read lets exactly one more event in.
        for n in 0..10 {
            assert_eq!(
                next(&mut body).await.unwrap(),
                format!("data: {{\"n\":{n}}}\n\n")
            );
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
            assert_eq!(produced.load(Ordering::SeqCst), ahead + n + 1);
        }

        // A client that goes away stops the producer.
        drop(body);
        stopped(producer).await;
        assert!(produced.load(Ordering::SeqCst) < 20);
    }

    #[tokio::test]
    async fn events_ready_together_go_out_as_one_frame_with_the_marker() {
        let mut body = SseBody::new(iter(vec![chunk(1), chunk(2), chunk(3)]));
        assert_eq!(
            next(&mut body).await.unwrap(),
            "data: {\"n\":1}\n\ndata: {\"n\":2}\n\ndata: {\"n\":3}\n\ndata: [DONE]\n\n"
        );
        assert!(body.is_end_stream());
        assert!(next(&mut body).await.is_none());

        // NDJSON gathers lines the same way, skipping comments.
        let events = iter(vec![chunk(1), SseEvent::comment("x"), chunk(2)]).ndjson();
        let mut body = SseBody::new(events);
        assert_eq!(next(&mut body).await.unwrap(), "{\"n\":1}\n{\"n\":2}\n");
        assert!(next(&mut body).await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_frame_never_waits_for_the_next_event() {
        let (tx, rx) = mpsc::channel(8);
        let mut body = SseBody::new(EventStream::from_receiver(rx));
        assert!(poll_once(&mut body).is_pending());

        // What is ready goes out in the same poll, together: a body that
        // held a frame back for more (even for a moment) would be
        // `Pending` here, where the clock cannot move.
        tx.send(chunk(1)).await.unwrap();
        tx.send(chunk(2)).await.unwrap();
        let Poll::Ready(Some(frame)) = poll_once(&mut body) else {
            panic!("ready events were held back");
        };
        assert_eq!(frame, "data: {\"n\":1}\n\ndata: {\"n\":2}\n\n");
        assert!(poll_once(&mut body).is_pending());
        tx.send(chunk(3)).await.unwrap();
        let Poll::Ready(Some(frame)) = poll_once(&mut body) else {
            panic!("a ready event was held back");
        };
        assert_eq!(frame, "data: {\"n\":3}\n\n");

        // The end, when it comes later, is a frame of its own.
        drop(tx);
        assert_eq!(next(&mut body).await.unwrap(), "data: [DONE]\n\n");
        assert!(next(&mut body).await.is_none());
    }

    #[tokio::test]
    async fn a_frame_stops_gathering_at_its_budget() {
        // Each event is 15 bytes on the wire ("data: {"n":N}\n\n").
        assert_eq!(chunk(0).to_bytes().len(), 15);
        let mut body = SseBody::new(iter((0..10).map(chunk).collect())).coalesce(40);
        let mut frames = Vec::new();
        while let Some(frame) = next(&mut body).await {
            frames.push(frame);
        }
        // A frame passes the budget by at most its last event.
        for frame in &frames[..frames.len() - 1] {
            assert_eq!(frame.len(), 45, "{frame:?}");
        }
        let all: Vec<u8> = frames.concat();
        let expected: String = (0..10)
            .map(|n| format!("data: {{\"n\":{n}}}\n\n"))
            .chain(["data: [DONE]\n\n".to_owned()])
            .collect();
        assert_eq!(String::from_utf8(all).unwrap(), expected);
        assert_eq!(frames.len(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_gathering_reader_still_stalls_the_producer() {
        let (tx, rx) = mpsc::channel(4);
        let (produced, producer) = produce(tx);
        let mut body = SseBody::new(EventStream::from_receiver(rx));
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        // A frame takes what the channel holds, no more: the producer stays
        // at most a channel's worth (and the one send in flight) ahead.
        let mut read = 0;
        for _ in 0..10 {
            let frame = next(&mut body).await.unwrap();
            let events = frame.windows(2).filter(|w| w == b"\n\n").count();
            assert!((1..=5).contains(&events), "{events} events in one frame");
            read += events;
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
            let ahead = produced.load(Ordering::SeqCst) - read;
            assert!(ahead <= 5, "producer ran {ahead} events ahead");
        }
        drop(body);
        stopped(producer).await;
        assert!(produced.load(Ordering::SeqCst) < 60);
    }

    #[test]
    fn body_is_send_sync_unpin_and_built_without_a_runtime() {
        fn assert_traits<T: Send + Sync + Unpin + 'static>(_: &T) {}
        // No tokio runtime here: building must not touch the timer.
        let body = SseBody::new(iter(vec![chunk(1)]));
        assert_traits(&body);
    }
}
