//! The user's data, from wherever it is, to blocks: CSV with a header, directories, http(s) and
//! a real S3-compatible store; every kind of bad data refused with an error naming where it is,
//! and nothing half-written; then a `forward(x, y) -> loss` model trained on real-valued labels,
//! exported, and loaded back by plain PyTorch with the very metrics anyk reported.

// A failed unwrap in a test is a failed test with a line number.
#![allow(clippy::unwrap_used)]
// A scenario reads best top to bottom.
#![allow(clippy::too_many_lines)]

mod common;

use std::path::Path;
use std::process::Command;

use common::{anyk, stderr, stdout};
use serde_json::Value;

/// `anyk data split` into 2 blocks (or `--blocks` in `extra`).
fn split(input: &str, out: &Path, extra: &[&str]) -> std::process::Output {
    let blocks: &[&str] = if extra.contains(&"--blocks") {
        &[]
    } else {
        &["--blocks", "2"]
    };
    let mut args = vec!["data", "split", "--input", input, "--out", out.to_str().unwrap()];
    args.extend_from_slice(blocks);
    args.extend_from_slice(extra);
    anyk(&args)
}

fn manifest(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap()
}

#[test]
fn bad_data_is_refused_naming_where_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "a,b,label\n1,2,0\n3,nan,1\n4,5,1\n",
            "line 3, column \"b\": feature nan is not a finite f32",
        ),
        (
            "a,b,label\n1,2,0\n3,4\n",
            "line 3: 2 fields, the first row has 3 (ragged rows)",
        ),
        ("a,b,label\n1,2,0\n3,4,-1\n", "line 3: label -1 is not a class id"),
        (
            "a,b,label\n1,2,0\n3,4,0.5\n",
            "line 3: label 0.5 is not a class id",
        ),
        (
            "a,b,label\n1,2,0\n3,4,250000\n",
            "would make more than 100000 classes",
        ),
        ("label\n0\n1\n", "need at least one feature column and a label"),
        (
            "a,label\n1,0\n2,1\n",
            "leave 2 for training, which cannot fill 3 blocks",
        ),
        ("a,b,label\n", "a header but no rows"),
        (
            "a,b,label\n1,x,0\n",
            "line 2, column \"b\": \"x\" is not a number",
        ),
    ];
    for (i, (csv, expected)) in cases.iter().enumerate() {
        let input = dir.path().join(format!("bad-{i}.csv"));
        std::fs::write(&input, csv).unwrap();
        let out = dir.path().join(format!("out-{i}"));
        let result = split(
            input.to_str().unwrap(),
            &out,
            &["--blocks", "3", "--test-fraction", "0"],
        );
        assert_eq!(
            result.status.code(),
            Some(2),
            "bad data exits 2: {csv:?} {}",
            stderr(&result)
        );
        assert!(stderr(&result).contains(expected), "{csv:?}: {}", stderr(&result));
        assert!(
            !out.exists() || std::fs::read_dir(&out).unwrap().next().is_none(),
            "{csv:?} wrote {out:?}"
        );
    }
    // Real-valued labels must be finite, too.
    let input = dir.path().join("values.csv");
    std::fs::write(&input, "x,y\n1,0.5\n2,inf\n3,1\n").unwrap();
    let result = split(
        input.to_str().unwrap(),
        &dir.path().join("v"),
        &["--labels", "value"],
    );
    assert!(
        stderr(&result).contains("line 3: label inf is not finite"),
        "{}",
        stderr(&result)
    );
}

#[test]
fn a_failed_split_leaves_the_earlier_one_whole_and_a_repeat_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.csv");
    std::fs::write(&good, "f0,f1,label\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n9,10,0\n").unwrap();
    let out = dir.path().join("blocks");
    let first = split(good.to_str().unwrap(), &out, &[]);
    assert!(first.status.success(), "{}", stderr(&first));
    let before = manifest(&out);
    assert_eq!(
        (before["features"].as_u64(), before["classes"].as_u64()),
        (Some(2), Some(2))
    );
    let block = std::fs::read(out.join("block-00000.safetensors")).unwrap();

    let again = split(good.to_str().unwrap(), &out, &[]);
    assert!(
        stderr(&again).contains("already holds this split: nothing written"),
        "{}",
        stderr(&again)
    );

    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "f0,f1,label\n1,2,0\n3,4,1\n5,6,x\n").unwrap();
    let failed = split(bad.to_str().unwrap(), &out, &[]);
    assert!(!failed.status.success());
    assert_eq!(manifest(&out), before, "the earlier split is untouched");
    assert_eq!(std::fs::read(out.join("block-00000.safetensors")).unwrap(), block);
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.starts_with('.')),
        "no staging leftovers: {names:?}"
    );
}

#[test]
fn an_empty_first_field_is_bad_data_not_a_header_and_gzip_members_all_count() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("gap.csv");
    std::fs::write(&input, "1,,3,0\n4,5,6,1\n7,8,9,0\n").unwrap();
    let result = split(input.to_str().unwrap(), &dir.path().join("o"), &[]);
    assert!(
        stderr(&result).contains("line 1, column \"column 1\": \"\" is not a number"),
        "{}",
        stderr(&result)
    );
    // Two gzip members one after the other (cat a.gz b.gz): every row of both.
    let member = |text: &str| {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(text.as_bytes()).unwrap();
        gz.finish().unwrap()
    };
    let mut both = member("f0,f1,label\n1,2,0\n3,4,1\n");
    both.extend(member("5,6,0\n7,8,1\n"));
    let input = dir.path().join("two.csv.gz");
    std::fs::write(&input, both).unwrap();
    let result = split(
        input.to_str().unwrap(),
        &dir.path().join("gz"),
        &["--test-fraction", "0"],
    );
    assert!(result.status.success(), "{}", stderr(&result));
    let m: Value = serde_json::from_str(&stdout(&result)).unwrap();
    assert_eq!(m["train_samples"].as_u64(), Some(4), "{m}");
}

#[test]
fn headers_label_columns_and_directories() {
    let dir = tempfile::tempdir().unwrap();
    let parts = dir.path().join("parts");
    std::fs::create_dir(&parts).unwrap();
    // The label first, named in the header; two files read in name order as one data set.
    std::fs::write(parts.join("a.csv"), "digit,x0,x1\n0,1,2\n1,3,4\n").unwrap();
    std::fs::write(parts.join("b.csv"), "digit,x0,x1\n2,5,6\n1,7,8\n").unwrap();
    std::fs::write(parts.join("notes.txt"), "not data").unwrap();
    let out = dir.path().join("blocks");
    let result = split(
        parts.to_str().unwrap(),
        &out,
        &["--label-column", "digit", "--test-fraction", "0"],
    );
    assert!(result.status.success(), "{}", stderr(&result));
    let m: Value = serde_json::from_str(&stdout(&result)).unwrap();
    assert_eq!(
        (
            m["features"].as_u64(),
            m["classes"].as_u64(),
            m["train_samples"].as_u64()
        ),
        (Some(2), Some(3), Some(4))
    );
    let missing = split(
        parts.to_str().unwrap(),
        &dir.path().join("o2"),
        &["--label-column", "class"],
    );
    assert!(
        stderr(&missing).contains("no column named \"class\"; the header has digit, x0, x1"),
        "{}",
        stderr(&missing)
    );
}

#[test]
fn data_comes_from_http_and_from_a_real_s3_store() {
    let dir = tempfile::tempdir().unwrap();
    let csv = "f0,f1,label\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n9,10,0\n";
    std::fs::write(dir.path().join("d.csv"), csv).unwrap();
    // http: Python's own file server on a free port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = Command::new("python3")
        .args(["-m", "http.server", &port.to_string(), "--bind", "127.0.0.1"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/d.csv");
    let mut result = split(&url, &dir.path().join("http"), &[]);
    for _ in 0..20 {
        if result.status.success() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
        result = split(&url, &dir.path().join("http"), &[]);
    }
    let _ = server.kill();
    let _ = server.wait();
    assert!(result.status.success(), "{}", stderr(&result));
    let from_http = manifest(&dir.path().join("http"));

    // S3: versitygw (hack/s3, started by hack/test), with its credentials from the environment.
    let s3 = anyk_s3();
    let put = Command::new(&s3)
        .args(["put", "anyk-cli-tests", "data/d.csv"])
        .arg(dir.path().join("d.csv"))
        .output()
        .unwrap();
    assert!(
        put.status.success(),
        "hack/s3 put (hack/test starts the store): {}",
        stderr(&put)
    );
    let out = dir.path().join("s3");
    let with_env = |extra: &[(&str, &str)]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_anyk"));
        command.args([
            "data",
            "split",
            "--input",
            "s3://anyk-cli-tests/data/d.csv",
            "--blocks",
            "2",
            "--out",
        ]);
        command.arg(&out).envs(s3_env()).envs(extra.iter().copied());
        command.output().unwrap()
    };
    let fetched = with_env(&[]);
    assert!(fetched.status.success(), "{}", stderr(&fetched));
    let from_s3 = manifest(&out);
    assert_eq!(
        from_s3["input_sha256"], from_http["input_sha256"],
        "the same bytes both ways"
    );
    let denied = with_env(&[("AWS_SECRET_ACCESS_KEY", "wrong")]);
    assert!(
        stderr(&denied).contains("access denied: check the credentials"),
        "{}",
        stderr(&denied)
    );
}

fn anyk_s3() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../hack/s3")
}

/// `hack/s3 env`'s variables.
fn s3_env() -> Vec<(String, String)> {
    let out = Command::new(anyk_s3()).arg("env").output().unwrap();
    let text = stdout(&out);
    text.split_whitespace()
        .filter_map(|word| word.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A model that computes its own loss, on real-valued labels: trained through a straggler and a
/// kill, exported, and loaded back by plain PyTorch with the loss anyk reported.
#[test]
fn a_forward_x_y_loss_model_trains_and_exports_to_files_pytorch_loads() {
    let dir = tempfile::tempdir().unwrap();
    let made = Command::new("python3")
        .args(["-W", "ignore"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/models/make.py"))
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", stderr(&made));
    let model = dir.path().join("regression.pt");
    let (workdir, summary_file) = (dir.path().join("work"), dir.path().join("summary.json"));
    let run = anyk(&[
        "local",
        "--workdir",
        workdir.to_str().unwrap(),
        "--summary",
        summary_file.to_str().unwrap(),
        "--data",
        dir.path().join("regression.csv").to_str().unwrap(),
        "--labels",
        "value",
        "--model",
        model.to_str().unwrap(),
        "--contract",
        "loss",
        "--steps",
        "200",
        "--straggle",
        "1:5",
        "--kill",
        "4@60",
    ]);
    assert!(run.status.success(), "{}\n{}", stdout(&run), stderr(&run));
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(&summary_file).unwrap()).unwrap();
    let loss = summary["final_test_loss"].as_f64().unwrap();
    assert!(summary["final_test_accuracy"].is_null(), "{summary}");
    assert!(loss < 0.2, "the regression learned little: test loss {loss}");
    assert_eq!(summary["workers_killed"].as_u64(), Some(1), "{summary}");
    let checkpoint = std::fs::read_dir(workdir.join("checkpoints"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let (safetensors, script) = (
        dir.path().join("model.safetensors"),
        dir.path().join("trained.pt"),
    );
    let data = workdir.join("data");
    let export = anyk(&[
        "export",
        checkpoint.to_str().unwrap(),
        "--out",
        safetensors.to_str().unwrap(),
        "--torchscript-out",
        script.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--contract",
        "loss",
        "--data",
        data.to_str().unwrap(),
    ]);
    assert!(export.status.success(), "{}", stderr(&export));
    let check = Command::new("python3")
        .args(["-W", "ignore"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/models/check_export.py"))
        .args([
            "--safetensors",
            safetensors.to_str().unwrap(),
            "--module",
            model.to_str().unwrap(),
        ])
        .args([
            "--torchscript",
            script.to_str().unwrap(),
            "--contract",
            "loss",
            "--test",
        ])
        .arg(data.join("test.safetensors"))
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", stderr(&check));
    let python: Value = serde_json::from_slice(&check.stdout).unwrap();
    for file in ["safetensors", "torchscript"] {
        let got = python[file]["loss"].as_f64().unwrap();
        assert!(
            (got - loss).abs() <= 1e-6 * loss.max(1.0),
            "{file}: PyTorch {got}, anyk {loss}"
        );
    }
}
