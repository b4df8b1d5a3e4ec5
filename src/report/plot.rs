//! Plots of result rows (`fwdbench plot`, `run --save --plot`, `compare --plot`): PNG and
//! SVG through plotters. Text is drawn with ab_glyph from the DejaVu Sans that the `dejavu`
//! crate embeds, so no system font library is needed.
//!
//! `fwdbench plot` draws two figures per output stem: `<stem>_batch` (x = batch size, one
//! line per identity and sequence length) and `<stem>_seq` (x = sequence length, one line
//! per identity and batch size), each a grid of latency, MFU and MBU (rows) for prefill and
//! decode (columns).

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::compare::{self, Comparison, Format, InputError, Measurement};
use super::{COPY_GBS, PEAK_TFLOPS};
use crate::plan::Phase;

#[derive(Debug, thiserror::Error)]
#[error("cannot draw {}: {msg}", path.display())]
pub struct PlotError {
    pub path: PathBuf,
    pub msg: String,
}

/// One line of a panel.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub label: String,
    /// Sorted by x.
    pub points: Vec<(f64, f64)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
}

/// Panels laid out row by row, `columns` wide, under one title.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    pub title: String,
    pub columns: usize,
    pub panels: Vec<Panel>,
}

/// Tableau's ten colours: distinct in print and for most colour-blind readers.
const COLOURS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn register_font() {
    static FONT: Once = Once::new();
    FONT.call_once(|| {
        // The embedded file is a valid TrueType font; failing here is a broken build.
        plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
            .unwrap_or_else(|_| panic!("the DejaVu Sans font the dejavu crate embeds does not parse"));
    });
}

/// Draws `fig` as PNG or SVG, by `path`'s extension.
pub fn render(fig: &Figure, path: &Path) -> Result<(), PlotError> {
    register_font();
    let err = |msg: String| PlotError { path: path.to_path_buf(), msg };
    let rows = fig.panels.len().div_ceil(fig.columns.max(1)).max(1);
    let size = (700 * fig.columns.max(1) as u32, 420 * rows as u32 + 50);
    match path.extension().and_then(|e| e.to_str()) {
        Some("png") => {
            draw(BitMapBackend::new(path, size).into_drawing_area(), fig, rows).map_err(|e| err(e.to_string()))
        }
        Some("svg") => draw(SVGBackend::new(path, size).into_drawing_area(), fig, rows).map_err(|e| err(e.to_string())),
        _ => Err(err("the file name must end in .png or .svg".to_string())),
    }
}

type DrawResult<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, fig: &Figure, rows: usize) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let body = root.titled(&fig.title, ("sans-serif", 26))?;
    for (area, panel) in body.split_evenly((rows, fig.columns.max(1))).iter().zip(&fig.panels) {
        draw_panel(area, panel)?;
    }
    root.present()
}

/// The x range in log2 units, half a doubling beyond the data on each side (batch sizes and
/// lengths are usually powers of two, so ticks sit on 1, 2, 4, ...), and the y top, 10%
/// above the data.
fn ranges(panel: &Panel) -> ((f64, f64), f64) {
    let points = || panel.series.iter().flat_map(|s| s.points.iter()).filter(|p| p.0 > 0.0);
    let x_lo = points().map(|p| p.0.log2()).fold(f64::INFINITY, f64::min);
    let x_hi = points().map(|p| p.0.log2()).fold(f64::NEG_INFINITY, f64::max);
    let y_hi = points().map(|p| p.1).fold(0.0, f64::max);
    let x = if x_lo.is_finite() { (x_lo.floor() - 0.5, x_hi.ceil() + 0.5) } else { (-0.5, 1.5) };
    (x, if y_hi > 0.0 { y_hi * 1.1 } else { 1.0 })
}

/// A log2 tick's label: the power of two at whole ticks, nothing between them.
fn power_of_two(v: &f64) -> String {
    if (v - v.round()).abs() < 1e-6 {
        format!("{}", 2f64.powi(v.round() as i32))
    } else {
        String::new()
    }
}

fn draw_panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, panel: &Panel) -> DrawResult<DB> {
    let ((x_lo, x_hi), y_hi) = ranges(panel);
    let title = if panel.series.is_empty() { format!("{} (no rows)", panel.title) } else { panel.title.clone() };
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(x_lo..x_hi, 0.0..y_hi)?;
    chart
        .configure_mesh()
        .x_desc(panel.x_label.as_str())
        .y_desc(panel.y_label.as_str())
        .x_labels((x_hi - x_lo).ceil() as usize + 1)
        .x_label_formatter(&power_of_two)
        .light_line_style(BLACK.mix(0.04))
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 14))
        .draw()?;
    for (i, s) in panel.series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let points: Vec<(f64, f64)> = s.points.iter().filter(|p| p.0 > 0.0).map(|p| (p.0.log2(), p.1)).collect();
        chart
            .draw_series(LineSeries::new(points.iter().copied(), colour.stroke_width(2)))?
            .label(s.label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2)));
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, colour.filled())))?;
    }
    if !panel.series.is_empty() {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .label_font(("sans-serif", 12))
            .draw()?;
    }
    Ok(())
}

/// What `fwdbench plot` puts on the y axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Latency,
    Mfu,
    Mbu,
}

impl Metric {
    fn value(self, m: &Measurement) -> Option<f64> {
        match self {
            Metric::Latency => Some(m.latency_ms),
            Metric::Mfu => m.mfu.map(|f| f * 100.0),
            Metric::Mbu => m.mbu.map(|f| f * 100.0),
        }
    }
    fn axis(self) -> String {
        match self {
            Metric::Latency => "latency (ms)".to_string(),
            Metric::Mfu => format!("MFU (% of {PEAK_TFLOPS} TFLOP/s)"),
            Metric::Mbu => format!("MBU (% of {COPY_GBS} GB/s)"),
        }
    }
    fn name(self) -> &'static str {
        match self {
            Metric::Latency => "latency",
            Metric::Mfu => "MFU",
            Metric::Mbu => "MBU",
        }
    }
}

/// The x axis of a `fwdbench plot` figure; lines are split by the other coordinate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Axis {
    Batch,
    Seq,
}

impl Axis {
    fn x(self, m: &Measurement) -> usize {
        if self == Axis::Batch {
            m.bsz
        } else {
            m.seq
        }
    }
    fn other(self, m: &Measurement) -> String {
        match self {
            Axis::Batch => format!("seq {}", m.seq),
            Axis::Seq => format!("bsz {}", m.bsz),
        }
    }
    fn label(self, phase: Phase) -> String {
        match (self, phase) {
            (Axis::Batch, _) => "batch size (sequences, log scale)".to_string(),
            (Axis::Seq, Phase::Prefill) => "sequence length (prompt tokens, log scale)".to_string(),
            (Axis::Seq, Phase::Decode) => "sequence length (cached tokens, log scale)".to_string(),
        }
    }
}

/// The parts of model/mconf/deploy that tell `rows` apart (all of them when none differ).
fn line_names(rows: &[Measurement]) -> impl Fn(&Measurement) -> String {
    let varies = |f: fn(&Measurement) -> &Option<String>| rows.iter().any(|r| f(r) != f(&rows[0]));
    let fields: [fn(&Measurement) -> &Option<String>; 3] = [|m| &m.model, |m| &m.mconf, |m| &m.deploy];
    let mut keep: Vec<fn(&Measurement) -> &Option<String>> = fields.into_iter().filter(|f| varies(*f)).collect();
    if keep.is_empty() {
        keep = fields.to_vec();
    }
    move |m| keep.iter().filter_map(|f| f(m).as_deref()).collect::<Vec<_>>().join(" ")
}

/// Groups `rows` into lines `name(row)`, x from `x`, y from `y` (rows without a y left out).
fn series(
    rows: &[&Measurement],
    name: impl Fn(&Measurement) -> String,
    x: impl Fn(&Measurement) -> usize,
    y: impl Fn(&Measurement) -> Option<f64>,
) -> Vec<Series> {
    let mut out: Vec<Series> = Vec::new();
    for r in rows {
        let Some(v) = y(r) else { continue };
        let label = name(r);
        let point = (x(r) as f64, v);
        match out.iter_mut().find(|s| s.label == label) {
            Some(s) => s.points.push(point),
            None => out.push(Series { label, points: vec![point] }),
        }
    }
    for s in &mut out {
        s.points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out
}

/// Latency, MFU and MBU against `axis`, prefill and decode side by side.
pub fn grid_figure(rows: &[Measurement], axis: Axis, title: &str) -> Figure {
    let rows = super::compare::newest(rows);
    let names = line_names(&rows);
    let mut panels = Vec::new();
    for metric in [Metric::Latency, Metric::Mfu, Metric::Mbu] {
        for phase in [Phase::Prefill, Phase::Decode] {
            let of_phase: Vec<&Measurement> = rows.iter().filter(|r| r.phase == phase).collect();
            panels.push(Panel {
                title: format!("{} {}", phase.name(), metric.name()),
                x_label: axis.label(phase),
                y_label: metric.axis(),
                series: series(
                    &of_phase,
                    |m| format!("{}, {}", names(m), axis.other(m)),
                    |m| axis.x(m),
                    |m| metric.value(m),
                ),
            });
        }
    }
    Figure { title: title.to_string(), columns: 2, panels }
}

/// Both `fwdbench plot` figures of `rows`, each as `<stem>_{batch,seq}.{png,svg}`.
pub fn write_grid_plots(rows: &[Measurement], stem: &Path, title: &str) -> Result<Vec<PathBuf>, PlotError> {
    let mut written = Vec::new();
    for (axis, suffix) in [(Axis::Batch, "batch"), (Axis::Seq, "seq")] {
        let fig = grid_figure(rows, axis, title);
        written.extend(write_both(&fig, stem, suffix)?);
    }
    Ok(written)
}

#[derive(Debug, thiserror::Error)]
pub enum PlotFilesError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Plot(#[from] PlotError),
}

/// `fwdbench plot` and `run --save --plot`: every row of `paths` (read as `format`, or
/// detected) in both figures under `stem`; returns the files written.
pub fn plot_files(paths: &[PathBuf], format: Option<Format>, stem: &Path) -> Result<Vec<PathBuf>, PlotFilesError> {
    let mut rows = Vec::new();
    for p in paths {
        rows.extend(compare::read(p, format)?.rows);
    }
    let names: Vec<String> =
        paths.iter().map(|p| p.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned())).collect();
    Ok(write_grid_plots(&rows, stem, &format!("fwdbench: {}", names.join(", ")))?)
}

/// `fig` as `<stem>_<suffix>.png` and `.svg`, creating the folder.
pub fn write_both(fig: &Figure, stem: &Path, suffix: &str) -> Result<Vec<PathBuf>, PlotError> {
    let base = stem.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "plot".to_string());
    let mut written = Vec::new();
    for ext in ["png", "svg"] {
        let path = stem.with_file_name(format!("{base}_{suffix}.{ext}"));
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| PlotError { path: path.clone(), msg: e.to_string() })?;
        }
        render(fig, &path)?;
        written.push(path);
    }
    Ok(written)
}

/// `compare --plot`: both sides' latencies and their ratio against batch size, one line
/// per side and sequence length, prefill and decode side by side.
pub fn comparison_figure(c: &Comparison) -> Figure {
    let mut panels = Vec::new();
    let batch = |m: &Measurement| m.bsz;
    for phase in [Phase::Prefill, Phase::Decode] {
        let rows: Vec<&Measurement> = c.pairs.iter().filter(|p| p.a.phase == phase).map(|p| &p.a).collect();
        let b_of = |m: &Measurement| c.pairs.iter().find(|p| &p.a == m).map(|p| p.b_ms);
        let mut lines = series(&rows, |m| format!("{}, seq {}", c.a_label, m.seq), batch, |m| Some(m.latency_ms));
        lines.extend(series(&rows, |m| format!("{}, seq {}", c.b_label, m.seq), batch, b_of));
        panels.push(Panel {
            title: format!("{} latency", phase.name()),
            x_label: Axis::Batch.label(phase),
            y_label: "latency (ms)".to_string(),
            series: lines,
        });
    }
    for phase in [Phase::Prefill, Phase::Decode] {
        let rows: Vec<&Measurement> = c.pairs.iter().filter(|p| p.a.phase == phase).map(|p| &p.a).collect();
        let ratio = |m: &Measurement| c.pairs.iter().find(|p| &p.a == m).map(|p| p.ratio());
        panels.push(Panel {
            title: format!("{} {} / {}", phase.name(), c.b_label, c.a_label),
            x_label: Axis::Batch.label(phase),
            y_label: format!("latency ratio ({} / {})", c.b_label, c.a_label),
            series: series(&rows, |m| format!("seq {}", m.seq), batch, ratio),
        });
    }
    Figure { title: format!("{} against {}", c.b_label, c.a_label), columns: 2, panels }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(deploy: &str, phase: Phase, bsz: usize, seq: usize, ms: f64) -> Measurement {
        Measurement {
            model: Some("qwen".into()),
            mconf: Some("2l".into()),
            deploy: Some(deploy.into()),
            phase,
            bsz,
            seq,
            latency_ms: ms,
            mfu: Some(0.1),
            mbu: None,
            line: 1,
        }
    }

    #[test]
    fn lines_are_named_by_what_varies_and_sorted() {
        let rows = vec![
            row("tp1", Phase::Prefill, 8, 128, 2.0),
            row("tp1", Phase::Prefill, 1, 128, 1.0),
            row("tp2", Phase::Prefill, 1, 128, 0.6),
            row("tp1", Phase::Decode, 1, 128, 0.1),
        ];
        let fig = grid_figure(&rows, Axis::Batch, "t");
        assert_eq!(fig.panels.len(), 6);
        let prefill_latency = &fig.panels[0];
        let labels: Vec<&str> = prefill_latency.series.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(labels, ["tp1, seq 128", "tp2, seq 128"]);
        assert_eq!(prefill_latency.series[0].points, [(1.0, 1.0), (8.0, 2.0)]);
        assert!(fig.panels[4].series.is_empty(), "no MBU column, no MBU lines");
        assert!((fig.panels[2].series[0].points[0].1 - 10.0).abs() < 1e-9, "MFU in percent");
    }

    #[test]
    fn x_ticks_are_powers_of_two_around_the_data() {
        assert_eq!(
            (power_of_two(&3.0), power_of_two(&0.0), power_of_two(&2.5)),
            ("8".into(), "1".into(), String::new())
        );
        let panel = |points| Panel {
            title: String::new(),
            x_label: String::new(),
            y_label: String::new(),
            series: vec![Series { label: String::new(), points }],
        };
        assert_eq!(ranges(&panel(vec![(16.0, 2.0)])), ((3.5, 4.5), 2.2));
        assert_eq!(ranges(&panel(vec![(3.0, 1.0), (512.0, 0.0)])).0, (0.5, 9.5));
    }

    #[test]
    fn only_png_and_svg_are_drawn() {
        let e = render(&grid_figure(&[], Axis::Seq, "t"), Path::new("x.pdf")).unwrap_err().to_string();
        assert!(e.contains(".png or .svg"), "{e}");
    }
}
