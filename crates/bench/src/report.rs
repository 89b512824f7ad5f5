//! Results: one row per measurement, printed as a Markdown table or CSV.

use std::fmt::Write as _;

/// How a row's target reads and is checked.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// No target: shown for context.
    None,
    /// The ratio duet / baseline must be at most this.
    RatioAtMost(f64),
    /// The ratio duet / baseline must be below 1 (faster than the baseline).
    Faster,
    /// duet's value must be at most this (absolute, in the row's unit).
    AtMost(f64),
    /// The ratio baseline / duet must be at least this ("N times less").
    TimesLess(f64),
}

impl Target {
    fn text(self) -> String {
        match self {
            Target::None => "—".into(),
            Target::RatioAtMost(r) => format!("≤ {r}x"),
            Target::Faster => "< 1x".into(),
            Target::AtMost(v) => format!("≤ {}", number(v)),
            Target::TimesLess(r) => format!("≥ {r}x less"),
        }
    }

    fn met(self, duet: f64, ratio: Option<f64>) -> Option<bool> {
        match (self, ratio) {
            (Target::None, _) => None,
            (Target::RatioAtMost(r), Some(x)) => Some(x <= r),
            (Target::Faster, Some(x)) => Some(x < 1.0),
            (Target::AtMost(v), _) => Some(duet <= v),
            (Target::TimesLess(r), Some(x)) => Some(x > 0.0 && 1.0 / x >= r),
            _ => None,
        }
    }
}

/// One measurement of duet beside a baseline.
#[derive(Debug, Clone)]
pub struct Row {
    /// The scenario ("1 first sync (5y)").
    pub scenario: String,
    /// What was measured, with its unit.
    pub metric: String,
    /// duet's value.
    pub duet: f64,
    /// The baseline's name.
    pub baseline_name: String,
    /// The baseline's value.
    pub baseline: Option<f64>,
    /// The target.
    pub target: Target,
}

impl Row {
    /// A row comparing duet with a baseline.
    pub fn new(
        scenario: impl Into<String>,
        metric: impl Into<String>,
        duet: f64,
        baseline_name: impl Into<String>,
        baseline: f64,
        target: Target,
    ) -> Row {
        Row {
            scenario: scenario.into(),
            metric: metric.into(),
            duet,
            baseline_name: baseline_name.into(),
            baseline: Some(baseline),
            target,
        }
    }

    /// A row with no baseline.
    pub fn alone(scenario: impl Into<String>, metric: impl Into<String>, duet: f64, target: Target) -> Row {
        Row {
            scenario: scenario.into(),
            metric: metric.into(),
            duet,
            baseline_name: String::new(),
            baseline: None,
            target,
        }
    }

    /// duet / baseline.
    pub fn ratio(&self) -> Option<f64> {
        self.baseline.filter(|b| *b > 0.0).map(|b| self.duet / b)
    }

    /// Whether the target is met (`None` when there is none).
    pub fn met(&self) -> Option<bool> {
        self.target.met(self.duet, self.ratio())
    }
}

/// A number for people: integers as integers, small values with decimals.
pub fn number(v: f64) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    let a = v.abs();
    if a >= 1000.0 || (a >= 100.0 && v.fract().abs() < 1e-9) || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 0.1 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn met_word(m: Option<bool>) -> &'static str {
    match m {
        Some(true) => "yes",
        Some(false) => "no",
        None => "",
    }
}

/// The rows as a Markdown table.
pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::new();
    out.push_str("| scenario | metric | duet | baseline | ratio | target | met? |\n");
    out.push_str("| --- | --- | ---: | --- | ---: | --- | --- |\n");
    for r in rows {
        let baseline = match r.baseline {
            Some(b) => format!("{} ({})", number(b), r.baseline_name),
            None => "—".into(),
        };
        let ratio = r.ratio().map_or_else(|| "—".into(), |x| format!("{x:.2}x"));
        let met = match r.met() {
            None => "—",
            Some(m) => met_word(Some(m)),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.scenario,
            r.metric,
            number(r.duet),
            baseline,
            ratio,
            r.target.text(),
            met
        );
    }
    out
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The rows as CSV: `scenario,metric,duet,baseline_name,baseline,ratio,target,met`.
pub fn csv(rows: &[Row]) -> String {
    let mut out = String::from("scenario,metric,duet,baseline_name,baseline,ratio,target,met\n");
    for r in rows {
        let fields = [
            csv_field(&r.scenario),
            csv_field(&r.metric),
            format!("{}", r.duet),
            csv_field(&r.baseline_name),
            r.baseline.map(|b| format!("{b}")).unwrap_or_default(),
            r.ratio().map(|x| format!("{x:.4}")).unwrap_or_default(),
            match r.target {
                Target::None => String::new(),
                t => csv_field(&t.text()),
            },
            met_word(r.met()).to_string(),
        ];
        out.push_str(&fields.join(","));
        out.push('\n');
    }
    out
}

/// The median of `xs` (0 for none).
pub fn median(xs: &[f64]) -> f64 {
    percentile(xs, 50.0)
}

/// The `p`th percentile of `xs` (nearest rank; 0 for none).
pub fn percentile(xs: &[f64], p: f64) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    if p == 50.0 && v.len().is_multiple_of(2) {
        let k = v.len() / 2;
        return (v[k - 1] + v[k]) / 2.0;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// Milliseconds of a duration.
pub fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_percentiles() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        let xs: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&xs, 99.0), 99.0);
        assert_eq!(percentile(&xs, 50.0), 50.5);
    }

    #[test]
    fn targets_read_as_ratios() {
        let r = Row::new(
            "1",
            "time (ms)",
            150.0,
            "automerge",
            100.0,
            Target::RatioAtMost(1.5),
        );
        assert_eq!(r.met(), Some(true));
        let r = Row::new("5", "bytes", 100.0, "rewrite", 1000.0, Target::TimesLess(20.0));
        assert_eq!(r.met(), Some(false));
        let line = csv(&[r]);
        assert!(
            line.ends_with("5,bytes,100,rewrite,1000,0.1000,≥ 20x less,no\n"),
            "{line}"
        );
    }
}
