//! A hook as the config file states it (`[[hooks]]`), and its validation.

use std::time::Duration;

use anyhow::{Result, bail};
use serde::Deserialize;

use crate::units::parse_duration;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct HookSpec {
    pub name: String,
    /// Any of "attack_start", "attack_update", "attack_end", "drop_rate".
    pub on: Vec<String>,
    /// Program and arguments, run without a shell. The program is an
    /// absolute path.
    pub argv: Vec<String>,
    #[serde(default = "default_timeout")]
    pub timeout: String,
    /// Least time between two runs for the same target (interface, or
    /// reason and interface for drop_rate). End events always run when
    /// their start ran.
    #[serde(default = "default_cooldown")]
    pub cooldown: String,
    /// drop_rate: the reason name (as in `dropscope reasons`).
    #[serde(default)]
    pub reason: Option<String>,
    /// drop_rate: drops per second on one interface that fire the hook.
    #[serde(default)]
    pub rate: Option<f64>,
}

fn default_timeout() -> String {
    "10s".into()
}
fn default_cooldown() -> String {
    "30s".into()
}

pub(super) const EVENTS: [&str; 4] = ["attack_start", "attack_update", "attack_end", "drop_rate"];

impl HookSpec {
    pub(crate) fn validate(&self) -> Result<()> {
        let n = &self.name;
        if n.is_empty()
            || !n
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            bail!("hook name '{n}' must be letters, digits, '-', '_' or '.'");
        }
        if self.on.is_empty() {
            bail!(
                "hook '{n}': `on` lists no events (use {})",
                EVENTS.join(", ")
            );
        }
        for e in &self.on {
            if !EVENTS.contains(&e.as_str()) {
                bail!(
                    "hook '{n}': unknown event '{e}' (use {})",
                    EVENTS.join(", ")
                );
            }
        }
        match self.argv.first() {
            None => bail!("hook '{n}': argv is empty"),
            Some(p) if !p.starts_with('/') => {
                bail!("hook '{n}': the program '{p}' must be an absolute path")
            }
            _ => {}
        }
        parse_duration(&self.timeout).map_err(|e| anyhow::anyhow!("hook '{n}': timeout {e}"))?;
        if self.cooldown != "0" && self.cooldown != "0s" {
            parse_duration(&self.cooldown)
                .map_err(|e| anyhow::anyhow!("hook '{n}': cooldown {e}"))?;
        }
        if self.on.iter().any(|e| e == "drop_rate") {
            match (&self.reason, self.rate) {
                (Some(_), Some(r)) if r > 0.0 => {}
                _ => bail!("hook '{n}': drop_rate needs `reason` and a `rate` above 0"),
            }
        }
        Ok(())
    }

    pub(super) fn timeout(&self) -> Duration {
        parse_duration(&self.timeout).unwrap_or(Duration::from_secs(10))
    }

    pub(super) fn cooldown(&self) -> Duration {
        parse_duration(&self.cooldown).unwrap_or(Duration::ZERO)
    }
}
