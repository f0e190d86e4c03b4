//! The one printer every command writes through. Stdout carries data (results, tables, JSON);
//! everything else goes to stderr, shaped by quiet, verbose, JSON and no-progress modes.
//! Colour is stripped when the stream is not a terminal or `NO_COLOR` is set.

use std::io::{IsTerminal, Write};

use owo_colors::OwoColorize;
use serde::Serialize;

use crate::cli::OutputFormat;
use crate::error::Error;

/// The version of the JSON-lines stream (events, warnings, errors). It changes only when a
/// line's meaning does; new events and new fields do not change it.
pub const JSON_LINES_SCHEMA_VERSION: u32 = 1;

// The text helpers live below every layer; the printer's old paths keep compiling.
pub use crate::text::{count, table};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    Quiet,
    Normal,
    Verbose,
}

#[derive(Debug, Clone)]
pub struct Printer {
    pub format: OutputFormat,
    pub verbosity: Verbosity,
    /// Progress bars instead of plain lines: only on a terminal, and not when turned off.
    pub progress_bars: bool,
}

impl Printer {
    pub fn new(format: OutputFormat, verbosity: Verbosity, no_progress: bool) -> Self {
        let progress_bars =
            !no_progress && format == OutputFormat::Text && std::io::stderr().is_terminal();
        Printer {
            format,
            verbosity,
            progress_bars,
        }
    }

    pub fn json_mode(&self) -> bool {
        self.format == OutputFormat::Json
    }

    /// A result for people, on stdout. Printed in text mode only; JSON mode prints `data` instead.
    pub fn result(&self, text: impl std::fmt::Display) {
        if !self.json_mode() {
            let _ = writeln!(anstream::stdout(), "{text}");
        }
    }

    /// A machine-readable result, one JSON document on stdout.
    pub fn data(&self, value: &impl Serialize) {
        let mut stdout = anstream::stdout();
        let _ = serde_json::to_writer_pretty(&mut stdout, value);
        let _ = writeln!(stdout);
    }

    /// A line about what is happening, on stderr; silenced by `--quiet` and in JSON mode.
    pub fn status(&self, text: impl std::fmt::Display) {
        if self.verbosity >= Verbosity::Normal && !self.json_mode() {
            let _ = writeln!(anstream::stderr(), "{text}");
        }
    }

    /// A warning, on stderr, unless quiet.
    pub fn warn(&self, text: impl std::fmt::Display) {
        if self.verbosity == Verbosity::Quiet {
            return;
        }
        if self.json_mode() {
            self.json_line(&serde_json::json!({ "level": "warn", "message": text.to_string() }));
        } else {
            let _ = writeln!(anstream::stderr(), "{} {text}", "warning:".yellow().bold());
        }
    }

    /// The error, its causes and the fix, on stderr. Always printed, even when quiet.
    pub fn error(&self, error: &Error) {
        let causes = error.causes();
        let hint = error.hint();
        if self.json_mode() {
            self.json_line(&serde_json::json!({
                "level": "error",
                "message": error.to_string(),
                "causes": causes,
                "hint": hint,
            }));
            return;
        }
        let mut stderr = anstream::stderr();
        let _ = writeln!(stderr, "{} {error}", "error:".red().bold());
        for cause in causes {
            let _ = writeln!(
                stderr,
                "  {} {}",
                "caused by:".bold(),
                indent(&cause, "    ")
            );
        }
        if let Some(hint) = hint {
            let _ = writeln!(
                stderr,
                "{} {}",
                "hint:".cyan().bold(),
                indent(&hint, "      ")
            );
        }
    }

    /// One JSON object on one line of stderr: the event and log stream in JSON mode. Every
    /// line carries the stream's `schema_version`.
    pub fn json_line(&self, value: &impl Serialize) {
        let mut line = serde_json::to_value(value).unwrap_or_default();
        if let Some(object) = line.as_object_mut() {
            object.insert("schema_version".into(), JSON_LINES_SCHEMA_VERSION.into());
        }
        let mut stderr = std::io::stderr().lock();
        let _ = serde_json::to_writer(&mut stderr, &line);
        let _ = writeln!(stderr);
    }
}

/// Indents every line after the first, so that multi-line messages stay aligned.
fn indent(text: &str, prefix: &str) -> String {
    text.lines()
        .collect::<Vec<_>>()
        .join(&format!("\n{prefix}"))
}
