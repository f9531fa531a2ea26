//! The `hecate` binary: everything is in the library, so a build with extra backends linked in
//! runs the same `main` (see examples/notifier-plugin).

use std::process::ExitCode;

fn main() -> ExitCode {
    hecate::main_entry()
}
