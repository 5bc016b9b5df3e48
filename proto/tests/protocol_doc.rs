//! The examples in PROTOCOL.md are real messages: every `C:` line of the
//! chat section decodes as a chat request and every `S:` line as a chat
//! reply (the elided `...` hex values aside).

use wharf_proto::chat::{ChatReply, ChatRequest};

fn chat_section() -> &'static str {
    let doc = include_str!("../PROTOCOL.md");
    let start = doc.find("## Chat (").unwrap_or(0);
    let end = doc[start..]
        .find("### UDP datagrams")
        .map_or(doc.len(), |e| start + e);
    &doc[start..end]
}

#[test]
fn chat_examples_decode() {
    let mut seen = 0;
    for line in chat_section().lines() {
        let (json, request) = match line.split_at_checked(3) {
            Some(("C: ", json)) => (json, true),
            Some(("S: ", json)) => (json, false),
            _ => continue,
        };
        if json.contains("...") {
            continue;
        }
        let ok = if request {
            serde_json::from_str::<ChatRequest>(json).is_ok()
        } else {
            serde_json::from_str::<ChatReply>(json).is_ok()
        };
        assert!(ok, "does not decode: {line}");
        seen += 1;
    }
    assert!(seen >= 15, "only {seen} examples found");
}
