"""Builds the native lane codec (services/core/tape/nlcodec.c) next to its package; everything else is in
pyproject.toml. Optional: without a C compiler the install still works and tapes are written with zstd
byte planes (netlapse.core.tape.native logs it once)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "netlapse.core.tape._nlcodec",
            sources=["services/core/tape/nlcodec.c"],
            extra_compile_args=["-O3", "-std=gnu11", "-fno-strict-aliasing"],
            optional=True,
        )
    ]
)
