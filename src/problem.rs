//! Problems found in a user's file (config or profile), with the place and a fix.
//!
//! Validation collects every problem before reporting, so one `check` run
//! shows all of them at once.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One thing wrong in a file: where, what, and what to do about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    pub message: String,
    /// What to change; empty when the message says it all.
    pub fix: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file.display(), line, self.message)?,
            None => write!(f, "{}: {}", self.file.display(), self.message)?,
        }
        if !self.fix.is_empty() {
            write!(f, " (fix: {})", self.fix)?;
        }
        Ok(())
    }
}

/// A file's text, kept to turn byte spans into line numbers.
pub struct SourceText<'a> {
    pub path: &'a Path,
    pub text: &'a str,
}

impl SourceText<'_> {
    /// The 1-based line holding byte offset `at`, counting on from
    /// `cursor` (an earlier offset and its line) when `at` lies after it,
    /// and leaving the cursor at `at`: many tables in file order cost one
    /// pass over the text, not one each.
    pub fn line_from(&self, cursor: &mut (usize, usize), at: usize) -> usize {
        let at = at.min(self.text.len());
        let line = match *cursor {
            (from, line) if from <= at && line > 0 => {
                line + self.text.as_bytes()[from..at]
                    .iter()
                    .filter(|b| **b == b'\n')
                    .count()
            }
            _ => self.line_of(at),
        };
        *cursor = (at, line);
        line
    }

    /// The 1-based line holding byte offset `at`.
    pub fn line_of(&self, at: usize) -> usize {
        let at = at.min(self.text.len());
        self.text.as_bytes()[..at]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    }

    /// A problem at `span` (or at no particular line).
    pub fn problem(
        &self,
        span: Option<Range<usize>>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Problem {
        Problem {
            file: self.path.to_path_buf(),
            line: span.map(|s| self.line_of(s.start)),
            message: message.into(),
            fix: fix.into(),
        }
    }

    /// The span of the line that sets `key` in the table starting at
    /// `table` (its header), or `table` itself when the key is not there.
    pub fn key_span(&self, table: Range<usize>, key: &str) -> Range<usize> {
        let mut at = table.start.min(self.text.len());
        for (i, line) in self.text[at..].split_inclusive('\n').enumerate() {
            let trimmed = line.trim_start();
            if i > 0 && trimmed.starts_with('[') {
                break; // the next table
            }
            if trimmed
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
            {
                return at..at + line.len();
            }
            at += line.len();
        }
        table
    }

    /// A TOML syntax or type error, placed at its line.
    pub fn parse_problem(&self, error: &toml::de::Error, fix: &str) -> Problem {
        // The first line of toml's message is the gist; the rest is a code excerpt.
        let message = error
            .message()
            .lines()
            .next()
            .unwrap_or("invalid TOML")
            .to_string();
        self.problem(error.span(), message, fix)
    }
}

/// Renders a list of problems one per line.
pub fn render(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_become_line_numbers() {
        let text = "a = 1\nb = 2\nc = 3\n";
        let src = SourceText {
            path: Path::new("x.toml"),
            text,
        };
        let p = src.problem(Some(12..13), "bad c", "set c to 4");
        assert_eq!(p.line, Some(3));
        assert_eq!(p.to_string(), "x.toml:3: bad c (fix: set c to 4)");
    }

    #[test]
    fn key_span_finds_the_key_line_inside_a_table() {
        let text = "[[field]]\nindex = 2\nmetric = \"x\"\n[[field]]\nmetric = \"y\"\n";
        let src = SourceText {
            path: Path::new("p.toml"),
            text,
        };
        let second = text.rfind("[[field]]").unwrap();
        assert_eq!(src.line_of(src.key_span(0..9, "metric").start), 3);
        assert_eq!(
            src.line_of(src.key_span(second..second + 9, "metric").start),
            5
        );
        assert_eq!(src.key_span(0..9, "unit"), 0..9, "not in the first table");
    }
}
