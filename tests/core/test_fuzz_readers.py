"""The readers keep their promise on inputs made to break them: each loads a file or refuses it
with an AvatarError that names it, never another exception.

A short, derandomised run of the structure-aware fuzzing in fuzzing.py (a few seconds a reader;
hypothesis shrinks a failure to a small case). scripts/fuzz_readers.py runs the same mutations
for hours if asked, each case in a process of its own under memory and time limits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

# The engine's test extra installs hypothesis; Blender's Python, which runs the numpy-only core
# tests too, has none.
hypothesis = pytest.importorskip("hypothesis")
from fuzzing import READERS, Reader  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

T = TypeVar("T")
EXAMPLES = {"lca": 200, "ply": 250, "image": 200}  # about 2 s each on one core


@dataclass
class HypothesisDraw:
    """fuzzing.Draw on hypothesis's data: every choice is recorded, so a failure shrinks."""

    data: st.DataObject

    def integer(self, low: int, high: int) -> int:
        return self.data.draw(st.integers(low, high))

    def choice(self, options: Sequence[T]) -> T:
        return options[self.data.draw(st.integers(0, len(options) - 1))]

    def blob(self, low: int, high: int) -> bytes:
        return self.data.draw(st.binary(min_size=low, max_size=high))


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """Each reader's valid seed files (module-scoped: hypothesis runs a test many times)."""
    pytest.importorskip("PIL")  # the photo seeds are made with Pillow
    folder = tmp_path_factory.mktemp("seeds")
    return {name: reader.seeds(folder / name) for name, reader in READERS.items()}


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cases")


def _fuzz(reader: Reader, seed_files: list[Path], case: Path, data: st.DataObject) -> None:
    draw = HypothesisDraw(data)
    content, mutations = reader.mutate(draw, draw.choice(seed_files).read_bytes())
    case.write_bytes(content)
    outcome = reader.check(case)
    assert outcome.kind in ("loaded", "rig", "refused"), (outcome, mutations)
    if outcome.kind == "refused":
        assert case.name in outcome.message, outcome.message  # the message names the file


def _settings(name: str):
    return hypothesis.settings(
        max_examples=EXAMPLES[name],
        derandomize=True,  # the same cases on every run and machine
        database=None,
        deadline=None,
        suppress_health_check=list(hypothesis.HealthCheck),
    )


@_settings("lca")
@hypothesis.given(data=st.data())
def test_lca_reader_loads_or_refuses_mutated_avatars(data, seeds, cases):
    _fuzz(READERS["lca"], seeds["lca"], cases / "case.lca", data)


@_settings("ply")
@hypothesis.given(data=st.data())
def test_ply_reader_loads_or_refuses_mutated_splats(data, seeds, cases):
    _fuzz(READERS["ply"], seeds["ply"], cases / "case.ply", data)


@_settings("image")
@hypothesis.given(data=st.data())
def test_ingest_decodes_or_skips_mutated_photos(data, seeds, cases):
    _fuzz(READERS["image"], seeds["image"], cases / "case.jpg", data)


@pytest.mark.parametrize("name", sorted(READERS))
def test_the_seeds_load_and_other_formats_are_refused(name, seeds):
    """The mutations start from files the readers load (else the fuzzing would test nothing);
    the photo seeds in formats no camera writes (GIF, PPM, TGA, ICO, EPS) are refused as such."""
    for path in seeds[name]:
        outcome = READERS[name].check(path)
        if path.stem == "refused":
            assert outcome.kind == "refused" and "not an image in a format" in outcome.message, path
        else:
            assert outcome.kind in ("loaded", "rig"), (path, outcome)
