//! An SVG plot of latency distributions: latency (ms, log scale) against percentile (on the
//! usual "nines" scale, so the tail is visible), one line per histogram.

use hdrhistogram::Histogram;

const W: f64 = 760.0;
const H: f64 = 420.0;
const LEFT: f64 = 70.0;
const BOTTOM: f64 = 50.0;
const TOP: f64 = 40.0;
const RIGHT: f64 = 20.0;
const COLOURS: [&str; 3] = ["#1f77b4", "#d62728", "#2ca02c"];

/// Percentiles plotted: 0, 50, 90, 99, 99.9, 99.99 and points between.
fn nines(q: f64) -> f64 {
    // x = -log10(1 - q): 0 at q=0, 1 at 90%, 2 at 99%, ...
    -(1.0 - q).max(1e-5).log10()
}

/// The SVG document for `series` (name, histogram in µs).
pub fn svg(title: &str, series: &[(&str, &Histogram<u64>)]) -> String {
    let max_x = 4.0; // 99.99 %
    let ys: Vec<f64> = series
        .iter()
        .flat_map(|(_, h)| [h.min().max(1) as f64, h.max().max(1) as f64])
        .collect();
    let lo = ys
        .iter()
        .cloned()
        .fold(f64::MAX, f64::min)
        .max(1.0)
        .log10()
        .floor();
    let hi = ys
        .iter()
        .cloned()
        .fold(1.0, f64::max)
        .log10()
        .ceil()
        .max(lo + 1.0);
    let px = |x: f64| LEFT + (W - LEFT - RIGHT) * (x / max_x);
    let py = |us: f64| H - BOTTOM - (H - BOTTOM - TOP) * ((us.max(1.0).log10() - lo) / (hi - lo));
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"22\" font-size=\"15\" text-anchor=\"middle\">{}</text>\n",
        W / 2.0,
        escape(title)
    );
    for (label, x) in [
        ("0%", 0.0),
        ("90%", 1.0),
        ("99%", 2.0),
        ("99.9%", 3.0),
        ("99.99%", 4.0),
    ] {
        s.push_str(&format!(
            "<line x1=\"{0}\" y1=\"{1}\" x2=\"{0}\" y2=\"{2}\" stroke=\"#ddd\"/><text x=\"{0}\" y=\"{3}\" text-anchor=\"middle\">{label}</text>\n",
            px(x), TOP, H - BOTTOM, H - BOTTOM + 18.0
        ));
    }
    let mut e = lo;
    while e <= hi {
        let us = 10f64.powf(e);
        let y = py(us);
        s.push_str(&format!(
            "<line x1=\"{LEFT}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{} ms</text>\n",
            W - RIGHT, LEFT - 6.0, y + 4.0, trim(us / 1000.0)
        ));
        e += 1.0;
    }
    s.push_str(&format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">percentile</text>\n",
        W / 2.0,
        H - 12.0
    ));
    for (i, (name, h)) in series.iter().enumerate() {
        if h.is_empty() {
            continue;
        }
        let colour = COLOURS[i % COLOURS.len()];
        let points: Vec<String> = (0..=200)
            .map(|k| {
                let x = max_x * k as f64 / 200.0;
                let q = 1.0 - 10f64.powf(-x);
                format!(
                    "{:.1},{:.1}",
                    px(nines(q)),
                    py(h.value_at_quantile(q) as f64)
                )
            })
            .collect();
        s.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>\n\
             <text x=\"{}\" y=\"{}\" fill=\"{colour}\">{} (n={}, max {} ms)</text>\n",
            points.join(" "),
            LEFT + 10.0,
            TOP + 16.0 + 16.0 * i as f64,
            escape(name),
            h.len(),
            trim(h.max() as f64 / 1000.0)
        ));
    }
    s.push_str("</svg>\n");
    s
}

fn trim(ms: f64) -> String {
    let s = format!("{ms:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_one_line_per_series_with_labels() {
        let mut a = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        let mut b = a.clone();
        for v in 1..1000 {
            a.record(v * 10).unwrap();
            b.record(v * 100).unwrap();
        }
        let svg = svg("t <1>", &[("join latency", &a), ("ping RTT", &b)]);
        assert!(svg.starts_with("<svg"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("join latency (n=999"));
        assert!(svg.contains("t &lt;1&gt;"));
        assert!(svg.contains("99.9%"));
    }
}
