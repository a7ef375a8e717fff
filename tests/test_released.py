"""The released weights in three lines, end to end against a local stand-in of the Hub (never the network).

The stand-in serves official-layout checkpoints built here on 127.0.0.1 the way the Hub serves files to
huggingface_hub (`HEAD`/`GET /{repo}/resolve/{revision}/{file}`, `X-Repo-Commit` and `ETag` headers); the code under
test runs in fresh processes pointed at it with `HF_ENDPOINT`, with a cache of their own (`HF_HOME`).
"""

import hashlib
import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
import torch
from PIL import Image
from test_hub import write_released_checkpoint

import segvit_hf
from segvit_hf import SegViTForSemanticSegmentation, SegViTImageProcessor
from segvit_hf.conversion import convert_official_checkpoint
from segvit_hf.hub import HubUnreachableError
from segvit_hf.inference import predict
from segvit_hf.released import RELEASED_REPO_ID, load_released

_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<filename>.+)$")


class LocalHub:
    """
    Files of Hub repositories served on the loopback address as the Hub serves them to `hf_hub_download`: 200 with
    `X-Repo-Commit`, `ETag` and `Content-Length` (HEAD and GET), 404 with the Hub's `X-Error-Code` otherwise. Every
    request is recorded as `(method, path, authorization header)`.
    """

    def __init__(self):
        self.commits = {}  # (repo, commit) -> {filename: bytes}
        self.refs = {}  # (repo, branch or tag) -> commit
        self.requests = []

    def add_commit(self, repo: str, files: dict[str, bytes], revision: str = "main") -> str:
        content = b"".join(name.encode() + hashlib.sha256(data).digest() for name, data in sorted(files.items()))
        commit = hashlib.sha1(revision.encode() + content).hexdigest()
        self.commits[(repo, commit)] = dict(files)
        self.refs[(repo, revision)] = commit
        return commit

    def gets(self, filename: str) -> int:
        return sum(method == "GET" and path.endswith("/" + filename) for method, path, _ in self.requests)

    def _answer(self, handler: BaseHTTPRequestHandler, with_body: bool) -> None:
        self.requests.append((handler.command, handler.path, handler.headers.get("Authorization")))
        match = _RESOLVE.match(handler.path.split("?")[0])
        if match is None:
            return self._error(handler, "RepoNotFound")
        repo, revision, filename = match["repo"], unquote(match["revision"]), unquote(match["filename"])
        commit = self.refs.get((repo, revision), revision)
        if (repo, commit) not in self.commits:
            known_repo = any(key[0] == repo for key in self.refs)
            return self._error(handler, "RevisionNotFound" if known_repo else "RepoNotFound")
        data = self.commits[(repo, commit)].get(filename)
        if data is None:
            return self._error(handler, "EntryNotFound")
        handler.send_response(200)
        handler.send_header("X-Repo-Commit", commit)
        handler.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        handler.send_header("Content-Length", str(len(data)))
        handler.send_header("Content-Type", "application/octet-stream")
        handler.end_headers()
        if with_body:
            handler.wfile.write(data)

    @staticmethod
    def _error(handler: BaseHTTPRequestHandler, code: str) -> None:
        handler.send_response(404)
        handler.send_header("X-Error-Code", code)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    def __enter__(self) -> "LocalHub":
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_HEAD(self):
                hub._answer(self, with_body=False)

            def do_GET(self):
                hub._answer(self, with_body=True)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.server.shutdown()
        self.server.server_close()


def released_file(tmp_path: Path, name: str, seed: int) -> bytes:
    """The official-layout file of the released model `name` at a tiny width (random weights), as bytes."""
    directory = tmp_path / f"release-{seed}"
    directory.mkdir()
    write_released_checkpoint(directory, name, seed=seed)
    return next(directory.iterdir()).read_bytes()


def run_python(arguments: list[str], hub: LocalHub, home: Path, offline: bool = False) -> subprocess.CompletedProcess:
    """`python ARGUMENTS` in a fresh process that reaches the Hub only through `hub`, with `home` as HF_HOME."""
    source = str(Path(segvit_hf.__file__).parents[1])
    environment = {
        **os.environ,
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(home),
        "HF_HUB_OFFLINE": "1" if offline else "0",
        "NO_PROXY": "127.0.0.1,localhost",
        "PYTHONPATH": os.pathsep.join([source, os.environ.get("PYTHONPATH", "")]),
    }
    for name in ("HF_HUB_CACHE", "HF_ASSETS_CACHE", "TRANSFORMERS_OFFLINE"):
        environment.pop(name, None)
    completed = subprocess.run(
        [sys.executable, *arguments], capture_output=True, text=True, env=environment, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed


LIBRARY_CHECK = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import torch
    from PIL import Image
    from transformers import pipeline
    from segvit_hf.released import download_released, load_released

    # The README's snippet, as written.
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8))
    namespace = {"image": image}
    exec(sys.argv[2], namespace)
    segments = namespace["segments"]
    model, processor = load_released("ade20k-vit-b", token="hf_local_test")
    pixel_values = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.save(model(pixel_values=pixel_values).masks_queries_logits, sys.argv[1])
    print(json.dumps({
        "directory": str(download_released("ade20k-vit-b")),
        "directory_v2": str(download_released("ade20k-vit-b", revision="v2")),
        "training": model.training,
        "size": dict(processor.size),
        "reduce_labels": processor.do_reduce_labels,
        "segments": sorted(segment["label"] for segment in segments),
        "mask_size": segments[0]["mask"].size,
    }))
    """
)


@pytest.fixture
def hub(tmp_path):
    with LocalHub() as local_hub:
        yield local_hub


def test_load_released_downloads_converts_and_caches(hub, tmp_path):
    main_file = released_file(tmp_path, "ade20k-vit-b", seed=0)
    v2_file = released_file(tmp_path, "ade20k-vit-b", seed=1)
    commit = hub.add_commit(RELEASED_REPO_ID, {"ade_51.3.pth": main_file})
    v2_commit = hub.add_commit(RELEASED_REPO_ID, {"ade_51.3.pth": v2_file}, revision="v2")
    (tmp_path / "check.py").write_text(LIBRARY_CHECK)
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", readme.split("The authors' released weights", 1)[1], re.S).group(1)
    assert "load_released(" in snippet
    completed = run_python([str(tmp_path / "check.py"), str(tmp_path / "logits.pt"), snippet], hub, tmp_path / "home")
    report = json.loads(completed.stdout.strip().splitlines()[-1])

    # Converted once per commit, into the assets cache; the second call of the same revision downloads nothing.
    directory, directory_v2 = Path(report["directory"]), Path(report["directory_v2"])
    assert directory.name == commit and directory_v2.name == v2_commit
    assert (tmp_path / "home" / "assets") in directory.parents
    assert {path.name for path in directory.iterdir()} >= {
        "config.json", "model.safetensors", "preprocessor_config.json"
    }
    assert hub.gets("ade_51.3.pth") == 2  # main once, v2 once
    assert any(authorization == "Bearer hf_local_test" for _, _, authorization in hub.requests)

    # The model is the authors' file converted: the same logits as converting it here, in eval mode, with the
    # preset's processor, and the pipeline gives masks at the image's size.
    (tmp_path / "main.pth").write_bytes(main_file)
    expected = convert_official_checkpoint(tmp_path / "main.pth", preset="ade20k-vit-b")
    pixel_values = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(
            torch.load(tmp_path / "logits.pt"), expected(pixel_values=pixel_values).masks_queries_logits
        )
    assert report["training"] is False
    assert report["size"] == {"shortest_edge": 512, "longest_edge": 2048} and report["reduce_labels"] is True
    assert report["segments"] and report["mask_size"] == [60, 40]
    v2_model = SegViTForSemanticSegmentation.from_pretrained(directory_v2)
    assert not torch.equal(v2_model.decode_head.class_queries.weight, expected.decode_head.class_queries.weight)


def test_the_command_line_downloads_then_predicts_offline(hub, tmp_path):
    hub.add_commit(RELEASED_REPO_ID, {"ade_51.3.pth": released_file(tmp_path, "ade20k-vit-b", seed=0)})
    home = tmp_path / "home"
    printed = run_python(["-m", "segvit_hf.cli", "download", "ade20k-vit-b"], hub, home).stdout
    directory = Path(printed.strip().splitlines()[-1].split(": ", 1)[1])
    assert (directory / "model.safetensors").is_file()

    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (30, 40, 3), dtype=np.uint8))
    image.save(tmp_path / "street.png")
    requests_before = len(hub.requests)
    run_python(
        ["-m", "segvit_hf.cli", "predict", str(tmp_path / "street.png"), "--model", "ade20k-vit-b", "--out",
         str(tmp_path / "out"), "--threads", "1"],
        hub, home, offline=True,
    )
    assert len(hub.requests) == requests_before  # offline: the converted model came from the cache
    model = SegViTForSemanticSegmentation.from_pretrained(directory)
    processor = SegViTImageProcessor.from_pretrained(directory)
    with Image.open(tmp_path / "out" / "street_labels.png") as labels:
        np.testing.assert_array_equal(np.array(labels), predict(model, processor, image).numpy())


def test_uncached_offline_says_so_promptly(tmp_path):
    started = time.perf_counter()
    with pytest.raises(HubUnreachableError, match="ade_51.3.pth of 'Akide/SegViTv1' is not in the local Hugging Face "
                       "cache and offline mode is on"):
        load_released("ade20k-vit-b", cache_dir=tmp_path)
    assert time.perf_counter() - started < 5
    assert not any(tmp_path.rglob("config.json"))


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="Unknown SegViT preset 'ade20k-vit-h'"):
        load_released("ade20k-vit-h")
