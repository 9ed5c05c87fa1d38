# Exists only because cffi's build hook is passed through setup(); metadata lives in pyproject.toml.
from setuptools import setup

setup(cffi_modules=["_native/build.py:ffibuilder", "_native/simhost/build.py:ffibuilder"])
