//! Bounded nesting of field tables and arrays.
//!
//! amq-protocol's parsers descend one native stack frame per nested table or array, so a
//! client could crash the whole process with a value nested tens of thousands of levels
//! deep (it fits in one frame: five bytes per level). Every field table that comes from
//! outside (method arguments, content headers, SASL AMQPLAIN responses) is measured
//! here first, without recursion, and refused beyond [`MAX_NESTING`] levels. Real
//! clients nest a few levels (`x-death` is three).

use amq_protocol::types::FieldTable;

/// The deepest nesting of tables and arrays accepted (the outer table is level 1).
pub const MAX_NESTING: usize = 64;

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Table,
    Array,
}

fn u32_at(bytes: &[u8], at: usize) -> Option<usize> {
    let b: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    usize::try_from(u32::from_be_bytes(b)).ok()
}

/// How deeply tables and arrays nest in the field table at the start of `bytes` (its
/// 4-byte length first), counting the table itself as 1. Walks the bytes the way
/// amq-protocol's parser does, without recursion, and stops where that parser would
/// fail (a length past its container, an unknown type tag): it never descends further
/// than this function reaches. Stops counting once `limit` is exceeded.
pub fn table_depth(bytes: &[u8], limit: usize) -> usize {
    walk(bytes, Kind::Table, limit)
}

fn walk(bytes: &[u8], outer: Kind, limit: usize) -> usize {
    let Some(len) = u32_at(bytes, 0) else {
        return 0;
    };
    let Some(end) = len.checked_add(4).filter(|e| *e <= bytes.len()) else {
        return 0;
    };
    let mut stack: Vec<(Kind, usize)> = vec![(outer, end)];
    let mut deepest = 1;
    let mut pos = 4;
    while let Some(&(kind, end)) = stack.last() {
        if pos >= end {
            stack.pop();
            continue;
        }
        if kind == Kind::Table {
            let klen = usize::from(bytes[pos]);
            pos += 1 + klen;
            if pos >= end {
                return deepest;
            }
        }
        let tag = bytes[pos];
        pos += 1;
        let fixed = match tag {
            b'V' => Some(0),
            b't' | b'b' | b'B' => Some(1),
            b's' | b'U' | b'u' => Some(2),
            b'I' | b'i' | b'f' => Some(4),
            b'D' => Some(5),
            b'l' | b'L' | b'd' | b'T' => Some(8),
            _ => None,
        };
        if let Some(n) = fixed {
            pos += n;
        } else {
            let Some(n) = u32_at(bytes, pos) else {
                return deepest;
            };
            let Some(child_end) = (pos + 4).checked_add(n).filter(|e| *e <= end) else {
                return deepest;
            };
            match tag {
                b'S' | b'x' => pos = child_end,
                b'F' | b'A' => {
                    let kind = if tag == b'F' {
                        Kind::Table
                    } else {
                        Kind::Array
                    };
                    stack.push((kind, child_end));
                    deepest = deepest.max(stack.len());
                    if deepest > limit {
                        return deepest;
                    }
                    pos += 4;
                }
                _ => return deepest,
            }
        }
        if pos > end {
            return deepest;
        }
    }
    deepest
}

/// amq-protocol's `parse_field_table`, after checking the nesting: `None` for a table
/// nested deeper than [`MAX_NESTING`] or that does not parse.
pub fn parse_field_table(bytes: &[u8]) -> Option<(&[u8], FieldTable)> {
    if table_depth(bytes, MAX_NESTING) > MAX_NESTING {
        return None;
    }
    amq_protocol::types::parsing::parse_field_table(bytes).ok()
}

/// Where the field table of a method's arguments starts (`args`: after class and method
/// ids), for the methods that carry one.
pub fn method_table_offset(class_id: u16, method_id: u16, args: &[u8]) -> Option<usize> {
    let skip_short = |at: usize| -> Option<usize> {
        let len = usize::from(*args.get(at)?);
        Some(at + 1 + len)
    };
    let shorts = |mut at: usize, n: usize| -> Option<usize> {
        for _ in 0..n {
            at = skip_short(at)?;
        }
        Some(at)
    };
    match (class_id, method_id) {
        (10, 10) => Some(2),                                // connection.start
        (10, 11) => Some(0),                                // connection.start-ok
        (40, 10) => shorts(2, 2).map(|a| a + 1),            // exchange.declare
        (40, 30) | (40, 40) => shorts(2, 3).map(|a| a + 1), // exchange.bind / unbind
        (50, 10) => shorts(2, 1).map(|a| a + 1),            // queue.declare
        (50, 20) => shorts(2, 3).map(|a| a + 1),            // queue.bind
        (50, 50) => shorts(2, 3),                           // queue.unbind
        (60, 20) => shorts(2, 2).map(|a| a + 1),            // basic.consume
        _ => None,
    }
}

/// Whether a method's arguments nest tables deeper than [`MAX_NESTING`].
pub fn method_too_deep(class_id: u16, method_id: u16, args: &[u8]) -> bool {
    method_table_offset(class_id, method_id, args)
        .and_then(|at| args.get(at..))
        .is_some_and(|t| table_depth(t, MAX_NESTING) > MAX_NESTING)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table `{x: [[...[1]...]]}` with `depth` arrays (or `{x: {k: {k: ...}}}` with
    /// tag `F`), built front to back in linear time.
    pub(crate) fn nested(depth: usize, tag: u8) -> Vec<u8> {
        // Each level: the tag, a 4-byte length, and for tables the key `k`.
        let per_level = if tag == b'F' { 7 } else { 5 };
        let leaf = 5; // 'I' and four bytes
        let value_len = depth * per_level + leaf;
        let mut out = Vec::with_capacity(value_len + 6);
        out.extend_from_slice(&((value_len + 2) as u32).to_be_bytes());
        out.extend_from_slice(&[1, b'x']);
        for level in 0..depth {
            out.push(tag);
            let inner = (depth - level - 1) * per_level + leaf + usize::from(tag == b'F') * 2;
            out.extend_from_slice(&(inner as u32).to_be_bytes());
            if tag == b'F' {
                out.extend_from_slice(&[1, b'k']);
            }
        }
        out.extend_from_slice(&[b'I', 0, 0, 0, 1]);
        out
    }

    #[test]
    fn depth_is_measured_without_recursion_and_matches_the_structure() {
        for tag in [b'A', b'F'] {
            assert_eq!(table_depth(&nested(0, tag), 1000), 1);
            assert_eq!(table_depth(&nested(3, tag), 1000), 4);
            // 100,000 levels: measured (and stopped at the limit) without a deep stack.
            assert_eq!(
                table_depth(&nested(100_000, tag), MAX_NESTING),
                MAX_NESTING + 1
            );
            assert!(parse_field_table(&nested(100_000, tag)).is_none());
            let ok = nested(MAX_NESTING - 1, tag);
            let (rest, t) = parse_field_table(&ok).unwrap();
            assert!(rest.is_empty() && t.inner().contains_key("x"));
        }
    }

    #[test]
    fn scalars_and_strings_are_stepped_over() {
        // {a: "str", b: bytes, c: 1.5d, d: void, e: [t, T, D]}
        let mut t = Vec::new();
        t.extend_from_slice(&[1, b'a', b'S', 0, 0, 0, 3, b'x', b'y', b'z']);
        t.extend_from_slice(&[1, b'b', b'x', 0, 0, 0, 1, 9]);
        t.extend_from_slice(&[1, b'c', b'd', 0, 0, 0, 0, 0, 0, 0xf8, 0x3f]);
        t.extend_from_slice(&[1, b'd', b'V']);
        let arr = [b't', 1, b'T', 0, 0, 0, 0, 0, 0, 0, 1, b'D', 2, 0, 0, 0, 5];
        t.extend_from_slice(&[1, b'e', b'A']);
        t.extend_from_slice(&(arr.len() as u32).to_be_bytes());
        t.extend_from_slice(&arr);
        let mut bytes = (t.len() as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(&t);
        assert_eq!(table_depth(&bytes, 10), 2);
        assert!(parse_field_table(&bytes).is_some());
        // Truncated or lying lengths stop the walk (the parser fails there too).
        assert_eq!(table_depth(&bytes[..bytes.len() - 3], 10), 0);
        let mut lying = bytes.clone();
        lying[0..4].copy_from_slice(&1000u32.to_be_bytes());
        assert_eq!(table_depth(&lying, 10), 0);
    }

    #[test]
    fn method_tables_are_found_where_each_method_keeps_them() {
        // queue.declare: reserved, "q", bits, table
        let mut args = vec![0, 0, 1, b'q', 0];
        args.extend_from_slice(&nested(2, b'A'));
        assert_eq!(method_table_offset(50, 10, &args), Some(5));
        assert!(!method_too_deep(50, 10, &args));
        let mut deep = vec![0, 0, 1, b'q', 0];
        deep.extend_from_slice(&nested(5000, b'A'));
        assert!(method_too_deep(50, 10, &deep));
        // connection.start-ok: the table comes first.
        assert!(method_too_deep(10, 11, &nested(5000, b'F')));
        // Methods without tables are never too deep.
        assert!(!method_too_deep(60, 40, &deep));
        // Truncated arguments: no offset.
        assert_eq!(method_table_offset(50, 20, &[0, 0, 5]), None);
    }
}
