//! The client side: one request sent to the daemon's socket, its answer
//! read, blocking (the command line has no runtime).

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Request, Response};

/// Why [`request`] got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No socket, or nothing listening on it: the daemon is not running.
    #[error("no daemon answers at {}", .path.display())]
    NotRunning { path: PathBuf },
    #[error("the daemon's control socket at {} did not answer within {} s", .path.display(), .after.as_secs())]
    Timeout { path: PathBuf, after: Duration },
    #[error("the daemon's control socket at {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the daemon's control socket at {} answered something unreadable: {message}", .path.display())]
    Protocol { path: PathBuf, message: String },
}

/// The largest answer the client reads.
const MAX_RESPONSE: u64 = 1 << 30;

/// Sends `req` to the daemon at `path` and waits for its answer. Blocking;
/// `timeout` bounds each read and write.
pub fn request(path: &Path, req: &Request, timeout: Duration) -> Result<Response, ControlError> {
    request_stream(path, req, timeout).map(|(answer, _)| answer)
}

/// [`request`], and the connection after the answer line, for a request
/// whose answer is followed by a stream (`Export`).
pub fn request_stream(
    path: &Path,
    req: &Request,
    timeout: Duration,
) -> Result<(Response, BufReader<UnixStream>), ControlError> {
    let io_err = |source: io::Error| {
        if matches!(
            source.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) {
            ControlError::Timeout {
                path: path.to_path_buf(),
                after: timeout,
            }
        } else {
            ControlError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    };
    let stream = match UnixStream::connect(path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(ControlError::NotRunning {
                path: path.to_path_buf(),
            });
        }
        Err(e) => return Err(io_err(e)),
    };
    stream.set_read_timeout(Some(timeout)).map_err(io_err)?;
    stream.set_write_timeout(Some(timeout)).map_err(io_err)?;
    let mut line = serde_json::to_vec(req).map_err(|e| ControlError::Protocol {
        path: path.to_path_buf(),
        message: format!("cannot encode the request: {e}"),
    })?;
    line.push(b'\n');
    (&stream).write_all(&line).map_err(io_err)?;
    let mut answer = Vec::new();
    let mut reader = BufReader::with_capacity(1 << 16, stream);
    io::Read::take(&mut reader, MAX_RESPONSE)
        .read_until(b'\n', &mut answer)
        .map_err(io_err)?;
    if answer.is_empty() {
        return Err(ControlError::Protocol {
            path: path.to_path_buf(),
            message: "the connection closed without an answer".into(),
        });
    }
    let answer =
        serde_json::from_slice(answer.trim_ascii()).map_err(|e| ControlError::Protocol {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    Ok((answer, reader))
}
