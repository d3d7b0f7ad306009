//! [`MaintenanceConfig`]: the switch's starting state.

/// Initial state of a maintenance switch, e.g. from the gateway's config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaintenanceConfig {
    /// Whether API requests are turned away from the start.
    pub enabled: bool,
    /// Seconds sent in `Retry-After` while enabled.
    pub retry_after_secs: u64,
    /// The `error.message` clients see while enabled.
    pub message: String,
}

impl Default for MaintenanceConfig {
    /// Off, retry after 30 s, a generic message.
    fn default() -> Self {
        Self {
            enabled: false,
            retry_after_secs: 30,
            message: "The service is under maintenance. Please retry later.".to_owned(),
        }
    }
}
