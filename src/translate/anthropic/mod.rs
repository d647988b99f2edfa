//! OpenAI chat ⇄ Anthropic messages, both ways: requests, responses and SSE streams.
