"""Accelerator choice: probed with a real kernel boot, cached, overridable.

What the probes find depends on the machine (here KVM is offered but broken, so TCG wins);
the tests assert that the verdicts are true rather than what they are.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import kernelkit
import pytest
from test_vmctl_qemu import QEMU, drivers, short_dir, spec_for, vm, wait_for_marker  # noqa: F401

from vmctl import accel
from vmctl.errors import VmctlError


@pytest.fixture(autouse=True)
def no_override(monkeypatch):
    monkeypatch.delenv("VMCTL_ACCEL", raising=False)


def test_available_lists_what_this_qemu_was_built_with():
    offered = accel.available(QEMU)
    assert "tcg" in offered
    assert set(offered) <= set(accel.KNOWN)


def test_available_names_a_qemu_that_does_not_run(tmp_path):
    with pytest.raises(VmctlError, match=r"cannot run .*/no-qemu -accel help"):
        accel.available(str(tmp_path / "no-qemu"))


@pytest.mark.slow
def test_a_probe_that_passes_means_the_vm_boots(vm, drivers):  # noqa: F811
    """Every offered accelerator: a verdict within its timeout, and a pass is a real boot."""
    passed = []
    for name in accel.available(QEMU):
        timeout = 60.0 if name == "tcg" else accel.PROBE_TIMEOUT  # TCG needs ~4 s, loaded: more
        started = time.monotonic()
        verdict = accel.probe(QEMU, name, kernelkit.kernel(), timeout=timeout)
        assert time.monotonic() - started < timeout + 5, f"{name} probe overran its timeout"
        if verdict:
            passed.append(name)
            driver = drivers()
            driver.boot(spec_for(vm, accel=name))
            wait_for_marker(vm)
            driver.kill()
            vm.serial_log.unlink()
    assert "tcg" in passed, "software emulation must always boot the kernel"


@pytest.mark.slow
def test_choose_probes_once_then_answers_from_the_cache(tmp_path):
    cache = tmp_path / "cache" / "accel.json"
    cache.parent.mkdir()
    cache.write_text("{not json")  # a damaged cache is an empty one
    said: list[str] = []
    first = accel.choose(QEMU, kernelkit.kernel(), cache, progress=said.append)
    assert first in accel.available(QEMU)
    [entry] = json.loads(cache.read_text()).values()
    assert entry["accel"] == first
    probed = entry["probes"]
    if "kvm" in probed and first == "tcg":  # this machine: KVM offered, yet its guest hangs
        assert probed["kvm"]["passed"] is False and said
    # The cache decides from now on: a tampered verdict comes back, so no probe ran.
    other = next(name for name in accel.KNOWN if name != first)
    key = next(iter(json.loads(cache.read_text())))
    cache.write_text(json.dumps({key: {**entry, "accel": other}}))
    said.clear()
    assert accel.choose(QEMU, kernelkit.kernel(), cache, progress=said.append) == other
    assert said == []
    # No kernel to probe with: what a kernel probe on this host found is reused.
    assert accel.choose(QEMU, None, cache) == other


def test_without_a_kernel_or_an_earlier_verdict_tcg_is_chosen(tmp_path):
    cache = tmp_path / "accel.json"
    assert accel.choose(QEMU, None, cache) == "tcg"
    assert not cache.exists()


def test_the_environment_overrides_the_probe(tmp_path, monkeypatch):
    cache = tmp_path / "accel.json"
    for name in accel.available(QEMU):
        monkeypatch.setenv("VMCTL_ACCEL", name)
        assert accel.choose(QEMU, kernelkit.kernel(), cache) == name
    assert not cache.exists(), "an override probes nothing and caches nothing"


def test_an_unknown_accelerator_in_the_environment_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("VMCTL_ACCEL", "virtualbox")
    with pytest.raises(
        VmctlError, match=r"VMCTL_ACCEL='virtualbox' is not an accelerator .* kvm, hvf, whpx, tcg"
    ):
        accel.choose(QEMU, kernelkit.kernel(), tmp_path / "accel.json")


def test_an_accelerator_this_qemu_lacks_is_refused(tmp_path, monkeypatch):
    missing = next(name for name in accel.KNOWN if name not in accel.available(QEMU))
    monkeypatch.setenv("VMCTL_ACCEL", missing)
    with pytest.raises(VmctlError, match=rf"VMCTL_ACCEL={missing} but .* offers only .*tcg"):
        accel.choose(QEMU, kernelkit.kernel(), tmp_path / "accel.json")


def test_a_missing_kernel_is_named(tmp_path):
    gone = tmp_path / "vmlinuz"
    with pytest.raises(VmctlError, match=rf"cannot read the guest kernel {gone}: No such file"):
        accel.choose(QEMU, gone, tmp_path / "accel.json")


def test_probe_argv_boots_the_kernel_without_a_root_and_without_rebooting():
    argv = accel.probe_argv(QEMU, "kvm", Path("/k/vmlinuz"))
    assert argv[:7] == [QEMU, "-machine", "q35", "-accel", "kvm", "-cpu", "host"]
    assert "-no-reboot" in argv and argv[argv.index("-kernel") + 1] == "/k/vmlinuz"
    assert "panic=-1" in argv[argv.index("-append") + 1].split()
    assert "-initrd" not in argv and "-drive" not in argv
