"""A local stand-in for the Hugging Face Hub, enough for `huggingface_hub` to search and download.

It serves model folders from disk under the routes huggingface-hub calls (repo info, file tree,
search, `resolve/` with HEAD metadata and ranged GETs), and sends file bodies at a bounded rate
so that a download takes a few seconds and its progress can be watched. Point a process at it
with `HF_ENDPOINT`.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse


@dataclass
class _Repo:
    id: str
    folder: Path
    sha: str
    files: dict[str, Path]


@dataclass
class FakeHub:
    """`repos` maps a repo id (`owner/name`) to a folder; `rate` is bytes per second per file,
    `rates` overrides it per repo."""

    repos: dict[str, Path]
    rate: int = 256 * 1024
    rates: dict[str, int] = field(default_factory=dict)
    chunk: int = 16 * 1024
    bytes_sent: int = 0
    requests: list[str] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _repos: dict[str, _Repo] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for repo_id, folder in self.repos.items():
            files = {
                p.relative_to(folder).as_posix(): p
                for p in sorted(folder.rglob("*"))
                if p.is_file()
            }
            digest = hashlib.sha1()
            for name, path in files.items():
                digest.update(name.encode())
                digest.update(path.read_bytes())
            self._repos[repo_id] = _Repo(repo_id, folder, digest.hexdigest(), files)

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def total_bytes(self, repo_id: str) -> int:
        return sum(p.stat().st_size for p in self._repos[repo_id].files.values())

    def start(self) -> FakeHub:
        hub = self

        class Handler(_HubHandler):
            owner = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fake-hub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _etag(path: Path) -> str:
    """What the hub reports for a file: sha256 for LFS files (weights), the git blob sha1 else."""
    data = path.read_bytes()
    return hashlib.sha256(data).hexdigest() if _is_lfs(path) else _git_blob_sha1(data)


def _is_lfs(path: Path) -> bool:
    return path.suffix in (".safetensors", ".gguf", ".bin")


def _info(repo: _Repo, blobs: bool) -> dict[str, object]:
    siblings: list[dict[str, object]] = []
    for name, path in repo.files.items():
        entry: dict[str, object] = {"rfilename": name}
        if blobs:
            data = path.read_bytes()
            entry.update(size=len(data), blobId=_git_blob_sha1(data))
            if _is_lfs(path):
                entry["lfs"] = {
                    "size": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "pointerSize": 134,
                }
        siblings.append(entry)
    return {
        "_id": repo.sha[:24],
        "id": repo.id,
        "modelId": repo.id,
        "author": repo.id.split("/")[0],
        "sha": repo.sha,
        "private": False,
        "disabled": False,
        "gated": False,
        "downloads": 0,
        "likes": 0,
        "library_name": "mlx",
        "pipeline_tag": "text-generation",
        "tags": ["mlx", "llama", "text-generation"],
        "createdAt": "2025-01-01T00:00:00.000Z",
        "lastModified": "2025-01-01T00:00:00.000Z",
        "siblings": siblings,
        "usedStorage": sum(p.stat().st_size for p in repo.files.values()),
    }


class _HubHandler(BaseHTTPRequestHandler):
    owner: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # quiet: pytest shows failures
        pass

    # ---- helpers

    def _json(self, body: object, status: int = 200) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _missing(self, code: str, message: str) -> None:
        data = json.dumps({"error": message}).encode()
        self.send_response(404)
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _repo(self, repo_id: str) -> _Repo | None:
        return self.owner._repos.get(repo_id)

    # ---- routes

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        url = urlparse(self.path)
        path = unquote(url.path)
        query = parse_qs(url.query)
        self.owner.requests.append(f"{self.command} {self.path}")

        if path == "/api/models":
            terms = " ".join(query.get("search", [""])).lower()
            found = [_info(r, False) for r in self.owner._repos.values() if terms in r.id.lower()]
            return self._json(found)

        m = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", path)
        if m:
            repo = self._repo(m.group(1))
            if repo is None:
                return self._missing("RepoNotFound", f"Repository {m.group(1)} not found")
            return self._json(_info(repo, query.get("blobs", ["false"])[0].lower() == "true"))

        m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?", path)
        if m:
            repo = self._repo(m.group(1))
            if repo is None:
                return self._missing("RepoNotFound", f"Repository {m.group(1)} not found")
            prefix = (m.group(3) or "").strip("/")
            items = [
                {"type": "file", "oid": _etag(p), "size": p.stat().st_size, "path": name}
                for name, p in repo.files.items()
                if not prefix or name.startswith(prefix + "/")
            ]
            return self._json(items)

        m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if m:
            return self._file(m.group(1), m.group(3))

        self._missing("EntryNotFound", f"no route {path}")

    def _file(self, repo_id: str, name: str) -> None:
        repo = self._repo(repo_id)
        if repo is None:
            return self._missing("RepoNotFound", f"Repository {repo_id} not found")
        file = repo.files.get(name)
        if file is None:
            return self._missing("EntryNotFound", f"{name} not found in {repo_id}")
        data = file.read_bytes()
        start = 0
        rng = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if rng:
            start = int(rng.group(1))
            end = int(rng.group(2)) + 1 if rng.group(2) else len(data)
            body = data[start:end]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{start + len(body) - 1}/{len(data)}")
        else:
            body = data
            self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{_etag(file)}"')
        self.send_header("X-Repo-Commit", repo.sha)
        self.end_headers()
        if self.command == "HEAD":
            return
        # Trickle the body so that a download spans several progress events.
        pause = self.owner.chunk / self.owner.rates.get(repo_id, self.owner.rate)
        for i in range(0, len(body), self.owner.chunk):
            piece = body[i : i + self.owner.chunk]
            try:
                self.wfile.write(piece)
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                return  # the client cancelled
            self.owner.bytes_sent += len(piece)
            time.sleep(pause)
