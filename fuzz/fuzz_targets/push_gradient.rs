//! A sequence of requests chosen by the fuzzer, handled as the services do: joins, initial
//! parameters, layouts (raw `SetLayoutRequest` bytes, or repairs and rebalances of the current
//! layout) and gradients (raw `GradientRequest` bytes, or built from a holder, a block or a whole
//! unit, a step and an epoch skewed by the fuzzer). [`Checked`] asserts the invariants after each.
#![no_main]

use anyk_core::Layout;
use anyk_fuzz::{Checked, gradient, settings, unit_parts, values};
use anyk_proto::v1::{GradientRequest, InitializeRequest, SetLayoutRequest, Tensor};
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use prost::Message;

#[derive(Arbitrary, Debug)]
struct Scenario {
    blocks: u8,
    workers: u8,
    replication: u8,
    target: u8,
    params: u8,
    total_steps: u8,
    strict: bool,
    /// Install the planned layout and initial parameters before the operations.
    ready: bool,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Join(u8),
    Initialize {
        worker: u8,
        len: u8,
        seed: u32,
    },
    RawInitialize(Vec<u8>),
    RawSetLayout(Vec<u8>),
    Repair {
        lost: u8,
    },
    Rebalance {
        joined: u8,
    },
    Push(Push),
    /// Every uncovered block from its first holder (or its unit, pre-summed).
    Cover {
        presum: bool,
        seed: u32,
    },
    RawPush(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct Push {
    /// Below 128: that rank among the block's holders; otherwise worker id `sender - 128`.
    sender: u8,
    block: u8,
    whole_unit: bool,
    step_skew: i8,
    epoch_skew: i8,
    len_skew: i8,
    seed: u32,
    /// 1: the largest finite values; 2: a NaN; otherwise ordinary values.
    extreme: u8,
}

fn build_push(t: &Checked, p: &Push, params: usize) -> Option<GradientRequest> {
    let layout = t.layout.as_ref()?;
    let block = u32::from(p.block) % layout.blocks.max(1);
    let blocks: Vec<u32> = match layout.units.iter().find(|u| (u.0..u.1).contains(&block)) {
        Some(&(lo, hi)) if p.whole_unit => (lo..hi).collect(),
        _ => vec![block],
    };
    let holders = layout.holders.get(block as usize)?;
    let worker = match p.sender {
        s if s < 128 => *holders.get(usize::from(s) % holders.len().max(1))?,
        s => u32::from(s - 128),
    };
    let len = params.saturating_add_signed(isize::from(p.len_skew % 2));
    let mut values = values(len, p.seed);
    match (p.extreme, values.first_mut()) {
        (1, _) => values.iter_mut().for_each(|v| *v = f32::MAX.copysign(*v)),
        (2, Some(v)) => *v = f32::NAN,
        _ => {}
    }
    let (epoch, step) = t.position();
    let position = (
        epoch.wrapping_add_signed(i64::from(p.epoch_skew % 3)),
        step.wrapping_add_signed(i64::from(p.step_skew % 3)),
    );
    Some(gradient(worker, position, &blocks, &values))
}

fn cover(t: &mut Checked, presum: bool, seed: u32, params: usize) {
    let Some(layout) = t.layout.clone() else {
        return;
    };
    for &(lo, hi) in &layout.units {
        if (lo..hi).all(|b| t.covered.contains(&b)) {
            continue;
        }
        let parts = unit_parts(&layout, (lo, hi), presum, |b| !t.covered.contains(&b));
        for (worker, blocks) in parts {
            let req = gradient(worker, t.position(), &blocks, &values(params, seed ^ lo));
            let _ = t.push(&req);
        }
    }
}

fn set(t: &mut Checked, layout: &Layout) {
    let req = SetLayoutRequest {
        layout: Some(anyk_proto::layout_to_wire(layout)),
    };
    t.set_layout(&req);
}

fn run(t: &mut Checked, op: &Op, params: usize) {
    match op {
        Op::Join(w) => t.join(u32::from(*w)),
        Op::Initialize { worker, len, seed } => t.initialize(&InitializeRequest {
            worker: u32::from(*worker),
            params: Some(Tensor::from_f32(&values(usize::from(*len % 8), *seed))),
        }),
        Op::RawInitialize(bytes) => {
            if let Ok(req) = InitializeRequest::decode(&bytes[..]) {
                t.initialize(&req);
            }
        }
        Op::RawSetLayout(bytes) => {
            if let Ok(req) = SetLayoutRequest::decode(&bytes[..]) {
                t.set_layout(&req);
            }
        }
        Op::Repair { lost } => {
            if let Some(layout) = t.layout.clone()
                && let Ok((repaired, _)) = anyk_core::repair(&layout, &[u32::from(*lost) % layout.workers])
            {
                set(t, &repaired);
            }
        }
        Op::Rebalance { joined } => {
            if let Some(layout) = t.layout.clone()
                && let Ok((balanced, _)) =
                    anyk_core::rebalance(&layout, &[u32::from(*joined) % layout.workers])
            {
                set(t, &balanced);
            }
        }
        Op::Push(p) => {
            if let Some(req) = build_push(t, p, params) {
                let _ = t.push(&req);
            }
        }
        Op::Cover { presum, seed } => cover(t, *presum, *seed, params),
        Op::RawPush(bytes) => {
            if let Ok(req) = GradientRequest::decode(&bytes[..]) {
                let _ = t.push(&req);
            }
        }
    }
}

fuzz_target!(|s: Scenario| {
    let workers = u32::from(s.workers % 8) + 1;
    let replication = u32::from(s.replication) % workers + 1;
    let target = u32::from(s.target) % workers + 1;
    let blocks = u32::from(s.blocks % 12) + 1;
    let Ok(layout) = anyk_core::plan(blocks, replication, workers, target) else {
        return;
    };
    let mut params = usize::from(s.params % 4) + 1;
    let mut t = Checked::new(settings(blocks, u64::from(s.total_steps % 5) + 1, s.strict));
    if s.ready {
        set(&mut t, &layout);
        t.initialize(&InitializeRequest {
            worker: 0,
            params: Some(Tensor::from_f32(&values(params, 1))),
        });
    }
    for op in s.ops.iter().take(64) {
        run(&mut t, op, params);
        // Pushes are built at the size the job took (a raw Initialize may have chosen it).
        if let Some(ckpt) = t.trainer.checkpoint() {
            params = ckpt.params.len();
        }
    }
});
