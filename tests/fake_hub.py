"""A local HTTP server that plays the Hugging Face hub for huggingface-hub clients (HF_ENDPOINT):
the one fake hub of the test suite (model package, admin API, sidebar in the browser).

It serves repos built from folders on disk, with the hub's metadata where the hub has it:
* `/api/models/{repo}[/revision/{rev}]?blobs=true` lists siblings with sizes, git blob ids and,
  for weight files, LFS records (sha256); `/api/models/{repo}/tree/{rev}[/{path}]` lists files as
  the hub's tree API does; `/api/models?search=` lists repos;
* `/{repo}/resolve/{rev}/{file}` answers HEAD and GET with ETag / X-Repo-Commit headers,
  redirects LFS files to a "CDN" path on another host name (`localhost`, the same server) with
  X-Linked-Etag / X-Linked-Size like the real hub, and honours `Range: bytes=N-[M]` with 206: what
  huggingface-hub's own download code (`hf_hub_download`, `snapshot_download`) needs;
* no Xet: files carry no Xet hash, so huggingface-hub fetches them over plain HTTP;
* unknown repos, revisions and files get 404 with the hub's `X-Error-Code`.

Knobs a test can turn while it runs: `rate` (bytes per second per file body, None for full speed;
`rates` per repo) so that a download lasts long enough to watch or cancel; `cut_after[name] = n`
(the next GET of `name` sends its headers and only `n` bytes, then drops the connection) and
`corrupt` (files whose bytes are altered in flight), `gated` (repos answered 403 GatedRepo, as the
hub answers a gated repo whose terms were not accepted).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import threading
import time
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

    def lfs_pointer(self, name: str) -> bytes:
        data = self.files[name]
        return (
            "version https://git-lfs.github.com/spec/v1\n"
            f"oid sha256:{hashlib.sha256(data).hexdigest()}\nsize {len(data)}\n"
        ).encode()

    def blob_id(self, name: str) -> str:
        """The git blob id: of the LFS pointer for a weight file, of the file otherwise."""
        return git_blob_sha1(self.lfs_pointer(name) if self.is_lfs(name) else self.files[name])

    def lfs(self, name: str) -> dict[str, object]:
        data = self.files[name]
        return {
            "sha256": hashlib.sha256(data).hexdigest(),
            "size": len(data),
            "pointerSize": len(self.lfs_pointer(name)),
        }

    def etag(self, name: str) -> str:
        """What the hub sends as ETag: sha256 for LFS files, the git blob sha1 otherwise."""
        return (
            hashlib.sha256(self.files[name]).hexdigest()
            if self.is_lfs(name)
            else self.blob_id(name)
        )


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
    rate: float | None = None  # bytes/s per file body; None: as fast as the socket takes it
    rates: dict[str, float] = field(default_factory=dict)  # repo id -> its own rate
    cut_after: dict[str, int] = field(default_factory=dict)
    corrupt: set[str] = field(default_factory=set)
    gated: set[str] = field(default_factory=set)  # repo ids whose terms the caller has not accepted
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

    @property
    def bytes_sent(self) -> int:
        return sum(self.body_bytes.values())

    def total_bytes(self, repo_id: str) -> int:
        return sum(len(data) for data in self.repos[repo_id].files.values())

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
            entry.update(size=len(data), blobId=repo.blob_id(name))
            if repo.is_lfs(name):
                entry["lfs"] = repo.lfs(name)
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
        "createdAt": "2025-01-01T00:00:00.000Z",
        "lastModified": "2025-01-01T00:00:00.000Z",
        "siblings": siblings,
        "usedStorage": sum(len(data) for data in repo.files.values()),
    }


def _tree(repo: Repo, prefix: str) -> list[dict[str, object]]:
    items: list[dict[str, object]] = []
    for name, data in repo.files.items():
        if prefix and not name.startswith(prefix + "/"):
            continue
        item: dict[str, object] = {
            "type": "file",
            "oid": repo.blob_id(name),
            "size": len(data),
            "path": name,
        }
        if repo.is_lfs(name):
            lfs = repo.lfs(name)
            item["lfs"] = {
                "oid": lfs["sha256"],
                "size": lfs["size"],
                "pointerSize": lfs["pointerSize"],
            }
        items.append(item)
    return items


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
            repo = self._repo(m.group(1), m.group(2))
            if repo is not None:
                self._json(_info(repo, query.get("blobs", ["false"])[0].lower() == "true"))
            return None
        m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?", path)
        if m:
            repo = self._repo(m.group(1), m.group(2))
            if repo is not None:
                self._json(_tree(repo, (m.group(3) or "").strip("/")))
            return None
        m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if m:
            repo = self._repo(m.group(1), m.group(2))
            if repo is None:
                return None
            name = m.group(3)
            if name not in repo.files:
                return self._missing("EntryNotFound", f"{name} not found")
            if repo.is_lfs(name):  # the hub redirects LFS files to its CDN
                # on another host, as the hub's CDN is: huggingface-hub follows redirects within
                # the hub only, so it reads the file's metadata from the X-Linked-* headers here
                port = self.server.server_address[1]
                return self._send(
                    302,
                    b"",
                    {
                        "Location": f"http://localhost:{port}/cdn/{repo.id}/{repo.sha}/{name}",
                        "X-Repo-Commit": repo.sha,
                        "X-Linked-Size": str(len(repo.files[name])),
                        "X-Linked-Etag": f'"{repo.etag(name)}"',
                    },
                )
            return self._file(repo, name)
        m = re.fullmatch(r"/cdn/([^/]+/[^/]+)/([0-9a-f]+)/(.+)", path)
        if m and m.group(1) in repos and m.group(3) in repos[m.group(1)].files:
            return self._file(repos[m.group(1)], m.group(3))
        return self._missing("EntryNotFound", f"no route {path}")

    def _repo(self, repo_id: str, revision: str | None) -> Repo | None:
        """The repo, or None once a 404 has been sent."""
        repo = self.owner.repos.get(repo_id)
        if repo_id in self.owner.gated:
            message = f"Access to model {repo_id} is restricted: you must accept its conditions"
            body = json.dumps({"error": message}).encode()
            headers = {"X-Error-Code": "GatedRepo", "X-Error-Message": message}
            self._send(403, body, {"Content-Type": "application/json", **headers})
            return None
        if repo is None:
            self._missing("RepoNotFound", f"Repository {repo_id} not found")
        elif revision not in (None, "main", repo.sha):
            self._missing("RevisionNotFound", f"Invalid rev id: {revision}")
            return None
        return repo

    def _file(self, repo: Repo, name: str) -> None:
        owner = self.owner
        owner.served.append(owner.requests[-1])
        data = repo.files[name]
        if name in owner.corrupt:
            data = bytes(b ^ 0xFF if i == len(data) // 2 else b for i, b in enumerate(data))
        status, start, end = 200, 0, len(data)
        rng = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if rng:
            status, start = 206, int(rng.group(1))
            end = int(rng.group(2)) + 1 if rng.group(2) else len(data)
        body = data[start:end]
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{start + len(body) - 1}/{len(data)}")
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{repo.etag(name)}"')
        self.send_header("X-Repo-Commit", repo.sha)
        self.end_headers()
        if self.command == "HEAD":
            return
        limit = owner.cut_after.pop(name, None)
        sent = 0
        for i in range(0, len(body), owner.chunk):
            piece = body[i : i + owner.chunk]
            if limit is not None and sent + len(piece) > limit:
                piece = piece[: limit - sent]
            try:
                self.wfile.write(piece)
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                return  # the client cancelled
            sent += len(piece)
            owner.body_bytes[name] = owner.body_bytes.get(name, 0) + len(piece)
            if limit is not None and sent >= limit:
                self.close_connection = True
                self.connection.shutdown(2)  # drop the connection mid-body
                return
            rate = owner.rates.get(repo.id, owner.rate)
            if rate:  # trickle: a download spans several progress events, or can be cancelled
                time.sleep(len(piece) / rate)
