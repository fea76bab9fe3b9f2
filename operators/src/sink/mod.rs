//! Sinks: record formats for window features (pure), and the [`WriteWindows`] operator.

#[cfg(feature = "kafka")]
pub mod kafka;
pub mod operator;

pub use operator::{WriteWindows, WriterFactory};

use crate::features::{WindowFeatures, FEATURE_NAMES};
use serde::{Deserialize, Serialize};
use std::fmt::Write;
use std::path::Path;

/// How window records are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WindowFormat {
    /// The W1 benchmark CSV: `instrument,window_start_ns,events,adds,cancels,execs,exec_volume,vwap,
    /// min_exec_price,max_exec_price` (prices in ticks; vwap and min/max empty without executions).
    W1Csv,
    /// Every feature as CSV: `instrument,window_start_ns,window_end_ns,` then [`FEATURE_NAMES`].
    FeaturesCsv,
    /// Every feature as JSON lines: `{"instrument":..,"window_start_ns":..,"window_end_ns":..,
    /// "schema_version":1,"features":{name: value or null}}`.
    JsonLines,
}

impl WindowFormat {
    /// `.jsonl`/`.json`/`.ndjson` -> JSON lines, `.csv` -> `default_csv`.
    pub fn from_path(path: &Path, default_csv: WindowFormat) -> Option<WindowFormat> {
        match path.extension()?.to_str()? {
            "jsonl" | "json" | "ndjson" => Some(WindowFormat::JsonLines),
            "csv" => Some(default_csv),
            _ => None,
        }
    }

    /// The header line (without newline), if the format has one.
    pub fn header(self) -> Option<String> {
        match self {
            WindowFormat::W1Csv => Some(
                "instrument,window_start_ns,events,adds,cancels,execs,exec_volume,vwap,min_exec_price,max_exec_price"
                    .into(),
            ),
            WindowFormat::FeaturesCsv => {
                Some(format!("instrument,window_start_ns,window_end_ns,{}", FEATURE_NAMES.join(",")))
            }
            WindowFormat::JsonLines => None,
        }
    }

    /// Appends one record (with a trailing newline).
    ///
    /// ```
    /// use lobsentry_operators::sink::WindowFormat;
    /// use lobsentry_operators::features::{WindowFeatures, FEATURE_COUNT};
    /// use lobsentry_operators::event::InstrumentId;
    /// use lobsentry_operators::window::Window;
    /// let mut values = [f64::NAN; FEATURE_COUNT];
    /// values[..5].copy_from_slice(&[3.0, 2.0, 1.0, 0.0, 0.0]);
    /// let w = WindowFeatures { instrument: InstrumentId::new("X").unwrap(),
    ///     window: Window { start: 0, end: 10 }, exec_price_range: None, vwap_ticks: None, values };
    /// let mut s = String::new();
    /// WindowFormat::W1Csv.write(&w, &mut s);
    /// assert_eq!(s, "X,0,3,2,1,0,0,,,\n");
    /// ```
    pub fn write(self, w: &WindowFeatures, out: &mut String) {
        match self {
            WindowFormat::W1Csv => {
                let v = &w.values;
                let _ = write!(
                    out,
                    "{},{},{},{},{},{},{},",
                    w.instrument, w.window.start, v[0] as u64, v[1] as u64, v[2] as u64, v[3] as u64, v[4] as u64
                );
                if let (Some(vwap), Some((lo, hi))) = (w.vwap_ticks, w.exec_price_range) {
                    let _ = write!(out, "{vwap:.4},{lo},{hi}");
                } else {
                    out.push_str(",,");
                }
                out.push('\n');
            }
            WindowFormat::FeaturesCsv => {
                let _ = write!(out, "{},{},{}", w.instrument, w.window.start, w.window.end);
                for v in &w.values {
                    out.push(',');
                    if v.is_finite() {
                        let _ = write!(out, "{v}");
                    }
                }
                out.push('\n');
            }
            WindowFormat::JsonLines => {
                out.push_str(r#"{"instrument":""#);
                crate::event::push_json_escaped(w.instrument.as_str(), out);
                let _ = write!(
                    out,
                    r#"","window_start_ns":{},"window_end_ns":{},"schema_version":{},"features":{{"#,
                    w.window.start,
                    w.window.end,
                    crate::features::FEATURE_SCHEMA_VERSION
                );
                for (i, (name, v)) in FEATURE_NAMES.iter().zip(&w.values).enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    if v.is_finite() {
                        let _ = write!(out, r#""{name}":{v}"#);
                    } else {
                        let _ = write!(out, r#""{name}":null"#);
                    }
                }
                out.push_str("}}\n");
            }
        }
    }
}
