//! The ftrace text parser (memdesc-linux trace/): any bytes are records or typed errors.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    memdesc_linux::fuzzing::trace(data);
});
