#![no_main]
//! Shared check: `warren_server::fuzzing::connection` (see docs/testing.md).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| warren_server::fuzzing::connection(data));
