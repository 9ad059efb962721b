"""The init's console words: spelled once (vmtest/guest/words.py); init.sh and the share
script boot() writes say exactly those."""

from __future__ import annotations

import re
from pathlib import Path

from vmtest.guest import words
from vmtest.qemu import boot
from vmtest.qemu.argv import Share

INIT = Path(words.__file__).with_name("init.sh")


def said_in(script: str) -> set[str]:
    """The words a shell script says (`say WORD ...`)."""
    return set(re.findall(r"\bsay \"?([A-Z0-9]+)", script))


def test_init_and_share_script_say_only_known_words_and_every_word_is_said():
    text = INIT.read_text()
    assert f'say() {{ echo "{words.PREFIX}$*"' in text  # the one prefix
    share = boot.mounts_script((Share(Path("/tmp"), 0),)).decode()
    spoken = said_in(text) | said_in(share)
    # EXIT is said by the console channel's own echo, not by a script
    assert spoken == set(words.WORDS) - {words.EXIT}


def test_the_checker_sees_a_word_spelled_elsewhere():
    assert said_in('say "READY $release"\nsay NEWWORD') == {"READY", "NEWWORD"}


def test_ready_line_gives_the_release():
    m = words.READY_RE.search(b"junk\r\n" + words.said(words.READY, "6.1.0-x") + b"\r\n")
    assert m is not None and m.group(1) == b"6.1.0-x"
