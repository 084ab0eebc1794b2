#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sfstream::fuzzing::token_reply(data));
