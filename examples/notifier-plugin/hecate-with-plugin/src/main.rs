//! `hecate` with the example `jsonl_file` notifier linked in. Everything else is Hecate's own
//! `main`: the same commands, options and exit codes.

use std::process::ExitCode;

fn main() -> ExitCode {
    hecate_notifier_example::link();
    hecate::main_entry()
}
