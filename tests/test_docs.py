"""The README and docs/ point at what exists: every relative link names a file of the repository, and every command
block that runs this project's code (`python -m trl_kimi...`, `trl-kimi ...`, `python examples/...`,
`python benchmarks/...`, and those under `accelerate launch`) names a module or file that exists and only flags that
its parser accepts (read from its `--help`, all targets in one subprocess on the tree under test)."""

import json
import os
import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```", re.M | re.S)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
SHELL_FENCES = {"bash", "sh", "shell", "console"}
OPERATORS = {"&&", "||", ";", "|", "&"}
# Flags that a parser takes without listing them in --help: TrlParser's YAML file, `trl-kimi train`'s launcher.
TRL_PARSER_EXTRA = {"--config"}
TRAIN_EXTRA = {"--accelerate_config"}
ACCELERATE = ("module", "accelerate.commands.accelerate_cli", ("launch",))

# Run each target's --help in one interpreter (one torch import): {"key": [kind, name, argv]} -> {"key": text}.
HELP_DRIVER = r"""
import contextlib, io, json, runpy, sys
targets = json.loads(sys.argv[1])
out = {}
for key, (kind, name, argv) in targets.items():
    buffer = io.StringIO()
    sys.argv = [name, *argv, "--help"]
    try:
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            if kind == "module":
                runpy.run_module(name, run_name="__main__", alter_sys=True)
            else:
                runpy.run_path(name, run_name="__main__")
    except SystemExit as exit:
        if exit.code not in (0, None):
            buffer.write(f"\nEXIT {exit.code}")
    except BaseException as error:
        buffer.write(f"\nERROR {error!r}")
    out[key] = buffer.getvalue()
print("\n@@HELP@@" + json.dumps(out))
"""


def _strip_code(text: str) -> str:
    """Markdown without its fenced blocks and inline code (links there are not links)."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def relative_links(path: Path) -> list[str]:
    """Links to files of the repository (`docs/x.md`, `../examples`, `recipe.md#anchor`, `#anchor`), not URLs."""
    targets = [m.group(1) for m in LINK.finditer(_strip_code(path.read_text()))]
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]


def anchors(path: Path) -> set[str]:
    """The anchors GitHub makes of a Markdown file's headings: the text lower-cased, punctuation dropped, spaces to
    hyphens, `-1`, `-2` ... for repeats."""
    seen: dict[str, int] = {}
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", FENCE.sub("", path.read_text()), re.M):
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").replace("*", "")
        slug = re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")
        seen[slug] = seen.get(slug, -1) + 1
        if seen[slug]:
            seen[f"{slug}-{seen[slug]}"] = 0
    return set(seen)


def shell_commands(text: str) -> list[list[str]]:
    """The simple commands of the shell fences of a Markdown text, as token lists (continuations joined, comments,
    `VAR=value` prefixes and redirections removed, split at `&&`, `;`, `|`)."""
    commands = []
    for match in FENCE.finditer(text):
        if match.group(1) not in SHELL_FENCES:
            continue
        for line in match.group(2).replace("\\\n", " ").splitlines():
            try:
                tokens = shlex.split(line, comments=True)
            except ValueError:  # unbalanced quotes in a prose-like line: not a command we check
                continue
            current: list[str] = []
            tokens = [*tokens, ";"]
            i = 0
            while i < len(tokens):
                token = tokens[i]
                if token in OPERATORS:
                    while current and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", current[0]):
                        current.pop(0)
                    if current:
                        commands.append(current)
                    current = []
                elif re.fullmatch(r"\d?(>>?|<)|&>", token):
                    i += 1  # a redirection and its file
                elif not re.match(r"^\d?[<>]", token):
                    current.append(token)
                i += 1
    return commands


def _flags(tokens: list[str]) -> list[str]:
    return [t.split("=", 1)[0] for t in tokens if t.startswith("--") and len(t) > 2]


def _python_target(tokens: list[str]) -> tuple[tuple | None, list[str], str | None]:
    """(target, flags, problem) for the argv after `python`, `trl-kimi` or `accelerate launch <options>`."""
    if tokens[0] == "-m":
        module, rest = tokens[1], tokens[2:]
        if not module.startswith("trl_kimi"):
            return None, [], None
        if module == "trl_kimi.cli":
            return _trl_kimi_target(rest)
        spec_path = REPO / Path(*module.split("."))
        if not (spec_path.with_suffix(".py").is_file() or (spec_path / "__init__.py").is_file()):
            return None, [], f"no module {module}"
        return ("module", module, ()), _flags(rest), None
    script, rest = tokens[0], tokens[1:]
    if not script.startswith(("examples/", "benchmarks/")):
        return None, [], None
    if not (REPO / script).is_file():
        return None, [], f"no file {script}"
    return ("path", str(REPO / script), ()), _flags(rest), None


def _trl_kimi_target(tokens: list[str]) -> tuple[tuple | None, list[str], str | None]:
    from trl_kimi.cli import COMMANDS

    if not tokens or tokens[0] in ("-h", "--help", "--version", "examples"):
        return None, [], None
    if tokens[0] not in COMMANDS:
        return None, [], f"no trl-kimi command {tokens[0]!r}"
    return ("module", "trl_kimi.cli", (tokens[0],)), _flags(tokens[1:]), None


def command_checks(tokens: list[str]) -> list[tuple[tuple | None, list[str], str | None]]:
    """What to check in one command: [(help target, flags it must accept, problem found without running it)]."""
    if tokens[0] == "trl-kimi":
        return [_trl_kimi_target(tokens[1:])]
    if re.fullmatch(r"python3?(\.\d+)?", tokens[0]) and len(tokens) > 1:
        return [_python_target(tokens[1:])]
    if tokens[:2] == ["accelerate", "launch"]:
        rest = tokens[2:]
        # accelerate's own options come first, each with at most one value; the script or `-m module` ends them.
        i = 0
        while i < len(rest) and rest[i] != "-m" and not rest[i].endswith(".py"):
            i += 1
        launch_flags = _flags(rest[:i])
        if i == len(rest):
            return [(ACCELERATE, launch_flags, None)]
        return [(ACCELERATE, launch_flags, None), _python_target(rest[i:])]
    return []


@cache
def help_texts(targets: tuple[tuple, ...]) -> dict[tuple, str]:
    """Each target's `--help` output, from the tree under test (PYTHONPATH = the repository)."""
    keys = {f"t{i}": [kind, name, list(argv)] for i, (kind, name, argv) in enumerate(targets)}
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200", "HF_HUB_OFFLINE": "1"}
    run = subprocess.run(
        [sys.executable, "-c", HELP_DRIVER, json.dumps(keys)],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=600,
    )  # fmt: skip
    assert "@@HELP@@" in run.stdout, run.stderr[-3000:]
    texts = json.loads(run.stdout.rsplit("@@HELP@@", 1)[1])
    return {target: texts[f"t{i}"] for i, target in enumerate(targets)}


def _accepted(target: tuple, text: str) -> set[str]:
    kind, name, argv = target
    accepted = set(re.findall(r"(?<![\w-])--[A-Za-z][\w-]*", text))
    uses_trl_parser = name == "trl_kimi.cli" or (kind == "path" and "TrlParser" in Path(name).read_text())
    if uses_trl_parser:
        accepted |= TRL_PARSER_EXTRA
    if name == "trl_kimi.cli" and argv == ("train",):
        accepted |= TRAIN_EXTRA  # ... and every `accelerate launch` option (see below)
    return accepted


def test_every_relative_link_points_to_a_file():
    missing = []
    for doc in DOCS:
        for link in relative_links(doc):
            path, _, anchor = link.partition("#")
            target = (doc.parent / path).resolve() if path else doc
            if not target.exists():
                missing.append(f"{doc.relative_to(REPO)}: {link} (no such file)")
            elif anchor and target.suffix == ".md" and anchor not in anchors(target):
                missing.append(f"{doc.relative_to(REPO)}: {link} (no such heading in {target.name})")
    assert not missing, "links to what does not exist:\n" + "\n".join(missing)


@pytest.mark.slow
def test_every_documented_command_names_a_target_and_flags_that_exist():
    checks = []
    for doc in DOCS:
        for tokens in shell_commands(doc.read_text()):
            for target, flags, problem in command_checks(tokens):
                checks.append((doc.relative_to(REPO), " ".join(tokens)[:100], target, flags, problem))
    problems = [f"{doc}: {problem}: {line}" for doc, line, _, _, problem in checks if problem]
    targets = tuple(sorted({target for *_, target, _, problem in checks if target and not problem}))
    assert len(targets) >= 5, targets  # the README's demo and the CLI are among them: the parsing works
    texts = help_texts(targets)
    accelerate_flags = _accepted(ACCELERATE, texts[ACCELERATE]) if ACCELERATE in texts else set()
    for doc, line, target, flags, problem in checks:
        if problem or target is None:
            continue
        text = texts[target]
        if "\nERROR " in text or "\nEXIT " in text:
            problems.append(f"{doc}: `{' '.join(target[1:2] + target[2])} --help` failed: {text[-500:]}: {line}")
            continue
        accepted = _accepted(target, text)
        if target[1:] == ("trl_kimi.cli", ("train",)):
            accepted |= accelerate_flags
        unknown = [flag for flag in flags if flag not in accepted and flag.replace("-", "_") not in accepted]
        if unknown:
            problems.append(f"{doc}: unknown flags {unknown}: {line}")
    assert not problems, "\n".join(problems)


def test_command_parsing(tmp_path):
    text = (
        "```bash\n"
        "OMP_NUM_THREADS=1 python benchmarks/x.py --a 1 \\\n    --b=2  # a comment --c\n"
        "pip install torch && python -m trl_kimi.demo --output_dir runs/demo > log 2>&1\n"
        "accelerate launch --config_file c.yaml examples/y.py --d 3\n"
        "```\n```python\npython -m not_a_shell_block --e\n```\n"
    )
    commands = shell_commands(text)
    assert commands == [
        ["python", "benchmarks/x.py", "--a", "1", "--b=2"],
        ["pip", "install", "torch"],
        ["python", "-m", "trl_kimi.demo", "--output_dir", "runs/demo"],
        ["accelerate", "launch", "--config_file", "c.yaml", "examples/y.py", "--d", "3"],
    ]
    assert _flags(commands[0]) == ["--a", "--b"]
    (check,) = command_checks(commands[2])
    assert check == (("module", "trl_kimi.demo", ()), ["--output_dir"], None)
    launch, script = command_checks(commands[3])
    assert launch == (ACCELERATE, ["--config_file"], None) and script[2] == "no file examples/y.py"
    assert command_checks(["trl-kimi", "trian"])[0][2] == "no trl-kimi command 'trian'"
    assert relative_links(REPO / "README.md")  # the README links to its docs
    heading = tmp_path / "h.md"
    heading.write_text(
        "# A `trl-kimi` guide\n## tau: the batch's policy (τ)\n## Rewards\n## Rewards\n```\n# not one\n```\n"
    )
    assert anchors(heading) == {"a-trl-kimi-guide", "tau-the-batchs-policy-τ", "rewards", "rewards-1"}


def test_ci_runs_the_readme_commands_as_written():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    install = 'pip install torch==2.13.0 && pip install -e ".[dev]"'
    assert f"{install} && python -m trl_kimi.demo --output_dir runs/demo" in readme
    assert "\npython -m pytest -q\n" in readme
    assert f"\n{install}\n" in ci and "\npython -m pytest -q\n" in ci
    assert "-m venv" in ci  # in a venv of its own, not the base interpreter
