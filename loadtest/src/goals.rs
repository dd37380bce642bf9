//! A goal checked against a figure: [`GoalCheck`], shared by the bench's
//! goals (issue 12, the switch against the durable echo) and the overload
//! scenario's (issue 13), and [`ratio`], how both divide.

use serde::Serialize;

/// One goal: a figure of the switch beside the limit its goal sets.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GoalCheck {
    /// What is compared, e.g. `S_rr / D_rr` or `p50 S_open vs D_open`.
    pub measure: String,
    /// In `unit`; not a number (`null` in JSON) when there was nothing
    /// to compare (no recovery, nothing admitted to divide by).
    pub value: f64,
    /// The bound the goal sets, in the unit of `value`.
    pub limit: f64,
    /// `true`: `value` must reach `limit`; `false`: stay at or under it.
    pub at_least: bool,
    /// The goal as written in its issue.
    pub goal: &'static str,
    pub met: bool,
    /// What `value` and `limit` count.
    pub unit: GoalUnit,
}

/// The unit of a goal's figures, which decides how they are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GoalUnit {
    Ratio,
    Microseconds,
    /// A count of answers.
    Answers,
    Seconds,
}

impl GoalCheck {
    /// `value` and `limit` as text: ratios to three decimals, latencies
    /// (µs) and counts whole, seconds to one decimal; a value that is not
    /// a number (no recovery, nothing to divide by) as `none`.
    pub fn figures(&self) -> (String, String) {
        let text = |v: f64| {
            if !v.is_finite() {
                return "none".to_owned();
            }
            match self.unit {
                GoalUnit::Ratio => format!("{v:.3}"),
                GoalUnit::Microseconds | GoalUnit::Answers => format!("{v:.0}"),
                GoalUnit::Seconds => format!("{v:.1}"),
            }
        };
        (text(self.value), text(self.limit))
    }

    /// The check of `value` against `limit`: at least it, or at most it.
    /// A value that is not a number misses either way.
    pub fn new(
        measure: String,
        value: f64,
        limit: f64,
        at_least: bool,
        goal: &'static str,
        unit: GoalUnit,
    ) -> Self {
        let met = value.is_finite()
            && if at_least {
                value >= limit
            } else {
                value <= limit
            };
        GoalCheck {
            measure,
            value,
            limit,
            at_least,
            goal,
            met,
            unit,
        }
    }
}

/// `a / b` to three decimals, 0 when `b` is not positive.
pub fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        (a / b * 1000.0).round() / 1000.0
    } else {
        0.0
    }
}
