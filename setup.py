"""The one compiled part of vmtest: the dmesg parser's line scan (vmtest/collect/dmesg.py
falls back to its regex scan when the extension is missing). Everything else is in
pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("vmtest.collect._dmesgscan", ["vmtest/collect/_dmesgscan.c"],
                  extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
                  optional=True),
    ],
)
