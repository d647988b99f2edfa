//! What every translated Responses stream shares, whatever it translates from: the
//! response's id and clock, numbered events, the finished output items, the opening
//! (`response.created`, `response.in_progress`) and the closing events.

use super::response_from_chat::response_object;
use super::{new_id, ResponseContext};
use bytes::Bytes;
use serde_json::{json, Value};

pub(super) struct ResponseEvents {
    pub(super) context: ResponseContext,
    id: String,
    created_at: i64,
    sequence: u64,
    started: bool,
    pub(super) finished: bool,
    /// Finished items by output index.
    pub(super) output: Vec<(usize, Value)>,
}

impl ResponseEvents {
    pub(super) fn new(context: ResponseContext) -> Self {
        ResponseEvents {
            context,
            id: new_id("resp"),
            created_at: crate::clock::now_unix(),
            sequence: 0,
            started: false,
            finished: false,
            output: Vec::new(),
        }
    }

    pub(super) fn event(&mut self, kind: &str, mut payload: Value) -> Bytes {
        payload["type"] = json!(kind);
        payload["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        Bytes::from(format!("event: {kind}\ndata: {payload}\n\n"))
    }

    /// The response object as it stands; `usage` only once it is no longer in progress.
    pub(super) fn snapshot(&self, status: &str, usage: Option<Value>) -> Value {
        let mut output = self.output.clone();
        output.sort_by_key(|(index, _)| *index);
        let output = output.into_iter().map(|(_, item)| item).collect();
        let usage = usage.filter(|_| status != "in_progress");
        response_object(&self.context, &self.id, self.created_at, status, output, usage)
    }

    /// `response.created` and `response.in_progress`, once, before anything else.
    pub(super) fn start(&mut self) -> Vec<Bytes> {
        if self.started {
            return Vec::new();
        }
        self.started = true;
        let response = self.snapshot("in_progress", None);
        vec![
            self.event("response.created", json!({"response": response.clone()})),
            self.event("response.in_progress", json!({"response": response})),
        ]
    }

    /// The closing event for `status` (`response.completed`, or `response.incomplete`).
    pub(super) fn complete(&mut self, status: &str, usage: Option<Value>) -> Bytes {
        self.finished = true;
        let kind = if status == "incomplete" {
            "response.incomplete"
        } else {
            "response.completed"
        };
        let response = self.snapshot(status, usage);
        self.event(kind, json!({"response": response}))
    }

    /// The stream broke: an `error` event, then `response.failed`. Idempotent.
    pub(super) fn fail(&mut self, message: &str, usage: Option<Value>) -> Vec<Bytes> {
        let mut out = self.start();
        if self.finished {
            return out;
        }
        self.finished = true;
        out.push(self.event(
            "error",
            json!({"code": "upstream_stream_error", "message": message, "param": null}),
        ));
        let mut response = self.snapshot("failed", usage);
        response["error"] = json!({"code": "server_error", "message": message});
        out.push(self.event("response.failed", json!({"response": response})));
        out
    }
}
