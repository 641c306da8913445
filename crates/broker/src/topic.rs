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
