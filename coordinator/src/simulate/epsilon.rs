//! `simulate --epsilon ε|off`: one config gives a sweep of ε and its non-private reference.

use std::str::FromStr;

use anyhow::{Context, bail};

/// What `--epsilon` asks of `[privacy]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum EpsilonOverride {
    /// The same run without differential privacy.
    Off,
    /// The multiplier chosen for this ε after the configured rounds (and the budget with it).
    Target(f64),
}

impl FromStr for EpsilonOverride {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(Self::Off);
        }
        match s.parse::<f64>() {
            Ok(e) if e.is_finite() && e > 0.0 => Ok(Self::Target(e)),
            _ => Err(format!("{s:?} is neither a positive ε nor \"off\"")),
        }
    }
}

impl EpsilonOverride {
    /// What the default output directory's name gains: `-eps2`, `-no-dp`.
    pub fn suffix(self) -> String {
        match self {
            Self::Off => "-no-dp".into(),
            Self::Target(e) => format!("-eps{e}"),
        }
    }

    /// Rewrites the config's `[privacy]`, which must turn differential privacy on.
    pub fn apply(self, doc: &mut toml::Table) -> anyhow::Result<()> {
        let privacy = doc
            .get_mut("privacy")
            .and_then(|v| v.as_table_mut())
            .filter(|t| {
                t.get("mode")
                    .and_then(|m| m.as_str())
                    .is_some_and(|m| m != "off")
            })
            .context(
                "--epsilon changes a [privacy] section with mode = \"hospital\" or \"patient\"; \
                 this config has none",
            )?;
        match self {
            Self::Off => {
                privacy.insert("mode".into(), "off".into());
            }
            Self::Target(e) => {
                if privacy.contains_key("budget_epsilon") {
                    bail!(
                        "--epsilon with a [privacy] budget_epsilon is ambiguous: remove one of them"
                    );
                }
                privacy.remove("noise_multiplier");
                privacy.insert("target_epsilon".into(), e.into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(privacy: &str) -> toml::Table {
        toml::from_str(&format!("[federation]\nname = \"x\"\n{privacy}")).unwrap()
    }

    #[test]
    fn overrides_the_target_or_turns_privacy_off() {
        assert_eq!("off".parse(), Ok(EpsilonOverride::Off));
        assert_eq!("2".parse(), Ok(EpsilonOverride::Target(2.0)));
        for bad in ["0", "-1", "nan", "inf", "eight"] {
            assert!(bad.parse::<EpsilonOverride>().is_err(), "{bad}");
        }
        let mut d = doc("[privacy]\nmode = \"patient\"\nnoise_multiplier = 1.1\n");
        EpsilonOverride::Target(2.0).apply(&mut d).unwrap();
        assert_eq!(d["privacy"]["target_epsilon"].as_float(), Some(2.0));
        assert!(d["privacy"].get("noise_multiplier").is_none());
        EpsilonOverride::Off.apply(&mut d).unwrap();
        assert_eq!(d["privacy"]["mode"].as_str(), Some("off"));
        // nothing to override: refused, as is a budget that would contradict the target
        assert!(EpsilonOverride::Off.apply(&mut doc("")).is_err());
        assert!(
            EpsilonOverride::Target(2.0)
                .apply(&mut doc("[privacy]\nmode = \"off\"\n"))
                .is_err()
        );
        let mut budget =
            doc("[privacy]\nmode = \"hospital\"\ntarget_epsilon = 8.0\nbudget_epsilon = 8.0\n");
        assert!(EpsilonOverride::Target(2.0).apply(&mut budget).is_err());
    }
}
