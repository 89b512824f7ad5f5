//! Errors of the couple document.

use thiserror::Error;

/// The largest title, in characters.
pub const MAX_TITLE_CHARS: usize = 300;
/// The largest text of any kind (a body, a note, a step), in bytes.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;

/// Input a person typed that the document cannot take. Each message names the
/// value and says what would be accepted.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum InvalidInput {
    /// A word outside a closed vocabulary.
    #[error("invalid {what} '{got}' (expected one of: {expected})")]
    Word {
        /// What was being parsed.
        what: &'static str,
        /// What was typed.
        got: String,
        /// The accepted words.
        expected: String,
    },
    /// A week that is not `YYYY-Www`.
    #[error("invalid week '{0}' (expected an ISO week such as 2026-W48)")]
    Week(String),
    /// A date that is not `YYYY-MM-DD`.
    #[error("invalid date '{0}' (expected YYYY-MM-DD, such as 2026-12-01)")]
    Date(String),
    /// A rating outside 1..=10.
    #[error("invalid rating '{0}' (expected a whole number from 1 to 10)")]
    Rating(String),
    /// Minutes that are not a positive whole number of at most a day.
    #[error("invalid minutes '{0}' (expected a whole number from 1 to 1440)")]
    Minutes(String),
    /// A required text that is empty.
    #[error("{0} must not be empty")]
    Empty(&'static str),
    /// A title over [`MAX_TITLE_CHARS`].
    #[error("title is {0} characters long; the limit is 300")]
    TitleTooLong(usize),
    /// A text over [`MAX_TEXT_BYTES`].
    #[error("{what} is {len} bytes long; the limit is 64 KiB")]
    TextTooLong {
        /// Which text.
        what: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// A short text (a tag, a name) over its limit in characters.
    #[error("{what} is {len} characters long; the limit is {limit} characters")]
    TooManyChars {
        /// Which text.
        what: &'static str,
        /// Its length in characters.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// An identifier that is not made of hex digits.
    #[error("invalid id '{0}' (ids are hex digits, such as 3fa9)")]
    Id(String),
}

/// Why an operation on the couple document failed.
#[derive(Debug, Error)]
pub enum ModelError {
    /// The input was invalid; nothing was changed.
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    /// No item of that kind has an id starting with the prefix.
    #[error("no {what} with id '{prefix}'")]
    NotFound {
        /// What was looked for ("issue", "step", "agreement").
        what: &'static str,
        /// The prefix typed.
        prefix: String,
    },
    /// Several items share the prefix.
    #[error("ambiguous {what} id '{prefix}': it matches {}", candidates.join(", "))]
    Ambiguous {
        /// What was looked for.
        what: &'static str,
        /// The prefix typed.
        prefix: String,
        /// Ids it matched (shortened).
        candidates: Vec<String>,
    },
    /// The document was written by a newer duet.
    #[error(
        "this home was written by a newer duet (document schema {found}; this duet reads up to {supported}): upgrade duet"
    )]
    NewerSchema {
        /// The schema found.
        found: u64,
        /// The newest schema this build understands.
        supported: u64,
    },
    /// The document lacks the structure of a couple space.
    #[error("not a duet space: {0}")]
    NotASpace(&'static str),
    /// The edit is not allowed in the current state.
    #[error("{0}")]
    Refused(String),
    /// Automerge refused an operation.
    #[error("document error: {0}")]
    Automerge(#[from] automerge::AutomergeError),
}
