"""Container cgroups: v1 for real on this host (root, v1 hierarchies), v2 against a fake tree.

Every real cgroup lives under a parent unique to the test and is removed at teardown, whether
or not the test passed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from vmctl_agent.errors import CgroupError, ImpossibleLimit
from vmctl_agent.runtime.cgroupfs import cpu_weight, host_cpus
from vmctl_agent.runtime.cgroups import CgroupsV1, CgroupsV2, Limits, detect

ROOT = Path("/sys/fs/cgroup")
MiB = 1 << 20
V1_HOST = (
    os.geteuid() == 0
    and (ROOT / "memory" / "cgroup.procs").is_file()
    and not (ROOT / "cgroup.controllers").exists()
)
needs_v1 = pytest.mark.skipif(not V1_HOST, reason="needs root on a cgroup v1 host")


def wait_for(predicate: Callable[[], object], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.01)


# --- real cgroup v1 on this host ---------------------------------------------------------


@pytest.fixture
def v1() -> Iterator[CgroupsV1]:
    parent = f"vmctl-test-{uuid.uuid4().hex[:8]}"
    cg = detect(ROOT, parent)
    assert isinstance(cg, CgroupsV1)
    yield cg
    for h in cg.hierarchies:
        for leaf in (h / parent).glob("*/"):
            cg.remove(leaf.name)
    for h in cg.hierarchies:
        if (h / parent).exists():
            (h / parent).rmdir()


@pytest.fixture
def spawn(v1: CgroupsV1) -> Iterator[Callable[..., subprocess.Popen]]:
    """Start a process already inside cgroup `name` (it joins between fork and exec)."""
    started: list[subprocess.Popen] = []

    def start(name: str, argv: list[str], **kw) -> subprocess.Popen:
        proc = subprocess.Popen(argv, preexec_fn=lambda: v1.add(name, 0), **kw)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()
        proc.wait()


def leftovers(cg: CgroupsV1, name: str) -> list[Path]:
    """Directories named `name` in any hierarchy, found by listing the parents."""
    return [h / cg.parent / name for h in cg.hierarchies if name in _ls(h / cg.parent)]


def _ls(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


@needs_v1
def test_detect_picks_v1_here():
    cg = detect()
    assert cg.version == 1 and isinstance(cg, CgroupsV1)
    assert {h.name for h in cg.hierarchies} == {
        "memory",
        "cpu",
        "cpuacct",
        "pids",
        "freezer",
        "cpuset",
    }


@needs_v1
def test_v1_create_writes_limits_and_is_idempotent(v1: CgroupsV1):
    v1.create("c1", Limits(memory=64 * MiB, cpus=0.5, pids=50, cpu_shares=512))
    mem, cpu = ROOT / "memory" / v1.parent / "c1", ROOT / "cpu" / v1.parent / "c1"
    assert (mem / "memory.limit_in_bytes").read_text() == f"{64 * MiB}\n"
    assert (mem / "memory.memsw.limit_in_bytes").read_text() == f"{128 * MiB}\n"
    assert (cpu / "cpu.cfs_quota_us").read_text() == "50000\n"
    assert (cpu / "cpu.cfs_period_us").read_text() == "100000\n"
    assert (cpu / "cpu.shares").read_text() == "512\n"
    assert (ROOT / "pids" / v1.parent / "c1" / "pids.max").read_text() == "50\n"
    cpuset = ROOT / "cpuset" / v1.parent / "c1"
    assert (cpuset / "cpuset.cpus").read_text() == (ROOT / "cpuset" / "cpuset.cpus").read_text()
    assert v1.exists("c1") and len(leftovers(v1, "c1")) == 6

    v1.create("c1", Limits())  # again: no error, and dropped limits are reset
    s = v1.stats("c1")
    assert s.memory_limit is None and s.pids_limit is None
    assert (cpu / "cpu.cfs_quota_us").read_text() == "-1\n"
    assert (cpu / "cpu.shares").read_text() == "1024\n"


@needs_v1
def test_v1_fresh_leaves_keep_the_kernels_defaults_and_a_lost_parent_is_made_again(
    v1: CgroupsV1,
):
    v1.create("c1", Limits(memory=64 * MiB))
    cpuset = ROOT / "cpuset" / v1.parent
    assert (cpuset / "cgroup.clone_children").read_text() == "1\n"
    assert (cpuset / "c1" / "cpuset.mems").read_text() == (cpuset / "cpuset.mems").read_text()
    assert v1.stats("c1").memory_limit == 64 * MiB
    v1.remove("c1")
    for h in v1.hierarchies:
        (h / v1.parent).rmdir()  # e.g. cleaned up by someone while the agent ran
    v1.create("c2", Limits(pids=10))
    assert v1.stats("c2").pids_limit == 10 and v1.stats("c2").memory_limit is None
    assert (ROOT / "cpu" / v1.parent / "c2" / "cpu.shares").read_text() == "1024\n"
    assert (cpuset / "c2" / "cpuset.cpus").read_text() == (
        ROOT / "cpuset" / "cpuset.cpus"
    ).read_text()


@needs_v1
def test_v1_add_and_procs(v1: CgroupsV1):
    v1.create("c1", Limits())
    proc = subprocess.Popen(["sleep", "30"])
    try:
        v1.add("c1", proc.pid)
        assert v1.procs("c1") == [proc.pid]
        lines = Path(f"/proc/{proc.pid}/cgroup").read_text().splitlines()
        for controller in ("memory", "cpu", "pids", "freezer", "cpuset"):
            assert any(line.endswith(f":{controller}:/{v1.parent}/c1") for line in lines), (
                controller
            )
    finally:
        proc.kill()
        proc.wait()
    assert v1.procs("c1") == []  # zombies and the dead are not listed
    with pytest.raises(CgroupError):
        v1.add("c1", 999_999_999)


@needs_v1
def test_v1_join_moves_the_caller_into_every_hierarchy(v1: CgroupsV1):
    v1.create("c1", Limits())
    go_r, go_w = os.pipe()
    joined_r, joined_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            v1.join("c1")
            os.write(joined_w, b"j")
            os.close(go_w)
            os.read(go_r, 1)  # held here while the parent looks
        finally:
            os._exit(0)
    os.close(go_r)
    try:
        assert os.read(joined_r, 1) == b"j"
        assert v1.procs("c1") == [pid]
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        for controller in ("memory", "cpu", "cpuacct", "pids", "freezer", "cpuset"):
            assert any(line.endswith(f":{controller}:/{v1.parent}/c1") for line in lines), (
                controller
            )
    finally:
        for fd in (go_w, joined_r, joined_w):
            os.close(fd)
        os.waitpid(pid, 0)


@needs_v1
def test_v1_memory_limit_oom_kills(v1: CgroupsV1, spawn):
    v1.create("c1", Limits(memory=32 * MiB))
    assert not v1.oom_killed("c1")
    proc = spawn("c1", [sys.executable, "-c", "b = bytearray(200 << 20)"])
    assert proc.wait(timeout=20) == -signal.SIGKILL
    assert v1.oom_killed("c1")


@needs_v1
def test_v1_pids_limit_stops_a_fork_bomb(v1: CgroupsV1, spawn):
    v1.create("c1", Limits(pids=20))
    bomb = "for i in $(seq 100); do sleep 5 & done; wait"
    proc = spawn("c1", ["sh", "-c", bomb], stderr=subprocess.DEVNULL)
    events = ROOT / "pids" / v1.parent / "c1" / "pids.events"

    def refused() -> int:  # "max N": forks the limit refused
        return int(events.read_text().split()[1])

    peak = 0
    deadline = time.monotonic() + 120  # until the limit bites, however slow the machine
    while not refused() and proc.poll() is None and time.monotonic() < deadline:
        peak = max(peak, v1.stats("c1").pids_current)
    peak = max(peak, v1.stats("c1").pids_current)  # the sleeps at the limit last 5 s
    assert refused() > 0
    assert 1 < peak <= 20
    assert v1.stats("c1").pids_limit == 20


BUSY = """
import sys, time
b = bytearray(16 << 20)
print("allocated", flush=True)
sys.stdin.readline()
t = time.process_time() + 0.3
while time.process_time() < t:
    pass
print("spun", flush=True)
time.sleep(30)
"""


@needs_v1
def test_v1_stats_are_sane(v1: CgroupsV1, spawn):
    v1.create("c1", Limits(memory=64 * MiB))
    proc = spawn("c1", [sys.executable, "-c", BUSY], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdout.readline() == b"allocated\n"
    before = v1.stats("c1")
    proc.stdin.write(b"go\n")
    proc.stdin.flush()
    assert proc.stdout.readline() == b"spun\n"
    after = v1.stats("c1")
    assert before.memory_usage > 16 * MiB and before.memory_limit == 64 * MiB
    assert 0 < before.memory_used <= before.memory_usage
    assert "total_inactive_file" in before.memory_stat and before.memory_stat["rss"] > 0
    assert before.pids_current == 1 and before.pids_limit is None
    assert after.cpu_usage_ns - before.cpu_usage_ns >= 250_000_000
    assert after.cpu_user_ns + after.cpu_system_ns > 0
    assert after.io is None  # the v1 hierarchies we join have no blkio: not accounted


@needs_v1
def test_v1_kill_all_kills_a_tree_and_a_fast_forker(v1: CgroupsV1, spawn):
    v1.create("c1", Limits(pids=300))  # the limit only keeps a runaway test bounded
    forker = "sleep 30 & while :; do (sleep 30 &); done"  # double forks escape the tree
    proc = spawn("c1", ["sh", "-c", forker], stderr=subprocess.DEVNULL)
    wait_for(lambda: len(v1.procs("c1")) >= 20)
    v1.kill_all("c1")
    wait_for(lambda: v1.procs("c1") == [])
    assert proc.wait(timeout=120) == -signal.SIGKILL
    assert (ROOT / "freezer" / v1.parent / "c1" / "freezer.state").read_text() == "THAWED\n"


@needs_v1
def test_v1_kill_all_of_a_cgroup_removed_meanwhile_is_done(v1: CgroupsV1, spawn):
    """The container ends and its shim removes the cgroup while `rm -f` kills it: its
    processes are gone, which is what was asked (it was a 500: "cannot write 'THAWED'")."""
    v1.create("c1", Limits())
    proc = spawn("c1", ["sleep", "30"])
    wait_for(lambda: len(v1.procs("c1")) == 1)
    freeze = v1._freeze

    def as_the_shim_would(state: Path) -> None:  # the container ended, its shim cleaned up
        proc.kill()
        proc.wait(timeout=120)
        v1.remove("c1")
        freeze(state)

    v1._freeze = as_the_shim_would
    v1.kill_all("c1")
    assert proc.returncode == -signal.SIGKILL and not v1.exists("c1")


@needs_v1
def test_v1_remove_kills_and_leaves_nothing(v1: CgroupsV1, spawn):
    v1.create("c1", Limits(memory=64 * MiB))
    proc = spawn("c1", ["sh", "-c", "sleep 30 & sleep 30 & wait"])
    wait_for(lambda: len(v1.procs("c1")) == 3)
    v1.remove("c1")
    assert proc.wait(timeout=120) == -signal.SIGKILL
    assert leftovers(v1, "c1") == [] and not v1.exists("c1")
    v1.remove("c1")  # missing is fine
    v1.kill_all("c1")
    assert v1.procs("c1") == []


@needs_v1
@pytest.mark.parametrize(
    ("limits", "message"),
    [
        (Limits(memory=5 * MiB), "Minimum memory limit allowed is 6MB"),
        (Limits(memory=-1), "Minimum memory limit allowed is 6MB"),
        (Limits(cpus=0), "Range of CPUs is from 0.01 to {n}.00, as there are only {n} CPUs"),
        (Limits(cpus=-1), "Range of CPUs is from 0.01 to {n}.00"),
        (Limits(cpus=0.001), "Range of CPUs is from 0.01 to {n}.00"),
        (Limits(cpus=float("nan")), "Range of CPUs is from 0.01 to {n}.00"),
        (Limits(cpus=host_cpus() + 0.5), "as there are only {n} CPUs available"),
        (Limits(pids=-2), "Invalid PIDs limit -2"),
        (Limits(cpu_shares=-1), "Invalid CPU shares -1"),
    ],
)
def test_v1_impossible_limits_leave_nothing(v1: CgroupsV1, limits: Limits, message: str):
    with pytest.raises(ImpossibleLimit, match=message.format(n=host_cpus())):
        v1.create("c1", limits)
    assert leftovers(v1, "c1") == []


@needs_v1
def test_v1_edge_limits_are_accepted(v1: CgroupsV1):
    n = host_cpus()
    v1.create("c1", Limits(memory=6 * MiB, cpus=0.01, pids=-1, cpu_shares=1))
    v1.create("c2", Limits(memory=0, cpus=float(n), pids=0, cpu_shares=10**9))
    assert (ROOT / "cpu" / v1.parent / "c1" / "cpu.cfs_quota_us").read_text() == "1000\n"
    assert (ROOT / "cpu" / v1.parent / "c2" / "cpu.cfs_quota_us").read_text() == f"{n}00000\n"
    assert (ROOT / "cpu" / v1.parent / "c2" / "cpu.shares").read_text() == "262144\n"
    assert v1.stats("c1").pids_limit is None and v1.stats("c2").memory_limit is None


@needs_v1
def test_v1_a_kernel_refusal_rolls_back(v1: CgroupsV1):
    with pytest.raises(CgroupError, match=r"pids\.max"):
        v1.create("c1", Limits(pids=1 << 40))  # over PID_MAX_LIMIT: the kernel says EINVAL
    assert leftovers(v1, "c1") == []


@needs_v1
def test_v1_concurrent_creates_share_the_parent(v1: CgroupsV1):
    barrier, errors = threading.Barrier(8), []

    def create(i: int) -> None:
        barrier.wait()
        try:
            v1.create(f"c{i}", Limits(memory=64 * MiB))
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and all(v1.exists(f"c{i}") for i in range(8))


BAD_NAMES = ["", ".", "..", "../x", "a/b", "/abs", ".hidden", "a b", "x" * 200, "é", "a\n"]


@needs_v1
@pytest.mark.parametrize("name", BAD_NAMES)
def test_v1_bad_names_are_refused(v1: CgroupsV1, name: str):
    for call in (
        lambda: v1.create(name, Limits()),
        lambda: v1.add(name, os.getpid()),
        lambda: v1.remove(name),
        lambda: v1.path(name),
    ):
        with pytest.raises(CgroupError, match="invalid cgroup name"):
            call()
    with pytest.raises(CgroupError, match="invalid cgroup name"):
        detect(ROOT, parent=name)
    assert _ls(ROOT / "memory" / v1.parent) == []


# --- cgroup v2 against a fake tree -----------------------------------------------------------


@pytest.fixture
def fake_root(tmp_path: Path) -> Path:
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids\n")
    (tmp_path / "cgroup.subtree_control").write_text("")
    return tmp_path


def fake_leaf(root: Path, name: str, **files: str) -> Path:
    """A leaf as the kernel would show it; `memory_swap_max=...` makes memory.swap.max."""
    leaf = root / "vmctl" / name
    leaf.mkdir(parents=True)
    for file, text in files.items():
        (leaf / file.replace("_", ".")).write_text(text)
    return leaf


def test_detect_picks_v2_for_a_root_with_controllers(fake_root: Path):
    cg = detect(fake_root, "vmctl")
    assert cg.version == 2 and isinstance(cg, CgroupsV2)
    assert cg.path("c1") == (fake_root / "vmctl" / "c1",)


def test_detect_ignores_a_controllerless_cgroup2(tmp_path: Path):
    (tmp_path / "cgroup.controllers").write_text("\n")
    with pytest.raises(CgroupError, match="hierarchies not mounted"):
        detect(tmp_path)


def test_v2_create_writes_limits(fake_root: Path):
    leaf = fake_leaf(fake_root, "c1", memory_swap_max="max\n")
    CgroupsV2(fake_root).create("c1", Limits(memory=64 * MiB, cpus=0.5, pids=100, cpu_shares=512))
    assert (leaf / "memory.max").read_text() == str(64 * MiB)
    assert (leaf / "memory.swap.max").read_text() == str(64 * MiB)  # memory+swap = 2x
    assert (leaf / "cpu.max").read_text() == "50000 100000"
    assert (leaf / "cpu.weight").read_text() == "59"
    assert (leaf / "pids.max").read_text() == "100"
    for d in (fake_root, fake_root / "vmctl"):
        enabled = set((d / "cgroup.subtree_control").read_text().split())
        assert enabled == {"+memory", "+pids", "+cpu", "+io", "+cpuset"}


def test_v2_memory_swap_and_cpusets(fake_root: Path):
    leaf = fake_leaf(fake_root, "c1", memory_swap_max="max\n")
    limits = Limits(memory=64 * MiB, memory_swap=96 * MiB, cpuset_cpus="0", cpuset_mems="0")
    CgroupsV2(fake_root).create("c1", limits)
    assert (leaf / "memory.swap.max").read_text() == str(32 * MiB)  # swap = total - memory
    assert (leaf / "cpuset.cpus").read_text() == "0"
    assert (leaf / "cpuset.mems").read_text() == "0"
    CgroupsV2(fake_root).create("c1", Limits(memory=64 * MiB, memory_swap=-1))
    assert (leaf / "memory.swap.max").read_text() == "max"


def test_v2_no_limits_and_no_swap_accounting(fake_root: Path):
    (fake_root / "cgroup.controllers").write_text("cpu memory pids\n")
    CgroupsV2(fake_root).create("c1", Limits())
    leaf = fake_root / "vmctl" / "c1"
    assert (leaf / "memory.max").read_text() == "max"
    assert (leaf / "cpu.max").read_text() == "max 100000"
    assert (leaf / "cpu.weight").read_text() == "100"
    assert (leaf / "pids.max").read_text() == "max"
    assert not (leaf / "memory.swap.max").exists()
    assert (fake_root / "cgroup.subtree_control").read_text() == "+memory +pids +cpu"


def test_v2_a_missing_controller_refuses_and_rolls_back(fake_root: Path):
    (fake_root / "cgroup.controllers").write_text("memory pids\n")
    cg = CgroupsV2(fake_root)
    with pytest.raises(CgroupError, match="the cpu controller is off"):
        cg.create("c1", Limits(memory=64 * MiB, cpus=1))
    assert not cg.exists("c1")
    cg.create("c1", Limits(memory=64 * MiB))  # not asking for cpu: fine
    assert not (fake_root / "vmctl" / "c1" / "cpu.max").exists()


def test_v2_impossible_limits_leave_nothing(fake_root: Path):
    cg = CgroupsV2(fake_root)
    with pytest.raises(ImpossibleLimit, match="Minimum memory limit allowed is 6MB"):
        cg.create("c1", Limits(memory=MiB))
    assert not (fake_root / "vmctl").exists()


def test_v2_oom_killed_reads_memory_events(fake_root: Path):
    cg = CgroupsV2(fake_root)
    assert not cg.oom_killed("c1")  # no cgroup: nothing was killed
    leaf = fake_leaf(fake_root, "c1", memory_events="low 0\nhigh 0\nmax 4\noom 1\noom_kill 0\n")
    assert not cg.oom_killed("c1")
    (leaf / "memory.events").write_text("low 0\nhigh 0\nmax 9\noom 2\noom_kill 1\n")
    assert cg.oom_killed("c1")


def test_v2_stats_parse_the_files(fake_root: Path):
    fake_leaf(
        fake_root,
        "c1",
        memory_current="10485760\n",
        memory_max="max\n",
        memory_stat="anon 8388608\nfile 2097152\ninactive_file 1048576\nactive_file 1048576\n",
        cpu_stat="usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 0\n",
        pids_current="3\n",
        pids_max="20\n",
        io_stat="8:0 rbytes=4096 wbytes=1000 rios=1 wios=2 dbytes=0 dios=0\n"
        "253:1 rbytes=10 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n",
    )
    s = CgroupsV2(fake_root).stats("c1")
    assert s.io == ((8, 0, "read", 4096), (8, 0, "write", 1000),
                    (253, 1, "read", 10), (253, 1, "write", 0))  # fmt: skip
    assert (s.memory_usage, s.memory_limit, s.memory_cache) == (10 * MiB, None, MiB)
    assert s.memory_used == 9 * MiB and s.memory_stat["anon"] == 8 * MiB
    assert (s.cpu_usage_ns, s.cpu_user_ns, s.cpu_system_ns) == (1_500_000, 1_000_000, 500_000)
    assert (s.pids_current, s.pids_limit) == (3, 20)
    with pytest.raises(CgroupError, match="no cgroup for container c2"):
        CgroupsV2(fake_root).stats("c2")


def test_v2_io_is_unaccounted_without_the_io_controller_and_zero_before_any_io(fake_root: Path):
    fake_leaf(fake_root, "c1", io_stat="")
    assert CgroupsV2(fake_root).stats("c1").io == ()
    (fake_root / "cgroup.controllers").write_text("cpu memory pids\n")
    assert CgroupsV2(fake_root).stats("c1").io is None


def test_v2_kill_all_writes_cgroup_kill(fake_root: Path):
    leaf = fake_leaf(fake_root, "c1", cgroup_kill="0", cgroup_procs="")
    cg = CgroupsV2(fake_root)
    cg.add("c1", 4242)
    assert cg.procs("c1") == [4242]
    cg.kill_all("c1")
    assert (leaf / "cgroup.kill").read_text() == "1"


def test_v2_kill_all_without_cgroup_kill_signals_each(fake_root: Path):
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        fake_leaf(fake_root, "c1", cgroup_procs=f"{sleeper.pid}\n")
        CgroupsV2(fake_root).kill_all("c1")
        assert sleeper.wait(timeout=120) == -signal.SIGKILL
    finally:
        sleeper.kill()
        sleeper.wait()


def test_cpu_shares_convert_as_runc_does():
    assert [cpu_weight(s) for s in (2, 512, 1024, 2048, 262_144)] == [1, 59, 100, 174, 10_000]


def test_v2_freeze_waits_for_the_kernel_and_thaw_undoes_it(fake_root: Path):
    leaf = fake_leaf(fake_root, "c1", cgroup_freeze="0", cgroup_events="populated 1\nfrozen 1\n")
    cg = CgroupsV2(fake_root)
    assert not cg.frozen("c1")
    cg.freeze("c1")
    assert (leaf / "cgroup.freeze").read_text() == "1" and cg.frozen("c1")
    cg.thaw("c1")
    assert (leaf / "cgroup.freeze").read_text() == "0" and not cg.frozen("c1")


def test_v2_a_freeze_that_never_completes_is_undone_and_reported(fake_root: Path):
    leaf = fake_leaf(fake_root, "c1", cgroup_freeze="0", cgroup_events="frozen 0\n")
    with pytest.raises(CgroupError, match="did not stop"):
        CgroupsV2(fake_root).freeze("c1")
    assert (leaf / "cgroup.freeze").read_text() == "0"


@needs_v1
def test_v1_freeze_stops_the_processes_and_thaw_resumes_them(v1: CgroupsV1, spawn):
    v1.create("c1", Limits())
    counter = spawn("c1", ["sh", "-c", "while true; do :; done"])
    assert not v1.frozen("c1")
    v1.freeze("c1")
    assert (ROOT / "freezer" / v1.parent / "c1" / "freezer.state").read_text().strip() == "FROZEN"
    assert v1.frozen("c1")
    ticks = _cpu_ticks(counter.pid)
    time.sleep(0.2)  # a frozen busy loop uses no CPU at all, however long we look
    assert _cpu_ticks(counter.pid) == ticks
    v1.thaw("c1")
    assert not v1.frozen("c1")
    wait_for(lambda: _cpu_ticks(counter.pid) > ticks, timeout=60)


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


@needs_v1
def test_v1_kill_all_while_the_shim_removes_the_cgroup_kills_who_is_left(v1: CgroupsV1):
    """The container died and its shim is half-way through removing the cgroup, while a
    late exec joined what was left: kill_all finds the freezer gone and signals each."""
    v1.create("c1", Limits())
    late = subprocess.Popen(["sleep", "60"], preexec_fn=lambda: _join_all_but_freezer(v1))
    try:
        (ROOT / "freezer" / v1.parent / "c1").rmdir()
        assert v1.procs("c1") == [late.pid]
        v1.kill_all("c1")
        assert late.wait(timeout=30) == -signal.SIGKILL
    finally:
        late.kill()
        late.wait()


def _join_all_but_freezer(v1: CgroupsV1) -> None:
    for d in v1.path("c1"):
        if d.parent.parent.name != "freezer":
            (d / "cgroup.procs").write_text("0")
