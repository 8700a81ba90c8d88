//! Tiny synchronous IMAP and SMTP clients over `std::net::TcpStream`, for
//! the kit itself and for tests that act as a user or a sender. Both read
//! through one `LineConnection`: connect to 127.0.0.1, CRLF lines under a
//! read timeout, and errors that carry the tail of the server's log.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::server::{read_lossy, tail};

/// One message read back over IMAP by `Dovecot::fetch` or [`ImapClient::uid_fetch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImapMessage {
    pub uid: u32,
    pub flags: Vec<String>,
    pub raw: Vec<u8>,
}

/// Read timeout of the harness's own IMAP and SMTP clients.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Lines of a server log added to a client's error.
const CLIENT_LOG_TAIL_LINES: usize = 30;

/// `message` followed by the tail of the log at `log`, if the client has one.
fn with_log(message: String, log: Option<&Path>) -> String {
    match log {
        Some(path) => format!(
            "{message}\n--- server log tail ({}) ---\n{}",
            path.display(),
            tail(&read_lossy(path), CLIENT_LOG_TAIL_LINES)
        ),
        None => message,
    }
}

/// A connection to a line-based server on 127.0.0.1 (IMAP or SMTP): the
/// reader under both clients. A read that times out keeps the part of a
/// line it got, for the next read; errors carry the tail of the server's
/// log, if the connection knows it.
struct LineConnection {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    /// Bytes of a line that a read timeout interrupted.
    pending: Vec<u8>,
    /// The server's log, whose tail is added to errors.
    log: Option<PathBuf>,
    /// "IMAP" or "SMTP", for errors.
    protocol: &'static str,
}

impl LineConnection {
    /// Connect to 127.0.0.1:`port`, reads timing out after [`IO_TIMEOUT`].
    fn connect(
        port: u16,
        log: Option<PathBuf>,
        protocol: &'static str,
    ) -> Result<LineConnection, String> {
        let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .map_err(|e| with_log(format!("connect to 127.0.0.1:{port}: {e}"), log.as_deref()))?;
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .map_err(|e| format!("set read timeout: {e}"))?;
        let writer = stream
            .try_clone()
            .map_err(|e| format!("clone stream: {e}"))?;
        Ok(LineConnection {
            reader: BufReader::new(stream),
            writer,
            pending: Vec::new(),
            log,
            protocol,
        })
    }

    /// `message` with the tail of the server's log.
    fn error(&self, message: String) -> String {
        with_log(message, self.log.as_deref())
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.writer
            .write_all(bytes)
            .and_then(|()| self.writer.flush())
            .map_err(|e| self.error(format!("write to the {} server: {e}", self.protocol)))
    }

    /// One line (without its CRLF) within [`IO_TIMEOUT`].
    fn read_line(&mut self) -> Result<Vec<u8>, String> {
        self.read_line_within(IO_TIMEOUT)?.ok_or_else(|| {
            self.error(format!(
                "no response from the {} server within {IO_TIMEOUT:?}",
                self.protocol
            ))
        })
    }

    /// One line (without its CRLF), or Ok(None) if none is complete within
    /// `timeout` (the part read is kept for the next call).
    fn read_line_within(&mut self, timeout: Duration) -> Result<Option<Vec<u8>>, String> {
        self.set_timeout(timeout)?;
        let read = self.reader.read_until(b'\n', &mut self.pending);
        self.set_timeout(IO_TIMEOUT)?;
        match read {
            Ok(0) => Err(self.error(format!(
                "{} server closed the connection (partial line {:?})",
                self.protocol,
                String::from_utf8_lossy(&self.pending)
            ))),
            Ok(_) if self.pending.ends_with(b"\n") => {
                let mut line = std::mem::take(&mut self.pending);
                line.pop();
                if line.ends_with(b"\r") {
                    line.pop();
                }
                Ok(Some(line))
            }
            Ok(_) => Err(self.error(format!(
                "{} server closed the connection mid-line",
                self.protocol
            ))),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(self.error(format!("read from the {} server: {e}", self.protocol))),
        }
    }

    /// The next `n` bytes (an IMAP literal).
    fn read_exact(&mut self, n: usize) -> Result<Vec<u8>, String> {
        let mut bytes = vec![0; n];
        match self.reader.read_exact(&mut bytes) {
            Ok(()) => Ok(bytes),
            Err(e) => Err(self.error(format!(
                "read {n} bytes from the {} server: {e}",
                self.protocol
            ))),
        }
    }

    fn set_timeout(&mut self, timeout: Duration) -> Result<(), String> {
        let timeout = timeout.max(Duration::from_millis(1));
        self.reader
            .get_ref()
            .set_read_timeout(Some(timeout))
            .map_err(|e| format!("set read timeout: {e}"))
    }
}

pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// ImapClient
// ---------------------------------------------------------------------------

/// One logical IMAP response line: text with each literal's bytes taken out
/// (the `{N}` marker stays in `text`) and put in `literals`, in order.
#[derive(Clone, Debug, Default)]
pub struct ImapLine {
    pub text: String,
    pub literals: Vec<Vec<u8>>,
}

/// A tiny synchronous IMAP client for tests (tagged commands, literals in
/// both directions, IDLE). Errors are `Err(String)` with the server's words.
pub struct ImapClient {
    /// Its errors, NO and BAD included, carry the server's log tail.
    conn: LineConnection,
    tag: u32,
    /// The server's greeting line.
    pub greeting: String,
}

impl ImapClient {
    /// Connect to 127.0.0.1:`port` and read the greeting (must be `* OK`).
    pub fn connect(port: u16) -> Result<ImapClient, String> {
        ImapClient::connect_logged(port, None)
    }

    /// [`ImapClient::connect`]; errors also show the tail of the log at `log`.
    pub(crate) fn connect_logged(port: u16, log: Option<PathBuf>) -> Result<ImapClient, String> {
        let mut client = ImapClient {
            conn: LineConnection::connect(port, log, "IMAP")?,
            tag: 0,
            greeting: String::new(),
        };
        let greeting = client.read_line()?.text;
        if !greeting.starts_with("* OK") {
            return Err(client.error(format!("unexpected IMAP greeting {greeting:?}")));
        }
        client.greeting = greeting;
        Ok(client)
    }

    fn next_tag(&mut self) -> String {
        self.tag += 1;
        format!("t{}", self.tag)
    }

    fn error(&self, message: String) -> String {
        self.conn.error(message)
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.conn.send(bytes)
    }

    /// Trailing `{N}` or `{N+}` literal marker of a physical line.
    fn literal_len(line: &[u8]) -> Option<usize> {
        let rest = line.strip_suffix(b"}")?;
        let rest = rest.strip_suffix(b"+").unwrap_or(rest);
        let open = rest.iter().rposition(|&b| b == b'{')?;
        std::str::from_utf8(&rest[open + 1..]).ok()?.parse().ok()
    }

    /// Read one logical response line (following literals), waiting up to
    /// the client's read timeout.
    pub fn read_line(&mut self) -> Result<ImapLine, String> {
        self.read_line_within(IO_TIMEOUT)?.ok_or_else(|| {
            self.error(format!(
                "no response from the IMAP server within {IO_TIMEOUT:?}"
            ))
        })
    }

    /// Read one logical line, or Ok(None) if none starts within `timeout`.
    pub fn read_line_within(&mut self, timeout: Duration) -> Result<Option<ImapLine>, String> {
        let Some(mut physical) = self.conn.read_line_within(timeout)? else {
            return Ok(None);
        };
        let mut line = ImapLine::default();
        loop {
            line.text.push_str(&String::from_utf8_lossy(&physical));
            let Some(n) = Self::literal_len(&physical) else {
                return Ok(Some(line));
            };
            line.literals.push(self.conn.read_exact(n)?);
            physical = self.conn.read_line()?;
        }
    }

    /// Read lines until the tagged response for `tag`: Ok(every line, the
    /// tagged OK last) on OK, Err(the tagged line and the log tail) on NO/BAD.
    fn finish(&mut self, tag: &str, command: &str) -> Result<Vec<ImapLine>, String> {
        let mut lines = Vec::new();
        loop {
            let line = self.read_line()?;
            if let Some(rest) = line
                .text
                .strip_prefix(tag)
                .and_then(|r| r.strip_prefix(' '))
            {
                if rest.starts_with("OK") {
                    lines.push(line);
                    return Ok(lines);
                }
                return Err(self.error(format!("{command:?} failed: {}", line.text)));
            }
            lines.push(line);
        }
    }

    /// Run one command (no literals); Ok(every line including the tagged OK).
    pub fn command(&mut self, command: &str) -> Result<Vec<ImapLine>, String> {
        let tag = self.next_tag();
        self.send(format!("{tag} {command}\r\n").as_bytes())?;
        self.finish(&tag, command)
    }

    /// LOGIN; Err carries the server's NO line.
    pub fn login(&mut self, user: &str, password: &str) -> Result<(), String> {
        let tag = self.next_tag();
        self.send(format!("{tag} LOGIN {} {}\r\n", quote(user), quote(password)).as_bytes())?;
        self.finish(&tag, &format!("LOGIN {user}")).map(|_| ())
    }

    /// LOGOUT (the server's BYE and OK are read).
    pub fn logout(&mut self) -> Result<(), String> {
        self.command("LOGOUT").map(|_| ())
    }

    fn exists(lines: &[ImapLine]) -> Result<u32, String> {
        lines
            .iter()
            .find_map(|l| {
                let rest = l.text.strip_prefix("* ")?.strip_suffix(" EXISTS")?;
                rest.parse().ok()
            })
            .ok_or_else(|| "no EXISTS in the response".to_string())
    }

    /// SELECT (read-write); returns EXISTS.
    pub fn select(&mut self, folder: &str) -> Result<u32, String> {
        let lines = self.command(&format!("SELECT {}", quote(folder)))?;
        Self::exists(&lines)
    }

    /// EXAMINE (read-only); returns EXISTS.
    pub fn examine(&mut self, folder: &str) -> Result<u32, String> {
        let lines = self.command(&format!("EXAMINE {}", quote(folder)))?;
        Self::exists(&lines)
    }

    /// STATUS with one numeric item (MESSAGES, UIDNEXT, UIDVALIDITY, UNSEEN...).
    pub fn status(&mut self, folder: &str, item: &str) -> Result<u32, String> {
        let lines = self.command(&format!("STATUS {} ({item})", quote(folder)))?;
        lines
            .iter()
            .filter(|l| l.text.starts_with("* STATUS "))
            .find_map(|l| number_after(&l.text, item))
            .ok_or_else(|| format!("no {item} in the STATUS response"))
    }

    /// Folder names (LIST "" "*"), sorted.
    pub fn list(&mut self) -> Result<Vec<String>, String> {
        let lines = self.command("LIST \"\" \"*\"")?;
        let mut names: Vec<String> = lines
            .iter()
            .filter(|l| l.text.starts_with("* LIST "))
            .map(|l| {
                if let Some(literal) = l.literals.last() {
                    return String::from_utf8_lossy(literal).into_owned();
                }
                // * LIST (\HasNoChildren) "." "Name"   or   ... "." Name
                let after_attrs = l.text.split_once(") ").map_or("", |(_, rest)| rest);
                let name = after_attrs.split_once(' ').map_or("", |(_, n)| n);
                name.trim_matches('"')
                    .replace("\\\"", "\"")
                    .replace("\\\\", "\\")
            })
            .collect();
        names.sort();
        Ok(names)
    }

    pub(crate) fn folder_exists(&mut self, folder: &str) -> Result<bool, String> {
        Ok(self.list()?.iter().any(|n| {
            n == folder || (n.eq_ignore_ascii_case("INBOX") && folder.eq_ignore_ascii_case("INBOX"))
        }))
    }

    /// APPEND with a synchronizing literal; returns the APPENDUID UID.
    pub fn append(&mut self, folder: &str, flags: &[&str], raw: &[u8]) -> Result<u32, String> {
        let tag = self.next_tag();
        let command = format!(
            "{tag} APPEND {} ({}) {{{}}}\r\n",
            quote(folder),
            flags.join(" "),
            raw.len()
        );
        self.send(command.as_bytes())?;
        loop {
            let line = self.read_line()?;
            if line.text.starts_with('+') {
                break;
            }
            if line.text.starts_with(&format!("{tag} ")) {
                return Err(format!("APPEND to {folder} refused: {}", line.text));
            }
        }
        let mut data = raw.to_vec();
        data.extend_from_slice(b"\r\n");
        self.send(&data)?;
        let lines = self.finish(&tag, &format!("APPEND to {folder}"))?;
        let done = lines.last().map(|l| l.text.as_str()).unwrap_or("");
        // t1 OK [APPENDUID <uidvalidity> <uid>] Append completed.
        done.split_once("[APPENDUID ")
            .and_then(|(_, rest)| rest.split([' ', ']']).nth(1)?.parse().ok())
            .ok_or_else(|| format!("no APPENDUID in {done:?}"))
    }

    /// UID FETCH `set` `items` in the selected folder; results sorted by UID.
    /// `items` should include UID; the body is the last literal if fetched.
    pub fn uid_fetch(&mut self, set: &str, items: &str) -> Result<Vec<ImapMessage>, String> {
        let lines = self.command(&format!("UID FETCH {set} {items}"))?;
        // A FETCH without a UID is an unsolicited flag update (another
        // session, the daemon, changed flags meanwhile): the answer to this
        // command carries the UID of every message it names.
        let mut messages: Vec<ImapMessage> = lines
            .iter()
            .filter(|l| l.text.starts_with("* ") && l.text.contains(" FETCH ("))
            .filter_map(|l| {
                Some(ImapMessage {
                    uid: number_after(&l.text, "UID")?,
                    flags: flags_in(&l.text),
                    raw: l.literals.last().cloned().unwrap_or_default(),
                })
            })
            .collect();
        // A message can appear twice (its answer and an update): keep the
        // answer, which comes last.
        messages.reverse();
        let mut seen = std::collections::HashSet::new();
        messages.retain(|m| seen.insert(m.uid));
        messages.sort_by_key(|m| m.uid);
        Ok(messages)
    }

    /// Start IDLE in the selected folder (waits for the `+` continuation).
    /// Returns the tag to pass to [`ImapClient::idle_done`].
    pub fn idle(&mut self) -> Result<String, String> {
        let tag = self.next_tag();
        self.send(format!("{tag} IDLE\r\n").as_bytes())?;
        loop {
            let line = self.read_line()?;
            if line.text.starts_with('+') {
                return Ok(tag);
            }
            if line.text.starts_with(&format!("{tag} ")) {
                return Err(format!("IDLE refused: {}", line.text));
            }
        }
    }

    /// Wait up to `timeout` for an untagged line containing `needle` (e.g.
    /// "EXISTS"); Ok(None) if none came. Other lines read meanwhile are dropped.
    pub fn wait_for_untagged(
        &mut self,
        needle: &str,
        timeout: Duration,
    ) -> Result<Option<String>, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            match self.read_line_within(left)? {
                Some(line) if line.text.starts_with("* ") && line.text.contains(needle) => {
                    return Ok(Some(line.text));
                }
                Some(_) => {}
                None => return Ok(None),
            }
        }
    }

    /// End IDLE (DONE) and read its tagged OK.
    pub fn idle_done(&mut self, tag: &str) -> Result<Vec<ImapLine>, String> {
        self.send(b"DONE\r\n")?;
        self.finish(tag, "IDLE")
    }
}

/// The number after `key ` in `text` (e.g. "UID 7", "MESSAGES 3").
fn number_after(text: &str, key: &str) -> Option<u32> {
    let mut words = text.split([' ', '(', ')']);
    while let Some(word) = words.next() {
        if word.eq_ignore_ascii_case(key) {
            return words.next()?.parse().ok();
        }
    }
    None
}

/// The flags in `FLAGS (...)` of a FETCH line, without `\Recent`: that one
/// is per session (whoever selects first after arrival gets it), so leaving
/// it out keeps assertions independent of who looked first.
fn flags_in(text: &str) -> Vec<String> {
    text.split_once("FLAGS (")
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(flags, _)| {
            flags
                .split_whitespace()
                .filter(|f| !f.eq_ignore_ascii_case("\\Recent"))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// SmtpClient
// ---------------------------------------------------------------------------

/// An SMTP reply: code and the text of each line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmtpReply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl SmtpReply {
    pub fn text(&self) -> String {
        self.lines.join(" / ")
    }
}

/// A tiny synchronous SMTP client for tests: each call returns the reply,
/// whatever its code; Err only for I/O and protocol errors.
pub struct SmtpClient {
    /// Its I/O and protocol errors carry the server's log tail.
    conn: LineConnection,
    pub greeting: SmtpReply,
}

impl SmtpClient {
    /// Connect to 127.0.0.1:`port` and read the greeting.
    pub fn connect(port: u16) -> Result<SmtpClient, String> {
        SmtpClient::connect_logged(port, None)
    }

    /// [`SmtpClient::connect`]; errors also show the tail of the log at `log`.
    pub(crate) fn connect_logged(port: u16, log: Option<PathBuf>) -> Result<SmtpClient, String> {
        let mut client = SmtpClient {
            conn: LineConnection::connect(port, log, "SMTP")?,
            greeting: SmtpReply {
                code: 0,
                lines: Vec::new(),
            },
        };
        client.greeting = client.reply()?;
        Ok(client)
    }

    fn reply(&mut self) -> Result<SmtpReply, String> {
        let mut lines = Vec::new();
        loop {
            let raw = self.conn.read_line()?;
            let line = String::from_utf8_lossy(&raw);
            let Some(code) = line.get(..3).and_then(|c| c.parse::<u16>().ok()) else {
                return Err(self
                    .conn
                    .error(format!("malformed SMTP reply line {line:?}")));
            };
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line.get(4..).unwrap_or("").to_string());
            if last {
                return Ok(SmtpReply { code, lines });
            }
        }
    }

    /// Send one command line and read its reply.
    pub fn command(&mut self, line: &str) -> Result<SmtpReply, String> {
        self.conn.send(format!("{line}\r\n").as_bytes())?;
        self.reply()
    }

    /// AUTH PLAIN with an initial response.
    pub fn auth_plain(&mut self, user: &str, password: &str) -> Result<SmtpReply, String> {
        let token = base64(format!("\0{user}\0{password}").as_bytes());
        self.command(&format!("AUTH PLAIN {token}"))
    }

    /// AUTH LOGIN (username and password challenges).
    pub fn auth_login(&mut self, user: &str, password: &str) -> Result<SmtpReply, String> {
        let reply = self.command("AUTH LOGIN")?;
        if reply.code != 334 {
            return Ok(reply);
        }
        let reply = self.command(&base64(user.as_bytes()))?;
        if reply.code != 334 {
            return Ok(reply);
        }
        self.command(&base64(password.as_bytes()))
    }

    /// DATA: if the server answers 354, send `raw` dot-stuffed and
    /// terminated, and return the final reply; else the DATA reply.
    pub fn data(&mut self, raw: &[u8]) -> Result<SmtpReply, String> {
        let reply = self.command("DATA")?;
        if reply.code != 354 {
            return Ok(reply);
        }
        let mut body = Vec::with_capacity(raw.len() + 8);
        for line in raw.split_inclusive(|&b| b == b'\n') {
            if line.first() == Some(&b'.') {
                body.push(b'.');
            }
            body.extend_from_slice(line);
        }
        if !body.ends_with(b"\r\n") {
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b".\r\n");
        self.conn.send(&body)?;
        self.reply()
    }

    /// EHLO, MAIL FROM, each RCPT TO, DATA: the first reply that is not a
    /// success is returned as Err(reply); Ok(final 250 reply) otherwise.
    pub fn send_mail(
        &mut self,
        from: &str,
        to: &[&str],
        raw: &[u8],
    ) -> Result<Result<SmtpReply, SmtpReply>, String> {
        let steps: Vec<String> = std::iter::once("EHLO client.test".to_string())
            .chain(std::iter::once(format!("MAIL FROM:<{from}>")))
            .chain(to.iter().map(|r| format!("RCPT TO:<{r}>")))
            .collect();
        for step in steps {
            let reply = self.command(&step)?;
            if reply.code != 250 {
                return Ok(Err(reply));
            }
        }
        let reply = self.data(raw)?;
        Ok(if reply.code == 250 {
            Ok(reply)
        } else {
            Err(reply)
        })
    }

    /// QUIT (the reply is read; a dropped connection is fine).
    pub fn quit(mut self) {
        let _ = self.command("QUIT");
    }
}
