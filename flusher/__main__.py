"""``python -m flusher cat|verify|stats ...`` (see flusher/segments/tools.py)."""
import sys

from flusher.segments.tools import main

sys.exit(main())
