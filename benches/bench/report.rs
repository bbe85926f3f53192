//! Figures, their statistics over runs, the targets they are held to, the printed table and
//! the JSON file.

use serde::Serialize;
use std::path::Path;

/// One measured quantity: every run's value, in `unit`.
pub struct Figure {
    pub section: &'static str,
    pub name: String,
    pub unit: &'static str,
    pub samples: Vec<f64>,
}

impl Figure {
    pub fn new(section: &'static str, name: &str, unit: &'static str, samples: Vec<f64>) -> Self {
        assert!(!samples.is_empty(), "figure {section}/{name} has no runs");
        Figure {
            section,
            name: name.to_string(),
            unit,
            samples,
        }
    }

    pub fn stats(&self) -> Stats {
        let mut s = self.samples.clone();
        s.sort_by(f64::total_cmp);
        Stats {
            min: s[0],
            median: median_of_sorted(&s),
            p99: nearest_rank(&s, 0.99),
        }
    }
}

/// What a section measured: its figures, and the targets they met or missed.
#[derive(Default)]
pub struct Report {
    pub figures: Vec<Figure>,
    pub targets: Vec<Target>,
}

/// A figure held to a bound: met when `value <= limit`.
#[derive(Serialize)]
pub struct Target {
    pub section: &'static str,
    pub name: String,
    pub value: f64,
    pub limit: f64,
    pub unit: &'static str,
    pub met: bool,
}

impl Target {
    pub fn new(
        section: &'static str,
        name: &str,
        value: f64,
        limit: f64,
        unit: &'static str,
    ) -> Self {
        Target {
            section,
            name: name.to_string(),
            value,
            limit,
            unit,
            met: value <= limit,
        }
    }
}

#[derive(Serialize)]
pub struct Stats {
    pub min: f64,
    pub median: f64,
    /// Nearest-rank percentile: with fewer than 100 runs it is the largest value.
    pub p99: f64,
}

pub fn median(samples: &[f64]) -> f64 {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    median_of_sorted(&s)
}

fn median_of_sorted(s: &[f64]) -> f64 {
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn nearest_rank(s: &[f64], p: f64) -> f64 {
    let rank = (p * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

pub fn print_targets(targets: &[Target]) {
    let width = targets.iter().map(|t| t.name.len()).max().unwrap_or(0);
    println!();
    println!(
        "{:<10} {:<width$} {:>10} {:>10} {:<7} result",
        "section", "target", "value", "limit", "unit"
    );
    for t in targets {
        println!(
            "{:<10} {:<width$} {:>10.3} {:>10.3} {:<7} {}",
            t.section,
            t.name,
            t.value,
            t.limit,
            t.unit,
            if t.met { "met" } else { "MISSED" }
        );
    }
}

pub fn print_table(figures: &[Figure]) {
    let width = figures.iter().map(|f| f.name.len()).max().unwrap_or(0);
    println!(
        "{:<10} {:<width$} {:<7} {:>4} {:>10} {:>10} {:>10}",
        "section", "figure", "unit", "runs", "min", "median", "p99"
    );
    for f in figures {
        let s = f.stats();
        println!(
            "{:<10} {:<width$} {:<7} {:>4} {:>10.3} {:>10.3} {:>10.3}",
            f.section,
            f.name,
            f.unit,
            f.samples.len(),
            s.min,
            s.median,
            s.p99
        );
    }
}

#[derive(Serialize)]
struct JsonFigure<'a> {
    section: &'a str,
    name: &'a str,
    unit: &'a str,
    #[serde(flatten)]
    stats: Stats,
    samples: &'a [f64],
}

pub fn write_json(path: &Path, figures: &[Figure], targets: &[Target], seconds: f64) {
    let figures: Vec<JsonFigure> = figures
        .iter()
        .map(|f| JsonFigure {
            section: f.section,
            name: &f.name,
            unit: f.unit,
            stats: f.stats(),
            samples: &f.samples,
        })
        .collect();
    let json = serde_json::json!({ "seconds": seconds, "figures": figures, "targets": targets });
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .unwrap_or_else(|e| panic!("creating {} for the JSON report: {e}", dir.display()));
    }
    let text = serde_json::to_string_pretty(&json).expect("serializing the figures");
    std::fs::write(path, text + "\n")
        .unwrap_or_else(|e| panic!("writing the JSON report {}: {e}", path.display()));
}
