"""The guest has Debian's python3 and nothing from PyPI: the agent must import only the stdlib."""

import json
import subprocess
from pathlib import Path

AGENT_DIR = Path(__file__).resolve().parent.parent / "guest-agent"
DEBIAN_PYTHON = Path("/usr/bin/python3")

PROBE = """
import json, pkgutil, importlib, sys
sys.path.insert(0, sys.argv[1])
import vmctl_agent
for info in pkgutil.walk_packages(vmctl_agent.__path__, "vmctl_agent."):
    if not info.name.endswith("__main__"):
        importlib.import_module(info.name)
top = {m.split(".")[0] for m in sys.modules}
print(json.dumps(sorted(top - set(sys.stdlib_module_names) - {"vmctl_agent", "__main__"})))
"""


def test_agent_imports_only_the_standard_library():
    assert DEBIAN_PYTHON.exists(), "Debian's python3 is missing: apt-get install python3"
    out = subprocess.run(
        [str(DEBIAN_PYTHON), "-I", "-S", "-c", PROBE, str(AGENT_DIR)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout) == []
