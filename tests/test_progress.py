"""Progress bars draw only on a terminal: a log file gets none."""

import io
import sys

from scalevid.progress import on_terminal, progress_bar


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def test_bar_hidden_when_standard_error_is_a_file(monkeypatch):
    monkeypatch.setattr(sys, "stderr", _Stream(tty=False))
    assert not on_terminal()
    with progress_bar(range(3), enabled=True) as bar:
        assert bar.disable
        assert list(bar) == [0, 1, 2]  # iterating still works
    assert sys.stderr.getvalue() == ""


def test_bar_shown_on_a_terminal_unless_disabled(monkeypatch):
    monkeypatch.setattr(sys, "stderr", _Stream(tty=True))
    assert on_terminal()
    with progress_bar(total=2, enabled=True, file=sys.stderr) as bar:
        assert not bar.disable
        bar.update(2)
    assert "2/2" in sys.stderr.getvalue()
    assert progress_bar(total=2, enabled=False).disable


def test_no_standard_error_counts_as_no_terminal(monkeypatch):
    monkeypatch.setattr(sys, "stderr", None)
    assert not on_terminal()
