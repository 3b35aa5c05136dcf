import os
import sys

# tests/ is not a package; make tests/timing.py importable as `timing`.
sys.path.insert(0, os.path.dirname(__file__))
