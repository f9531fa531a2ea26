//! The text side of the NUT network protocol: splitting a line into words, quoting arguments,
//! and what each `ERR` code means to Hecate. Pure functions without I/O, so they can be
//! property-tested on their own.
//!
//! A line is words separated by spaces or tabs. A `"` opens or closes a quoted part, inside which
//! spaces are kept; a `\` makes the next character literal, inside quotes or not. upsd quotes
//! every value it sends (`VAR atlasups ups.status "OB DISCHRG"`) and escapes `"` and `\` in it.

use hecate_core::ErrorKind;

/// Why a line could not be split into words, or a request could not be put on one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// A `"` opened a quoted part that the line never closed.
    #[error("unterminated quoted string")]
    UnterminatedQuote,
    /// The line ends right after a `\`, which then escapes nothing.
    #[error("line ends with a lone backslash")]
    TrailingBackslash,
    /// A request argument holds a line break or NUL, which no quoting can carry in a line protocol.
    #[error("argument contains a line break or NUL character")]
    Unsendable,
}

/// Characters that separate words outside quotes.
fn is_separator(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// Splits one line (without its line ending) into words, removing quotes and escapes.
///
/// `""` is an empty word; quoted and bare parts next to each other form one word (`a"b c"` is
/// `ab c`), as in a shell.
pub fn split_words(line: &str) -> Result<Vec<String>, LineError> {
    let mut words = Vec::new();
    let mut word = String::new();
    // Separate from `word.is_empty()`: `""` opens a word that stays empty.
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                word.push(chars.next().ok_or(LineError::TrailingBackslash)?);
                in_word = true;
            }
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            c if is_separator(c) && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if quoted {
        return Err(LineError::UnterminatedQuote);
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// `s` in double quotes, with `"` and `\` escaped: the way upsd sends values.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// `s` as one request argument: bare when it needs no quoting (so `INSTCMD atlasups load.off`
/// reads as in the NUT docs and upsd's log), quoted otherwise.
pub fn encode_arg(s: &str) -> String {
    let bare = !s.is_empty() && !s.chars().any(|c| is_separator(c) || matches!(c, '"' | '\\'));
    if bare { s.to_string() } else { quote(s) }
}

/// The request line for `words`, newline included, such as `"GET VAR atlasups ups.status\n"`.
pub fn request_line(words: &[&str]) -> Result<String, LineError> {
    if words.iter().any(|w| w.contains(['\n', '\r', '\0'])) {
        return Err(LineError::Unsendable);
    }
    let mut line = words.iter().map(|w| encode_arg(w)).collect::<Vec<_>>().join(" ");
    line.push('\n');
    Ok(line)
}

/// An `ERR <code> [<detail>]` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrAnswer {
    /// The code, such as `DATA-STALE`.
    pub code: String,
    /// Anything upsd sent after the code.
    pub detail: Option<String>,
}

impl ErrAnswer {
    /// Reads an answer's words as an `ERR` answer; `None` if it is not one.
    pub fn from_words(words: &[String]) -> Option<Self> {
        match words {
            [err, code, rest @ ..] if err == "ERR" => {
                Some(Self { code: code.clone(), detail: (!rest.is_empty()).then(|| rest.join(" ")) })
            }
            [err] if err == "ERR" => Some(Self { code: String::new(), detail: None }),
            _ => None,
        }
    }

    /// What the engine should make of it.
    pub fn kind(&self) -> ErrorKind {
        match self.code.as_str() {
            "DATA-STALE" | "DRIVER-NOT-CONNECTED" => ErrorKind::NoData,
            "ACCESS-DENIED" | "USERNAME-REQUIRED" | "PASSWORD-REQUIRED" | "INVALID-USERNAME" | "INVALID-PASSWORD" => {
                ErrorKind::Auth
            }
            "UNKNOWN-UPS" => ErrorKind::Config,
            // INSTCMD-NOT-SUPPORTED is not in the 2.8 code list, but some forks and older
            // documents use it for what CMD-NOT-SUPPORTED says.
            "CMD-NOT-SUPPORTED"
            | "INSTCMD-NOT-SUPPORTED"
            | "VAR-NOT-SUPPORTED"
            | "UNKNOWN-COMMAND"
            | "FEATURE-NOT-SUPPORTED"
            | "FEATURE-NOT-CONFIGURED" => ErrorKind::Unsupported,
            "INSTCMD-FAILED" | "SET-FAILED" | "READONLY" | "INVALID-VALUE" => ErrorKind::Failed,
            _ => ErrorKind::Protocol,
        }
    }

    /// A lowercase phrase saying what the code means.
    pub fn meaning(&self) -> &'static str {
        match self.code.as_str() {
            "DATA-STALE" => "the driver's data is stale",
            "DRIVER-NOT-CONNECTED" => "upsd has no connection to the ups driver",
            "ACCESS-DENIED" => "access denied (wrong password, or the user lacks the right)",
            "USERNAME-REQUIRED" => "a username is required",
            "PASSWORD-REQUIRED" => "a password is required",
            "INVALID-USERNAME" => "the username is invalid",
            "INVALID-PASSWORD" => "the password is invalid",
            "UNKNOWN-UPS" => "upsd serves no ups of that name",
            "CMD-NOT-SUPPORTED" | "INSTCMD-NOT-SUPPORTED" => "the ups does not support that command",
            "VAR-NOT-SUPPORTED" => "the ups does not have that variable",
            "UNKNOWN-COMMAND" => "upsd does not know that request",
            "FEATURE-NOT-SUPPORTED" | "FEATURE-NOT-CONFIGURED" => "upsd does not offer that feature",
            "INSTCMD-FAILED" => "the driver failed to run the command",
            "SET-FAILED" | "READONLY" | "INVALID-VALUE" => "the value was refused",
            "INVALID-ARGUMENT" => "upsd found the request malformed",
            "TOO-LONG" => "the request was too long",
            _ => "upsd refused the request",
        }
    }
}
