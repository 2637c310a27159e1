//! `anyk plan`: the layout for n, m, r, k, optionally after failures, as JSON or a table.

use std::collections::BTreeSet;

use anyk_core::{Layout, coverage_of, plan, repair};
use clap::Args;
use serde_json::json;

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Workers n.
    #[arg(long)]
    workers: u32,
    /// Blocks m.
    #[arg(long)]
    blocks: u32,
    /// Replication r (copies of each block).
    #[arg(long)]
    replication: u32,
    /// Target k: any k workers must cover every block.
    #[arg(long)]
    target: u32,
    /// Workers to fail (comma separated); the layout is repaired first.
    #[arg(long, value_delimiter = ',')]
    fail: Vec<u32>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &PlanArgs) -> Result<(), Box<dyn std::error::Error>> {
    let mut layout = plan(args.blocks, args.replication, args.workers, args.target)?;
    if !args.fail.is_empty() {
        layout = repair(&layout, &args.fail)?.0;
    }
    let coverage = coverage_of(&layout, &layout.members);
    if args.json {
        let out = json!({
            "epoch": layout.epoch,
            "workers": layout.workers,
            "blocks": layout.blocks,
            "replication": layout.replication,
            "target": layout.target_workers,
            "holders": layout.holders,
            "margin": coverage.margin,
            "scheme": layout.scheme,
            "members": layout.members,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", table(&layout, coverage.margin));
    }
    Ok(())
}

fn table(layout: &Layout, margin: i64) -> String {
    let mut out = format!(
        "{:?} layout, epoch {}: {} blocks x {} copies on {} workers, any {} cover all blocks\n",
        layout.scheme, layout.epoch, layout.blocks, layout.replication, layout.workers, layout.target_workers
    );
    let lost: BTreeSet<u32> = (0..layout.workers)
        .filter(|w| !layout.members.contains(w))
        .collect();
    if !lost.is_empty() {
        out += &format!("lost workers: {lost:?}\n");
    }
    out += "worker  blocks (processing order: primaries first)\n";
    let queues = queues(layout);
    for w in &layout.members {
        let queue = queues.get(*w as usize).map_or(&[][..], Vec::as_slice);
        let queue: Vec<String> = queue.iter().map(u32::to_string).collect();
        out += &format!("{w:>6}  {}\n", queue.join(" "));
    }
    out += &format!("tolerates {margin} more lost or straggling worker(s) (coverage margin)\n");
    out
}

/// Every worker's queue (what `Layout::queue` gives for one worker: by rank, then block id) in
/// one pass per rank over the holders, O(m·r) in all; asking `queue` per worker scans every block
/// n times (1 s at n = 10,000, m = 100,000).
fn queues(layout: &Layout) -> Vec<Vec<u32>> {
    let mut queues = vec![Vec::new(); layout.workers as usize];
    let ranks = layout.holders.iter().map(Vec::len).max().unwrap_or(0);
    for rank in 0..ranks {
        for (block, hs) in layout.holders.iter().enumerate() {
            if let Some(queue) = hs.get(rank).and_then(|&w| queues.get_mut(w as usize)) {
                queue.push(block as u32);
            }
        }
    }
    queues
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queues_match_layout_queue_before_and_after_repair() {
        let fresh = plan(1000, 4, 100, 97).unwrap();
        let repaired = repair(&fresh, &[3, 50]).unwrap().0;
        let small = plan(24, 3, 8, 6).unwrap();
        for layout in [fresh, repaired, small] {
            let queues = queues(&layout);
            assert_eq!(queues.len(), layout.workers as usize);
            for w in 0..layout.workers {
                assert_eq!(queues[w as usize], layout.queue(w), "worker {w}");
            }
        }
    }
}
