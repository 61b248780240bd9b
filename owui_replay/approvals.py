"""Signed approvals of a handoff with OpenSSH (`ssh-keygen -Y`), the format git uses.

An approver signs the manifest's exact bytes under the namespace `owui-replay-approval`;
each signature is kept in FEEDBACK.approvals/ (one file per key). Replay with an
allowed_signers file counts the distinct principals whose signature verifies against the
manifest as it is now. The manifest carries the sha256 of the JSONL and rejects, and replay
checks the JSONL against it, so a signature binds the exact lines that will be sent.

No Python dependency: keys people already have (including hardware-backed sk- keys) and the
allowed_signers file auditors know from git.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from owui_replay.errors import ExitCode, ReplayError

NAMESPACE = "owui-replay-approval"
SIGNATURE_SUFFIX = ".sig"
ARMOR_BEGIN = "-----BEGIN SSH SIGNATURE-----"
ARMOR_END = "-----END SSH SIGNATURE-----"


class NotApproved(ReplayError):
    """Too few valid approvals for this manifest: nothing is sent (exit 9)."""

    code = ExitCode.NOT_APPROVED


def approvals_dir(manifest: Path) -> Path:
    stem = manifest.name.removesuffix(".manifest.json")
    return manifest.with_name(stem + ".approvals")


def ssh_keygen() -> str:
    """The ssh-keygen to use: one line saying what is wrong when there is none that signs."""
    found = shutil.which("ssh-keygen")
    if found is None:
        raise NotApproved(
            "ssh-keygen was not found on PATH: approvals need OpenSSH 8.2 or newer "
            "(install the openssh-client package)"
        )
    probe = subprocess.run(
        [found, "-Y", "find-principals"], capture_output=True, text=True, check=False
    )
    if "unknown option" in probe.stderr or "illegal option" in probe.stderr:
        raise NotApproved(
            f"{found} is too old to sign or check approvals (ssh-keygen -Y needs OpenSSH 8.2 "
            "or newer)"
        )
    return found


@dataclass(frozen=True)
class SignatureFile:
    """What an SSHSIG blob says about itself, read without trusting it."""

    path: Path
    namespace: str
    fingerprint: str  # SHA256:... of the signing public key


def read_signature(path: Path) -> SignatureFile:
    text = path.read_text("ascii", errors="replace")
    if ARMOR_BEGIN not in text or ARMOR_END not in text:
        raise ValueError("not an SSH signature (no armor)")
    body = text.split(ARMOR_BEGIN, 1)[1].split(ARMOR_END, 1)[0]
    blob = base64.b64decode("".join(body.split()), validate=True)
    if blob[:6] != b"SSHSIG":
        raise ValueError("not an SSH signature (no SSHSIG magic)")
    position = 10  # magic, then a uint32 version

    def string() -> bytes:
        nonlocal position
        length = int.from_bytes(blob[position : position + 4], "big")
        value = blob[position + 4 : position + 4 + length]
        if len(value) != length:
            raise ValueError("truncated SSH signature")
        position += 4 + length
        return value

    public_key = string()
    namespace = string().decode("utf-8", "replace")
    digest = base64.b64encode(hashlib.sha256(public_key).digest()).decode().rstrip("=")
    return SignatureFile(path, namespace, f"SHA256:{digest}")


def sign(manifest: Path, key: Path) -> Path:
    """Sign the manifest's bytes with KEY; the signature goes to FEEDBACK.approvals/."""
    tool = ssh_keygen()
    data = manifest.read_bytes()
    done = subprocess.run(
        [tool, "-Y", "sign", "-f", str(key), "-n", NAMESPACE],
        input=data,
        capture_output=True,
        check=False,
    )
    if done.returncode != 0 or ARMOR_BEGIN.encode() not in done.stdout:
        why = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise NotApproved(f"ssh-keygen could not sign with {key}: {why[-1] if why else 'failed'}")
    folder = approvals_dir(manifest)
    folder.mkdir(exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, suffix=".partial")
    with os.fdopen(handle, "wb") as out:
        out.write(done.stdout)
        out.flush()
        os.fsync(out.fileno())
    fingerprint = read_signature(Path(temporary)).fingerprint
    target = folder / (fingerprint.replace(":", "_").replace("/", "-") + SIGNATURE_SUFFIX)
    os.replace(temporary, target)
    return target


@dataclass
class Checked:
    """One signature file, checked against the manifest and an allowed_signers file."""

    path: Path
    fingerprint: str = ""
    principals: list[str] = field(default_factory=list)  # empty: it does not count
    problem: str = ""

    def describe(self) -> str:
        if self.principals:
            return f"{self.path.name}: valid, by {', '.join(self.principals)} ({self.fingerprint})"
        return f"{self.path.name}: {self.problem}"


def check_signatures(manifest: Path, allowed_signers: Path) -> list[Checked]:
    """Every signature beside the handoff, each with the principals it proves (or why not)."""
    tool = ssh_keygen()
    if not allowed_signers.is_file():
        raise NotApproved(f"{allowed_signers}: no such allowed_signers file")
    data = manifest.read_bytes()
    folder = approvals_dir(manifest)
    results = []
    for path in sorted(folder.glob("*" + SIGNATURE_SUFFIX)) if folder.is_dir() else []:
        checked = Checked(path)
        results.append(checked)
        try:
            signature = read_signature(path)
        except (OSError, ValueError) as exc:
            checked.problem = f"unreadable ({exc})"
            continue
        checked.fingerprint = signature.fingerprint
        if signature.namespace != NAMESPACE:
            checked.problem = (
                f"signed under namespace {signature.namespace!r}, not {NAMESPACE!r}: it is not "
                "an approval"
            )
            continue
        found = subprocess.run(
            [tool, "-Y", "find-principals", "-s", str(path), "-f", str(allowed_signers)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        candidates = [p for p in found.stdout.split() if p]
        if found.returncode != 0 or not candidates:
            checked.problem = (
                f"key {signature.fingerprint} is not in {allowed_signers.name}: not an "
                "allowed signer"
            )
            continue
        for principal in candidates:
            verified = subprocess.run(
                [tool, "-Y", "verify", "-f", str(allowed_signers), "-I", principal,
                 "-n", NAMESPACE, "-s", str(path)],
                input=data, capture_output=True, check=False,
            )  # fmt: skip
            if verified.returncode == 0:
                checked.principals.append(principal)
        if not checked.principals:
            checked.problem = (
                f"by {', '.join(candidates)}, but it does not match {manifest.name}: the "
                "manifest (or the files it hashes) changed after signing"
            )
    return results


def allowed_principals(allowed_signers: Path) -> list[str]:
    """The principals an allowed_signers file names (its first field, comma-separated)."""
    names: list[str] = []
    for line in allowed_signers.read_text("utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            names.extend(p for p in line.split()[0].split(",") if p not in names)
    return names


def require_approvals(manifest: Path, allowed_signers: Path, minimum: int) -> list[str]:
    """The distinct principals who approved this exact manifest; NotApproved when too few."""
    if not manifest.is_file():
        raise NotApproved(f"{manifest.name} is missing: only a converted, signed handoff is sent")
    checked = check_signatures(manifest, allowed_signers)
    principals = sorted({p for c in checked for p in c.principals})
    if len(principals) >= minimum:
        return principals
    missing = [p for p in allowed_principals(allowed_signers) if p not in principals]
    problems = "; ".join(c.describe() for c in checked if not c.principals)
    have = f"has {len(principals)}" + (f" ({', '.join(principals)})" if principals else "")
    raise NotApproved(
        f"{manifest.name} needs {minimum} approval(s) from {allowed_signers.name}, {have}; "
        f"no valid signature from: {', '.join(missing) or 'anyone else in the file'}"
        + (f"; {problems}" if problems else "")
        + "; nothing was sent"
    )
