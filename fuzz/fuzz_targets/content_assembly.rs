#![no_main]
//! Shared check: `warren_codec::fuzzing::content_assembly` (see docs/testing.md).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| warren_codec::fuzzing::content_assembly(data));
