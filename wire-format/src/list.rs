//! One zero-copy view for every list of fixed-size records on the wire: the entries of a
//! datagram, the users of a link request or LAGGED frame, the records of a PRESENCE frame, the
//! transitions of an EVENTS frame, the spans of a HISTORY_REPLY frame and the shard ports of a
//! WELCOME frame.
//!
//! It exists so that those lists share one implementation (length, indexing, iteration in both
//! directions, `Debug`) instead of one hand-written copy each. A [`FixedList`] is only made by
//! the decoders, after they have validated every record, so reading a record cannot fail and
//! allocates nothing; the [`Record`] trait says how many bytes a record takes and how to read
//! one.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::iter::FusedIterator;
use std::marker::PhantomData;
use std::slice::ChunksExact;

use crate::le;

pub(crate) mod sealed {
    /// Keeps [`Record`](super::Record) to this crate's types: only its decoders validate
    /// records.
    pub trait Sealed {}
}

/// A value stored on the wire as exactly [`LEN`](Record::LEN) bytes, read from bytes the
/// decoder has already validated.
///
/// Implemented (only) by this crate's record types: `u64` (a user id), `u16` (a shard port),
/// [`Entry`](crate::Entry), [`PresenceRecord`](crate::link::PresenceRecord),
/// [`Event`](crate::link::Event) and [`Span`](crate::link::Span).
pub trait Record: sealed::Sealed + Copy {
    /// Bytes per record on the wire.
    const LEN: usize;

    /// The record in `bytes` (exactly [`LEN`](Record::LEN) bytes, validated by the decoder;
    /// fields out of range read as zeros, never a panic).
    fn read(bytes: &[u8]) -> Self;
}

/// User ids (`u64`) and shard ports (`u16`): a little-endian integer.
macro_rules! int_record {
    ($($int:ty),*) => {$(
        impl sealed::Sealed for $int {}

        impl Record for $int {
            const LEN: usize = std::mem::size_of::<$int>();

            #[inline(always)]
            fn read(bytes: &[u8]) -> $int {
                <$int>::from_le_bytes(le::array(bytes, 0))
            }
        }
    )*};
}

int_record!(u64, u16);

/// A validated list of fixed-size records, viewed in place: `len()` records of
/// [`R::LEN`](Record::LEN) bytes each.
///
/// Only decoding makes one (or [`Default`], an empty list), so every record in it is valid and
/// reading one cannot fail.
pub struct FixedList<'a, R> {
    bytes: &'a [u8],
    record: PhantomData<fn() -> R>,
}

impl<'a, R: Record> FixedList<'a, R> {
    /// A view of `bytes`, whose records the caller has validated (`bytes.len()` is a multiple
    /// of `R::LEN`).
    #[inline]
    pub(crate) fn from_validated(bytes: &'a [u8]) -> FixedList<'a, R> {
        FixedList {
            bytes,
            record: PhantomData,
        }
    }

    /// Number of records (duplicates counted).
    #[inline]
    pub fn len(&self) -> usize {
        self.bytes.len() / R::LEN
    }

    /// Whether there is no record.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Record `i`, or `None` if `i >= len()`.
    #[inline]
    pub fn get(&self, i: usize) -> Option<R> {
        let at = i.checked_mul(R::LEN)?;
        let c = self.bytes.get(at..at.checked_add(R::LEN)?)?;
        Some(R::read(c))
    }

    /// The records, in wire order.
    #[inline]
    pub fn iter(&self) -> FixedIter<'a, R> {
        FixedIter {
            chunks: self.bytes.chunks_exact(R::LEN),
            record: PhantomData,
        }
    }

    /// The raw bytes of the records (`R::LEN × len()`).
    #[inline]
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }
}

impl<R> Clone for FixedList<'_, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<R> Copy for FixedList<'_, R> {}

impl<R> Default for FixedList<'_, R> {
    fn default() -> Self {
        FixedList {
            bytes: &[],
            record: PhantomData,
        }
    }
}

impl<R> PartialEq for FixedList<'_, R> {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl<R> Eq for FixedList<'_, R> {}

impl<R> Hash for FixedList<'_, R> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.bytes.hash(state);
    }
}

impl<R: Record + fmt::Debug> fmt::Debug for FixedList<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a, R: Record> IntoIterator for FixedList<'a, R> {
    type Item = R;
    type IntoIter = FixedIter<'a, R>;

    fn into_iter(self) -> FixedIter<'a, R> {
        self.iter()
    }
}

impl<'a, R: Record> IntoIterator for &FixedList<'a, R> {
    type Item = R;
    type IntoIter = FixedIter<'a, R>;

    fn into_iter(self) -> FixedIter<'a, R> {
        self.iter()
    }
}

/// Iterator over a [`FixedList`], in wire order (or backwards).
pub struct FixedIter<'a, R> {
    chunks: ChunksExact<'a, u8>,
    record: PhantomData<fn() -> R>,
}

impl<R> Clone for FixedIter<'_, R> {
    fn clone(&self) -> Self {
        FixedIter {
            chunks: self.chunks.clone(),
            record: PhantomData,
        }
    }
}

impl<R: Record + fmt::Debug> fmt::Debug for FixedIter<'_, R> {
    /// The records not yet returned.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.clone()).finish()
    }
}

impl<R: Record> Iterator for FixedIter<'_, R> {
    type Item = R;

    #[inline]
    fn next(&mut self) -> Option<R> {
        self.chunks.next().map(R::read)
    }

    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.chunks.size_hint()
    }

    #[inline]
    fn nth(&mut self, n: usize) -> Option<R> {
        self.chunks.nth(n).map(R::read)
    }
}

impl<R: Record> DoubleEndedIterator for FixedIter<'_, R> {
    #[inline]
    fn next_back(&mut self) -> Option<R> {
        self.chunks.next_back().map(R::read)
    }

    #[inline]
    fn nth_back(&mut self, n: usize) -> Option<R> {
        self.chunks.nth_back(n).map(R::read)
    }
}

impl<R: Record> ExactSizeIterator for FixedIter<'_, R> {}

impl<R: Record> FusedIterator for FixedIter<'_, R> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_reads_in_both_directions() {
        let bytes: Vec<u8> = [3u64, 1, 2].iter().flat_map(|u| u.to_le_bytes()).collect();
        let list = FixedList::<u64>::from_validated(&bytes);
        assert_eq!(list.len(), 3);
        assert!(!list.is_empty());
        assert_eq!(list.get(2), Some(2));
        assert_eq!(list.get(3), None);
        assert_eq!(list.get(usize::MAX), None);
        assert_eq!(list.iter().collect::<Vec<_>>(), [3, 1, 2]);
        assert_eq!(list.iter().rev().collect::<Vec<_>>(), [2, 1, 3]);
        assert_eq!(list.iter().nth(1), Some(1));
        assert_eq!(list.iter().nth_back(1), Some(1));
        assert_eq!(list.iter().len(), 3);
        assert_eq!(format!("{list:?}"), "[3, 1, 2]");
        let mut it = list.iter();
        it.next();
        assert_eq!(format!("{it:?}"), "[1, 2]");
        assert_eq!(list.as_bytes().as_ptr(), bytes.as_ptr());
        let empty = FixedList::<u16>::default();
        assert!(empty.is_empty());
        assert_eq!(empty.iter().next(), None);
        assert_eq!(empty, FixedList::from_validated(&[]));
    }
}
