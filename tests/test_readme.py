"""The README's two commands are the ones CI and users run."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _commands():
    text = (ROOT / "README.md").read_text()
    section = text.split("## The two commands", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section, flags=re.S)


def test_ci_runs_the_readme_test_command():
    main_cmd, test_cmd = _commands()
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_cmd.strip() in ci
    assert "pytest" in test_cmd and "ci/constraints.txt" in test_cmd
    # lint and format are checked before the tests, and the slowest tests are named
    assert test_cmd.index("ruff check .") < test_cmd.index("ruff format --check .")
    assert test_cmd.index("ruff format --check .") < test_cmd.index("pytest")
    assert "--durations=15" in test_cmd


def test_main_command_opens_the_gui_with_the_sample():
    main_cmd, _ = _commands()
    assert main_cmd.strip().endswith("napari-sansa gui --sample")
    from napari_sansa.cli import _parser

    args = _parser().parse_args(["gui", "--sample"])
    assert args.command == "gui" and args.sample


def test_constraints_pin_the_local_torch_only_for_ci():
    pins = [
        line
        for line in (ROOT / "ci" / "constraints.txt").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert pins == ["torch==2.13.0"]
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"torch>=2.3"' in pyproject  # users elsewhere get torch the normal way
