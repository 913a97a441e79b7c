//! Any bytes as a frame: the parser (the code XDP runs) keeps every promise
//! in `drop_common::parse::promises`, and never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|frame: &[u8]| {
    if let Err(why) = drop_common::parse::promises::check(frame) {
        panic!("{why}: {frame:02x?}");
    }
});
