"""``python -m capture.receiver``: see :mod:`capture.receiver.process`."""
import sys

from capture.receiver.process import main

if __name__ == "__main__":
    sys.exit(main())
