#![no_main]
//! Shared check: `warren_broker::fuzzing::scan_properties_agree` (see docs/testing.md).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| warren_broker::fuzzing::scan_properties_agree(data));
