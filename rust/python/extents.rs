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
    /// This step's, in the engine's order, as [`WriteExtents::push`] gets them.
    current: Vec<Extent>,
    /// The last step's: when equal, `sorted` still holds.
    seen: Vec<Extent>,
    /// The non-empty ones sorted by start, with their index in `seen`.
    sorted: Vec<(Extent, usize)>,
    /// Whether `sorted` was built from `seen` and found disjoint.
    settled: bool,
}

impl WriteExtents {
    /// Start this step's list.
    pub(super) fn begin(&mut self) {
        self.current.clear();
    }

    pub(super) fn push(&mut self, extent: Extent) {
        self.current.push(extent);
    }

    /// Take the list pushed since [`WriteExtents::begin`]. When two extents
    /// overlap, return their indices in that list, in order.
    pub(super) fn settle(&mut self) -> Result<(), (usize, usize)> {
        if self.settled && self.current == self.seen {
            return Ok(());
        }
        std::mem::swap(&mut self.current, &mut self.seen);
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
        self.settled = overlap.is_none();
        overlap.map_or(Ok(()), Err)
    }

    /// The index (in the list given to [`WriteExtents::settle`]) of a write
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
