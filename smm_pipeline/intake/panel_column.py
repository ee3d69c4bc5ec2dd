"""The `panel` column of a dropped file: which enabled panel a row is for.

With one enabled panel the column may be omitted (or a cell left empty): every row is for
that panel. With more, the column is required and every row must name an enabled panel.
Names are compared case-insensitively (panel names are lower case by configuration).
"""

from __future__ import annotations

from smm_pipeline.config import Settings
from smm_pipeline.intake.row_errors import RowError

__all__ = ["PanelChooser"]


class PanelChooser:
    """Resolves a `panel` cell to an enabled panel's name, remembering answers per cell text
    (a 100,000-row file has a handful of distinct panel cells)."""

    __slots__ = ("_cache", "_configured", "_enabled", "default")

    def __init__(self, settings: Settings) -> None:
        self._enabled = settings.panel_names
        self._configured = frozenset(p.name for p in settings.panels)
        self.default: str | None = self._enabled[0] if len(self._enabled) == 1 else None
        self._cache: dict[str, tuple[str | None, str | None]] = {}

    def header_errors(self, columns: tuple[str, ...]) -> list[RowError]:
        """A missing `panel` column is an error only when more than one panel is enabled."""
        if "panel" in columns or self.default is not None:
            return []
        names = ", ".join(self._enabled)
        return [
            RowError(
                0,
                "panel",
                f"missing column 'panel': {len(self._enabled)} panels are enabled ({names}), "
                "so each row must name its panel",
            )
        ]

    def choose(self, cell: str) -> tuple[str | None, str | None]:
        """(panel name, None), or (None, an error message for the `panel` column)."""
        answer = self._cache.get(cell)
        if answer is None:
            answer = self._cache[cell] = self._resolve(cell)
        return answer

    def _resolve(self, cell: str) -> tuple[str | None, str | None]:
        name = cell.strip().lower()
        if not name:
            if self.default is not None:
                return self.default, None
            names = ", ".join(self._enabled)
            return None, f"panel is required: {len(self._enabled)} panels are enabled ({names})"
        if name in self._enabled:
            return name, None
        if name in self._configured:
            return None, f"panel {name!r} is disabled in panels.yaml"
        return None, f"unknown panel {name!r}; enabled panels: {', '.join(self._enabled)}"
