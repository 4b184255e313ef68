"""A local HTTP server that plays the Hugging Face hub for huggingface-hub clients (HF_ENDPOINT).

It serves repos built from folders on disk, with the hub's metadata where the hub has it:
`/api/models/{repo}[/revision/{rev}]?blobs=true` lists siblings with sizes, git blob ids and, for
safetensors files, LFS records (sha256); `/{repo}/resolve/{rev}/{file}` answers HEAD and GET with
ETag / X-Repo-Commit headers, redirects LFS files to a "CDN" path like the real hub, and honours
`Range: bytes=N-` with 206. `/api/models?search=` lists repos. Unknown repos get 404 with
`X-Error-Code: RepoNotFound`.

Faults a test can switch on: `cut_after[name] = n` (the next GET of `name` sends its headers and
only `n` bytes, then drops the connection) and `corrupt` (files whose bytes are altered in flight).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    id: str
    files: dict[str, bytes]
    sha: str = ""

    def __post_init__(self) -> None:
        h = hashlib.sha1()
        for name in sorted(self.files):
            h.update(name.encode() + b"\0" + self.files[name])
        self.sha = h.hexdigest()

    @staticmethod
    def from_folder(repo_id: str, folder: Path) -> Repo:
        files = {
            p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*"))
            if p.is_file()
        }
        return Repo(repo_id, files)

    def is_lfs(self, name: str) -> bool:
        return name.endswith((".safetensors", ".gguf", ".bin"))


@dataclass
class Request:
    method: str
    path: str
    range: str | None
    query: str = ""


@dataclass
class FakeHub:
    repos: dict[str, Repo] = field(default_factory=dict)
    chunk: int = 64 * 1024
    cut_after: dict[str, int] = field(default_factory=dict)
    corrupt: set[str] = field(default_factory=set)
    requests: list[Request] = field(default_factory=list)
    served: list[Request] = field(default_factory=list)  # the requests that got a file body
    body_bytes: dict[str, int] = field(default_factory=dict)  # file name -> body bytes sent
    _server: ThreadingHTTPServer | None = None

    def add(self, repo: Repo) -> Repo:
        self.repos[repo.id] = repo
        return repo

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def gets(self, name: str) -> list[Request]:
        """GETs that were answered with (part of) the file `name`, redirects not counted."""
        return [r for r in self.served if r.method == "GET" and r.path.endswith("/" + name)]

    def start(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            owner = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="fake-hub", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _info(repo: Repo, blobs: bool) -> dict[str, object]:
    siblings = []
    for name, data in repo.files.items():
        entry: dict[str, object] = {"rfilename": name}
        if blobs:
            entry["size"] = len(data)
            if repo.is_lfs(name):
                pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{hashlib.sha256(data).hexdigest()}\nsize {len(data)}\n"
                entry["blobId"] = git_blob_sha1(pointer.encode())
                entry["lfs"] = {
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "size": len(data),
                    "pointerSize": len(pointer),
                }
            else:
                entry["blobId"] = git_blob_sha1(data)
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
        "downloads": 7,
        "likes": 1,
        "library_name": "mlx",
        "tags": ["mlx", "safetensors"],
        "pipeline_tag": "text-generation",
        "lastModified": "2025-01-01T00:00:00.000Z",
        "siblings": siblings,
    }


class _Handler(BaseHTTPRequestHandler):
    owner: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def handle(self) -> None:
        # the client went away (a cancelled download): nothing to answer
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            super().handle()

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj: object) -> None:
        self._send(200, json.dumps(obj).encode(), {"Content-Type": "application/json"})

    def _missing(self, code: str, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        self._send(
            404,
            body,
            {"Content-Type": "application/json", "X-Error-Code": code, "X-Error-Message": message},
        )

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        url = urlparse(self.path)
        path = unquote(url.path)
        query = parse_qs(url.query)
        self.owner.requests.append(
            Request(self.command, path, self.headers.get("Range"), url.query)
        )
        repos = self.owner.repos
        if path == "/api/models":
            terms = " ".join(query.get("search", [""])).lower()
            return self._json([_info(r, False) for r in repos.values() if terms in r.id.lower()])
        m = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", path)
        if m:
            repo = repos.get(m.group(1))
            if repo is None:
                return self._missing("RepoNotFound", f"Repository {m.group(1)} not found")
            if m.group(2) not in (None, "main", repo.sha):
                return self._missing("RevisionNotFound", f"Invalid rev id: {m.group(2)}")
            return self._json(_info(repo, query.get("blobs", ["false"])[0].lower() == "true"))
        m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if m:
            repo = repos.get(m.group(1))
            if repo is None:
                return self._missing("RepoNotFound", f"Repository {m.group(1)} not found")
            name = m.group(3)
            if name not in repo.files:
                return self._missing("EntryNotFound", f"{name} not found")
            if repo.is_lfs(name):  # the hub redirects LFS files to its CDN
                self.send_response(302)
                self.send_header("Location", f"/cdn/{repo.id}/{repo.sha}/{name}")
                self.send_header("X-Repo-Commit", repo.sha)
                self.send_header("X-Linked-Size", str(len(repo.files[name])))
                self.send_header(
                    "X-Linked-Etag", f'"{hashlib.sha256(repo.files[name]).hexdigest()}"'
                )
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            return self._file(repo, name)
        m = re.fullmatch(r"/cdn/([^/]+/[^/]+)/([0-9a-f]+)/(.+)", path)
        if m and m.group(1) in repos and m.group(3) in repos[m.group(1)].files:
            return self._file(repos[m.group(1)], m.group(3))
        return self._missing("EntryNotFound", f"no route {path}")

    def _file(self, repo: Repo, name: str) -> None:
        self.owner.served.append(self.owner.requests[-1])
        data = repo.files[name]
        if name in self.owner.corrupt:
            data = bytes(b ^ 0xFF if i == len(data) // 2 else b for i, b in enumerate(data))
        start = 0
        rng = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        status = 200
        if rng:
            start, status = int(rng.group(1)), 206
        body = data[start:]
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        etag = hashlib.sha256(data).hexdigest() if repo.is_lfs(name) else git_blob_sha1(data)
        self.send_header("ETag", f'"{etag}"')
        self.send_header("X-Repo-Commit", repo.sha)
        self.end_headers()
        if self.command == "HEAD":
            return
        limit = self.owner.cut_after.pop(name, None)
        sent = 0
        for i in range(0, len(body), self.owner.chunk):
            piece = body[i : i + self.owner.chunk]
            if limit is not None and sent + len(piece) > limit:
                piece = piece[: limit - sent]
            try:
                self.wfile.write(piece)
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                return
            sent += len(piece)
            self.owner.body_bytes[name] = self.owner.body_bytes.get(name, 0) + len(piece)
            if limit is not None and sent >= limit:
                self.close_connection = True
                self.connection.shutdown(2)  # drop the connection mid-body
                return
