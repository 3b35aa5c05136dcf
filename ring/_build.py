"""cffi builder for the ring's C core (referenced from setup.py cffi_modules).

csrc/ring.h is both the C header and the cdef, so the two cannot drift.
"""
from __future__ import annotations

import os
import re

from cffi import FFI

_HERE = os.path.dirname(os.path.abspath(__file__))
_CSRC = os.path.join(os.path.dirname(_HERE), "csrc")


def _cdef_text() -> str:
    with open(os.path.join(_CSRC, "ring.h"), encoding="utf-8") as f:
        text = f.read()
    # cffi's cdef takes no comments it cannot parse inside #defines; strip all.
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return text


ffibuilder = FFI()
ffibuilder.cdef(_cdef_text())
ffibuilder.set_source(
    "ring._ringlib",
    '#include "ring.h"',
    sources=[os.path.relpath(os.path.join(_CSRC, name))
             for name in ("ring.c", "reader.c", "drain.c", "crc32c.c", "segscan.c")],
    include_dirs=[_CSRC],
    extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
