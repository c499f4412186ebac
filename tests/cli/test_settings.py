"""Every setting is checked before anything starts: each bad value is one line naming the
variable or flag it came from, and exit status 2.

The bad values come from each setting's declared rule (``saec.settings``), so a setting
added to ``Settings`` is walked here without a line of this file changing.
"""

from __future__ import annotations

import math
import socket
from pathlib import Path

import pytest

from saec.cli import build_parser, main
from saec.settings import Rule, Settings, SettingsError, declared, flag, names, spec, var


def bad_values(rule: Rule) -> list[str]:
    """Values the rule must refuse, as text from the environment or a flag."""
    if rule.kind is bool:
        return ["maybe", "2", ""]
    if rule.choices:
        return ["other", rule.choices[0].upper() + "x", ""]
    if rule.kind is str:
        return []  # free text: checked where it is used (the store folder, the address)
    bad = ["abc", "", "1e400" if rule.kind is int else "nan", "inf", "-inf"]
    if rule.low is not None:
        below = int(rule.low) - 1 if rule.kind is int else -0.5
        bad.append(str(-1 if below == 0 and rule.zero else below))
        if not rule.zero and (rule.low > 0 or rule.kind is float):  # floats are > low
            bad.append("0")
    if rule.high is not None:
        bad.append(str(int(rule.high) + 1))
    if rule.kind is int:
        bad.append("1.5")
    return bad


FREE_TEXT = {"store", "host", "fields", "store_cache", "admin_token", "update_log"}
CASES = [(name, value) for name in names() for value in bad_values(spec(name).rule)]


def test_every_setting_is_walked_or_free_text() -> None:
    undeclared = [var(n) for n in names() if not declared(n)]
    assert not undeclared, f"declare {undeclared} with setting(default, rule, help) in saec/settings.py"
    walked = {name for name, _ in CASES}
    assert walked | FREE_TEXT == set(names()), "a setting with neither bad values nor a place in FREE_TEXT"
    assert not walked & FREE_TEXT
    # The ranges the issue asks for.
    assert spec("port").rule.expected() == "an integer 1-65535 (0: any free port)"
    assert spec("reload_interval").rule.expected() == "a finite number >= 0 (0: never)"
    for name in ("workers", "max_ids", "max_body_bytes"):
        assert spec(name).rule.expected() == "an integer >= 1"


@pytest.mark.parametrize("name, value", CASES)
def test_a_bad_variable_is_refused_naming_it(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env({var(name): value})
    message = str(err.value)
    assert message.startswith(f"{var(name)}: expected {spec(name).rule.expected()}, got {value!r}")
    assert "\n" not in message


@pytest.mark.parametrize("name, value", CASES)
def test_a_bad_flag_is_refused_naming_it(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=f"^{flag(name)}: expected"):
        Settings.from_mapping({flag(name): value})


@pytest.mark.parametrize(
    "name, good",
    [("port", "0"), ("port", "1"), ("port", "65535"), ("reload_interval", "0"), ("reload_interval", "0.25"),
     ("max_body_bytes", "1"), ("verify_on_open", "off"), ("default_vector", "mean")],
)  # fmt: skip
def test_edges_inside_the_range_are_taken(name: str, good: str) -> None:
    value = getattr(Settings.from_env({var(name): good}), name)
    assert value == spec(name).rule.parse(var(name), good)
    assert not (isinstance(value, float) and math.isnan(value))


def test_settings_built_in_code_are_checked_too() -> None:
    with pytest.raises(SettingsError, match="^SAEC_PORT: expected an integer 1-65535"):
        Settings(port=70000)
    with pytest.raises(SettingsError, match="^SAEC_RELOAD_INTERVAL: expected a finite number"):
        Settings(reload_interval=float("nan"))


def test_serve_help_lists_every_variable() -> None:
    text = build_parser(["serve"])._subparsers._group_actions[0].choices["serve"].format_help()  # type: ignore[union-attr]
    for name in names():
        assert var(name) in text, var(name)
        if spec(name).flag:
            assert flag(name) in text


@pytest.mark.parametrize("name, value", [("port", "70000"), ("reload_interval", "nan"), ("max_body_bytes", "0")])
def test_serve_names_what_the_user_used(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str, value: str
) -> None:
    store = str(tmp_path / "store")
    assert main(["serve", "--wait", "--store", store, flag(name), value]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"saec serve: {flag(name)}: expected {spec(name).rule.expected()}, got {value!r}"
    ]
    monkeypatch.setenv(var(name), value)
    assert main(["serve", "--wait", "--store", store]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"saec serve: {var(name)}: expected {spec(name).rule.expected()}, got {value!r}"
    ]


def test_a_busy_port_is_one_line_before_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        store = str(tmp_path / "store")
        assert main(["serve", "--wait", "--store", store, "--port", str(port)]) == 2
        err = capsys.readouterr().err.splitlines()
        assert err == [
            f"saec serve: --port {port}: 127.0.0.1:{port} is already in use by another process; "
            "stop it or choose another port (--port N, or 0 for any free port)"
        ]
        monkeypatch.setenv("SAEC_PORT", str(port))
        assert main(["serve", "--wait", "--store", store]) == 2
        assert capsys.readouterr().err.startswith(f"saec serve: SAEC_PORT {port}: 127.0.0.1:{port} is already in use")


def test_a_host_that_is_no_address_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["serve", "--wait", "--store", str(tmp_path / "s"), "--host", "no-such-host.invalid"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("saec serve: --host no-such-host.invalid: expected an address of this machine")
