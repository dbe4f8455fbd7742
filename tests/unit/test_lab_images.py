"""The lab image builds' cache keys and the base image's pip settings, without building."""

from __future__ import annotations

from pathlib import Path

import pytest

from kured_testbed.lab import baseimage
from kured_testbed.lab.debian import missing_packages
from kured_testbed.lab.images import KURED_INPUTS, REPO, files_key, tree_files


def make_tree(root: Path) -> None:
    for name, text in {
        "src/kured/a.py": "x = 1\n",
        "src/kured/__pycache__/a.cpython-311.pyc": "bytecode",
        "src/kured.egg-info/PKG-INFO": "Name: kured\n",
        "src/kured/stray.pyc": "bytecode",
        "README.md": "# kured\n",
    }.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_the_key_covers_what_the_build_context_holds(tmp_path: Path) -> None:
    make_tree(tmp_path)
    files = tree_files(tmp_path, ["README.md", "src"])
    assert [str(f.relative_to(tmp_path)) for f in files] == ["README.md", "src/kured/a.py"]
    key = files_key(tmp_path, files, "base-id")
    (tmp_path / "src/kured/__pycache__/a.cpython-311.pyc").write_text("other bytecode")
    assert files_key(tmp_path, tree_files(tmp_path, ["README.md", "src"]), "base-id") == key
    assert files_key(tmp_path, files, "another-base-id") != key
    (tmp_path / "src/kured/a.py").write_text("x = 2\n")
    assert files_key(tmp_path, files, "base-id") != key


def test_the_inputs_are_what_dockerignore_lets_in() -> None:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    allowed = {line[1:] for line in lines if line.startswith("!")}
    assert allowed | {"Dockerfile"} == set(KURED_INPUTS)


def test_pip_conf_names_the_bundle_and_only_reachable_indexes() -> None:
    text = baseimage.pip_conf(
        {
            "index-url": "https://pypi.mirror.example/simple",
            "extra-index-url": "file:///opt/pypi/simple https://extra.example/simple",
            "find-links": "/opt/wheels",
        }
    )
    assert text.splitlines() == [
        "[global]",
        f"cert = {baseimage.CA_IN_IMAGE}",
        "index-url = https://pypi.mirror.example/simple",
        "extra-index-url = https://extra.example/simple",
    ]
    assert baseimage.pip_conf({"extra-index-url": "file:///opt/pypi/simple"}).count("\n") == 2


def test_host_pip_settings_are_pips_own_with_the_environment_winning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "pip.conf"
    config.write_text("[global]\nindex-url = https://file.example/simple\ntimeout = 5\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(config))
    monkeypatch.setenv("PIP_INDEX_URL", "https://env.example/simple")
    settings = baseimage.host_pip_settings()
    assert settings["index-url"] == "https://env.example/simple"
    assert settings["timeout"] == "5"


def test_missing_packages_are_named_by_their_probe(tmp_path: Path) -> None:
    present = tmp_path / "present.h"
    present.write_text("")
    wanted = {"sh": "dash", str(present): "libc6-dev", "no-such-tool-here": "the-tool-package"}
    assert missing_packages(wanted) == ["the-tool-package"]
