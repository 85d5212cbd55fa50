//! An SVG plot of latency distributions, as HdrHistogram draws them: latency by
//! percentile, the percentile axis spread by nines (90%, 99%, 99.9%, ...), one line
//! per server.

use std::fmt::Write as _;
use std::time::Duration;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 420.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
/// The percentile axis ends at 99.99%: four nines.
const NINES: f64 = 4.0;
const COLORS: [&str; 4] = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"];

/// The latency at quantile `q` of sorted `latencies`, in milliseconds.
fn at(latencies: &[Duration], q: f64) -> f64 {
    let index = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len().max(1)) - 1;
    latencies.get(index).map_or(0.0, |latency| latency.as_secs_f64() * 1000.0)
}

/// A round upper bound for the latency axis.
fn nice_ceiling(value: f64) -> f64 {
    if value <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|step| step * magnitude)
        .find(|bound| *bound >= value)
        .unwrap_or(value)
}

/// The plot of each named series of sorted latencies, titled `title`.
pub(crate) fn latency_svg(title: &str, series: &[(&str, &[Duration])]) -> String {
    let ceiling = nice_ceiling(series.iter().map(|(_, l)| at(l, 0.9999)).fold(0.0, f64::max));
    let plot_width = WIDTH - LEFT - RIGHT;
    let plot_height = HEIGHT - TOP - BOTTOM;
    let x = |nines: f64| LEFT + nines / NINES * plot_width;
    let y = |ms: f64| TOP + plot_height - (ms / ceiling).min(1.0) * plot_height;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="14">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    for (nines, label) in [(0.0, "0%"), (1.0, "90%"), (2.0, "99%"), (3.0, "99.9%"), (4.0, "99.99%")] {
        let at_x = x(nines);
        let _ = writeln!(
            svg,
            r##"<line x1="{at_x:.1}" y1="{TOP}" x2="{at_x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{at_x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
            TOP + plot_height,
            TOP + plot_height + 18.0
        );
    }
    for step in 0..=5 {
        let ms = ceiling * f64::from(step) / 5.0;
        let at_y = y(ms);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{at_y:.1}" x2="{:.1}" y2="{at_y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{ms}</text>"##,
            LEFT + plot_width,
            LEFT - 6.0,
            at_y + 4.0
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text><text x="16" y="{:.1}" text-anchor="middle" transform="rotate(-90 16 {:.1})">latency (ms)</text>"#,
        LEFT + plot_width / 2.0,
        HEIGHT - 8.0,
        TOP + plot_height / 2.0,
        TOP + plot_height / 2.0
    );
    for (n, (name, latencies)) in series.iter().enumerate() {
        let color = COLORS[n % COLORS.len()];
        let points: Vec<String> = (0..=400)
            .map(|step| {
                let nines = f64::from(step) / 100.0;
                let q = 1.0 - 10f64.powf(-nines);
                format!("{:.1},{:.1}", x(nines), y(at(latencies, q)))
            })
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            points.join(" ")
        );
        let legend_y = TOP + 16.0 + 18.0 * n as f64;
        let _ = writeln!(
            svg,
            r#"<line x1="{:.1}" y1="{legend_y:.1}" x2="{:.1}" y2="{legend_y:.1}" stroke="{color}" stroke-width="2"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            LEFT + 12.0,
            LEFT + 36.0,
            LEFT + 42.0,
            legend_y + 4.0,
            escape(name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_series_is_a_rising_line_under_the_axis_ceiling() {
        let fast: Vec<Duration> = (1..=10_000).map(Duration::from_micros).collect();
        let slow: Vec<Duration> = (1..=10_000).map(|n| Duration::from_micros(n * 3)).collect();
        let svg = latency_svg("put <1000 clients>", &[("cairn", &fast), ("etcd", &slow)]);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("put &lt;1000 clients&gt;") && svg.contains(">99.9%<"));
        // The slow series' p99.99 is 30 ms: the axis ends at 50.
        assert!(svg.contains(">50<") && !svg.contains(">60<"));
        let lines: Vec<Vec<(f64, f64)>> = svg
            .lines()
            .filter_map(|line| line.split("points=\"").nth(1))
            .map(|points| {
                points
                    .trim_end_matches("\"/>")
                    .split(' ')
                    .map(|point| {
                        let (x, y) = point.split_once(',').unwrap();
                        (x.parse().unwrap(), y.parse().unwrap())
                    })
                    .collect()
            })
            .collect();
        assert_eq!(lines.len(), 2);
        for line in &lines {
            assert_eq!(line.len(), 401);
            // Left to right, and never downwards (SVG's y grows down).
            assert!(line.windows(2).all(|pair| pair[1].0 > pair[0].0 && pair[1].1 <= pair[0].1));
        }
        // The slow server's line lies above (smaller y) the fast one's at the end.
        assert!(lines[1][400].1 < lines[0][400].1);
    }

    #[test]
    fn the_latency_axis_ends_at_a_round_number() {
        assert_eq!(nice_ceiling(0.42), 0.5);
        assert_eq!(nice_ceiling(7.0), 10.0);
        assert_eq!(nice_ceiling(130.0), 200.0);
        assert_eq!(nice_ceiling(0.0), 1.0);
    }
}
