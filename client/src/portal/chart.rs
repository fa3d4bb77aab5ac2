//! A line chart as inline SVG, drawn on the server (no JavaScript, no external assets). Each
//! series has its own colour *and* dash pattern so it reads without colour vision; the data are
//! also given as a table next to the chart.

use std::fmt::Write as _;

use super::pages::esc;

/// One line.
pub struct Series {
    pub name: String,
    /// (round, value); non-finite values are gaps.
    pub points: Vec<(f64, f64)>,
}

const STYLES: [(&str, &str); 5] = [
    ("#0b4f8a", ""),
    ("#a4161a", "6 4"),
    ("#1d6b35", "2 3"),
    ("#6a3d9a", "10 3 2 3"),
    ("#7a4b00", "1 2"),
];

/// An SVG chart of `series` with y from `y_min` to `y_max`.
pub fn line_chart(id: &str, title: &str, series: &[Series], y_min: f64, y_max: f64) -> String {
    let (w, h) = (720.0, 320.0);
    let (l, r, t, b) = (56.0, 170.0, 20.0, 44.0);
    let (pw, ph) = (w - l - r, h - t - b);
    let xs = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .filter(|x| x.is_finite());
    let (x0, x1) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
        (a.min(x), b.max(x))
    });
    let (x0, x1) = if x0.is_finite() && x1 > x0 {
        (x0, x1)
    } else {
        (0.0, 1.0)
    };
    let span = if y_max > y_min { y_max - y_min } else { 1.0 };
    let px = |x: f64| l + (x - x0) / (x1 - x0) * pw;
    let py = |y: f64| t + ph - (y.clamp(y_min, y_min + span) - y_min) / span * ph;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="chart" id="{id}" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-labelledby="{id}-title" xmlns="http://www.w3.org/2000/svg"><title id="{id}-title">{}</title>"#,
        esc(title)
    );
    for i in 0..=5 {
        let y = y_min + span * i as f64 / 5.0;
        let _ = write!(
            s,
            r##"<line x1="{l}" x2="{}" y1="{py:.1}" y2="{py:.1}" stroke="#d0d0d0"/><text x="{}" y="{:.1}" font-size="12" text-anchor="end" fill="#1a1a1a">{y:.2}</text>"##,
            l + pw,
            l - 6.0,
            py(y) + 4.0,
            py = py(y)
        );
    }
    let ticks = ((x1 - x0).round() as usize).clamp(1, 10);
    for i in 0..=ticks {
        let x = x0 + (x1 - x0) * i as f64 / ticks as f64;
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{}" font-size="12" text-anchor="middle" fill="#1a1a1a">{}</text>"##,
            px(x),
            t + ph + 18.0,
            x.round()
        );
    }
    let _ = write!(
        s,
        r##"<text x="{:.1}" y="{}" font-size="13" text-anchor="middle" fill="#1a1a1a">round</text><rect x="{l}" y="{t}" width="{pw}" height="{ph}" fill="none" stroke="#1a1a1a"/>"##,
        l + pw / 2.0,
        h - 6.0
    );
    for (k, ser) in series.iter().enumerate() {
        let (colour, dash) = STYLES[k % STYLES.len()];
        let dash = if dash.is_empty() {
            String::new()
        } else {
            format!(r#" stroke-dasharray="{dash}""#)
        };
        let mut path = String::new();
        let mut pen_up = true;
        for &(x, y) in &ser.points {
            if !(x.is_finite() && y.is_finite()) {
                pen_up = true;
                continue;
            }
            let _ = write!(
                path,
                "{}{:.1},{:.1} ",
                if pen_up { "M" } else { "L" },
                px(x),
                py(y)
            );
            pen_up = false;
        }
        if !path.is_empty() {
            let _ = write!(
                s,
                r#"<path d="{}" fill="none" stroke="{colour}" stroke-width="2.5"{dash}/>"#,
                path.trim_end()
            );
        }
        for &(x, y) in ser
            .points
            .iter()
            .filter(|p| p.0.is_finite() && p.1.is_finite())
        {
            let _ = write!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"/>"#,
                px(x),
                py(y)
            );
        }
        let ly = t + 14.0 + 22.0 * k as f64;
        let _ = write!(
            s,
            r##"<line x1="{}" x2="{}" y1="{ly}" y2="{ly}" stroke="{colour}" stroke-width="2.5"{dash}/><text x="{}" y="{}" font-size="13" fill="#1a1a1a">{}</text>"##,
            l + pw + 12.0,
            l + pw + 42.0,
            l + pw + 48.0,
            ly + 4.0,
            esc(&ser.name)
        );
    }
    s.push_str("</svg>");
    s
}
