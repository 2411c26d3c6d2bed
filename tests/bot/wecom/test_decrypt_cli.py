"""`siyu wecom decrypt`, driven through a tiny argparse like the real `siyu` CLI builds."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Any

import pytest

from bot.wecom import decrypt_cli

FIXTURES = Path(__file__).parents[2] / "fixtures" / "wecom"
SAMPLE: dict[str, Any] = json.loads(
    (FIXTURES / "official_crypto_sample.json").read_text(encoding="utf-8")
)


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="siyu")
    decrypt_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


def sample_args(section: str, **overrides: str) -> list[str]:
    values = {
        "token": SAMPLE["token"],
        "aes-key": SAMPLE["encoding_aes_key"],
        "corp-id": SAMPLE["receive_id"],
        "signature": SAMPLE[section]["msg_signature"],
        "timestamp": SAMPLE[section]["timestamp"],
        "nonce": SAMPLE[section]["nonce"],
    } | overrides
    argv = ["wecom", "decrypt"]
    for name, value in values.items():
        argv += [f"--{name}", value]
    return argv


def post_body_file(tmp_path: Path) -> Path:
    path = tmp_path / "body.xml"
    path.write_text(SAMPLE["post"]["body"], encoding="utf-8")
    return path


def test_decrypts_official_echostr(capsys: pytest.CaptureFixture[str]) -> None:
    code = run(sample_args("verify_url") + ["--echostr", SAMPLE["verify_url"]["echostr"]])
    out, err = capsys.readouterr()
    assert (code, out, err) == (0, "1616140317555161061\n", "")


def test_decrypts_official_post_body(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = run(sample_args("post") + ["--body", str(post_body_file(tmp_path))])
    out, err = capsys.readouterr()
    assert code == 0 and err == ""
    assert out == SAMPLE["post"]["plaintext"] + "\n"


def test_reads_body_from_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stdin = io.TextIOWrapper(io.BytesIO(SAMPLE["post"]["body"].encode()), encoding="utf-8")
    monkeypatch.setattr("sys.stdin", stdin)
    code = run(sample_args("post") + ["--body", "-"])
    assert code == 0
    assert "<Content><![CDATA[hello]]></Content>" in capsys.readouterr().out


def test_signature_mismatch_names_the_expected_signature_but_not_the_secrets(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = run(
        sample_args("verify_url", signature="0" * 40)
        + ["--echostr", SAMPLE["verify_url"]["echostr"]]
    )
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert (
        "signature mismatch: expected sha1(sorted(token,timestamp,nonce,encrypt))="
        "5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3 got " + "0" * 40
    ) in err
    assert SAMPLE["token"] not in err
    assert SAMPLE["encoding_aes_key"] not in err


def test_wrong_token_is_a_signature_mismatch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run(sample_args("post", token="WrongToken") + ["--body", str(post_body_file(tmp_path))])
    err = capsys.readouterr().err
    assert code == 2
    assert "bad_signature (HTTP 403)" in err and "WrongToken" not in err


def test_echostr_with_plus_turned_into_space_gets_a_hint(
    capsys: pytest.CaptureFixture[str],
) -> None:
    mangled = SAMPLE["verify_url"]["echostr"].replace("+", " ")
    code = run(sample_args("verify_url") + ["--echostr", mangled])
    assert code == 2
    assert "'+' URL-decoded to ' '" in capsys.readouterr().err


def test_wrong_corp_id_says_which_receive_id_the_message_is_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run(
        sample_args("post", **{"corp-id": "ww0000000000000001"})
        + ["--body", str(post_body_file(tmp_path))]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "bad_receive_id (HTTP 403)" in err
    assert "'wx5823bf96d3bd56c7'" in err and "'ww0000000000000001'" in err


def test_wrong_aes_key_fails_without_printing_it(capsys: pytest.CaptureFixture[str]) -> None:
    wrong_key = "z" * 42 + "A"
    code = run(
        sample_args("verify_url", **{"aes-key": wrong_key})
        + ["--echostr", SAMPLE["verify_url"]["echostr"]]
    )
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert wrong_key not in err


@pytest.mark.parametrize("key", ["tooShort", "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2#"])
def test_malformed_aes_key_is_reported_without_echoing_it(
    key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run(sample_args("verify_url", **{"aes-key": key}) + ["--echostr", "x"])
    err = capsys.readouterr().err
    assert code == 2
    assert "invalid configuration: EncodingAESKey" in err and key not in err


def test_body_without_encrypt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    body = tmp_path / "body.xml"
    body.write_text("<xml><ToUserName>wx5823bf96d3bd56c7</ToUserName></xml>")
    assert run(sample_args("post") + ["--body", str(body)]) == 2
    assert "missing_encrypt (HTTP 400)" in capsys.readouterr().err


def test_body_with_doctype(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    body = tmp_path / "body.xml"
    body.write_text('<!DOCTYPE x [<!ENTITY e "a">]><xml><Encrypt>&e;</Encrypt></xml>')
    assert run(sample_args("post") + ["--body", str(body)]) == 2
    assert "xml_entities (HTTP 400)" in capsys.readouterr().err


def test_missing_body_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(sample_args("post") + ["--body", str(tmp_path / "nope.xml")]) == 2
    assert "cannot read body" in capsys.readouterr().err


def test_echostr_or_body_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc_info:
        run(sample_args("post"))
    assert exc_info.value.code == 2
    with pytest.raises(SystemExit):
        run(sample_args("post") + ["--echostr", "a", "--body", "b"])
