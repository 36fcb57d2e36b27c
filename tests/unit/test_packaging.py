"""pyproject.toml installs the whole tool: every module, every folder, every data file it opens.

`.ci/run` also installs it into a fresh virtualenv and runs the installed command from another
folder; these checks say which line of pyproject.toml a new file needs, in a second.
"""
from __future__ import annotations

import fnmatch
import glob
import os
import tomllib

from helpers import ROOT

with open(os.path.join(ROOT, "pyproject.toml"), "rb") as _fh:
    PROJECT = tomllib.load(_fh)
SETUPTOOLS = PROJECT["tool"]["setuptools"]


def test_every_top_level_module_and_folder_is_installed():
    modules = {os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "*.py"))}
    folders = {os.path.basename(os.path.dirname(p)) for p in glob.glob(os.path.join(ROOT, "*", "__init__.py"))}
    assert set(SETUPTOOLS["py-modules"]) == modules
    assert set(SETUPTOOLS["packages"]) == folders - {"tests"}


def test_every_data_file_inside_a_package_travels_with_it():
    for package in SETUPTOOLS["packages"]:
        data = [os.path.relpath(p, os.path.join(ROOT, package))
                for p in glob.glob(os.path.join(ROOT, package, "**", "*"), recursive=True)
                if os.path.isfile(p) and not p.endswith((".py", ".pyc")) and "__pycache__" not in p]
        patterns = SETUPTOOLS.get("package-data", {}).get(package, [])
        missing = [d for d in data if not any(fnmatch.fnmatch(d, pat) for pat in patterns)]
        assert not missing, f"{package}: add to [tool.setuptools.package-data]: {missing}"


def test_the_six_scripts_are_commands_named_as_the_readme_says():
    scripts = PROJECT["project"]["scripts"]
    assert scripts == {f"devrev-{name.replace('_', '-')}": f"{name}:main"
                       for name in ("merge_contacts", "restore_contacts", "find_duplicates", "create_test_sample",
                                    "verify_backups", "approve_plan")}
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    assert all(command in readme for command in scripts)
