"""Cluster keys and CurveZMQ: who may talk to a cluster's TCP sockets.

Runs in every process that opens a TCP socket of a cluster (node managers, the transfer
server and client, control-store processes, drivers) when the cluster has keys.

One shared cluster keypair (a deliberate choice): every member is both a CURVE server (its
ROUTER / PUB sockets) and a CURVE client (its DEALERs to other members), and every member
holds the same key file. A process proves it belongs to the cluster by completing the CURVE
handshake with the cluster's secret key; the ZAP handler installed by ``start_authenticator``
accepts exactly one client public key, the cluster's. With per-role keypairs, every node would
still need the server keys of every other node (each node serves transfers), so splitting
them buys no isolation between members and costs key distribution; revoking a member means
rotating the cluster key either way.

The key file (default ``~/.zactor/cluster.key``, override with ``ZACTOR_KEY_FILE``) is made
with mode 0600 in a 0700 directory and refused when it is readable by group or others, or
owned by someone else: anyone who can read it is a member of the cluster.

A socket whose peer lacks the keys never delivers one byte of that peer to the application:
a NULL-mechanism peer fails the handshake, and a CURVE peer with another key is refused by
ZAP before its first message. ``hmac_key`` derives the key that authenticates transfer
requests when object bytes travel unencrypted (``zactor.transfer``, ``encrypt=False``).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
from dataclasses import dataclass

import zmq

KEY_FILE_ENV = "ZACTOR_KEY_FILE"
_ZAP_DOMAIN = "zactor"


def default_key_path() -> str:
    """``$ZACTOR_KEY_FILE``, else ``~/.zactor/cluster.key``."""
    return os.environ.get(KEY_FILE_ENV) or os.path.join(os.path.expanduser("~"), ".zactor",
                                                         "cluster.key")


@dataclass(frozen=True)
class ClusterKeys:
    """The cluster's CURVE keypair (z85 text, 40 bytes each) and the file it came from
    (child processes are handed the path, never the secret on their command line)."""

    public: bytes
    secret: bytes
    path: str | None = None

    def hmac_key(self, purpose: bytes) -> bytes:
        """A 32-byte key for ``purpose`` derived from the secret (never the secret itself,
        so a MAC key that leaks through a bug does not give away the CURVE identity)."""
        return hashlib.sha256(b"zactor-cluster-key\0" + purpose + b"\0" + self.secret).digest()

    def __repr__(self):  # never print the secret (logs, tracebacks)
        return f"ClusterKeys(public={self.public!r}, path={self.path!r})"


class KeyFileError(PermissionError):
    """The key file is missing, malformed, or readable by others."""


def generate_keys(path: str | None = None, overwrite: bool = False) -> ClusterKeys:
    """Make a new cluster keypair and write it to ``path`` (default ``default_key_path()``)
    with mode 0600, creating its directory with mode 0700. Refuses to replace an existing
    file unless ``overwrite``."""
    path = path or default_key_path()
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    public, secret = zmq.curve_keypair()
    text = json.dumps({"public": public.decode(), "secret": secret.decode()}).encode()
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        # the mode is given at creation: there is no moment where the secret is world-readable
        fd = os.open(path, flags | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except FileExistsError:
        raise KeyFileError(f"key file {path} already exists (pass overwrite=True to "
                           f"replace it)") from None
    try:
        os.fchmod(fd, 0o600)  # O_TRUNC keeps an old file's mode
        os.write(fd, text)
    finally:
        os.close(fd)
    return ClusterKeys(public, secret, path)


def load_keys(path: str | None = None) -> ClusterKeys:
    """Read the key file; ``KeyFileError`` when absent, malformed, not ours, or not 0600."""
    path = path or default_key_path()
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise KeyFileError(f"no cluster key file at {path} (create one with "
                           f"zactor.net.security.generate_keys)") from None
    except OSError as e:  # ELOOP: a symlink (refused: it could point anywhere), EACCES...
        raise KeyFileError(f"cannot open key file {path}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if st.st_uid != os.getuid():
            raise KeyFileError(f"key file {path} is owned by uid {st.st_uid}, not by us")
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyFileError(f"key file {path} has mode {stat.S_IMODE(st.st_mode):o}; it "
                               f"must be readable by its owner only (chmod 600 {path})")
        raw = os.read(fd, 4096)
    finally:
        os.close(fd)
    try:
        data = json.loads(raw)
        public, secret = data["public"].encode(), data["secret"].encode()
    except (ValueError, KeyError, TypeError, AttributeError):
        raise KeyFileError(f"key file {path} is not a zactor cluster key file") from None
    if len(public) != 40 or len(secret) != 40:
        raise KeyFileError(f"key file {path} holds keys of the wrong length")
    return ClusterKeys(public, secret, path)


def keys_from(keys_or_path) -> ClusterKeys | None:
    """None, a ClusterKeys, or a key file path -> ClusterKeys or None (for ``keys=``
    parameters that accept either)."""
    if keys_or_path is None or isinstance(keys_or_path, ClusterKeys):
        return keys_or_path
    return load_keys(os.fspath(keys_or_path))


def curve_server(sock: zmq.Socket, keys: ClusterKeys | None) -> zmq.Socket:
    """Make ``sock`` (before bind) a CURVE server with the cluster's key; no-op without keys.
    Its context needs ``start_authenticator`` so that only the cluster's key is accepted."""
    if keys is not None:
        sock.setsockopt(zmq.ZAP_DOMAIN, _ZAP_DOMAIN.encode())
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        sock.setsockopt(zmq.CURVE_SECRETKEY, keys.secret)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, keys.public)
    return sock


def curve_client(sock: zmq.Socket, keys: ClusterKeys | None) -> zmq.Socket:
    """Make ``sock`` (before connect) a CURVE client of a cluster server; no-op without keys."""
    if keys is not None:
        sock.setsockopt(zmq.CURVE_SERVERKEY, keys.public)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, keys.public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, keys.secret)
    return sock


class _OnlyClusterKey:
    """ZAP credentials provider: a CURVE client is accepted iff its key is the cluster's."""

    def __init__(self, public: bytes):
        self.public = public
        self.refused = 0  # for tests and diagnostics

    def callback(self, domain, client_key) -> bool:
        ok = client_key == self.public
        if not ok:
            self.refused += 1
        return ok


_auth_lock = threading.Lock()
_authenticators: dict = {}  # id(context) -> (context, authenticator, provider, users)


class Authenticator:
    """A ZAP handler thread in one zmq context (shared by every socket of that context);
    ``stop`` when the last user is done, before the context is terminated."""

    def __init__(self, ctx: zmq.Context, keys: ClusterKeys):
        # imported on first use: zmq.auth pulls in asyncio, which keyless processes never need
        from zmq.auth.thread import ThreadAuthenticator

        self.ctx = ctx
        self.provider = _OnlyClusterKey(keys.public)
        self._auth = ThreadAuthenticator(ctx)
        self._auth.start()
        self._auth.configure_curve_callback(_ZAP_DOMAIN, self.provider)
        self._users = 1
        self.public = keys.public

    @property
    def refused(self) -> int:
        return self.provider.refused

    def stop(self) -> None:
        with _auth_lock:
            self._users -= 1
            if self._users > 0:
                return
            _authenticators.pop(id(self.ctx), None)
        self._auth.stop()


def start_authenticator(ctx: zmq.Context, keys: ClusterKeys | None) -> Authenticator | None:
    """The ZAP handler of ``ctx`` accepting only ``keys`` (started on first call, counted
    after: call ``stop()`` once per call). None without keys."""
    if keys is None:
        return None
    with _auth_lock:
        auth = _authenticators.get(id(ctx))
        if auth is not None and auth.ctx is ctx:
            if auth.public != keys.public:
                raise ValueError("this zmq context already authenticates another cluster key")
            auth._users += 1
            return auth
        auth = Authenticator(ctx, keys)
        _authenticators[id(ctx)] = auth
        return auth
