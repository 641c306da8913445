#![no_main]
//! Shared check: `warren_codec::fuzzing::frame_decode` (see docs/testing.md).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| warren_codec::fuzzing::frame_decode(data));
