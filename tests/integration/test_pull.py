"""``toonforge pull`` against a local HTTP server (stdlib, 127.0.0.1, with Range support)
serving test-made official-layout files: a pull with --url/--sha256 and one through the
catalogue's base-URL setting publish a version; a wrong checksum, a cut download, a 404 and
a refused connection each fail with a clear message and leave the store untouched; a
``.part`` holding the first half is resumed (the server sees the Range request)."""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from core.settings import Settings
from model_store.store import ModelStore
from tests.support.checkpoints import make_official_checkpoint
from tests.support.tf_graphs import npz_variables, write_frozen_generator
from worker import pull
from worker.catalogue import get_entry

pytestmark = pytest.mark.local_store_only(
    "pulls into the store directory that --store names")


@dataclass
class Served:
    files: dict[str, bytes] = field(default_factory=dict)
    # (path, Range header or None, bytes sent) per request
    log: list[tuple[str, str | None, int]] = field(default_factory=list)
    url: str = ""

    def requests(self, name: str) -> list[tuple[str, str | None, int]]:
        return [r for r in self.log if r[0].endswith("/" + name)]


def _handler(served: Served) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # quiet
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            mode, _, name = self.path.lstrip("/").partition("/")
            data = served.files.get(name)
            rng = self.headers.get("Range")
            if data is None or mode not in ("files", "cut"):
                self.send_error(404, "Not Found")
                served.log.append((self.path, rng, 0))
                return
            if mode == "cut":  # promises the whole file, sends half, hangs up
                body = data[: len(data) // 2]
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
            elif rng:
                start = int(rng.removeprefix("bytes=").split("-")[0])
                body = data[start:]
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
            else:
                body = data
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            served.log.append((self.path, rng, len(body)))
            if mode == "cut":
                self.close_connection = True

    return Handler


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    made = tmp_path_factory.mktemp("official")
    served = Served()
    for part in make_official_checkpoint("dcgan", made / "dcgan").values():
        served.files[part.name] = part.read_bytes()
    npz = make_official_checkpoint("dctnet", made / "dctnet")[""]
    pb = write_frozen_generator(npz_variables(npz), made / "cartoon_anime_bg.pb")
    served.files[pb.name] = pb.read_bytes()
    served.files["u2netp.pth"] = make_official_checkpoint("u2netp", made / "u2netp")[""] \
        .read_bytes()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(served))
    served.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield served
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def _no_proxies_no_int8(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    # INT8 variants are another issue's tests; here they would only add minutes.
    monkeypatch.setenv("TOONFORGE_INT8_VARIANTS", "0")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run(tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str,
        base_url: str | None = None) -> tuple[int, str, str]:
    settings = Settings(store_dir=tmp_path / "store", data_dir=tmp_path / "data",
                        pull_base_url=base_url, pull_timeout_s=10)
    rc = pull.main([*args, "--no-progress"], settings=settings)
    out, err = capsys.readouterr()
    return rc, out, err


def assert_store_untouched(tmp_path: Path) -> None:
    store = tmp_path / "store"
    assert not store.exists(), "a refused pull must not even create the store"


def test_pull_with_url_and_sha256_publishes(server: Served, tmp_path: Path, capsys) -> None:
    netg, netd = server.files["netg_200.pth"], server.files["netd_200.pth"]
    rc, out, err = run(tmp_path, capsys, "anime-faces", "--activate",
                       "--url", f"{server.url}/files/netg_200.pth",
                       "--url", f"netd={server.url}/files/netd_200.pth",
                       "--sha256", sha(netg), "--sha256", f"netd={sha(netd).upper()}")
    assert rc == 0, err
    assert "pulled anime-faces: imported anime-faces@1 (generate/dcgan, active)" in out
    assert "parity passed" in out and "sha256" in err and "verified" in err
    store = ModelStore(tmp_path / "store")
    manifest = store.manifest("anime-faces", 1)
    assert store.active_version("anime-faces") == 1
    assert manifest.lineage.source == "import"
    assert manifest.lineage.checkpoint == {"netg_200.pth": sha(netg), "netd_200.pth": sha(netd)}
    assert manifest.parity.passed and manifest.parity.rule == "relative"
    # The verified files stay in the cache: a second pull downloads nothing.
    assert (tmp_path / "data" / "downloads" / "netg_200.pth").read_bytes() == netg
    before = len(server.log)
    rc, out, err = run(tmp_path, capsys, "anime-faces", "--model", "faces-2",
                       "--url", f"{server.url}/files/netg_200.pth",
                       "--url", f"netd={server.url}/files/netd_200.pth",
                       "--sha256", sha(netg), "--sha256", f"netd={sha(netd)}")
    assert rc == 0, err
    assert "already downloaded" in err and len(server.log) == before


def test_catalogue_entry_through_the_base_url_resumes_a_part_file(
    server: Served, tmp_path: Path, capsys
) -> None:
    """dctnet-anime (a frozen .pb) from the catalogue, its URL pointed at the local server by
    the base-URL setting; half of the file is already in the cache's .part."""
    data = server.files["cartoon_anime_bg.pb"]
    cache = tmp_path / "data" / "downloads"
    cache.mkdir(parents=True)
    half = len(data) // 2
    (cache / "cartoon_anime_bg.pb.part").write_bytes(data[:half])
    # The test-made graph is not the official file: its digest replaces the pinned one.
    rc, out, err = run(tmp_path, capsys, "dctnet-anime", "--sha256", sha(data),
                       base_url=f"{server.url}/files")
    assert rc == 0, err
    assert "pulled dctnet-anime: imported cartoon@1 (cartoonize/dctnet, inactive)" in out
    assert "resuming at" in err
    (request,) = server.requests("cartoon_anime_bg.pb")
    assert request[1] == f"bytes={half}-" and request[2] == len(data) - half
    assert (cache / "cartoon_anime_bg.pb").read_bytes() == data
    assert not (cache / "cartoon_anime_bg.pb.part").exists()
    manifest = ModelStore(tmp_path / "store").manifest("cartoon", 1)
    assert manifest.lineage.checkpoint == {"cartoon_anime_bg.pb": sha(data)}


def test_wrong_checksum_is_refused(server: Served, tmp_path: Path, capsys) -> None:
    # No --sha256: the catalogue's pinned digest of the official file is checked, and the
    # test-made graph is not that file.
    pinned = get_entry("dctnet-anime").files[0].sha256
    rc, out, err = run(tmp_path, capsys, "dctnet-anime", base_url=f"{server.url}/files")
    assert rc == 1
    assert "checksum mismatch for cartoon_anime_bg.pb" in err and str(pinned) in err
    assert "nothing was imported" in err and "Traceback" not in err
    assert_store_untouched(tmp_path)
    assert list((tmp_path / "data" / "downloads").iterdir()) == []  # nothing kept


def test_cut_download_fails_after_the_tries(server: Served, tmp_path: Path, capsys) -> None:
    data = server.files["u2netp.pth"]
    rc, out, err = run(tmp_path, capsys, "u2netp", "--url", f"{server.url}/cut/u2netp.pth",
                       "--sha256", sha(data))
    assert rc == 1
    assert "was cut off at" in err and f"of {len(data):,} bytes after 3 tries" in err
    assert "resumes" in err and "Traceback" not in err
    assert len(server.requests("u2netp.pth")) >= 3
    assert_store_untouched(tmp_path)
    assert not (tmp_path / "data" / "downloads" / "u2netp.pth").exists()


def test_404_is_refused(server: Served, tmp_path: Path, capsys) -> None:
    rc, out, err = run(tmp_path, capsys, "u2netp", "--url", f"{server.url}/files/gone.pth",
                       "--sha256", "0" * 64)
    assert rc == 1
    assert "answered HTTP 404 Not Found" in err and "/files/gone.pth" in err
    assert_store_untouched(tmp_path)


def test_refused_connection(tmp_path: Path, capsys) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rc, out, err = run(tmp_path, capsys, "u2netp", "--url", f"http://127.0.0.1:{port}/u2netp.pth",
                       "--sha256", "0" * 64)
    assert rc == 1
    assert f"connection to 127.0.0.1:{port} refused" in err and "Traceback" not in err
    assert_store_untouched(tmp_path)


@pytest.mark.parametrize(("args", "message"), [
    (["u2netp"], "has no published sha256"),
    (["u2netp", "--sha256", "abc"], "is not a sha256"),
    (["u2netp", "--sha256", "0" * 64, "--url", "file:///etc/passwd"], "not an http(s) URL"),
    (["resnet50"], "no catalogue entry 'resnet50'; known: dctnet-anime"),
    (["u2netp", "--sha256", "0" * 64, "--model", "Bad/Name"], "invalid model name"),
])
def test_refused_before_any_download(server: Served, tmp_path: Path, capsys, args: list[str],
                                     message: str) -> None:
    before = len(server.log)
    rc, out, err = run(tmp_path, capsys, *args, base_url=f"{server.url}/files")
    assert rc == 1 and message in err, err
    assert len(server.log) == before
    assert_store_untouched(tmp_path)


def test_the_client_command_lists_the_catalogue() -> None:
    """``toonforge pull`` is the admin entry point of the one ``toonforge`` command."""
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from toonforge_client.cli import main;"
         " sys.exit(main(sys.argv[1:]))", "pull", "--list"],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = {line.split("\t")[0]: line for line in proc.stdout.splitlines()}
    assert {"dctnet-anime", "googlenet", "u2net", "u2netp", "anime-faces"} <= set(rows)
    assert "needs --sha256" in rows["u2netp"] and "sha256 pinned" in rows["dctnet-anime"]
    # Under each entry, each file's URL and checksum: what to fetch and check by hand.
    lines = proc.stdout.splitlines()
    after = lines[lines.index(rows["u2netp"]) + 1].split("\t")
    assert after[0] == "  weights" and after[1] == get_entry("u2netp").files[0].url
    assert after[1].startswith("https://") and "?" in after[1]  # the query is the file id
    assert after[2] == "sha256 not published: --sha256 HEX"
    pinned = lines[lines.index(rows["dctnet-anime"]) + 1].split("\t")
    assert pinned[2] == f"sha256 {get_entry('dctnet-anime').files[0].sha256}"
    netd = next(line for line in lines if line.startswith("  netd\t"))
    assert netd.split("\t")[2] == "sha256 not published: --sha256 netd=HEX"


def test_a_file_that_is_no_checkpoint_gets_one_clear_line(server: Served, tmp_path: Path,
                                                          capsys) -> None:
    """The right checksum of the wrong file (a saved error page): one line that says what
    the file is, not PyTorch's weights_only paragraph cut mid-sentence."""
    page = b"<!DOCTYPE html><html><body>Quota exceeded</body></html>\n" * 4
    server.files["page.pth"] = page
    rc, out, err = run(tmp_path, capsys, "u2netp", "--url", f"{server.url}/files/page.pth",
                       "--sha256", sha(page))
    assert rc == 1
    (line,) = [e for e in err.splitlines() if e.startswith("toonforge: error:")]
    assert "cannot read checkpoint 'u2netp.pth': not a PyTorch checkpoint" in line
    assert "was the download an error page?" in line
    assert "weights_only" not in err and "Weights only" not in err and "Traceback" not in err
    assert not list((tmp_path / "store").glob("models/*/versions/*"))  # nothing imported
