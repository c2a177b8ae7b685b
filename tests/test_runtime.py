"""The container runtime, checked the way a user of `docker run` would check it: from inside.

Runs as root on the host (cgroup v1 here; the VM's cgroup v2 is exercised by the VM tests).
"""

from __future__ import annotations

import contextlib
import copy
import os
import select
import signal
import stat
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import imagekit as ik
import pytest
from agentkit import pull
from runtimekit import NOTHING, busybox_image, leftovers, make_runtime, run
from vmctl_agent import atomic
from vmctl_agent.errors import CgroupError, ImageNotFound, ImpossibleLimit
from vmctl_agent.runtime import pids
from vmctl_agent.runtime.containers import Runtime
from vmctl_agent.runtime.index import ContainerConflict, ContainerNotFound
from vmctl_agent.runtime.shim import StartError
from vmctl_agent.runtime.spec import CreateOptions, InvalidSpec
from vmctl_agent.store.images import ImageStore

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the runtime needs root (CI is root)")

DOCKER_CAPS = "00000000a80425fb"


@pytest.fixture(scope="module")
def image(registry) -> str:
    ref = f"{registry.host}/runtime/busybox:v1"
    ik.RegistryClient(registry.url).push_image("runtime/busybox", "v1", busybox_image())
    return ref


@pytest.fixture(scope="module")
def rt(tmp_path_factory, registry, image) -> Runtime:
    runtime = make_runtime(tmp_path_factory.mktemp("runtime"), registry, image)
    yield runtime
    for container in runtime.list(all=True):
        runtime.remove(container.id, force=True)
    for directory in runtime.cgroups.path("x"):
        if directory.parent.exists():
            directory.parent.rmdir()


# -- isolation, as seen from inside ------------------------------------------------------------


def test_the_command_is_pid_1_with_its_own_hostname(rt, image):
    ran = run(rt, image, "sh", "-c", "echo $$; hostname; cat /etc/hostname")
    short = ran.container.id[:12]
    assert ran.stdout.split() == ["1", short, short]
    assert ran.exit_code == 0


def test_hostname_can_be_set(rt, image):
    assert run(rt, image, "hostname", hostname="web-1").stdout == "web-1\n"


def test_the_hosts_files_are_invisible(rt, image, tmp_path):
    marker = Path("/tmp") / f"vmctl-host-only-{uuid.uuid4().hex}"
    marker.write_text("host")
    try:
        ran = run(rt, image, "sh", "-c", f"ls {marker}; ls /")
    finally:
        marker.unlink()
    assert "No such file or directory" in ran.stderr
    assert set(ran.stdout.split()) <= {"bin", "dev", "etc", "proc", "root", "sys", "tmp"}


def test_a_run_writes_nothing_into_the_containers_layer(rt, image):
    """No directory for the old root, no /etc copied up for the files bound over it."""
    ran = run(rt, image, "sh", "-c", "cat /etc/hostname /etc/hosts /etc/resolv.conf; ls -a / /dev")
    assert ran.exit_code == 0, ran.stderr
    lines = ran.stdout.splitlines()
    assert lines[0] == ran.container.id[:12] and "127.0.0.1\tlocalhost" in lines
    assert any(line.startswith("nameserver ") for line in lines)
    assert not any(".vmctl" in line for line in lines), "nothing of ours is left at / or /dev"
    assert list((ran.container.directory / "upper").iterdir()) == []
    assert sorted(os.listdir(ran.container.directory)) == [
        "config.json",
        "container-json.log",
        "exit.json",
        "state.json",
        "upper",
        "work",
    ], "no lock file (the directory itself is locked), no control socket, no /etc files"
    rt.remove(ran.container.id)


def test_etc_files_over_an_image_whose_etc_the_init_layer_would_change(rt, registry):
    """An /etc that is not a plain root 0755 directory keeps its owner and mode: the files
    are then made in the container's own layer."""
    layer = ik.tar_bytes([ik.directory("etc", mode=0o750, uid=0, gid=0)])
    image = ik.build_image([ik.busybox_layer(), layer], config={"Cmd": ["/bin/sh"]})
    ik.RegistryClient(registry.url).push_image("runtime/odd-etc", "v1", image)
    ref = f"{registry.host}/runtime/odd-etc:v1"
    pull(rt.images, ref)
    ran = run(rt, ref, "sh", "-c", "stat -c %a /etc; cat /etc/hostname", hostname="odd")
    assert ran.stdout.split() == ["750", "odd"], ran.stderr
    assert sorted(p.name for p in (ran.container.directory / "upper" / "etc").iterdir()) == [
        "hostname",
        "hosts",
        "resolv.conf",
    ]
    rt.remove(ran.container.id)


def test_proc_sys_is_read_only_and_proc_files_masked(rt, image):
    script = (
        "echo 1 > /proc/sys/kernel/ns_last_pid; touch /sys/x; "
        "wc -c < /proc/timer_list; wc -c < /proc/keys; ls /proc/acpi | wc -l; "
        "[ -e /proc/kcore ] && wc -c < /proc/kcore"
    )
    ran = run(rt, image, "sh", "-c", script)
    assert ran.stderr.count("Read-only file system") == 2
    expected = ["0", "0", "0"] + (["0"] if os.path.exists("/proc/kcore") else [])
    assert ran.stdout.split() == expected
    assert os.path.getsize("/proc/timer_list") or Path("/proc/timer_list").read_text()


def test_docker_default_capabilities(rt, image):
    ran = run(rt, image, "grep", "^Cap", "/proc/self/status")
    caps = dict(line.split(":\t") for line in ran.stdout.splitlines())
    assert caps["CapEff"] == caps["CapPrm"] == caps["CapBnd"] == DOCKER_CAPS
    assert caps["CapInh"] == caps["CapAmb"] == "0000000000000000"


def test_a_non_root_user_has_no_effective_capabilities(rt, image):
    ran = run(rt, image, "sh", "-c", "id -u; id -g; grep ^Cap /proc/self/status", user="nobody")
    lines = ran.stdout.splitlines()
    assert lines[:2] == ["65534", "65534"]
    caps = dict(line.split(":\t") for line in lines[2:])
    assert caps["CapEff"] == "0000000000000000" and caps["CapBnd"] == DOCKER_CAPS


def test_no_new_privileges(rt, image):
    ran = run(rt, image, "grep", "NoNewPrivs", "/proc/self/status", no_new_privileges=True)
    assert ran.stdout.split() == ["NoNewPrivs:", "1"]


def test_a_device_made_with_mknod_is_useless(rt, image):
    ran = run(
        rt,
        image,
        "sh",
        "-c",
        "mknod /tmp/disk b 8 0 && echo made; head -c 1 /tmp/disk; head -c 1 /dev/zero | wc -c",
    )
    assert ran.stdout.split() == ["made", "1"]
    assert "Permission denied" in ran.stderr


def test_no_network_but_loopback(rt, image):
    ran = run(rt, image, "cat", "/proc/net/dev")
    interfaces = [line.split(":")[0].strip() for line in ran.stdout.splitlines()[2:]]
    assert interfaces == ["lo"]


def test_all_other_file_descriptors_are_closed(rt, image):
    ran = run(rt, image, "ls", "/proc/self/fd")
    assert ran.stdout.split() == ["0", "1", "2", "3"]  # 3 is ls's own directory


def test_env_workdir_and_user_merge_like_docker(rt, image):
    ran = run(
        rt,
        image,
        "sh",
        "-c",
        "echo $A $PATH; pwd; id -u; echo $HOME",
        env=("A=1",),
        working_dir="/srv/app",
        user="65534:0",
    )
    lines = ran.stdout.splitlines()
    assert lines[0] == f"1 {ik.DEFAULT_PATH.partition('=')[2]}"
    assert lines[1:] == ["/srv/app", "65534", "/nonexistent"]


# -- limits ------------------------------------------------------------------------------------


def test_a_memory_hog_is_oom_killed(rt, image):
    ran = run(
        rt, image, "dd", "if=/dev/zero", "of=/dev/null", "bs=200M", "count=1", memory=32 << 20
    )
    assert ran.exit_code == 137
    assert ran.container.state.oom_killed is True
    assert ran.container.inspect()["State"]["OOMKilled"] is True


def test_a_fork_bomb_is_stopped_by_the_pids_limit(rt, image):
    ran = run(
        rt,
        image,
        "sh",
        "-c",
        "for i in $(seq 60); do sleep 30 & echo $i; done; wait",
        pids_limit=20,
    )
    started = [int(n) for n in ran.stdout.split()]
    assert "can't fork" in ran.stderr
    assert max(started) <= 19, "the shell plus its children never exceed 20 pids"


def test_stats_of_a_running_container(rt, image):
    c = rt.create(CreateOptions(image=image, cmd=("sleep", "30"), memory=64 << 20))
    rt.start(c.id)
    try:
        stats = rt.stats(c.id)
    finally:
        rt.remove(c.id, force=True)
    assert stats.memory_limit == 64 << 20 and stats.memory_usage > 0
    assert stats.pids_current == 1


# -- lifecycle ---------------------------------------------------------------------------------


def test_stop_waits_then_kills_a_pid_1_that_ignores_sigterm(rt, image):
    c = rt.create(CreateOptions(image=image, cmd=("sleep", "60")))
    rt.start(c.id)
    began = time.monotonic()
    c = rt.stop(c.id, timeout=1)
    assert 0.9 < time.monotonic() - began < 10
    assert (c.state.status, c.state.exit_code) == ("exited", 137)


def test_stop_lets_a_trapping_process_exit_cleanly(rt, image):
    script = "trap 'echo bye; exit 0' TERM; echo ready; while true; do sleep 0.1; done"
    c = rt.create(CreateOptions(image=image, cmd=("sh", "-c", script)))
    rt.start(c.id)
    _wait_for_log(rt, c.id, "ready")
    c = rt.stop(c.id, timeout=10)
    assert c.state.exit_code == 0
    assert "bye" in "".join(e.data.decode() for e in rt.logs(c.id))


def test_kill_with_any_signal_and_restart(rt, image):
    c = rt.create(CreateOptions(image=image, cmd=("sleep", "60")))
    rt.start(c.id)
    rt.kill(c.id, signal.SIGKILL)
    c = rt.wait(c.id, timeout=10)
    assert c.state.exit_code == 137
    with pytest.raises(ContainerConflict, match="is not running"):
        rt.kill(c.id)
    c = rt.restart(c.id, timeout=1)
    assert c.state.running and c.state.restart_count == 0  # a user's restart: dockerd counts 0
    rt.remove(c.id, force=True)


def test_a_run_the_agent_never_recorded_is_ended_before_a_start(rt, image):
    """An agent killed between starting a shim and recording it leaves a run nobody knows of,
    in the container's cgroup: the next start kills it, so the container runs once."""
    c = rt.create(CreateOptions(image=image, cmd=("sleep", "60")))
    rt.cgroups.create(c.id, c.config.cgroup_limits)
    stray = subprocess.Popen(["sleep", "60"], preexec_fn=lambda: rt.cgroups.join(c.id))
    try:
        assert rt.cgroups.procs(c.id) == [stray.pid]
        c = rt.start(c.id)
        assert stray.wait(timeout=30) == -signal.SIGKILL
        assert rt.cgroups.procs(c.id) == [c.state.pid]
    finally:
        stray.kill()
        stray.wait()
    rt.remove(c.id, force=True)
    assert leftovers(rt, c.id) == NOTHING


def test_remove_is_refused_while_running_and_leaves_nothing(rt, image):
    c = rt.create(CreateOptions(image=image, cmd=("sleep", "60")))
    rt.start(c.id)
    with pytest.raises(ContainerConflict, match="Stop the container before attempting removal"):
        rt.remove(c.id)
    rt.remove(c.id, force=True)
    assert leftovers(rt, c.id) == NOTHING
    with pytest.raises(ContainerNotFound, match=f"No such container: {c.id}"):
        rt.get(c.id)


def test_list_and_inspect_use_dockers_fields(rt, image):
    c = rt.create(CreateOptions(image=image, cmd=("true",), name="inspected", labels={"a": "b"}))
    info = rt.get("inspected").inspect()
    assert info["Name"] == "/inspected" and info["State"]["Status"] == "created"
    assert info["Config"]["Labels"] == {"a": "b"} and info["Path"] == "true"
    assert c.id in [x.id for x in rt.list(all=True)] and c.id not in [x.id for x in rt.list()]
    rt.start("inspected")
    info = rt.wait("/inspected").inspect()["State"]
    assert info["Status"] == "exited" and info["ExitCode"] == 0 and info["Pid"] == 0
    assert info["StartedAt"] <= info["FinishedAt"]
    rt.remove(c.id)


def test_logs_tail_since_and_follow(rt, image):
    c = rt.create(
        CreateOptions(
            image=image, cmd=("sh", "-c", "for i in 1 2 3; do echo line$i; sleep 0.3; done")
        )
    )
    rt.start(c.id)
    followed = [e.data for e in rt.logs(c.id, follow=True)]
    assert followed == [b"line1\n", b"line2\n", b"line3\n"]
    assert [e.data for e in rt.logs(c.id, tail=1)] == [b"line3\n"]
    second = list(rt.logs(c.id))[1]
    assert [e.data for e in rt.logs(c.id, since=second.timestamp)] == [b"line2\n", b"line3\n"]
    rt.remove(c.id)


def test_an_end_is_the_shims_record_and_a_new_start_ignores_the_last_one(rt, image):
    script = "if [ -e /ran ]; then sleep 30; else touch /ran; exit 3; fi"
    c = rt.create(CreateOptions(image=image, cmd=("sh", "-c", script)))
    first = rt.start(c.id).state
    assert rt.wait(c.id, timeout=10).state.exit_code == 3
    ended = atomic.read_json(c.directory / "exit.json")
    assert (ended["shim"], ended["shim_start_time"]) == (first.shim_pid, first.shim_start_time)
    assert atomic.read_json(c.directory / "state.json")["status"] == "running", "not rewritten"
    again = Runtime(rt.root.parent, rt.images, rt.cgroups)  # derived the same way afresh
    assert (again.get(c.id).state.status, again.get(c.id).state.exit_code) == ("exited", 3)
    rt.start(c.id)
    assert (c.directory / "exit.json").exists(), "the last run's end stays until the next"
    assert rt.get(c.id).state.running and again.get(c.id).state.running
    assert rt.stop(c.id, timeout=0).state.exit_code == 137
    assert again.get(c.id).state.exit_code == 137
    rt.remove(c.id)


def test_the_log_exists_once_start_returns_and_a_short_run_starts_before_it_ends(rt, image):
    for _ in range(5):
        c = rt.create(CreateOptions(image=image, cmd=("true",)))
        rt.start(c.id)
        assert (c.directory / "container-json.log").exists()
        state = rt.wait(c.id, timeout=10).state
        assert state.started_at <= state.finished_at
        rt.remove(c.id)


def test_fifty_containers_at_once(rt, image):
    results: list[int] = []

    def one(i: int) -> None:
        results.append(run(rt, image, "sh", "-c", f"echo {i}").exit_code)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [0] * 50


# -- bad input ---------------------------------------------------------------------------------


def test_a_command_that_does_not_exist(rt, image):
    c = rt.create(CreateOptions(image=image, cmd=("nosuchcommand",)))
    with pytest.raises(StartError) as err:
        rt.start(c.id)
    assert str(err.value) == 'exec: "nosuchcommand": executable file not found in $PATH'
    assert err.value.exit_code == 127
    state = rt.get(c.id).state
    assert (state.status, state.exit_code) == ("created", 127)
    rt.remove(c.id)
    assert leftovers(rt, c.id) == NOTHING


def test_a_path_that_does_not_exist_or_cannot_run(rt, image):
    with pytest.raises(StartError, match=r'exec: "/nope": stat /nope: no such file'):
        rt.start(rt.create(CreateOptions(image=image, cmd=("/nope",))).id)
    with pytest.raises(StartError, match=r'exec: "/etc/passwd": permission denied') as err:
        rt.start(rt.create(CreateOptions(image=image, cmd=("/etc/passwd",))).id)
    assert err.value.exit_code == 126


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"image": "nosuch:latest"}, ImageNotFound, "No such image: nosuch:latest"),
        ({"memory": 1 << 20}, ImpossibleLimit, "Minimum memory limit allowed is 6MB"),
        ({"nano_cpus": 64 * 10**9}, ImpossibleLimit, "Range of CPUs is from 0.01"),
        ({"user": "nosuch"}, InvalidSpec, "unable to find user nosuch: no matching entries"),
        ({"user": "0:nosuch"}, InvalidSpec, "unable to find group nosuch"),
        ({"working_dir": "relative"}, InvalidSpec, "needs to be absolute"),
        ({"entrypoint": ("",), "cmd": ()}, InvalidSpec, "No command specified"),
        ({"cap_add": ("NOT_A_CAP",)}, InvalidSpec, "unknown capability"),
        ({"name": "bad name!"}, InvalidSpec, "Invalid container name"),
    ],
)
def test_bad_options_leave_no_container(rt, image, options, error, message):
    before = {c.id for c in rt.list(all=True)}
    with pytest.raises(error, match=message):
        rt.create(CreateOptions(**{"image": image, "cmd": ("true",), **options}))
    assert {c.id for c in rt.list(all=True)} == before
    assert not list(rt.root.glob(".new-*"))


def test_a_created_container_is_found_by_a_new_agent_as_created(rt, image):
    c = rt.create(CreateOptions(image=image, cmd=("true",), name="made-before"))
    assert c.state.status == "created" and not (c.directory / "state.json").exists()
    again = Runtime(rt.root.parent, rt.images, rt.cgroups)
    found = again.get("made-before")
    assert (found.id, found.state.status, found.state.pid) == (c.id, "created", 0)
    assert c.id in [x.id for x in again.list(all=True)]
    with pytest.raises(ContainerConflict, match="already in use"):
        again.create(CreateOptions(image=image, name="made-before"))
    again.start(c.id)
    assert again.wait(c.id, timeout=10).state.status == "exited"
    again.remove(c.id)
    with pytest.raises(ContainerNotFound):
        rt.get(c.id)


def test_what_a_crash_during_create_left_is_invisible_then_swept(rt, image):
    c = rt.create(CreateOptions(image=image, cmd=("true",)))
    torn = rt.root / ("f" * 64)  # renamed into place, config.json never reached the disk
    (torn / "upper").mkdir(parents=True)
    (torn / "config.json").write_bytes(b"")
    old_staging, new_staging = rt.root / ".new-crashed", rt.root / ".new-in-flight"
    for d in (old_staging, new_staging):
        d.mkdir()
    os.utime(old_staging, (0, 0))
    assert torn.name not in [x.id for x in rt.list(all=True)]
    with pytest.raises(ContainerNotFound):
        rt.get(torn.name)
    again = Runtime(rt.root.parent, rt.images, rt.cgroups)
    assert not torn.exists() and not old_staging.exists()
    assert new_staging.exists(), "may be a create in progress"
    assert again.get(c.id).state.status == "created"
    new_staging.rmdir()
    rt.remove(c.id)


def test_names_are_unique_and_prefixes_must_be(rt, image):
    rt.create(CreateOptions(image=image, cmd=("true",), name="only-once"))
    with pytest.raises(
        ContainerConflict, match='The container name "/only-once" is already in use'
    ):
        rt.create(CreateOptions(image=image, cmd=("true",), name="only-once"))
    ids = [rt.create(CreateOptions(image=image, cmd=("true",))).id for _ in range(20)]
    shared = next(a[0] for a in ids if sum(b[0] == a[0] for b in ids) > 1)
    with pytest.raises(ContainerConflict, match="multiple IDs found with provided prefix"):
        rt.get(shared)
    for container_id in ids:
        rt.remove(container_id)
    rt.remove("only-once")


def _wait_for_log(rt: Runtime, container_id: str, text: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(text in e.data.decode() for e in rt.logs(container_id)):
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never appeared in the logs")


# -- the agent dies; containers live on ------------------------------------------------------------

AGENT = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from pathlib import Path
from agentkit import pull
from vmctl_agent.runtime import cgroups
from vmctl_agent.runtime.containers import Runtime
from vmctl_agent.store.images import ImageStore
from vmctl_agent.runtime.spec import CreateOptions
root = Path({root!r})
store = ImageStore(root / "image")
pull(store, {image!r})
rt = Runtime(root, store, cgroups.detect(parent={parent!r}))
script = "echo started; sleep 2; echo done; exit 7"
ending = rt.create(CreateOptions(image={image!r}, cmd=("sh", "-c", script)))
lasting = rt.create(CreateOptions(image={image!r}, cmd=("sleep", "60")))
for c in (ending, lasting):
    rt.start(c.id)
print(ending.id, lasting.id, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_agent_finds_its_containers_again(tmp_path, image, rt):
    root = tmp_path / "agent"
    parent = rt.cgroups.parent
    code = AGENT.format(
        tests=str(Path(__file__).parent), root=str(root), image=image, parent=parent
    )
    agent = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert agent.returncode == -signal.SIGKILL, agent.stderr
    ending, lasting = agent.stdout.split()
    again = Runtime(root, ImageStore(root / "image"), rt.cgroups)
    assert again.get(lasting).state.running
    finished = again.wait(ending, timeout=10)
    assert finished.state.exit_code == 7
    assert [e.data for e in again.logs(ending)] == [b"started\n", b"done\n"]
    assert again.stop(lasting, timeout=1).state.exit_code == 137
    for container_id in (ending, lasting):
        again.remove(container_id)
        assert leftovers(again, container_id) == NOTHING


def test_a_killed_shim_stops_its_container(rt, image):
    c = rt.create(CreateOptions(image=image, cmd=("sleep", "60")))
    rt.start(c.id)
    os.kill(rt.get(c.id).state.shim_pid, signal.SIGKILL)
    time.sleep(0.2)
    state = rt.get(c.id).state
    assert (state.status, state.exit_code) == ("exited", 137)
    assert "supervisor was killed" in state.error
    assert rt.get(c.id).state == state, "recorded in the shim's stead: the same on every read"
    rt.remove(c.id)
    assert leftovers(rt, c.id) == NOTHING


def test_a_reader_held_up_across_a_restart_does_not_take_the_new_run_for_orphaned(
    rt, image, monkeypatch
):
    """A reader that read state.json before a restart and looks for that run's end after the
    next run has ended too finds neither that end (overwritten) nor that shim (gone): it must
    read the newer run's state, not record a killed supervisor (CI saw exit 137 so)."""
    from vmctl_agent.runtime import records

    c = rt.create(CreateOptions(image=image, cmd=("sh", "-c", "exit 3")))
    rt.start(c.id)
    assert rt.wait(c.id, timeout=30).state.exit_code == 3
    directory = rt.get(c.id).directory
    earlier = records.read_state(directory)
    rt.start(c.id)
    assert rt.wait(c.id, timeout=30).state.exit_code == 3
    assert records.read_state(directory).shim_pid != earlier.shim_pid
    reads = iter([earlier])
    fresh = records.read_state
    monkeypatch.setattr(records, "read_state", lambda d: next(reads, None) or fresh(d))
    state = rt.get(c.id).state
    assert (state.status, state.exit_code, state.error) == ("exited", 3, "")
    assert rt.get(c.id).state.exit_code == 3, "and nothing was written in the run's stead"
    rt.remove(c.id)
    assert leftovers(rt, c.id) == NOTHING


# -- exec, stdin, terminals, --rm ------------------------------------------------------------------


def _drain(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_exec_joins_the_namespaces_cgroup_and_confinement(rt, image):
    c = rt.create(CreateOptions(image=image, cmd=("sleep", "60"), user="nobody"))
    rt.start(c.id)
    script = "echo $$; hostname; id -u; grep CapEff /proc/self/status; ls /proc | grep -c '^[0-9]'"
    running = rt.exec(c.id, ("sh", "-c", script + "; exit 5"))
    out = _drain(running.stdout).decode().split()
    assert running.wait() == 5
    running.close()
    assert out[0] != "1" and out[1] == c.id[:12] and out[2] == "65534"
    assert out[3:5] == ["CapEff:", "0000000000000000"]
    assert int(out[5]) <= 4, "only the container's processes are visible"
    in_cgroup = rt.exec(c.id, ("cat", "/proc/self/cgroup"))
    assert c.id in _drain(in_cgroup.stdout).decode()
    in_cgroup.wait()
    in_cgroup.close()
    rt.remove(c.id, force=True)


def test_an_exec_is_in_the_containers_cgroup_in_every_hierarchy(rt, image):
    """The helper joins as the first process does (through `tasks` on v1): the whole exec,
    not only its thread, is in each of the container's cgroups, so its limits hold it."""
    c = rt.create(CreateOptions(image=image, cmd=("sleep", "60")))
    rt.start(c.id)
    running = rt.exec(c.id, ("sh", "-c", "echo up; exec sleep 60"))
    assert os.read(running.stdout, 64) == b"up\n"
    with open(f"/proc/{running.helper_pid}/task/{running.helper_pid}/children") as f:
        inside = [int(pid) for pid in f.read().split()]
    for directory in rt.cgroups.path(c.id):
        procs = {int(pid) for pid in (directory / "cgroup.procs").read_text().split()}
        assert {running.helper_pid, *inside} <= procs, directory
    running.kill()
    assert running.wait() == 137
    running.close()
    rt.remove(c.id, force=True)
    assert leftovers(rt, c.id) == NOTHING


def test_exec_errors(rt, image):
    c = rt.create(CreateOptions(image=image, cmd=("sleep", "60")))
    with pytest.raises(ContainerConflict, match="is not running"):
        rt.exec(c.id, ("true",))
    rt.start(c.id)
    with pytest.raises(StartError, match='exec: "nope": executable file not found') as err:
        rt.exec(c.id, ("nope",))
    assert err.value.exit_code == 127
    rt.remove(c.id, force=True)


def test_stdin_is_forwarded_and_closed_once(rt, image):
    c = rt.create(
        CreateOptions(
            image=image, cmd=("sh", "-c", "cat; echo end"), open_stdin=True, stdin_once=True
        )
    )
    rt.start(c.id)
    with rt.attach_stdin(c.id) as sock:
        sock.sendall(b"hello\nworld\n")
    c = rt.wait(c.id, timeout=10)
    assert [e.data for e in rt.logs(c.id)] == [b"hello\n", b"world\n", b"end\n"]
    rt.remove(c.id)


def test_the_control_socket_serves_a_run_and_goes_with_it(rt, image):
    """Every running container's shim serves ctl.sock (output taps need it); a container
    without stdin or a terminal takes neither through it, and the socket ends with the run."""
    c = rt.create(CreateOptions(image=image, cmd=("sleep", "60")))
    rt.start(c.id)
    try:
        assert stat.S_ISSOCK((c.directory / "ctl.sock").stat().st_mode)
        assert stat.S_IMODE((c.directory / "ctl.sock").stat().st_mode) == 0o600
        rt.resize(c.id, 40, 120)  # no terminal: nothing to resize, and no error
        with pytest.raises(ContainerConflict, match="stdin"):
            rt.attach_stdin(c.id)
        rt.kill(c.id)
        assert not (c.directory / "ctl.sock").exists()
    finally:
        rt.remove(c.id, force=True)


def test_a_tty_container(rt, image):
    c = rt.create(
        CreateOptions(
            image=image,
            tty=True,
            open_stdin=True,
            cmd=("sh", "-c", "tty; stty size; read line; echo got $line"),
        )
    )
    rt.start(c.id)
    rt.resize(c.id, 40, 120)
    _wait_for_log(rt, c.id, "/dev/pts/0")
    rt.resize(c.id, 40, 120)
    with rt.attach_stdin(c.id) as sock:
        sock.sendall(b"typed\n")
        c = rt.wait(c.id, timeout=10)
    text = "".join(e.data.decode() for e in rt.logs(c.id))
    assert all(e.stream == "stdout" for e in rt.logs(c.id))
    assert "/dev/pts/0" in text and "got typed" in text
    rt.remove(c.id)


def test_auto_remove_leaves_the_exit_status_for_wait(rt, image):
    c = rt.create(CreateOptions(image=image, cmd=("sh", "-c", "exit 3"), auto_remove=True))
    rt.start(c.id)
    ended = rt.wait(c.id, timeout=10)
    assert (ended.state.status, ended.state.exit_code) == ("removed", 3)
    assert leftovers(rt, c.id) == NOTHING


def test_the_hosts_python_is_never_reachable_from_inside(rt, image):
    c = rt.create(CreateOptions(image=image, cmd=("sleep", "60")))
    rt.start(c.id)
    script = "for p in /proc/[0-9]*; do readlink $p/exe; done"
    first = run(rt, image, "sh", "-c", script)
    running = rt.exec(c.id, ("sh", "-c", script))
    seen = _drain(running.stdout).decode()
    running.wait()
    running.close()
    rt.remove(c.id, force=True)
    for listing in (first.stdout, seen):
        assert listing.strip() and "python" not in listing
        assert set(listing.split()) == {"/bin/busybox"}


def test_a_working_dir_through_a_symlink_stays_inside(rt, registry, tmp_path):
    host_dir = tmp_path / "host"
    host_dir.mkdir()
    layer = ik.tar_bytes([ik.symlink("work", str(host_dir))])
    image = ik.build_image([ik.busybox_layer(), layer], config={"Cmd": ["/bin/sh"]})
    ik.RegistryClient(registry.url).push_image("runtime/symlinked", "v1", image)
    ref = f"{registry.host}/runtime/symlinked:v1"
    pull(rt.images, ref)
    ran = run(rt, ref, "sh", "-c", "touch made-here && ls /work", working_dir="/work")
    assert ran.stdout.split() == ["made-here"], "made inside the container, via its symlink"
    assert list(host_dir.iterdir()) == [], "the host's directory is untouched"


def test_host_network(rt, image):
    ran = run(rt, image, "cat", "/proc/net/dev", network="host")
    host = Path("/proc/net/dev").read_text().splitlines()[2:]
    assert len(ran.stdout.splitlines()[2:]) == len(host)


def test_no_zombie_shims_are_left_behind(rt, image):
    for _ in range(3):
        run(rt, image, "true")
    rt.list(all=True)
    zombies = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] == "Z" and int(fields[1]) == os.getpid():
            zombies.append(pid)
    assert zombies == []


def test_the_shims_pipe_closes_once_the_end_is_recorded_and_the_shim_is_reaped_later(rt, image):
    c = rt.create(CreateOptions(image=image, cmd=("true",)))
    shim_pid = rt.start(c.id).state.shim_pid
    fd = rt.endings.watch(c.id)
    assert fd is not None
    try:
        select.select([fd], [], [], 10)
        assert os.read(fd, 1) == b"", "closed, not written to"
    finally:
        os.close(fd)
    assert (c.directory / "exit.json").exists()
    assert rt.wait(c.id, timeout=10).state.exit_code == 0
    assert rt.endings.watch(c.id) is None, "dropped once the end is seen"
    rt.remove(c.id)
    with pytest.raises(ChildProcessError):
        os.waitpid(shim_pid, os.WNOHANG)  # collected already
    assert pids.reap(1, timeout=30), "init is not our child: nothing to wait for"


def test_reaping_a_shim_checks_it_is_still_that_process():
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    started = pids.start_time(pid)
    while not pids.is_zombie(pid):
        time.sleep(0.01)
    assert pids.reap_same(pid, started + 1), "another process by that pid: not ours to wait"
    assert pids.is_zombie(pid), "so it was left alone"
    assert pids.reap_same(pid, started)
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _our_children() -> set[int]:
    found = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == os.getpid():
                found.add(int(pid))
    return found


def test_a_cgroup_that_cannot_be_made_fails_the_start_and_the_shim_gives_up(rt, image):
    """The cgroup is made while the shim starts: a refusal still fails the start, with the
    same error, and the shim and its child, told so, leave nothing behind."""

    class Refusing(type(rt.cgroups)):
        def create(self, name, limits):
            raise CgroupError("cannot limit memory: refused for the test")

    refusing = copy.copy(rt.cgroups)
    refusing.__class__ = Refusing
    other = Runtime(rt.root.parent, rt.images, refusing)
    c = other.create(CreateOptions(image=image, cmd=("true",)))
    before = _our_children()
    with pytest.raises(CgroupError, match="refused for the test"):
        other.start(c.id)
    assert _our_children() <= before
    assert other.get(c.id).state.status == "created"
    rt.start(c.id)
    assert rt.wait(c.id, timeout=10).state.exit_code == 0
    rt.remove(c.id)


def test_a_failed_start_removes_an_auto_remove_container(rt, image):
    c = rt.create(CreateOptions(image=image, cmd=("nosuch",), auto_remove=True))
    with pytest.raises(StartError):
        rt.start(c.id)
    with pytest.raises(ContainerNotFound):
        rt.get(c.id)
    assert leftovers(rt, c.id) == NOTHING
