//! System messages after the first turn, as local model servers accept them.
//!
//! Clients (Claude Code, Codex) put `system`/`developer` messages mid-conversation. OpenAI
//! takes them anywhere, but many chat templates a local model server renders (Qwen, Llama,
//! Mistral) refuse a system message that is not first. For those targets each late one
//! becomes a user message wrapped in `<system-reminder>` — the form Claude Code itself uses
//! for reminders — joined to a neighbouring user message so turns still alternate.

use serde_json::{json, Value};

/// Rewrites an OpenAI chat body's `messages` in place; other fields are untouched.
pub fn fold_late_system_messages(body: &mut Value) {
    let Some(messages) = body.get_mut("messages").and_then(Value::as_array_mut) else {
        return;
    };
    let leading = messages.iter().take_while(|m| is_system(m)).count();
    if messages[leading..].iter().all(|m| !is_system(m)) {
        return;
    }
    let mut out: Vec<Value> = Vec::with_capacity(messages.len());
    for (i, message) in std::mem::take(messages).into_iter().enumerate() {
        let message = if i >= leading && is_system(&message) {
            let text = content_text(&message["content"]);
            json!({"role": "user", "content": format!("<system-reminder>\n{text}\n</system-reminder>")})
        } else {
            message
        };
        match out.last_mut() {
            Some(previous) if previous["role"] == "user" && message["role"] == "user" => {
                let joined = join_content(&previous["content"], &message["content"]);
                previous["content"] = joined;
            }
            _ => out.push(message),
        }
    }
    *messages = out;
}

fn is_system(message: &Value) -> bool {
    matches!(message["role"].as_str(), Some("system" | "developer"))
}

fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

fn as_parts(content: &Value) -> Vec<Value> {
    match content {
        Value::String(s) => vec![json!({"type": "text", "text": s})],
        Value::Array(parts) => parts.clone(),
        _ => Vec::new(),
    }
}

fn join_content(first: &Value, second: &Value) -> Value {
    if let (Value::String(a), Value::String(b)) = (first, second) {
        return json!(format!("{a}\n\n{b}"));
    }
    let mut parts = as_parts(first);
    parts.extend(as_parts(second));
    Value::Array(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_system_messages_join_the_neighbouring_user_turn() {
        let mut body = json!({"model": "m", "messages": [
            {"role": "system", "content": "A"},
            {"role": "developer", "content": "B"},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "yo"},
            {"role": "system", "content": [{"type": "text", "text": "R"}]},
            {"role": "user", "content": [{"type": "text", "text": "go"}]},
        ]});
        fold_late_system_messages(&mut body);
        let roles: Vec<&str> = body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["system", "developer", "user", "assistant", "user"]);
        assert_eq!(
            body["messages"][4]["content"],
            json!([{"type": "text", "text": "<system-reminder>\nR\n</system-reminder>"}, {"type": "text", "text": "go"}])
        );
    }

    #[test]
    fn a_last_system_message_after_the_assistant_stands_alone() {
        let mut body = json!({"messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "yo"},
            {"role": "system", "content": "R"},
        ]});
        fold_late_system_messages(&mut body);
        assert_eq!(
            body["messages"][2],
            json!({"role": "user", "content": "<system-reminder>\nR\n</system-reminder>"})
        );
        let mut plain = json!({"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "u"}]});
        let before = plain.clone();
        fold_late_system_messages(&mut plain);
        assert_eq!(plain, before);
    }
}
