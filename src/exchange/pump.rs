//! The one loop every client body is made by: read what the target sends, as it arrives,
//! turn each piece into what the client gets, send that piece by piece, and stop for good
//! once the answer has ended. The stream owns its source, so a client that goes away drops
//! it (for a worker's job that cancels the job and frees its slot).

use crate::translate::sse::{SseEvent, SseParser};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use std::collections::VecDeque;

/// Whether a step leaves the stream open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flow {
    More,
    /// What is queued is the last the client gets; the source is not read again.
    Ended,
}

/// The client's body made from `source`: `step` turns each item the source gives (its end
/// as `None`) into what the client gets, queued in `out`. What is queued (`first`, then
/// what each step adds) goes out before the source is read again; nothing is held across
/// the read but the queue, which keeps its room from one item to the next.
pub(super) fn pump<S, O, F>(source: S, first: VecDeque<O>, step: F) -> impl Stream<Item = O> + Send + 'static
where
    S: Stream + Unpin + Send + 'static,
    O: Send + 'static,
    F: FnMut(Option<S::Item>, &mut VecDeque<O>) -> Flow + Send + 'static,
{
    struct State<S, O, F> {
        source: S,
        pending: VecDeque<O>,
        step: F,
        ended: bool,
    }
    let state = State {
        source,
        pending: first,
        step,
        ended: false,
    };
    futures_util::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(item) = state.pending.pop_front() {
                return Some((item, state));
            }
            if state.ended {
                return None;
            }
            let item = state.source.next().await;
            let at_end = item.is_none();
            state.ended = (state.step)(item, &mut state.pending) == Flow::Ended || at_end;
        }
    })
}

/// What one upstream SSE stream becomes for the client, event by event.
pub(super) trait SseStep: Send + 'static {
    type Out: Send + 'static;
    /// One event as it arrived; `Flow::Ended` stops the stream (later events are dropped).
    fn event(&mut self, event: &SseEvent, out: &mut VecDeque<Self::Out>) -> Flow;
    /// The upstream ended: cleanly (`None`) or broken, and why.
    fn end(&mut self, broken: Option<String>, out: &mut VecDeque<Self::Out>);
}

/// An upstream SSE body through `step`, event by event as it arrives (split anywhere, never
/// buffered whole). An event the upstream left unterminated at its end is still read.
pub(super) fn sse_pump<E, T>(
    body: impl Stream<Item = Result<Bytes, E>> + Unpin + Send + 'static,
    mut step: T,
) -> impl Stream<Item = T::Out> + Send + 'static
where
    E: std::fmt::Display,
    T: SseStep,
{
    fn events<T: SseStep>(events: Vec<SseEvent>, step: &mut T, out: &mut VecDeque<T::Out>) -> Flow {
        for event in &events {
            if step.event(event, out) == Flow::Ended {
                return Flow::Ended;
            }
        }
        Flow::More
    }
    let mut parser = SseParser::new();
    pump(body, VecDeque::new(), move |item, out| match item {
        Some(Ok(chunk)) => events(parser.push(&chunk), &mut step, out),
        Some(Err(e)) => {
            step.end(Some(e.to_string()), out);
            Flow::Ended
        }
        None => {
            if events(parser.finish(), &mut step, out) == Flow::More {
                step.end(None, out);
            }
            Flow::Ended
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each event's data upper-cased; the end says how it ended.
    struct Shout;

    impl SseStep for Shout {
        type Out = String;
        fn event(&mut self, event: &SseEvent, out: &mut VecDeque<String>) -> Flow {
            if event.data == "stop" {
                out.push_back("stopped".into());
                return Flow::Ended;
            }
            out.push_back(event.data.to_uppercase());
            Flow::More
        }
        fn end(&mut self, broken: Option<String>, out: &mut VecDeque<String>) {
            out.push_back(broken.map_or("end".into(), |why| format!("broken: {why}")));
        }
    }

    fn body(
        chunks: Vec<Result<&'static str, &'static str>>,
    ) -> impl Stream<Item = Result<Bytes, &'static str>> + Unpin {
        futures_util::stream::iter(
            chunks
                .into_iter()
                .map(|c| c.map(|s: &'static str| Bytes::from_static(s.as_bytes()))),
        )
    }

    #[tokio::test]
    async fn events_split_anywhere_come_out_in_order_then_the_clean_end() {
        let out: Vec<_> = sse_pump(body(vec![Ok("data: a\n"), Ok("\ndata: b\n\nda"), Ok("ta: c")]), Shout)
            .collect()
            .await;
        assert_eq!(out, ["A", "B", "C", "end"]);
    }

    #[tokio::test]
    async fn a_broken_upstream_ends_the_stream_with_why_and_is_not_read_again() {
        let out: Vec<_> = sse_pump(body(vec![Ok("data: a\n\n"), Err("reset"), Ok("data: b\n\n")]), Shout)
            .collect()
            .await;
        assert_eq!(out, ["A", "broken: reset"]);
    }

    #[tokio::test]
    async fn an_event_that_ends_the_stream_drops_the_rest_and_skips_the_end() {
        let out: Vec<_> = sse_pump(
            body(vec![Ok("data: a\n\ndata: stop\n\ndata: b\n\n"), Ok("data: c\n\n")]),
            Shout,
        )
        .collect()
        .await;
        assert_eq!(out, ["A", "stopped"]);
    }

    #[tokio::test]
    async fn the_pump_sends_what_was_queued_first_and_stops_at_the_source_end() {
        let source = futures_util::stream::iter(vec![1, 2]);
        let out: Vec<i32> = pump(source, VecDeque::from([0]), |item, out| {
            out.push_back(item.map_or(-1, |n| n * 10));
            Flow::More
        })
        .collect()
        .await;
        assert_eq!(out, [0, 10, 20, -1]);
    }
}
