# The native module is built by cffi (API mode) from shmq_build.py; the rest is pyproject.toml.
from setuptools import setup

setup(cffi_modules=["shmq_build.py:ffibuilder"])
