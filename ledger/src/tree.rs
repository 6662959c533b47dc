//! The RFC 6962 / RFC 9162 §2.1 Merkle tree: roots, the compact range that the
//! sequencer keeps (O(log n) hashes for the whole log), inclusion and
//! consistency proofs, and their verification.
//!
//! Proofs are built in two steps so that a database-backed store can answer
//! them with one batched read: a [`ProofPlan`] lists the perfect-subtree
//! nodes ([`NodeId`]) needed, the caller fetches those hashes however it
//! stores them, and [`ProofPlan::assemble`] folds them into the proof.

use std::ops::Range;

use crate::error::{RangeError, VerifyError};
use crate::hash::{Hash, TreeHasher};

/// The split point of RFC 6962: the largest power of two strictly smaller
/// than `n`.
///
/// # Panics
/// If `n < 2` (such trees have no split).
pub fn split_point(n: u64) -> u64 {
    assert!(n >= 2, "split_point({n}): trees of fewer than 2 leaves do not split");
    1u64 << (63 - (n - 1).leading_zeros())
}

/// Root of the tree over `leaves` (leaf hashes), per RFC 6962 MTH.
pub fn root(hasher: &TreeHasher, leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => hasher.empty_root(),
        1 => leaves[0],
        n => {
            let k = split_point(n as u64) as usize;
            hasher.node(&root(hasher, &leaves[..k]), &root(hasher, &leaves[k..]))
        }
    }
}

/// A perfect subtree: the `2^level` leaves `[index·2^level, (index+1)·2^level)`.
/// Level 0 nodes are leaf hashes. Perfect subtrees never change once their
/// last leaf is appended, which is what makes them storable (tiles).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    /// Height above the leaves.
    pub level: u8,
    /// Position among the nodes of that level, from the left.
    pub index: u64,
}

impl NodeId {
    // Levels are below 64 for every tree of fewer than 2^64 leaves.

    /// First leaf covered.
    pub fn begin(&self) -> u64 {
        self.index << self.level
    }
    /// One past the last leaf covered.
    pub fn end(&self) -> u64 {
        (self.index + 1) << self.level
    }
}

/// The frontier of the tree over leaves `[0, size)`: one hash per set bit of
/// `size`, the roots of its perfect subtrees from the largest (leftmost) to
/// the smallest. Enough to append leaves and compute the root forever after,
/// in O(log n) memory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactRange {
    size: u64,
    hashes: Vec<Hash>,
}

impl CompactRange {
    /// The empty tree.
    pub fn new() -> CompactRange {
        CompactRange::default()
    }

    /// Restores a range from stored parts; `None` unless there is exactly one
    /// hash per set bit of `size`.
    pub fn from_parts(size: u64, hashes: Vec<Hash>) -> Option<CompactRange> {
        (hashes.len() == size.count_ones() as usize).then_some(CompactRange { size, hashes })
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The frontier hashes, largest subtree first.
    pub fn hashes(&self) -> &[Hash] {
        &self.hashes
    }

    /// The node ids of the frontier, in the order of [`CompactRange::hashes`].
    pub fn node_ids(&self) -> Vec<NodeId> {
        frontier_ids(0, self.size)
    }

    /// The node ids of the frontier of a tree of `size` leaves (what to read
    /// from storage to restore it with [`CompactRange::from_parts`]).
    pub fn node_ids_for(size: u64) -> Vec<NodeId> {
        frontier_ids(0, size)
    }

    /// Appends one leaf hash. `visit` is called for every perfect node this
    /// completes (the leaf itself at level 0, then each new parent), so that
    /// a store can persist them.
    pub fn append(&mut self, hasher: &TreeHasher, leaf: Hash, mut visit: impl FnMut(NodeId, &Hash)) {
        let mut id = NodeId { level: 0, index: self.size };
        let mut h = leaf;
        visit(id, &h);
        while id.index & 1 == 1 {
            // Invariant: a set low bit of the index means the left sibling is
            // the last frontier hash, so pop cannot fail.
            let left = self.hashes.pop().expect("frontier holds the left sibling");
            h = hasher.node(&left, &h);
            id = NodeId { level: id.level + 1, index: id.index >> 1 };
            visit(id, &h);
        }
        self.hashes.push(h);
        self.size += 1;
    }

    /// Appends a whole perfect subtree of `2^level` leaves by its root hash,
    /// as if its leaves were appended one by one. The range's size must be
    /// a multiple of `2^level` (the subtree starts where the tree ends);
    /// returns `false`, changing nothing, when it is not.
    pub fn push_subtree(&mut self, hasher: &TreeHasher, level: u8, root: Hash) -> bool {
        if level >= 64 || !self.size.is_multiple_of(1u64 << level) {
            return false;
        }
        let mut id = NodeId { level, index: self.size >> level };
        let mut h = root;
        while id.index & 1 == 1 {
            // As in `append`: an odd index means the left sibling is the
            // last frontier hash (the size's lowest set bit is `level`).
            let left = self.hashes.pop().expect("frontier holds the left sibling");
            h = hasher.node(&left, &h);
            id = NodeId { level: id.level + 1, index: id.index >> 1 };
        }
        self.hashes.push(h);
        self.size += 1u64 << level;
        true
    }

    /// Appends many leaf hashes without visiting nodes.
    pub fn extend(&mut self, hasher: &TreeHasher, leaves: &[Hash]) {
        for l in leaves {
            self.append(hasher, *l, |_, _| {});
        }
    }

    /// The root hash of the tree of `size()` leaves.
    pub fn root(&self, hasher: &TreeHasher) -> Hash {
        fold_right(hasher, &self.hashes)
    }
}

/// Folds perfect-subtree hashes listed left to right (decreasing size) into
/// the root of their union: `node(h0, node(h1, … node(hk-1, hk)))`.
fn fold_right(hasher: &TreeHasher, hashes: &[Hash]) -> Hash {
    match hashes.split_last() {
        None => hasher.empty_root(),
        Some((last, rest)) => rest.iter().rev().fold(*last, |acc, h| hasher.node(h, &acc)),
    }
}

/// The perfect subtrees whose union is `[begin, end)`, largest first. For
/// every range that occurs as a subtree in RFC 6962 recursion, folding their
/// hashes with [`fold_right`] gives `MTH(D[begin:end])`.
fn frontier_ids(mut begin: u64, end: u64) -> Vec<NodeId> {
    let mut out = Vec::new();
    while begin < end {
        let mut level = 63 - (end - begin).leading_zeros();
        if begin != 0 {
            level = level.min(begin.trailing_zeros());
        }
        out.push(NodeId { level: level as u8, index: begin >> level });
        begin += 1u64 << level;
    }
    out
}

/// Where proofs get their node hashes from.
pub trait NodeSource {
    /// Why a lookup failed (I/O, missing node, …).
    type Error;
    /// The hashes of `ids`, in the same order. Every id asked for is a
    /// perfect subtree within the tree the proof is for.
    fn nodes(&self, ids: &[NodeId]) -> Result<Vec<Hash>, Self::Error>;
}

/// The nodes a proof needs and how to fold them: proof element `i` is the
/// fold of `ids[parts[i]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProofPlan {
    ids: Vec<NodeId>,
    parts: Vec<Range<usize>>,
}

impl ProofPlan {
    /// The perfect nodes to fetch; O(log n) of them.
    pub fn node_ids(&self) -> &[NodeId] {
        &self.ids
    }

    /// Number of hashes in the finished proof.
    pub fn len(&self) -> usize {
        self.parts.len()
    }

    /// Whether the proof is empty (size-1 trees, equal sizes).
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// Builds the proof from the hashes of [`ProofPlan::node_ids`].
    pub fn assemble(&self, hasher: &TreeHasher, hashes: &[Hash]) -> Result<Vec<Hash>, RangeError> {
        if hashes.len() != self.ids.len() {
            return Err(RangeError::NodeCount { want: self.ids.len(), got: hashes.len() });
        }
        Ok(self.parts.iter().map(|r| fold_right(hasher, &hashes[r.clone()])).collect())
    }

    fn push_range(&mut self, begin: u64, end: u64) {
        let start = self.ids.len();
        self.ids.extend(frontier_ids(begin, end));
        self.parts.push(start..self.ids.len());
    }
}

/// The plan of the inclusion proof of leaf `index` in the tree of `size`
/// leaves (RFC 9162 §2.1.3.1), from the leaf's sibling up to the root's child.
pub fn inclusion_plan(index: u64, size: u64) -> Result<ProofPlan, RangeError> {
    if index >= size {
        return Err(RangeError::Leaf { index, size });
    }
    let mut plan = ProofPlan { ids: Vec::new(), parts: Vec::new() };
    // Walk down from the root, recording siblings; emit them bottom-up.
    let mut siblings = Vec::new();
    let (mut lo, mut hi) = (0u64, size);
    while hi - lo > 1 {
        let k = split_point(hi - lo);
        if index - lo < k {
            siblings.push((lo + k, hi));
            hi = lo + k;
        } else {
            siblings.push((lo, lo + k));
            lo += k;
        }
    }
    for (b, e) in siblings.into_iter().rev() {
        plan.push_range(b, e);
    }
    Ok(plan)
}

/// The plan of the consistency proof from size `old` to size `new`
/// (RFC 9162 §2.1.4.1). Empty when `old` is 0 or equal to `new`.
pub fn consistency_plan(old: u64, new: u64) -> Result<ProofPlan, RangeError> {
    if old > new {
        return Err(RangeError::Sizes { old, new });
    }
    let mut plan = ProofPlan { ids: Vec::new(), parts: Vec::new() };
    if old == 0 || old == new {
        return Ok(plan);
    }
    // SUBPROOF(m, D[lo:hi], b), unrolled: walk down, then emit bottom-up.
    let mut siblings = Vec::new();
    let (mut m, mut lo, mut hi, mut whole_old_tree) = (old, 0u64, new, true);
    loop {
        let n = hi - lo;
        if m == n {
            if !whole_old_tree {
                siblings.push((lo, hi));
            }
            break;
        }
        let k = split_point(n);
        if m <= k {
            siblings.push((lo + k, hi));
            hi = lo + k;
        } else {
            siblings.push((lo, lo + k));
            m -= k;
            lo += k;
            whole_old_tree = false;
        }
    }
    for (b, e) in siblings.into_iter().rev() {
        plan.push_range(b, e);
    }
    Ok(plan)
}

/// Fetches and assembles the inclusion proof of leaf `index` in the tree of `size`.
pub fn inclusion_proof<S: NodeSource>(
    hasher: &TreeHasher,
    source: &S,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, ProofSourceError<S::Error>> {
    let plan = inclusion_plan(index, size)?;
    let hashes = source.nodes(plan.node_ids()).map_err(ProofSourceError::Source)?;
    Ok(plan.assemble(hasher, &hashes)?)
}

/// Fetches and assembles the consistency proof from size `old` to `new`.
pub fn consistency_proof<S: NodeSource>(
    hasher: &TreeHasher,
    source: &S,
    old: u64,
    new: u64,
) -> Result<Vec<Hash>, ProofSourceError<S::Error>> {
    let plan = consistency_plan(old, new)?;
    let hashes = source.nodes(plan.node_ids()).map_err(ProofSourceError::Source)?;
    Ok(plan.assemble(hasher, &hashes)?)
}

/// Building a proof failed: a bad request, or the node source failed.
#[derive(Debug, thiserror::Error)]
pub enum ProofSourceError<E> {
    /// The request is outside the tree.
    #[error(transparent)]
    Range(#[from] RangeError),
    /// The node source failed.
    #[error("node source: {0}")]
    Source(E),
}

/// The root implied by an inclusion proof (RFC 9162 §2.1.3.2), or `None` when
/// the proof has the wrong shape for `index` and `size`.
pub fn root_from_inclusion(hasher: &TreeHasher, index: u64, size: u64, leaf: &Hash, proof: &[Hash]) -> Option<Hash> {
    if index >= size {
        return None;
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return None;
        }
        if fnode & 1 == 1 || fnode == snode {
            r = hasher.node(p, &r);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            r = hasher.node(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    (snode == 0).then_some(r)
}

/// Verifies that `leaf` is leaf `index` of the tree of `size` leaves with `root`.
pub fn verify_inclusion(
    hasher: &TreeHasher,
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), VerifyError> {
    match root_from_inclusion(hasher, index, size, leaf, proof) {
        Some(r) if r == *root => Ok(()),
        _ => Err(VerifyError::Inclusion { index, size }),
    }
}

/// Verifies that the tree of `old` leaves with `old_root` is a prefix of the
/// tree of `new` leaves with `new_root` (RFC 9162 §2.1.4.2). Every tree
/// extends the empty tree, whose root is `H("")`, with an empty proof.
pub fn verify_consistency(
    hasher: &TreeHasher,
    old: u64,
    new: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), VerifyError> {
    let fail = || Err(VerifyError::Consistency { old, new });
    if old > new {
        return fail();
    }
    if old == 0 {
        let extends = proof.is_empty() && *old_root == hasher.empty_root() && (new > 0 || new_root == old_root);
        return if extends { Ok(()) } else { fail() };
    }
    if old == new {
        return if proof.is_empty() && old_root == new_root { Ok(()) } else { fail() };
    }
    if proof.is_empty() {
        return fail();
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let (mut fnode, mut snode) = (old - 1, new - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if snode == 0 {
            return fail();
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = hasher.node(c, &fr);
            sr = hasher.node(c, &sr);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            sr = hasher.node(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if fr == *old_root && sr == *new_root && snode == 0 { Ok(()) } else { fail() }
}

/// The perfect subtrees of the global tree `[begin, end)` decomposes into,
/// largest first (what [`CompactRange::push_subtree`] takes, in order, to
/// extend a tree of `begin` leaves to `end`).
pub fn subtree_ids(begin: u64, end: u64) -> Vec<NodeId> {
    frontier_ids(begin, end)
}

/// The leaves of one batch, `[first, first + n)` in the global tree, with
/// every perfect node of the global tree that lies inside them.
///
/// A batch's own root (its leaves as a tree of their own) and the global
/// tree share the subtrees that are aligned in both; a `Span` computes each
/// global node inside the batch once, and the batch root reuses them. A
/// sequencer then extends the global tree with O(log n) subtree roots per
/// batch ([`Span::subtree`], [`CompactRange::push_subtree`]) instead of n
/// leaves, and the hashing moves to whoever builds the span, in parallel.
#[derive(Clone, Debug)]
pub struct Span {
    first: u64,
    /// `levels[l]` holds nodes of level `l` from index `starts[l]` on.
    levels: Vec<Vec<Hash>>,
    starts: Vec<u64>,
}

impl Span {
    /// Hashes every global perfect node inside `[first, first + leaves.len())`.
    pub fn new(hasher: &TreeHasher, first: u64, leaves: Vec<Hash>) -> Span {
        let end = first + leaves.len() as u64;
        let mut span = Span { first, levels: vec![leaves], starts: vec![first] };
        for level in 1..64u32 {
            let width = 1u64 << level;
            let (lo, hi) = (first.div_ceil(width), end / width);
            if lo >= hi {
                break; // none here, so none above either
            }
            let (below, start) = (&span.levels[level as usize - 1], span.starts[level as usize - 1]);
            let nodes = (lo..hi)
                .map(|i| {
                    let l = (2 * i - start) as usize;
                    hasher.node(&below[l], &below[l + 1])
                })
                .collect();
            span.levels.push(nodes);
            span.starts.push(lo);
        }
        span
    }

    /// The global index of the first leaf.
    pub fn first(&self) -> u64 {
        self.first
    }

    /// One past the last leaf.
    pub fn end(&self) -> u64 {
        self.first + self.levels[0].len() as u64
    }

    /// The leaf hashes.
    pub fn leaves(&self) -> &[Hash] {
        &self.levels[0]
    }

    /// The hash of a global perfect node inside the span.
    pub fn subtree(&self, id: NodeId) -> Option<Hash> {
        let l = id.level as usize;
        let i = id.index.checked_sub(*self.starts.get(l)?)?;
        self.levels[l].get(usize::try_from(i).ok()?).copied()
    }

    /// `MTH` of the leaves `[lo, hi)` (global indices inside the span) as a
    /// tree of their own; [`Span::root`] is the batch root.
    pub fn range_root(&self, hasher: &TreeHasher, lo: u64, hi: u64) -> Hash {
        let n = hi - lo;
        if n == 0 {
            return hasher.empty_root();
        }
        if n.is_power_of_two()
            && lo.is_multiple_of(n)
            && let Some(h) = self.subtree(NodeId { level: n.trailing_zeros() as u8, index: lo / n })
        {
            return h;
        }
        let k = split_point(n);
        hasher.node(&self.range_root(hasher, lo, lo + k), &self.range_root(hasher, lo + k, hi))
    }

    /// The root of the batch's leaves as a tree of their own.
    pub fn root(&self, hasher: &TreeHasher) -> Hash {
        self.range_root(hasher, self.first, self.end())
    }
}

/// An in-memory tree that keeps every perfect node: a [`NodeSource`] for
/// tests, tools and small logs. Memory is about 2·n hashes.
#[derive(Clone, Debug, Default)]
pub struct MemTree {
    range: CompactRange,
    levels: Vec<Vec<Hash>>,
}

impl MemTree {
    /// The empty tree.
    pub fn new() -> MemTree {
        MemTree::default()
    }

    /// Appends a leaf hash.
    pub fn append(&mut self, hasher: &TreeHasher, leaf: Hash) {
        let levels = &mut self.levels;
        self.range.append(hasher, leaf, |id, h| {
            let l = id.level as usize;
            if levels.len() <= l {
                levels.resize_with(l + 1, Vec::new);
            }
            debug_assert_eq!(levels[l].len() as u64, id.index);
            levels[l].push(*h);
        });
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.range.size()
    }

    /// Root of the whole tree.
    pub fn root(&self, hasher: &TreeHasher) -> Hash {
        self.range.root(hasher)
    }

    /// Root of the tree of the first `size` leaves.
    pub fn root_at(&self, hasher: &TreeHasher, size: u64) -> Option<Hash> {
        let ids = frontier_ids(0, size);
        let hashes = self.nodes(&ids).ok()?;
        Some(fold_right(hasher, &hashes))
    }

    /// The compact range of the whole tree.
    pub fn compact_range(&self) -> &CompactRange {
        &self.range
    }
}

/// A node that the tree does not have (yet).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("node level {} index {} is not in the tree", .0.level, .0.index)]
pub struct MissingNode(pub NodeId);

impl NodeSource for MemTree {
    type Error = MissingNode;
    fn nodes(&self, ids: &[NodeId]) -> Result<Vec<Hash>, MissingNode> {
        ids.iter()
            .map(|id| {
                self.levels
                    .get(id.level as usize)
                    .and_then(|l| usize::try_from(id.index).ok().and_then(|i| l.get(i)))
                    .copied()
                    .ok_or(MissingNode(*id))
            })
            .collect()
    }
}

#[cfg(test)]
mod span_tests {
    use super::*;
    use crate::hash::HashAlg;

    #[test]
    fn spans_give_the_batch_root_and_extend_the_global_tree_like_leaves() {
        let h = TreeHasher::unkeyed(HashAlg::Sha256);
        let all: Vec<Hash> = (0..700u32).map(|i| h.leaf(&i.to_be_bytes())).collect();
        // Batches of awkward sizes at awkward offsets, and aligned ones.
        let mut sizes = vec![1u64, 2, 3, 5, 8, 13, 64, 100, 128, 1, 255, 7];
        sizes.push(700 - sizes.iter().sum::<u64>());
        let mut by_leaf = CompactRange::new();
        let mut by_span = CompactRange::new();
        let mut at = 0u64;
        for n in sizes {
            let leaves = all[at as usize..(at + n) as usize].to_vec();
            let span = Span::new(&h, at, leaves.clone());
            assert_eq!(span.root(&h), root(&h, &leaves), "batch at {at} of {n}");
            by_leaf.extend(&h, &leaves);
            for id in subtree_ids(at, at + n) {
                assert!(by_span.push_subtree(&h, id.level, span.subtree(id).unwrap()));
            }
            assert_eq!(by_span, by_leaf, "after the batch at {at} of {n}");
            at += n;
        }
        assert_eq!(by_span.root(&h), root(&h, &all));
        // A subtree that does not start where the tree ends is refused.
        assert!(!by_span.push_subtree(&h, 3, all[0]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::HashAlg;

    #[test]
    fn split_point_is_largest_power_of_two_below() {
        assert_eq!(split_point(2), 1);
        assert_eq!(split_point(3), 2);
        assert_eq!(split_point(4), 2);
        assert_eq!(split_point(5), 4);
        assert_eq!(split_point(8), 4);
        assert_eq!(split_point(9), 8);
        assert_eq!(split_point(u64::MAX), 1 << 63);
    }

    #[test]
    fn frontier_ids_cover_the_range_exactly() {
        for size in 0..300u64 {
            let ids = frontier_ids(0, size);
            assert_eq!(ids.len(), size.count_ones() as usize);
            let mut next = 0;
            for id in ids {
                assert_eq!(id.begin(), next);
                next = id.end();
            }
            assert_eq!(next, size);
        }
    }

    #[test]
    fn plans_reject_out_of_range_requests() {
        assert_eq!(inclusion_plan(5, 5), Err(RangeError::Leaf { index: 5, size: 5 }));
        assert_eq!(consistency_plan(6, 5), Err(RangeError::Sizes { old: 6, new: 5 }));
        assert!(consistency_plan(5, 5).unwrap().is_empty());
        assert!(inclusion_plan(0, 1).unwrap().is_empty());
    }

    #[test]
    fn memtree_reports_missing_nodes() {
        let h = TreeHasher::unkeyed(HashAlg::Blake3);
        let mut t = MemTree::new();
        for i in 0..3u8 {
            t.append(&h, h.leaf(&[i]));
        }
        let missing = NodeId { level: 1, index: 1 };
        assert_eq!(t.nodes(&[missing]), Err(MissingNode(missing)));
        assert!(inclusion_proof(&h, &t, 0, 4).is_err());
    }
}
