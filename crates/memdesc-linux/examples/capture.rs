//! Records a trace with `memdesc_linux::capture` (the code behind `memdesc capture`), usable
//! before the CLI is wired. Needs root and tracefs.
//!
//! `cargo run --release -p memdesc-linux --example capture -- OUTDIR -- COMMAND [ARGS...]`
//!
//! This is how the bundled sample `samples/small` was recorded:
//! `cargo run --release -p memdesc-linux --example capture -- samples/small -- sh -c
//! 'head -c 16M /dev/urandom > /tmp/memdesc-sample && sync && cat /tmp/memdesc-sample >
//! /dev/null && ls -l /tmp > /dev/null && rm /tmp/memdesc-sample'`

use std::ffi::OsString;

use memdesc_linux::capture::{capture, CaptureConfig};

fn main() {
    let mut args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let Some(sep) = args.iter().position(|a| a == "--") else {
        eprintln!("usage: capture OUTDIR -- COMMAND [ARGS...]");
        std::process::exit(2);
    };
    let command = args.split_off(sep + 1);
    args.pop();
    let [out] = args.as_slice() else {
        eprintln!("usage: capture OUTDIR -- COMMAND [ARGS...]");
        std::process::exit(2);
    };
    let mut cfg = CaptureConfig::new(out, command);
    if let Some(kb) = std::env::var("BUFFER_SIZE_KB").ok().and_then(|v| v.parse().ok()) {
        cfg.buffer_size_kb = kb;
    }
    match capture(&cfg) {
        Ok(s) => {
            println!(
                "{} events in {:.3} s, {} bytes written, workload exit {:?}",
                s.events, s.seconds, s.bytes, s.exit_code
            );
            for l in s.ring_stats {
                println!("  {l}");
            }
        }
        Err(e) => {
            eprintln!("capture failed: {e}");
            std::process::exit(1);
        }
    }
}
