"""A local stand-in for the Hugging Face hub's upload API: the endpoints huggingface_hub's
create_repo, preupload and create_commit call (every file "regular", so its bytes come inside the
commit), recording what it receives. Tests point HF_ENDPOINT at it: the real client, real HTTP,
no network."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Hub:
    def __init__(self):
        self.repos, self.files, self.calls, self.cards = {}, {}, [], []
        hub = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, obj, code=200):
                raw = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self):
                hub.calls.append(("GET", self.path))
                self._send({"error": "not here"}, 404)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                hub.calls.append(("POST", self.path))
                base = f"http://{self.headers['Host']}"
                if self.path == "/api/repos/create":
                    req = json.loads(body)
                    name = f"{req.get('organization') or 'user'}/{req['name']}"
                    hub.repos[name] = req
                    return self._send({"url": f"{base}/{name}", "name": name})
                if self.path == "/api/validate-yaml":  # the card's metadata, checked by the hub
                    hub.cards.append(json.loads(body))
                    return self._send({"errors": [], "warnings": []})
                if "/preupload/" in self.path:
                    req = json.loads(body)
                    modes = [
                        {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                        for f in req["files"]
                    ]
                    return self._send({"files": modes})
                if "/commit/" in self.path:
                    repo = self.path.split("/api/models/")[1].split("/commit/")[0]
                    for line in body.decode().splitlines():
                        item = json.loads(line)
                        if item.get("key") == "file":
                            v = item["value"]
                            hub.files[(repo, v["path"])] = base64.b64decode(v["content"])
                    done = {"commitUrl": f"{base}/{repo}/commit/0", "commitOid": "0" * 40}
                    return self._send({**done, "success": True})
                self._send({"error": "unknown"}, 404)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
