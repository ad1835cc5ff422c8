"""Ships the model bundles of models/ inside the wheel, as b2bscore/bundled_models/.

models/ stays at the root of the repository (training writes there and bundles are
reviewed there); the build copies it into the package so that an installed b2bscore finds
its models wherever it lives (`b2bscore.kit.settings.default_models_dir`). Everything
else about the build is in pyproject.toml.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildPyWithModels(build_py):
    """build_py, plus every bundle directory under models/ copied into the package."""

    def run(self) -> None:
        """Build the package, then add the bundles (not in editable mode: it reads models/)."""
        super().run()
        source = ROOT / "models"
        if self.editable_mode or not source.is_dir():
            return
        target = Path(self.build_lib) / "b2bscore" / "bundled_models"
        shutil.copytree(
            source, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".*", "__pycache__")
        )


setup(cmdclass={"build_py": BuildPyWithModels})
