//! Checks shared by the coverage-guided fuzz targets (`fuzz/`, run with cargo-fuzz) and
//! the corpus replay test (`crates/server/tests/fuzz_corpus.rs`, run by `cargo test`).
//! Each takes arbitrary bytes, must never panic on them, and asserts what has to hold.
//! Not an API: hidden from the docs, free to change.

use amq_protocol::protocol::basic::{parse_properties, AMQPProperties};
use amq_protocol::types::{FieldTable, ShortString};
use serde_json::Value;
use warren_codec::nesting::{table_depth, MAX_NESTING};

use crate::definitions::{self, ExportMeta};
use crate::message::scan_properties;
use crate::storage::{table_from_hex, table_to_hex};
use crate::Broker;

/// `scan_properties`: Warren's property scanner accepts and rejects exactly what
/// amq-protocol's `parse_properties` does and reads the same delivery mode, priority,
/// expiration, headers, user-id and reply-to. The one intended difference: a headers
/// table nested deeper than [`MAX_NESTING`] is refused (amq-protocol would recurse into
/// it, so it is not asked).
pub fn scan_properties_agree(raw: &[u8]) {
    let ours = scan_properties(raw);
    if headers_too_deep(raw) {
        assert!(ours.is_none(), "a too deep headers table was accepted");
        return;
    }
    let theirs = if raw.is_empty() {
        Some(AMQPProperties::default())
    } else {
        parse_properties(raw).ok().map(|(_, p)| p)
    };
    assert_eq!(ours.is_some(), theirs.is_some(), "accept/reject of {raw:?}");
    let (Some(ours), Some(theirs)) = (ours, theirs) else {
        return;
    };
    let short = |s: &Option<ShortString>| s.as_ref().map(|s| s.as_str().to_string());
    assert_eq!(ours.props.delivery_mode, *theirs.delivery_mode());
    assert_eq!(ours.props.priority, *theirs.priority());
    assert_eq!(
        ours.props.expiration.as_deref().map(str::to_string),
        short(theirs.expiration())
    );
    // Debug text: NaN floats in headers compare equal there.
    assert_eq!(
        format!("{:?}", ours.props.headers.as_deref()),
        format!("{:?}", theirs.headers().as_ref())
    );
    assert_eq!(ours.user_id.map(str::to_string), short(theirs.user_id()));
    assert_eq!(ours.reply_to.map(str::to_string), short(theirs.reply_to()));
}

/// Whether the property list announces headers whose table nests deeper than
/// [`MAX_NESTING`] (content-type and content-encoding come before it).
fn headers_too_deep(raw: &[u8]) -> bool {
    let Some(flags) = raw.get(..2).map(|f| u16::from_be_bytes([f[0], f[1]])) else {
        return false;
    };
    if flags & (1 << 13) == 0 {
        return false;
    }
    let mut at = 2usize;
    for bit in [15, 14] {
        if flags & (1 << bit) != 0 {
            let Some(&len) = raw.get(at) else {
                return false;
            };
            at += 1 + usize::from(len);
        }
    }
    raw.get(at..)
        .is_some_and(|t| table_depth(t, MAX_NESTING) > MAX_NESTING)
}

/// `definitions`: a definitions document (arbitrary text, usually JSON) parsed and
/// imported into a fresh in-memory broker. Checks: `parse_access` and `parse_topology`
/// never panic and agree with `import` on malformed documents; when an import
/// succeeds, every declared queue, exchange and binding has arguments that survive the
/// on-disk encoding (what a restart reads back), and the broker's export imports into
/// another fresh broker and exports the same again.
pub fn definitions(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let access = definitions::parse_access(text);
    if let Ok(doc) = serde_json::from_str::<Value>(text) {
        let _ = definitions::parse_topology(&doc, Some("/"));
        let topology = definitions::parse_topology(&doc, None);
        if access.is_ok() && topology.is_err() {
            assert!(definitions::import(&Broker::new(), text).is_err());
        }
    }
    let broker = Broker::new();
    let imported = definitions::import(&broker, text);
    if access.is_err() {
        assert!(
            imported.is_err(),
            "import accepted what parse_access refused"
        );
    }
    if imported.is_err() {
        return;
    }
    for v in broker.vhosts() {
        for q in v.queues() {
            survives_storage(&q.arguments, "queue");
        }
        for x in v.exchanges() {
            survives_storage(&x.arguments, "exchange");
        }
        for b in v.bindings() {
            survives_storage(&b.arguments, "binding");
        }
    }
    let meta = ExportMeta::default();
    let exported = definitions::export(&broker, &meta);
    let again = Broker::new();
    if let Err(e) = definitions::import(&again, &exported.to_string()) {
        panic!("the export of an imported document does not import: {e}\n{exported}");
    }
    assert_eq!(
        definitions::export(&again, &meta),
        exported,
        "export, import, export changed the definitions"
    );
}

fn survives_storage(arguments: &FieldTable, what: &str) {
    let back = table_from_hex(&table_to_hex(arguments));
    assert_eq!(
        format!("{back:?}"),
        format!("{:?}", Some(arguments)),
        "{what} arguments do not survive the data directory"
    );
}
