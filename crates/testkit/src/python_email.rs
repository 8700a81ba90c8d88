//! Python's `email` package as a second, strict reader of what the daemon
//! sends.

use std::io::Write;
use std::process::{Command, Stdio};

/// What Python's `email` package (policy=default, Debian's /usr/bin/python3)
/// makes of a message: an independent, strict reader for what the daemon
/// sends. One entry per MIME part in walk order: `type`, `cte`,
/// `filename`, `defects` (names); for a message/rfc822 attachment the
/// attached message's `message_id`, `subject` and `body` (its text, as
/// Python decodes it), for another attachment `payload_hex`, the bytes a
/// mail program would save.
pub fn python_read(raw: &[u8]) -> serde_json::Value {
    const SCRIPT: &str = r#"
import email, email.policy, json, sys
m = email.message_from_bytes(sys.stdin.buffer.read(), policy=email.policy.default)
out = []
for p in m.walk():
    e = {"type": p.get_content_type(), "cte": p.get("Content-Transfer-Encoding"),
         "filename": p.get_filename(), "defects": [type(d).__name__ for d in p.defects]}
    if p.is_attachment():
        if p.get_content_type() == "message/rfc822":
            inner = p.get_payload()[0]
            e["message_id"] = inner["Message-ID"]
            e["subject"] = str(inner["Subject"])
            body = inner.get_body(("plain", "html"))
            e["body"] = body.get_content() if body is not None else None
        else:
            e["payload_hex"] = p.get_payload(decode=True).hex()
    out.append(e)
json.dump(out, sys.stdout)
"#;
    let mut child = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(SCRIPT)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("/usr/bin/python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(raw)
        .expect("write to python");
    let out = child.wait_with_output().expect("python ran");
    assert!(
        out.status.success(),
        "python's email package failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("python printed JSON")
}
