"""
Packaging: the tcbridge package, its twistd plugin and the console script.
Metadata and dependencies live in setup.cfg.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(exclude=["tests", "tests.*", "bench"]), "twisted.plugins"],
    package_data={"tcbridge": ["feed/icons/*.png"], "twisted": ["plugins/tcbridge_plugin.py"]},
)
