//! Why a `heraldctl` run failed, and the exit code each reason maps to, so scripts can tell
//! "you called it wrong" from "the API said no" from "the API is not there".

use std::fmt;

use reqwest::StatusCode;

use crate::render::truncate;

/// Every way a run can fail. `Display` is the one line printed after `heraldctl: `.
#[derive(Debug)]
pub enum Failure {
    /// Exit 2: the command line is wrong (unknown command or flag, missing argument, a value
    /// that cannot be right). Nothing was sent.
    Usage(String),
    /// Exit 2: what clap refused, in its words (with the usage line and a pointer to `--help`).
    Cli(String),
    /// Exit 1: the API answered with an error status.
    Api { status: StatusCode, error: ApiError },
    /// Exit 1: the API answered 2xx with something that is not the JSON it promises, or the
    /// client could not be set up.
    Unexpected(String),
    /// Exit 3: no answer from the API (connection refused, timeout, dropped connection).
    Unreachable { url: String, cause: String },
}

/// The error part of an API answer: the contract's `{"error": {...}}` when the body has it,
/// otherwise the raw body (a proxy's HTML page, say), which is all there is to show.
#[derive(Debug)]
pub enum ApiError {
    Contract {
        code: String,
        message: String,
        field: Option<String>,
    },
    Raw(String),
}

impl Failure {
    pub fn usage(message: impl Into<String>) -> Self {
        Self::Usage(message.into())
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) | Self::Cli(_) => 2,
            Self::Api { .. } | Self::Unexpected(_) => 1,
            Self::Unreachable { .. } => 3,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Usage(message) => {
                write!(f, "{message}\nrun `heraldctl --help` for usage")
            }
            Self::Cli(text) => f.write_str(text.trim_start_matches("error: ").trim_end()),
            Self::Api {
                status,
                error:
                    ApiError::Contract {
                        code,
                        message,
                        field,
                    },
            } => {
                write!(f, "{message} ({code}")?;
                if let Some(field) = field {
                    write!(f, ", field {field}")?;
                }
                write!(f, ", HTTP {})", status.as_u16())
            }
            Self::Api {
                status,
                error: ApiError::Raw(body),
            } => {
                write!(f, "the API answered {status}")?;
                let body = body.trim();
                if !body.is_empty() {
                    write!(f, ": {}", truncate(body, 200))?;
                }
                Ok(())
            }
            Self::Unexpected(message) => f.write_str(message),
            Self::Unreachable { url, cause } => {
                write!(f, "could not reach the API at {url}: {cause}")
            }
        }
    }
}
