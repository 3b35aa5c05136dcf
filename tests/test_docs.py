"""The README and docs/ cannot drift from the code: every `capture ...` command they show parses
with the real command line, every TOML block they show is a valid config, and the README's
"Run a shard yourself" block runs, exactly as written, against the bundled simulator."""
from __future__ import annotations

import argparse
import glob
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from capture import cli, config
from timing import timeout

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = [os.path.join(REPO, "README.md"), *sorted(glob.glob(os.path.join(REPO, "docs", "*.md")))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def _blocks(lang: str | None = None) -> list[tuple[str, str]]:
    out = []
    for page in PAGES:
        with open(page) as f:
            text = f.read()
        for m in FENCE.finditer(text):
            if lang is None or m.group(1) == lang:
                out.append((os.path.relpath(page, REPO), m.group(2)))
    return out


def _capture_commands() -> list[tuple[str, str]]:
    """`capture ...` invocations in shell blocks and in inline code of the pages."""
    found = []
    for page in PAGES:
        with open(page) as f:
            text = f.read()
        rel = os.path.relpath(page, REPO)
        for m in FENCE.finditer(text):
            if m.group(1) in ("", "sh", "bash", "console"):
                for line in m.group(2).splitlines():
                    found.append((rel, line.strip(), "block"))
        for m in re.finditer(r"`((?:/opt/capture/bin/)?capture [^`]+)`", FENCE.sub("", text)):
            found.append((rel, m.group(1), "prose"))
    cmds = []
    for rel, line, where in found:
        line = re.sub(r"^(\$ )?/opt/capture/bin/", "", line)
        if not line.startswith("capture ") or "..." in line:
            continue
        # the command itself: up to a pipe, redirection, background or chain
        line = re.split(r"\s(?:\||&&|;|&|>|2>)(?:\s|$)|\s2?>\S", line)[0]
        cmds.append((rel, line, where))
    return cmds


def test_the_pages_show_commands():
    assert len(_capture_commands()) >= 10


def _subparser(parser: argparse.ArgumentParser, words: list[str]) -> tuple[argparse.ArgumentParser, list[str]]:
    """The (sub)parser the leading words select, and the words after them."""
    while words:
        sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        if sub is None or words[0] not in sub.choices:
            break
        parser, words = sub.choices[words[0]], words[1:]
    return parser, words


@pytest.mark.parametrize("page,command,where", _capture_commands())
def test_every_capture_command_shown_parses(page, command, where):
    # usage notation: [optional] parts are shown, A|B takes A, NAMES in capitals are placeholders
    argv = [t.split("|")[0] for t in shlex.split(command.replace("[", "").replace("]", ""))[1:]]
    argv = [("0" if t == "N" else "x") if re.fullmatch(r"[A-Z][A-Z_]*", t) else t for t in argv]
    parser = cli.build_parser()
    if where == "prose":  # `capture run`, `capture replay --to-nats`: the command and its flags exist
        sub, rest = _subparser(parser, argv)
        assert sub is not parser, f"{page}: no command `{command}`"
        flags = [w.split("=")[0] for w in rest if w.startswith("--")]
        if any(a.nargs == argparse.REMAINDER for a in sub._actions):
            # the command hands its words to a parser of its own: ask it
            words = argv[:len(argv) - len(rest)]
            r = subprocess.run([sys.executable, "-m", "capture.cli", *words, "--help"],
                               capture_output=True, text=True, timeout=timeout(30))
            assert r.returncode == 0, f"{page}: `capture {' '.join(words)} --help` failed: {r.stderr}"
            known = set(re.findall(r"--[\w-]+", r.stdout))
        else:
            known = set(sub._option_string_actions)
        unknown = [f for f in flags if f not in known]
        assert not unknown, f"{page}: `{command}`: no such option {unknown}"
        return
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: unknown subcommand or flag
        pytest.fail(f"{page}: `{command}` is not a valid capture command line (exit {e.code})")
    assert args.cmd == argv[0]


def _toml_blocks() -> list[tuple[str, str]]:
    """```toml blocks, and the TOML files that shell blocks write with a heredoc."""
    out = _blocks("toml")
    for page, block in _blocks("sh"):
        for m in re.finditer(r"cat > \S+\.toml <<'EOF'\n(.*?)^EOF$", block, re.S | re.M):
            out.append((page, m.group(1)))
    return out


def test_the_pages_show_configs():
    assert _toml_blocks()


@pytest.mark.parametrize("page,block", _toml_blocks())
def test_every_toml_block_is_a_valid_config(page, block):
    config.loads(block, page)


def _run_a_shard_block() -> str:
    with open(os.path.join(REPO, "README.md")) as f:
        text = f.read()
    m = re.search(r"<!-- run-a-shard: begin -->\n```sh\n(.*?)```\n<!-- run-a-shard: end -->", text, re.S)
    assert m, "README: the run-a-shard block is missing"
    return m.group(1)


@pytest.mark.skipif(shutil.which("curl") is None, reason="the README's block uses curl")
def test_readme_run_a_shard_yourself(tmp_path):
    """The README's commands, verbatim, in a fresh directory, with the venv's bin first on PATH
    (what `. .venv/bin/activate` does)."""
    script = _run_a_shard_block()
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    ring_dir = "/dev/shm/capture-try"
    assert not os.path.exists(ring_dir), f"{ring_dir} exists: another run of this test is going on?"
    try:
        r = subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=timeout(180))
    finally:
        shutil.rmtree(ring_dir, ignore_errors=True)
    logs = "".join(f"\n--- {p.name}:\n{p.read_text()[-3000:]}" for p in tmp_path.glob("*.log"))
    assert r.returncode == 0, f"stdout:\n{r.stdout}\nstderr:\n{r.stderr}{logs}"
    out = r.stdout
    assert "capture_messages_total{" in out, out
    # the status table names the shard, and cat printed three data frames as JSON lines
    assert re.search(r"^0\s+kraken\b", out, re.M) or '"venue": "kraken"' in out, out
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    assert len(lines) >= 3, out
    assert all('"type": "data"' in ln or '"type":"data"' in ln for ln in lines[-3:]), out
    assert os.path.isdir(tmp_path / "try-data" / "kraken")
