"""The typed stub over the cffi lib names exactly what the C header declares."""
import os
import re

from ring._ringlib import lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_stub_matches_header():
    header = open(os.path.join(ROOT, "csrc", "ring.h")).read()
    stub = open(os.path.join(ROOT, "ring", "_ringlib.pyi")).read()
    funcs = set(re.findall(r"\b(ring_\w+)\s*\(", re.sub(r"/\*.*?\*/", "", header, flags=re.S)))
    consts = set(re.findall(r"#define\s+(RING_\w+)", header))
    stub_funcs = set(re.findall(r"def (ring_\w+)\(", stub))
    stub_consts = set(re.findall(r"^\s+(RING_\w+): int", stub, flags=re.M))
    assert funcs == stub_funcs
    assert consts == stub_consts
    for name in funcs | consts:
        assert hasattr(lib, name), name
