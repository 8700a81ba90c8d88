//! A grant's refresh token, kept in the state directory
//! (`oauth2/GRANT.json` beside the database): written when the provider
//! rotates it or `mailtriage oauth2 authorize` obtains it, read at start in
//! preference to the config's. Written to a temporary file, synced, and
//! renamed over the old one (then the directory synced), so that a crash
//! leaves the old token or the new, never half of one; mode 0600 in a
//! directory of mode 0700.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::protocol::RefreshToken;
use crate::config::Grant;

/// Where `grant`'s refresh token is kept under the state directory.
pub fn saved_path(state_dir: &Path, grant: &Grant) -> PathBuf {
    state_dir
        .join("oauth2")
        .join(format!("{}.json", grant.key()))
}

/// The file; besides the token, what it is for, for whoever looks.
#[derive(Serialize, Deserialize)]
struct Saved {
    refresh_token: String,
    token_url: String,
    client_id: String,
    user: Option<String>,
    #[serde(with = "crate::clock::seconds")]
    saved_at: Timestamp,
}

/// Why the saved token could not be read or written. Never shows it.
#[derive(Debug, thiserror::Error)]
pub enum SavedError {
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a saved refresh token ({reason})", .path.display())]
    Format { path: PathBuf, reason: String },
}

/// The saved refresh token, if there is one.
pub fn load(path: &Path) -> Result<Option<RefreshToken>, SavedError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(SavedError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let saved: Saved = serde_json::from_slice(&bytes).map_err(|e| SavedError::Format {
        path: path.to_path_buf(),
        // serde_json's message names a line and column, not the content.
        reason: format!("line {} column {}", e.line(), e.column()),
    })?;
    if saved.refresh_token.is_empty() {
        return Ok(None);
    }
    Ok(Some(RefreshToken::new(saved.refresh_token)))
}

/// Writes `token` for `grant` at `path`, atomically and durably.
pub fn save(
    path: &Path,
    grant: &Grant,
    token: &RefreshToken,
    now: Timestamp,
) -> Result<(), SavedError> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| SavedError::Io { path: p, source }
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(dir)(e)),
    }
    let text = serde_json::to_vec_pretty(&Saved {
        refresh_token: token.secret().to_string(),
        token_url: grant.token_url.clone(),
        client_id: grant.client_id.clone(),
        user: grant.user.clone(),
        saved_at: now,
    })
    .map_err(|e| SavedError::Format {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp))?;
        f.write_all(&text).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    fs::rename(&tmp, path).map_err(io(path))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn a_saved_token_is_read_back_private_and_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let grant = crate::config::Grant {
            flow: crate::config::Flow::RefreshToken,
            token_url: "https://t.example.com/token".into(),
            authorize_url: None,
            scope: "s".into(),
            client_id: "c".into(),
            client: crate::config::ClientAuth::None,
            refresh_token: None,
            user: Some("ops@example.com".into()),
            authorize_extra: Vec::new(),
        };
        let path = saved_path(dir.path(), &grant);
        assert!(load(&path).unwrap().is_none());
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        save(&path, &grant, &RefreshToken::new("r1".into()), now).unwrap();
        save(&path, &grant, &RefreshToken::new("r2".into()), now).unwrap();
        assert_eq!(load(&path).unwrap(), Some(RefreshToken::new("r2".into())));
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
        fs::write(&path, "{\"refresh_token\": 12, \"x\": \"s3cret\"}").unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(
            e.contains("not a saved refresh token") && !e.contains("s3cret"),
            "{e}"
        );
    }
}
