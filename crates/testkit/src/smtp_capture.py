#!/usr/bin/python3
"""SMTP capture server for mailtriage's real-server tests (crates/testkit/src/smtp.rs).

Runs aiosmtpd (Debian's python3-aiosmtpd) on one loopback port and writes every
accepted message into DIR/messages/:

    NNNNNN.env   the envelope, one "key: value" line each, written first:
                     mail_from: sender@example.org      (empty for the null sender <>)
                     mail_option: BODY=8BITMIME          (zero or more)
                     rcpt_to: rcpt@example.org           (one line per accepted RCPT)
                     auth_user: alice                    (only after a successful AUTH)
                     tls: TLSv1.3                        (only over TLS: STARTTLS or implicit)
                     received_at: 1763900000.123456789   (unix time, ns, when DATA ended:
                                                          just before the 250 reply)
    NNNNNN.eml   the message bytes exactly as received in DATA (dot-unstuffed,
                 CRLF line endings as sent), written second.

Both are written to a .tmp name and renamed, so a reader that sees NNNNNN.eml
also sees the whole NNNNNN.env. Numbers start at 000001 and go on after the
highest existing one when the server is restarted on the same directory.

Reject mode: if DIR/control/reject exists and holds "CODE STAGE" (STAGE is
"rcpt" or "data"), every RCPT TO (or every end of DATA) is answered with CODE
instead of accepting; the file is read again for each command, so tests switch
the mode on and off at any time. Each rejection is appended as a line
"STAGE CODE ADDRESSES" to DIR/rejections.log.

AUTH: with --auth-user/--auth-pass, AUTH PLAIN and LOGIN are offered on plain
SMTP (auth_require_tls=False: loopback tests only) and required before MAIL.
Without them no AUTH is offered.

XOAUTH2: with --oauth-introspect URL, AUTH XOAUTH2 is offered (and required,
PLAIN and LOGIN refused unless --auth-user is given too): the token is checked
at that RFC 7662 introspection URL, active and for the user named; a refused
token is answered "535 5.7.3 Authentication unsuccessful", as Exchange Online
does. The envelope's auth_user is the user.

8BITMIME: offered, unless --no-8bitmime (aiosmtpd's decode_data mode, which
does not offer it; the bytes are still stored as received).

TLS: with --tls starttls, STARTTLS is offered (aiosmtpd tls_context) and, with
--require-starttls, required before MAIL/RCPT/DATA (530 otherwise); with
--tls implicit, the port speaks TLS from the first byte (SMTPS). Both use the
certificate chain and key given by --tls-cert and --tls-key.
"""

import argparse
import asyncio
import errno
import json
import logging
import os
import signal
import ssl
import sys
import time
import urllib.parse
import urllib.request
import warnings
from base64 import b64decode

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

log = logging.getLogger("smtp_capture")


def status_text(code):
    """An SMTP reply line for a configured rejection code."""
    if 400 <= code < 500:
        return f"{code} 4.0.0 Temporary failure (test harness reject mode)"
    return f"{code} 5.0.0 Rejected (test harness reject mode)"


class CaptureHandler:
    def __init__(self, base):
        self.messages = os.path.join(base, "messages")
        self.reject_file = os.path.join(base, "control", "reject")
        self.rejections = os.path.join(base, "rejections.log")
        os.makedirs(self.messages, exist_ok=True)
        os.makedirs(os.path.dirname(self.reject_file), exist_ok=True)
        self.counter = 0
        for name in os.listdir(self.messages):
            stem = name.split(".", 1)[0]
            if stem.isdigit():
                self.counter = max(self.counter, int(stem))

    def reject(self, stage, what):
        """The reply to send instead of accepting at STAGE, or None."""
        try:
            with open(self.reject_file, encoding="ascii") as f:
                fields = f.read().split()
        except FileNotFoundError:
            return None
        if len(fields) != 2 or not fields[0].isdigit():
            log.error("ignoring malformed control file %s: %r", self.reject_file, fields)
            return None
        code, at = int(fields[0]), fields[1]
        if at != stage:
            return None
        with open(self.rejections, "a", encoding="utf-8") as f:
            f.write(f"{stage} {code} {what}\n")
        log.info("reject %s %s with %d", stage, what, code)
        return status_text(code)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self.reject("rcpt", address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        received_ns = time.time_ns()
        reply = self.reject("data", " ".join(envelope.rcpt_tos))
        if reply:
            return reply
        self.counter += 1
        stem = os.path.join(self.messages, f"{self.counter:06d}")
        # aiosmtpd keeps the null sender as "<>": record it as empty.
        mail_from = envelope.mail_from or ""
        if mail_from == "<>":
            mail_from = ""
        lines = [f"mail_from: {mail_from}"]
        lines += [f"mail_option: {o}" for o in envelope.mail_options]
        lines += [f"rcpt_to: {r}" for r in envelope.rcpt_tos]
        auth = session.auth_data
        if session.authenticated and isinstance(auth, LoginPassword):
            lines.append(f"auth_user: {auth.login.decode('utf-8', 'replace')}")
        secs, ns = divmod(received_ns, 1_000_000_000)
        lines.append(f"received_at: {secs}.{ns:09d}")
        # The TLS transport (after STARTTLS, or implicit) has an ssl_object.
        ssl_object = server.transport.get_extra_info("ssl_object") if server.transport else None
        if ssl_object is not None:
            lines.append(f"tls: {ssl_object.version()}")
        write_atomically(stem + ".env", ("\n".join(lines) + "\n").encode("utf-8"))
        content = envelope.original_content
        if content is None:
            content = envelope.content
        if isinstance(content, str):
            content = content.encode("utf-8")
        write_atomically(stem + ".eml", content)
        log.info("stored %s.eml from %r to %r", stem, envelope.mail_from, envelope.rcpt_tos)
        return "250 2.0.0 OK: captured"


class OAuthHandler(CaptureHandler):
    """CaptureHandler that also takes AUTH XOAUTH2, checking the token at
    the introspection URL."""

    def __init__(self, base, introspect):
        super().__init__(base)
        self.introspect = introspect

    async def auth_XOAUTH2(self, server, args):
        if len(args) == 2:
            blob = args[1].encode("ascii")
            try:
                initial = b64decode(blob, validate=True)
            except Exception:
                await server.push("501 5.5.2 Can't decode base64")
                return None
        else:
            initial = await server.challenge_auth("")
            if not isinstance(initial, bytes):
                return None
        fields = dict(
            part.split("=", 1) for part in initial.decode("utf-8", "replace").split("\x01") if "=" in part
        )
        user = fields.get("user", "")
        bearer = fields.get("auth", "")
        token = bearer[7:] if bearer.startswith("Bearer ") else ""
        loop = asyncio.get_running_loop()
        ok = await loop.run_in_executor(None, self.check, user, token)
        log.info("AUTH XOAUTH2 for %r: %s", user, "ok" if ok else "failed")
        if ok:
            return AuthResult(success=True, auth_data=LoginPassword(user.encode("utf-8"), b""))
        return AuthResult(success=False, handled=False,
                          message="535 5.7.3 Authentication unsuccessful")

    def check(self, user, token):
        data = urllib.parse.urlencode({"token": token}).encode("ascii")
        try:
            with urllib.request.urlopen(self.introspect, data=data, timeout=5) as r:
                answer = json.loads(r.read())
        except Exception as e:
            log.error("introspection failed: %s", e)
            return False
        return answer.get("active") is True and answer.get("username") == user


def write_atomically(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, path)


def make_authenticator(user, password):
    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == user.encode("utf-8")
            and auth_data.password == password.encode("utf-8")
        )
        log.info("AUTH %s for %r: %s", mechanism,
                 getattr(auth_data, "login", None), "ok" if ok else "failed")
        if ok:
            return AuthResult(success=True, auth_data=auth_data)
        # handled=False: aiosmtpd then answers 535 itself (with the default
        # handled=True it answers nothing and the client hangs).
        return AuthResult(success=False, handled=False)

    return authenticator


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--auth-user")
    parser.add_argument("--auth-pass")
    parser.add_argument("--tls", choices=["starttls", "implicit"])
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--require-starttls", action="store_true")
    parser.add_argument("--no-8bitmime", action="store_true")
    parser.add_argument("--oauth-introspect")
    args = parser.parse_args()
    if args.tls and not (args.tls_cert and args.tls_key):
        parser.error("--tls needs --tls-cert and --tls-key")

    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    # aiosmtpd warns that AUTH without TLS is unsafe: expected on loopback.
    warnings.simplefilter("ignore")

    if args.oauth_introspect:
        handler = OAuthHandler(args.dir, args.oauth_introspect)
    else:
        handler = CaptureHandler(args.dir)
    kwargs = dict(
        hostname="capture.test",  # no getfqdn(): that may wait on DNS
        enable_SMTPUTF8=True,
        decode_data=args.no_8bitmime,
    )
    if args.auth_user is not None or args.oauth_introspect:
        kwargs.update(
            auth_required=True,
            auth_require_tls=False,
            authenticator=make_authenticator(
                args.auth_user if args.auth_user is not None else "\0no user",
                args.auth_pass or "",
            ),
        )

    tls_context = None
    if args.tls:
        # Server side: no client certificates asked for, none checked.
        tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls_context.minimum_version = ssl.TLSVersion.TLSv1_2
        tls_context.load_cert_chain(args.tls_cert, args.tls_key)
    if args.tls == "starttls":
        kwargs.update(tls_context=tls_context, require_starttls=args.require_starttls)

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)

    def factory():
        return SMTP(handler, loop=loop, **kwargs)

    try:
        server = loop.run_until_complete(
            loop.create_server(
                factory,
                host=args.host,
                port=args.port,
                reuse_address=True,
                ssl=tls_context if args.tls == "implicit" else None,
            )
        )
    except OSError as e:
        print(f"smtp_capture: bind {args.host}:{args.port} failed: {e}", file=sys.stderr)
        sys.exit(3 if e.errno == errno.EADDRINUSE else 2)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, loop.stop)
    log.info("listening on %s:%d, writing to %s, auth %s, tls %s, 8bitmime %s", args.host,
             args.port, handler.messages, "required" if args.auth_user is not None else "off",
             (args.tls or "off") + (" (required)" if args.require_starttls else ""),
             "off" if args.no_8bitmime else "on")
    try:
        loop.run_forever()
    finally:
        server.close()


if __name__ == "__main__":
    main()
