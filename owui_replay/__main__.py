"""Allow `python -m owui_replay`."""

import sys

from owui_replay.cli import main

sys.exit(main())
