//! Files duet writes for the user: exports of every format and bundles.
//!
//! They all hold the couple's record (an export with `--private` holds the
//! journal too; a bundle is sealed but still nobody else's), so they are
//! written one way: to a new file with a random name next to the destination,
//! created exclusively and owner-only (0600), then renamed over the
//! destination. Exclusive creation (`O_CREAT | O_EXCL`) never follows a
//! symlink another user planted at the temporary path, and the random name
//! leaves nothing to plant one at in advance; the rename replaces whatever was
//! at the destination (a file, or a symlink, which is not followed) in one
//! step, so the destination is either the old file or the whole new one,
//! owner-only either way, and never half written.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

/// Writes `bytes` to `path` as described in the module doc: owner-only,
/// whole, through an exclusively created temporary file.
pub fn write_owner_only(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .with_context(|| format!("cannot write {}: it names no file", path.display()))?;
    let mut builder = tempfile::Builder::new();
    let prefix = format!(".{}.", name.to_string_lossy());
    builder.prefix(&prefix).suffix(".duet-tmp").rand_bytes(16);
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600));
    // The temporary file is removed if anything below fails (it is dropped).
    let mut tmp = builder
        .tempfile_in(dir)
        .with_context(|| format!("cannot write {}", path.display()))?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(all(test, unix))]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_new_file_is_owner_only_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("export.json");
        write_owner_only(&path, b"{}").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{}");
        assert_eq!(mode(&path), 0o600);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn an_existing_file_is_replaced_and_ends_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("export.md");
        std::fs::write(&path, b"old, and much longer than the new one").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_owner_only(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn a_symlink_at_the_destination_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("someone-elses-file");
        std::fs::write(&target, b"theirs").unwrap();
        let path = dir.path().join("export.json");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        write_owner_only(&path, b"mine").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"theirs");
        assert!(!std::fs::symlink_metadata(&path).unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read(&path).unwrap(), b"mine");
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn a_missing_folder_is_one_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no-such-folder").join("export.json");
        let e = write_owner_only(&path, b"{}").unwrap_err();
        assert!(format!("{e:#}").contains("cannot write"), "{e:#}");
    }
}
