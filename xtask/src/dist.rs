//! `dist`: what the Debian package installs beyond the binaries and the files kept in the
//! repository, written to `target/dist/` (cargo-deb's assets name these paths):
//!
//! - `man/presenced.8`, from presenced's own clap definition (`presenced::cli`) and its key
//!   list (`presenced::settings::KEYS`), with the files, signals and exit status;
//! - `man/presencectl.1`, from presencectl's `--help` and each command's, rendered by its clap
//!   definition (`presenced_tools::presencectl_cli`) and read back as help2man does: a
//!   section per command, the global options once;
//! - `completions/`: presenced's and presencectl's for bash, zsh and fish, from their clap
//!   definitions.

use clap::error::ErrorKind;
use clap_complete::Shell;
use clap_mangen::roff::{bold, italic, line_break, roman, Roff};
use clap_mangen::Man;
use std::path::{Path, PathBuf};

/// `target/dist` in the repository, whatever CARGO_TARGET_DIR is: cargo-deb reads assets that
/// it does not build from paths relative to the package.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ is in the repository's root")
        .join("target/dist")
}

/// Writes every file into `out` (emptied first); returns their paths.
pub fn write_all(out: &Path) -> Result<Vec<PathBuf>, String> {
    for sub in ["man", "completions"] {
        let path = out.join(sub);
        if path.exists() {
            std::fs::remove_dir_all(&path)
                .map_err(|e| format!("removing {}: {e}", path.display()))?;
        }
        std::fs::create_dir_all(&path).map_err(|e| format!("creating {}: {e}", path.display()))?;
    }
    let mut files = vec![
        (out.join("man/presenced.8"), presenced_man()),
        (
            out.join("man/presencectl.1"),
            presencectl_man(&presencectl_help)?,
        ),
    ];
    let programs = [
        ("presenced", presenced::cli::command()),
        ("presencectl", presenced_tools::presencectl_cli::command()),
    ];
    for (program, command) in programs {
        for (shell, name) in [
            (Shell::Bash, format!("{program}.bash")),
            (Shell::Zsh, format!("_{program}")),
            (Shell::Fish, format!("{program}.fish")),
        ] {
            let mut text = Vec::new();
            clap_complete::generate(shell, &mut command.clone(), program, &mut text);
            let text = String::from_utf8(text).map_err(|e| format!("{name}: {e}"))?;
            files.push((out.join("completions").join(name), text));
        }
    }
    for (path, text) in &files {
        std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    Ok(files.into_iter().map(|(path, _)| path).collect())
}

// ---------------------------------------------------------------------------------------------
// presenced(8)

const DESCRIPTION: &[&str] = &[
    "presenced keeps the presence of every user (online, idle or offline, and last seen, across \
     all of the user's devices) from the compact UDP heartbeats that connection gateways send \
     it, and pushes each change over a QUIC push link to the gateways that asked for it.",
    "A device's first heartbeat puts its user online at once; a device is offline after \
     presence.heartbeat_interval + 2 x presence.grace of silence, detected within one \
     presence.tick of the deadline, and a logout removes it at once. Presence, last seen and \
     history survive restarts (state.dir).",
    "It is meant to run under systemd (presenced.service, Type=notify): it tells systemd it is \
     ready once every socket is bound and every thread runs, feeds the watchdog while every \
     shard thread makes progress, logs to standard error (the journal), re-reads its settings \
     and key file on SIGHUP and stops cleanly on SIGTERM. Settings come from the defaults, \
     then the --config file, then the command line; every key is listed under SETTINGS.",
];

const FILES: &[(&str, &str)] = &[
    (
        "/etc/presenced/presenced.toml",
        "The settings file the unit passes with --config (a conffile of the package). \
         Check an edit with presenced --check-config /etc/presenced/presenced.toml before \
         restarting.",
    ),
    (
        "/etc/presenced/keys.toml",
        "Where auth.keys_file conventionally points: gateway keys and push-link tokens; owned \
         by the presenced user, mode 0600 (a file other users can read is refused); reloaded \
         on SIGHUP (systemctl reload presenced).",
    ),
    (
        "/var/lib/presenced",
        "state.dir under the unit (StateDirectory=presenced, mode 0700): snapshots and the \
         transition log.",
    ),
    (
        "/usr/lib/sysctl.d/90-presenced.conf",
        "Raises net.core.rmem_max so each heartbeat socket gets the receive buffer it asks for \
         (ingest.socket_recv_buffer).",
    ),
    (
        "/usr/lib/systemd/system/presenced.service",
        "The hardened unit: the presenced user, no capabilities, a system call filter.",
    ),
];

const SIGNALS: &[(&str, &str)] = &[
    (
        "SIGTERM, SIGINT",
        "Stop: every push link is told the daemon is going away, every shard writes its \
         snapshot, and the next start restores it.",
    ),
    (
        "SIGHUP",
        "Re-read the settings and apply what needs no restart: log.level, the [link] limits \
         (link.queue_bytes for every link at once; the others for links that connect from \
         then on, since an open link keeps the limits its WELCOME announced; a lowered \
         link.max_links closes no link) and the keys in auth.keys_file. One log line names \
         the keys reloaded, what could not be (its old value stays, and why) and the changed \
         settings that wait for a restart.",
    ),
];

const EXIT_STATUS: &[(&str, &str)] = &[
    (
        "0",
        "Stopped cleanly, or --check-config found the settings valid.",
    ),
    (
        "1",
        "Could not start (a socket, the certificate, the state directory) or stopped on an error.",
    ),
    (
        "2",
        "The settings are invalid; the message names the key at fault.",
    ),
];

const SEE_ALSO: &str = "presencectl(1), systemd.exec(5), systemd-analyze(1), sysctl.d(5); \
     /usr/share/doc/presenced/README.md, ARCHITECTURE.md, wire-format/SPEC.md and \
     benches/README.md there.";

/// The .TH date: none (the pages are rebuilt with each package), written `""` because roff
/// drops an empty argument, which would shift the source and manual into its place.
const NO_DATE: &str = "\"\"";

/// presenced(8): clap_mangen's title, name and synopsis, our description, clap_mangen's
/// options, then the settings from the key list, files, signals, exit status and see also, then
/// clap_mangen's version.
pub fn presenced_man() -> String {
    let man = Man::new(presenced::cli::command())
        .section("8")
        .date(NO_DATE)
        .manual("System Manager's Manual");
    // The title's render keeps the apostrophe preamble; every later part drops its copy.
    let mut out = rendered(|w| man.render_title(w));
    out.push_str(without_preamble(&rendered(|w| man.render_name_section(w))));
    out.push_str(without_preamble(&rendered(|w| {
        man.render_synopsis_section(w)
    })));
    let mut roff = Roff::new();
    roff.control("SH", ["DESCRIPTION"]);
    paragraphs(&mut roff, DESCRIPTION);
    out.push_str(without_preamble(&roff.render()));
    out.push_str(without_preamble(&rendered(|w| {
        man.render_options_section(w)
    })));
    let mut roff = Roff::new();
    settings_section(&mut roff);
    tagged_section(&mut roff, "FILES", FILES);
    tagged_section(&mut roff, "SIGNALS", SIGNALS);
    tagged_section(&mut roff, "EXIT STATUS", EXIT_STATUS);
    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman(SEE_ALSO)]);
    out.push_str(without_preamble(&roff.render()));
    out.push_str(without_preamble(&rendered(|w| {
        man.render_version_section(w)
    })));
    out
}

/// What one of clap_mangen's renders writes.
fn rendered(render: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>) -> String {
    let mut buf = Vec::new();
    render(&mut buf).expect("writing to a Vec");
    String::from_utf8(buf).expect("roff output is UTF-8")
}

/// SETTINGS: every key, by section, with what it does, its default and its valid values.
fn settings_section(roff: &mut Roff) {
    roff.control("SH", ["SETTINGS"]);
    paragraphs(
        roff,
        &[
            "TOML [section] key = value in the --config file, or --set section.key=value; the \
             command line wins over the file. Counts and sizes take _ and k, M, G (x1000) or \
             Ki, Mi, Gi (x1024), e.g. 10M, 32Mi; durations 500us, 10ms, 20s, 5m, 2h, 30d.",
        ],
    );
    let mut section = "";
    for key in presenced::settings::KEYS {
        if key.section() != section {
            section = key.section();
            roff.control("SS", [format!("[{section}]").as_str()]);
        }
        roff.control("TP", []);
        roff.text([bold(key.name)]);
        roff.text([roman(key.help())]);
        roff.text([
            line_break(),
            italic("Default:"),
            roman(format!(" {}; ", shown(&key.default_value()))),
            italic("valid:"),
            roman(format!(" {}.", key.valid_values())),
        ]);
    }
}

/// `""` reads badly in a man page: say "none".
fn shown(value: &str) -> &str {
    if value.is_empty() || value == "\"\"" {
        "none"
    } else {
        value
    }
}

fn tagged_section(roff: &mut Roff, title: &str, items: &[(&str, &str)]) {
    roff.control("SH", [title]);
    for (tag, text) in items {
        roff.control("TP", []);
        roff.text([bold(*tag)]);
        roff.text([roman(*text)]);
    }
}

fn paragraphs(roff: &mut Roff, texts: &[&str]) {
    for (i, text) in texts.iter().enumerate() {
        if i > 0 {
            roff.control("PP", []);
        }
        roff.text([roman(*text)]);
    }
}

/// The roff text without the apostrophe preamble every render starts with (kept once, in the
/// title's).
fn without_preamble(text: &str) -> &str {
    let mut rest = text;
    while rest.starts_with(".ie \\n(.g") || rest.starts_with(".el .ds Aq") {
        rest = rest.split_once('\n').map_or("", |(_, r)| r);
    }
    rest
}

// ---------------------------------------------------------------------------------------------
// presencectl(1), from its help text

/// What `presencectl ARGS...` prints for `--help` or `--version`, rendered by its clap
/// definition as the binary renders it.
fn presencectl_help(args: &[&str]) -> Result<String, String> {
    let argv = std::iter::once("presencectl").chain(args.iter().copied());
    let shown = |what: &str| format!("presencectl {}: {what}", args.join(" "));
    match presenced_tools::presencectl_cli::command().try_get_matches_from(argv) {
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            Ok(e.to_string())
        }
        Err(e) => Err(shown(&e.to_string())),
        Ok(_) => Err(shown("prints neither help nor version")),
    }
}

/// One block of clap's help: a heading (`Options`) and its entries.
#[derive(Debug, PartialEq)]
struct Block {
    heading: String,
    entries: Vec<Entry>,
}

/// `--link <ADDR>` and what it does (paragraphs).
#[derive(Debug, PartialEq)]
struct Entry {
    term: String,
    text: Vec<String>,
}

/// clap's help text, read back: the about paragraphs, the usage line and the blocks.
#[derive(Debug, PartialEq)]
struct Help {
    about: Vec<String>,
    usage: String,
    blocks: Vec<Block>,
}

fn parse_help(text: &str) -> Help {
    let mut help = Help {
        about: Vec::new(),
        usage: String::new(),
        blocks: Vec::new(),
    };
    let mut paragraph = String::new();
    let mut in_blocks = false;
    let mut entry_text_blank = false;
    for line in text.lines() {
        if let Some(usage) = line.strip_prefix("Usage: ") {
            help.usage = usage.trim().to_string();
            in_blocks = true;
            continue;
        }
        if !in_blocks {
            if line.trim().is_empty() {
                if !paragraph.is_empty() {
                    help.about.push(std::mem::take(&mut paragraph));
                }
            } else {
                join_words(&mut paragraph, line);
            }
            continue;
        }
        if !line.starts_with(' ') && line.ends_with(':') {
            help.blocks.push(Block {
                heading: line.trim_end_matches(':').to_string(),
                entries: Vec::new(),
            });
            continue;
        }
        let Some(block) = help.blocks.last_mut() else {
            continue;
        };
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim();
        if trimmed.is_empty() {
            entry_text_blank = true;
            continue;
        }
        // A term starts at column 2 (commands, `-h, --help`, `<USERS>`) or 6 (`--long` without
        // a short form); its text follows after two spaces or more, or on the lines below.
        let is_term =
            indent == 2 || (indent == 6 && (trimmed.starts_with('-') || trimmed.starts_with('<')));
        if is_term {
            let (term, text) = match trimmed.split_once("  ") {
                Some((term, text)) => (term.trim(), vec![text.trim().to_string()]),
                None => (trimmed, Vec::new()),
            };
            block.entries.push(Entry {
                term: term.to_string(),
                text,
            });
            entry_text_blank = false;
        } else if let Some(entry) = block.entries.last_mut() {
            match entry.text.last_mut() {
                Some(last) if !entry_text_blank => join_words(last, trimmed),
                _ => entry.text.push(trimmed.to_string()),
            }
            entry_text_blank = false;
        }
    }
    if !paragraph.is_empty() {
        help.about.push(paragraph);
    }
    help
}

fn join_words(paragraph: &mut String, line: &str) {
    if !paragraph.is_empty() {
        paragraph.push(' ');
    }
    paragraph.push_str(line.trim());
}

/// presencectl(1): its help and each command's, as a man page.
fn presencectl_man(run: &dyn Fn(&[&str]) -> Result<String, String>) -> Result<String, String> {
    let version = run(&["--version"])?;
    let top = parse_help(&run(&["--help"])?);
    let commands: Vec<Entry> = top
        .blocks
        .iter()
        .filter(|b| b.heading == "Commands")
        .flat_map(|b| b.entries.iter())
        .filter(|e| e.term != "help")
        .map(|e| Entry {
            term: e.term.clone(),
            text: e.text.clone(),
        })
        .collect();
    if commands.is_empty() {
        return Err("presencectl --help lists no commands".to_string());
    }
    let global: Vec<&str> = top
        .blocks
        .iter()
        .filter(|b| b.heading == "Options")
        .flat_map(|b| b.entries.iter().map(|e| e.term.as_str()))
        .collect();

    let mut roff = Roff::new();
    roff.control(
        "TH",
        ["PRESENCECTL", "1", NO_DATE, version.trim(), "User Commands"],
    );
    roff.control("SH", ["NAME"]);
    let about = top.about.first().cloned().unwrap_or_default();
    roff.text([roman(format!("presencectl - {about}"))]);
    roff.control("SH", ["SYNOPSIS"]);
    roff.text([
        bold("presencectl"),
        roman(usage_rest(&top.usage, "presencectl")),
    ]);
    roff.control("SH", ["DESCRIPTION"]);
    let about: Vec<&str> = top.about.iter().map(String::as_str).collect();
    paragraphs(&mut roff, &about);
    for block in &top.blocks {
        let heading = if block.heading == "Options" {
            "GLOBAL OPTIONS".to_string()
        } else {
            block.heading.to_uppercase()
        };
        entries(
            &mut roff,
            &heading,
            block.entries.iter().filter(|e| e.term != "help"),
        );
    }
    for command in &commands {
        let help = parse_help(&run(&[command.term.as_str(), "--help"])?);
        let name = format!("presencectl {}", command.term);
        roff.control(
            "SH",
            [format!("PRESENCECTL {}", command.term.to_uppercase()).as_str()],
        );
        roff.text([bold(name.as_str()), roman(usage_rest(&help.usage, &name))]);
        for paragraph in &help.about {
            roff.control("PP", []);
            roff.text([roman(paragraph.as_str())]);
        }
        for block in &help.blocks {
            let local: Vec<&Entry> = block
                .entries
                .iter()
                .filter(|e| !global.contains(&e.term.as_str()))
                .collect();
            if local.is_empty() {
                continue;
            }
            roff.control("PP", []);
            roff.text([italic(block.heading.as_str())]);
            for entry in local {
                roff.control("TP", []);
                roff.text([bold(entry.term.as_str())]);
                entry_text(&mut roff, entry);
            }
        }
    }
    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman(
        "presenced(8); /usr/share/doc/presenced/README.md, and wire-format/SPEC.md there for \
         the push link.",
    )]);
    Ok(roff.render())
}

/// The usage line after the program's name.
fn usage_rest(usage: &str, name: &str) -> String {
    usage.strip_prefix(name).unwrap_or(usage).to_string()
}

fn entries<'a>(roff: &mut Roff, heading: &str, list: impl Iterator<Item = &'a Entry>) {
    roff.control("SH", [heading]);
    for entry in list {
        roff.control("TP", []);
        roff.text([bold(entry.term.as_str())]);
        entry_text(roff, entry);
    }
}

fn entry_text(roff: &mut Roff, entry: &Entry) {
    for (i, text) in entry.text.iter().enumerate() {
        if i > 0 {
            roff.control("IP", []);
        }
        roff.text([roman(text.as_str())]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOP: &str = "Look at and drive a running presenced

Usage: presencectl [OPTIONS] <COMMAND>

Commands:
  query  Current presence of users: state, last seen, version
  watch  Prints transitions as they arrive
  help   Print this message or the help of the given subcommand(s)

Options:
      --link <ADDR>         The daemon's push-link (QUIC) address [default: 127.0.0.1:7060]
      --ca <FILE>
          PEM file of the CA.

          Without it, any certificate is accepted
  -h, --help                Print help
  -V, --version             Print version
";

    const QUERY: &str = "Current presence of users: state, last seen, version

Usage: presencectl query [OPTIONS] <USERS>...

Arguments:
  <USERS>...  User ids (nonzero)

Options:
      --json                One JSON object per line instead of a table
      --link <ADDR>         The daemon's push-link (QUIC) address [default: 127.0.0.1:7060]
  -h, --help                Print help
";

    #[test]
    fn help_is_read_back_into_blocks_and_entries() {
        let help = parse_help(TOP);
        assert_eq!(help.about, ["Look at and drive a running presenced"]);
        assert_eq!(help.usage, "presencectl [OPTIONS] <COMMAND>");
        assert_eq!(help.blocks.len(), 2);
        assert_eq!(help.blocks[0].heading, "Commands");
        assert_eq!(help.blocks[0].entries[1].term, "watch");
        let options = &help.blocks[1].entries;
        assert_eq!(options[0].term, "--link <ADDR>");
        assert_eq!(options[1].term, "--ca <FILE>");
        assert_eq!(
            options[1].text,
            [
                "PEM file of the CA.",
                "Without it, any certificate is accepted"
            ]
        );
        assert_eq!(options[2].term, "-h, --help");
    }

    #[test]
    fn presencectl_page_has_every_command_and_no_repeated_global_option() {
        let run = |args: &[&str]| -> Result<String, String> {
            Ok(match args {
                ["--version"] => "presencectl 0.1.0\n".to_string(),
                ["--help"] => TOP.to_string(),
                ["query", "--help"] => QUERY.to_string(),
                ["watch", "--help"] => "Prints\n\nUsage: presencectl watch\n".to_string(),
                other => return Err(format!("unexpected {other:?}")),
            })
        };
        let page = presencectl_man(&run).unwrap();
        assert!(
            page.contains(".TH PRESENCECTL 1 \"\" \"presencectl 0.1.0\""),
            "{page}"
        );
        assert!(page.contains(".SH \"PRESENCECTL QUERY\""), "{page}");
        assert!(page.contains(".SH \"PRESENCECTL WATCH\""), "{page}");
        assert!(page.contains("\\-\\-json"), "{page}");
        assert_eq!(page.matches("\\-\\-link <ADDR>").count(), 1, "{page}");
        assert!(!page.contains("PRESENCECTL HELP"), "{page}");
    }

    #[test]
    fn presencectl_page_and_completions_come_from_its_clap_definition() {
        let page = presencectl_man(&presencectl_help).unwrap();
        for command in ["QUERY", "WATCH", "STATS", "HISTORY", "HEALTH", "SEND"] {
            assert!(
                page.contains(&format!(".SH \"PRESENCECTL {command}\"")),
                "{command}"
            );
        }
        let out = std::env::temp_dir().join(format!("xtask-dist-{}", std::process::id()));
        let files = write_all(&out).unwrap();
        let read = |name: &str| std::fs::read_to_string(out.join("completions").join(name));
        for name in ["presencectl.bash", "_presencectl", "presencectl.fish"] {
            let text = read(name).unwrap();
            for word in ["history", "give-up-after", "key-file"] {
                assert!(text.contains(word), "{name} lacks {word}");
            }
        }
        assert!(read("presenced.bash").unwrap().contains("check-config"));
        assert_eq!(files.len(), 8);
        std::fs::remove_dir_all(&out).unwrap();
    }

    #[test]
    fn presenced_page_lists_every_option_and_key() {
        let page = presenced_man();
        assert!(page.starts_with(".ie \\n(.g"), "one preamble, first");
        assert_eq!(page.matches(".ie \\n(.g").count(), 1);
        assert!(
            page.contains(".TH presenced 8 \"\" \"presenced "),
            "{}",
            &page[..200]
        );
        for flag in ["\\-\\-config", "\\-\\-check\\-config", "\\-\\-set"] {
            assert!(page.contains(flag), "{flag}");
        }
        for key in presenced::settings::KEYS {
            assert!(page.contains(key.name), "{}", key.name);
        }
        for section in [
            "SETTINGS",
            "FILES",
            "SIGNALS",
            "\"EXIT STATUS\"",
            "\"SEE ALSO\"",
        ] {
            assert!(page.contains(&format!(".SH {section}\n")), "{section}");
        }
        let version = presenced::cli::command().get_version().unwrap().to_string();
        assert!(
            page.contains(&format!("v{version}")),
            "presenced's version, not xtask's"
        );
    }
}
