//! Errors of one Modbus exchange, keeping "could not reach the device" apart from "the
//! device said no" (tokio-modbus's two layers).

use std::time::Duration;

/// What went wrong talking to a Modbus device.
#[derive(Debug, thiserror::Error)]
pub enum ModbusError {
    /// The link could not be opened (TCP connect, name lookup, serial port open).
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        /// Where we tried to go.
        endpoint: String,
        /// The cause.
        source: std::io::Error,
    },
    /// No (complete) answer before the deadline.
    #[error("no answer to {request} within {timeout:?}")]
    Timeout {
        /// The request, e.g. `read discrete_input 3+2`.
        request: String,
        /// The deadline that passed.
        timeout: Duration,
    },
    /// The link failed mid-exchange (reset, closed, write error).
    #[error("i/o error during {request}: {source}")]
    Io {
        /// The request.
        request: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The device answered something that is not a valid answer to our request
    /// (bad framing, wrong transaction id, wrong function, wrong length).
    #[error("garbled answer to {request}: {detail}")]
    Framing {
        /// The request.
        request: String,
        /// What was wrong.
        detail: String,
    },
    /// The device answered with a Modbus exception (V1.1b3 §7).
    #[error("device refused {request} with exception {code:#04x} ({name})")]
    Exception {
        /// The request.
        request: String,
        /// The exception code, e.g. 0x02 illegal data address.
        code: u8,
        /// Its name.
        name: String,
    },
}

impl ModbusError {
    /// Transport faults are retried after reconnecting with back-off; device rejections
    /// (exceptions) are reported and the link is kept.
    pub fn is_transient(&self) -> bool {
        !matches!(self, Self::Exception { .. })
    }

    /// A short stable name for logs, rate limiting and metrics labels.
    pub fn class(&self) -> &'static str {
        match self {
            Self::Connect { .. } => "connect",
            Self::Timeout { .. } => "timeout",
            Self::Io { .. } => "io",
            Self::Framing { .. } => "framing",
            Self::Exception { .. } => "exception",
        }
    }

    /// Classifies a tokio-modbus transport error: decoding failures are framing faults,
    /// everything else is I/O.
    pub(crate) fn from_transport(request: String, err: tokio_modbus::Error) -> ModbusError {
        match err {
            tokio_modbus::Error::Transport(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                ModbusError::Framing {
                    request,
                    detail: e.to_string(),
                }
            }
            tokio_modbus::Error::Transport(source) => ModbusError::Io { request, source },
            tokio_modbus::Error::Protocol(p) => ModbusError::Framing {
                request,
                detail: p.to_string(),
            },
        }
    }

    /// An exception answer.
    pub(crate) fn exception(request: String, code: tokio_modbus::ExceptionCode) -> ModbusError {
        ModbusError::Exception {
            request,
            code: u8::from(code),
            name: code.to_string(),
        }
    }
}
