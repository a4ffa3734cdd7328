//! Timing statistics (median, p90, min) and the Markdown table `bench launch` prints.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// Median, 90th percentile and minimum of a set of timed runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    pub runs: usize,
    pub median: Duration,
    pub p90: Duration,
    pub min: Duration,
}

impl Stats {
    /// The statistics of `samples`; `None` when there are none.
    pub fn of(samples: &[Duration]) -> Option<Stats> {
        let mut s = samples.to_vec();
        s.sort_unstable();
        let n = s.len();
        let min = *s.first()?;
        let median = if n % 2 == 1 {
            s[n / 2]
        } else {
            (s[n / 2 - 1] + s[n / 2]) / 2
        };
        // Nearest-rank percentile: the smallest sample with at least 90% of samples <= it.
        let rank = (n * 9).div_ceil(10).max(1);
        Some(Stats {
            runs: n,
            median,
            p90: s[rank - 1],
            min,
        })
    }
}

/// One contender's line: its numbers, or why it has none.
#[derive(Debug, Clone)]
pub struct Row {
    pub label: String,
    pub result: Result<Stats, String>,
}

/// A contender of an interleaved measurement: its label and one run.
pub struct Contender<'a> {
    pub label: String,
    pub run: Box<dyn FnMut() -> Result<(), String> + 'a>,
}

impl<'a> Contender<'a> {
    pub fn new(label: impl Into<String>, run: impl FnMut() -> Result<(), String> + 'a) -> Self {
        Contender {
            label: label.into(),
            run: Box::new(run),
        }
    }
}

/// Runs every contender `warmup` times untimed, then `runs` rounds in which each contender
/// runs once, timed, in turn: a load that comes and goes on the machine weighs on all of them
/// alike, so their ratios stay fair. A contender's first failure ends its measurement (the
/// row then says why); the others go on.
pub fn measure_interleaved(contenders: Vec<Contender<'_>>, warmup: usize, runs: usize) -> Vec<Row> {
    struct State<'a> {
        c: Contender<'a>,
        samples: Vec<Duration>,
        failed: Option<String>,
    }
    let mut st: Vec<State> = contenders
        .into_iter()
        .map(|c| State {
            c,
            samples: Vec::with_capacity(runs),
            failed: None,
        })
        .collect();
    for round in 0..warmup + runs {
        for s in st.iter_mut().filter(|s| s.failed.is_none()) {
            let t = Instant::now();
            match (s.c.run)() {
                Ok(()) if round >= warmup => s.samples.push(t.elapsed()),
                Ok(()) => {}
                Err(e) => s.failed = Some(e),
            }
        }
    }
    st.into_iter()
        .map(|s| Row {
            label: s.c.label,
            result: match s.failed {
                Some(e) => Err(e),
                None => Stats::of(&s.samples).ok_or_else(|| "no run was measured".to_string()),
            },
        })
        .collect()
}

/// Runs `f` `warmup` times untimed, then `runs` times timed; the first failure ends it.
pub fn measure(
    warmup: usize,
    runs: usize,
    f: impl FnMut() -> Result<(), String>,
) -> Result<Stats, String> {
    measure_interleaved(vec![Contender::new("", f)], warmup, runs)
        .pop()
        .map_or_else(|| Err("no contender".to_string()), |r| r.result)
}

/// The cells of one line of a Markdown table, trimmed (what the benches' tests read back).
pub fn cells(line: &str) -> Vec<String> {
    line.trim()
        .trim_matches('|')
        .split('|')
        .map(|c| c.trim().to_string())
        .collect()
}

/// Milliseconds with two decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

/// The Markdown table: one line per row, ratios of medians to the `baseline` median.
pub fn render(rows: &[Row], baseline: Option<Duration>, baseline_name: &str) -> String {
    let label_w = rows
        .iter()
        .map(|r| r.label.chars().count())
        .max()
        .unwrap_or(0)
        .max("contender".len());
    let ratio_head = format!("× {baseline_name}");
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| {:<label_w$} | median ms | p90 ms | min ms | {ratio_head} |",
        "contender"
    );
    let _ = writeln!(
        out,
        "|{}|----------:|-------:|-------:|{}:|",
        "-".repeat(label_w + 2),
        "-".repeat(ratio_head.chars().count() + 1)
    );
    for r in rows {
        match &r.result {
            Ok(s) => {
                let ratio = baseline
                    .filter(|b| !b.is_zero())
                    .map(|b| format!("{:.2}", s.median.as_secs_f64() / b.as_secs_f64()))
                    .unwrap_or_else(|| "n/a".to_string());
                let _ = writeln!(
                    out,
                    "| {:<label_w$} | {:>9} | {:>6} | {:>6} | {ratio} |",
                    r.label,
                    ms(s.median),
                    ms(s.p90),
                    ms(s.min)
                );
            }
            Err(why) => {
                let why = why.replace('|', "/").replace('\n', " ");
                let _ = writeln!(
                    out,
                    "| {:<label_w$} | {:>9} | {:>6} | {:>6} | {why} |",
                    r.label, "-", "-", "-"
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn stats_of_odd_and_even_counts() {
        let s = Stats::of(&[d(5), d(1), d(3)]).expect("three samples");
        assert_eq!((s.min, s.median, s.p90), (d(1), d(3), d(5)));
        let s = Stats::of(&[d(4), d(1), d(3), d(2)]).expect("four samples");
        assert_eq!(s.median, Duration::from_micros(2500));
        let ten: Vec<Duration> = (1..=10).map(d).collect();
        assert_eq!(Stats::of(&ten).expect("ten samples").p90, d(9));
        assert!(Stats::of(&[]).is_none());
    }

    #[test]
    fn interleaved_runs_in_turn_and_keeps_going_after_a_failure() {
        let order = std::cell::RefCell::new(Vec::new());
        let mut n = 0;
        let rows = measure_interleaved(
            vec![
                Contender::new("a", || {
                    order.borrow_mut().push('a');
                    Ok(())
                }),
                Contender::new("b", || {
                    order.borrow_mut().push('b');
                    n += 1;
                    if n == 3 {
                        Err("b broke".into())
                    } else {
                        Ok(())
                    }
                }),
            ],
            1,
            3,
        );
        // Rounds: warm-up (a b), then a b, a b (b fails), a.
        assert_eq!(order.borrow().iter().collect::<String>(), "abababa");
        assert_eq!(rows[0].result.as_ref().map(|s| s.runs), Ok(3));
        assert_eq!(
            rows[1].result.as_ref().err().map(String::as_str),
            Some("b broke")
        );
    }

    #[test]
    fn render_has_numbers_ratios_and_reasons() {
        let rows = vec![
            Row {
                label: "base".into(),
                result: Stats::of(&[d(2)]).ok_or_else(String::new),
            },
            Row {
                label: "crun run".into(),
                result: Err("not installed: apt-get install crun".into()),
            },
        ];
        let t = render(&rows, Some(d(2)), "base");
        assert!(
            t.contains("| base      |      2.00 |   2.00 |   2.00 | 1.00 |"),
            "{t}"
        );
        assert!(t.contains("not installed: apt-get install crun |"), "{t}");
    }
}
