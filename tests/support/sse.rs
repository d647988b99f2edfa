//! Server-sent event streams as the tests read them.

use serde_json::Value;

/// The events of an SSE reply as (event name, JSON data); every event's data must be JSON.
pub fn sse_events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            let mut name = String::new();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    name = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim());
                }
            }
            let data = serde_json::from_str(&data).unwrap_or_else(|e| panic!("bad data ({e}): {block}"));
            (name, data)
        })
        .collect()
}

/// The events of a Responses API stream, checking each event's name matches its `type` and
/// that sequence numbers count up from 0.
pub fn responses_events(text: &str) -> Vec<(String, Value)> {
    let events = sse_events(text);
    for (n, (name, data)) in events.iter().enumerate() {
        assert_eq!(data["type"], name.as_str(), "{data}");
        assert_eq!(data["sequence_number"], n, "{data}");
    }
    events
}
