"""The bad-input corpus (``tests/bad_inputs.py``) through the ``fsar`` command, in-process.

Every case must end as a clear one-line error (exit 2, the file/option/clip named), a counted
skip or a correct result: never a traceback, a silent wrong answer or a misleading message.
``benchmarks/bad_input.py`` runs the same corpus in subprocesses and counts the outcomes.
"""

import pytest
from bad_inputs import CASES, Shared, judge, run_in_process

EXPECTED = {"error": "clear_error", "skip": "counted_skip", "ok": "correct"}


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    return Shared(tmp_path_factory.mktemp("shared"))


def test_corpus_covers_every_kind():
    kinds = {c.kind for c in CASES}
    assert len(CASES) == len({c.id for c in CASES}), "case ids must be unique"
    assert {"number out of range", "frame bit depth and layout", "formats that work", "split files",
            "broken clips and links"} <= kinds


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, shared, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    argv = case.build(work, shared)
    outcome = run_in_process(argv)
    verdict, detail = judge(case, work, outcome)
    assert verdict == EXPECTED[case.expect], (
        f"{case.id}: {verdict} ({detail})\nargv: {argv}\nstdout:\n{outcome.out[-3000:]}\nstderr:\n{outcome.err[-3000:]}"
    )
