//! Which cores the daemon's threads run on: the cores this process may use, split between the
//! shards (one pinned thread each) and the service threads (the hub, the push link's runtime,
//! the store and the metrics endpoint), so that no shard shares its core with a thread that
//! floats: a shard that loses its core to the link for a few milliseconds delays every
//! transition it holds (benches/README.md measured 50–190 ms p99 so).

use std::io;

/// The split of the allowed cores ([`Layout::new`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Cores of the service threads; empty when none is kept (they float over every core).
    pub service: Vec<usize>,
    /// Cores of the shards, shard `i` on `shards[i % len]`.
    pub shards: Vec<usize>,
}

impl Layout {
    /// The first `service_cores` of the `allowed` cores for the service threads and the rest
    /// for the shards, while a core is left for the shards; otherwise every core for the
    /// shards and the service threads floating.
    pub fn new(allowed: &[usize], service_cores: usize) -> Layout {
        if service_cores > 0 && allowed.len() > service_cores {
            Layout {
                service: allowed[..service_cores].to_vec(),
                shards: allowed[service_cores..].to_vec(),
            }
        } else {
            Layout {
                service: Vec::new(),
                shards: allowed.to_vec(),
            }
        }
    }

    /// The core shard `index` is pinned to (`None` when no core is known).
    pub fn shard_core(&self, index: usize) -> Option<usize> {
        self.shards.get(index % self.shards.len().max(1)).copied()
    }
}

/// Pins the calling thread to one CPU.
pub fn pin_to(cpu: usize) -> io::Result<()> {
    allow_only(&[cpu])
}

/// Lets the calling thread (and the threads it spawns from now on) run on `cpus` only.
pub fn allow_only(cpus: &[usize]) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes within it for cpu < CPU_SETSIZE, checked.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &cpu in cpus {
            if cpu >= libc::CPU_SETSIZE as usize {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "cpu index too large",
                ));
            }
            libc::CPU_SET(cpu, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The CPUs the calling thread may run on, in order.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: as in `allow_only`; CPU_ISSET reads within the set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// Confines the calling thread to some cores until dropped, then gives it back the cores it
/// had: the service threads spawned meanwhile keep the confinement.
pub struct Confined {
    before: Vec<usize>,
}

impl Confined {
    /// Confines the calling thread to `cpus`; `None` (nothing changed) when `cpus` is empty or
    /// the kernel refuses.
    pub fn to(cpus: &[usize]) -> Option<Confined> {
        let before = allowed_cpus();
        (!cpus.is_empty() && !before.is_empty() && allow_only(cpus).is_ok())
            .then_some(Confined { before })
    }
}

impl Drop for Confined {
    fn drop(&mut self) {
        // The cores it had a moment ago: allowed still, so this cannot fail but by a race
        // with an operator's taskset, which then wins.
        let _ = allow_only(&self.before);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_cores_are_kept_only_while_a_core_is_left_for_the_shards() {
        let l = Layout::new(&[0, 1, 2, 3], 1);
        assert_eq!((l.service, l.shards.clone()), (vec![0], vec![1, 2, 3]));
        assert_eq!(Layout::new(&[0, 1, 2, 3], 1).shard_core(4), Some(2));
        let l = Layout::new(&[2, 5], 1);
        assert_eq!((l.service, l.shards), (vec![2], vec![5]));
        let l = Layout::new(&[3], 1);
        assert_eq!((l.service, l.shards), (vec![], vec![3]));
        let l = Layout::new(&[0, 1], 0);
        assert_eq!((l.service, l.shards), (vec![], vec![0, 1]));
        assert_eq!(Layout::new(&[], 1).shard_core(0), None);
    }

    #[test]
    fn a_confined_thread_gets_its_cores_back() {
        std::thread::spawn(|| {
            let before = allowed_cpus();
            let one = [before[0]];
            {
                let _confined = Confined::to(&one).expect("the first allowed core");
                assert_eq!(allowed_cpus(), one);
                let child = std::thread::spawn(allowed_cpus).join().unwrap();
                assert_eq!(child, one, "a thread spawned meanwhile keeps it");
            }
            assert_eq!(allowed_cpus(), before);
        })
        .join()
        .unwrap();
    }
}
