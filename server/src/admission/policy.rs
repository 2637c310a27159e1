//! Which waiting request to read next, and which to hold back: the sans-IO part of
//! [`super::Admission`].
//!
//! A part whose sibling is here is read first: it joins at once and frees memory. A part that
//! would have to wait for its sibling is read while fewer than [`PARTS_KEPT`] parts wait; beyond
//! that, only if what is here and what waits to be read completes its sibling (so that it is
//! joined soon), else it is held back until its sibling arrives. A part whose sibling was late
//! last step is not held back (its sibling comes last, from backups: holding would only put its
//! reading after theirs); nor are requests that say nothing about themselves, or belong to
//! another step.

use std::sync::Arc;

use anyk_core::ReductionTree;

/// Parts the server keeps waiting for their siblings before it holds back more of them: at
/// most this many, one more whose sibling is on its way, and the one being read are in memory
/// beside parameters and Adam's two moments (docs/design.md, "Aggregation as parts arrive").
/// Measured with `bench/server-heap` (34M parameters, 8 workers, 8 steps, two requests read at
/// once): peak heap 8.8 model sizes with 2 kept, 8.6 with 1, but with 1 steps with stragglers
/// took 1.8x longer (8.5M, 2 workers 5x slow): parts waited the hold limit for siblings still
/// being computed.
pub const PARTS_KEPT: usize = 2;

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
        format!("{}/{}/{}", self.step, self.lo, self.hi)
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
    /// Blocks whose first holder was late last step: their parts come last this step (from
    /// backups), so holding back a part that waits for them would only delay the step.
    pub late: Vec<u32>,
    /// Strict mode keeps copies until they are confirmed: nothing is held back there.
    pub strict: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    /// Its sibling is here.
    Joins,
    /// Unknown, redundant, another step, or the whole sum: read in arrival order.
    Free,
    /// Would wait for its sibling; fewer than the limit wait.
    Kept,
    /// Would wait beyond the limit, but its sibling is here or waiting to be read.
    Completes,
    Held,
}

/// The index (into `waiting`, in arrival order) of the request to read next; `None` holds them
/// all back until something changes. Parts being read count as held already: they are on
/// their way in.
pub fn choose(holding: &Holding, reading: &[Option<Hint>], waiting: &[Option<Hint>]) -> Option<usize> {
    let mut holding = holding.clone();
    let incoming = reading.iter().flatten().filter(|h| h.step == holding.step);
    holding.present.extend(incoming.map(|h| (h.lo, h.hi)));
    let holding = &holding;
    let rank = |(i, hint): (usize, &Option<Hint>)| {
        let class = classify(holding, *hint, waiting);
        (class, hint.map_or(u32::MAX, |h| h.lo), i)
    };
    let (class, _, index) = waiting.iter().enumerate().map(rank).min()?;
    (class != Class::Held).then_some(index)
}

fn classify(holding: &Holding, hint: Option<Hint>, waiting: &[Option<Hint>]) -> Class {
    let (Some(hint), Some(tree)) = (hint, holding.tree.as_deref()) else {
        return Class::Free;
    };
    let Some(node) = tree.node(hint.lo, hint.hi).filter(|_| hint.step == holding.step) else {
        return Class::Free;
    };
    let inside = |(lo, hi): (u32, u32), (a, b): (u32, u32)| lo <= a && b <= hi;
    if holding.present.iter().any(|&p| inside(p, (hint.lo, hint.hi))) {
        return Class::Free;
    }
    let Some(sibling) = tree.sibling(node).map(|s| tree.range(s)) else {
        return Class::Free;
    };
    if holding.present.contains(&sibling) {
        return Class::Joins;
    }
    let sibling_late = holding.late.iter().any(|b| (sibling.0..sibling.1).contains(b));
    if holding.strict || sibling_late || holding.present.len() < PARTS_KEPT {
        return Class::Kept;
    }
    let step_ranges = waiting
        .iter()
        .flatten()
        .filter(|w| w.step == holding.step)
        .map(|w| (w.lo, w.hi));
    let mut known: Vec<(u32, u32)> = holding.present.iter().copied().chain(step_ranges).collect();
    known.sort_unstable();
    let covered = (sibling.0..sibling.1).all(|b| known.iter().any(|&(lo, hi)| (lo..hi).contains(&b)));
    if covered { Class::Completes } else { Class::Held }
}

/// Step 5 of a job of 8 units of one block each, ((0 1)(2 3))((4 5)(6 7)), holding `present`.
#[cfg(test)]
pub(super) fn eight_units(present: &[(u32, u32)]) -> Holding {
    let units: Vec<(u32, u32)> = (0..8).map(|u| (u, u + 1)).collect();
    Holding {
        step: 5,
        tree: Some(Arc::new(ReductionTree::new(&units))),
        present: present.to_vec(),
        late: Vec::new(),
        strict: false,
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

    fn holding(present: &[(u32, u32)]) -> Holding {
        eight_units(present)
    }

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
        let h = holding(&[(4, 5)]);
        assert_eq!(choose(&h, &[], &[unit(2), unit(5), unit(0)]), Some(1));
        assert_eq!(choose(&h, &[], &[unit(2), unit(6), unit(0)]), Some(2));
        assert_eq!(choose(&h, &[], &[]), None);
    }

    #[test]
    fn beyond_the_limit_a_part_waits_unless_its_sibling_can_be_completed() {
        let h = holding(&[(0, 2), (4, 5), (6, 7)]);
        // Unit 2's sibling (unit 3) has not arrived: held back.
        assert_eq!(choose(&h, &[], &[unit(2)]), None);
        // Unit 3 waits to be read too: unit 2 goes (and unit 3 joins it next).
        assert_eq!(choose(&h, &[], &[unit(3), unit(2)]), Some(1));
        // Unit 3 being read counts as held: unit 2 joins it.
        assert_eq!(choose(&h, &[unit(3)], &[unit(2)]), Some(0));
        // Parts being read count towards the limit.
        assert_eq!(
            choose(&holding(&[]), &[unit(4)], &[unit(6)]),
            Some(0),
            "one: under it"
        );
        assert_eq!(
            choose(&holding(&[(0, 2)]), &[unit(4)], &[unit(6)]),
            None,
            "two: at it"
        );
        // A part of unit 5 or 7 joins at once, whatever the limit.
        assert_eq!(choose(&h, &[], &[unit(2), unit(7)]), Some(1));
    }

    #[test]
    fn unknown_redundant_and_other_steps_are_never_held() {
        let h = holding(&[(0, 2), (4, 5), (6, 7)]);
        assert_eq!(choose(&h, &[], &[unit(2), None]), Some(1));
        let old = Some(Hint {
            step: 4,
            lo: 2,
            hi: 3,
        });
        assert_eq!(choose(&h, &[], &[unit(2), old]), Some(1));
        let inside = Some(Hint {
            step: 5,
            lo: 1,
            hi: 2,
        });
        assert_eq!(choose(&h, &[], &[unit(2), inside]), Some(1));
        let late = Holding {
            late: vec![3],
            ..h.clone()
        };
        assert_eq!(
            choose(&late, &[], &[unit(2)]),
            Some(0),
            "its sibling comes last: no use waiting"
        );
        let strict = Holding { strict: true, ..h };
        assert_eq!(choose(&strict, &[], &[unit(2)]), Some(0));
        assert_eq!(choose(&Holding::default(), &[], &[unit(2)]), Some(0));
    }
}
