//! Log setup: journald under systemd, plain text otherwise. A command that shows a live display
//! on a terminal (`hecate demo`, `startup`/`shutdown --execute`) sends the log to a file instead
//! ([`to_file`]), echoing warnings and errors above the display, so the log never tears the
//! display apart and the display never hides the log.

use std::fs::File;
use std::io::{IsTerminal as _, Write as _};
use std::path::Path;
use std::sync::Mutex;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::prelude::*;

use crate::cli::LogFormat;

/// Installs the global subscriber. `RUST_LOG` overrides the verbosity flags.
pub fn init(format: LogFormat, verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let journald = match format {
        LogFormat::Journald => true,
        LogFormat::Plain => false,
        // systemd sets JOURNAL_STREAM when stderr goes to the journal.
        LogFormat::Auto => std::env::var_os("JOURNAL_STREAM").is_some(),
    };
    if journald && let Ok(layer) = tracing_journald::layer() {
        tracing_subscriber::registry().with(filter).with(layer).init();
        return;
    }
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(Routed)
                .with_target(false)
                .with_ansi(std::io::stderr().is_terminal()),
        )
        .init();
}

/// Where plain log lines go.
enum Route {
    /// Standard error, as always.
    Stderr,
    /// A file; warnings and errors are also shown above a live display.
    File { file: File, echo: Option<indicatif::MultiProgress> },
}

static ROUTE: Mutex<Route> = Mutex::new(Route::Stderr);

/// From now on, plain log lines go to `path` (created or truncated), and warnings and errors are
/// also printed above `echo`, the live display. Journald logging is not affected.
pub fn to_file(path: &Path, echo: Option<indicatif::MultiProgress>) -> std::io::Result<()> {
    let file = File::create(path)?;
    if let Ok(mut r) = ROUTE.lock() {
        *r = Route::File { file, echo };
    }
    Ok(())
}

/// The writer the fmt layer gets: one per event, sent on where [`ROUTE`] says once written.
struct Routed;

/// One formatted event.
struct Line {
    level: tracing::Level,
    buf: Vec<u8>,
}

impl<'a> MakeWriter<'a> for Routed {
    type Writer = Line;
    fn make_writer(&'a self) -> Line {
        Line { level: tracing::Level::INFO, buf: Vec::new() }
    }
    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Line {
        Line { level: *meta.level(), buf: Vec::new() }
    }
}

impl std::io::Write for Line {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let Ok(mut route) = ROUTE.lock() else {
            let _ = std::io::stderr().write_all(&self.buf);
            return;
        };
        match &mut *route {
            Route::Stderr => {
                let _ = std::io::stderr().write_all(&self.buf);
            }
            Route::File { file, echo } => {
                // The file gets no colour sequences.
                let plain = hecate_core::text::clean_lines(&String::from_utf8_lossy(&self.buf));
                let _ = file.write_all(plain.as_bytes());
                if self.level <= tracing::Level::WARN
                    && let Some(mp) = echo
                {
                    let _ = mp.println(plain.trim_end());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn colour_sequences_are_stripped_for_the_file() {
        let line = "\u{1b}[2m2026\u{1b}[0m \u{1b}[33m WARN\u{1b}[0m x\n";
        assert_eq!(hecate_core::text::clean_lines(line), "2026  WARN x\n");
    }
}
