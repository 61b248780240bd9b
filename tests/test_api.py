"""The public Python API: the chain without the CLI, as an Airflow or Dagster task runs it."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

import owui_replay as owr
from tests.helpers import REAL_EXPORT, ROOT, environment
from tests.openwebui_stub import ADMIN_TOKEN, openwebui_stub
from tests.portkey_stub import API_KEY, portkey_stub


def test_every_public_name_resolves_and_is_documented() -> None:
    readme = (ROOT / "README.md").read_text("utf-8")
    section = readme.split("## Use from Python", 1)[1].split("\n## ", 1)[0]
    for name in owr.__all__:
        assert getattr(owr, name) is not None
        if name != "__version__":
            assert f"`{name}`" in section, f"{name} is not in README's Use from Python"


def test_convert_verify_replay_without_the_cli(tmp_path: Path) -> None:
    out = tmp_path / "handoff" / "feedback.jsonl"
    converted = owr.convert(REAL_EXPORT, out)
    assert converted.counts["written"] == 8 and converted.paths is not None
    report = owr.verify(out, export=REAL_EXPORT)
    assert report.ok, report.render()
    with portkey_stub() as stub:
        settings = owr.ReplaySettings(base_url=stub.url + "/", delivery=owr.DeliveryOptions())
        plan = owr.dry_run(out, settings)
        assert plan.plan.posts == 8 and stub.state.requests == 0
        result = owr.replay(out, settings, api_key=API_KEY)  # no stderr: nothing printed
        again = owr.replay(out, settings, api_key=owr.Secret(API_KEY, "test"))
    assert result.exit_code == owr.ExitCode.OK and result.stats is not None
    assert result.stats.posted == 8 and result.warnings == []
    assert again.plan.states[owr.LineState.DELIVERED] == 8
    assert settings.base_url == stub.url  # normalised once, on construction


def test_the_key_helper_reads_the_environment(tmp_path: Path) -> None:
    with environment(PORTKEY_API_KEY=API_KEY + "\n"):
        assert owr.portkey_key().reveal() == API_KEY
    with environment(PORTKEY_API_KEY=""), pytest.raises(owr.UsageError, match="PORTKEY_API_KEY"):
        owr.portkey_key()


def test_download_and_errors_carry_exit_codes(tmp_path: Path) -> None:
    with openwebui_stub(export_file=REAL_EXPORT) as server:
        got = owr.download_export(server.url, ADMIN_TOKEN, tmp_path / "e.json")
        assert got.records == 9 and (tmp_path / "e.json.sha256").exists()
        with pytest.raises(owr.ReplayError) as refused:
            owr.download_export(server.url, "not-a-token", tmp_path / "x" / "e.json")
    assert refused.value.code == owr.ExitCode.AUTH
    assert not (tmp_path / "x").exists()  # a failed download leaves nothing it created
    with pytest.raises(owr.UsageError):
        owr.ReplaySettings(base_url="http://example.com/v1")  # plain http to another host


def test_a_failed_open_releases_the_hashing_child_and_the_file(tmp_path: Path) -> None:
    """A library caller may convert thousands of files in one process."""
    bad = tmp_path / "not.json"
    bad.write_text("hello")
    code = (
        "import gc, os, sys, warnings, owui_replay as owr\n"
        "warnings.simplefilter('error', ResourceWarning)\n"
        "for _ in range(20):\n"
        "    try: owr.convert(sys.argv[1], None)\n"
        "    except owr.InputError: pass\n"
        "gc.collect()\n"
        "print(len(os.listdir('/proc/self/fd')), len(os.listdir(f'/proc/{os.getpid()}/task')))\n"
        "import subprocess; print(len(subprocess._active or []))\n"
    )
    done = subprocess.run(
        [sys.executable, "-X", "dev", "-c", code, str(bad)],
        capture_output=True, text=True, env={"PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "ResourceWarning" not in done.stderr
    fds, _threads = map(int, done.stdout.split()[:2])
    assert fds < 10 and done.stdout.split()[2] == "0"


def test_the_readme_example_runs(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text("utf-8")
    section = readme.split("## Use from Python", 1)[1]
    code = re.search(r"```python\n(.+?)\n```", section, re.S).group(1)  # type: ignore[union-attr]
    code = code.replace("fixtures/", f"{ROOT}/fixtures/").replace("out/", f"{tmp_path}/out/")
    with portkey_stub() as stub, environment(PORTKEY_API_KEY=API_KEY, PORTKEY_BASE_URL=stub.url):
        printed = io.StringIO()
        exec(
            compile(code, "README.md", "exec"),
            {"print": lambda *a: printed.write(" ".join(map(str, a)) + "\n")},
        )
        assert len(stub.state.stored) == 8
    assert "8 posted" in printed.getvalue()


def test_the_package_loads_each_job_when_it_is_first_used() -> None:
    """`import owui_replay` costs no third-party import; a job's submodule imported first
    (as the CLI and the other jobs do) does not replace the function of the same name."""
    code = (
        "import sys, owui_replay as owr\n"
        "heavy = [m for m in ('requests', 'jsonschema', 'tqdm', 'ijson', 'sqlite3')"
        " if m in sys.modules]\n"
        "import owui_replay.converting, owui_replay.replaying, owui_replay.verifying\n"
        "import owui_replay.syncing, owui_replay.inspecting\n"
        "jobs = [owr.convert, owr.replay, owr.verify, owr.sync, owr.inspect_export]\n"
        "print(heavy, [type(j).__name__ for j in jobs], 'requests' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split("\n")[0] == "[] " + str(["function"] * 5) + " True"
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        owr.no_such_name  # noqa: B018 - the lookup is what is tested


def test_each_job_module_is_a_module_whose_functions_can_be_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ordinary package: the job modules are modules, importable and patchable by name,
    and the public functions live beside them under their own names."""
    import owui_replay.converting as converting

    assert isinstance(converting, type(sys)) and owr.convert is converting.convert
    calls: list[int] = []
    real = converting.build_manifest

    def counting(*args: object, **kwargs: object) -> dict:
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("owui_replay.converting.build_manifest", counting)
    owr.convert(REAL_EXPORT, tmp_path / "f.jsonl")
    assert calls == [1]
    assert type(owr).__name__ == "module" and type(owr) is type(sys)  # no custom module class
