//! UUIDs as a person types them for a header field: one parser for the command line and
//! the page.

use uuid::Uuid;

use crate::error::{Result, VdiError};

/// A UUID as a person types it for a header field: a UUID, or a word.
///
/// The words (case does not matter, surrounding blanks are ignored): `random` or `new` for a
/// fresh random UUID; `null`, `nil`, `none` or nothing at all for the null UUID (a base
/// image's parent link). The command line and the page both parse with this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UuidArg {
    /// A new random UUID (the caller makes it: the engine has no randomness).
    Random,
    /// The null UUID.
    Null,
    /// This UUID.
    Value(Uuid),
}

impl UuidArg {
    /// Words meaning [`UuidArg::Random`].
    pub const RANDOM_WORDS: [&'static str; 2] = ["random", "new"];
    /// Words meaning [`UuidArg::Null`] (the empty text too).
    pub const NULL_WORDS: [&'static str; 3] = ["null", "nil", "none"];

    /// Parse a UUID or one of the words.
    pub fn parse(text: &str) -> Result<UuidArg> {
        let t = text.trim();
        let word = t.to_ascii_lowercase();
        if UuidArg::RANDOM_WORDS.contains(&word.as_str()) {
            return Ok(UuidArg::Random);
        }
        if t.is_empty() || UuidArg::NULL_WORDS.contains(&word.as_str()) {
            return Ok(UuidArg::Null);
        }
        Uuid::parse_str(t).map(UuidArg::Value).map_err(|e| {
            VdiError::InvalidArgument(format!(
                "{text:?} is not a UUID (expected e.g. 01234567-89ab-cdef-0123-456789abcdef, \"random\" or \"null\"): {e}"
            ))
        })
    }

    /// The UUID meant, taking a random one from `random` when asked for.
    pub fn resolve(self, random: impl FnOnce() -> Uuid) -> Uuid {
        match self {
            UuidArg::Random => random(),
            UuidArg::Null => Uuid::nil(),
            UuidArg::Value(u) => u,
        }
    }
}

impl std::str::FromStr for UuidArg {
    type Err = VdiError;
    fn from_str(s: &str) -> Result<Self> {
        UuidArg::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_arg_takes_a_uuid_or_the_words_of_both_faces() {
        for w in ["random", "new", " Random ", "NEW"] {
            assert_eq!(UuidArg::parse(w).unwrap(), UuidArg::Random, "{w:?}");
        }
        for w in ["null", "nil", "none", "", "  ", "NULL"] {
            assert_eq!(UuidArg::parse(w).unwrap(), UuidArg::Null, "{w:?}");
        }
        let u = "11111111-2222-4333-8444-555555555555";
        let want = UuidArg::Value(Uuid::parse_str(u).unwrap());
        assert_eq!(UuidArg::parse(u).unwrap(), want);
        assert_eq!(format!(" {u}\n").parse::<UuidArg>().unwrap(), want);
        let e = UuidArg::parse("zzz").unwrap_err();
        assert_eq!(e.kind(), "invalid-argument");
        let m = e.to_string();
        assert!(m.contains("\"zzz\" is not a UUID") && m.contains("random") && m.contains("null"), "{m}");
        assert_eq!(UuidArg::Null.resolve(|| unreachable!()), Uuid::nil());
        assert_eq!(UuidArg::Random.resolve(|| Uuid::from_u128(7)), Uuid::from_u128(7));
        assert_eq!(want.resolve(|| unreachable!()), Uuid::parse_str(u).unwrap());
    }
}
