//! The examples in PROTOCOL.md are real messages: every `C:` line of the
//! chat and exec sections decodes as a request of that service and every
//! `S:` line as a reply (the elided `...` values aside).

use wharf_proto::chat::{ChatReply, ChatRequest};
use wharf_proto::exec::{ExecReply, ExecRequest};

/// The part of PROTOCOL.md from the heading starting `from` to the next
/// heading starting `to`.
fn section(from: &str, to: &str) -> &'static str {
    let doc = include_str!("../../PROTOCOL.md");
    let start = doc.find(from).unwrap_or(0);
    let end = doc[start + from.len()..]
        .find(to)
        .map_or(doc.len(), |e| start + from.len() + e);
    &doc[start..end]
}

/// Checks every `C:` and `S:` line of `text` (but elided `...` values)
/// with `request` and `reply`; returns how many there were.
fn check(text: &str, request: fn(&str) -> bool, reply: fn(&str) -> bool) -> usize {
    let mut seen = 0;
    for line in text.lines() {
        let (json, ok) = match line.split_at_checked(3) {
            Some(("C: ", json)) => (json, request(json)),
            Some(("S: ", json)) => (json, reply(json)),
            _ => continue,
        };
        if json.contains("...") {
            continue;
        }
        assert!(ok, "does not decode: {line}");
        seen += 1;
    }
    seen
}

#[test]
fn chat_examples_decode() {
    let seen = check(
        section("## Chat (", "### UDP datagrams"),
        |j| serde_json::from_str::<ChatRequest>(j).is_ok(),
        |j| serde_json::from_str::<ChatReply>(j).is_ok(),
    );
    assert!(seen >= 15, "only {seen} examples found");
}

#[test]
fn exec_examples_decode() {
    let seen = check(
        section("## Remote exec (", "\n## "),
        decode::<ExecRequest>,
        decode::<ExecReply>,
    );
    assert!(seen >= 18, "only {seen} examples found");
}

/// Decodes a header as the codec does: `body_len` belongs to the frame.
fn decode<M: serde::de::DeserializeOwned>(json: &str) -> bool {
    let Ok(mut value) = serde_json::from_str::<serde_json::Value>(json) else {
        return false;
    };
    if let Some(obj) = value.as_object_mut() {
        obj.remove("body_len");
    }
    serde_json::from_value::<M>(value).is_ok()
}
