//! The `--config` TOML file: detection thresholds, hooks and PCAP sampling.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::{
    act::hooks::HookSpec,
    analysis::detect::{Adaptive, DetectConfig, Thresholds},
};

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Config {
    pub thresholds: Thresholds,
    pub detection: Adaptive,
    pub hooks: Vec<HookSpec>,
    pub pcap: PcapSpec,
}

/// `[pcap]`: what the packet sampler keeps (used with `--pcap-dir`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct PcapSpec {
    /// Sample 1 in this many packets (per CPU).
    pub every: u32,
    /// Bytes kept of each sampled packet (at most 256).
    pub snaplen: u32,
    /// Samples kept from before an attack (the onset).
    pub pre_attack: usize,
    /// Samples of the attack itself written per attack.
    pub attack_samples: usize,
}

impl Default for PcapSpec {
    fn default() -> Self {
        PcapSpec {
            every: 64,
            snaplen: 128,
            pre_attack: 1000,
            attack_samples: 10000,
        }
    }
}

impl Config {
    pub(crate) fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in config {}", path.display()))
    }

    pub(crate) fn parse(text: &str) -> Result<Self> {
        // toml's own message draws the line with a caret over several
        // lines; errors here stay on one.
        let c: Config = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            let msg = e.message().replace('\n', " ");
            match line {
                Some(l) => anyhow::anyhow!("line {l}: {}", msg.trim()),
                None => anyhow::anyhow!("{}", msg.trim()),
            }
        })?;
        c.validate()?;
        Ok(c)
    }

    fn validate(&self) -> Result<()> {
        let p = &self.pcap;
        if p.every == 0 {
            bail!("[pcap] every must be at least 1");
        }
        if p.snaplen == 0 || p.snaplen as usize > drop_common::SAMPLE_SNAP_MAX {
            bail!(
                "[pcap] snaplen must be 1..={}",
                drop_common::SAMPLE_SNAP_MAX
            );
        }
        if p.pre_attack > 100_000 || p.attack_samples > 1_000_000 {
            bail!("[pcap] pre_attack is at most 100000 and attack_samples at most 1000000");
        }
        for (name, v) in self.thresholds.clone().each_mut() {
            threshold(*v).map_err(|e| anyhow::anyhow!("[thresholds] {name}: {e}"))?;
        }
        let d = &self.detection;
        for (name, v, min) in [
            ("k_sigma", d.k_sigma, 0.0),
            ("multiple", d.multiple, 1.0),
            ("floor_scale", d.floor_scale, 0.0),
            ("end_after_s", d.end_after_s, 0.1),
        ] {
            if !(v.is_finite() && v >= min) {
                bail!("[detection] {name} must be a number of at least {min}, not {v}");
            }
        }
        let mut names = std::collections::HashSet::new();
        for h in &self.hooks {
            h.validate()?;
            if !names.insert(h.name.clone()) {
                bail!("two hooks are named '{}'", h.name);
            }
        }
        Ok(())
    }

    /// The detection settings, with the thresholds given as flags (in
    /// `Thresholds::each_mut` order, each validated as the file's are)
    /// over the file's.
    pub(crate) fn detect_with(&self, flags: [Option<f64>; 6]) -> Result<DetectConfig> {
        let mut d = self.detect();
        for (flag, (name, slot)) in flags.into_iter().zip(d.thresholds.each_mut()) {
            if let Some(v) = flag {
                *slot = threshold(v)
                    .map_err(|e| anyhow::anyhow!("--{}: {e}", name.replace('_', "-")))?;
            }
        }
        Ok(d)
    }

    pub(crate) fn detect(&self) -> DetectConfig {
        DetectConfig {
            thresholds: self.thresholds.clone(),
            detection: self.detection.clone(),
        }
    }
}

/// Every key of the file, by section, with what it means: the default
/// config the package installs (`template`) is written from this list and
/// the types' defaults, and a test checks the list against the types.
const KEYS: &[(&str, &[(&str, &str)])] = &[
    (
        "thresholds",
        &[
            ("source_pps", "packets/s from one source (0: off)"),
            ("source_bps", "bits/s from one source"),
            ("port_pps", "packets/s to one destination port"),
            ("iface_pps", "packets/s on one interface"),
            ("iface_bps", "bits/s on one interface"),
            ("syn_pps", "TCP SYNs/s on one interface"),
        ],
    ),
    (
        "detection",
        &[
            ("k_sigma", "a spike is above mean + k_sigma * stddev ..."),
            ("multiple", "... and above multiple * mean ..."),
            (
                "floor_scale",
                "... and above the metric's floor, scaled by this",
            ),
            (
                "end_after_s",
                "an attack ends after this many seconds without a trigger",
            ),
        ],
    ),
    (
        "pcap",
        &[
            ("every", "sample 1 in this many packets (per CPU)"),
            ("snaplen", "bytes kept of each sampled packet (at most 256)"),
            (
                "pre_attack",
                "samples kept from before an attack (the onset)",
            ),
            (
                "attack_samples",
                "samples of the attack itself written per attack",
            ),
        ],
    ),
];

/// The default config file: every key commented out at its default, so
/// an installed file changes nothing until a line is uncommented.
pub(crate) fn template() -> String {
    use std::fmt::Write;
    let defaults = |section: &str| -> toml::Table {
        let c = Config::default();
        let v = match section {
            "thresholds" => toml::Table::try_from(&c.thresholds),
            "detection" => toml::Table::try_from(&c.detection),
            _ => toml::Table::try_from(&c.pcap),
        };
        v.expect("config sections serialize to tables")
    };
    let mut out = String::from(
        "# dropscope configuration: `dropscope run|watch|top --config FILE`.\n\
         # Every key is shown commented out at its default; uncomment to change.\n\
         # Flags (--syn-pps, ...) override the [thresholds] here.\n",
    );
    for (section, keys) in KEYS {
        let table = defaults(section);
        let _ = write!(out, "\n[{section}]\n");
        if *section == "pcap" {
            out.push_str("# Used with --pcap-dir.\n");
        }
        for (key, what) in *keys {
            let v = table.get(*key).map(|v| v.to_string()).unwrap_or_default();
            let _ = writeln!(out, "# {:<26} # {what}", format!("{key} = {v}"));
        }
    }
    out.push_str(
        "\n# Hooks: programs run on attack and drop-rate events (see `man dropscope`\n\
         # and /usr/share/dropscope/hooks for examples). None by default.\n\
         # [[hooks]]\n\
         # name = \"blackhole\"\n\
         # on = [\"attack_start\", \"attack_end\"]   # also attack_update, drop_rate\n\
         # argv = [\"/usr/share/dropscope/hooks/exabgp-blackhole\"]\n\
         # timeout = \"10s\"\n\
         # cooldown = \"5m\"\n",
    );
    out
}

/// A threshold is a rate of 0 or more (0 turns it off).
fn threshold(v: f64) -> Result<f64, String> {
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(format!(
            "thresholds are rates of 0 or more (0 turns one off), not {v}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every section of the file (tests/fixtures/text/dropscope.toml is
    /// the same, for the mutation fuzzer).
    const SAMPLE: &str = r#"
[thresholds]
syn_pps = 20000
[detection]
k_sigma = 4.0
[[hooks]]
name = "blackhole"
on = ["attack_start", "attack_end"]
argv = ["/usr/local/bin/blackhole", "--announce"]
timeout = "5s"
cooldown = "1m"
[[hooks]]
name = "fw"
on = ["drop_rate"]
reason = "NETFILTER_DROP"
rate = 100.0
argv = ["/bin/true"]
[pcap]
every = 8
"#;

    #[test]
    fn config_file() {
        let c = Config::parse(
            "[thresholds]\nsource_pps = 5000\nsyn_pps = 20000\n[detection]\nend_after_s = 2\n",
        )
        .unwrap()
        .detect();
        assert_eq!(c.thresholds.source_pps, 5000.0);
        assert_eq!(c.detection.end_after_s, 2.0);
        assert_eq!(c.detection.k_sigma, 4.0);
        assert!(Config::parse("[thresholds]\nbogus = 1\n").is_err());
        let x = c.kernel_triggers(0.5, drop_common::XdpConfig::default());
        assert_eq!(x.trigger_source, 2500);
        assert_eq!(x.trigger_port, 0);
    }

    #[test]
    fn full_config() {
        let c = Config::parse(SAMPLE).unwrap();
        assert_eq!(c.hooks.len(), 2);
        assert_eq!(c.hooks[0].timeout, "5s");
        assert_eq!(c.pcap.every, 8);
        assert_eq!(c.pcap.snaplen, 128);
        assert_eq!(c.detect().thresholds.syn_pps, 20000.0);
    }

    /// The installed default changes nothing, and uncommenting every key
    /// gives the defaults: the list of keys matches the types.
    #[test]
    fn template_is_the_defaults() {
        let t = template();
        let c = Config::parse(&t).unwrap();
        assert_eq!(c.detect(), Config::default().detect());
        let uncommented: String = t
            .lines()
            .map(|l| {
                let bare = l.strip_prefix("# ").unwrap_or(l);
                let is_key = KEYS
                    .iter()
                    .flat_map(|(_, k)| k.iter())
                    .any(|(k, _)| bare.starts_with(&format!("{k} = ")));
                if is_key { bare } else { l }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let all = Config::parse(&uncommented).unwrap();
        assert_eq!(all.detect(), Config::default().detect());
        assert_eq!(all.pcap, PcapSpec::default());
        assert!(all.hooks.is_empty());
        // Every key the types have is in the list, and nothing else.
        for (section, keys) in KEYS {
            let c = Config::default();
            let table = match *section {
                "thresholds" => toml::Table::try_from(&c.thresholds),
                "detection" => toml::Table::try_from(&c.detection),
                _ => toml::Table::try_from(&c.pcap),
            }
            .unwrap();
            let mut want: Vec<_> = table.keys().map(String::as_str).collect();
            let mut have: Vec<_> = keys.iter().map(|(k, _)| *k).collect();
            want.sort();
            have.sort();
            assert_eq!(want, have, "[{section}]");
        }
        // The hook example is a valid hook once uncommented.
        let hook: String = t
            .lines()
            .skip_while(|l| !l.starts_with("# [[hooks]]"))
            .map(|l| l.trim_start_matches("# "))
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(Config::parse(&hook).unwrap().hooks.len(), 1);
    }

    #[test]
    fn bad_configs_are_refused() {
        for bad in [
            "[[hooks]]\nname='a'\non=['attack_start']\nargv=[]",
            "[[hooks]]\nname='a'\non=['whenever']\nargv=['/bin/true']",
            "[[hooks]]\nname='a'\non=['attack_start']\nargv=['/bin/true']\ntimeout='soon'",
            "[[hooks]]\nname='a'\non=['drop_rate']\nargv=['/bin/true']",
            "[[hooks]]\nname='a'\non=['attack_start']\nargv=['relative/path']",
            "[pcap]\nsnaplen=100000",
            "[thresholds]\nsyn_pps = -5",
            "[thresholds]\nsource_pps = nan",
            "[detection]\nend_after_s = inf",
            "[detection]\nmultiple = 0.5",
            "[pcap]\nevery=0",
            "[nonsense]\nx=1",
        ] {
            assert!(Config::parse(bad).is_err(), "{bad}");
        }
    }
}
