use anyk_core::{Layout, Scheme};

use crate::v1;

pub fn layout_to_wire(layout: &Layout) -> v1::Layout {
    v1::Layout {
        epoch: layout.epoch,
        workers: layout.workers,
        blocks: layout.blocks,
        replication: layout.replication,
        target: layout.target_workers,
        holders: layout
            .holders
            .iter()
            .map(|hs| v1::BlockHolders { workers: hs.clone() })
            .collect(),
        members: layout.members.iter().copied().collect(),
        unit_bounds: layout.units.iter().flat_map(|&(lo, hi)| [lo, hi]).collect(),
        scheme: match layout.scheme {
            Scheme::Fractional => "fractional",
            Scheme::Cyclic => "cyclic",
            Scheme::Uncoded => "uncoded",
        }
        .into(),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("malformed layout: {0}")]
pub struct LayoutError(&'static str);

pub fn layout_from_wire(wire: &v1::Layout) -> Result<Layout, LayoutError> {
    if !wire.unit_bounds.len().is_multiple_of(2) {
        return Err(LayoutError("unit_bounds has an odd length"));
    }
    let scheme = match wire.scheme.as_str() {
        "fractional" => Scheme::Fractional,
        "cyclic" => Scheme::Cyclic,
        "uncoded" => Scheme::Uncoded,
        _ => return Err(LayoutError("scheme must be fractional, cyclic or uncoded")),
    };
    Ok(Layout {
        epoch: wire.epoch,
        workers: wire.workers,
        blocks: wire.blocks,
        replication: wire.replication,
        target_workers: wire.target,
        scheme,
        holders: wire.holders.iter().map(|h| h.workers.clone()).collect(),
        members: wire.members.iter().copied().collect(),
        units: wire.unit_bounds.chunks_exact(2).map(|c| (c[0], c[1])).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let layout = anyk_core::plan(12, 3, 6, 4).unwrap();
        assert_eq!(layout_from_wire(&layout_to_wire(&layout)).unwrap(), layout);
    }
}
