//! Small standalone SVG line charts for evaluation reports (ROC and precision–recall curves),
//! written by hand so that reports need no plotting dependency.
//!
//! A chart shows the unit square [0, 1] × [0, 1], with grid lines and labelled ticks every 0.2,
//! one polyline per [`Series`] in colours from a fixed palette, a legend naming each series and,
//! for ROC charts, the dashed diagonal of a classifier that guesses. Coordinates are written with
//! at most two decimals (a hundredth of a pixel is invisible) to keep files small.

/// One named curve of a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The legend's name for it; any text (it is escaped).
    pub name: String,
    /// Its (x, y) points in drawing order. Coordinates outside [0, 1] are drawn at the edge
    /// (clamped); points with a NaN coordinate are left out.
    pub points: Vec<(f64, f64)>,
}

/// The width and height of a chart, in pixels.
const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 420.0;
/// The square plotting area: its left and top edges and its side.
const PLOT_LEFT: f64 = 64.0;
const PLOT_TOP: f64 = 48.0;
const PLOT_SIDE: f64 = 300.0;
/// Where the legend starts: right of the plotting area, aligned with its top.
const LEGEND_LEFT: f64 = PLOT_LEFT + PLOT_SIDE + 24.0;
const LEGEND_ROW: f64 = 20.0;

/// Okabe and Ito's colour-blind-safe palette, most legible first (its yellow is last because it
/// is faint on white). Series beyond its length reuse the colours with dashed lines.
const PALETTE: [&str; 8] = [
    "#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000", "#f0e442",
];

/// `value` with at most two decimals and no trailing zeros (`56`, `56.5`, `56.25`).
fn number(value: f64) -> String {
    let text = format!("{value:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    // Rounding a tiny negative value leaves "-0".
    if text == "-0" {
        "0".to_owned()
    } else {
        text.to_owned()
    }
}

/// `text` safe inside an XML element or a double-quoted attribute: the five special characters
/// become entities, and the characters XML 1.0 forbids outright (control characters other
/// than tab and line ends, U+FFFE, U+FFFF) are dropped, since no entity can stand for them.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&apos;"),
            '\t' | '\n' | '\r' => escaped.push(character),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => {}
            c => escaped.push(c),
        }
    }
    escaped
}

/// The pixel position of a point of the unit square, clamped onto it.
fn to_pixels(x: f64, y: f64) -> (f64, f64) {
    (
        PLOT_LEFT + x.clamp(0.0, 1.0) * PLOT_SIDE,
        PLOT_TOP + (1.0 - y.clamp(0.0, 1.0)) * PLOT_SIDE,
    )
}

/// A complete standalone SVG document of a line chart on the unit square: `title` above,
/// `x_label` and `y_label` on the axes, one line per series with a legend entry each, and a
/// dashed diagonal from (0, 0) to (1, 1) when `diagonal` is set (for ROC curves, where it is a
/// classifier that guesses).
///
/// A series with a single point is drawn as a dot (an operating point); one with none still
/// gets its legend entry.
pub fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    diagonal: bool,
) -> String {
    let mut svg = String::new();
    svg.push_str(&format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"12\">\n",
        w = number(WIDTH),
        h = number(HEIGHT),
    ));
    svg.push_str(&format!(
        "<rect width=\"{}\" height=\"{}\" fill=\"#ffffff\"/>\n",
        number(WIDTH),
        number(HEIGHT)
    ));
    svg.push_str(&format!(
        "<text x=\"{}\" y=\"28\" text-anchor=\"middle\" font-size=\"15\" \
         font-weight=\"bold\">{}</text>\n",
        number(WIDTH / 2.0),
        escape(title)
    ));

    // Grid lines and tick labels every 0.2, in tenths to avoid 0.6000000000000001.
    for tenths in (0..=10).step_by(2) {
        let value = f64::from(tenths) / 10.0;
        let (x, y) = to_pixels(value, value);
        let (left, top) = to_pixels(0.0, 1.0);
        let (right, bottom) = to_pixels(1.0, 0.0);
        let label = number(value);
        svg.push_str(&format!(
            "<line x1=\"{x}\" y1=\"{top}\" x2=\"{x}\" y2=\"{bottom}\" stroke=\"#e0e0e0\"/>\n\
             <line x1=\"{left}\" y1=\"{y}\" x2=\"{right}\" y2=\"{y}\" stroke=\"#e0e0e0\"/>\n\
             <text x=\"{x}\" y=\"{below}\" text-anchor=\"middle\">{label}</text>\n\
             <text x=\"{beside}\" y=\"{baseline}\" text-anchor=\"end\">{label}</text>\n",
            x = number(x),
            y = number(y),
            top = number(top),
            bottom = number(bottom),
            left = number(left),
            right = number(right),
            below = number(bottom + 16.0),
            beside = number(left - 6.0),
            baseline = number(y + 4.0),
        ));
    }
    svg.push_str(&format!(
        "<rect x=\"{}\" y=\"{}\" width=\"{side}\" height=\"{side}\" fill=\"none\" \
         stroke=\"#333333\"/>\n",
        number(PLOT_LEFT),
        number(PLOT_TOP),
        side = number(PLOT_SIDE),
    ));
    svg.push_str(&format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
        number(PLOT_LEFT + PLOT_SIDE / 2.0),
        number(PLOT_TOP + PLOT_SIDE + 40.0),
        escape(x_label)
    ));
    let (y_label_x, y_label_y) = (20.0, PLOT_TOP + PLOT_SIDE / 2.0);
    svg.push_str(&format!(
        "<text x=\"{x}\" y=\"{y}\" text-anchor=\"middle\" \
         transform=\"rotate(-90 {x} {y})\">{}</text>\n",
        escape(y_label),
        x = number(y_label_x),
        y = number(y_label_y),
    ));

    if diagonal {
        let (x1, y1) = to_pixels(0.0, 0.0);
        let (x2, y2) = to_pixels(1.0, 1.0);
        svg.push_str(&format!(
            "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#999999\" \
             stroke-dasharray=\"4 4\"/>\n",
            number(x1),
            number(y1),
            number(x2),
            number(y2)
        ));
    }

    for (index, one) in series.iter().enumerate() {
        let colour = PALETTE[index % PALETTE.len()];
        // Past the palette, colours repeat: a dash pattern tells the repeats apart.
        let dash = if index >= PALETTE.len() {
            " stroke-dasharray=\"6 3\""
        } else {
            ""
        };
        let pixels: Vec<(f64, f64)> = one
            .points
            .iter()
            .filter(|(x, y)| !x.is_nan() && !y.is_nan())
            .map(|&(x, y)| to_pixels(x, y))
            .collect();
        match pixels.as_slice() {
            [] => {}
            [(x, y)] => svg.push_str(&format!(
                "<circle cx=\"{}\" cy=\"{}\" r=\"4\" fill=\"{colour}\"/>\n",
                number(*x),
                number(*y)
            )),
            _ => {
                let points: Vec<String> = pixels
                    .iter()
                    .map(|&(x, y)| format!("{},{}", number(x), number(y)))
                    .collect();
                svg.push_str(&format!(
                    "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"{dash} \
                     points=\"{}\"/>\n",
                    points.join(" ")
                ));
            }
        }

        // The legend shows a dot for a dot and a line sample for a line.
        let row_y = PLOT_TOP + 8.0 + index as f64 * LEGEND_ROW;
        if pixels.len() == 1 {
            svg.push_str(&format!(
                "<circle cx=\"{}\" cy=\"{}\" r=\"4\" fill=\"{colour}\"/>\n",
                number(LEGEND_LEFT + 12.0),
                number(row_y)
            ));
        } else {
            svg.push_str(&format!(
                "<line x1=\"{}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"{colour}\" \
                 stroke-width=\"2\"{dash}/>\n",
                number(LEGEND_LEFT),
                number(LEGEND_LEFT + 24.0),
                y = number(row_y),
            ));
        }
        svg.push_str(&format!(
            "<text x=\"{}\" y=\"{}\">{}</text>\n",
            number(LEGEND_LEFT + 30.0),
            number(row_y + 4.0),
            escape(&one.name),
        ));
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(name: &str, points: &[(f64, f64)]) -> Series {
        Series {
            name: name.to_owned(),
            points: points.to_vec(),
        }
    }

    /// Checks that every tag of `svg` is closed in order (a small well-formedness check: no
    /// stray `<` in text, no unclosed element) and returns how many elements it has.
    fn balanced_elements(svg: &str) -> usize {
        let mut open: Vec<&str> = Vec::new();
        let mut elements = 0;
        let mut rest = svg;
        while let Some(start) = rest.find('<') {
            let end = rest[start..].find('>').expect("every tag ends") + start;
            let tag = &rest[start + 1..end];
            assert!(!tag.contains('<'), "a tag inside a tag: {tag:?}");
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(open.pop(), Some(name), "closing tag out of order");
            } else {
                elements += 1;
                let name = tag.split_whitespace().next().expect("a tag has a name");
                if !tag.ends_with('/') {
                    open.push(name);
                }
            }
            // Text between tags holds no bare `&` that is not an entity.
            let text_end = rest[end..].find('<').map_or(rest.len(), |i| i + end);
            let text = &rest[end + 1..text_end];
            for (i, _) in text.match_indices('&') {
                let entity = &text[i..];
                assert!(
                    ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"]
                        .iter()
                        .any(|e| entity.starts_with(e)),
                    "bare & in {text:?}"
                );
            }
            rest = &rest[end + 1..];
        }
        assert!(open.is_empty(), "unclosed: {open:?}");
        elements
    }

    /// The `points` attribute of each polyline, split into its points.
    fn polylines(svg: &str) -> Vec<Vec<(f64, f64)>> {
        svg.lines()
            .filter(|line| line.starts_with("<polyline"))
            .map(|line| {
                let start = line.find("points=\"").expect("a polyline has points") + 8;
                let end = line[start..].find('"').expect("attribute ends") + start;
                line[start..end]
                    .split(' ')
                    .map(|pair| {
                        let (x, y) = pair.split_once(',').expect("x,y");
                        (
                            x.parse().expect("x is a number"),
                            y.parse().expect("y is a number"),
                        )
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn a_chart_is_a_complete_svg() {
        let svg = line_chart(
            "ROC",
            "false positive rate",
            "true positive rate",
            &[
                series("model", &[(0.0, 0.0), (0.1, 0.8), (1.0, 1.0)]),
                series(
                    "baseline",
                    &[(0.0, 0.0), (0.3, 0.7), (0.6, 0.9), (1.0, 1.0)],
                ),
            ],
            true,
        );
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(balanced_elements(&svg) > 20);
        // Both series and the legend's names.
        assert_eq!(
            polylines(&svg).iter().map(Vec::len).collect::<Vec<_>>(),
            [3, 4]
        );
        assert!(svg.contains(">model</text>") && svg.contains(">baseline</text>"));
        // Distinct colours, the diagonal, every tick label.
        assert!(svg.contains(PALETTE[0]) && svg.contains(PALETTE[1]));
        assert!(svg.contains("stroke-dasharray=\"4 4\""));
        for label in ["0", "0.2", "0.4", "0.6", "0.8", "1"] {
            assert_eq!(
                svg.matches(&format!(">{label}</text>")).count(),
                2,
                "{label}"
            );
        }
        let without = line_chart("PR", "recall", "precision", &[], false);
        assert!(!without.contains("stroke-dasharray=\"4 4\""));
        balanced_elements(&without);
    }

    #[test]
    fn points_map_onto_the_plot_and_are_clamped() {
        type Point = (f64, f64);
        // (data point, expected pixel): the unit square spans x 64..364 and y 348..48.
        let rows: &[(Point, Point)] = &[
            ((0.0, 0.0), (64.0, 348.0)),
            ((1.0, 1.0), (364.0, 48.0)),
            ((0.5, 0.25), (214.0, 273.0)),
            ((1.0 / 3.0, 0.0), (164.0, 348.0)),
            ((-0.5, 1.5), (64.0, 48.0)),
            ((f64::INFINITY, f64::NEG_INFINITY), (364.0, 348.0)),
        ];
        let points: Vec<(f64, f64)> = rows.iter().map(|row| row.0).collect();
        let svg = line_chart("t", "x", "y", &[series("s", &points)], false);
        let drawn = &polylines(&svg)[0];
        assert_eq!(drawn.len(), rows.len());
        for (&(point, expected), &got) in rows.iter().zip(drawn) {
            assert_eq!(got, expected, "{point:?}");
        }
        // NaN points cannot be drawn and are left out.
        let svg = line_chart(
            "t",
            "x",
            "y",
            &[series("s", &[(0.0, 0.0), (f64::NAN, 0.5), (1.0, 1.0)])],
            false,
        );
        assert_eq!(polylines(&svg)[0].len(), 2);
    }

    #[test]
    fn text_is_escaped() {
        let svg = line_chart(
            "a < b & \"c\" 'd'",
            "x > y",
            "<script>",
            &[series(
                "AT&T <model>\u{1}\u{ffff}",
                &[(0.0, 0.0), (1.0, 1.0)],
            )],
            false,
        );
        balanced_elements(&svg);
        assert!(svg.contains(">a &lt; b &amp; &quot;c&quot; &apos;d&apos;</text>"));
        assert!(svg.contains(">x &gt; y</text>"));
        assert!(svg.contains(">&lt;script&gt;</text>"));
        assert!(svg.contains(">AT&amp;T &lt;model&gt;</text>"));
        assert!(!svg.contains("<script") && !svg.contains('\u{1}') && !svg.contains('\u{ffff}'));
    }

    #[test]
    fn numbers_have_at_most_two_decimals() {
        let rows: &[(f64, &str)] = &[
            (56.0, "56"),
            (56.5, "56.5"),
            (56.25, "56.25"),
            (56.256, "56.26"),
            (1.0 / 3.0, "0.33"),
            (-0.001, "0"),
            (0.0, "0"),
            (100.0, "100"),
        ];
        for &(value, expected) in rows {
            assert_eq!(number(value), expected, "{value}");
        }
    }

    #[test]
    fn single_points_empty_series_and_many_series() {
        let many: Vec<Series> = (0..10)
            .map(|i| series(&format!("s{i}"), &[(0.0, 0.0), (1.0, f64::from(i) / 10.0)]))
            .collect();
        let svg = line_chart("t", "x", "y", &many, false);
        balanced_elements(&svg);
        assert_eq!(polylines(&svg).len(), 10);
        // The ninth series reuses the first colour, dashed.
        assert_eq!(svg.matches("stroke-dasharray=\"6 3\"").count(), 4);

        let svg = line_chart(
            "t",
            "x",
            "y",
            &[
                series("operating point", &[(0.1, 0.9)]),
                series("nothing", &[]),
            ],
            false,
        );
        balanced_elements(&svg);
        assert!(polylines(&svg).is_empty());
        assert!(svg.contains("<circle cx=\"94\" cy=\"78\""));
        assert!(svg.contains(">nothing</text>"));
    }
}
