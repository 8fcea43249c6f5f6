"""Weights registry and downloads, against a loopback HTTP server (never the real network)."""
import hashlib
import io
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from metricslam import weights
from metricslam.cli import main
from metricslam.depth.models.metric3d import VARIANTS
from metricslam.errors import WeightsError
from spec_keys import METRIC3D_SPEC_FILES, VIT_TRAINING_ONLY_KEY, read_spec, spec_bytes


def checkpoint_bytes() -> bytes:
    buffer = io.BytesIO()
    torch.save({"model_state_dict": {"w": torch.arange(20000, dtype=torch.float32)}}, buffer)
    return buffer.getvalue()


class Server:
    """Serves ``files`` on 127.0.0.1 with HTTP Range support; ``cut_after`` truncates the next transfer."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.cut_after: int | None = None
        self.honour_range = True
        self.ranges: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                rng = self.headers.get("Range")
                server.ranges.append(rng)
                start = 0
                if rng and server.honour_range:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                part = body[start:]
                self.send_header("Content-Length", str(len(part)))
                self.end_headers()
                if server.cut_after is not None:
                    part, server.cut_after = part[: server.cut_after], None
                    self.wfile.write(part)
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(part)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{name}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def server():
    payload = checkpoint_bytes()
    s = Server({"/ckpt.pth": payload, "/error.html": b"<html>quota exceeded</html>"})
    s.payload = payload
    yield s
    s.close()


def make_entry(server, name="/ckpt.pth", size=None, sha=None):
    return weights.WeightsEntry(name="tiny", file="tiny.pth", url=server.url(name), licence="BSD-2-Clause",
                                source="test", kind="metric3d", size=size, sha256=sha)


def test_download_resumes_after_interrupted_transfer(cache, server):
    payload = server.payload
    e = make_entry(server, size=len(payload), sha=hashlib.sha256(payload).hexdigest())
    half = len(payload) // 2
    server.cut_after = half
    with pytest.raises(WeightsError) as err:
        weights.download(e, progress=False, timeout=5)
    assert "\n" not in str(err.value) and "resume" in str(err.value)
    part = cache / "tiny.pth.part"
    assert part.stat().st_size == half and not (cache / "tiny.pth").exists()

    path = weights.download(e, progress=False, timeout=5)
    assert server.ranges == [None, f"bytes={half}-"]
    assert path == cache / "tiny.pth" and path.read_bytes() == payload and not part.exists()
    assert torch.load(path, weights_only=True)["model_state_dict"]["w"][-1] == 19999
    # Already cached: no new request.
    assert weights.download(e, progress=False) == path and len(server.ranges) == 2


def test_server_ignoring_range_restarts_the_file(cache, server):
    e = make_entry(server, size=len(server.payload))
    (cache).mkdir(parents=True)
    (cache / "tiny.pth.part").write_bytes(b"garbage that is not the start of the file")
    server.honour_range = False
    path = weights.download(e, progress=False, timeout=5)
    assert path.read_bytes() == server.payload


def test_size_and_sha_mismatch_are_detected_and_removed(cache, server):
    payload = server.payload
    with pytest.raises(WeightsError, match="bytes but 'tiny' has") as err:
        weights.download(make_entry(server, size=len(payload) + 10), progress=False, timeout=5)
    assert "\n" not in str(err.value)
    assert not (cache / "tiny.pth").exists() and not (cache / "tiny.pth.part").exists()

    with pytest.raises(WeightsError, match="sha256") as err:
        weights.download(make_entry(server, size=len(payload), sha="0" * 64), progress=False, timeout=5)
    assert "\n" not in str(err.value)
    assert not (cache / "tiny.pth").exists() and not (cache / "tiny.pth.part").exists()


@pytest.mark.parametrize("offset", [-1000, 1000])
def test_a_matching_digest_wins_over_a_wrong_recorded_size(cache, server, offset):
    payload = server.payload
    e = make_entry(server, size=len(payload) + offset, sha=hashlib.sha256(payload).hexdigest())
    path = weights.download(e, progress=False, timeout=5)
    assert path.read_bytes() == payload


def test_partial_file_as_long_as_a_wrong_recorded_size_is_resumed(cache, server):
    payload = server.payload
    half = len(payload) // 2
    cache.mkdir(parents=True)
    (cache / "tiny.pth.part").write_bytes(payload[:half])
    # Trusting the recorded size would take this half file as complete, fail the digest and delete it, every run.
    e = make_entry(server, size=half, sha=hashlib.sha256(payload).hexdigest())
    path = weights.download(e, progress=False, timeout=5)
    assert server.ranges == [f"bytes={half}-"] and path.read_bytes() == payload


def test_digest_mismatch_names_the_file_and_both_fixes(cache, server):
    e = make_entry(server, size=len(server.payload), sha="0" * 64)
    with pytest.raises(WeightsError) as err:
        weights.download(e, progress=False, timeout=5)
    msg = str(err.value)
    assert "\n" not in msg and str(cache / "tiny.pth") in msg and "sha256" in msg
    assert "metricslam weights download tiny" in msg and e.url in msg and "--weights PATH" in msg
    assert not any(cache.iterdir())


def test_error_page_instead_of_checkpoint_is_rejected(cache, server):
    with pytest.raises(WeightsError, match="not a readable checkpoint"):
        weights.download(make_entry(server, "/error.html"), progress=False, timeout=5)
    assert not any(cache.iterdir())


def test_offline_error_is_one_line_with_url_and_cache_path(cache, server):
    e = make_entry(server)
    server.close()
    with pytest.raises(WeightsError) as err:
        weights.download(e, progress=False, timeout=2)
    msg = str(err.value)
    assert "\n" not in msg and e.url in msg and str(cache / "tiny.pth") in msg and "--weights PATH" in msg
    empty = Server({})
    try:
        with pytest.raises(WeightsError, match="HTTP 404"):
            weights.download(make_entry(empty, "/missing.pth"), progress=False, timeout=5)
    finally:
        empty.close()


def test_path_and_resolve_weights(cache, tmp_path):
    with pytest.raises(WeightsError) as err:
        weights.path("vit_small")
    msg = str(err.value)
    assert "\n" not in msg and "metricslam weights download vit_small" in msg
    assert "https://huggingface.co/JUGGHM/Metric3D/resolve/main/metric_depth_vit_small_800k.pth" in msg
    assert str(cache / "metric_depth_vit_small_800k.pth") in msg

    cache.mkdir(parents=True)
    cached = cache / "metric_depth_vit_small_800k.pth"
    cached.write_bytes(b"x")
    assert weights.path("vit_small") == cached
    assert weights.resolve_weights("vit_small") == cached
    assert weights.resolve_weights("metric_depth_vit_small_800k.pth") == cached
    own = tmp_path / "anything.bin"
    own.write_bytes(b"y")
    assert weights.resolve_weights(own) == own  # an existing path always works
    with pytest.raises(WeightsError, match="weights file not found"):
        weights.resolve_weights(tmp_path / "nope.pth")
    with pytest.raises(WeightsError, match="unknown weights"):
        weights.path("nope")


def test_registry_lists_official_files():
    reg = weights.registry()
    for variant, info in VARIANTS.items():
        e = reg[variant]
        assert e.file == info.checkpoint and e.variant == variant and e.licence == "BSD-2-Clause"
        assert e.url == f"https://huggingface.co/JUGGHM/Metric3D/resolve/main/{info.checkpoint}"
        assert weights.variant_for_file(f"/somewhere/{info.checkpoint}") == variant
    assert reg["droid"].file == "droid.pth" and reg["droid"].licence == "BSD-3-Clause"
    assert reg["vit_small"].size == 150120967
    assert weights.variant_for_file("droid.pth") is None


def test_recorded_sizes_and_digests_are_plausible():
    """A recorded size is the spec's tensor bytes plus the pickle's per-tensor overhead (about 400 bytes a tensor
    in the files whose size is certain), so a mistyped size or one of another file fails here."""
    reg = weights.registry()
    for e in reg.values():
        assert e.sha256 is None or (len(e.sha256) == 64 and set(e.sha256) <= set("0123456789abcdef")), e.name
        assert e.sha256 is None or e.size is not None, e.name
    recorded = [v for v in METRIC3D_SPEC_FILES if reg[v].size is not None]
    assert {"convnext_tiny", "convnext_large", "vit_small", "vit_large"} <= set(recorded)
    for variant in recorded:
        spec = read_spec(METRIC3D_SPEC_FILES[variant])
        spec.pop(VIT_TRAINING_ONLY_KEY, None)  # not in the released files
        overhead = reg[variant].size - spec_bytes(spec)
        assert 300 * len(spec) < overhead < 500 * len(spec), (variant, overhead / len(spec))


def test_unwrap_state_dict_layouts():
    sd = {"module.a": torch.zeros(1), "b": torch.ones(2)}
    for obj in ({"model_state_dict": sd, "optimizer": {}}, {"state_dict": sd}, sd):
        assert set(weights.unwrap_state_dict(obj)) == {"a", "b"}
    with pytest.raises(WeightsError, match="does not hold a model state dict"):
        weights.unwrap_state_dict({"epoch": 3})


def test_weights_cli(cache, capsys):
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert "vit_small" in out and "droid" in out and str(cache) in out
    assert main(["weights", "path", "convnext_tiny"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "convtiny_hourglass_v1.pth" in err
