//! The reduction tree (docs/design.md, invariant 2): one binary tree over the m blocks, fixed for
//! the life of a job, that says in which association block gradients are summed. Its leaves are
//! the blocks in id order; above them, each reduction unit (one worker's first-rank blocks when
//! the job was planned) is a balanced subtree, and the units are joined by a balanced tree over
//! their order. A node's value is always its left child's plus its right child's, so whoever
//! holds all the leaves of a subtree can send that subtree's sum and the server's result has the
//! same bits as if every block had come on its own. Nodes are named by their block range.

use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    range: (u32, u32),
    parent: Option<usize>,
    children: Option<(usize, usize)>,
    /// One of the units the tree was built over.
    unit: bool,
}

/// The tree of a set of units that tile 0..m.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReductionTree {
    nodes: Vec<Node>,
    index: HashMap<(u32, u32), usize>,
}

/// A node of a [`ReductionTree`], by index.
pub type NodeId = usize;

impl ReductionTree {
    /// The tree over `units` (half-open block ranges tiling 0..m in order; empty ones are
    /// skipped). No units, no tree nodes.
    pub fn new(units: &[(u32, u32)]) -> Self {
        let units: Vec<(u32, u32)> = units.iter().copied().filter(|(lo, hi)| lo < hi).collect();
        let mut tree = Self {
            nodes: Vec::with_capacity(2 * units.last().map_or(0, |u| u.1 as usize)),
            index: HashMap::new(),
        };
        if !units.is_empty() {
            tree.over_units(&units, None);
        }
        tree
    }

    /// The root (covering every block), if there are blocks.
    pub fn root(&self) -> Option<NodeId> {
        (!self.nodes.is_empty()).then_some(0)
    }

    /// The node whose leaves are exactly blocks lo..hi.
    pub fn node(&self, lo: u32, hi: u32) -> Option<NodeId> {
        self.index.get(&(lo, hi)).copied()
    }

    pub fn range(&self, node: NodeId) -> (u32, u32) {
        self.nodes[node].range
    }

    pub fn parent(&self, node: NodeId) -> Option<NodeId> {
        self.nodes[node].parent
    }

    pub fn children(&self, node: NodeId) -> Option<(NodeId, NodeId)> {
        self.nodes[node].children
    }

    /// Whether `node` is one of the units the tree was built over.
    pub fn is_unit(&self, node: NodeId) -> bool {
        self.nodes[node].unit
    }

    /// Whether `node` lies within a unit (a unit itself, or a part of one).
    pub fn within_unit(&self, node: NodeId) -> bool {
        let mut at = Some(node);
        while let Some(n) = at {
            if self.is_unit(n) {
                return true;
            }
            at = self.parent(n);
        }
        false
    }

    /// The units within `node` (itself if it is one or lies within one), left to right.
    pub fn units_within(&self, node: NodeId) -> Vec<NodeId> {
        if self.within_unit(node) {
            return vec![node];
        }
        let Some((left, right)) = self.children(node) else {
            return vec![node];
        };
        let mut units = self.units_within(left);
        units.extend(self.units_within(right));
        units
    }

    /// The other child of `node`'s parent.
    pub fn sibling(&self, node: NodeId) -> Option<NodeId> {
        let (left, right) = self.children(self.parent(node)?)?;
        Some(if left == node { right } else { left })
    }

    /// Whether `inner`'s blocks lie within `outer`'s.
    pub fn contains(&self, outer: NodeId, inner: NodeId) -> bool {
        let ((olo, ohi), (ilo, ihi)) = (self.range(outer), self.range(inner));
        olo <= ilo && ihi <= ohi
    }

    /// The largest nodes whose blocks all satisfy `held`, left to right: what a worker holding
    /// those blocks can send, one message per node.
    pub fn cover(&self, held: impl Fn(u32) -> bool) -> Vec<NodeId> {
        let mut out = Vec::new();
        if let Some(root) = self.root() {
            self.cover_into(root, &held, &mut out);
        }
        out
    }

    /// Evaluates `node` in the tree's association: `leaf` gives a block's value, `combine` joins
    /// a left and a right value.
    pub fn fold<T, E>(
        &self,
        node: NodeId,
        leaf: &mut impl FnMut(u32) -> Result<T, E>,
        combine: &mut impl FnMut(T, T) -> Result<T, E>,
    ) -> Result<T, E> {
        match self.children(node) {
            None => leaf(self.range(node).0),
            Some((left, right)) => {
                let left = self.fold(left, leaf, combine)?;
                let right = self.fold(right, leaf, combine)?;
                combine(left, right)
            }
        }
    }

    fn cover_into(&self, node: NodeId, held: &impl Fn(u32) -> bool, out: &mut Vec<NodeId>) {
        let (lo, hi) = self.range(node);
        if (lo..hi).all(held) {
            out.push(node);
        } else if let Some((left, right)) = self.children(node) {
            self.cover_into(left, held, out);
            self.cover_into(right, held, out);
        }
    }

    fn push(&mut self, range: (u32, u32), parent: Option<NodeId>) -> NodeId {
        let id = self.nodes.len();
        self.nodes.push(Node {
            range,
            parent,
            children: None,
            unit: false,
        });
        self.index.insert(range, id);
        id
    }

    /// A balanced tree over the units, each unit a balanced tree over its blocks.
    fn over_units(&mut self, units: &[(u32, u32)], parent: Option<NodeId>) -> NodeId {
        if let [(lo, hi)] = units {
            let unit = self.over_blocks(*lo, *hi, parent);
            self.nodes[unit].unit = true;
            return unit;
        }
        let range = (units[0].0, units[units.len() - 1].1);
        let id = self.push(range, parent);
        let (left, right) = units.split_at(units.len() / 2);
        let left = self.over_units(left, Some(id));
        let right = self.over_units(right, Some(id));
        self.nodes[id].children = Some((left, right));
        id
    }

    fn over_blocks(&mut self, lo: u32, hi: u32, parent: Option<NodeId>) -> NodeId {
        let id = self.push((lo, hi), parent);
        if hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            let left = self.over_blocks(lo, mid, Some(id));
            let right = self.over_blocks(mid, hi, Some(id));
            self.nodes[id].children = Some((left, right));
        }
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_subtrees_and_every_node_has_a_unique_range() {
        let units = [(0, 3), (3, 6), (6, 8), (8, 11)];
        let tree = ReductionTree::new(&units);
        for (lo, hi) in units {
            assert!(tree.node(lo, hi).is_some(), "unit {lo}..{hi} is a node");
        }
        assert_eq!(tree.root().map(|r| tree.range(r)), Some((0, 11)));
        let is_unit = |lo, hi| tree.node(lo, hi).is_some_and(|n| tree.is_unit(n));
        assert!(units.iter().all(|&(lo, hi)| is_unit(lo, hi)));
        assert!(!is_unit(0, 6) && !is_unit(0, 1) && !is_unit(1, 3));
        for b in 0..11 {
            assert!(tree.node(b, b + 1).is_some(), "leaf {b}");
        }
        // 11 leaves, each internal node has two children: 21 nodes, all named apart.
        assert_eq!(tree.index.len(), 21);
        assert_eq!(tree.nodes.len(), 21);
    }

    #[test]
    fn cover_takes_the_largest_held_subtrees() {
        let tree = ReductionTree::new(&[(0, 3), (3, 6)]);
        let ranges = |held: &[u32]| -> Vec<(u32, u32)> {
            tree.cover(|b| held.contains(&b))
                .into_iter()
                .map(|n| tree.range(n))
                .collect()
        };
        assert_eq!(ranges(&[0, 1, 2]), vec![(0, 3)]);
        assert_eq!(ranges(&[0, 1, 2, 3, 4, 5]), vec![(0, 6)]);
        // Unit 3..6 splits as 3..4 | 4..6.
        assert_eq!(ranges(&[4, 5, 0]), vec![(0, 1), (4, 6)]);
        assert_eq!(ranges(&[3, 5]), vec![(3, 4), (5, 6)]);
        assert!(ranges(&[]).is_empty());
    }

    #[test]
    fn nodes_above_units_split_into_their_units() {
        let tree = ReductionTree::new(&[(0, 3), (3, 6), (6, 7)]);
        let units = |lo, hi| -> Vec<(u32, u32)> {
            let node = tree.node(lo, hi).unwrap();
            tree.units_within(node)
                .into_iter()
                .map(|n| tree.range(n))
                .collect()
        };
        assert_eq!(units(0, 7), vec![(0, 3), (3, 6), (6, 7)]);
        assert_eq!(units(0, 3), vec![(0, 3)]);
        assert_eq!(units(1, 3), vec![(1, 3)], "a part of a unit stays whole");
        assert!(tree.within_unit(tree.node(4, 6).unwrap()));
        assert!(!tree.within_unit(tree.root().unwrap()));
    }

    #[test]
    fn fold_follows_the_tree_shape() {
        let tree = ReductionTree::new(&[(0, 3), (3, 4)]);
        let shape: Result<String, ()> =
            tree.fold(tree.root().unwrap(), &mut |b| Ok(b.to_string()), &mut |l, r| {
                Ok(format!("({l}+{r})"))
            });
        assert_eq!(shape.unwrap(), "((0+(1+2))+3)");
    }

    #[test]
    fn empty_units_are_skipped_and_no_units_make_no_tree() {
        let tree = ReductionTree::new(&[(0, 2), (2, 2), (2, 3)]);
        assert_eq!(tree.root().map(|r| tree.range(r)), Some((0, 3)));
        assert!(ReductionTree::new(&[]).root().is_none());
    }
}
