//! Replays the fuzz corpora (`fuzz/corpus/TARGET/`) and the saved crash reproducers
//! (`fuzz/regressions/TARGET/`) through the checks the cargo-fuzz targets run, so every
//! input a fuzzing campaign kept, and every bug it found, is checked by `cargo test`
//! (and so by ./test.sh and CI, which have no cargo-fuzz). See docs/testing.md.

use std::fs;
use std::path::{Path, PathBuf};

/// A fuzz target's check: arbitrary bytes in, a panic on a bug.
type Check = fn(&[u8]);

/// The fuzz targets, by directory name, and the check each runs.
const TARGETS: &[(&str, Check)] = &[
    ("frame_decode", warren_codec::fuzzing::frame_decode),
    ("field_table", warren_codec::fuzzing::field_table),
    ("content_assembly", warren_codec::fuzzing::content_assembly),
    (
        "scan_properties",
        warren_broker::fuzzing::scan_properties_agree,
    ),
    ("definitions", warren_broker::fuzzing::definitions),
    ("sasl", warren_server::fuzzing::sasl),
    ("config_toml", warren_server::fuzzing::config_toml),
    ("connection", warren_server::fuzzing::connection),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// The files of `fuzz/KIND/TARGET/`, sorted (none if the directory is missing).
fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(fuzz_dir().join(kind).join(target)) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn replay(kind: &str) -> usize {
    let mut count = 0;
    for (target, check) in TARGETS {
        for path in inputs(kind, target) {
            let data = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            // A failing input names its file (the panic message follows).
            eprintln!("replaying {}", path.display());
            check(&data);
            count += 1;
        }
    }
    count
}

#[test]
fn every_corpus_input_passes_its_check() {
    for (target, _) in TARGETS {
        assert!(
            !inputs("corpus", target).is_empty(),
            "fuzz/corpus/{target}/ has no inputs"
        );
    }
    let n = replay("corpus");
    println!("{n} corpus inputs replayed");
}

#[test]
fn every_saved_crash_stays_fixed() {
    let n = replay("regressions");
    println!("{n} regression inputs replayed");
}

#[test]
fn every_corpus_directory_is_a_target() {
    for kind in ["corpus", "regressions"] {
        let Ok(entries) = fs::read_dir(fuzz_dir().join(kind)) else {
            continue;
        };
        for e in entries.filter_map(Result::ok) {
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(
                TARGETS.iter().any(|(t, _)| *t == name),
                "fuzz/{kind}/{name}/ is not a fuzz target this test knows"
            );
        }
    }
}
