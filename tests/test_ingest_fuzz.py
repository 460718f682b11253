"""A deterministic mutation corpus over the real sample exports (issue 24, "fuzzed").

Each case copies one real sample into tmp_path, damages one of its files with a mutator of
tests/mutations.py (seeded: Hypothesis draws the seeds, derandomised, so the corpus is the same on
every run), and ingests it for real. Whatever the damage: nothing but a one-line UserError escapes,
no case hangs, every file's stored ledger balances, and the records the damage did not touch are kept
(compared with an ingest of the intact sample in the same database, not with hard-coded counts).
"""

from __future__ import annotations

import random
import shutil
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import count
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import SHARED_DATA
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from ledger_checks import assert_ingest_balances
from mutations import Mutated, mutators_for

from pipeline.core.db import ensure_schema, transaction
from pipeline.core.runs import start_run
from pipeline.errors import UserError
from pipeline.ingest.load import ingest_export, load_ledger

EXPORTS = SHARED_DATA / "exports"
# (id, path): every real sample export, and the real X/Twitter IO users file
SAMPLES = {
    "mastodonpy": EXPORTS / "mastodon/mastodonpy-cassettes/accounts.json",
    "mastodon-docs": EXPORTS / "mastodon/mastodon-docs-examples/accounts.jsonl",
    "bsky-actors": EXPORTS / "bluesky/bskyr-actor-views",
    "bsky-records": EXPORTS / "bluesky/bskyr-repo-records",
    "bsky-car": EXPORTS / "bluesky/indigo-testdata-car",
    "praw": EXPORTS / "reddit/praw-cassettes",
    "asyncpraw": EXPORTS / "reddit/asyncpraw-cassettes",
    "coortweet-io": EXPORTS / "coordination/CooRTweet-russian-as-io",
    "qut-coretweet-io": EXPORTS / "coordination/QUT-cnt/coretweet_test_input-as-io",
    "qut-sample-io": EXPORTS / "coordination/QUT-cnt/sample_data-as-io",
    "cuba-io-users": SHARED_DATA / "twitter_io/cuba_092020_users_csv_hashed.csv",
}
CASE_SECONDS = 20  # one ingest of a damaged sample; the slowest intact one takes a few seconds here
EXAMPLES = 1  # seeds per (sample, mutation): 144 cases take about 2 minutes on 2 busy cores


def sample_files(path: Path) -> list[str]:
    """The files of a sample a mutator applies to, relative to the sample (just the file's name for one file)."""
    if path.is_file():
        return [path.name]
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file() and mutators_for(p.suffix))


def _kinds(path: Path) -> list[str]:
    kinds: dict[str, None] = {}
    for name in sample_files(path):
        kinds.update(dict.fromkeys(mutators_for(Path(name).suffix)))
    return list(kinds)


# Cases that still fail outside the plumbing this corpus owns, with what fails (strict: a fix must remove them).
# None now: a response over 16 MB is read item by item (bluesky._stream_units), and a users file cut to its
# header is a 0-unit file that a warning names, which tests/ledger_checks accepts.
XFAIL: dict[tuple[str, str], str] = {}


def _cases() -> list:
    cases = []
    for sample, path in SAMPLES.items():
        if not path.exists():
            cases.append(pytest.param(sample, "-", marks=pytest.mark.skip(reason=f"shared data {path} is absent")))
            continue
        cases += [pytest.param(sample, kind, id=f"{sample}-{kind}",
                               marks=[pytest.mark.xfail(strict=True, reason=XFAIL[sample, kind])]
                               if (sample, kind) in XFAIL else [])
                  for kind in _kinds(path)]
    return cases


class CaseHung(BaseException):
    """A case ran past its bound (a BaseException, so no reader's catch-all can swallow it)."""


@contextmanager
def bounded(seconds: float) -> Iterator[None]:
    def hang(signum: int, frame: object) -> None:
        raise CaseHung(f"ingest still running after {seconds} s")
    previous = signal.signal(signal.SIGALRM, hang)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def copy_sample(path: Path, into: Path) -> Path:
    into.mkdir(parents=True)
    if path.is_file():
        return Path(shutil.copy(path, into / path.name))
    return Path(shutil.copytree(path, into / path.name))


def mutate(copy: Path, sample: str, kind: str, seed: int) -> tuple[str, Mutated] | None:
    """Damage one file of the copied sample (the first, in seeded order, the mutator applies to). The
    generator is seeded by the case as well as the seed, so each (sample, mutation) damages its own spot."""
    rng = random.Random(f"{sample}/{kind}/{seed}")
    names = sample_files(copy)
    rng.shuffle(names)
    for name in names:
        target = copy if copy.is_file() else copy / name
        mutator = mutators_for(target.suffix).get(kind)
        if mutator is None:
            continue
        mutated = mutator(target.read_bytes(), rng)
        if mutated is not None:
            target.write_bytes(mutated.data)
            return name, mutated
    return None


def stored_total(settings, run_key: str) -> int:
    with transaction(settings) as conn:
        k = {"k": run_key}
        return (conn.execute(sa.text("select count(*) from account_snapshots where run_key = :k"), k).scalar_one()
                + conn.execute(sa.text("select count(*) from posts where run_key = :k"), k).scalar_one())


def ingest_checked(settings, run_key: str, export: Path, balanced: bool = True) -> dict[str, dict] | None:
    """Ingest within the case's bound: the stored ledger (checked to balance, file by file, unless not
    ``balanced``), or None after a UserError (checked to be one line)."""
    ensure_schema(settings)
    start_run(settings, run_key, str(export), "auto")
    try:
        with bounded(CASE_SECONDS):
            if balanced:
                return assert_ingest_balances(settings, run_key, export)
            ingest_export(settings, run_key, export)
    except UserError as exc:
        assert "\n" not in str(exc), f"a UserError's message must be one line: {exc!r}"
        return None
    with transaction(settings) as conn:
        return load_ledger(conn, run_key)


_RUNS = count()
_BASELINES: dict[str, tuple[int, dict[str, int]]] = {}


def baseline(settings, sample: str, tmp_path: Path) -> tuple[int, dict[str, int]]:
    """Stored accounts + posts of the intact sample, in total and per file: the same in every fresh
    database, so ingested once per session (its balance is test_intact_sample_balances's to check)."""
    if sample not in _BASELINES:
        run_key = f"intact-{next(_RUNS)}"
        ledger = ingest_checked(settings, run_key, copy_sample(SAMPLES[sample], tmp_path / run_key), balanced=False)
        assert ledger is not None, f"the intact sample {sample} must ingest"
        _BASELINES[sample] = (stored_total(settings, run_key), {name: row["stored"] for name, row in ledger.items()})
    return _BASELINES[sample]


@pytest.mark.parametrize("sample", [pytest.param(s, marks=pytest.mark.skipif(not p.exists(), reason=f"{p} is absent"))
                                    for s, p in SAMPLES.items()])
def test_intact_sample_balances(settings, tmp_path: Path, sample: str) -> None:
    """The corpus's reference: each intact sample ingests, stores something, and its ledger balances."""
    ledger = ingest_checked(settings, "intact", copy_sample(SAMPLES[sample], tmp_path / "intact"))
    assert ledger is not None and stored_total(settings, "intact") > 0, ledger


@pytest.mark.slow
@pytest.mark.parametrize(("sample", "kind"), _cases())
@hypothesis_settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None, phases=[Phase.generate],
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1))
def test_damaged_sample_ingests(settings, tmp_path: Path, sample: str, kind: str, seed: int) -> None:
    intact_total, intact_files = baseline(settings, sample, tmp_path)
    run_key = f"fuzz-{next(_RUNS)}"
    copy = copy_sample(SAMPLES[sample], tmp_path / run_key)
    done = mutate(copy, sample, kind, seed)
    if done is None:
        pytest.skip(f"{kind} applies to no file of {sample}")
    name, mutated = done
    case = f"{sample}/{name}: {kind} seed {seed}: {mutated.note}"
    damaged = mutated.damaged
    ledger = ingest_checked(settings, run_key, copy)
    if ledger is None:  # a UserError: allowed only where the damage may cost every record
        assert damaged is None, f"{case}: a UserError lost every record of the export"
        return
    stored = stored_total(settings, run_key)
    if damaged is not None:
        assert stored >= intact_total - damaged, (
            f"{case}: {stored} accounts + posts stored, the intact sample {intact_total}: "
            f"more than the {damaged} damaged lost; ledger {ledger}")
    label = copy.name if copy.is_file() else name
    others = {f: n for f, n in intact_files.items() if f != label and (ledger.get(f) or {}).get("stored", 0) < n}
    assert not others, f"{case}: files not damaged lost records (file: intact stored): {others}; ledger {ledger}"


# --- the shared JSON plumbing the corpus exercises, on small synthetic files ----------------------------

def _records(text: str, chunk: int = 1 << 20) -> list[tuple[str, object]]:
    import io

    from pipeline.ingest.readers.textio import _json_records

    return list(_json_records(io.StringIO(text), "f.json", chunk=chunk))


def _reasons(items: list[tuple[str, object]]) -> dict[str, str]:
    from pipeline.ingest.readers.base import Rejection

    return {loc: v.reason for loc, v in items if isinstance(v, Rejection)}


@pytest.mark.parametrize("chunk", [7, 50])
def test_record_over_the_size_limit_is_skipped_and_the_rest_read(monkeypatch, chunk: int) -> None:
    """A record over MAX_JSON_RECORD_CHARS is one rejection; the records after it are read (it is streamed
    past, never buffered whole: a string with escaped quotes and brackets in it does not end it early)."""
    from pipeline.ingest.readers import textio

    monkeypatch.setattr(textio, "MAX_JSON_RECORD_CHARS", 64)
    huge = '{"id": 2, "note": "' + 'a\\"]}[{' * 40 + '", "x": [1, {"y": 2}]}'
    items = _records(f'[{{"id": 1}}, {huge},\n {{"id": 3}}, [{{"deep": 0}}]]', chunk)
    assert [loc for loc, _ in items] == ["record 1", "record 2", "record 3", "record 4"]
    assert items[0][1] == {"id": 1} and items[2][1] == {"id": 3} and items[3][1] == [{"deep": 0}]
    assert "larger than 64 characters; skipped" in _reasons(items)["record 2"]


def test_record_over_the_size_limit_at_the_end_of_a_truncated_file(monkeypatch) -> None:
    from pipeline.ingest.readers import textio

    monkeypatch.setattr(textio, "MAX_JSON_RECORD_CHARS", 64)
    items = _records('[{"id": 1}, {"note": "' + "b" * 500, chunk=16)
    assert items[0][1] == {"id": 1}
    assert "the file ends inside it" in _reasons(items)["record 2"]


def test_broken_and_deep_records_are_refused_one_by_one() -> None:
    deep = "[" * 10_000 + "]" * 10_000
    items = _records(f'[{{"id": 1}}, {{"id": 2, "bad": tru}}, {{"a": {deep}}}, {{"id": "\x00nul\tok"}}, {{"id": 5}}]')
    assert [loc for loc, _ in items] == [f"record {n}" for n in range(1, 6)]
    reasons = _reasons(items)
    assert reasons["record 2"].startswith("not JSON") and "nested deeper" in reasons["record 3"]
    assert items[3][1] == {"id": "\x00nul\tok"} and items[4][1] == {"id": 5}  # raw control characters accepted


@pytest.mark.parametrize(("text", "trailer"), [('[{"id": 1}]\n}]x', "after the array"), ('[{"id": 1}];\n', None)])
def test_data_after_the_array_is_one_rejection(text: str, trailer: str | None) -> None:
    items = _records(text)
    assert items[0] == ("record 1", {"id": 1})
    assert list(_reasons(items)) == ([trailer] if trailer else [])


def test_one_value_followed_by_garbage_keeps_the_value() -> None:
    from pipeline.ingest.ledger import counting
    from pipeline.ingest.readers.textio import NotAnArray, json_records

    import io

    with counting() as ledger, pytest.raises(NotAnArray) as caught:
        items = []
        for item in json_records(io.StringIO('{"kind": "t2", "data": {"name": "x"}}\xe2\x85'), "about.json"):
            items.append(item)
    assert caught.value.value == {"kind": "t2", "data": {"name": "x"}}
    assert list(_reasons(items)) == ["after the value"]
    assert ledger.files["about.json"].seen == 2  # the value and the garbage: each a unit
