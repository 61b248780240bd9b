"""The tool's version, written once: pyproject.toml reads it (`attr:`) and the code imports it.

A module of its own so that no module inside the package has to import the package root.
"""

__version__ = "0.2.0"
