"""vmctl's pure provisioning parts: paths, SSH keys, cloud-init user-data and the seed ISO."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import paramiko
import pycdlib
import pytest

from vmctl import cloudinit, keys, paths, provision
from vmctl.errors import VmctlError

GOLDEN = Path(__file__).parent / "golden"

SEED = cloudinit.Seed(
    instance_id="vmctl-default-1",
    hostname="vmctl-default",
    authorized_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleUserKey vmctl",
    host_key_private=(
        "-----BEGIN OPENSSH PRIVATE KEY-----\nexample\n-----END OPENSSH PRIVATE KEY-----\n"
    ),
    host_key_public="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleHostKey vmctl-default",
    daemon_json={"registry-mirrors": ["http://10.0.2.2:5000"], "data-root": "/var/lib/vmctl-agent"},
)


def test_vmctl_home_relocates_everything(tmp_path, monkeypatch):
    monkeypatch.setenv("VMCTL_HOME", str(tmp_path))
    vm = paths.vm("dev")
    assert vm.root == tmp_path / "dev"
    assert vm.docker_sock == tmp_path / "dev" / "docker.sock"
    assert paths.images_dir() == tmp_path / "images"


@pytest.mark.parametrize("name", ["", "UPPER", "-x", "a/b", "a" * 40, "dots.here"])
def test_bad_vm_names(tmp_path, monkeypatch, name):
    monkeypatch.setenv("VMCTL_HOME", str(tmp_path))
    with pytest.raises(VmctlError, match="invalid VM name"):
        paths.vm(name)


def test_a_home_too_long_for_a_socket_is_refused_with_advice(tmp_path, monkeypatch):
    monkeypatch.setenv("VMCTL_HOME", str(tmp_path / ("x" * 90)))
    with pytest.raises(VmctlError, match=r"too long for a unix socket .* set VMCTL_HOME"):
        paths.vm("default")


def test_keys_are_ed25519_openssh_and_private_is_0600(tmp_path):
    pair = keys.ensure(tmp_path / "ssh_key", "vmctl@test")
    private = tmp_path / "ssh_key"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    loaded = paramiko.Ed25519Key.from_private_key_file(str(private))
    kind, blob, comment = pair.public_openssh.split()
    assert (kind, blob, comment) == ("ssh-ed25519", loaded.get_base64(), "vmctl@test")
    assert keys.ensure(private, "ignored") == pair, "made once, then reused"


def test_user_data_matches_the_golden_file():
    text = cloudinit.user_data(SEED)
    assert text.startswith(b"#cloud-config\n")
    assert text == (GOLDEN / "user-data").read_bytes()
    config = json.loads(text.split(b"\n", 1)[1])
    # With ssh_keys given, cloud-init writes those and generates none (ssh_genkeytypes is only
    # read otherwise; an empty list fails cloud-init 22.4's schema check).
    assert config["ssh_keys"]["ed25519_public"] == SEED.host_key_public
    assert config["ssh_deletekeys"] is True and "runcmd" not in config
    assert config["users"][0]["ssh_authorized_keys"] == [SEED.authorized_key]


def test_agent_unit_matches_the_golden_file():
    assert cloudinit.agent_unit() == (GOLDEN / "vmctl-agent.service").read_text()


def test_seed_iso_is_a_nocloud_cidata_volume(tmp_path):
    iso_path = cloudinit.write_seed_iso(SEED, tmp_path / "seed.iso")
    iso = pycdlib.PyCdlib()
    iso.open(str(iso_path))
    try:
        assert iso.pvd.volume_identifier.decode().strip() == "cidata"
        for name, expected in (
            ("user-data", cloudinit.user_data(SEED)),
            ("meta-data", cloudinit.meta_data(SEED)),
        ):
            for kind in ("rr_path", "joliet_path"):
                out = io.BytesIO()
                iso.get_file_from_iso_fp(out, **{kind: f"/{name}"})
                assert out.getvalue() == expected
    finally:
        iso.close()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")], "no temp file left"
    label = subprocess.run(
        ["blkid", "-o", "value", "-s", "LABEL", str(iso_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert label.stdout.strip() == "cidata", "what cloud-init's NoCloud looks for"


def test_importing_vmctl_loads_no_qt():
    code = (
        "import sys, vmctl, vmctl.paths, vmctl.cloudinit, vmctl.keys, vmctl.agentapp; "
        "print([m for m in sys.modules if m.startswith('PySide6')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_console_saying_sshd_started_is_reported_once(tmp_path, monkeypatch):
    monkeypatch.setenv("VMCTL_HOME", str(tmp_path))
    vm = paths.vm("hint")
    vm.root.mkdir(parents=True)
    vm.serial_log.write_bytes(b"[  OK  ] Reached target network.target\r\n")
    said: list[str] = []
    hint = provision.sshd_started(vm, said.append)
    assert not hint() and said == []
    with open(vm.serial_log, "ab") as console:
        console.write(b"[  OK  ] Started ssh.service - OpenBSD Secure Shell server.\r\n")
    assert hint() and hint()
    assert said == ["the VM's console says sshd started"]
