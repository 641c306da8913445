//! rabbitmqadmin's output formats for lists: `table`, `tsv`, `long`, `kvp`, `bash`
//! (and `raw_json` / `pretty_json`, which print the JSON itself).
//!
//! A list of objects becomes a table: with no columns asked for, every key down to
//! `depth` levels (nested keys joined with `.`) is a column, the well-known ones
//! (`vhost`, `name`, `type`, `source`, ...) first and the rest in alphabetical order.

use super::json::J;

/// The columns listed before all others, in this order.
const PROMOTE_COLUMNS: [&str; 7] = [
    "vhost",
    "name",
    "type",
    "source",
    "destination",
    "destination_type",
    "routing_key",
];

/// A table: column names and rows of cells (`None` for a JSON null).
pub struct Table {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
}

/// Walks one item the way the v1 tool does, calling `f(column, value)` for each leaf:
/// objects named in `json_keys` and lists of non-strings are rendered as JSON, lists
/// of strings are joined with spaces, other objects are entered while `depth <
/// max_depth`.
fn walk(
    prefix: &str,
    depth: usize,
    max_depth: usize,
    item: &J,
    json_keys: &[&str],
    f: &mut dyn FnMut(&str, Option<String>),
) {
    let J::Obj(pairs) = item else {
        return;
    };
    for (key, sub) in pairs {
        let column = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match sub {
            J::Obj(_) => {
                if json_keys.contains(&key.as_str()) {
                    f(&column, Some(sub.dumps()));
                } else if depth < max_depth {
                    walk(&column, depth + 1, max_depth, sub, json_keys, f);
                }
            }
            J::Arr(items) => {
                let text = if items.iter().all(|x| matches!(x, J::Str(_))) {
                    items
                        .iter()
                        .filter_map(|x| match x {
                            J::Str(s) => Some(s.as_str()),
                            _ => None,
                        })
                        .collect::<Vec<_>>()
                        .join(" ")
                } else {
                    sub.dumps()
                };
                f(&column, Some(text));
            }
            scalar => f(&column, scalar.cell()),
        }
    }
}

fn sort_key(col: &str) -> (usize, usize, &str) {
    match PROMOTE_COLUMNS.iter().position(|c| *c == col) {
        Some(i) => (1, i, ""),
        None => (2, 0, col),
    }
}

/// Builds the table of `items` (a JSON list): the given `columns`, or every column found
/// down to `depth` when none are given.
pub fn to_table(items: &J, columns: &[String], depth: usize, json_keys: &[&str]) -> Table {
    let empty = Vec::new();
    let items = match items {
        J::Arr(items) => items,
        _ => &empty,
    };
    let (columns, max_depth) = if columns.is_empty() {
        let mut found: Vec<String> = Vec::new();
        for item in items {
            walk("", 1, depth, item, json_keys, &mut |col, _| {
                if !found.iter().any(|c| c == col) {
                    found.push(col.to_owned());
                }
            });
        }
        found.sort_by(|a, b| sort_key(a).cmp(&sort_key(b)));
        (found, depth)
    } else {
        (columns.to_vec(), usize::MAX)
    };
    let rows = items
        .iter()
        .map(|item| {
            let mut row: Vec<Option<String>> = vec![Some(String::new()); columns.len()];
            walk("", 1, max_depth, item, json_keys, &mut |col, val| {
                if let Some(i) = columns.iter().position(|c| c == col) {
                    row[i] = val;
                }
            });
            row
        })
        .collect();
    Table { columns, rows }
}

fn text(cell: &Option<String>) -> &str {
    cell.as_deref().unwrap_or("")
}

/// Renders a non-empty table in `format`; `verbose` decides whether the `tsv` header is
/// printed. Returns the lines to print.
pub fn render(format: &str, table: &Table, verbose: bool) -> Vec<String> {
    let mut out = Vec::new();
    let Table { columns, rows } = table;
    match format {
        "tsv" => {
            if verbose {
                out.push(columns.join("\t"));
            }
            for row in rows {
                out.push(row.iter().map(text).collect::<Vec<_>>().join("\t"));
            }
        }
        "long" => {
            let sep = format!("\n{}\n", "-".repeat(80));
            let width = columns.iter().map(|c| c.chars().count()).max().unwrap_or(0);
            out.push(sep.clone());
            for row in rows {
                for (c, cell) in columns.iter().zip(row) {
                    let v = cell.as_deref().unwrap_or("None");
                    out.push(format!("{c:>width$}: {v}"));
                }
                out.push(sep.clone());
            }
        }
        "kvp" => {
            for row in rows {
                let pairs: Vec<String> = columns
                    .iter()
                    .zip(row)
                    .map(|(c, cell)| format!("{c}=\"{}\"", cell.as_deref().unwrap_or("None")))
                    .collect();
                out.push(pairs.join(" "));
            }
        }
        "bash" => {
            if let Some(ix) = columns.iter().rposition(|c| c == "name") {
                let names: Vec<&str> = rows.iter().map(|r| text(&r[ix])).collect();
                out.push(names.join(" "));
            }
        }
        _ => {
            // table
            let mut widths: Vec<usize> = columns.iter().map(|c| c.chars().count()).collect();
            for row in rows {
                for (w, cell) in widths.iter_mut().zip(row) {
                    *w = (*w).max(text(cell).chars().count());
                }
            }
            let bar = {
                let mut s = String::from("+");
                for w in &widths {
                    s.push_str(&"-".repeat(w + 2));
                    s.push('+');
                }
                s
            };
            out.push(bar.clone());
            let mut head = String::from("|");
            for (c, w) in columns.iter().zip(&widths) {
                let pad = w - c.chars().count();
                let left = pad / 2;
                head.push_str(&format!(
                    " {}{}{} |",
                    " ".repeat(left),
                    c,
                    " ".repeat(pad - left)
                ));
            }
            out.push(head);
            out.push(bar.clone());
            for row in rows {
                let mut line = String::from("|");
                for (cell, w) in row.iter().zip(&widths) {
                    let t = text(cell);
                    let pad = w - t.chars().count();
                    line.push_str(&format!(" {t}{} |", " ".repeat(pad)));
                }
                out.push(line);
            }
            out.push(bar);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items() -> J {
        J::parse(
            r#"[{"messages":3,"name":"q1","arguments":{"x-max-length":10},"policy":null,
                 "slave_nodes":["a","b"],"durable":true},
                {"name":"longer-queue","messages":12,"arguments":{},"durable":false}]"#,
        )
        .unwrap()
    }

    #[test]
    fn columns_promote_well_known_names_then_alphabetical() {
        let t = to_table(&items(), &[], 1, &[]);
        assert_eq!(
            t.columns,
            ["name", "durable", "messages", "policy", "slave_nodes"]
        );
        let t2 = to_table(&items(), &[], 2, &[]);
        assert_eq!(t2.columns[1], "arguments.x-max-length");
        let t3 = to_table(&items(), &[], 1, &["arguments"]);
        assert_eq!(t3.columns[1], "arguments");
        assert_eq!(t3.rows[0][1].as_deref(), Some("{\"x-max-length\": 10}"));
        assert_eq!(t3.rows[1][1].as_deref(), Some("{}"));
    }

    #[test]
    fn table_tsv_long_kvp_and_bash_layouts() {
        let t = to_table(&items(), &["name".into(), "messages".into()], 1, &[]);
        assert_eq!(
            render("table", &t, true),
            [
                "+--------------+----------+",
                "|     name     | messages |",
                "+--------------+----------+",
                "| q1           | 3        |",
                "| longer-queue | 12       |",
                "+--------------+----------+",
            ]
        );
        assert_eq!(
            render("tsv", &t, true),
            ["name\tmessages", "q1\t3", "longer-queue\t12"]
        );
        assert_eq!(render("tsv", &t, false), ["q1\t3", "longer-queue\t12"]);
        assert_eq!(
            render("kvp", &t, true),
            [
                "name=\"q1\" messages=\"3\"",
                "name=\"longer-queue\" messages=\"12\""
            ]
        );
        assert_eq!(render("bash", &t, true), ["q1 longer-queue"]);
        let long = render("long", &t, true);
        assert_eq!(long[1], "    name: q1");
        assert_eq!(long[2], "messages: 3");
        let t = to_table(&items(), &["durable".into(), "slave_nodes".into()], 1, &[]);
        assert_eq!(t.rows[0], [Some("True".into()), Some("a b".into())]);
        assert_eq!(t.rows[1], [Some("False".into()), Some(String::new())]);
    }
}
