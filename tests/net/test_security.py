"""Cluster keys: the key file, CURVE server/client sockets, and the ZAP handler."""

from __future__ import annotations

import os
import stat

import pytest
import zmq

from zactor.net.security import (
    ClusterKeys,
    KeyFileError,
    curve_client,
    curve_server,
    default_key_path,
    generate_keys,
    keys_from,
    load_keys,
    start_authenticator,
)


def test_generate_and_load(tmp_path):
    path = str(tmp_path / "sub" / "cluster.key")
    keys = generate_keys(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    loaded = load_keys(path)
    assert loaded == keys and len(keys.public) == 40 and keys.path == path
    assert keys.secret.decode() not in repr(keys)
    assert keys_from(path) == keys and keys_from(keys) is keys and keys_from(None) is None


def test_existing_file_is_not_replaced_unless_asked(tmp_path):
    path = str(tmp_path / "k")
    first = generate_keys(path)
    with pytest.raises(KeyFileError, match="already exists"):
        generate_keys(path)
    os.chmod(path, 0o644)
    second = generate_keys(path, overwrite=True)
    assert second != first and stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_loose_or_bad_files_are_refused(tmp_path):
    path = str(tmp_path / "k")
    generate_keys(path)
    os.chmod(path, 0o640)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_keys(path)
    with pytest.raises(KeyFileError, match="no cluster key file"):
        load_keys(str(tmp_path / "absent"))
    link = tmp_path / "link"
    link.symlink_to(path)
    with pytest.raises(KeyFileError, match="cannot open"):
        load_keys(str(link))
    bad = tmp_path / "bad"
    bad.write_text("not json")
    os.chmod(bad, 0o600)
    with pytest.raises(KeyFileError, match="not a zactor cluster key file"):
        load_keys(str(bad))


def test_default_path_and_env(monkeypatch, tmp_path):
    monkeypatch.delenv("ZACTOR_KEY_FILE", raising=False)
    assert default_key_path() == os.path.expanduser("~/.zactor/cluster.key")
    monkeypatch.setenv("ZACTOR_KEY_FILE", str(tmp_path / "env.key"))
    keys = generate_keys()
    assert keys.path == str(tmp_path / "env.key") and load_keys() == keys


def _server(ctx, keys):
    auth = start_authenticator(ctx, keys)
    sock = curve_server(ctx.socket(zmq.ROUTER), keys)
    sock.setsockopt(zmq.LINGER, 0)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    return auth, sock, f"tcp://127.0.0.1:{port}"


def _client(ctx, addr, keys):
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    curve_client(sock, keys)
    sock.connect(addr)
    return sock


def test_only_the_cluster_key_gets_through(tmp_path):
    keys = generate_keys(str(tmp_path / "k"))
    ctx = zmq.Context()
    auth, server, addr = _server(ctx, keys)
    public, secret = zmq.curve_keypair()
    # knows the server's public key (it is not secret) but not the cluster's secret:
    # the handshake completes, and ZAP refuses its client key
    impostor = ClusterKeys(keys.public, b"", None)
    outsiders = [_client(ctx, addr, None)]
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.CURVE_SERVERKEY, impostor.public)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, public)
    sock.setsockopt(zmq.CURVE_SECRETKEY, secret)
    sock.connect(addr)
    outsiders.append(sock)
    member = _client(ctx, addr, keys)
    try:
        for s in outsiders:
            s.send(b"let me in")
        member.send(b"hello")
        assert server.poll(10_000)
        assert server.recv_multipart()[1] == b"hello"
        deadline_ms = 1000  # outsiders had the same time as the member, and then some
        assert not server.poll(deadline_ms), "an outsider's message reached the server"
        assert auth.refused >= 1
    finally:
        for s in [*outsiders, member, server]:
            s.close(0)
        auth.stop()
        ctx.term()


def test_authenticator_is_shared_per_context(tmp_path):
    keys = generate_keys(str(tmp_path / "k"))
    other = generate_keys(str(tmp_path / "o"))
    ctx = zmq.Context()
    a = start_authenticator(ctx, keys)
    b = start_authenticator(ctx, keys)
    try:
        assert a is b
        with pytest.raises(ValueError):
            start_authenticator(ctx, other)
        assert start_authenticator(ctx, None) is None
    finally:
        a.stop()
        b.stop()
        ctx.term()
