//! Durations written the way people write them: `2s`, `5m`, `1h 30m`.

use std::fmt;
use std::ops::Deref;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A [`Duration`] that (de)serialises as a human string such as `90s` or `5m`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// No time at all.
    pub const ZERO: HumanDuration = HumanDuration(Duration::ZERO);

    /// From whole seconds.
    pub const fn from_secs(s: u64) -> Self {
        Self(Duration::from_secs(s))
    }

    /// From milliseconds.
    pub const fn from_millis(ms: u64) -> Self {
        Self(Duration::from_millis(ms))
    }

    /// Seconds as a float.
    pub fn secs_f64(&self) -> f64 {
        self.0.as_secs_f64()
    }

    /// `None` when `min <= self <= max`; otherwise what is wrong, for a validation message that
    /// names the field before it: "must be at most 1h, got 3000years" or "must be between 1ms and
    /// 1h, got 0s".
    pub fn out_of_range(self, min: HumanDuration, max: HumanDuration) -> Option<String> {
        if min <= self && self <= max {
            return None;
        }
        Some(if min.is_zero() {
            format!("must be at most {max}, got {self}")
        } else {
            format!("must be between {min} and {max}, got {self}")
        })
    }
}

/// `None` when `min <= value <= max`; otherwise what is wrong with a count (steps at once,
/// polls, runs), for a validation message that names the field before it.
pub fn count_out_of_range(value: u64, min: u64, max: u64) -> Option<String> {
    (!(min..=max).contains(&value)).then(|| format!("must be between {min} and {max}, got {value}"))
}

/// The longest a run can physically take, seconds: a day. No UPS lasts that long, and the
/// config's limits keep every shutdown far below it; a record or journal line that says
/// otherwise is damaged.
pub const MAX_RUN_SECS: f64 = limits::ONE_DAY.0.as_secs_f64();

/// Whether `secs` is a duration a run or one of its steps can have taken: a finite number of
/// seconds from 0 to [`MAX_RUN_SECS`].
pub fn is_physical_duration(secs: f64) -> bool {
    secs.is_finite() && (0.0..=MAX_RUN_SECS).contains(&secs)
}

/// Upper limits shared by many settings, so that the same kind of setting has the same range
/// everywhere. Each is far beyond any sensible value yet far below what makes arithmetic on
/// clocks overflow (a `Duration` of hundreds of billions of years).
pub mod limits {
    use super::HumanDuration;

    /// The smallest time limit: a time limit of zero would fail everything at once.
    pub const MIN_TIMEOUT: HumanDuration = HumanDuration::from_millis(1);
    /// One try at something remote: a request, a connection, a command.
    pub const ONE_TRY: HumanDuration = HumanDuration::from_secs(10 * 60);
    /// One step of a run, or the wait between two checks of a slow condition.
    pub const ONE_STEP: HumanDuration = HumanDuration::from_secs(60 * 60);
    /// A whole run, a wait for a cluster to come back, or how long anything is worth retrying.
    /// No UPS lasts this long, so no shutdown can take longer.
    pub const ONE_DAY: HumanDuration = HumanDuration::from_secs(24 * 60 * 60);
    /// Steps running at once within a stage, and other counts of things in a cluster.
    pub const MAX_CONCURRENCY: u64 = 1024;
    /// A count of polls or runs.
    pub const MAX_COUNT: u64 = 1000;
}

impl Deref for HumanDuration {
    type Target = Duration;
    fn deref(&self) -> &Duration {
        &self.0
    }
}

impl From<Duration> for HumanDuration {
    fn from(d: Duration) -> Self {
        Self(d)
    }
}

impl fmt::Debug for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration with a unit, such as `2s`, `500ms` or `5m`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<HumanDuration, E> {
                humantime::parse_duration(v).map(HumanDuration).map_err(|e| {
                    E::custom(format_args!("invalid duration `{v}`: {e} (write e.g. `2s`, `500ms`, `5m`)"))
                })
            }
            // A bare number is ambiguous (seconds? milliseconds?): refuse it with a hint.
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<HumanDuration, E> {
                Err(E::custom(format_args!("invalid duration `{v}`: a unit is required, e.g. `{v}s`")))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<HumanDuration, E> {
                Err(E::custom(format_args!("invalid duration `{v}`: a unit is required, e.g. `{v}s`")))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<HumanDuration, E> {
                Err(E::custom(format_args!("invalid duration `{v}`: a unit is required, e.g. `{v}s`")))
            }
        }
        d.deserialize_any(V)
    }
}

impl schemars::JsonSchema for HumanDuration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "a duration with a unit: `500ms`, `2s`, `5m`, `1h 30m`",
            "pattern": "^\\s*[0-9]+\\s*[a-zµ]+(\\s*[0-9]+\\s*[a-zµ]+)*\\s*$"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_name_their_bounds_and_the_value() {
        let (second, hour) = (HumanDuration::from_secs(1), HumanDuration::from_secs(3600));
        assert_eq!(HumanDuration::from_secs(1).out_of_range(second, hour), None);
        assert_eq!(hour.out_of_range(second, hour), None);
        assert_eq!(
            HumanDuration::ZERO.out_of_range(second, hour).as_deref(),
            Some("must be between 1s and 1h, got 0s")
        );
        assert_eq!(
            HumanDuration(Duration::MAX)
                .out_of_range(HumanDuration::ZERO, hour)
                .map(|m| m.starts_with("must be at most 1h, got ")),
            Some(true)
        );
        assert_eq!(count_out_of_range(0, 1, 5).as_deref(), Some("must be between 1 and 5, got 0"));
        assert_eq!(count_out_of_range(5, 1, 5), None);
    }
}
