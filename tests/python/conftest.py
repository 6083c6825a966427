"""Starts the real videosdgx binary for the Python client tests."""
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


@pytest.fixture(scope="module")
def server():
    port = free_port()
    with tempfile.TemporaryDirectory() as base:
        proc = subprocess.Popen(
            [str(BINARY), "--base-directory", base, "--listen", "127.0.0.1", "--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 30
        while True:
            try:
                requests.get(url + "/system_stats", timeout=1)
                break
            except requests.ConnectionError:
                assert time.time() < deadline, "server did not start"
                time.sleep(0.1)
        yield url
        proc.kill()
        proc.wait()
