//! Reading variables: the declared default when unset, typed readers, and
//! errors that name the variable.

use std::time::Duration;

use super::VARIABLES;

/// One environment variable the gateway reads.
#[derive(Debug, Clone, Copy)]
pub struct Variable {
    pub name: &'static str,
    /// The default as the operator would write it; empty when unset means "none".
    pub default: &'static str,
    pub help: &'static str,
}

/// A configuration problem, reported as one line naming the variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub variable: &'static str,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid {}: {}", self.variable, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Reads variables through a lookup function, so tests need no process env.
pub struct Env<F> {
    lookup: F,
}

impl<F: Fn(&str) -> Option<String>> Env<F> {
    pub fn new(lookup: F) -> Self {
        Env { lookup }
    }

    /// The value, or the declared default; blank counts as unset.
    pub fn raw(&self, name: &'static str) -> String {
        match (self.lookup)(name) {
            Some(v) if !v.trim().is_empty() => v.trim().to_owned(),
            _ => declared(name).default.to_owned(),
        }
    }

    /// The value, `None` when it (and its default) is empty.
    pub fn opt(&self, name: &'static str) -> Option<String> {
        Some(self.raw(name)).filter(|v| !v.is_empty())
    }

    /// Parses with `FromStr`; `what` completes "`x` is not ...".
    pub fn parse<T: std::str::FromStr>(
        &self,
        name: &'static str,
        what: &str,
    ) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        let raw = self.raw(name);
        raw.parse::<T>().map_err(|e| ConfigError {
            variable: name,
            message: format!("`{raw}` is not {what} ({e})"),
        })
    }

    /// Parses with `parse`, whose error message is used as it is.
    pub fn parse_with<T>(
        &self,
        name: &'static str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        parse(&self.raw(name)).map_err(|message| ConfigError {
            variable: name,
            message,
        })
    }

    /// A whole number above 0.
    pub fn positive(&self, name: &'static str, what: &str) -> Result<usize, ConfigError> {
        match self.parse::<usize>(name, what)? {
            0 => Err(above_zero(name)),
            n => Ok(n),
        }
    }

    pub fn millis(&self, name: &'static str) -> Result<Duration, ConfigError> {
        self.parse::<u64>(name, "a whole number of milliseconds")
            .map(Duration::from_millis)
    }

    /// Milliseconds that must not be 0.
    pub fn nonzero_millis(&self, name: &'static str) -> Result<Duration, ConfigError> {
        let d = self.millis(name)?;
        if d.is_zero() {
            return Err(above_zero(name));
        }
        Ok(d)
    }

    /// Milliseconds where 0 means "no limit" (`None`).
    pub fn limit_millis(&self, name: &'static str) -> Result<Option<Duration>, ConfigError> {
        Ok(Some(self.millis(name)?).filter(|d| !d.is_zero()))
    }

    pub fn flag(&self, name: &'static str) -> Result<bool, ConfigError> {
        let raw = self.raw(name);
        match raw.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            _ => Err(ConfigError {
                variable: name,
                message: format!("`{raw}` is not true or false"),
            }),
        }
    }

    /// A comma-separated list, blank entries dropped.
    pub fn list(&self, name: &'static str) -> Vec<String> {
        self.raw(name)
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    }
}

fn above_zero(name: &'static str) -> ConfigError {
    ConfigError {
        variable: name,
        message: "must be above 0".into(),
    }
}

fn declared(name: &str) -> &'static Variable {
    VARIABLES
        .iter()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("variable {name} is read but not declared in VARIABLES"))
}
