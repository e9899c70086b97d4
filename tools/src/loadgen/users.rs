//! A sender's per-user device state, one 64-bit word per user so that a heartbeat costs one
//! cache miss: the connected devices (bits 0–7, one per device slot), a generation (bits
//! 8–15; schedule entries of an older generation are stale) and the time of the user's latest
//! beat (bits 16–63, µs since the run's start).

/// The state of a block of users, indexed from 0.
pub struct Users {
    words: Vec<u64>,
}

const LIVE: u64 = 0xff;
const GENERATION_SHIFT: u32 = 8;
const BEAT_SHIFT: u32 = 16;

impl Users {
    /// `n` users, no device connected, generation 0.
    pub fn new(n: usize) -> Users {
        Users { words: vec![0; n] }
    }

    #[inline]
    fn word(&self, i: usize) -> u64 {
        self.words.get(i).copied().unwrap_or(0)
    }

    #[inline]
    fn update(&mut self, i: usize, f: impl FnOnce(u64) -> u64) {
        if let Some(w) = self.words.get_mut(i) {
            *w = f(*w);
        }
    }

    /// Connected devices of user `i`, one bit per device slot.
    #[inline]
    pub fn live(&self, i: usize) -> u8 {
        (self.word(i) & LIVE) as u8
    }

    /// Sets user `i`'s connected devices.
    #[inline]
    pub fn set_live(&mut self, i: usize, live: u8) {
        self.update(i, |w| (w & !LIVE) | u64::from(live));
    }

    /// User `i`'s generation.
    #[inline]
    pub fn generation(&self, i: usize) -> u8 {
        (self.word(i) >> GENERATION_SHIFT) as u8
    }

    /// Moves user `i` to its next generation (retiring its schedule entries) and returns it.
    #[inline]
    pub fn bump(&mut self, i: usize) -> u8 {
        let g = self.generation(i).wrapping_add(1);
        self.update(i, |w| {
            (w & !(0xff << GENERATION_SHIFT)) | (u64::from(g) << GENERATION_SHIFT)
        });
        g
    }

    /// When user `i`'s latest beat was sent.
    #[inline]
    pub fn last_beat(&self, i: usize) -> u64 {
        self.word(i) >> BEAT_SHIFT
    }

    /// Records a beat of user `i` at `us` (µs since the start, below 2^48).
    #[inline]
    pub fn set_last_beat(&mut self, i: usize, us: u64) {
        self.update(i, |w| (w & 0xffff) | (us << BEAT_SHIFT));
    }

    /// Reads user `i`'s word and discards it: called for a batch of users before working on
    /// them, so that their cache misses overlap instead of coming one at a time.
    #[inline]
    pub fn touch(&self, i: usize) -> u64 {
        self.word(i)
    }
}

#[cfg(test)]
mod tests {
    use super::Users;

    #[test]
    fn fields_do_not_disturb_each_other() {
        let mut u = Users::new(3);
        u.set_live(1, 0b101);
        assert_eq!(u.bump(1), 1);
        u.set_last_beat(1, (1 << 48) - 1);
        assert_eq!(
            (u.live(1), u.generation(1), u.last_beat(1)),
            (0b101, 1, (1 << 48) - 1)
        );
        for _ in 0..255 {
            u.bump(1);
        }
        assert_eq!((u.live(1), u.generation(1)), (0b101, 0));
        u.set_live(1, 0);
        assert_eq!(u.last_beat(1), (1 << 48) - 1);
        assert_eq!((u.live(0), u.live(2), u.live(9)), (0, 0, 0));
    }
}
