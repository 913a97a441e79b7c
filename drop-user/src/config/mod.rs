//! The `--config` TOML file: detection thresholds, hooks and PCAP sampling.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

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
#[derive(Clone, Debug, Deserialize, PartialEq)]
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
