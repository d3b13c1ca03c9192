//! Errors shared by every layer (layer 0: depends on nothing else in the crate).

use std::any::Any;
use std::fmt;

/// Why an operation on a coroutine or a fiber failed.
///
/// For a fiber that panicked, both `Debug` and `Display` contain the panic message.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The coroutine or fiber panicked; `message` is the panic message (or the fixed text "a
    /// panic payload that is not a string" when it was neither a `&str` nor a `String`).
    Panicked {
        /// The coroutine's name, if it had one.
        name: Option<String>,
        /// The panic message.
        message: String,
    },
    /// The fiber was killed (it died of [`GreenletExit`](crate::GreenletExit)) before it produced
    /// a value.
    Killed,
    /// `set_parent` would have made a coroutine its own ancestor.
    ParentCycle,
    /// `set_parent` on a main coroutine: main has no parent. (The name is historical.)
    WrongThread,
    /// A blocking operation did not finish in time.
    TimedOut,
    /// The value has not been produced yet.
    NotReady,
    /// A value of an unexpected type arrived (see [`SwitchError`]).
    Switch(SwitchError),
    /// Any other failure, described by its message.
    Other(String),
}

impl Error {
    /// Builds [`Error::Panicked`] from a panic payload, keeping its message.
    pub fn from_panic(name: Option<&str>, payload: &(dyn Any + Send)) -> Error {
        Error::Panicked { name: name.map(str::to_owned), message: panic_message(payload) }
    }
}

/// A panic payload, as `catch_unwind` returns it.
pub(crate) type Payload = Box<dyn Any + Send>;

/// The message of a panic payload: the `&str` or `String` it carries, else a fixed text.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic payload that is not a string".to_owned()
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Panicked { name: Some(n), message } => {
                write!(f, "Panicked(coroutine {n:?}: {message:?})")
            }
            Error::Panicked { name: None, message } => write!(f, "Panicked({message:?})"),
            Error::Killed => f.write_str("Killed"),
            Error::ParentCycle => f.write_str("ParentCycle"),
            Error::WrongThread => f.write_str("WrongThread"),
            Error::TimedOut => f.write_str("TimedOut"),
            Error::NotReady => f.write_str("NotReady"),
            Error::Switch(e) => write!(f, "Switch({e:?})"),
            Error::Other(m) => write!(f, "Other({m:?})"),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Panicked { name: Some(n), message } => {
                write!(f, "coroutine \"{n}\" panicked: {message}")
            }
            Error::Panicked { name: None, message } => write!(f, "coroutine panicked: {message}"),
            Error::Killed => f.write_str("the fiber was killed"),
            Error::ParentCycle => f.write_str("cyclic parent chain not allowed"),
            Error::WrongThread => f.write_str("a main coroutine has no parent to set"),
            Error::TimedOut => f.write_str("timed out"),
            Error::NotReady => f.write_str("the value is not ready yet"),
            Error::Switch(e) => fmt::Display::fmt(e, f),
            Error::Other(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

impl From<SwitchError> for Error {
    fn from(e: SwitchError) -> Error {
        Error::Switch(e)
    }
}

/// A switch refused because the value's type is not the one the target waits for.
///
/// `try_switch` returns it before switching, so the target is untouched and still usable.
#[derive(Clone, PartialEq, Eq)]
pub struct SwitchError {
    /// The type the target waits for.
    pub expected: &'static str,
    /// The type that was offered.
    pub received: &'static str,
}

impl fmt::Debug for SwitchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SwitchError {{ expected: {}, received: {} }}", self.expected, self.received)
    }
}

impl fmt::Display for SwitchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "switch value has the wrong type: the target expects `{}` but received `{}`",
            self.expected, self.received
        )
    }
}

impl std::error::Error for SwitchError {}
