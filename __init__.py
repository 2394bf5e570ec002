"""ComfyUI's entry to unitune's node pack: ComfyUI imports this file when the repository sits in
its custom_nodes/ folder (or the registry installs it there). The nodes live in the package,
unitune.comfy; when the package is not pip-installed, its src/ folder is put on the path."""

try:
    from unitune.comfy import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
except ImportError:  # the cloned repository, not installed
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "src"))
    from unitune.comfy import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
