//! Server-generated names (`amq.gen-…` queues, `amq.ctag-…` consumer tags).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// 22 URL-safe base64 characters from 128 unpredictable bits, like RabbitMQ's
/// `rabbit_guid:binary(gen_secure(), Prefix)`.
fn random_suffix() -> String {
    let mut out = String::with_capacity(22);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut words = [0u64; 2];
    for (i, w) in words.iter_mut().enumerate() {
        // RandomState is seeded from the OS once per process and per-thread keys; the
        // counter makes every call distinct.
        let mut h = RandomState::new().build_hasher();
        h.write_u64(n);
        h.write_usize(i);
        *w = h.finish();
    }
    let mut bits: u128 = (u128::from(words[0]) << 64) | u128::from(words[1]);
    for _ in 0..22 {
        out.push(ALPHABET[(bits & 63) as usize] as char);
        bits >>= 6;
    }
    out
}

/// A fresh server-named queue name.
pub fn queue_name() -> String {
    format!("amq.gen-{}", random_suffix())
}

/// A fresh consumer tag.
pub fn consumer_tag() -> String {
    format!("amq.ctag-{}", random_suffix())
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_unique_and_prefixed() {
        let a = super::queue_name();
        let b = super::queue_name();
        assert!(a.starts_with("amq.gen-"));
        assert_eq!(a.len(), "amq.gen-".len() + 22);
        assert_ne!(a, b);
        assert!(super::consumer_tag().starts_with("amq.ctag-"));
    }
}
