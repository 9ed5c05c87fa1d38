# Exists only because cffi's build hook and the C extensions are passed through setup(); metadata
# lives in pyproject.toml.
from setuptools import Extension, setup

# `hvuio sim exec`'s LD_PRELOAD library (_native/simexec/preload.c): a plain shared object, not a
# Python module, built by the same build and installed with the package in hvuio/sim/_preload/
# (not a package, so module walkers never try to import it; hvuio.sim.exec finds it).
PRELOAD = Extension("hvuio.sim._preload.simexec", sources=["_native/simexec/preload.c"],
                    extra_compile_args=["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Wvla", "-fvisibility=hidden"],
                    libraries=["dl"], py_limited_api=True)

setup(cffi_modules=["_native/build.py:ffibuilder", "_native/simhost/build.py:ffibuilder"],
      ext_modules=[PRELOAD])
