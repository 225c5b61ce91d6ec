"""A small stand-in for the Hugging Face Hub's upload API on 127.0.0.1, for push tests (there is no
network here): it answers repo creation, README metadata validation, preupload (LFS for model
weights, regular for the rest), the LFS batch call and the object PUT, and the commit; and it
records every request so a test can check the files, their bytes and the private flag."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LFS_SUFFIXES = (".safetensors", ".gguf", ".model", ".bin", ".zip")


@dataclass
class Recorded:
    """What the Hub saw."""

    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # method, path, auth
    created: list[dict] = field(default_factory=list)  # /api/repos/create bodies
    lfs: dict[str, bytes] = field(default_factory=dict)  # sha256 -> uploaded bytes
    commits: list[list[dict]] = field(default_factory=list)  # ndjson lines of each commit

    def committed_files(self, commit: int = -1) -> dict[str, bytes]:
        """{path: content} of a commit (regular files decoded, LFS files from their uploads)."""
        out = {}
        for line in self.commits[commit]:
            value = line.get("value") or {}
            if line.get("key") == "file":
                out[value["path"]] = base64.b64decode(value["content"])
            elif line.get("key") == "lfsFile":
                out[value["path"]] = self.lfs[value["oid"]]
        return out


class FakeHub:
    """`with FakeHub() as hub:` serves on `hub.url` until the block ends."""

    def __init__(self, fail_commit: bool = False):
        self.recorded = Recorded()
        self.fail_commit = fail_commit
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                return None

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    data = b""
                    while True:
                        size = int(self.rfile.readline().strip(), 16)
                        if size == 0:
                            self.rfile.readline()
                            return data
                        data += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _reply(self, status: int, obj: object) -> None:
                raw = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_PUT(self) -> None:  # noqa: N802 - http.server's naming
                body = self._body()
                hub.recorded.requests.append(("PUT", self.path, self.headers.get("authorization")))
                match = re.fullmatch(r"/lfs-upload/([0-9a-f]{64})", self.path)
                if not match or hashlib.sha256(body).hexdigest() != match.group(1):
                    self._reply(400, {"error": "bad upload"})
                    return
                hub.recorded.lfs[match.group(1)] = body
                self._reply(200, {})

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self._body()
                path = self.path.split("?")[0]
                hub.recorded.requests.append(("POST", path, self.headers.get("authorization")))
                if path == "/api/repos/create":
                    data = json.loads(body)
                    hub.recorded.created.append(data)
                    repo = f"{data.get('organization')}/{data['name']}"
                    self._reply(200, {"url": f"{hub.url}/{repo}", "name": repo})
                elif path == "/api/validate-yaml":
                    self._reply(200, {"errors": [], "warnings": []})
                elif re.fullmatch(r"/api/models/[^/]+/[^/]+/preupload/main", path):
                    files = json.loads(body)["files"]
                    modes = [
                        {
                            "path": f["path"],
                            "uploadMode": "lfs" if f["path"].endswith(LFS_SUFFIXES) else "regular",
                            "shouldIgnore": False,
                        }
                        for f in files
                    ]
                    self._reply(200, {"files": modes})
                elif re.fullmatch(r"/[^/]+/[^/]+\.git/info/lfs/objects/batch", path):
                    objects = [
                        {
                            "oid": o["oid"],
                            "size": o["size"],
                            "actions": {"upload": {"href": f"{hub.url}/lfs-upload/{o['oid']}"}},
                        }
                        for o in json.loads(body)["objects"]
                    ]
                    self._reply(200, {"transfer": "basic", "objects": objects})
                elif re.fullmatch(r"/api/models/[^/]+/[^/]+/commit/main", path):
                    if hub.fail_commit:
                        self._reply(403, {"error": "You don't have the rights to push here"})
                        return
                    lines = [json.loads(x) for x in body.splitlines() if x.strip()]
                    hub.recorded.commits.append(lines)
                    repo = path.split("/")[3] + "/" + path.split("/")[4]
                    self._reply(
                        200,
                        {
                            "commitUrl": f"{hub.url}/{repo}/commit/{'a' * 40}",
                            "commitOid": "a" * 40,
                            "pullRequestUrl": None,
                        },
                    )
                else:
                    self._reply(404, {"error": f"no route {path}"})

        return Handler
