#!/usr/bin/python3
"""OAuth 2.0 token server for mailtriage's real-server tests (crates/testkit/src/token.rs).

A real HTTP server (http.server, one thread per request) on one loopback port,
holding its state in memory, configured by a JSON file (--config):

    {"clients": {"CLIENT_ID": {"secret": "S" | null, "assertion": false,
                               "username": "ops"}},
     "refresh_tokens": {"TOKEN": "CLIENT_ID"},
     "lifetime": 3600, "rotate": false}

A client with "assertion": true authenticates with a client assertion
(RFC 7523): a JWT whose iss and sub are the client id and whose aud is the
token URL (the signature is not checked: Python's standard library has no
RSA). Tokens carry the client's username (or the login_hint of the consent).

Endpoints:
    POST /token        grant_type client_credentials, refresh_token (rotated
                       when "rotate" is on: the old one stops working) or
                       authorization_code (PKCE S256 checked); errors as in
                       RFC 6749 5.2, invalid_grant 400 and invalid_client 401.
    GET  /authorize    the consent page, consenting at once: 302 to
                       redirect_uri?code=..&state=.. (the test plays the browser).
    POST /introspect   token=..: {"active": true, "username": .., "exp": ..} or
                       {"active": false} (RFC 7662; Dovecot's oauth2 passdb and
                       the SMTP capture ask it).
    GET  /health       200, for the kit to know the server answers.
Control (the tests):
    POST /control/revoke   client_id=..: every token of the client stops working
                           and its token requests get invalid_grant, until
    POST /control/restore  client_id=.. (refresh tokens issued before work again).
    POST /control/lifetime seconds=N     lifetime of tokens issued from now on.
    POST /control/rotate   on=1|0
    POST /control/fail     status=503&count=N: the next N token requests fail so.
    GET  /control/counts   {"CLIENT_ID": token requests}
    GET  /control/tokens   {"access": [...], "refresh": [...]} every one issued.
"""

import argparse
import base64
import hashlib
import json
import logging
import secrets
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger("token_server")
lock = threading.Lock()
state = {}


def b64url_json(part):
    padded = part + "=" * (-len(part) % 4)
    return json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))


def new_token(prefix):
    return prefix + secrets.token_urlsafe(24)


class Handler(BaseHTTPRequestHandler):
    server_version = "mailtriage-token-server/1"

    def log_message(self, fmt, *args):
        # The path only: never a query (codes) or a body (tokens).
        log.info("%s %s", self.command, self.path.split("?", 1)[0])

    def reply(self, status, body, headers=None):
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def form(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode("utf-8", "replace")
        return {k: v[0] for k, v in urllib.parse.parse_qs(raw, keep_blank_values=True).items()}

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        query = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
        if url.path == "/health":
            return self.reply(200, {"ok": True})
        if url.path == "/control/counts":
            with lock:
                return self.reply(200, dict(state["counts"]))
        if url.path == "/control/tokens":
            with lock:
                return self.reply(200, {"access": list(state["access_issued"]),
                                        "refresh": list(state["refresh_issued"])})
        if url.path == "/authorize":
            return self.authorize(query)
        return self.reply(404, {"error": "not_found"})

    def do_POST(self):
        path = urllib.parse.urlsplit(self.path).path
        form = self.form()
        if path == "/token":
            return self.token(form)
        if path == "/introspect":
            return self.introspect(form)
        with lock:
            if path == "/control/revoke":
                cid = form.get("client_id", "")
                state["revoked"].add(cid)
                for tok in [t for t, a in state["access"].items() if a["client_id"] == cid]:
                    del state["access"][tok]
                return self.reply(200, {"ok": True})
            if path == "/control/restore":
                state["revoked"].discard(form.get("client_id", ""))
                return self.reply(200, {"ok": True})
            if path == "/control/lifetime":
                state["lifetime"] = int(form["seconds"])
                return self.reply(200, {"ok": True})
            if path == "/control/rotate":
                state["rotate"] = form.get("on") == "1"
                return self.reply(200, {"ok": True})
            if path == "/control/fail":
                state["fail"] = (int(form["status"]), int(form["count"]))
                return self.reply(200, {"ok": True})
        return self.reply(404, {"error": "not_found"})

    def authorize(self, q):
        cid = q.get("client_id", "")
        with lock:
            client = state["clients"].get(cid)
            if client is None or q.get("response_type") != "code":
                return self.reply(400, {"error": "invalid_request"})
            if q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
                return self.reply(400, {"error": "invalid_request",
                                        "error_description": "PKCE S256 required"})
            code = new_token("code-")
            state["codes"][code] = {
                "client_id": cid,
                "challenge": q["code_challenge"],
                "redirect_uri": q.get("redirect_uri", ""),
                "username": q.get("login_hint") or client.get("username", ""),
            }
        target = q.get("redirect_uri", "") + "?" + urllib.parse.urlencode(
            {"code": code, "state": q.get("state", "")})
        self.send_response(302)
        self.send_header("Location", target)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def client_of(self, form):
        """(client_id, None) when the client authenticated, else (id, error reply)."""
        cid = form.get("client_id", "")
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            user, _, pw = base64.b64decode(auth[6:]).decode("utf-8").partition(":")
            cid, form = urllib.parse.unquote(user), dict(form, client_secret=urllib.parse.unquote(pw))
        client = state["clients"].get(cid)
        bad = (401, {"error": "invalid_client",
                     "error_description": "client authentication failed (test token server)"})
        if client is None:
            return cid, bad
        if client.get("assertion"):
            if form.get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer":
                return cid, bad
            try:
                _header, claims, _sig = form.get("client_assertion", "").split(".")
                c = b64url_json(claims)
            except Exception:
                return cid, bad
            token_url = "http://%s:%d/token" % self.server.server_address[:2]
            if c.get("iss") != cid or c.get("sub") != cid or c.get("aud") != token_url \
                    or c.get("exp", 0) < time.time():
                return cid, bad
            return cid, None
        if client.get("secret") is None:
            return cid, None
        if form.get("client_secret") != client["secret"]:
            return cid, bad
        return cid, None

    def issue(self, cid, username, refresh=None):
        access = new_token("at-")
        lifetime = state["lifetime"]
        state["access"][access] = {"client_id": cid, "username": username,
                                   "exp": time.time() + lifetime}
        state["access_issued"].append(access)
        body = {"access_token": access, "token_type": "Bearer", "expires_in": lifetime}
        if refresh is not None:
            body["refresh_token"] = refresh
        return body

    def token(self, form):
        with lock:
            cid = form.get("client_id", "")
            state["counts"][cid] = state["counts"].get(cid, 0) + 1
            if state["fail"][1] > 0:
                status, count = state["fail"]
                state["fail"] = (status, count - 1)
                return self.reply(status, {"error": "temporarily_unavailable",
                                           "error_description": "test token server told to fail"})
            cid, error = self.client_of(form)
            if error:
                return self.reply(*error)
            client = state["clients"][cid]
            if cid in state["revoked"]:
                return self.reply(400, {"error": "invalid_grant", "error_description":
                                        "AADSTS50173: The provided grant has expired due to it "
                                        "being revoked (test token server)."})
            grant = form.get("grant_type")
            if grant == "client_credentials":
                return self.reply(200, self.issue(cid, client.get("username", "")))
            if grant == "refresh_token":
                rt = form.get("refresh_token", "")
                owner = state["refresh"].get(rt)
                if owner is None or owner["client_id"] != cid:
                    return self.reply(400, {"error": "invalid_grant", "error_description":
                                            "unknown or used refresh token (test token server)"})
                new_rt = None
                if state["rotate"]:
                    del state["refresh"][rt]
                    new_rt = new_token("rt-")
                    state["refresh"][new_rt] = owner
                    state["refresh_issued"].append(new_rt)
                return self.reply(200, self.issue(cid, owner["username"], new_rt))
            if grant == "authorization_code":
                code = state["codes"].pop(form.get("code", ""), None)
                verifier = form.get("code_verifier", "")
                challenge = base64.urlsafe_b64encode(
                    hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()
                if code is None or code["client_id"] != cid or code["challenge"] != challenge \
                        or code["redirect_uri"] != form.get("redirect_uri"):
                    return self.reply(400, {"error": "invalid_grant", "error_description":
                                            "bad code, verifier or redirect_uri (test token server)"})
                rt = new_token("rt-")
                owner = {"client_id": cid, "username": code["username"]}
                state["refresh"][rt] = owner
                state["refresh_issued"].append(rt)
                return self.reply(200, self.issue(cid, owner["username"], rt))
            return self.reply(400, {"error": "unsupported_grant_type"})

    def introspect(self, form):
        with lock:
            tok = state["access"].get(form.get("token", ""))
            if tok is None or tok["exp"] <= time.time():
                return self.reply(200, {"active": False})
            return self.reply(200, {"active": True, "username": tok["username"],
                                    "client_id": tok["client_id"], "exp": int(tok["exp"])})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--config", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    with open(args.config, encoding="utf-8") as f:
        config = json.load(f)
    state.update(
        clients=config.get("clients", {}),
        refresh={t: {"client_id": c, "username": config["clients"].get(c, {}).get("username", "")}
                 for t, c in config.get("refresh_tokens", {}).items()},
        refresh_issued=list(config.get("refresh_tokens", {}).keys()),
        access={}, access_issued=[], codes={}, counts={}, revoked=set(),
        lifetime=int(config.get("lifetime", 3600)), rotate=bool(config.get("rotate", False)),
        fail=(503, 0),
    )
    try:
        server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    except OSError as e:
        print(f"token_server: bind 127.0.0.1:{args.port} failed: {e}", file=sys.stderr)
        sys.exit(3)
    server.daemon_threads = True
    log.info("listening on 127.0.0.1:%d", args.port)
    server.serve_forever()


if __name__ == "__main__":
    main()
