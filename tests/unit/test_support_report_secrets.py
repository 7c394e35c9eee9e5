"""`kubectl tidemark report` lists Secrets as metadata only, with the kubernetes client in
use (36.x and 37.x both: 36's generated list call overwrites a per-call Accept header with
application/json, which would bring the Secrets' data; 37's ApiClient.call_api lost
`query_params`). A local HTTP server plays the API server and records what it was asked."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from kubernetes import client

from tidemark_cli.kube_target import Target
from tidemark_cli.support_report import PARTIAL_METADATA, secret_names

pytestmark = pytest.mark.unit


@pytest.fixture
def apiserver() -> Iterator[tuple[Target, list[dict[str, Any]], dict[str, str]]]:
    """A Target on a fake API server; the requests it got; what it answers (kind)."""
    seen: list[dict[str, Any]] = []
    answer = {"kind": ""}

    class Api(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            accept = self.headers.get("Accept", "")
            seen.append({"path": self.path, "accept": accept, "auth": self.headers.get("Authorization")})
            meta = answer["kind"] or ("PartialObjectMetadataList" if "as=PartialObjectMetadataList" in accept
                                      else "SecretList")
            item = {"metadata": {"name": "n"}} if meta != "SecretList" else {"metadata": {"name": "n"},
                                                                              "data": {"k": "czNjcjN0"}}
            body = json.dumps({"kind": meta, "apiVersion": "meta.k8s.io/v1", "metadata": {},
                               "items": [{"metadata": {"name": "z"}}, item]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    cfg = client.Configuration()
    cfg.host = f"http://127.0.0.1:{server.server_port}"
    cfg.api_key, cfg.api_key_prefix = {"BearerToken": "tok"}, {"BearerToken": "Bearer"}
    try:
        yield Target(client.ApiClient(cfg), "ns1"), seen, answer
    finally:
        server.shutdown()
        server.server_close()


def test_secret_names_asks_for_metadata_only_with_the_selector(apiserver: Any) -> None:
    target, seen, _ = apiserver
    assert secret_names(target, ("labelSelector", "tidemark.dev/cluster=demo")) == ["n", "z"]
    assert secret_names(target, ("fieldSelector", "metadata.name=demo-extra")) == ["n", "z"]
    asked = [(urlsplit(s["path"]).path, parse_qsl(urlsplit(s["path"]).query)) for s in seen]
    assert asked == [("/api/v1/namespaces/ns1/secrets", [("labelSelector", "tidemark.dev/cluster=demo")]),
                     ("/api/v1/namespaces/ns1/secrets", [("fieldSelector", "metadata.name=demo-extra")])]
    assert all(s["accept"] == PARTIAL_METADATA and s["auth"] == "Bearer tok" for s in seen)
    # the target's own client is left as it was: its other calls still get typed objects
    assert "Accept" not in target.api.default_headers


def test_secret_names_refuses_an_answer_that_is_not_metadata(apiserver: Any) -> None:
    target, _, answer = apiserver
    answer["kind"] = "SecretList"
    with pytest.raises(ValueError, match="SecretList"):
        secret_names(target, ("labelSelector", "a=b"))
