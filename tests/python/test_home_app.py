"""What a home app that only swaps COMFYUI_URL does, with the usual PyPI clients."""
import json
import uuid

import requests
import websocket

WORKFLOW = {
    "3": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": 0x336699},
          "_meta": {"title": "EmptyImage"}},
    "9": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "HomeApp"},
          "_meta": {"title": "Save Image"}},
}


def test_home_app_flow(server):
    stats = requests.get(f"{server}/system_stats").json()
    assert stats["system"]["comfyui_version"]
    assert stats["devices"][0]["type"] in ("cpu", "cuda")

    client_id = str(uuid.uuid4())
    ws = websocket.WebSocket()
    ws.connect(f"ws://{server.split('://')[1]}/ws?clientId={client_id}")
    first = json.loads(ws.recv())
    assert first["type"] == "status" and first["data"]["sid"] == client_id

    resp = requests.post(f"{server}/prompt", json={"prompt": WORKFLOW, "client_id": client_id})
    assert resp.status_code == 200, resp.text
    prompt_id = resp.json()["prompt_id"]

    ws.settimeout(30)
    while True:
        msg = ws.recv()
        if isinstance(msg, str):
            m = json.loads(msg)
            if m["type"] == "executing" and m["data"]["node"] is None and m["data"]["prompt_id"] == prompt_id:
                break
    ws.close()

    history = requests.get(f"{server}/history/{prompt_id}").json()[prompt_id]
    assert history["status"]["status_str"] == "success"
    images = history["outputs"]["9"]["images"]
    assert images == [{"filename": "HomeApp_00001_.png", "subfolder": "", "type": "output"}]

    img = images[0]
    view = requests.get(f"{server}/view", params={"filename": img["filename"], "subfolder": img["subfolder"],
                                                  "type": img["type"]})
    assert view.status_code == 200
    assert view.headers["Content-Type"] == "image/png"
    png = view.content
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (64, 48)


def test_bad_prompt_gets_comfyui_error_shape(server):
    resp = requests.post(f"{server}/prompt", json={"prompt": {"1": {"class_type": "Nope", "inputs": {}}}})
    assert resp.status_code == 400
    body = resp.json()
    assert set(body) == {"error", "node_errors"}
    assert body["error"]["type"] == "missing_node_type"
    assert body["error"]["extra_info"] == {"node_id": "1", "class_type": "Nope", "node_title": "Nope"}
