"""Packaging: the top-level folders install under one import namespace.

``graph/``, ``tools/`` and ``prompts/`` stay at the top of the repository (as the product owner asked) and are
installed as ``image2music.graph``, ``image2music.tools`` and ``image2music.prompts`` through ``package_dir``;
the application lives in ``image2music/``. Subpackages are discovered with ``find_packages`` so none can be
left out of a wheel. Everything else is in ``pyproject.toml``.
"""

from setuptools import find_packages, setup

ROOTS = {
    "image2music": "image2music",
    "image2music.graph": "graph",
    "image2music.tools": "tools",
    "image2music.prompts": "prompts",
}

packages = []
for name, folder in ROOTS.items():
    packages.append(name)
    packages += [f"{name}.{sub}" for sub in find_packages(folder)]
packages.append("image2music.tools.data")  # the starter knowledge base: data, no code (package data below)

setup(packages=packages, package_dir=ROOTS)
