"""What each Dockerfile instruction does to a stage's image config, as dockerd's classic
builder does it: pure functions over a StageState. Steps that write files (RUN, COPY, ADD,
WORKDIR's directory) are carried out by builder.py; here they only get their command line
for the history and the cache.
"""

from __future__ import annotations

import copy
import json
import posixpath
import re
from dataclasses import dataclass, field

from vmctl_agent.build import words
from vmctl_agent.build.dockerfile import DockerfileError, Instruction

DEFAULT_SHELL = ("/bin/sh", "-c")
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PROXY_ARGS = (
    "HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy",
    "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy",
)  # fmt: skip
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1, "us": 10**3, "µs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9}
_UNITS["h"] = 3600 * 10**9


# The fields dockerd writes in every built image's config, unset.
_EMPTY_CONFIG = {
    "Hostname": "", "Domainname": "", "User": "", "AttachStdin": False, "AttachStdout": False,
    "AttachStderr": False, "Tty": False, "OpenStdin": False, "StdinOnce": False, "Env": None,
    "Cmd": None, "Image": "", "Volumes": None, "WorkingDir": "", "Entrypoint": None,
    "OnBuild": None, "Labels": None,
}  # fmt: skip


@dataclass
class StageState:
    """One stage while it is built: its image so far and the variables in scope."""

    image_id: str
    config: dict  # the image config's "config" part
    layers: list[dict]
    history: list[dict]
    escape: str = "\\"
    author: str = ""
    args: dict[str, str | None] = field(default_factory=dict)  # ARGs declared in this stage
    cmd_set: bool = False

    def env(self) -> dict[str, str]:
        return dict(e.partition("=")[::2] for e in self.config.get("Env") or [])

    def variables(self, build_args: dict[str, str]) -> dict[str, str]:
        """What `$VAR` means in an instruction: declared ARGs, then ENV on top."""
        found = {k: v for k, v in self.args.items() if v is not None}
        found.update({k: build_args[k] for k in PROXY_ARGS if k in build_args})
        return {**found, **self.env()}

    def shell(self) -> list[str]:
        return list(self.config.get("Shell") or DEFAULT_SHELL)


def initial_config(base: dict) -> dict:
    """The stage starts from its base image's config (a copy: the base is not changed)."""
    config = {**_EMPTY_CONFIG, **copy.deepcopy(base)} if base else dict(_EMPTY_CONFIG)
    env = config.get("Env") or []
    if not any(e.startswith("PATH=") for e in env):
        config["Env"] = [*env, DEFAULT_PATH]
    return config


# -- variables ---------------------------------------------------------------------------------


def key_values(ins: Instruction, variables: dict[str, str], escape: str) -> list[tuple[str, str]]:
    """ENV and LABEL: `k=v k2="v 2"`, or the legacy `ENV k some value`."""
    text = ins.args
    first = words.split(text, {}, escape)[0] if text else ""
    if "=" not in first:
        key, _, value = text.partition(" ")
        if not value.strip() and ins.keyword == "env":
            raise DockerfileError("ENV must have two arguments", ins.line)
        return [(key, words.expand(value.strip(), variables, escape))]
    pairs = []
    for word in raw_words(text):
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise DockerfileError(f"{ins.keyword.upper()} names can not be blank", ins.line)
        pairs.append((words.expand(key, variables, escape), words.expand(value, variables, escape)))
    return pairs


def raw_words(text: str) -> list[str]:
    """Split on unquoted whitespace, keeping quotes (expanded later, word by word)."""
    out, word, quote, i = [], [], "", 0
    while i < len(text):
        ch = text[i]
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in " \t":
            if word:
                out.append("".join(word))
                word = []
            i += 1
            continue
        elif ch == "\\" and i + 1 < len(text):
            word.append(ch)
            i += 1
            ch = text[i]
        word.append(ch)
        i += 1
    if word:
        out.append("".join(word))
    return out


def apply_env(state: StageState, pairs: list[tuple[str, str]]) -> str:
    env = state.config.setdefault("Env", [])
    for key, value in pairs:
        index = next((i for i, e in enumerate(env) if e.partition("=")[0] == key), None)
        if index is None:
            env.append(f"{key}={value}")
        else:
            env[index] = f"{key}={value}"
    return "ENV " + " ".join(f"{k}={v}" for k, v in pairs)


def apply_label(state: StageState, pairs: list[tuple[str, str]]) -> str:
    labels = state.config.get("Labels") or {}
    labels.update(dict(pairs))
    state.config["Labels"] = labels
    return "LABEL " + " ".join(f"{k}={v}" for k, v in pairs)


def apply_arg(state: StageState, ins: Instruction, build_args: dict, globals_: dict) -> str:
    """`ARG NAME[=default]`: a --build-arg wins, then a global ARG's value, then the default.
    The history shows the default as written (expanded), never a --build-arg's value."""
    variables = state.variables(build_args)
    shown = []
    for word in raw_words(ins.args):
        name, sep, default = word.partition("=")
        value = words.expand(default, variables, state.escape) if sep else None
        shown.append(f"{name}={value}" if sep else name)
        if name in build_args:
            value = build_args[name]
        elif not sep and name in globals_:
            value = globals_[name]
        state.args[name] = value
    return "ARG " + " ".join(shown)


def build_env(state: StageState, build_args: dict[str, str]) -> list[str]:
    """The ARGs a RUN sees in its environment (and its cache key): those with a value that
    no ENV overrides, sorted, as dockerd's FilterAllowed gives them."""
    env = state.env()
    found = {k: v for k, v in state.args.items() if v is not None and k not in env}
    found.update({k: build_args[k] for k in PROXY_ARGS if k in build_args and k not in env})
    return sorted(f"{k}={v}" for k, v in found.items())


# -- the config's other fields -----------------------------------------------------------------


def command_line(state: StageState, ins: Instruction) -> list[str]:
    """RUN, CMD and ENTRYPOINT: the exec form as given, the shell form through SHELL."""
    if ins.json is not None:
        return list(ins.json)
    return [*state.shell(), ins.args]


def apply_cmd(state: StageState, ins: Instruction) -> str:
    cmd = command_line(state, ins)
    state.config["Cmd"] = cmd
    state.cmd_set = True
    return f"CMD {go_list(cmd)}"


def apply_entrypoint(state: StageState, ins: Instruction) -> str:
    entrypoint = command_line(state, ins)
    state.config["Entrypoint"] = entrypoint if entrypoint != [*state.shell(), ""] else None
    if not state.cmd_set:
        state.config["Cmd"] = None
    return f"ENTRYPOINT {go_list(entrypoint)}"


def apply_shell(state: StageState, ins: Instruction) -> str:
    if ins.json is None:
        raise DockerfileError("SHELL requires the arguments to be in JSON form", ins.line)
    state.config["Shell"] = list(ins.json)
    return f"SHELL [{' '.join(ins.json)}]"


def apply_expose(state: StageState, ins: Instruction, variables: dict) -> str:
    ports = state.config.get("ExposedPorts") or {}
    given = words.split(ins.args, variables, state.escape)
    for word in given:
        for port in _ports(word, ins.line):
            ports[port] = {}
    state.config["ExposedPorts"] = ports
    return "EXPOSE " + " ".join(given)


def _ports(word: str, line: int) -> list[str]:
    number, _, proto = word.partition("/")
    proto = proto.lower() or "tcp"
    first, _, last = number.partition("-")
    if not first.isdigit() or (last and not last.isdigit()) or proto not in ("tcp", "udp", "sctp"):
        raise DockerfileError(f"invalid containerPort: {word}", line)
    return [f"{p}/{proto}" for p in range(int(first), int(last or first) + 1)]


def apply_volume(state: StageState, ins: Instruction, variables: dict) -> str:
    paths = list(ins.json) if ins.json is not None else words.split(ins.args, variables)
    volumes = state.config.get("Volumes") or {}
    for path in paths:
        if not path.strip():
            raise DockerfileError("VOLUME specified can not be an empty string", ins.line)
        volumes[path] = {}
    state.config["Volumes"] = volumes
    return f"VOLUME [{' '.join(paths)}]"


def apply_user(state: StageState, ins: Instruction, variables: dict) -> str:
    state.config["User"] = words.expand(ins.args, variables, state.escape)
    return "USER " + state.config["User"]


def apply_stopsignal(state: StageState, ins: Instruction, variables: dict) -> str:
    state.config["StopSignal"] = words.expand(ins.args, variables, state.escape)
    return "STOPSIGNAL " + state.config["StopSignal"]


def apply_maintainer(state: StageState, ins: Instruction, variables: dict) -> str:
    state.author = words.expand(ins.args, variables, state.escape)
    return "MAINTAINER " + state.author


def apply_onbuild(state: StageState, ins: Instruction) -> str:
    keyword, _, rest = ins.args.partition(" ")
    trigger = f"{keyword.upper()} {rest.strip()}".strip()
    state.config["OnBuild"] = [*(state.config.get("OnBuild") or []), trigger]
    return "ONBUILD " + trigger


def workdir(state: StageState, ins: Instruction, variables: dict) -> str:
    """The new WORKDIR (relative to the last one), set in the config."""
    path = words.expand(ins.args, variables, state.escape)
    current = state.config.get("WorkingDir") or "/"
    state.config["WorkingDir"] = posixpath.normpath(posixpath.join(current, path))
    return state.config["WorkingDir"]


def apply_healthcheck(state: StageState, ins: Instruction) -> str:
    if ins.args.strip().upper() == "NONE":
        state.config["Healthcheck"] = {"Test": ["NONE"]}
        return "HEALTHCHECK NONE"
    check = {"Test": _healthcheck_test(ins)}
    for flag, key in _HEALTHCHECK_TIMES:
        _duration_flag(ins, flag, key, check)
    retries = ins.flag("retries")
    if retries is not None:
        if not retries.isdigit() or int(retries) < 1:
            raise DockerfileError("--retries must be at least 1", ins.line)
        check["Retries"] = int(retries)
    state.config["Healthcheck"] = check
    times = " ".join(f'"{go_duration(check.get(key, 0))}"' for _, key in _HEALTHCHECK_TIMES)
    retries_text = _go_char(check.get("Retries", 0))
    return f"HEALTHCHECK &{{{go_list(check['Test'])} {times} {retries_text}}}"


_HEALTHCHECK_TIMES = (
    ("interval", "Interval"),
    ("timeout", "Timeout"),
    ("start-period", "StartPeriod"),
    ("start-interval", "StartInterval"),
)


def _healthcheck_test(ins: Instruction) -> list[str]:
    keyword, _, rest = ins.args.partition(" ")
    if keyword.upper() != "CMD":
        raise DockerfileError(f'Unknown type "{keyword}" in HEALTHCHECK (try CMD)', ins.line)
    rest = rest.strip()
    try:
        exec_form = json.loads(rest) if rest.startswith("[") else None
    except ValueError:
        exec_form = None
    if isinstance(exec_form, list) and all(isinstance(x, str) for x in exec_form):
        return ["CMD", *exec_form]
    return ["CMD-SHELL", rest]


def _duration_flag(ins: Instruction, flag: str, key: str, check: dict) -> None:
    value = ins.flag(flag)
    if value is None:
        return
    total, pos = 0, 0
    for match in _DURATION.finditer(value):
        if match.start() != pos:
            break
        total += int(float(match[1]) * _UNITS[match[2]])
        pos = match.end()
    if pos != len(value) or not value:
        raise DockerfileError(f'time: invalid duration "{value}"', ins.line)
    check[key] = total


def apply(state: StageState, ins: Instruction, variables: dict) -> str:
    """An instruction that only changes the config (not RUN, COPY, ADD, ARG or WORKDIR's
    directory): applied to `state`; the text dockerd records for it."""
    return _CONFIG_ONLY[ins.keyword](state, ins, variables)


_CONFIG_ONLY = {
    "env": lambda s, ins, v: apply_env(s, key_values(ins, v, s.escape)),
    "label": lambda s, ins, v: apply_label(s, key_values(ins, v, s.escape)),
    "cmd": lambda s, ins, v: apply_cmd(s, ins),
    "entrypoint": lambda s, ins, v: apply_entrypoint(s, ins),
    "shell": lambda s, ins, v: apply_shell(s, ins),
    "onbuild": lambda s, ins, v: apply_onbuild(s, ins),
    "healthcheck": lambda s, ins, v: apply_healthcheck(s, ins),
    "expose": apply_expose,
    "volume": apply_volume,
    "user": apply_user,
    "stopsignal": apply_stopsignal,
    "maintainer": apply_maintainer,
    "workdir": workdir,  # the config's part of it
}


def go_duration(ns: int) -> str:
    """A duration as Go's time.Duration prints it: 5s, 1m30s, 1.5s, 100ms, 0s."""
    if ns == 0:
        return "0s"
    if ns < 10**9:
        for unit, size in (("ms", 10**6), ("µs", 10**3), ("ns", 1)):
            if ns >= size:
                return f"{_trim(ns / size)}{unit}"
    hours, rest = divmod(ns, 3600 * 10**9)
    minutes, rest = divmod(rest, 60 * 10**9)
    seconds = _trim(rest / 10**9) + "s"
    return (f"{hours}h" if hours else "") + (f"{minutes}m" if hours or minutes else "") + seconds


def _trim(value: float) -> str:
    return f"{value:.9f}".rstrip("0").rstrip(".")


def _go_char(value: int) -> str:
    """An int as Go's %q prints it (a quoted character)."""
    return "'" + (chr(value) if 32 <= value < 127 else f"\\x{value:02x}") + "'"


def go_list(items: list[str]) -> str:
    """A list as Go's %q prints it: `["a" "b"]`."""
    return "[" + " ".join(json.dumps(i, ensure_ascii=False) for i in items) + "]"


def nop(state: StageState, text: str, *, single: bool = False) -> list[str]:
    """The command dockerd records for a step that runs nothing: `#(nop) ` then the text
    (one argument for WORKDIR, COPY and ADD, two for the rest, as dockerd has it)."""
    if single:
        return [*state.shell(), f"#(nop) {text}"]
    return [*state.shell(), "#(nop) ", text]
