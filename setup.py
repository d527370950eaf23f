"""Build and install zactor.

The C object store in csrc/ is compiled by cffi in out-of-line API mode: the build script
zactor/store/_build.py declares the C interface and setuptools compiles it into the
extension module ``zactor.store._zstore`` on ``pip install .`` and ``pip install -e .``.
"""

import compileall
import os

from setuptools import find_packages, setup
from setuptools.command.build_ext import build_ext


class BuildExtAndBytecode(build_ext):
    """Builds the C store; an in-place build (``pip install -e .``) also byte-compiles the
    package, as pip does for a regular install. Without it, where PYTHONDONTWRITEBYTECODE is
    set (this project's CI machines), every process of a session compiled all of zactor's
    modules at its start: ``zactor.init()`` + the first task took 0.27-0.42 s instead of
    0.18-0.27 s here (docs/performance.md, runs K, with the command)."""

    def run(self):
        super().run()
        if self.inplace:
            here = os.path.dirname(os.path.abspath(__file__))
            for package in ("zactor", "chaos"):
                compileall.compile_dir(os.path.join(here, package), quiet=1)


setup(
    name="zactor",
    version="0.1.0",
    description="A distributed execution framework for Python in the spirit of Ray (OSDI 2018)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["zactor", "zactor.*", "chaos"]),  # chaos: `zactor chaos`
    package_data={"zactor.store": ["*.h"]},
    setup_requires=["cffi>=1.15"],
    cffi_modules=["zactor/store/_build.py:ffibuilder"],
    install_requires=[
        "pyzmq>=25.0",
        "cffi>=1.15",
        "cloudpickle>=2.0",
        "lz4>=4.0",
        "sqlite-utils>=3.35",
        "numpy>=1.22",
        # psutil: process trees, PSS memory and liveness checks across platforms; doing this
        # by parsing /proc by hand is the kind of code psutil already gets right.
        "psutil>=5.9",
        # msgpack: the wire protocol's envelope and bodies. Unlike pickle it cannot run code
        # when a garbage or hostile frame arrives, and it is several times faster than json.
        "msgpack>=1.0",
    ],
    extras_require={
        "test": [
            "pytest>=7.0",
            "pytest-timeout>=2.1",
            "hypothesis>=6.80",
            "ruff>=0.4",
        ],
        # only examples/ uses these: environments, plots and progress bars
        "examples": [
            "gymnasium>=0.29",
            "matplotlib>=3.5",
            "tqdm>=4.60",
        ],
    },
    entry_points={"console_scripts": ["zactor=zactor.cli:main"]},
    cmdclass={"build_ext": BuildExtAndBytecode},
)
