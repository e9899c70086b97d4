//! Repository chores, run as `cargo run -p xtask -- <command>`:
//!
//! - `vectors`: writes `wire-format/vectors/*.txt` from their generators (after a deliberate
//!   change to one; the committed files are the source of truth);
//! - `vectors --check`: writes nothing, fails if a committed file differs from its generator;
//! - `spec-dumps`: prints the hex dumps of the push link's worked example (SPEC.md § P8);
//! - `dist`: writes `target/dist/`: the man pages presenced(8) and presencectl(1) and both
//!   programs' shell completions, which the Debian package installs (run it before
//!   `cargo deb`).

mod dist;
mod vectors;

use std::process::ExitCode;

const USAGE: &str = "usage: cargo run -p xtask -- vectors [--check] | spec-dumps | dist";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["vectors"] => write_vectors(),
        ["vectors", "--check"] => check_vectors(),
        ["spec-dumps"] => {
            print!("{}", vectors::spec_dumps());
            Ok(())
        }
        ["dist"] => write_dist(),
        _ => Err(USAGE.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Writes the man pages and completions into `target/dist/`.
fn write_dist() -> Result<(), String> {
    for path in dist::write_all(&dist::dir())? {
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// Writes every vector file.
fn write_vectors() -> Result<(), String> {
    let dir = vectors::dir();
    for (name, text) in vectors::render_all() {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// Fails unless every committed vector file is its generator's output.
fn check_vectors() -> Result<(), String> {
    let dir = vectors::dir();
    let mut drifted = Vec::new();
    for (name, text) in vectors::render_all() {
        let path = dir.join(name);
        let committed = std::fs::read_to_string(&path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        if let Some(diff) = vectors::first_difference(&committed, &text) {
            drifted.push(format!("{name}: {diff}"));
        }
    }
    if drifted.is_empty() {
        println!("wire-format/vectors: up to date");
        Ok(())
    } else {
        Err(format!(
            "the committed vectors differ from their generators (`cargo run -p xtask -- \
             vectors` rewrites them):\n{}",
            drifted.join("\n")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::vectors;

    /// The committed vectors and their generators cannot drift apart.
    #[test]
    fn committed_vectors_are_the_generators_output() {
        let generated = vectors::render_all();
        for (name, text) in &generated {
            let path = vectors::dir().join(name);
            let committed = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            if let Some(diff) = vectors::first_difference(&committed, text) {
                panic!(
                    "{name} is not its generator's output ({diff}); after a deliberate change, \
                     run `cargo run -p xtask -- vectors`"
                );
            }
        }
        // And every file there is generated.
        let mut files: Vec<String> = std::fs::read_dir(vectors::dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        let mut names: Vec<String> = generated.iter().map(|(n, _)| n.to_string()).collect();
        names.sort();
        assert_eq!(files, names);
    }

    #[test]
    fn first_difference_names_the_line() {
        assert_eq!(vectors::first_difference("a\nb\n", "a\nb\n"), None);
        assert_eq!(
            vectors::first_difference("a\nb\n", "a\nc\n").unwrap(),
            r#"line 2: committed "b", generated "c""#
        );
        assert_eq!(
            vectors::first_difference("a\n", "a\nb\n").unwrap(),
            r#"line 2: committed "<end of file>", generated "b""#
        );
        assert!(vectors::first_difference("a\n", "a").is_some());
    }

    #[test]
    fn spec_dumps_name_every_example_frame() {
        let dumps = vectors::spec_dumps();
        for name in [
            "spec_hello",
            "spec_welcome",
            "spec_subscribe",
            "spec_presence",
            "spec_events",
            "spec_v2_hello",
            "spec_v2_welcome",
            "spec_v2_history",
            "spec_v2_history_reply",
            "spec_v2_goaway",
            "spec_v3_pace",
            "spec_v4_map",
            "spec_v4_members",
        ] {
            assert!(dumps.contains(&format!("{name}:\n0000: ")), "{name}");
        }
    }
}
