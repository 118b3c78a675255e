"""Packaging: one package, ``image2music``, whose import names are paths in the repository.

``graph/``, ``tools/`` and ``prompts/`` stay at the top of the repository (as the product owner asked);
``image2music/graph``, ``image2music/tools`` and ``image2music/prompts`` are committed relative links to them, so
``image2music.tools.music.abcparse`` is the file ``image2music/tools/music/abcparse.py`` for Python, editors and
type checkers alike, installed or not. Subpackages are discovered with ``find_packages`` (which follows the links)
so none can be left out of a wheel. Everything else is in ``pyproject.toml``.
"""

from setuptools import find_packages, setup

packages = find_packages(include=["image2music", "image2music.*"])
packages.append("image2music.tools.data")  # the starter knowledge base: data, no code (package data)

setup(packages=packages)
