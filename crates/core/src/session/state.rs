//! The session state document (seed 000's "current session state"): a JSON object with a
//! version, changed whole or by an RFC 7396 merge patch, bounded in size.
//!
//! The document is kept twice: as a tree, which a patch is applied to, and as its compact
//! JSON text, which is what every `state`, `welcome` and forwarded `handoff_request` carries.
//! The text is made once per change (its length is what the size limit counts), so a change
//! sent to a thousand members is serialised once, and a joiner's `welcome` copies bytes
//! instead of walking a tree.
//!
//! Who may change it (the host, in the current term) is the session's rule, not this file's:
//! see `handoff.rs`.

use loudsync_protocol::{RawJson, StateChange, StateSnapshot};
use serde_json::{Map, Value};

/// A change would make the document larger than the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLarge {
    /// The size the document would have, as compact UTF-8 JSON.
    pub bytes: usize,
}

/// The document, its compact text, its version.
#[derive(Debug)]
pub struct SessionState {
    document: Map<String, Value>,
    text: RawJson,
    version: u64,
}

impl Default for SessionState {
    fn default() -> Self {
        SessionState::new()
    }
}

impl SessionState {
    /// `{}` at version 0, as every session starts.
    pub fn new() -> Self {
        SessionState {
            document: Map::new(),
            text: RawJson::from_text("{}").expect("valid JSON"),
            version: 0,
        }
    }

    /// +1 per accepted change.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The document as compact JSON.
    pub fn text(&self) -> &RawJson {
        &self.text
    }

    /// The document as a tree.
    pub fn document(&self) -> &Map<String, Value> {
        &self.document
    }

    /// What `welcome` carries: the text, the version, and the session's `term`.
    pub fn snapshot(&self, term: u64) -> StateSnapshot {
        StateSnapshot {
            state: self.text.clone(),
            version: self.version,
            term,
        }
    }

    /// Applies `change` if the result, as compact JSON, is at most `max_bytes`; the version
    /// rises by one. A refused change leaves everything as it was.
    pub fn apply(&mut self, change: StateChange, max_bytes: usize) -> Result<(), TooLarge> {
        let document = match change {
            StateChange::Replace(document) => document,
            StateChange::Patch(patch) => {
                let mut merged = Value::Object(self.document.clone());
                json_patch::merge(&mut merged, &Value::Object(patch));
                match merged {
                    Value::Object(map) => map,
                    _ => unreachable!("an object patch onto an object gives an object"),
                }
            }
        };
        let text = serde_json::to_string(&document).expect("a JSON object serialises");
        if text.len() > max_bytes {
            return Err(TooLarge { bytes: text.len() });
        }
        self.text = RawJson::from_text(&text).expect("serde_json wrote valid JSON");
        self.document = document;
        self.version += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn replace_and_patch_change_the_document_and_its_version() {
        let mut s = SessionState::new();
        assert_eq!((s.text().get(), s.version()), ("{}", 0));
        s.apply(
            StateChange::Replace(map(json!({"track": "a", "pos": 3, "q": {"x": 1, "y": 2}}))),
            1000,
        )
        .unwrap();
        assert_eq!(s.version(), 1);
        s.apply(
            StateChange::Patch(map(json!({"pos": null, "q": {"y": 5}, "new": [1]}))),
            1000,
        )
        .unwrap();
        assert_eq!(s.version(), 2);
        assert_eq!(
            Value::Object(s.document().clone()),
            json!({"track": "a", "q": {"x": 1, "y": 5}, "new": [1]})
        );
        assert_eq!(
            serde_json::from_str::<Value>(s.text().get()).unwrap(),
            Value::Object(s.document().clone())
        );
        assert!(!s.text().get().contains(' '), "compact: {}", s.text().get());
    }

    #[test]
    fn a_change_over_the_limit_changes_nothing() {
        let mut s = SessionState::new();
        s.apply(StateChange::Replace(map(json!({"a": 1}))), 100)
            .unwrap();
        // {"a":1,"b":"xxxxxxxxxx"} is 24 bytes.
        let big = StateChange::Patch(map(json!({"b": "xxxxxxxxxx"})));
        assert_eq!(s.apply(big.clone(), 23), Err(TooLarge { bytes: 24 }));
        assert_eq!((s.text().get(), s.version()), (r#"{"a":1}"#, 1));
        s.apply(big, 24).unwrap();
        assert_eq!(s.version(), 2);
    }

    #[test]
    fn the_snapshot_carries_text_version_and_term() {
        let mut s = SessionState::new();
        s.apply(StateChange::Replace(map(json!({"k": true}))), 100)
            .unwrap();
        let snap = s.snapshot(3);
        assert_eq!(
            (snap.state.get(), snap.version, snap.term),
            (r#"{"k":true}"#, 1, 3)
        );
    }
}
