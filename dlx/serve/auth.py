"""API keys and signed requests for `dlx serve`.

A key has an id (sent with every request) and a secret (known to its user, shown once by
`dlx users add`). The server stores neither in the clear: a key's row holds a random salt and a
keyed hash of the secret; the secret is derived from the server's own key (`server.key`, mode
0600, next to the database) and the salt, so a copy of the database alone signs nothing.

Every /v1/ request carries four headers:
    X-Dlx-Key        the key id
    X-Dlx-Timestamp  Unix seconds; requests more than 5 minutes off are refused
    X-Dlx-Nonce      a fresh random string; one seen in the last 10 minutes is refused (replay)
    X-Dlx-Signature  hex HMAC-SHA256(secret, canonical request)
with the canonical request = method, path, the query sorted by key and value, the body's SHA-256,
the timestamp and the nonce, one per line. Signatures are compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

from dlx.storage import sqlite

SIGNATURE = re.compile(r"[0-9a-f]{64}")
KEY_ID = re.compile(r"dlx_[0-9a-f]{16}")
DIGITS = re.compile(r"[0-9]{1,12}")
NONCE = re.compile(r"[A-Za-z0-9_-]{8,128}")
MAX_SKEW_S = 300
NONCE_TTL_S = 600
HEADERS = ("X-Dlx-Key", "X-Dlx-Timestamp", "X-Dlx-Nonce", "X-Dlx-Signature")


class AuthError(Exception):
    """Why a request is refused (401); the message is safe to return to the caller."""


def canonical(method: str, path: str, query: str, body: bytes, timestamp: str, nonce: str) -> bytes:
    sorted_query = urlencode(sorted(parse_qsl(query, keep_blank_values=True)))
    return "\n".join([method.upper(), path, sorted_query, hashlib.sha256(body).hexdigest(), timestamp, nonce]).encode()


def sign(secret: str, method: str, path: str, query: str, body: bytes, timestamp: str, nonce: str) -> str:
    return hmac.new(secret.encode(), canonical(method, path, query, body, timestamp, nonce), hashlib.sha256).hexdigest()


def signed_headers(key_id: str, secret: str, method: str, path: str, query: str = "", body: bytes = b"",
                   now: float | None = None) -> dict[str, str]:
    """The headers that sign one request (what dlx.serve.client sends)."""
    timestamp = str(int(time.time() if now is None else now))
    nonce = secrets.token_hex(16)
    return {"X-Dlx-Key": key_id, "X-Dlx-Timestamp": timestamp, "X-Dlx-Nonce": nonce,
            "X-Dlx-Signature": sign(secret, method, path, query, body, timestamp, nonce)}


@dataclass
class User:
    key_id: str
    name: str
    admin: bool = False  # sees every key's jobs


class KeyStore:
    """Users, their keys and the nonces seen recently, in one SQLite file."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.db_path = self.directory / "users.db"
        self.server_key = self._server_key()
        with sqlite(self.db_path) as db:
            db.execute("create table if not exists keys (key_id text primary key, name text not null, salt text not null,"
                       " secret_hash text not null, created real not null, revoked integer not null default 0)")
            if "admin" not in [row[1] for row in db.execute("pragma table_info(keys)")]:  # a users.db of an older dlx
                db.execute("alter table keys add column admin integer not null default 0")
            db.execute("create table if not exists nonces (key_id text not null, nonce text not null, seen real not null,"
                       " primary key (key_id, nonce))")

    def _server_key(self) -> bytes:
        path = self.directory / "server.key"
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(32))
        return path.read_bytes()

    def _secret(self, key_id: str, salt: str) -> str:
        return hmac.new(self.server_key, f"secret\n{key_id}\n{salt}".encode(), hashlib.sha256).hexdigest()

    def _hash(self, secret: str) -> str:
        return hmac.new(self.server_key, f"check\n{secret}".encode(), hashlib.sha256).hexdigest()

    # ---------------------------------------------------------------- admin
    def add(self, name: str, admin: bool = False) -> tuple[str, str]:
        """A new key for `name`: (key id, secret). The secret is not shown again. An `admin` key
        sees every key's jobs."""
        if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise ValueError(f"user name '{name}': use letters, digits, '-', '_' or '.'")
        key_id = "dlx_" + secrets.token_hex(8)
        salt = secrets.token_hex(16)
        secret = self._secret(key_id, salt)
        with sqlite(self.db_path) as db:
            db.execute("insert into keys (key_id, name, salt, secret_hash, created, admin) values (?, ?, ?, ?, ?, ?)",
                       (key_id, name, salt, self._hash(secret), time.time(), int(admin)))
        return key_id, secret

    def revoke(self, key_id: str) -> bool:
        with sqlite(self.db_path) as db:
            return db.execute("update keys set revoked = 1 where key_id = ?", (key_id,)).rowcount == 1

    def users(self) -> list[tuple[str, str, bool]]:
        with sqlite(self.db_path) as db:
            return [(k, n, bool(r)) for k, n, r in db.execute("select key_id, name, revoked from keys order by created")]

    # ---------------------------------------------------------------- checking requests
    def verify(self, headers, method: str, path: str, query: str, body: bytes, now: float | None = None) -> User:
        """The user who signed this request, or AuthError saying why it is refused."""
        values = {h: headers.get(h) for h in HEADERS}
        missing = [h for h, v in values.items() if not v]
        if missing:
            raise AuthError(f"unsigned request: missing header {missing[0]}")
        key_id, timestamp, nonce, signature = (values[h] for h in HEADERS)
        # the form of each header before any use: hex digests, ASCII digits, printable ASCII
        if not SIGNATURE.fullmatch(signature):
            raise AuthError("X-Dlx-Signature: expected 64 hexadecimal digits")
        if not KEY_ID.fullmatch(key_id):
            raise AuthError("bad signature or unknown key")
        if not DIGITS.fullmatch(timestamp):
            raise AuthError("X-Dlx-Timestamp: expected Unix seconds")
        if not NONCE.fullmatch(nonce):
            raise AuthError("X-Dlx-Nonce: expected 8 to 128 letters, digits, '-' or '_'")
        now = time.time() if now is None else now
        skew = abs(now - int(timestamp))
        if skew > MAX_SKEW_S:
            raise AuthError(f"X-Dlx-Timestamp is {int(skew)} s away from the server's clock (at most {MAX_SKEW_S} s)")
        with sqlite(self.db_path) as db:
            row = db.execute("select name, salt, secret_hash, revoked, admin from keys where key_id = ?", (key_id,)).fetchone()
            # the same work whether or not the key exists: no timing hint about which ids are real
            name, salt, secret_hash, revoked, admin = row or ("", "0" * 32, "", 1, 0)
            secret = self._secret(key_id, salt)
            expected = sign(secret, method, path, query, body, timestamp, nonce)
            good = hmac.compare_digest(expected, signature) and hmac.compare_digest(self._hash(secret), secret_hash)
            if row is None or revoked or not good:
                raise AuthError("bad signature or unknown key")
            db.execute("delete from nonces where seen < ?", (now - NONCE_TTL_S,))
            try:
                db.execute("insert into nonces (key_id, nonce, seen) values (?, ?, ?)", (key_id, nonce, now))
            except sqlite3.IntegrityError:
                raise AuthError("X-Dlx-Nonce was used before (replayed request)") from None
        return User(key_id, name, bool(admin))
