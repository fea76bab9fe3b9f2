//! `lobsentry check-config`: validates a configuration as `run` would (the model package opened and
//! checked too) and prints the effective settings as TOML, secrets redacted.

use super::ConfigArgs;
use crate::config::{self, Overrides};
use crate::error::Error;

/// The effective configuration (embedded default, the file, then the environment) as TOML with
/// every secret redacted.
pub fn effective_toml(args: &ConfigArgs) -> Result<String, Error> {
    let raw = config::load_raw(args.config.as_deref(), std::env::vars())?;
    let mut value = toml::Value::try_from(&raw).map_err(|e| Error::Data(format!("printing the configuration: {e}")))?;
    config::redact(&mut value);
    toml::to_string_pretty(&value).map_err(|e| Error::Data(format!("printing the configuration: {e}")))
}

/// Runs the command.
pub fn run(args: ConfigArgs) -> Result<(), Error> {
    let config = config::load(args.config.as_deref(), &Overrides::default())?;
    crate::runtime::open_model(&config)?;
    let text = effective_toml(&args)?;
    println!(
        "# lobsentry: the configuration is valid{}",
        if config.model.is_some() { "; the model package opens" } else { "" }
    );
    print!("{text}");
    Ok(())
}
