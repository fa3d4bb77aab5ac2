//! How the binaries log: to stderr, filtered by `RUST_LOG` (default `info`), as text for a
//! terminal or, with `HEAL_LOG_FORMAT=json`, one JSON object per line for journald or a log
//! shipper (time, level, target, fields and the message).

use tracing_subscriber::EnvFilter;

/// The environment variable that chooses the format.
pub const FORMAT_VAR: &str = "HEAL_LOG_FORMAT";

/// A log format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

impl Format {
    /// `HEAL_LOG_FORMAT`'s value (unset: text), refused with the choices when unknown.
    pub fn from_env_value(v: Option<&str>) -> Result<Self, String> {
        match v.map(str::trim) {
            None | Some("") | Some("text") => Ok(Format::Text),
            Some("json") => Ok(Format::Json),
            Some(other) => Err(format!(
                "{FORMAT_VAR}={other:?} is not a log format: use \"text\" or \"json\""
            )),
        }
    }
}

/// Installs the global subscriber.
pub fn init() -> Result<(), String> {
    let format = Format::from_env_value(std::env::var(FORMAT_VAR).ok().as_deref())?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        Format::Text => builder.init(),
        Format::Json => builder.json().with_current_span(false).init(),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_refusals() {
        assert_eq!(Format::from_env_value(None), Ok(Format::Text));
        assert_eq!(Format::from_env_value(Some("json")), Ok(Format::Json));
        let e = Format::from_env_value(Some("xml")).unwrap_err();
        assert!(e.contains("\"text\" or \"json\""), "{e}");
    }
}
