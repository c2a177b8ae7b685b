"""The Dockerfile parser, word rules, stages and .dockerignore: pure functions, no engine."""

from __future__ import annotations

import pytest
from vmctl_agent.build import dispatch, dockerfile, ignore, stages, words
from vmctl_agent.build.dockerfile import DockerfileError


def parse(text: str) -> list[dockerfile.Instruction]:
    return list(dockerfile.parse(text).instructions)


def test_continuations_comments_and_blank_lines_inside_them():
    (ins,) = parse("RUN echo a \\\n  # a comment\n\n  && echo b\n")
    assert ins.keyword == "run" and ins.line == 1
    assert ins.args == "echo a   && echo b"


def test_json_and_shell_forms():
    cmd, run, bad = parse('CMD ["sh", "-c", "echo hi"]\nRUN echo [x]\nCMD [oops\n')
    assert cmd.json == ("sh", "-c", "echo hi")
    assert run.json is None and run.args == "echo [x]"
    assert bad.json is None and bad.args == "[oops"


def test_escape_directive_changes_the_continuation_character():
    df = dockerfile.parse("# escape=`\nFROM scratch\nCOPY a `\n  b /\n")
    assert df.escape == "`"
    assert df.instructions[1].args == "a   b /"


def test_directives_stop_at_the_first_other_line():
    df = dockerfile.parse("# syntax=docker/dockerfile:1\n\n# escape=`\nFROM x\n")
    assert df.syntax == "docker/dockerfile:1" and df.escape == "\\"


def test_directive_errors_name_their_line():
    with pytest.raises(DockerfileError, match="line 1: invalid escape token 'x'"):
        dockerfile.parse("# escape=x\nFROM a\n")
    with pytest.raises(DockerfileError, match="line 2: only one escape parser directive"):
        dockerfile.parse("# escape=`\n# escape=\\\nFROM a\n")


def test_heredocs_are_read_with_their_quoting_and_tab_stripping():
    text = "RUN <<EOF\necho $HOME\nEOF\nCOPY <<-'END' /f\n\tline $X\n\tEND\nRUN true\n"
    run, copy, last = parse(text)
    assert run.heredocs == (dockerfile.Heredoc("EOF", "echo $HOME\n", True, False),)
    assert copy.heredocs == (dockerfile.Heredoc("END", "line $X\n", False, True),)
    assert last.line == 7 and last.args == "true"


def test_an_unterminated_heredoc_names_the_instruction_line():
    with pytest.raises(DockerfileError, match="line 2: unterminated heredoc EOF"):
        parse("FROM a\nRUN <<EOF\necho\n")


def test_flags_are_taken_apart():
    (ins,) = parse('COPY --from=build --chown="1:2" --link a b /dst/\n')
    assert ins.flags == (("from", "build"), ("chown", "1:2"), ("link", None))
    assert ins.args == "a b /dst/"


@pytest.mark.parametrize(
    ("text", "env", "want"),
    [
        ("${A:-x}", {}, "x"),
        ("${A:-x}", {"A": ""}, "x"),
        ("${A-x}", {"A": ""}, ""),
        ("${A:+y}", {"A": "1"}, "y"),
        ("${A:+y}", {"A": ""}, ""),
        ("${A+y}", {"A": ""}, "y"),
        ("$A/b", {"A": "a"}, "a/b"),
        ("'$A'", {"A": "a"}, "$A"),
        ('"$A b"', {"A": "a"}, "a b"),
        ("\\$A", {"A": "a"}, "$A"),
        ("${A:-${B}}", {"B": "nested"}, "nested"),
        ("a$", {}, "a$"),
    ],
)
def test_substitution_as_docker_applies_it(text, env, want):
    assert words.expand(text, env) == want


def test_split_keeps_quoted_spaces_and_reports_bad_quotes():
    assert words.split('a "b c" d\\ e', {}) == ["a", "b c", "d e"]
    with pytest.raises(words.WordError, match="no matching double-quote"):
        words.split('"open', {})
    with pytest.raises(words.WordError, match="missing '}'"):
        words.expand("${A", {})


def plan(text: str) -> stages.Plan:
    return stages.plan(dockerfile.parse(text))


def test_args_before_from_and_stages_with_names():
    p = plan("ARG BASE=busybox\nFROM $BASE AS one\nRUN a\nFROM one\nCOPY --from=one /a /b\n")
    assert [a.args for a in p.global_args] == ["BASE=busybox"]
    assert [(s.name, s.base, len(s.steps)) for s in p.stages] == [
        ("one", "$BASE", 1),
        ("", "one", 1),
    ]
    assert p.target("ONE") is p.stages[0]


def test_target_needs_only_the_stages_it_uses():
    text = "FROM a AS x\nFROM b AS y\nFROM c AS z\nCOPY --from=x /f /f\nFROM d\n"
    p = plan(text)
    assert [s.name for s in stages.needed(p, p.target("z"))] == ["x", "z"]
    with pytest.raises(DockerfileError, match="failed to reach build target nope"):
        p.target("nope")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the Dockerfile cannot be empty"),
        ("FROM a\nFOO bar\n", "line 2: unknown instruction: FOO"),
        ("RUN x\n", "line 1: no build stage in current context"),
        (
            "FROM a\nRUN --mount=type=cache,target=/x true\n",
            "line 2: the --mount option requires BuildKit",
        ),
        ("FROM a\nRUN --network=none true\n", "the --network option requires BuildKit"),
        ("FROM a\nCOPY --bogus=1 a b\n", "line 2: unknown flag: bogus"),
        ("FROM a\nWORKDIR\n", "line 2: WORKDIR requires at least one argument"),
        ("FROM a AS 1x\n", "invalid name for build stage"),
        ("FROM a AS x\nFROM b AS x\n", "line 2: duplicate name x"),
        ("FROM a b\n", "FROM requires either one or three arguments"),
        ("FROM a\nONBUILD ONBUILD RUN x\n", "Chaining ONBUILD"),
    ],
)
def test_mistakes_are_named_with_their_line(text, message):
    with pytest.raises(DockerfileError, match=message.replace("(", r"\(")):
        plan(text)


def test_dockerignore_patterns_as_go_reads_them():
    pats = ignore.read("# comment\n*.log\n!keep.log\nbuild/\n**/tmp\n/secret\ndocs/**\n")
    assert ignore.ignored("a.log", pats) and not ignore.ignored("keep.log", pats)
    assert ignore.ignored("build/x/y", pats)  # a directory's pattern takes what is under it
    assert ignore.ignored("tmp", pats) and ignore.ignored("a/b/tmp/c", pats)
    assert ignore.ignored("secret", pats) and not ignore.ignored("a/secret", pats)
    assert ignore.ignored("docs/a/b", pats) and not ignore.ignored("docs", pats)
    assert not ignore.ignored("sub/a.log", pats)  # `*` stays within one directory


def test_dockerignore_last_match_wins_and_classes():
    pats = ignore.read("*\n!src\nsrc/*.pyc\n[ab].txt\n")
    assert ignore.ignored("x", pats) and not ignore.ignored("src/m.py", pats)
    assert ignore.ignored("src/m.pyc", pats) and ignore.ignored("a.txt", pats)


# -- what instructions do to the config (dispatch.py) -------------------------------------------


def state(**config) -> dispatch.StageState:
    return dispatch.StageState("sha256:" + "0" * 64, dispatch.initial_config(config), [], [])


def one(text: str) -> dockerfile.Instruction:
    (ins,) = dockerfile.parse(text).instructions
    return ins


def test_env_and_label_forms():
    s = state(Env=["PATH=/bin", "A=old"])
    ins = one('ENV A=new B="two words" C=$A')
    text = dispatch.apply(s, ins, s.variables({}))
    assert s.config["Env"] == ["PATH=/bin", "A=new", "B=two words", "C=old"]  # $A: before
    assert text == "ENV A=new B=two words C=old"
    legacy = one("ENV D some value here")
    dispatch.apply(s, legacy, s.variables({}))
    assert "D=some value here" in s.config["Env"]
    dispatch.apply(s, one('LABEL "a b"=c d=e'), {})
    assert s.config["Labels"] == {"a b": "c", "d": "e"}
    with pytest.raises(DockerfileError, match="ENV must have two arguments"):
        dispatch.apply(s, one("ENV lonely"), {})


def test_args_scope_and_build_env():
    s = state()
    given = {"B": "from-cli", "HTTP_PROXY": "http://proxy"}
    dispatch.apply_arg(s, one("ARG A=1 B=2 C"), given, {"C": "global"})
    assert s.args == {"A": "1", "B": "from-cli", "C": "global"}
    dispatch.apply(s, one("ENV A=env"), s.variables(given))
    assert dispatch.build_env(s, given) == ["B=from-cli", "C=global", "HTTP_PROXY=http://proxy"]
    assert s.variables(given)["A"] == "env"  # ENV wins over ARG


def test_cmd_entrypoint_shell_and_exec_forms():
    s = state(Cmd=["base"])
    dispatch.apply(s, one('SHELL ["/bin/bash", "-c"]'), {})
    dispatch.apply(s, one("ENTRYPOINT run me"), {})
    assert s.config["Entrypoint"] == ["/bin/bash", "-c", "run me"]
    assert s.config["Cmd"] is None  # an ENTRYPOINT drops the base image's CMD
    assert dispatch.apply(s, one('CMD ["a", "b"]'), {}) == 'CMD ["a" "b"]'
    with pytest.raises(DockerfileError, match="SHELL requires the arguments to be in JSON"):
        dispatch.apply(s, one("SHELL /bin/sh"), {})


def test_expose_volume_user_workdir_and_healthcheck():
    s = state()
    assert dispatch.apply(s, one("EXPOSE 80 8000-8001/udp"), {}) == "EXPOSE 80 8000-8001/udp"
    assert set(s.config["ExposedPorts"]) == {"80/tcp", "8000/udp", "8001/udp"}
    with pytest.raises(DockerfileError, match="invalid containerPort: x"):
        dispatch.apply(s, one("EXPOSE x"), {})
    dispatch.apply(s, one('VOLUME ["/a", "/b"]'), {})
    assert s.config["Volumes"] == {"/a": {}, "/b": {}}
    dispatch.apply(s, one("WORKDIR /srv"), {})
    dispatch.apply(s, one("WORKDIR app/../web"), {})
    assert s.config["WorkingDir"] == "/srv/web"
    text = dispatch.apply(
        s, one("HEALTHCHECK --interval=1m30s --timeout=500ms --retries=3 CMD curl x"), {}
    )
    assert s.config["Healthcheck"] == {
        "Test": ["CMD-SHELL", "curl x"], "Interval": 90 * 10**9, "Timeout": 5 * 10**8,
        "Retries": 3,
    }  # fmt: skip
    assert text == 'HEALTHCHECK &{["CMD-SHELL" "curl x"] "1m30s" "500ms" "0s" "0s" \'\\x03\'}'
    with pytest.raises(DockerfileError, match='invalid duration "5 minutes"'):
        dispatch.apply(s, one("HEALTHCHECK --interval='5 minutes' CMD x"), {})
