//! The pagination contract of Alpaca's paged endpoints, in one place: a
//! [`PageCursor`] holds the token of the next page and checks each answer's
//! `next_page_token`. The client's bar and corporate-action loops and
//! signal9's streaming ingest all page with it.

use crate::error::AlpacaError;

/// More pages than this in one paged read is the API breaking its contract.
pub const MAX_PAGES: u32 = 10_000;

/// Where a paged read stands: the token to send next and the pages read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageCursor {
    token: Option<String>,
    pages: u32,
}

impl PageCursor {
    /// A read from its first page, or, with `resume`, from a token an
    /// earlier read stopped at.
    pub fn new(resume: Option<String>) -> Self {
        PageCursor {
            token: resume,
            pages: 0,
        }
    }

    /// The token to send with the next request (`None`: the first page).
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Pages read so far.
    pub fn pages(&self) -> u32 {
        self.pages
    }

    /// Takes one answer: its `next_page_token`, and whether the page held
    /// no data at all. Returns the token of the page that follows (the
    /// cursor moves to it), or `None` when the read is over: no token, an
    /// empty token, or an empty page (`empty_ends`: the bar endpoints). A
    /// token that repeats the current one, or a page past [`MAX_PAGES`],
    /// is the API breaking its contract: [`AlpacaError::BadBody`].
    pub fn advance(
        &mut self,
        endpoint: &'static str,
        next_page_token: Option<String>,
        empty_ends: bool,
    ) -> Result<Option<String>, AlpacaError> {
        self.pages += 1;
        let next = match next_page_token.filter(|t| !t.is_empty()) {
            Some(next) if !empty_ends => next,
            _ => return Ok(None),
        };
        let broken = |detail: String| AlpacaError::BadBody { endpoint, detail };
        if self.token.as_deref() == Some(next.as_str()) {
            return Err(broken("next_page_token repeats the current token".into()));
        }
        if self.pages >= MAX_PAGES {
            return Err(broken(format!("more than {MAX_PAGES} pages")));
        }
        self.token = Some(next.clone());
        Ok(Some(next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_follows_tokens_to_the_end() {
        let mut cursor = PageCursor::new(None);
        assert_eq!(cursor.token(), None);
        assert_eq!(
            cursor.advance("GET bars", Some("a".into()), false).unwrap(),
            Some("a".into())
        );
        assert_eq!(cursor.token(), Some("a"));
        assert_eq!(cursor.advance("GET bars", Some(String::new()), false).unwrap(), None);
        assert_eq!(cursor.pages(), 2);
    }

    #[test]
    fn an_empty_page_ends_the_read_even_with_a_token() {
        let mut cursor = PageCursor::new(Some("resume".into()));
        assert_eq!(cursor.token(), Some("resume"));
        assert_eq!(cursor.advance("GET bars", Some("b".into()), true).unwrap(), None);
    }

    #[test]
    fn a_repeated_token_or_too_many_pages_is_a_broken_contract() {
        let mut cursor = PageCursor::new(Some("same".into()));
        let error = cursor.advance("GET bars", Some("same".into()), false).unwrap_err();
        assert!(error.to_string().contains("repeats"), "{error}");
        let mut cursor = PageCursor::new(None);
        for n in 1..MAX_PAGES {
            assert!(cursor
                .advance("GET bars", Some(format!("t{n}")), false)
                .unwrap()
                .is_some());
        }
        let error = cursor.advance("GET bars", Some("last".into()), false).unwrap_err();
        assert!(error.to_string().contains("more than"), "{error}");
    }
}
