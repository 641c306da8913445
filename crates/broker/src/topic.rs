//! Topic-exchange matching, with RabbitMQ's rules: words are separated by `.`, `*`
//! matches exactly one word, `#` matches zero or more words, an empty key has zero
//! words, and empty words (`a..b`) are words like any other.

/// Splits a routing key or binding key into words. The empty string has no words.
pub fn split(key: &str) -> Vec<&str> {
    if key.is_empty() {
        Vec::new()
    } else {
        key.split('.').collect()
    }
}

/// Whether `pattern` (a split binding key) matches `key` (a split routing key).
///
/// Dynamic programming over (pattern word, key word), so patterns with many `#` cost
/// O(pattern × key), never exponential time.
pub fn matches<P: AsRef<str>>(pattern: &[P], key: &[&str]) -> bool {
    let k = key.len();
    // reach[j]: the pattern prefix processed so far can consume exactly key[..j].
    let mut reach = vec![false; k + 1];
    reach[0] = true;
    for word in pattern {
        let word = word.as_ref();
        let mut next = vec![false; k + 1];
        match word {
            "#" => {
                let mut any = false;
                for j in 0..=k {
                    any |= reach[j];
                    next[j] = any;
                }
            }
            "*" => {
                for j in 0..k {
                    if reach[j] {
                        next[j + 1] = true;
                    }
                }
            }
            w => {
                for j in 0..k {
                    if reach[j] && key[j] == w {
                        next[j + 1] = true;
                    }
                }
            }
        }
        if !next.iter().any(|b| *b) {
            return false;
        }
        reach = next;
    }
    reach[k]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, k: &str) -> bool {
        matches(&split(p), &split(k))
    }

    /// A naive recursive reference matcher.
    fn reference(p: &[&str], k: &[&str]) -> bool {
        match p.split_first() {
            None => k.is_empty(),
            Some((&"#", rest)) => (0..=k.len()).any(|i| reference(rest, &k[i..])),
            Some((&"*", rest)) => !k.is_empty() && reference(rest, &k[1..]),
            Some((w, rest)) => k.first() == Some(w) && reference(rest, &k[1..]),
        }
    }

    #[test]
    fn rabbitmq_edge_cases() {
        assert!(m("#", ""));
        assert!(m("#", "a"));
        assert!(m("#", "a.b.c"));
        assert!(m("#", "."));
        assert!(!m("*", ""));
        assert!(m("*", "a"));
        assert!(!m("*", "a.b"));
        assert!(m("", ""));
        assert!(!m("", "a"));
        assert!(m("a.#", "a"));
        assert!(m("a.#", "a.b.c"));
        assert!(!m("a.#", "b"));
        assert!(m("a.#.b", "a.b"));
        assert!(m("a.#.b", "a.x.y.b"));
        assert!(!m("a.#.b", "a.x.y"));
        assert!(m("#.a", "a"));
        assert!(m("a.*.c", "a.b.c"));
        assert!(!m("a.*.c", "a.c"));
        assert!(m("a..b", "a..b"));
        assert!(m("a.*.b", "a..b"));
        assert!(!m("a.b", "a..b"));
        assert!(m("*.*", "."));
        assert!(m("#.#", ""));
        assert!(m("#.*.#", "a"));
        assert!(!m("#.*.#", ""));
        assert!(m("*.#", "a"));
        assert!(m("stock.usd.nyse", "stock.usd.nyse"));
        assert!(!m("stock.usd.nyse", "stock.usd"));
    }

    #[test]
    fn agrees_with_reference_on_generated_cases() {
        let words = ["a", "b", "", "*", "#"];
        let keys = ["a", "b", ""];
        let mut patterns: Vec<Vec<&str>> = vec![vec![]];
        for _ in 0..4 {
            let mut next = vec![];
            for p in &patterns {
                for w in words {
                    let mut q = p.clone();
                    q.push(w);
                    next.push(q);
                }
            }
            patterns.extend(next.clone());
            patterns.dedup();
            if patterns.len() > 800 {
                break;
            }
        }
        let mut ks: Vec<Vec<&str>> = vec![vec![]];
        for _ in 0..3 {
            let mut next = vec![];
            for k in &ks {
                for w in keys {
                    let mut q = k.clone();
                    q.push(w);
                    next.push(q);
                }
            }
            ks.extend(next);
        }
        for p in &patterns {
            for k in &ks {
                assert_eq!(matches(p, k), reference(p, k), "{p:?} vs {k:?}");
            }
        }
    }
}

/// An index of topic binding keys by word, so routing a message costs a walk of the
/// words it can match rather than a test of every binding (RabbitMQ keeps a trie too).
#[derive(Debug, Default)]
pub struct Trie {
    root: Node,
}

#[derive(Debug, Default)]
struct Node {
    children: std::collections::HashMap<String, Node>,
    /// Binding keys that end at this node.
    keys: Vec<String>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.keys.is_empty()
    }
}

impl Trie {
    /// Adds a binding key.
    pub fn insert(&mut self, key: &str) {
        let mut node = &mut self.root;
        for w in split(key) {
            node = node.children.entry(w.to_string()).or_default();
        }
        if !node.keys.iter().any(|k| k == key) {
            node.keys.push(key.to_string());
        }
    }

    /// Removes a binding key.
    pub fn remove(&mut self, key: &str) {
        fn go(node: &mut Node, words: &[&str], key: &str) {
            match words.split_first() {
                None => node.keys.retain(|k| k != key),
                Some((w, rest)) => {
                    if let Some(child) = node.children.get_mut(*w) {
                        go(child, rest, key);
                        if child.is_empty() {
                            node.children.remove(*w);
                        }
                    }
                }
            }
        }
        go(&mut self.root, &split(key), key);
    }

    /// Calls `found` with every binding key matching `words` (a key may be reported more
    /// than once when several `#` placements match).
    pub fn matches<'a>(&'a self, words: &[&str], found: &mut impl FnMut(&'a str)) {
        fn go<'a>(node: &'a Node, words: &[&str], found: &mut impl FnMut(&'a str)) {
            if words.is_empty() {
                for k in &node.keys {
                    found(k);
                }
            }
            if let Some((w, rest)) = words.split_first() {
                if let Some(child) = node.children.get(*w) {
                    go(child, rest, found);
                }
                if let Some(child) = node.children.get("*") {
                    go(child, rest, found);
                }
            }
            if let Some(hash) = node.children.get("#") {
                // `#` takes zero or more words.
                for skip in 0..=words.len() {
                    go(hash, &words[skip..], found);
                }
            }
        }
        go(&self.root, words, found);
    }
}

#[cfg(test)]
mod trie_tests {
    use super::*;

    #[test]
    fn trie_agrees_with_the_matcher() {
        let patterns = [
            "#", "*", "", "a", "a.b", "a.*", "*.b", "a.#", "#.b", "a.#.b", "#.#", "*.#", "#.*",
            "a..b", "a.*.b", "*.*", "a.b.c", "#.a.#",
        ];
        let keys = [
            "", "a", "b", "a.b", "a.b.c", "a..b", "a.x.b", ".", "x.a.y", "a.a",
        ];
        let mut t = Trie::default();
        for p in patterns {
            t.insert(p);
        }
        for k in keys {
            let words = split(k);
            let mut got: Vec<&str> = Vec::new();
            t.matches(&words, &mut |p| got.push(p));
            got.sort();
            got.dedup();
            let mut want: Vec<&str> = patterns
                .iter()
                .copied()
                .filter(|p| matches(&split(p), &words))
                .collect();
            want.sort();
            assert_eq!(got, want, "key {k:?}");
        }
        for p in patterns {
            t.remove(p);
        }
        assert!(t.root.is_empty());
    }
}
