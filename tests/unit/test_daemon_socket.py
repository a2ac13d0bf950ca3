"""The API's unix socket: a leftover file is replaced, a socket another process serves is not."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from taskd.daemon import StartupError, _prepare_socket_path


def test_a_leftover_socket_file_is_replaced_and_a_live_one_refused(tmp_path: Path) -> None:
    path = tmp_path / "run" / "api.sock"
    path.parent.mkdir()
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    live.bind(str(path))
    live.listen()
    with pytest.raises(StartupError, match="another process is listening on it"):
        _prepare_socket_path(str(path))
    assert path.exists()
    live.close()  # its file stays behind, as after a kill -9
    assert _prepare_socket_path(str(path)) == path
    assert not path.exists()
