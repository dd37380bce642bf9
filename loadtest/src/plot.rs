//! `--plot FILE.svg`: latency over time (p50, p99 and max of each second)
//! above the percentile spectrum of the whole run, the two pictures a perf
//! engineer reaches for first. SVG only: plotters draws bitmap text with a
//! system font and panics when there is none; SVG text needs no font.

use std::path::Path;

use hdrhistogram::Histogram;
use plotters::prelude::*;

use crate::error::Error;
use crate::run::IntervalPoint;
use crate::units::{to_f64, to_u64_saturating};

/// Which value of an interval a line shows.
type Pick = fn(&IntervalPoint) -> u64;

fn ms(ns: u64) -> f64 {
    to_f64(ns) / 1e6
}

/// A small whole number of the chart (a label count, decimal places) as a
/// `usize`.
fn count(x: f64) -> usize {
    usize::try_from(to_u64_saturating(x)).unwrap_or(usize::MAX)
}

/// Writes the two charts to `path`.
pub fn write_svg(
    path: &Path,
    title: &str,
    intervals: &[IntervalPoint],
    latency_ns: &Histogram<u64>,
) -> Result<(), Error> {
    draw(path, title, intervals, latency_ns)
        .map_err(|e| Error::file(path, std::io::Error::other(e.to_string())))
}

fn draw(
    path: &Path,
    title: &str,
    intervals: &[IntervalPoint],
    latency_ns: &Histogram<u64>,
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (1200, 900)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 18))?;
    let (upper, lower) = root.split_vertically(430);

    // Latency over time, each second drawn at its middle. The last
    // interval can be a sliver (the drain after the window); a few
    // milliseconds of responses would draw a misleading cliff.
    let intervals: Vec<&IntervalPoint> = intervals.iter().filter(|p| p.length_s >= 0.2).collect();
    let t_max = intervals.iter().map(|p| p.end_s).fold(1.0f64, f64::max);
    let y_max = intervals
        .iter()
        .map(|p| ms(p.max_ns))
        .fold(0.001f64, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&upper)
        .caption(
            "latency over time (from intended send time)",
            ("sans-serif", 16),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..t_max, 0f64..y_max)?;
    chart
        .configure_mesh()
        .x_desc("seconds since measuring started")
        .y_desc("ms")
        .draw()?;
    let series: [(&str, RGBColor, Pick); 3] = [
        ("max", RED, |p| p.max_ns),
        ("p99", BLUE, |p| p.p99_ns),
        ("p50", GREEN, |p| p.p50_ns),
    ];
    for (name, color, value) in series {
        chart
            .draw_series(LineSeries::new(
                intervals
                    .iter()
                    .map(|p| (p.end_s - p.length_s / 2.0, ms(value(p)))),
                color.stroke_width(2),
            ))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;

    // Percentile spectrum: x is log10(1 / (1 - q)), so 90%, 99%, 99.9% are
    // evenly spaced, as in HdrHistogram's own plots.
    let mut points: Vec<(f64, f64)> = Vec::new();
    if !latency_ns.is_empty() {
        for v in latency_ns.iter_quantiles(4) {
            let q = v.quantile_iterated_to();
            if q >= 1.0 {
                break;
            }
            points.push(((1.0 / (1.0 - q)).log10(), ms(v.value_iterated_to())));
        }
        let x_end = points.last().map_or(1.0, |p| p.0).max(1.0);
        points.push((x_end, ms(latency_ns.max())));
    }
    let x_max = points.last().map_or(1.0, |p| p.0).max(1.0);
    let y_max = points.iter().map(|p| p.1).fold(0.001f64, f64::max) * 1.1;
    let mut spectrum = ChartBuilder::on(&lower)
        .caption("percentile spectrum of the run", ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)?;
    spectrum
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("ms")
        .x_labels(count(x_max.ceil()) + 1)
        .x_label_formatter(&|x| {
            let p = 100.0 - 100.0 / 10f64.powf(*x);
            if p < 99.0 {
                format!("{p:.0}%")
            } else {
                let digits = count(x.round()).saturating_sub(2);
                format!("{p:.digits$}%")
            }
        })
        .draw()?;
    spectrum.draw_series(LineSeries::new(points, BLUE.stroke_width(2)))?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_an_svg_with_both_charts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.svg");
        let mut h = crate::stats::histogram();
        for v in 1..=10_000u64 {
            h.record(v * 1_000).unwrap();
        }
        let intervals: Vec<IntervalPoint> = (1..=5)
            .map(|s| IntervalPoint {
                end_s: f64::from(s),
                length_s: 1.0,
                count: 2000,
                p50_ns: 5_000_000,
                p90_ns: 9_000_000,
                p99_ns: 9_900_000,
                max_ns: 10_000_000,
                ..IntervalPoint::default()
            })
            .collect();
        write_svg(&path, "test run", &intervals, &h).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..100]);
        assert!(svg.contains("percentile spectrum"));
        assert!(svg.contains("latency over time"));
        assert!(svg.contains("99.9%"));
    }
}
