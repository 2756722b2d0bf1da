"""The shared command-line plumbing: help defaults and one-line errors."""
import pytest

from jaxnet.commands import cli


def test_help_shows_zero_defaults_but_not_unset_or_false_ones():
    parser = cli.Parser(prog="prog")
    parser.add_argument("--reg", type=float, default=0.0, help="L2 strength")
    parser.add_argument("--patience", type=int, default=0, help="epochs without a new best")
    parser.add_argument("--out", help="run folder")
    parser.add_argument("--verbose", action="store_true", help="print progress")
    text = " ".join(parser.format_help().split())
    assert "L2 strength (default: 0.0)" in text
    assert "epochs without a new best (default: 0)" in text
    assert "run folder (default" not in text
    assert "print progress (default" not in text


def test_bad_flag_is_one_line_with_status_2(capsys):
    parser = cli.Parser(prog="prog")
    parser.add_argument("--hidden-size", type=cli.positive_int)
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["--hidden-size", "0"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "must be >= 1, got 0" in err and "(see --help)" in err
