#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sfstream::fuzzing::file_storage(data));
