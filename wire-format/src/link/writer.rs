//! The frame-at-a-time writers: [`PresenceWriter`] and [`EventsWriter`] keep a PRESENCE or
//! EVENTS frame open in their own buffer and add a record or transition at a time, up to a
//! `max_frame_len`.
//!
//! They exist for the daemon, which keeps a frame open per link (or per request) and hands
//! frames out as they fill; [`encode_presence`] and [`encode_events`] are the one-shot forms.
//! Both writers are the same [`ListWriter`] over the list-frame builder of `encode`, so they
//! cut frames exactly as the one-shot functions do.

use bytes::BytesMut;

use super::encode::{check_request_id, presence_head, ListFrame, PutRecord};
#[cfg(doc)]
use super::{encode_events, encode_presence};
use super::{EncodeError, Event, FrameType, PresenceRecord};

/// A list frame open in its own buffer, and the buffer its frames are split off.
#[derive(Debug)]
struct ListWriter<R, const H: usize> {
    buf: BytesMut,
    frame: ListFrame<R, H>,
}

impl<R: PutRecord, const H: usize> ListWriter<R, H> {
    /// Refuses a `max_frame_len` too small for one record.
    fn new(t: FrameType, max_frame_len: u32) -> Result<ListWriter<R, H>, EncodeError> {
        ListFrame::<R, H>::check(1, max_frame_len)?;
        let mut buf = BytesMut::new();
        let frame = ListFrame::begin(&mut buf, t, max_frame_len);
        Ok(ListWriter { buf, frame })
    }

    #[inline]
    fn push(&mut self, record: &R) -> Result<(), EncodeError> {
        self.frame.push(&mut self.buf, record)
    }

    #[inline]
    fn len(&self) -> usize {
        self.frame.len()
    }

    #[inline]
    fn remaining(&self) -> usize {
        self.frame.remaining(&self.buf)
    }

    /// Completes the current frame with `head` and returns it, length prefix included.
    fn close(&mut self, head: [u8; H]) -> BytesMut {
        self.frame.close(&mut self.buf, head);
        self.buf.split()
    }

    /// [`close`](ListWriter::close), then starts the next frame; `None`, and nothing changes,
    /// when the frame has no record.
    fn flush(&mut self, head: [u8; H]) -> Option<BytesMut> {
        if self.len() == 0 {
            return None;
        }
        let frame = self.close(head);
        self.frame = self.frame.next(&mut self.buf);
        Some(frame)
    }
}

/// The current frame's size and room, alike in both writers.
macro_rules! frame_size {
    ($what:literal, $whats:literal) => {
        #[doc = concat!("Number of ", $whats, " in the current frame.")]
        #[inline]
        pub fn len(&self) -> usize {
            self.writer.len()
        }

        #[doc = concat!("Whether the current frame has no ", $what, ".")]
        #[inline]
        pub fn is_empty(&self) -> bool {
            self.len() == 0
        }

        #[doc = concat!("How many more ", $whats, " fit the current frame.")]
        #[inline]
        pub fn remaining(&self) -> usize {
            self.writer.remaining()
        }

        #[doc = concat!("Whether the next ", $what, " would not fit the current frame.")]
        #[inline]
        pub fn is_full(&self) -> bool {
            self.remaining() == 0
        }
    };
}

/// Builds PRESENCE frames for one request in its own buffer, a record at a time, each frame
/// no longer than a given `max_frame_len`. [`encode_presence`] is the one-shot form.
///
/// [`push`](PresenceWriter::push) records; when it answers [`EncodeError::Full`],
/// [`flush`](PresenceWriter::flush) the frame (non-final) and push again; end with
/// [`finish`](PresenceWriter::finish). Frames are handed out as `BytesMut` split off the
/// writer's buffer (no copy; the buffer's spare capacity is reused for the next frame).
///
/// ```
/// use presenced_wire::link::{decode_server, PresenceRecord, PresenceWriter, ServerFrame,
///     WireState};
///
/// let mut w = PresenceWriter::new(1, 1 << 20).unwrap();
/// w.push(PresenceRecord { user: 1001, state: WireState::Online,
///     last_seen_ms: Some(1_700_000_100_000), version: 7 }).unwrap();
/// let frame = w.finish(true).unwrap();
/// let ServerFrame::Presence(p) = decode_server(&frame[4..]).unwrap() else { panic!() };
/// assert!(p.is_final);
/// assert_eq!(p.records.len(), 1);
/// ```
#[derive(Debug)]
pub struct PresenceWriter {
    writer: ListWriter<PresenceRecord, 5>,
    request_id: u32,
    warming: bool,
}

impl PresenceWriter {
    /// A writer for the answer to `request_id`, whose frames' length (type + body) will not
    /// exceed `max_frame_len`. Refuses request id 0, and a `max_frame_len` too small for one
    /// record (below 36: [`EncodeError::FrameTooLarge`]).
    pub fn new(request_id: u32, max_frame_len: u32) -> Result<PresenceWriter, EncodeError> {
        check_request_id(request_id)?;
        Ok(PresenceWriter {
            writer: ListWriter::new(FrameType::Presence, max_frame_len)?,
            request_id,
            warming: false,
        })
    }

    /// The same writer, setting the `WARMING` flag (version-2 links only) on every frame it
    /// completes from now on when `warming`: the records were read while the daemon was
    /// warming. [`encode_presence_v2`](super::encode_presence_v2) is the one-shot form.
    pub fn with_warming(self, warming: bool) -> PresenceWriter {
        PresenceWriter { warming, ..self }
    }

    /// Appends a record to the current frame. Refuses user id 0 ([`EncodeError::ZeroUser`])
    /// and a record that would make the frame longer than `max_frame_len`
    /// ([`EncodeError::Full`]: [`flush`](PresenceWriter::flush), then push again); the frame
    /// is unchanged then.
    #[inline]
    pub fn push(&mut self, record: PresenceRecord) -> Result<(), EncodeError> {
        self.writer.push(&record)
    }

    /// The request answered.
    #[inline]
    pub fn request_id(&self) -> u32 {
        self.request_id
    }

    frame_size!("record", "records");

    /// Completes the current frame (not FINAL) and returns it, length prefix included, then
    /// starts a new one; `None`, and nothing changes, when it has no record.
    pub fn flush(&mut self) -> Option<BytesMut> {
        self.writer
            .flush(presence_head(self.request_id, false, self.warming))
    }

    /// Completes the current frame — FINAL set if `is_final` — and returns it, length prefix
    /// included. A final frame is returned even without records (an empty FINAL frame
    /// completes a request); a non-final one without records is `None`.
    pub fn finish(mut self, is_final: bool) -> Option<BytesMut> {
        if self.is_empty() && !is_final {
            return None;
        }
        let head = presence_head(self.request_id, is_final, self.warming);
        Some(self.writer.close(head))
    }
}

/// Builds EVENTS frames in its own buffer, a transition at a time, each frame no longer than
/// a given `max_frame_len`. [`encode_events`] is the one-shot form.
///
/// The daemon's hot path: keep one writer per link, [`push`](EventsWriter::push) each
/// transition as it comes; when `push` answers [`EncodeError::Full`], or when the batch ends,
/// [`flush`](EventsWriter::flush) the frame and send it. Frames are handed out as `BytesMut`
/// split off the writer's buffer (no copy; the buffer's spare capacity is reused for the next
/// frame). Empty EVENTS frames are never produced.
///
/// ```
/// use presenced_wire::link::{decode_server, Event, EventsWriter, ServerFrame, WireCause,
///     WireState};
///
/// let mut w = EventsWriter::new(1 << 20).unwrap();
/// assert_eq!(w.flush(), None);
/// w.push(Event { user: 7, state: WireState::Online, prev: WireState::Offline,
///     cause: WireCause::FirstHeartbeat, at_ms: 1, version: 1 << 16 }).unwrap();
/// let frame = w.flush().unwrap();
/// assert_eq!(frame.len(), 4 + 5 + 27);
/// let ServerFrame::Events(events) = decode_server(&frame[4..]).unwrap() else { panic!() };
/// assert_eq!(events.get(0).unwrap().user, 7);
/// assert!(w.is_empty());
/// ```
#[derive(Debug)]
pub struct EventsWriter {
    writer: ListWriter<Event, 0>,
}

impl EventsWriter {
    /// A writer whose frames' length (type + body) will not exceed `max_frame_len`. Refuses a
    /// `max_frame_len` too small for one transition (below 32:
    /// [`EncodeError::FrameTooLarge`]).
    pub fn new(max_frame_len: u32) -> Result<EventsWriter, EncodeError> {
        Ok(EventsWriter {
            writer: ListWriter::new(FrameType::Events, max_frame_len)?,
        })
    }

    /// Appends a transition to the current frame. Refuses user id 0
    /// ([`EncodeError::ZeroUser`]) and a transition that would make the frame longer than
    /// `max_frame_len` ([`EncodeError::Full`]: [`flush`](EventsWriter::flush), then push
    /// again); the frame is unchanged then.
    #[inline]
    pub fn push(&mut self, event: Event) -> Result<(), EncodeError> {
        self.writer.push(&event)
    }

    frame_size!("transition", "transitions");

    /// Completes the current frame and returns it, length prefix included, then starts a new
    /// one; `None`, and nothing changes, when it has no transition.
    pub fn flush(&mut self) -> Option<BytesMut> {
        self.writer.flush([])
    }

    /// Completes the current frame and returns it; `None` when it has no transition.
    pub fn finish(mut self) -> Option<BytesMut> {
        self.flush()
    }
}
