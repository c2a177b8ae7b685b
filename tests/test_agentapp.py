"""The agent's zipapp: reproducible, and it pulls under Debian's python3 as it will in the VM."""

import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import imagekit as ik
from agentkit import small_image, unique_repo
from agentserver import PATIENCE

from vmctl import agentapp

DEBIAN_PYTHON = "/usr/bin/python3"


def test_build_is_reproducible(tmp_path):
    first = agentapp.build(tmp_path / "a.pyz")
    second = agentapp.build(tmp_path / "b.pyz")
    assert agentapp.digest(first) == agentapp.digest(second)
    names = zipfile.ZipFile(first).namelist()
    assert "__main__.py" in names
    assert "vmctl_agent/store/pull.py" in names and "vmctl_agent/store/pull.pyc" in names
    assert "vmctl_agent/api/http.py" in names and "vmctl_agent/api/http.pyc" in names
    assert first.stat().st_mode & 0o777 == 0o755


def test_zipapp_pulls_under_debian_python(registry, tmp_path):
    repo = unique_repo("pyz")
    image = small_image(b"pyz")
    ik.RegistryClient(registry.url).push_image(repo, "t", image)
    pyz = agentapp.build(tmp_path / "vmctl-agent.pyz")
    cmd = [DEBIAN_PYTHON, "-I", str(pyz), "pull", "--data-root", str(tmp_path / "d")]
    done = subprocess.run([*cmd, f"{registry.host}/{repo}:t"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"Status: Downloaded newer image for {registry.host}/{repo}:t" in done.stdout
    assert Path(tmp_path / "d" / "image" / "repositories.json").is_file()


def test_zipapp_runs_from_its_bytecode(tmp_path):
    """Sources replaced by a bomb still run: the interpreter loads the bundled bytecode."""
    pyz = agentapp.build(tmp_path / "a.pyz")
    bombed = tmp_path / "bombed.pyz"
    with zipfile.ZipFile(pyz) as src, zipfile.ZipFile(bombed, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.startswith("vmctl_agent/") and info.filename.endswith(".py"):
                data = b"raise SystemExit('compiled from source')\n"
            dst.writestr(info, data)
    done = subprocess.run(
        [DEBIAN_PYTHON, "-I", str(bombed), "--version"], capture_output=True, text=True
    )
    assert done.stdout.strip() == "vmctl-agent 0.1.0", done.stderr


def test_zipapp_serves_the_engine_api(tmp_path):
    """What the guest runs: `python3 -I -S vmctl-agent.pyz serve`, answering /_ping."""
    pyz = agentapp.build(tmp_path / "vmctl-agent.pyz")
    sock = tmp_path / "engine.sock"
    cmd = [
        DEBIAN_PYTHON,
        "-I",
        "-S",
        str(pyz),
        "serve",
        "--listen",
        f"unix://{sock}",
        "--data-root",
        str(tmp_path / "data"),
    ]
    agent = subprocess.Popen(cmd, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + PATIENCE
        while not sock.exists():
            assert agent.poll() is None and time.monotonic() < deadline, agent.stderr.read()
            time.sleep(0.05)
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(str(sock))
        client.sendall(b"GET /_ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := client.recv(4096):
            answer += chunk
        client.close()
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"OK")
    finally:
        agent.terminate()
        agent.wait(timeout=PATIENCE)


def test_a_packaged_app_deploys_the_agent_it_carries(tmp_path, monkeypatch):
    carried = tmp_path / "bundle" / agentapp.BUNDLED_NAME
    carried.parent.mkdir()
    carried.write_bytes(b"the zipapp packaging/vmctl.spec put in the bundle")
    monkeypatch.setattr(sys, "_MEIPASS", str(carried.parent), raising=False)
    assert agentapp.for_deploy(tmp_path / "built.pyz") == carried
    assert not (tmp_path / "built.pyz").exists()
    monkeypatch.delattr(sys, "_MEIPASS")
    assert agentapp.for_deploy(tmp_path / "built.pyz") == tmp_path / "built.pyz"


def test_build_is_the_same_bytes_in_any_process(tmp_path):
    """The host redeploys when the digest differs: a build must not depend on what else the
    building process holds (marshal's back-references did, through reference counts)."""
    here = agentapp.digest(agentapp.build(tmp_path / "here.pyz"))
    fresh = subprocess.run(
        [sys.executable, "-c", "import sys; from pathlib import Path; from vmctl import agentapp;"
         f"print(agentapp.digest(agentapp.build(Path({str(tmp_path / 'fresh.pyz')!r}))))"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert fresh.stdout.strip() == here
