"""Render resources/icons/tunegraph.svg to the PNG sizes of the hicolor theme and a Windows .ico.

    python packaging/render_icons.py            # writes resources/icons/tunegraph-<N>.png + .ico

Uses Qt's SVG renderer (PySide6-Essentials ships QtSvg), so no extra tool is needed. The renders
are committed, so the .deb and NSIS builds and the Windows CI only read them.
"""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

ICONS = Path(__file__).resolve().parents[1] / "resources" / "icons"
PNG_SIZES = (16, 24, 32, 48, 64, 128, 256)
ICO_SIZES = (16, 24, 32, 48, 64, 128, 256)


def render_png(svg: Path, size: int) -> bytes:
    """One square PNG render of `svg` at `size` pixels."""
    from PySide6 import QtCore, QtGui, QtSvg

    image = QtGui.QImage(size, size, QtGui.QImage.Format.Format_ARGB32)
    image.fill(QtCore.Qt.GlobalColor.transparent)
    painter = QtGui.QPainter(image)
    painter.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing)
    QtSvg.QSvgRenderer(str(svg)).render(painter)
    painter.end()
    buffer = QtCore.QBuffer()
    buffer.open(QtCore.QIODevice.OpenModeFlag.WriteOnly)
    image.save(buffer, "PNG")
    return bytes(buffer.data())


def ico_bytes(pngs: dict[int, bytes]) -> bytes:
    """A Windows .ico holding PNG-compressed images (valid since Windows Vista)."""
    header = struct.pack("<HHH", 0, 1, len(pngs))
    offset = len(header) + 16 * len(pngs)
    entries, data = b"", b""
    for size, png in sorted(pngs.items()):
        dim = 0 if size >= 256 else size  # 0 means 256 in an ICONDIRENTRY
        entries += struct.pack("<BBBBHHII", dim, dim, 0, 0, 1, 32, len(png), offset + len(data))
        data += png
    return header + entries + data


def main() -> int:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6 import QtGui

    app = QtGui.QGuiApplication.instance() or QtGui.QGuiApplication([])  # noqa: F841
    svg = ICONS / "tunegraph.svg"
    pngs = {size: render_png(svg, size) for size in sorted(set(PNG_SIZES) | set(ICO_SIZES))}
    for size in PNG_SIZES:
        (ICONS / f"tunegraph-{size}.png").write_bytes(pngs[size])
    (ICONS / "tunegraph.ico").write_bytes(ico_bytes({s: pngs[s] for s in ICO_SIZES}))
    print(f"Rendered {len(PNG_SIZES)} PNGs and tunegraph.ico into {ICONS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
