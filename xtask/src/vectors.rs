//! The test vectors of `wire-format/vectors/`, generated.
//!
//! The committed files are part of the specification (SPEC.md § 11 and § P10); this generator
//! produced them and, after a deliberate change to a generator, writes them again
//! (`cargo run -p xtask -- vectors`). A test checks that the committed files are exactly what
//! the generators give, so the two cannot drift apart.

mod datagram;
mod link;

use std::path::{Path, PathBuf};

pub use link::spec_dumps;

/// Every vector file: its name under `wire-format/vectors/`, and its text.
pub fn render_all() -> Vec<(&'static str, String)> {
    vec![
        ("valid.txt", datagram::render_valid()),
        ("invalid.txt", datagram::render_invalid()),
        ("auth.txt", datagram::render_auth()),
        ("link.txt", link::render()),
    ]
}

/// `wire-format/vectors/`.
pub fn dir() -> PathBuf {
    let xtask = Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask
        .parent()
        .expect("xtask/ is in the repository's root")
        .join("wire-format/vectors")
}

/// Lower-case hex, no separators.
fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Where `committed` and `generated` first differ, as `line N: committed …, generated …`;
/// `None` when they are equal.
pub fn first_difference(committed: &str, generated: &str) -> Option<String> {
    if committed == generated {
        return None;
    }
    let mut c = committed.lines();
    let mut g = generated.lines();
    for n in 1.. {
        match (c.next(), g.next()) {
            (Some(a), Some(b)) if a == b => continue,
            (None, None) => return Some("the line endings differ".into()),
            (a, b) => {
                return Some(format!(
                    "line {n}: committed {:?}, generated {:?}",
                    a.unwrap_or("<end of file>"),
                    b.unwrap_or("<end of file>")
                ))
            }
        }
    }
    None
}
