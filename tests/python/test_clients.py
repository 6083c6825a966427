"""Third-party clients, unchanged, against the real server: PyPI comfy-api-simplified, the npm
@saintno/comfyui-sdk (tests/node/sdk_flow.mjs) and the official web frontend in headless
Chromium (tests/node/frontend.mjs, driven by Playwright)."""
import os
import struct
import subprocess
from pathlib import Path

from comfy_api_simplified import ComfyApiWrapper, ComfyWorkflowWrapper

from conftest import ROOT, running_server

NODE_TESTS = ROOT / "tests" / "node"
ARTIFACTS = Path(os.environ.get("VIDEOSDGX_ARTIFACTS", ROOT / "target" / "test-artifacts"))

WORKFLOW = {
    "3": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 16, "batch_size": 1, "color": 0xFF8800},
          "_meta": {"title": "Blank"}},
    "9": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "Simplified"},
          "_meta": {"title": "Save Image"}},
}


def png_size(data):
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    return struct.unpack(">II", data[16:24])


def run_node(script, *args):
    done = subprocess.run(["node", str(NODE_TESTS / script), *args], cwd=NODE_TESTS,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{script} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_comfy_api_simplified_queues_and_fetches_the_image(server):
    api = ComfyApiWrapper(server)
    workflow = ComfyWorkflowWrapper(WORKFLOW)
    workflow.set_node_param("Blank", "width", 48)
    images = api.queue_and_wait_images(workflow, "Save Image")
    assert list(images) == ["Simplified_00001_.png"]
    assert png_size(images["Simplified_00001_.png"]) == (48, 16)
    assert api.get_system_stats()["system"]["comfyui_version"]
    assert "EmptyImage" in api.get_object_info("EmptyImage")


def test_comfyui_sdk_flow(server):
    assert "sdk flow ok" in run_node("sdk_flow.mjs", server)


def test_comfyui_sdk_flow_with_auth_token():
    token = "sdk-test-token"
    with running_server("--auth-token", token, headers={"Authorization": f"Bearer {token}"}) as url:
        assert "sdk flow ok" in run_node("sdk_flow.mjs", url, token)


def test_official_frontend_in_chromium(server):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    out = run_node("frontend.mjs", server, str(ARTIFACTS))
    assert "frontend ok" in out
    assert png_size((ARTIFACTS / "frontend.png").read_bytes())[0] > 0
