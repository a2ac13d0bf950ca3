"""Secret values become *** wherever they appear: whole, URL-encoded, nested in data."""

from __future__ import annotations

from taskd import logs
from taskd.redact import MASK, NONE, Redactor, masked_params, secret_values


def test_a_secret_is_masked_whole_and_in_its_url_encoded_forms() -> None:
    redactor = Redactor(["p@ss word/1", "ab"])
    text = "GET http://h/login?pw=p%40ss%20word%2F1 failed; p@ss word/1; pw=p%40ss+word%2F1"
    assert redactor.text(text) == f"GET http://h/login?pw={MASK} failed; {MASK}; pw={MASK}"
    assert redactor.text("tab ab") == "tab ab"  # too short to search for in text
    assert not NONE and NONE.text("anything") == "anything"


def test_every_form_a_step_or_an_error_may_write_is_masked() -> None:
    secret = 'Pä"ss\\wd/ +&x:@Q'
    redactor = Redactor([secret])
    import json
    from urllib.parse import quote

    for written in (
        json.dumps(secret),  # JSON, ASCII escapes
        json.dumps(secret, ensure_ascii=False),
        repr({"password": secret}),  # a template's {params}
        "/p/" + quote(secret, safe="/:@!$&'()*+,;="),  # as a URL path quotes it
        "?pw=" + quote(secret, safe=""),
    ):
        assert "@Q" not in redactor.text(written) and "%40Q" not in redactor.text(written), written


def test_numbers_lines_and_odd_text_are_masked_without_failing() -> None:
    redactor = Redactor(["8675309", "-----BEGIN KEY-----\nAAAAsecretline\n-----END KEY-----", "\ud800abcdef"])
    assert redactor.data({"pin": 8675309, "other": 42, "flag": True}) == {"pin": MASK, "other": 42, "flag": True}
    assert redactor.text("AAAAsecretline") == MASK  # one line of a secret of several
    assert redactor.text("x \ud800abcdef") == f"x {MASK}"


def test_many_or_long_secrets_stay_fast_and_the_first_ones_win() -> None:
    """One pass over the text whatever the secrets: 64 of 4,000 characters sharing one long run
    against 20,000 characters of that run took a regular expression 4.6 s."""
    import time

    from taskd.redact import MAX_SECRET_CHARS

    began = time.perf_counter()
    redactor = Redactor([f"{'a' * 4000}{i:02d}" for i in range(64)])
    assert redactor.text("a" * 20_000) == "a" * 20_000
    huge = Redactor(["first-secret", *(f"s{i:06d}" for i in range(90_000))])
    assert huge.text("first-secret s000001 " * 100).count(MASK) == 200
    assert time.perf_counter() - began < 5.0  # generous: it takes a fraction of a second
    assert sum(map(len, huge.values)) <= MAX_SECRET_CHARS
    assert huge.text("s089999") == "s089999"  # past the budget: not searched for


def test_a_long_text_is_cut_outside_its_secrets() -> None:
    redactor = Redactor(["the-secret-value"])
    text = "x" * 100 + "the-secret-value" + "y" * 3
    assert redactor.safe_cut(text) == 100  # not inside the secret
    assert redactor.safe_cut("x" * 100 + "the-sec") == 107 - 15  # a secret may begin there
    assert redactor.text('say "{\\"pw\\": \\"the-secret-value\\"}"') == 'say "{\\"pw\\": \\"***\\"}"'


def test_the_longest_secret_wins_and_data_is_masked_deeply() -> None:
    redactor = Redactor(["secret", "secret-longer"])
    assert redactor.text("a secret-longer b") == f"a {MASK} b"
    data = {"k": ["x secret y", {"n": 1, "s": "secret"}], "secret": True}
    assert redactor.data(data) == {"k": [f"x {MASK} y", {"n": 1, "s": MASK}], "secret": True}
    assert Redactor(["secret", "other1"]).text("other1 secret") == f"{MASK} {MASK}"


def test_secret_params_give_their_values_and_show_as_stars() -> None:
    params = {"password": "hunter22", "api": {"key": "k-123456"}, "user": "bob"}
    values = secret_values(params, ["password", "api", "absent"])
    assert "hunter22" in values and "k-123456" in values
    shown = masked_params(params, ["password", "api"], Redactor(["bob-is-not-secret"]))
    assert shown == {"password": MASK, "api": MASK, "user": "bob"}


def test_the_daemon_log_masks_process_secrets_and_a_runs_own() -> None:
    """The processor every daemon log line passes through (tested alone: configuring logging here
    would change it for the other tests of this process)."""
    logs.set_secrets(Redactor(["the-admin-token"]))
    try:
        first = logs.mask_secrets(None, "info", {"event": "e", "detail": "token the-admin-token"})
        second = logs.mask_secrets(
            None, "warning", {"event": "w", "error": "bad run-secret", "_redactor": Redactor(["run-secret"])}
        )
    finally:
        logs.set_secrets(NONE)
    assert first["detail"] == f"token {MASK}"
    assert second["error"] == f"bad {MASK}" and "_redactor" not in second
