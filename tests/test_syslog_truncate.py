"""Long syslog messages are cut to what FreeBSD's syslogd reads, on a UTF-8 boundary."""

from __future__ import annotations

import re

import pytest
from conftest import SyslogServer

from carphooks.log import Log

# FreeBSD 12-14 syslogd reads at most MAXLINE (2048) bytes of a datagram, and the
# kernel refuses a larger local datagram up to 14 (net.local.dgram.maxdgram).
MAX_DATAGRAM = 2048
MARK_RE = re.compile(r" \[truncated, (\d+) bytes\]$")


def datagrams(syslog: SyslogServer) -> list[bytes]:
    syslog.messages()  # waits for in-flight datagrams
    with syslog._lock:
        return list(syslog.raw)


def test_100k_message_is_cut_and_marked(syslog: SyslogServer) -> None:
    text = "".join(f"{i:07d} " for i in range(12800))  # 102400 bytes
    Log("carphooks", str(syslog.path), mirror=False).error(text)
    [data] = datagrams(syslog)
    assert MAX_DATAGRAM - 40 < len(data) <= MAX_DATAGRAM
    [msg] = syslog.messages()
    match = MARK_RE.search(msg.message)
    assert match and int(match[1]) == len(text)
    kept = msg.message[:match.start()]
    assert kept and text.startswith(kept)
    assert msg.tag == "carphooks" and msg.severity == 3


@pytest.mark.parametrize("char", ["é", "€", "𝄞"])  # 2, 3 and 4 bytes in UTF-8
def test_cut_never_splits_a_character(syslog: SyslogServer, char: str) -> None:
    log = Log("t", str(syslog.path), mirror=False)
    width = len(char.encode())
    for shift in range(width):  # the cut lands on every byte of a character
        log.notice("a" * shift + char * 3000)
    raw = datagrams(syslog)
    assert len(raw) == width
    for data in raw:
        assert len(data) <= MAX_DATAGRAM
        text = data.decode("utf-8")  # strict: a split character raises
        assert MARK_RE.search(text)
        body = text.split(": ", 1)[1]
        assert set(MARK_RE.sub("", body)) <= {"a", char}


def test_a_datagram_of_exactly_the_limit_is_sent_whole(syslog: SyslogServer) -> None:
    log = Log("t", str(syslog.path), mirror=False)
    log.notice("x")
    [short] = datagrams(syslog)
    room = MAX_DATAGRAM - len(short) + 1  # the header is the same for every message
    log.notice("y" * room)
    log.notice("z" * (room + 1))
    _, whole, cut = datagrams(syslog)
    assert len(whole) == MAX_DATAGRAM and whole.endswith(b"y" * room)
    assert len(cut) <= MAX_DATAGRAM and cut.endswith(f" [truncated, {room + 1} bytes]".encode())


def test_stderr_mirror_keeps_the_whole_message(syslog: SyslogServer, capsys) -> None:
    text = "w" * 5000
    Log("t", str(syslog.path), mirror=True).error(text)
    assert text in capsys.readouterr().err
    assert len(datagrams(syslog)[0]) <= MAX_DATAGRAM
