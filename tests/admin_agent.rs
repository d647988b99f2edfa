//! The admin agent, driven by a scripted fake LLM: tool calls run against the real domain,
//! and no key the operator types ever reaches the model or the stored conversation.

use crate::support::fake_llm::{FakeLlm, Step, LLM_MODEL};
use crate::support::sse::sse_events;
use crate::support::{file_bytes, FakeUpstream, TestServer};
use serde_json::{json, Value};

const KEY: &str = "sk-proj-agent-first-key-0001";
const NEW_KEY: &str = "sk-proj-agent-rotated-key-0002";

struct Setup {
    server: TestServer,
    admin: String,
    llm: FakeLlm,
}

/// A server whose admin agent runs on the fake LLM (an openai-compatible provider).
async fn setup(script: Vec<Step>) -> Setup {
    let llm = FakeLlm::start(script).await;
    let (server, admin) = TestServer::with_admin().await;
    server
        .call(
            "POST",
            "/api/providers",
            Some(&admin),
            Some(json!({"name": "llm", "type": "openai-compatible", "base_url": llm.base_url()})),
        )
        .await
        .expect(201);
    let settings = server.call("GET", "/api/settings", Some(&admin), None).await;
    assert_eq!(settings.expect(200).json()["admin_agent"]["model"], "auto");
    server
        .put_settings(&admin, json!({"admin_agent": {"model": LLM_MODEL}}))
        .await;
    Setup { server, admin, llm }
}

fn named<'a>(events: &'a [(String, Value)], name: &str) -> Vec<&'a Value> {
    events.iter().filter(|(n, _)| n == name).map(|(_, d)| d).collect()
}

impl Setup {
    async fn say(&self, conversation: Option<&str>, message: &str) -> (String, Vec<(String, Value)>) {
        let mut body = json!({"message": message});
        if let Some(id) = conversation {
            body["conversation_id"] = json!(id);
        }
        let reply = self
            .server
            .call("POST", "/api/admin-agent/chat", Some(&self.admin), Some(body))
            .await;
        reply.expect(200);
        assert_eq!(reply.header("content-type"), Some("text/event-stream"));
        let events = sse_events(&reply.text);
        assert_eq!(
            events.first().map(|e| e.0.as_str()),
            Some("conversation"),
            "{}",
            reply.text
        );
        assert_eq!(events.last().map(|e| e.0.as_str()), Some("done"), "{}", reply.text);
        let id = events[0].1["id"].as_str().unwrap().to_string();
        (id, events)
    }

    async fn provider(&self, name: &str) -> Option<Value> {
        let list = self.server.call("GET", "/api/providers", Some(&self.admin), None).await;
        let list = list.expect(200).json();
        let rows = list
            .as_array()
            .cloned()
            .or_else(|| list["data"].as_array().cloned())
            .unwrap();
        rows.into_iter().find(|p| p["name"] == name)
    }

    fn assert_never_sent(&self, secret: &str) {
        let bodies = self.llm.bodies();
        assert!(!bodies.is_empty());
        for body in bodies {
            assert!(!body.contains(secret), "the model received a key: {body}");
        }
    }
}

#[tokio::test]
async fn adding_a_provider_by_chat_never_shows_the_key_to_the_model() {
    let second = FakeUpstream::openai("second", &[KEY], &["gpt-4o", "gpt-4o-mini"]).await;
    let s = setup(vec![
        Step::Tool(
            "add_provider",
            json!({"name": "second", "type": "openai", "api_key": "[[secret:1]]", "base_url": second.base_url()}),
        ),
        Step::Text("Added the provider."),
    ])
    .await;
    let (id, events) = s
        .say(
            None,
            &format!(
                "Add an OpenAI provider named second at {} with API key {KEY}",
                second.base_url()
            ),
        )
        .await;
    let calls = named(&events, "tool_call");
    assert_eq!(calls.len(), 1, "{events:?}");
    assert_eq!(calls[0]["name"], "add_provider");
    assert_eq!(calls[0]["arguments"]["api_key"], "[[secret:1]]");
    let results = named(&events, "tool_result");
    assert_eq!(results[0]["ok"], true, "{events:?}");
    assert_eq!(named(&events, "message")[0]["content"], "Added the provider.");

    let provider = s.provider("second").await.expect("provider added");
    assert_eq!(provider["model_count"], 2);
    assert_eq!(provider["type"], "openai");
    // The real key went to the provider (the server substituted it), and nowhere else.
    assert!(second
        .requests()
        .iter()
        .any(|r| r.header("authorization") == Some(&format!("Bearer {KEY}"))));
    s.assert_never_sent(KEY);
    let first: Value = serde_json::from_str(&s.llm.bodies()[0]).unwrap();
    assert!(first["messages"].to_string().contains("[[secret:1]]"), "{first}");
    assert!(first["tools"].as_array().unwrap().len() >= 15);

    let stored = s
        .server
        .call(
            "GET",
            &format!("/api/admin-agent/conversations/{id}"),
            Some(&s.admin),
            None,
        )
        .await;
    stored.expect(200);
    assert!(!stored.text.contains(KEY), "{}", stored.text);
    assert!(stored.text.contains("[[secret:1]]"), "{}", stored.text);
    assert_eq!(
        stored.json()["messages"].as_array().unwrap().len(),
        4,
        "{}",
        stored.text
    );
    let list = s
        .server
        .call("GET", "/api/admin-agent/conversations", Some(&s.admin), None)
        .await;
    assert_eq!(list.expect(200).json()["data"][0]["id"], id.as_str());
    let db = String::from_utf8_lossy(&file_bytes(&s.server.db_path())).to_string();
    assert!(!db.contains(KEY), "the key is in the db file unsealed");
}

#[tokio::test]
async fn listing_models_shows_them_to_the_operator_and_the_model() {
    let second = FakeUpstream::openai("second", &[KEY], &["gpt-4o"]).await;
    let s = setup(vec![
        Step::Tool("list_models", json!({})),
        Step::Text("You have gpt-4o."),
    ])
    .await;
    s.server.add_provider(&s.admin, "second", &second, KEY).await;
    let (_, events) = s.say(None, "List all available models").await;
    let result = named(&events, "tool_result")[0]["result"].as_str().unwrap().to_string();
    assert!(result.contains("gpt-4o") && result.contains(LLM_MODEL), "{result}");
    let last = s.llm.last_body();
    let tool_message = last["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(tool_message["role"], "tool");
    assert!(tool_message["content"].as_str().unwrap().contains("gpt-4o"));
    assert_eq!(named(&events, "message")[0]["content"], "You have gpt-4o.");

    // The agent's two model calls are usage rows of their own.
    let metered = crate::support::eventually(std::time::Duration::from_secs(10), || async {
        let usage = s
            .server
            .call("GET", "/api/usage?group_by=agent", Some(&s.admin), None)
            .await
            .json();
        usage["groups"]
            .as_array()
            .is_some_and(|groups| groups.iter().any(|g| g["key"] == "admin-agent" && g["requests"] == 2))
    })
    .await;
    let usage = s
        .server
        .call("GET", "/api/usage?group_by=agent", Some(&s.admin), None)
        .await
        .text;
    assert!(metered, "the admin agent's model calls were not recorded: {usage}");
}

#[tokio::test]
async fn rotating_a_key_by_chat() {
    let second = FakeUpstream::openai("second", &[KEY, NEW_KEY], &["gpt-4o"]).await;
    let s = setup(vec![
        Step::Tool(
            "update_provider_key",
            json!({"provider": "second", "api_key": "[[secret:1]]"}),
        ),
        Step::Text("Rotated."),
    ])
    .await;
    s.server.add_provider(&s.admin, "second", &second, KEY).await;
    let (_, events) = s
        .say(None, &format!("Update the second provider key to {NEW_KEY}"))
        .await;
    assert_eq!(named(&events, "tool_result")[0]["ok"], true, "{events:?}");
    let provider = s.provider("second").await.unwrap();
    assert!(NEW_KEY.ends_with(provider["key_hint"].as_str().unwrap().trim_start_matches('…')));
    assert!(second
        .requests()
        .iter()
        .any(|r| r.header("authorization") == Some(&format!("Bearer {NEW_KEY}"))));
    s.assert_never_sent(NEW_KEY);
}

#[tokio::test]
async fn a_failing_tool_is_reported_to_the_model_and_the_operator() {
    const REJECTED: &str = "sk-echo-this-key-is-rejected-9999";
    let second = FakeUpstream::openai("second", &[KEY], &["gpt-4o"]).await;
    let s = setup(vec![
        Step::Tool(
            "add_provider",
            json!({"name": "second", "type": "openai", "api_key": "[[secret:1]]", "base_url": second.base_url()}),
        ),
        Step::Text("The provider rejected that key."),
    ])
    .await;
    let (id, events) = s
        .say(None, &format!("Add openai provider second with key {REJECTED}"))
        .await;
    let result = named(&events, "tool_result")[0];
    assert_eq!(result["ok"], false);
    assert!(result["result"].as_str().unwrap().starts_with("error:"), "{result}");
    let last = s.llm.last_body();
    let tool_message = last["messages"].as_array().unwrap().last().unwrap().clone();
    assert!(
        tool_message["content"].as_str().unwrap().starts_with("error:"),
        "{tool_message}"
    );
    assert_eq!(
        named(&events, "message")[0]["content"],
        "The provider rejected that key."
    );
    assert!(s.provider("second").await.is_none());
    s.assert_never_sent(REJECTED);
    let stored = s
        .server
        .call(
            "GET",
            &format!("/api/admin-agent/conversations/{id}"),
            Some(&s.admin),
            None,
        )
        .await;
    assert!(!stored.text.contains(REJECTED), "{}", stored.text);
}

#[tokio::test]
async fn the_agent_stops_after_eight_tool_steps() {
    let s = setup(vec![Step::Tool("list_providers", json!({})); 9]).await;
    let (_, events) = s.say(None, "Keep listing providers").await;
    assert_eq!(named(&events, "tool_result").len(), 8, "{events:?}");
    assert_eq!(s.llm.bodies().len(), 9);
    let message = named(&events, "message");
    assert!(
        message.last().unwrap()["content"]
            .as_str()
            .unwrap()
            .contains("stopped after 8 tool steps"),
        "{events:?}"
    );
}

#[tokio::test]
async fn deleting_a_provider_needs_the_operators_yes() {
    let second = FakeUpstream::openai("second", &[KEY], &["gpt-4o"]).await;
    let s = setup(vec![
        Step::Tool("delete_provider", json!({"provider": "second"})),
        Step::Text("Please confirm: delete provider second?"),
    ])
    .await;
    s.server.add_provider(&s.admin, "second", &second, KEY).await;
    let (id, events) = s.say(None, "Delete the second provider").await;
    let result = named(&events, "tool_result")[0]["result"].as_str().unwrap().to_string();
    assert!(result.contains("confirmation required"), "{result}");
    assert!(s.provider("second").await.is_some(), "deleted without confirmation");

    // Anything but an explicit yes does not confirm.
    s.llm.push(vec![
        Step::Tool("delete_provider", json!({"provider": "second"})),
        Step::Text("Please confirm."),
    ]);
    s.say(Some(&id), "hmm, what would that do?").await;
    assert!(s.provider("second").await.is_some(), "deleted without a yes");

    s.llm.push(vec![
        Step::Tool("delete_provider", json!({"provider": "second"})),
        Step::Text("Deleted."),
    ]);
    let (same, events) = s.say(Some(&id), "yes").await;
    assert_eq!(same, id);
    let result = named(&events, "tool_result")[0]["result"].as_str().unwrap().to_string();
    assert!(result.contains("deleted"), "{result}");
    assert!(s.provider("second").await.is_none());
}

#[tokio::test]
async fn with_no_model_reachable_the_agent_says_where_to_add_one() {
    let (server, admin) = TestServer::with_admin().await;
    let reply = server
        .call(
            "POST",
            "/api/admin-agent/chat",
            Some(&admin),
            Some(json!({"message": "List providers"})),
        )
        .await;
    reply.expect(200);
    let events = sse_events(&reply.text);
    let errors = named(&events, "error");
    assert_eq!(errors.len(), 1, "{}", reply.text);
    assert!(
        errors[0]["message"].as_str().unwrap().contains("Settings → Providers"),
        "{}",
        reply.text
    );
    assert_eq!(events.last().unwrap().0, "done");
    // Admin only, like every /api/ endpoint.
    server
        .call("POST", "/api/admin-agent/chat", None, Some(json!({"message": "hi"})))
        .await
        .expect(401);
}
