"""Stand-in for ComfyUI's folder_paths (model folders by name; see README.md)."""
from __future__ import annotations

import os

supported_pt_extensions = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}
models_dir = os.path.join(os.getcwd(), "models")
folder_names_and_paths: dict[str, tuple[list[str], set[str]]] = {}


def reset(base: str) -> None:
    """Tests: a fresh ComfyUI tree under `base`."""
    global models_dir
    models_dir = os.path.join(base, "models")
    folder_names_and_paths.clear()
    folder_names_and_paths["checkpoints"] = ([os.path.join(models_dir, "checkpoints")], supported_pt_extensions)


def add_model_folder_path(folder_name: str, full_folder_path: str, is_default: bool = False) -> None:
    if folder_name not in folder_names_and_paths:
        folder_names_and_paths[folder_name] = ([full_folder_path], set())
        return
    paths = folder_names_and_paths[folder_name][0]
    if full_folder_path in paths:
        if is_default and paths[0] != full_folder_path:
            paths.remove(full_folder_path)
            paths.insert(0, full_folder_path)
    elif is_default:
        paths.insert(0, full_folder_path)
    else:
        paths.append(full_folder_path)


def get_folder_paths(folder_name: str) -> list[str]:
    return folder_names_and_paths[folder_name][0][:]


def get_filename_list(folder_name: str) -> list[str]:
    paths, extensions = folder_names_and_paths[folder_name]
    found = set()
    for base in paths:
        if not os.path.isdir(base):
            continue
        for root, _dirs, names in os.walk(base, followlinks=True):
            for name in names:
                rel = os.path.relpath(os.path.join(root, name), base)
                if not extensions or os.path.splitext(name)[1].lower() in extensions:
                    found.add(rel)
    return sorted(found)


def get_full_path(folder_name: str, filename: str) -> str | None:
    filename = os.path.relpath(os.path.join("/", filename), "/")
    for base in folder_names_and_paths[folder_name][0]:
        path = os.path.join(base, filename)
        if os.path.isfile(path):
            return path
    return None
