"""Records upstream ComfyUI's /object_info entries for the nodes VideosDGX serves, as the
fixture tests/object_info_upstream.rs compares against.

Usage (not in CI; needs an upstream checkout and its Python dependencies):
    python scripts/record_upstream_object_info.py UPSTREAM_DIR OURS.json OUT.json
UPSTREAM_DIR is a ComfyUI checkout, OURS.json our server's /object_info (started with an empty
--base-directory, so that file lists are empty on both sides), OUT.json the fixture. Upstream is
loaded with --cpu and an empty base directory, without custom or API nodes; each entry is built
as server.py's node_info builds it.
"""
import asyncio
import json
import logging
import os
import sys
import tempfile

upstream, ours_path, out_path = (os.path.abspath(p) for p in sys.argv[1:4])
base = tempfile.mkdtemp()
sys.argv = ["main.py", "--cpu", "--base-directory", base]
sys.path.insert(0, upstream)
os.chdir(upstream)
logging.disable(logging.WARNING)

import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()
import nodes  # noqa: E402
from comfy_api.internal import _ComfyNodeInternal  # noqa: E402

asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))


def node_info(name):
    """server.py's node_info."""
    cls = nodes.NODE_CLASS_MAPPINGS[name]
    if issubclass(cls, _ComfyNodeInternal):
        return cls.GET_NODE_INFO_V1()
    inputs = cls.INPUT_TYPES()
    info = {
        "input": inputs,
        "input_order": {key: list(value.keys()) for key, value in inputs.items()},
        "is_input_list": getattr(cls, "INPUT_IS_LIST", False),
        "output": cls.RETURN_TYPES,
        "output_is_list": getattr(cls, "OUTPUT_IS_LIST", [False] * len(cls.RETURN_TYPES)),
        "output_name": getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES),
        "name": name,
        "display_name": nodes.NODE_DISPLAY_NAME_MAPPINGS.get(name, name),
        "description": getattr(cls, "DESCRIPTION", ""),
        "python_module": getattr(cls, "RELATIVE_PYTHON_MODULE", "nodes"),
        "category": getattr(cls, "CATEGORY", "sd"),
        "output_node": getattr(cls, "OUTPUT_NODE", False) is True,
        "has_intermediate_output": getattr(cls, "HAS_INTERMEDIATE_OUTPUT", False) is True,
    }
    if hasattr(cls, "OUTPUT_TOOLTIPS"):
        info["output_tooltips"] = cls.OUTPUT_TOOLTIPS
    for flag, key in (("DEPRECATED", "deprecated"), ("EXPERIMENTAL", "experimental"), ("DEV_ONLY", "dev_only")):
        if getattr(cls, flag, False):
            info[key] = True
    if hasattr(cls, "API_NODE"):
        info["api_node"] = cls.API_NODE
    info["search_aliases"] = getattr(cls, "SEARCH_ALIASES", [])
    if hasattr(cls, "ESSENTIALS_CATEGORY"):
        info["essentials_category"] = cls.ESSENTIALS_CATEGORY
    return info


with open(ours_path) as f:
    ours = json.load(f)
missing = [name for name in ours if name not in nodes.NODE_CLASS_MAPPINGS]
if missing:
    sys.exit(f"not upstream nodes: {missing}")
fixture = {name: node_info(name) for name in ours}
with open(out_path, "w") as f:
    json.dump(fixture, f, indent=1, sort_keys=False, default=list)
    f.write("\n")
print(f"{len(fixture)} nodes")
