"""The thin PySide6 layer: windows and widgets over engine/ and nodes/; no training logic."""
