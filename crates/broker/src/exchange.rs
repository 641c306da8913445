//! Exchanges and their bindings. Routing is a pure function of the exchange's bindings,
//! the routing key and the headers; it runs under the vhost's read lock.

use std::collections::HashMap;

use amq_protocol::types::{AMQPValue, FieldTable};

use crate::{headers, topic};

/// The four AMQP exchange types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeKind {
    /// Exact routing-key match.
    Direct,
    /// Every bound destination.
    Fanout,
    /// Dotted-word patterns with `*` and `#`.
    Topic,
    /// Header tables, `x-match` all/any.
    Headers,
}

impl ExchangeKind {
    /// Parses a type name.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "direct" => Some(Self::Direct),
            "fanout" => Some(Self::Fanout),
            "topic" => Some(Self::Topic),
            "headers" => Some(Self::Headers),
            _ => None,
        }
    }

    /// The type name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Fanout => "fanout",
            Self::Topic => "topic",
            Self::Headers => "headers",
        }
    }
}

/// What `exchange.declare` asks for.
#[derive(Debug, Clone, Default)]
pub struct ExchangeOptions {
    /// Name.
    pub name: String,
    /// Type name as sent by the client.
    pub kind: String,
    /// Only check that it exists.
    pub passive: bool,
    /// Survives restarts.
    pub durable: bool,
    /// Deleted when its last binding goes.
    pub auto_delete: bool,
    /// Cannot be published to directly.
    pub internal: bool,
    /// Arguments.
    pub arguments: FieldTable,
}

/// Where a binding leads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Destination {
    /// A queue, by name.
    Queue(String),
    /// Another exchange (exchange-to-exchange binding), by name.
    Exchange(String),
}

impl Destination {
    /// The queue's or exchange's name.
    pub fn name(&self) -> &str {
        match self {
            Destination::Queue(n) | Destination::Exchange(n) => n,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Binding {
    destination: Destination,
    arguments: FieldTable,
}

#[derive(Debug, Default)]
struct KeyBindings {
    bindings: Vec<Binding>,
}

/// An exchange.
#[derive(Debug)]
pub struct Exchange {
    /// Name.
    pub name: String,
    /// Type.
    pub kind: ExchangeKind,
    /// Survives restarts.
    pub durable: bool,
    /// Deleted when its last binding goes.
    pub auto_delete: bool,
    /// Cannot be published to directly.
    pub internal: bool,
    /// Arguments.
    pub arguments: FieldTable,
    by_key: HashMap<String, KeyBindings>,
    /// Topic exchanges: the binding keys indexed by word.
    trie: topic::Trie,
    binding_count: usize,
}

impl Exchange {
    /// A new exchange without bindings.
    pub fn new(
        name: &str,
        kind: ExchangeKind,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: FieldTable,
    ) -> Self {
        Exchange {
            name: name.to_string(),
            kind,
            durable,
            auto_delete,
            internal,
            arguments,
            by_key: HashMap::new(),
            trie: topic::Trie::default(),
            binding_count: 0,
        }
    }

    /// The `alternate-exchange` argument, if set to a string.
    pub fn alternate_exchange(&self) -> Option<&str> {
        match self.arguments.inner().get("alternate-exchange") {
            Some(AMQPValue::LongString(s)) => std::str::from_utf8(s.as_bytes()).ok(),
            Some(AMQPValue::ShortString(s)) => Some(s.as_str()),
            _ => None,
        }
    }

    /// Number of bindings from this exchange.
    pub fn binding_count(&self) -> usize {
        self.binding_count
    }

    /// Adds a binding; binding twice is a no-op. Returns whether it was added.
    pub fn bind(&mut self, destination: Destination, key: &str, arguments: FieldTable) -> bool {
        if self.kind == ExchangeKind::Topic && !self.by_key.contains_key(key) {
            self.trie.insert(key);
        }
        let entry = self.by_key.entry(key.to_string()).or_default();
        let b = Binding {
            destination,
            arguments,
        };
        if entry.bindings.contains(&b) {
            return false;
        }
        entry.bindings.push(b);
        self.binding_count += 1;
        true
    }

    /// Removes a binding. Returns whether it existed.
    pub fn unbind(&mut self, destination: &Destination, key: &str, arguments: &FieldTable) -> bool {
        let Some(entry) = self.by_key.get_mut(key) else {
            return false;
        };
        let before = entry.bindings.len();
        entry
            .bindings
            .retain(|b| !(&b.destination == destination && &b.arguments == arguments));
        let removed = before - entry.bindings.len();
        if entry.bindings.is_empty() {
            self.by_key.remove(key);
            if self.kind == ExchangeKind::Topic {
                self.trie.remove(key);
            }
        }
        self.binding_count -= removed;
        removed > 0
    }

    /// Removes every binding to `destination`. Returns how many were removed.
    pub fn remove_destination(&mut self, destination: &Destination) -> usize {
        let mut removed = 0;
        let mut emptied = Vec::new();
        self.by_key.retain(|key, entry| {
            let before = entry.bindings.len();
            entry.bindings.retain(|b| &b.destination != destination);
            removed += before - entry.bindings.len();
            if entry.bindings.is_empty() {
                emptied.push(key.clone());
                false
            } else {
                true
            }
        });
        if self.kind == ExchangeKind::Topic {
            for key in emptied {
                self.trie.remove(&key);
            }
        }
        self.binding_count -= removed;
        removed
    }

    /// Every binding: (binding key, destination, arguments).
    pub fn bindings(&self) -> impl Iterator<Item = (&str, &Destination, &FieldTable)> {
        self.by_key.iter().flat_map(|(k, e)| {
            e.bindings
                .iter()
                .map(move |b| (k.as_str(), &b.destination, &b.arguments))
        })
    }

    /// Whether any binding leads to `destination`.
    pub fn has_destination(&self, destination: &Destination) -> bool {
        self.by_key
            .values()
            .any(|e| e.bindings.iter().any(|b| &b.destination == destination))
    }

    /// Appends the destinations matching a message to `out` (possibly with repeats).
    pub fn route<'a>(
        &'a self,
        routing_key: &str,
        key_words: &[&str],
        headers: Option<&FieldTable>,
        out: &mut Vec<&'a Destination>,
    ) {
        match self.kind {
            ExchangeKind::Direct => {
                if let Some(e) = self.by_key.get(routing_key) {
                    out.extend(e.bindings.iter().map(|b| &b.destination));
                }
            }
            ExchangeKind::Fanout => {
                for e in self.by_key.values() {
                    out.extend(e.bindings.iter().map(|b| &b.destination));
                }
            }
            ExchangeKind::Topic => {
                let start = out.len();
                let by_key = &self.by_key;
                self.trie.matches(key_words, &mut |k| {
                    if let Some(e) = by_key.get(k) {
                        out.extend(e.bindings.iter().map(|b| &b.destination));
                    }
                });
                // Several `#` placements can report the same key: drop exact repeats.
                if out.len() - start > 1 {
                    let mut seen: Vec<*const Destination> = Vec::new();
                    let mut i = start;
                    while i < out.len() {
                        let p: *const Destination = out[i];
                        if seen.contains(&p) {
                            out.swap_remove(i);
                        } else {
                            seen.push(p);
                            i += 1;
                        }
                    }
                }
            }
            ExchangeKind::Headers => {
                for e in self.by_key.values() {
                    for b in &e.bindings {
                        if headers::matches(&b.arguments, headers) {
                            out.push(&b.destination);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(n: &str) -> Destination {
        Destination::Queue(n.into())
    }

    #[test]
    fn bind_is_idempotent_and_unbind_counts() {
        let mut x = Exchange::new(
            "x",
            ExchangeKind::Direct,
            false,
            false,
            false,
            FieldTable::default(),
        );
        assert!(x.bind(q("a"), "k", FieldTable::default()));
        assert!(!x.bind(q("a"), "k", FieldTable::default()));
        assert!(x.bind(q("b"), "k", FieldTable::default()));
        assert_eq!(x.binding_count(), 2);
        assert!(x.unbind(&q("a"), "k", &FieldTable::default()));
        assert!(!x.unbind(&q("a"), "k", &FieldTable::default()));
        assert_eq!(x.remove_destination(&q("b")), 1);
        assert_eq!(x.binding_count(), 0);
    }

    #[test]
    fn topic_routes_by_pattern() {
        let mut x = Exchange::new(
            "t",
            ExchangeKind::Topic,
            false,
            false,
            false,
            FieldTable::default(),
        );
        x.bind(q("all"), "#", FieldTable::default());
        x.bind(q("a_any"), "a.*", FieldTable::default());
        x.bind(q("exact"), "a.b", FieldTable::default());
        let mut out = vec![];
        x.route("a.b", &["a", "b"], None, &mut out);
        let mut names: Vec<_> = out.iter().map(|d| format!("{d:?}")).collect();
        names.sort();
        assert_eq!(names.len(), 3);
        out.clear();
        x.route("b", &["b"], None, &mut out);
        assert_eq!(out, vec![&q("all")]);
    }
}
