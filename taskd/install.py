"""`taskd install-service`: this taskd as a systemd service, the way the README lays it out.

The system user `taskd`; the configuration (and the files it includes) in /etc/taskd, an existing
one kept; the environment file (0640, group taskd) and the API token (0600: the unit loads it as the
credential api-token); the unit in /etc/systemd/system, running this installation's `taskd`; then
`systemd-analyze verify`. What it created is listed in /etc/taskd/.installed, which `--uninstall`
reads to remove exactly that, keeping the state in /var/lib/taskd. `--dry-run` says every step and
changes nothing; `--root DIR` puts everything under DIR (for packaging and for tests).
"""

from __future__ import annotations

import grp
import os
import pwd
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from taskd.config import Config

USER = "taskd"
ETC = Path("/etc/taskd")
UNIT = Path("/etc/systemd/system/taskd.service")
STATE = Path("/var/lib/taskd")
MANIFEST = ETC / ".installed"
SHIPPED_BIN = "/opt/taskd/bin/taskd"


@dataclass(frozen=True)
class Installer:
    """Where to install, and whether to do it or only say it."""

    root: Path
    dry_run: bool

    def at(self, path: Path) -> Path:
        return self.root / path.relative_to("/")

    def say(self, text: str) -> None:
        print(text)

    # -- installing --------------------------------------------------------------------------------
    def install(self, config: Config) -> list[Path]:
        """Every step; returns the files created (as on the target system)."""
        created: list[Path] = []
        self._user()
        self._directory(ETC, 0o755)
        for source in config.files:
            target = ETC / source.resolve().relative_to(config.base_dir.resolve())
            if self._file(target, source.read_bytes(), 0o644):
                created.append(target)
        env = files("taskd").joinpath("service", "taskd.env").read_bytes()
        if self._file(ETC / "taskd.env", env, 0o640, group=USER):
            created.append(ETC / "taskd.env")
        if self._file(ETC / "token", (secrets.token_urlsafe(32) + "\n").encode(), 0o600, shown="(a new random token)"):
            created.append(ETC / "token")
        unit = self.unit_text().encode()
        if self._file(UNIT, unit, 0o644, replace=True):
            created.append(UNIT)
        if created:
            listed = "".join(f"{path}\n" for path in created)
            self._file(MANIFEST, (self._manifest_text() + listed).encode(), 0o600, replace=True, quiet=True)
        self._verify()
        self.say("next: systemctl daemon-reload && systemctl enable --now taskd")
        return created

    def unit_text(self) -> str:
        """The shipped unit, running this installation's taskd."""
        text = files("taskd").joinpath("service", "taskd.service").read_text()
        here = str(Path(sys.prefix) / "bin" / "taskd")
        return text.replace(SHIPPED_BIN, here)

    def _manifest_text(self) -> str:
        held = self.at(MANIFEST)
        return held.read_text() if held.exists() else ""

    def _user(self) -> None:
        try:
            pwd.getpwnam(USER)
            self.say(f"user {USER}: exists")
            return
        except KeyError:
            pass
        command = ["useradd", "--system", "--home-dir", str(STATE), "--no-create-home"]
        command += ["--shell", "/usr/sbin/nologin", USER]
        if self.root != Path("/"):
            self.say(f"user {USER}: not created under --root (on the system: {' '.join(command)})")
            return
        self._run(command)

    def _directory(self, path: Path, mode: int) -> None:
        target = self.at(path)
        if target.is_dir():
            return
        self.say(f"{'would create' if self.dry_run else 'create'} {path}/ (mode {mode:o})")
        if not self.dry_run:
            target.mkdir(parents=True, mode=mode)

    def _file(
        self,
        path: Path,
        content: bytes,
        mode: int,
        group: str | None = None,
        replace: bool = False,
        shown: str | None = None,
        quiet: bool = False,
    ) -> bool:
        """Write `path` unless it exists (or `replace`); return whether it was written."""
        target = self.at(path)
        if target.exists() and not replace:
            self.say(f"{path}: exists, kept")
            return False
        if not quiet:
            verb = "would write" if self.dry_run else "write"
            self.say(f"{verb} {path} (mode {mode:o}{', group ' + group if group else ''})")
            if self.dry_run:
                body = shown if shown is not None else content.decode(errors="replace")
                self.say("".join(f"    {line}\n" for line in body.splitlines()).rstrip("\n"))
        if self.dry_run:
            return True
        target.parent.mkdir(parents=True, exist_ok=True)
        # Created with its mode from the start: the token is never readable by anyone else.
        descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(content)
        os.chmod(target, mode)
        if group is not None and self.root == Path("/"):
            shutil.chown(target, group=grp.getgrnam(group).gr_gid)
        return True

    def _verify(self) -> None:
        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            self.say("systemd-analyze: not found (apt-get install systemd); the unit was not verified")
            return
        if self.dry_run:
            self.say(f"would run: {analyze} verify {UNIT}")
            return
        unit = self.at(UNIT)
        if self.root == Path("/"):
            self._run([analyze, "verify", str(unit)])
            return
        # The unit names /etc/taskd: check a copy that names the files under DIR instead (its file
        # name stays taskd.service: systemd-analyze takes the unit's name from it).
        folder = unit.parent / ".verify"
        folder.mkdir(exist_ok=True)
        copy = folder / "taskd.service"
        copy.write_text(unit.read_text().replace(str(ETC), str(self.at(ETC))))
        try:
            self._run([analyze, "verify", str(copy)])
        finally:
            shutil.rmtree(folder)

    def _run(self, command: list[str]) -> None:
        if self.dry_run:
            self.say(f"would run: {' '.join(command)}")
            return
        self.say(f"run: {' '.join(command)}")
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        words = (done.stdout + done.stderr).strip()
        if done.returncode != 0 or words:
            raise InstallError(f"{' '.join(command)} failed ({done.returncode}): {words}")

    # -- removing ----------------------------------------------------------------------------------
    def uninstall(self) -> list[Path]:
        """Remove what `install` created (as its manifest lists); the state stays."""
        manifest = self.at(MANIFEST)
        if not manifest.exists():
            raise InstallError(f"{MANIFEST} is missing: nothing installed by taskd install-service here")
        listed = [Path(line) for line in manifest.read_text().splitlines() if line.strip()]
        self.say("first: systemctl disable --now taskd")
        removed = []
        for path in [*listed, MANIFEST]:
            target = self.at(path)
            if target.exists():
                self.say(f"{'would remove' if self.dry_run else 'remove'} {path}")
                if not self.dry_run:
                    target.unlink()
                removed.append(path)
        etc = self.at(ETC)
        if not self.dry_run and etc.is_dir():  # the folders it made, once empty
            for folder in sorted((p for p in etc.rglob("*") if p.is_dir()), reverse=True):
                if not any(folder.iterdir()):
                    folder.rmdir()
            if not any(etc.iterdir()):
                etc.rmdir()
        self.say(f"kept: {STATE} (the run history, owned by {USER}) and the user (userdel {USER} removes it)")
        return removed


class InstallError(Exception):
    """A step of the installation failed."""
