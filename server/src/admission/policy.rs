//! Which waiting request to read next: the sans-IO part of [`super::Admission`].
//!
//! A part whose sibling is here, or being read, goes first: it joins at once and frees memory.
//! The others go lowest first block first, so that when the workers' unit sums wait together
//! they are read nearly in tree order and siblings meet sooner (a part of another step joins
//! nothing, and is read, then dropped as late, in that order too). Requests that say nothing
//! about themselves go last, in arrival order.
//!
//! Nothing is held back while a slot is free. Holding back a part that would have to wait for
//! its sibling (left at the client by HTTP/2 flow control) lowered the 34M-parameter peak heap
//! from 9.7 to 8.8 model sizes (`bench/server-heap`), but with two workers 5x slow it made
//! 8.5M steps 2.5x longer in `bench/vs-ddp` (parts waited out the hold limit for siblings
//! still being computed), so it was taken out.

use std::sync::Arc;

use anyk_core::ReductionTree;

/// What a request says about the part it carries (its metadata): step and blocks lo..hi.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hint {
    pub step: u64,
    pub lo: u32,
    pub hi: u32,
}

impl Hint {
    /// From metadata `STEP/LO/HI`.
    pub fn parse(text: &str) -> Option<Self> {
        let mut fields = text.split('/');
        let step = fields.next()?.parse().ok()?;
        let lo = fields.next()?.parse().ok()?;
        let hi = fields.next()?.parse().ok()?;
        (fields.next().is_none() && lo < hi).then_some(Self { step, lo, hi })
    }

    pub fn format(&self) -> String {
        anyk_proto::transport::part_metadata(self.step, self.lo, self.hi)
    }
}

/// What the trainer holds of the step being collected.
#[derive(Clone, Debug, Default)]
pub struct Holding {
    pub step: u64,
    /// `None` while no step is open.
    pub tree: Option<Arc<ReductionTree>>,
    /// Block ranges of the parts here (waiting for their siblings).
    pub present: Vec<(u32, u32)>,
}

/// The index (into `waiting`, in arrival order) of the request to read next, `None` when none
/// waits. Parts being read count as here: they are on their way in.
pub fn choose(holding: &Holding, reading: &[Option<Hint>], waiting: &[Option<Hint>]) -> Option<usize> {
    let incoming = reading.iter().flatten().filter(|h| h.step == holding.step);
    let here: Vec<(u32, u32)> = holding
        .present
        .iter()
        .copied()
        .chain(incoming.map(|h| (h.lo, h.hi)))
        .collect();
    let rank = |(i, hint): (usize, &Option<Hint>)| {
        let joins = hint.is_some_and(|h| joins(holding, &here, h));
        (!joins, hint.map_or(u32::MAX, |h| h.lo), i)
    };
    waiting.iter().enumerate().map(rank).min().map(|(_, _, i)| i)
}

/// Whether part `hint` of the current step has its sibling among `here`.
fn joins(holding: &Holding, here: &[(u32, u32)], hint: Hint) -> bool {
    let Some(tree) = holding.tree.as_deref().filter(|_| hint.step == holding.step) else {
        return false;
    };
    let sibling = tree.node(hint.lo, hint.hi).and_then(|n| tree.sibling(n));
    sibling.is_some_and(|s| here.contains(&tree.range(s)))
}

/// Step 5 of a job of 8 units of one block each, ((0 1)(2 3))((4 5)(6 7)), holding `present`.
#[cfg(test)]
pub(super) fn eight_units(present: &[(u32, u32)]) -> Holding {
    let units: Vec<(u32, u32)> = (0..8).map(|u| (u, u + 1)).collect();
    Holding {
        step: 5,
        tree: Some(Arc::new(ReductionTree::new(&units))),
        present: present.to_vec(),
    }
}

/// A push of unit `u` at step 5.
#[cfg(test)]
pub(super) fn unit(u: u32) -> Option<Hint> {
    Some(Hint {
        step: 5,
        lo: u,
        hi: u + 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_round_trip_and_nonsense_is_no_hint() {
        let hint = Hint {
            step: 12,
            lo: 4,
            hi: 7,
        };
        assert_eq!(Hint::parse(&hint.format()), Some(hint));
        for bad in ["", "1/2", "1/2/3/4", "x/1/2", "1/3/3", "1/-1/2"] {
            assert_eq!(Hint::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_part_that_joins_goes_first_then_the_lowest() {
        let h = eight_units(&[(4, 5)]);
        assert_eq!(choose(&h, &[], &[unit(2), unit(5), unit(0)]), Some(1));
        assert_eq!(choose(&h, &[], &[unit(2), unit(6), unit(0)]), Some(2));
        assert_eq!(choose(&h, &[], &[]), None);
        // Joining a part still being read counts too.
        assert_eq!(choose(&h, &[unit(3)], &[unit(0), unit(2)]), Some(1));
    }

    #[test]
    fn requests_without_a_hint_go_last_in_arrival_order() {
        let h = eight_units(&[(0, 2)]);
        let old = Some(Hint {
            step: 4,
            lo: 0,
            hi: 1,
        });
        assert_eq!(choose(&h, &[], &[None, unit(6)]), Some(1));
        assert_eq!(
            choose(&h, &[], &[None, unit(6), old]),
            Some(2),
            "a late part is read, not joined"
        );
        assert_eq!(
            choose(&h, &[], &[None, old]),
            Some(1),
            "step 4's hint still orders by block"
        );
        assert_eq!(choose(&h, &[], &[None, None]), Some(0));
        assert_eq!(choose(&Holding::default(), &[], &[unit(3), unit(1)]), Some(1));
    }
}
