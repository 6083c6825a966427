"""Starts the real videosdgx binary for the Python client tests."""
import contextlib
import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
BINARY = Path(os.environ.get("VIDEOSDGX_BIN", ROOT / "target" / "debug" / "videosdgx"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(*extra, headers=None):
    """A server on a free port with its own base directory; yields its URL."""
    port = free_port()
    with tempfile.TemporaryDirectory() as base:
        proc = subprocess.Popen(
            [str(BINARY), "--base-directory", base, "--listen", "127.0.0.1", "--port", str(port), *extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 30
        while True:
            try:
                requests.get(url + "/system_stats", headers=headers, timeout=1)
                break
            except requests.ConnectionError:
                assert time.time() < deadline, "server did not start"
                time.sleep(0.1)
        try:
            yield url
        finally:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def server():
    with running_server() as url:
        yield url
