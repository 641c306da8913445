#![no_main]
//! Shared check: `warren_broker::fuzzing::definitions` (see docs/testing.md).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| warren_broker::fuzzing::definitions(data));
