"""The range each numeric config key accepts, declared next to the key (`ranged`), and the check
of a composed config against them (`check_ranges`): one line naming the key, the value and the
range. Nothing heavy is imported: the CLI checks before TensorFlow loads."""

from __future__ import annotations

from dataclasses import dataclass, field

from dlx.errors import DlxError


@dataclass(frozen=True)
class Range:
    """The values a numeric key accepts: `[low, high]`, `(` or `)` for an open end."""

    text: str

    def bounds(self) -> tuple[float, float, bool, bool]:
        low, high = (float(part) for part in self.text[1:-1].split(","))
        return low, high, self.text[0] == "(", self.text[-1] == ")"

    def __contains__(self, value) -> bool:
        low, high, open_low, open_high = self.bounds()
        above = value > low if open_low else value >= low
        below = value < high if open_high else value <= high
        return bool(above and below)

    def __str__(self) -> str:
        low, high, open_low, open_high = self.bounds()
        show = lambda v: f"{v:g}" if abs(v) < 1e6 or v != int(v) else f"{int(v):,}"  # noqa: E731
        return f"{'(' if open_low else '['}{show(low)}, {show(high)}{')' if open_high else ']'}"


def ranged(default, spec: str):
    """A numeric field (or a list of numbers) with the range its values must fall in (null,
    where allowed, passes)."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"range": Range(spec)})
    return field(default=default, metadata={"range": Range(spec)})


def check_ranges(schema, values: dict, prefix: str = "") -> None:
    """Every value of a config node (plain dict) whose schema field declares a range lies in it:
    one line naming the key, the value and the range. Nested schemas are walked too."""
    import dataclasses

    for f in dataclasses.fields(schema):
        value = values.get(f.name) if isinstance(values, dict) else None
        key = f"{prefix}{f.name}"
        rng = f.metadata.get("range")
        if rng is not None and value is not None:
            for where, number in ([(f"{key}[{i}]", v) for i, v in enumerate(value)] if isinstance(value, list) else [(key, value)]):
                if isinstance(number, bool) or not isinstance(number, (int, float)) or number != number or number not in rng:
                    raise DlxError(f"{where}: {number!r} is outside the allowed range {rng}")
        nested = _schema_of(schema, f)
        if nested is not None and isinstance(value, dict):
            check_ranges(nested, value, f"{key}.")
        elif nested is not None and isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, dict):
                    check_ranges(nested, item, f"{key}[{i}].")


def _schema_of(schema, f):
    """The dataclass a field holds, directly or as List[...] / Optional[...] of one."""
    import dataclasses
    import typing

    hint = typing.get_type_hints(schema).get(f.name)
    for candidate in (hint, *typing.get_args(hint)):
        if dataclasses.is_dataclass(candidate):
            return candidate
    return None
