"""`swarm serve` on ordinary mistakes: one line naming the problem, a non-zero exit, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import Server
from tests.server import free_port


def serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "swarm_discovery", "serve", *args], capture_output=True, text=True, timeout=30
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert "serving on" not in lines[0]
    return lines[0]


def test_a_normal_start_says_serving_once_and_nothing_else(server: Server) -> None:
    log = Path(server.log.name).read_text()
    assert log.count("swarm: serving on") == 1 and f"http://{server.addr}" in log
    assert "experimental" not in log and "Traceback" not in log


def test_a_held_port_is_an_error_naming_it(server: Server, tmp_path: Path) -> None:
    line = one_line_error(serve("--http", server.addr, "--data-dir", str(tmp_path / "other")))
    assert f"port {server.port}" in line and "in use" in line
    assert server.http.get("/healthz").status_code == 200  # the first server goes on alone


def test_a_data_directory_in_use_is_an_error_naming_its_holder(server: Server) -> None:
    line = one_line_error(serve("--http", f"127.0.0.1:{free_port()}", "--data-dir", str(server.data_dir)))
    assert f"{server.data_dir} is in use by process {server.worker_pid()}" in line


def test_other_mistakes(tmp_path: Path) -> None:
    assert "65535" in one_line_error(serve("--http", "127.0.0.1:99999"))
    assert "HOST:PORT" in one_line_error(serve("--http", "8500"))
    taken = tmp_path / "a-file"
    taken.write_text("")
    line = one_line_error(serve("--http", f"127.0.0.1:{free_port()}", "--data-dir", str(taken)))
    assert f"data directory {taken}: it is a file, not a directory" in line
    bad_level = serve("--log-level", "loud")
    assert bad_level.returncode == 2 and "loud" in bad_level.stderr and "Traceback" not in bad_level.stderr
