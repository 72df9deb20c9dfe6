//! Writing the user's files: every rewrite goes through a temporary file beside the target and a
//! rename, so that a failure at any point leaves the old file as it was; the old file is kept as
//! `NAME.bak`.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow};

/// Replaces (or creates) `path` with `text` through a temporary file and a rename, keeping an
/// existing file as `path.bak`. Returns the backup's path when there was a file to back up.
pub fn write_with_backup(path: &Path, text: &str) -> Result<Option<PathBuf>> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.splitplan.tmp"));
    let bak = dir.join(format!("{name}.bak"));
    let existed = path.is_file();
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        if let Ok(meta) = std::fs::metadata(path) {
            std::fs::set_permissions(&tmp, meta.permissions())?;
        }
        if existed {
            std::fs::copy(path, &bak)?;
        }
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        if tmp.is_file() {
            let _ = std::fs::remove_file(&tmp);
        }
        anyhow!(e).context(format!("could not write '{}' (it was left as it was)", path.display()))
    })?;
    Ok(existed.then_some(bak))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_and_atomic_write() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("models.conf");
        std::fs::write(&conf, "old\n").unwrap();
        let bak = write_with_backup(&conf, "new\n").unwrap();
        assert_eq!(bak, Some(dir.path().join("models.conf.bak")));
        assert_eq!(std::fs::read_to_string(&conf).unwrap(), "new\n");
        assert_eq!(std::fs::read_to_string(dir.path().join("models.conf.bak")).unwrap(), "old\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn a_new_file_has_no_backup() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("advice_test_plan.md");
        assert_eq!(write_with_backup(&out, "x\n").unwrap(), None);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_failed_write_leaves_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("models.conf");
        std::fs::write(&conf, "old\n").unwrap();
        // The temporary file's name is taken by a folder: creating it fails.
        std::fs::create_dir(dir.path().join(".models.conf.splitplan.tmp")).unwrap();
        let e = write_with_backup(&conf, "new\n").unwrap_err();
        assert!(format!("{e:#}").contains("left as it was"), "{e:#}");
        assert_eq!(std::fs::read_to_string(&conf).unwrap(), "old\n");
        assert!(!dir.path().join("models.conf.bak").exists());
    }
}
