//! Which cluster member each watched user's recent transitions belong to, so that false and
//! missing transitions can be counted per member (`--cluster`).
//!
//! The rule (also in `--help`): a transition belongs to the member that was its user's primary,
//! under the generator's member map, when the simulation caused it. A missing transition is
//! charged to the member of the transition that never came; a false one to the member of the
//! user's latest caused transition, whose state the false one contradicts (the member whose
//! loss or fault let the user's state change by itself). Members are numbered as they are
//! first seen in a map; each watched user keeps the members of its last [`REMEMBERED`] causes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Causes remembered per watched user; older missing transitions are charged to the oldest
/// remembered one's member (a user's next transition is caused only once the previous one was
/// seen, so missing ones are the last one or two).
pub const REMEMBERED: u32 = 4;
/// No member: the generator held no map with a primary for the user.
pub const NO_MEMBER: u16 = u16::MAX;
/// Most members named (a map of more is a usage error long before this).
const MAX_NAMES: usize = NO_MEMBER as usize;

/// The members of every watched user's last causes.
pub struct Owners {
    names: Mutex<Vec<String>>,
    /// Per watched user: 16 bits per cause, slot `cause % REMEMBERED`.
    causes: Vec<AtomicU64>,
}

impl Owners {
    /// Nothing caused yet for `watch` watched users.
    pub fn new(watch: u32) -> Owners {
        Owners {
            names: Mutex::new(Vec::new()),
            causes: (0..watch).map(|_| AtomicU64::new(u64::MAX)).collect(),
        }
    }

    /// The number of member `id` (given on first sight); [`NO_MEMBER`] past 65,535 names.
    pub fn intern(&self, id: &str) -> u16 {
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = names.iter().position(|x| x == id) {
            return n as u16;
        }
        if names.len() >= MAX_NAMES {
            return NO_MEMBER;
        }
        names.push(id.to_owned());
        (names.len() - 1) as u16
    }

    /// The id of member number `n` (`None`: [`NO_MEMBER`] or never given).
    pub fn name(&self, n: u16) -> Option<String> {
        let names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        names.get(usize::from(n)).cloned()
    }

    /// Every member named, by number.
    pub fn names(&self) -> Vec<String> {
        self.names.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Watched user `index`'s transition number `cause` (1 for its first) was caused while
    /// `member` was its primary. Only the user's sender thread calls this.
    pub fn caused(&self, index: u32, cause: u32, member: u16) {
        let Some(slots) = self.causes.get(index as usize) else {
            return;
        };
        let shift = 16 * (cause % REMEMBERED);
        let old = slots.load(Ordering::Acquire);
        let new = (old & !(0xffff << shift)) | (u64::from(member) << shift);
        slots.store(new, Ordering::Release);
    }

    /// The member of watched user `index`'s transition number `cause`, when `latest` have
    /// been caused (a cause older than the last [`REMEMBERED`] gets the oldest remembered).
    pub fn member_of(&self, index: u32, cause: u32, latest: u32) -> u16 {
        let Some(slots) = self.causes.get(index as usize) else {
            return NO_MEMBER;
        };
        if cause == 0 || latest == 0 {
            return NO_MEMBER;
        }
        let cause = cause
            .min(latest)
            .max(latest.saturating_sub(REMEMBERED - 1).max(1));
        let shift = 16 * (cause % REMEMBERED);
        (slots.load(Ordering::Acquire) >> shift) as u16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_causes_are_remembered_and_older_ones_get_the_oldest() {
        let o = Owners::new(2);
        let (a, b) = (o.intern("a"), o.intern("b"));
        assert_eq!(o.intern("a"), a);
        assert_eq!(o.name(b).as_deref(), Some("b"));
        assert_eq!(o.name(NO_MEMBER), None);
        assert_eq!(o.member_of(0, 1, 0), NO_MEMBER);
        for cause in 1..=6 {
            o.caused(0, cause, if cause <= 3 { a } else { b });
        }
        assert_eq!(o.member_of(0, 6, 6), b);
        assert_eq!(o.member_of(0, 3, 6), a);
        assert_eq!(
            o.member_of(0, 1, 6),
            a,
            "older than four: the oldest kept (3)"
        );
        assert_eq!(o.member_of(1, 1, 1), NO_MEMBER, "never caused");
        assert_eq!(o.member_of(9, 1, 1), NO_MEMBER, "not watched");
    }
}
