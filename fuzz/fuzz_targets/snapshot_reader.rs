//! The snapshot reader: kpageflags/kpagecount words (split by the first byte) and the /proc
//! table parsers: any bytes are a snapshot or a typed error.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    memdesc_linux::fuzzing::snapshot(data);
    memdesc_linux::fuzzing::proc_tables(data);
});
