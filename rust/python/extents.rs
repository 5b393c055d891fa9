//! Which bytes a step writes and reads, and whether they overlap.
//!
//! rust-numpy's borrow checker tracks borrows per base object, so an array
//! that reaches the same memory through another object (`as_strided`,
//! `np.frombuffer(memoryview(w))`, ctypes) passes it. These checks compare
//! byte ranges instead, whatever object an array comes through, as
//! `np.may_share_memory` does: a strided array counts from its lowest to its
//! highest byte.

/// A half-open byte range `[start, end)`; empty when `start == end`.
pub(super) type Extent = (usize, usize);

/// The bytes of an array: `data` is the address of its first element, and
/// `strides` are in bytes (negative ones reach below `data`). Empty when the
/// array has no element.
pub(super) fn strided_extent(
    data: usize,
    shape: &[usize],
    strides: &[isize],
    itemsize: usize,
) -> Extent {
    if shape.contains(&0) {
        return (data, data);
    }
    // In i128: as_strided accepts strides whose products overflow isize.
    let (mut low, mut high) = (0i128, itemsize as i128);
    for (&dim, &stride) in shape.iter().zip(strides) {
        let reach = (dim as i128 - 1) * stride as i128;
        if reach < 0 {
            low += reach;
        } else {
            high += reach;
        }
    }
    let at = |offset: i128| (data as i128 + offset).clamp(0, usize::MAX as i128) as usize;
    (at(low), at(high))
}

/// The extents of every array a step writes (params, master copies, state),
/// sorted by address and checked pairwise disjoint. They stay the same from
/// step to step unless an array's memory moves (`ndarray.resize`), so the sort
/// is redone only then; each read buffer is then one binary search.
#[derive(Default)]
pub(super) struct WriteExtents {
    /// As last seen, in the engine's order: a change is one comparison away.
    seen: Vec<Extent>,
    /// The non-empty ones sorted by start, with their index in `seen`.
    sorted: Vec<(Extent, usize)>,
}

impl WriteExtents {
    /// Take this step's write extents (in a fixed order). When two overlap,
    /// return their indices in that order, and forget them.
    pub(super) fn update(
        &mut self,
        current: impl Iterator<Item = Extent>,
    ) -> Result<(), (usize, usize)> {
        let mut changed = false;
        let mut count = 0;
        for (i, extent) in current.enumerate() {
            count = i + 1;
            match self.seen.get_mut(i) {
                Some(old) if *old == extent => {}
                Some(old) => {
                    *old = extent;
                    changed = true;
                }
                None => {
                    self.seen.push(extent);
                    changed = true;
                }
            }
        }
        if count != self.seen.len() {
            self.seen.truncate(count);
            changed = true;
        }
        if !changed && !self.sorted.is_empty() {
            return Ok(());
        }
        self.sorted.clear();
        self.sorted.extend(
            self.seen
                .iter()
                .enumerate()
                .filter(|(_, (start, end))| start < end)
                .map(|(i, &extent)| (extent, i)),
        );
        self.sorted.sort_unstable();
        // Sorted by start: two overlap exactly when a neighbour starts before one ends.
        let overlap = self
            .sorted
            .windows(2)
            .find(|w| w[1].0 .0 < w[0].0 .1)
            .map(|w| (w[0].1.min(w[1].1), w[0].1.max(w[1].1)));
        if let Some(pair) = overlap {
            self.seen.clear();
            self.sorted.clear();
            return Err(pair);
        }
        Ok(())
    }

    /// The index (in the order given to [`WriteExtents::update`]) of a write
    /// extent that `extent` overlaps, if any.
    pub(super) fn overlapping(&self, (start, end): Extent) -> Option<usize> {
        if start >= end {
            return None;
        }
        // Disjoint and sorted by start, so sorted by end too: the first one
        // ending after `start` is the only candidate.
        let i = self.sorted.partition_point(|&((_, e), _)| e <= start);
        self.sorted
            .get(i)
            .filter(|&&((s, _), _)| s < end)
            .map(|&(_, index)| index)
    }
}
