//! The errors a plugin returns to the engine ([`Error`]) and the one the SDK
//! returns when bytes are not text ([`Utf8Error`]).

use std::fmt;

/// An error that fails a whole call: `init` (bad configuration) or `process`
/// (the batch as a whole could not be handled).
///
/// For a single bad record, use [`Output::fail`](crate::Output::fail)
/// instead: the rest of the batch goes on.
///
/// The message is for a human; name the thing and the value, for example
/// "`threshold`: `abc` is not a valid number".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

/// Which kind of [`Error`] this is; each maps to a case of the WIT `error`
/// variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// `init` rejected its configuration: the pipeline does not start (or a
    /// new plugin version does not go live) and the message is shown as is.
    InvalidConfig,
    /// `process` could not handle the batch: the engine applies the stage's
    /// `on_error` policy to every record of the batch.
    Failed,
}

impl Error {
    /// A configuration error, returned from [`Processor::init`](crate::Processor::init).
    pub fn invalid_config(message: impl Into<String>) -> Self {
        Error {
            kind: ErrorKind::InvalidConfig,
            message: message.into(),
        }
    }

    /// A failure of the whole batch, returned from
    /// [`Processor::process`](crate::Processor::process).
    pub fn failed(message: impl Into<String>) -> Self {
        Error {
            kind: ErrorKind::Failed,
            message: message.into(),
        }
    }

    /// Which kind of error this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message, without the kind.
    pub fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn into_wit(self) -> crate::__private::WitError {
        use crate::__private::WitError;
        match self.kind {
            ErrorKind::InvalidConfig => WitError::InvalidConfig(self.message),
            ErrorKind::Failed => WitError::Failed(self.message),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// A [`Error::failed`] with this message.
impl From<String> for Error {
    fn from(message: String) -> Self {
        Error::failed(message)
    }
}

/// A [`Error::failed`] with this message.
impl From<&str> for Error {
    fn from(message: &str) -> Self {
        Error::failed(message)
    }
}

/// A [`Error::failed`] saying which part of which record is not UTF-8.
impl From<Utf8Error> for Error {
    fn from(err: Utf8Error) -> Self {
        Error::failed(err.to_string())
    }
}

/// A record's value, key or header is not valid UTF-8.
///
/// Returned by [`RecordRef::value_str`](crate::RecordRef::value_str) and
/// [`RecordRef::key_str`](crate::RecordRef::key_str). It displays as, for
/// example, "value is not valid UTF-8 at byte 3": ready to hand to
/// [`Output::fail`](crate::Output::fail).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utf8Error {
    part: &'static str,
    valid_up_to: usize,
}

impl Utf8Error {
    pub(crate) fn new(part: &'static str, err: std::str::Utf8Error) -> Self {
        Utf8Error {
            part,
            valid_up_to: err.valid_up_to(),
        }
    }

    /// The length of the longest valid UTF-8 prefix: the offset of the first
    /// bad byte.
    pub fn valid_up_to(&self) -> usize {
        self.valid_up_to
    }

    /// Which part of the record was not text: `"value"` or `"key"`.
    pub fn part(&self) -> &'static str {
        self.part
    }
}

impl fmt::Display for Utf8Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is not valid UTF-8 at byte {}",
            self.part, self.valid_up_to
        )
    }
}

impl std::error::Error for Utf8Error {}
