//! Reading the gateway key file (`auth.keys_file`): the daemon's side of
//! `presenced_node::auth::Keys`, which parses the text. A file other users can read is
//! refused: it holds every gateway's secret. The push link's TLS key (`link.key`) is checked
//! the same way ([`private_file`]).

use presenced_node::auth::Keys;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Reads and parses the key file, refusing one that other users can read. `window` replay
/// slots per new gateway; gateways also in `previous` keep their replay state and counters.
pub fn load(
    path: &Path,
    window: usize,
    max_gateways: usize,
    previous: Option<&Keys>,
) -> Result<Keys, String> {
    private_file(path)?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Keys::parse(&text, window, max_gateways, previous)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Refuses a secret file that users other than its owner can read or write; the error says
/// how to fix it.
pub fn private_file(path: &Path) -> Result<(), String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{} can be read by other users (mode {mode:o}); run `chmod 600 {}`",
            path.display(),
            path.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn a_file_others_can_read_is_refused() {
        let path = std::env::temp_dir().join(format!("presenced-keys-{}", std::process::id()));
        std::fs::write(&path, format!("[gateways]\n1 = \"{A}\"\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load(&path, 64, 10, None).err().unwrap();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(load(&path, 64, 10, None).unwrap().len(), 1);
        std::fs::remove_file(&path).unwrap();
        assert!(load(&path, 64, 10, None)
            .err()
            .unwrap()
            .contains("cannot read"));
    }
}
