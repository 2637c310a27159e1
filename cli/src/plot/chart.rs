//! The picture itself, on any plotters backend: three panels sharing the step axis (loss, step
//! time, workers), a vertical line at every repair and rebalance, labelled in the top panel.

use std::sync::OnceLock;

use anyk_core::history::{ChangeKind, History, LayoutChange};
use plotters::coord::Shift;
use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::PlotError;

const FONT: &str = "sans-serif";
const LOSS: RGBColor = RGBColor(31, 119, 180);
const STEP_TIME: RGBColor = RGBColor(255, 127, 14);
const SKIPPED: RGBColor = RGBColor(148, 103, 189);
const MARGIN: RGBColor = RGBColor(90, 90, 90);
const REPAIR: RGBColor = RGBColor(214, 39, 40);
const REBALANCE: RGBColor = RGBColor(44, 160, 44);

/// One panel: its y axis and its lines.
struct Panel {
    y_desc: &'static str,
    lines: Vec<Line>,
    /// A logarithmic y axis (when every value is above 0): a loss falls by orders of magnitude.
    log: bool,
    /// Where the legend goes: where the lines usually leave room.
    legend: SeriesLabelPosition,
    /// Whether the layout changes are labelled here (in one panel only: the lines say enough).
    label_changes: bool,
}

struct Line {
    name: &'static str,
    color: RGBColor,
    points: Vec<(f64, f64)>,
}

pub fn draw<DB: DrawingBackend>(backend: DB, history: &History) -> Result<(), PlotError>
where
    DB::ErrorType: 'static,
{
    register_font()?;
    let root = backend.into_drawing_area();
    root.fill(&WHITE).map_err(drawing)?;
    let titled = root.titled(&title(history), (FONT, 26)).map_err(drawing)?;
    let x_max = history
        .steps
        .iter()
        .map(|p| p.step)
        .chain(history.changes.iter().map(|c| c.step))
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    for (area, panel) in titled.split_evenly((3, 1)).iter().zip(panels(history)) {
        draw_panel(area, x_max, &panel, &history.changes).map_err(drawing)?;
    }
    root.present().map_err(drawing)
}

fn panels(history: &History) -> [Panel; 3] {
    let points = |value: &dyn Fn(&anyk_core::history::StepPoint) -> Option<f64>| {
        let steps = history.steps.iter();
        steps.filter_map(|p| Some((p.step as f64, value(p)?))).collect()
    };
    let loss = Line {
        name: "training loss (mean over blocks)",
        color: LOSS,
        points: points(&|p| p.loss.map(f64::from)),
    };
    let step_time = Line {
        name: "step time: release to first cover",
        color: STEP_TIME,
        points: points(&|p| p.step_ms.map(f64::from)),
    };
    let skipped = Line {
        name: "stragglers skipped per step",
        color: SKIPPED,
        points: points(&|p| Some(p.skipped as f64 / p.steps.max(1) as f64)),
    };
    let margin = Line {
        name: "coverage margin (more losses tolerated)",
        color: MARGIN,
        points: points(&|p| Some(p.margin as f64)),
    };
    let panel = |y_desc, lines, legend| Panel {
        y_desc,
        lines,
        log: false,
        legend,
        label_changes: false,
    };
    [
        Panel {
            log: true,
            label_changes: true,
            // A falling loss leaves the lower left empty.
            ..panel("loss", vec![loss], SeriesLabelPosition::LowerLeft)
        },
        panel("ms", vec![step_time], SeriesLabelPosition::LowerRight),
        panel("workers", vec![skipped, margin], SeriesLabelPosition::LowerRight),
    ]
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    x_max: f64,
    panel: &Panel,
    changes: &[LayoutChange],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let (y, log) = y_range(panel);
    let mut builder = ChartBuilder::on(area);
    builder.margin(12).x_label_area_size(36).y_label_area_size(64);
    if log {
        let chart = builder.build_cartesian_2d(0.0..x_max, y.clone().log_scale())?;
        fill(chart, y, panel, changes)
    } else {
        let chart = builder.build_cartesian_2d(0.0..x_max, y.clone())?;
        fill(chart, y, panel, changes)
    }
}

/// The y axis that shows every value of `panel`, and whether it is logarithmic.
fn y_range(panel: &Panel) -> (std::ops::Range<f64>, bool) {
    let values = || panel.lines.iter().flat_map(|l| l.points.iter().map(|p| p.1));
    let (lo, hi) = values().fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if panel.log && lo > 0.0 && lo <= hi {
        return (lo / 1.5..hi * 1.5, true);
    }
    let lo = lo.min(0.0);
    let hi = if hi > lo { hi + (hi - lo) * 0.15 } else { lo + 1.0 };
    (lo..hi, false)
}

/// Draws the mesh, the layout changes and the lines of `panel` on `chart` (y axis `y`).
fn fill<'a, DB, Y>(
    mut chart: ChartContext<'a, DB, Cartesian2d<RangedCoordf64, Y>>,
    y: std::ops::Range<f64>,
    panel: &Panel,
    changes: &[LayoutChange],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>>
where
    DB: DrawingBackend + 'a,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .light_line_style(WHITE)
        .x_desc("step")
        .y_desc(panel.y_desc)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .draw()?;
    let marked = changes.iter().filter(|c| c.kind != ChangeKind::First);
    for (i, change) in marked.enumerate() {
        let color = if change.kind == ChangeKind::Repair {
            REPAIR
        } else {
            REBALANCE
        };
        let x = change.step as f64;
        let marker = DashedLineSeries::new([(x, y.start), (x, y.end)], 6, 4, color.stroke_width(2));
        chart.draw_series(marker)?;
        if panel.label_changes {
            // Staggered, so that changes a few steps apart (a repair and its rebalance) stay
            // legible; in the right half of the panel, on the left of their line.
            let font = (FONT, 15).into_font().color(&color);
            let (font, dx) = if x > chart.x_range().end * 0.5 {
                (font.pos(Pos::new(HPos::Right, VPos::Top)), -5)
            } else {
                (font, 5)
            };
            let at = (dx, 4 + 18 * (i % 3) as i32);
            let label = EmptyElement::at((x, y.end)) + Text::new(change_label(change), at, font);
            chart.draw_series(std::iter::once(label))?;
        }
    }
    for line in &panel.lines {
        let color = line.color;
        chart
            .draw_series(LineSeries::new(
                line.points.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(line.name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .label_font((FONT, 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .position(panel.legend.clone())
        .draw()
}

/// "anyk run: 300 steps; 1 repair, 1 rebalance; 297 stragglers skipped".
fn title(history: &History) -> String {
    let count = |kind| history.changes.iter().filter(|c| c.kind == kind).count();
    let steps = history.steps.last().map_or(0, |p| p.step);
    format!(
        "anyk run: {steps} steps; {} repair(s), {} rebalance(s); {} stragglers skipped",
        count(ChangeKind::Repair),
        count(ChangeKind::Rebalance),
        history.skipped()
    )
}

/// "repair, epoch 2: lost w4" at a change's line.
fn change_label(change: &LayoutChange) -> String {
    let ids = |ws: &[u32]| ws.iter().map(|w| format!("w{w}")).collect::<Vec<_>>().join(",");
    match change.kind {
        ChangeKind::Repair => format!("repair, epoch {}: lost {}", change.epoch, ids(&change.lost)),
        ChangeKind::Rebalance => {
            format!(
                "rebalance, epoch {}: {} joined",
                change.epoch,
                ids(&change.joined)
            )
        }
        ChangeKind::First | ChangeKind::Relayout => format!("epoch {}", change.epoch),
    }
}

/// Text comes from a bundled DejaVu Sans (registered once): no font library, no system fonts.
fn register_font() -> Result<(), PlotError> {
    static LOADED: OnceLock<bool> = OnceLock::new();
    let loaded = LOADED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok()
    });
    loaded
        .then_some(())
        .ok_or_else(|| PlotError::Draw("the bundled font does not load".into()))
}

fn drawing(err: impl std::fmt::Display) -> PlotError {
    PlotError::Draw(err.to_string())
}
