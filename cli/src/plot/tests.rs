use std::path::Path;

use anyk_core::checkpoint::Checkpoint;
use anyk_core::history::{History, StepRecord};
use anyk_core::optimizer::{Optimizer, OptimizerConfig};
use anyk_core::{plan, rebalance, repair};

use super::{PlotError, plot_checkpoint};

/// The demo's story: 300 steps, worker 4 lost at step 100, its replacement back at 117.
fn history() -> History {
    let first = plan(24, 3, 8, 6).unwrap();
    let (repaired, _) = repair(&first, &[4]).unwrap();
    let (rebalanced, _) = rebalance(&repaired, &[4]).unwrap();
    let mut h = History::default();
    h.record_change(None, &first, 0, 0);
    for step in 1..=300 {
        if step == 101 {
            h.record_change(Some(&first), &repaired, 100, 1000);
        }
        if step == 118 {
            h.record_change(Some(&repaired), &rebalanced, 117, 1170);
        }
        let record = StepRecord {
            step,
            loss: 2.5 / step as f32,
            step_ms: (step > 1).then_some(9.0 + (step % 7) as f32),
            skipped: 1 + u64::from((100..117).contains(&step)),
            margin: 2,
            elapsed_ms: step * 10,
        };
        h.record_step(record);
    }
    h
}

fn checkpoint(dir: &Path, history: History) -> std::path::PathBuf {
    let ckpt = Checkpoint {
        step: 300,
        layout: None,
        optimizer: Optimizer::new(OptimizerConfig::adam(0.01), 3),
        params: vec![0.5; 3],
        loss: 0.01,
        job: None,
        history,
    };
    let path = dir.join("ckpt-000000000300.anyk");
    std::fs::write(&path, ckpt.encode()).unwrap();
    path
}

#[test]
fn a_checkpoint_plots_as_a_png_with_lines_and_text() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run.PNG");
    plot_checkpoint(&checkpoint(dir.path(), history()), &out).unwrap();
    let bytes = std::fs::read(&out).unwrap();
    assert!(
        bytes.len() > 20_000 && bytes.len() < 200_000,
        "{} bytes",
        bytes.len()
    );
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .unwrap();
    let mut rgb = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut rgb).unwrap();
    assert_eq!((info.width, info.height), super::SIZE);
    let inked = rgb.chunks(3).filter(|px| px != &[255, 255, 255]).count();
    let share = inked as f64 / (rgb.len() / 3) as f64;
    assert!(share > 0.02 && share < 0.5, "{share} of the picture is drawn on");
    // The repair marker's red and the loss line's blue are both there.
    assert!(rgb.chunks(3).any(|px| px == [214, 39, 40]));
    assert!(rgb.chunks(3).any(|px| px == [31, 119, 180]));
}

#[test]
fn a_checkpoint_plots_as_an_svg_with_its_labels() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run.svg");
    plot_checkpoint(&checkpoint(dir.path(), history()), &out).unwrap();
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.starts_with("<svg") && text.trim_end().ends_with("</svg>"));
    for label in [
        "repair, epoch 2: lost w4",
        "rebalance, epoch 3: w4 joined",
        "anyk run: 300 steps; 1 repair(s), 1 rebalance(s); 317 stragglers skipped",
        "training loss",
    ] {
        assert!(text.contains(label), "no {label:?} in the SVG");
    }
    assert!(text.matches("<polyline").count() >= 4, "a line per series");
}

#[test]
fn bad_input_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = checkpoint(dir.path(), history());
    let err = plot_checkpoint(&ckpt, &dir.path().join("run.jpg")).unwrap_err();
    assert!(matches!(err, PlotError::Format(_)), "{err}");
    assert!(err.to_string().contains("must be a .png or .svg file"), "{err}");
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "not a checkpoint, not at all, no, not even a little bit").unwrap();
    let err = plot_checkpoint(&text, &dir.path().join("run.png")).unwrap_err();
    assert!(matches!(err, PlotError::Decode { .. }), "{err}");
    let missing = plot_checkpoint(&dir.path().join("gone.anyk"), &dir.path().join("run.png"));
    assert!(matches!(missing, Err(PlotError::Read { .. })));
    let old = checkpoint(dir.path(), History::default());
    let err = plot_checkpoint(&old, &dir.path().join("run.svg")).unwrap_err();
    assert!(matches!(err, PlotError::NoHistory(_)), "{err}");
    assert!(!dir.path().join("run.svg").exists());
}
