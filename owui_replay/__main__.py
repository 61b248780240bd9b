"""Allow `python -m owui_replay`."""

from owui_replay.entry import main  # first: it installs the stop-signal handlers

if __name__ == "__main__":
    raise SystemExit(main())
