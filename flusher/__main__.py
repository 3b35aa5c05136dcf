"""``python -m flusher cat|verify|stats ...`` (see flusher/cli.py)."""
import sys

from flusher.cli import main

sys.exit(main())
