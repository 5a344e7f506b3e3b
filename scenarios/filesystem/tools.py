"""Filesystem tools. `state` holds `dirs` (a sorted list of folder paths) and `files` (path -> text)."""

import posixpath

from trajalign.envs import ToolError

HOME = "/home/user"
MAX_RESULTS = 10


def list_dir(state: dict, path: str) -> dict:
    """List the folders and files directly inside a folder.

    Args:
        path: the folder, e.g. "/home/user/notes".
    """
    folder = _dir(state, path)
    dirs = [posixpath.basename(d) for d in state["dirs"] if d != folder and posixpath.dirname(d) == folder]
    files = sorted(posixpath.basename(f) for f in state["files"] if posixpath.dirname(f) == folder)
    return {"path": folder, "dirs": dirs, "files": files}


def find_files(state: dict, name_contains: str) -> list[str]:
    """Find files anywhere under /home/user whose file name contains some text (case-insensitive).

    Args:
        name_contains: part of the file name, e.g. "garden" or ".cfg".
    """
    needle = name_contains.strip().casefold()
    if not needle:
        raise ToolError("name_contains is empty")
    found = sorted(f for f in state["files"] if needle in posixpath.basename(f).casefold())
    return found[:MAX_RESULTS]


def search_text(state: dict, query: str) -> list[dict]:
    """Search the contents of all files for a text (case-insensitive); returns each matching line with its file.

    Args:
        query: the text to look for, e.g. "Ana Lee" or "obsolete".
    """
    needle = query.strip().casefold()
    if not needle:
        raise ToolError("query is empty")
    hits = []
    for path in sorted(state["files"]):
        for line in state["files"][path].split("\n"):
            if needle in line.casefold():
                hits.append({"path": path, "line": line})
    return hits[:MAX_RESULTS]


def read_file(state: dict, path: str) -> str:
    """Read a text file.

    Args:
        path: the full path of the file, e.g. "/home/user/notes/garden.txt".
    """
    return state["files"][_file(state, path)]


def make_dir(state: dict, path: str) -> dict:
    """Create a new, empty folder. Its parent folder must exist.

    Args:
        path: the full path of the new folder, e.g. "/home/user/projects/garden".
    """
    folder = _norm(path)
    if folder in state["dirs"] or folder in state["files"]:
        raise ToolError(f"{folder} already exists")
    parent = posixpath.dirname(folder)
    if parent not in state["dirs"]:
        raise ToolError(f"no such folder {parent}; create it first")
    state["dirs"].append(folder)
    state["dirs"].sort()
    return {"created": folder}


def move_file(state: dict, path: str, destination_dir: str) -> dict:
    """Move a file into another folder, keeping its name.

    Args:
        path: the full path of the file to move.
        destination_dir: the folder to move it into, e.g. "/home/user/archive".
    """
    source = _file(state, path)
    folder = _dir(state, destination_dir)
    if posixpath.dirname(source) == folder:
        raise ToolError(f"{source} is already in {folder}")
    target = posixpath.join(folder, posixpath.basename(source))
    if target in state["files"]:
        raise ToolError(f"destination exists: {target}")
    state["files"][target] = state["files"].pop(source)
    return {"moved": source, "to": target}


def rename_file(state: dict, path: str, new_name: str) -> dict:
    """Rename a file inside its folder.

    Args:
        path: the full path of the file to rename.
        new_name: the new file name only, without a folder, e.g. "garden_final.txt".
    """
    source = _file(state, path)
    name = new_name.strip()
    if not name or "/" in name or name in (".", ".."):
        raise ToolError("new_name must be a plain file name without '/'; use move_file to change folders")
    target = posixpath.join(posixpath.dirname(source), name)
    if target == source:
        raise ToolError(f"{source} already has that name")
    if target in state["files"] or target in state["dirs"]:
        raise ToolError(f"destination exists: {target}")
    state["files"][target] = state["files"].pop(source)
    return {"renamed": source, "to": target}


def replace_in_file(state: dict, path: str, old: str, new: str) -> dict:
    """Replace a piece of text in a file. The old text must occur exactly once. This cannot be undone.

    Args:
        path: the full path of the file to edit.
        old: the exact text to replace, e.g. "timeout = 30".
        new: the text to put in its place, e.g. "timeout = 60".
    """
    file = _file(state, path)
    if not old:
        raise ToolError("old is empty")
    content = state["files"][file]
    count = content.count(old)
    if count == 0:
        raise ToolError(f"text {old!r} not found in {file}")
    if count > 1:
        raise ToolError(f"text {old!r} occurs {count} times in {file}; include more of the line")
    state["files"][file] = content.replace(old, new)
    return {"path": file, "content": state["files"][file]}


def delete_file(state: dict, path: str) -> dict:
    """Delete a file. This cannot be undone.

    Args:
        path: the full path of the file to delete.
    """
    file = _file(state, path)
    del state["files"][file]
    return {"deleted": file}


def _norm(path: str) -> str:
    path = path.strip()
    if path.startswith("~"):
        path = HOME + path[1:]
    if not path.startswith("/"):
        path = f"{HOME}/{path}"
    return posixpath.normpath(path)


def _file(state: dict, path: str) -> str:
    file = _norm(path)
    if file not in state["files"]:
        if file in state["dirs"]:
            raise ToolError(f"{file} is a folder, not a file")
        raise ToolError(f"no such file {file}")
    return file


def _dir(state: dict, path: str) -> str:
    folder = _norm(path)
    if folder not in state["dirs"]:
        if folder in state["files"]:
            raise ToolError(f"{folder} is a file, not a folder")
        raise ToolError(f"no such folder {folder}")
    return folder
