//! `anyk plan` and `anyk data split`.

// A failed unwrap in a test is a failed test with a line number.
#![allow(clippy::unwrap_used)]

mod common;

use common::{anyk, stderr, stdout};

/// A command line as its words.
fn words(line: &str) -> Vec<&str> {
    line.split(' ').collect()
}

#[test]
fn plan_prints_the_documented_json() {
    let out = anyk(&words(
        "plan --workers 8 --blocks 24 --replication 3 --target 6 --json",
    ));
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    for key in [
        "epoch",
        "workers",
        "blocks",
        "replication",
        "target",
        "holders",
        "margin",
    ] {
        assert!(v.get(key).is_some(), "missing {key}: {v}");
    }
    assert_eq!((v["epoch"].as_u64(), v["margin"].as_i64()), (Some(1), Some(2)));
    let holders = v["holders"].as_array().unwrap();
    assert_eq!(holders.len(), 24);
    assert!(holders.iter().all(|h| h.as_array().unwrap().len() == 3));
}

#[test]
fn plan_with_failures_repairs_first() {
    let out = anyk(&words(
        "plan --workers 8 --blocks 24 --replication 3 --target 6 --fail 1,2 --json",
    ));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["epoch"], 2);
    assert_eq!(v["margin"], 2, "copies are restored among the 6 survivors");
    let holders = v["holders"].as_array().unwrap();
    assert!(
        holders
            .iter()
            .flat_map(|h| h.as_array().unwrap())
            .all(|w| w != 1 && w != 2)
    );
    let table = anyk(&words("plan --workers 8 --blocks 24 --replication 3 --target 6"));
    assert!(stdout(&table).contains("tolerates 2 more"), "{}", stdout(&table));
    let lost = anyk(&words(
        "plan --workers 8 --blocks 24 --replication 3 --target 6 --fail 0,1,2",
    ));
    assert!(!lost.status.success());
    assert!(
        stderr(&lost).contains("coverage lost: 5 live workers"),
        "{}",
        stderr(&lost)
    );
}

#[test]
fn plan_rejects_impossible_parameters() {
    let out = anyk(&words("plan --workers 8 --blocks 24 --replication 2 --target 6"));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("need r >= 3"), "{}", stderr(&out));
}

#[test]
fn data_split_writes_blocks_and_a_test_split() {
    let dir = tempfile::tempdir().unwrap();
    let input = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/digits.csv.gz");
    let out = anyk(&[
        "data",
        "split",
        "--input",
        input,
        "--blocks",
        "24",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("manifest.json")).unwrap()).unwrap();
    assert_eq!(
        (
            m["features"].as_u64(),
            m["classes"].as_u64(),
            m["blocks"].as_u64()
        ),
        (Some(64), Some(10), Some(24))
    );
    assert_eq!(
        m["train_samples"].as_u64().unwrap() + m["test_samples"].as_u64().unwrap(),
        1797
    );
    assert!(
        dir.path().join("block-00023.safetensors").exists() && dir.path().join("test.safetensors").exists()
    );
    assert!(!dir.path().join("block-00024.safetensors").exists());
}

#[test]
fn data_split_names_the_bad_row() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("bad.csv");
    std::fs::write(&csv, "1,2,3,0\n4,five,6,1\n").unwrap();
    let out = anyk(&[
        "data",
        "split",
        "--input",
        csv.to_str().unwrap(),
        "--blocks",
        "1",
        "--out",
        dir.path().join("o").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("line 2") && stderr(&out).contains("\"five\""),
        "{}",
        stderr(&out)
    );
    std::fs::write(&csv, "1,2,0\n3,1\n").unwrap();
    let out = anyk(&[
        "data",
        "split",
        "--input",
        csv.to_str().unwrap(),
        "--blocks",
        "1",
        "--out",
        dir.path().join("o").to_str().unwrap(),
    ]);
    assert!(
        stderr(&out).contains("line 2: 2 fields, the first row has 3 (ragged rows)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn data_split_reads_safetensors_input() {
    let dir = tempfile::tempdir().unwrap();
    let input = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/digits.csv.gz");
    let first = dir.path().join("first");
    let out = anyk(&[
        "data",
        "split",
        "--input",
        input,
        "--blocks",
        "4",
        "--out",
        first.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The held-out file has tensors x and y: split it again as safetensors input.
    let test_file = first.join("test.safetensors");
    let second = dir.path().join("second");
    let out = anyk(&[
        "data",
        "split",
        "--input",
        test_file.to_str().unwrap(),
        "--blocks",
        "3",
        "--out",
        second.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let m: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        m["train_samples"].as_u64().unwrap() + m["test_samples"].as_u64().unwrap(),
        359
    );
    assert!(second.join("block-00002.safetensors").exists());
}

#[test]
fn plot_names_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let readme = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
    let png = dir.path().join("run.png");
    let out = anyk(&["plot", readme, "--out", png.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("failed to decode") && err.contains("not an anyk checkpoint"),
        "{err}"
    );
    let gif = dir.path().join("run.gif");
    let out = anyk(&["plot", readme, "--out", gif.to_str().unwrap()]);
    assert!(
        stderr(&out).contains("must be a .png or .svg file"),
        "{}",
        stderr(&out)
    );
    assert!(!png.exists() && !gif.exists());
}
