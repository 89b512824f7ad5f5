//! Limits on the text people type, checked before anything is written.

use crate::error::{InvalidInput, MAX_TEXT_BYTES, MAX_TITLE_CHARS};

/// Checks a free text against [`MAX_TEXT_BYTES`].
pub fn check_text(what: &'static str, text: &str) -> Result<(), InvalidInput> {
    if text.len() > MAX_TEXT_BYTES {
        return Err(InvalidInput::TextTooLong {
            what,
            len: text.len(),
        });
    }
    Ok(())
}

/// Checks a text that must not be blank, and returns it trimmed.
pub fn required_text<'t>(what: &'static str, text: &'t str) -> Result<&'t str, InvalidInput> {
    check_text(what, text)?;
    let t = text.trim();
    if t.is_empty() {
        return Err(InvalidInput::Empty(what));
    }
    Ok(t)
}

/// Checks a short one-line text (a tag, a name): not blank, at most `limit`
/// characters. Returns it trimmed.
pub fn short_text<'t>(what: &'static str, text: &'t str, limit: usize) -> Result<&'t str, InvalidInput> {
    let t = required_text(what, text)?;
    let len = t.chars().count();
    if len > limit {
        return Err(InvalidInput::TooManyChars { what, len, limit });
    }
    Ok(t)
}

/// Checks a title: not blank, at most [`MAX_TITLE_CHARS`] characters, one line.
pub fn check_title(title: &str) -> Result<String, InvalidInput> {
    let t = required_text("title", title)?;
    let chars = t.chars().count();
    if chars > MAX_TITLE_CHARS {
        return Err(InvalidInput::TitleTooLong(chars));
    }
    Ok(t.split_whitespace().collect::<Vec<_>>().join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        assert_eq!(check_title("  Chores \n split ").unwrap(), "Chores split");
        assert_eq!(check_title("   "), Err(InvalidInput::Empty("title")));
        assert!(check_title(&"é".repeat(300)).is_ok());
        assert_eq!(
            check_title(&"é".repeat(301)),
            Err(InvalidInput::TitleTooLong(301))
        );
        assert!(check_text("body", &"x".repeat(MAX_TEXT_BYTES)).is_ok());
        assert!(check_text("body", &"x".repeat(MAX_TEXT_BYTES + 1)).is_err());
        assert_eq!(required_text("note", " hi ").unwrap(), "hi");
    }
}
