import os
import sys

# Make simhelp.py importable from the test modules of this directory.
sys.path.insert(0, os.path.dirname(__file__))
