"""A small devd.conf(5) reader and the matcher devd applies to events.

Used by ``carphooks check`` (is our CARP rule the one devd runs?) and by the tests
(apply the rules to real event lines such as
``!system=CARP subsystem=220@lagg0_vlan220 type=INIT``).

devd semantics reproduced here (freebsd-facts §1.4-1.7, ``sbin/devd/devd.cc``):

* statements ``notify|attach|detach|nomatch PRIORITY { match "VAR" "RE"; ...;
  action "CMD"; };`` and ``options { directory "DIR"; set NAME "VALUE"; };``;
* every ``match`` of a statement must hold; regexes are POSIX extended, anchored
  (``^...$``) and case-insensitive, and a leading ``!`` negates; ``$name`` inside a
  regex is replaced by an ``options`` ``set`` variable;
* rules are tried from the highest priority down (stable: equal priorities keep the
  order in which files were read) and only the first match runs;
* in ``action``, ``$name`` is the event's variable (shell-quoted by recent devd),
  ``$$`` is ``$``, and ``$`` before anything but a letter, ``_``, ``-`` or ``*``
  passes through.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

DEVD_CONF = "/etc/devd.conf"
DEFAULT_DIRS = ("/etc/devd", "/usr/local/etc/devd")
EVENT_KINDS = {"!": "notify", "+": "attach", "-": "detach", "?": "nomatch"}
STATEMENTS = ("attach", "detach", "nomatch", "notify")


class DevdSyntaxError(ValueError):
    """A devd.conf file devd itself would reject (or that this reader cannot follow)."""


@dataclass(frozen=True)
class Match:
    """One ``match "VAR" "REGEX";`` (or ``media-type``) line."""

    variable: str
    regex: str
    negate: bool = False
    kind: str = "match"  # "match" | "media-type" | other sub-statements that must hold

    def holds(self, variables: Mapping[str, str], sets: Mapping[str, str]) -> bool:
        """Whether this line holds for an event's variables."""
        if self.kind != "match":
            # media-type and device-name style lines need the interface database;
            # they never hold for CARP events (subsystem is VHID@IF, not an interface).
            return False
        value = variables.get(self.variable, "")
        pattern = compile_ere(expand_sets(self.regex, sets))
        found = pattern.fullmatch(value) is not None
        return found != self.negate


@dataclass(frozen=True)
class Rule:
    """A notify/attach/detach/nomatch statement."""

    kind: str
    priority: int
    matches: tuple[Match, ...]
    actions: tuple[str, ...]
    source: str
    line: int
    order: int = 0  # parse order across all files (ties keep it)

    def where(self) -> str:
        return f"{self.source}:{self.line}"

    def matches_event(self, event: Event, sets: Mapping[str, str]) -> bool:
        """devd's ``event_proc::matches``: same kind and every match line holds."""
        if self.kind != event.kind:
            return False
        return all(m.holds(event.variables, sets) for m in self.matches)


@dataclass
class DevdConfig:
    """Everything read from one or more devd.conf files."""

    rules: list[Rule] = field(default_factory=list)
    sets: dict[str, str] = field(default_factory=dict)
    directories: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def ordered(self) -> list[Rule]:
        """Rules in the order devd tries them: priority high to low, stable."""
        return sorted(self.rules, key=lambda r: (-r.priority, r.order))

    def all_matches(self, event: Event) -> list[Rule]:
        """Every rule that matches ``event``, in devd's order (the first one runs)."""
        return [r for r in self.ordered() if r.matches_event(event, self.sets)]


@dataclass(frozen=True)
class Event:
    """A devctl event line: kind and variables."""

    kind: str
    variables: Mapping[str, str]
    line: str

    def get(self, name: str) -> str:
        return self.variables.get(name, "")


# -- events -----------------------------------------------------------------------------

def parse_event(line: str) -> Event:
    """Parse ``!system=CARP subsystem=1@vtnet0 type=MASTER`` (notify events).

    attach/detach/nomatch lines (``+dev at ... on parent``) are accepted with the
    ``key=value`` words they contain.
    """
    line = line.rstrip("\n")
    if not line or line[0] not in EVENT_KINDS:
        raise ValueError(f"not a devd event line: {line!r}")
    kind = EVENT_KINDS[line[0]]
    variables: dict[str, str] = {}
    for word in line[1:].split():
        name, sep, value = word.partition("=")
        if sep:
            variables[name] = value
    return Event(kind=kind, variables=variables, line=line)


def carp_event(subsystem: str, type_: str) -> Event:
    """The event devd sees when CARP changes state."""
    return parse_event(f"!system=CARP subsystem={subsystem} type={type_}")


# -- regexes -----------------------------------------------------------------------------

_CLASSES = {
    "alpha": "a-zA-Z", "digit": "0-9", "alnum": "a-zA-Z0-9", "upper": "A-Z",
    "lower": "a-z", "space": " \\t\\n\\r\\f\\v", "xdigit": "0-9A-Fa-f",
    "punct": "!-/:-@\\[-`{-~", "blank": " \\t", "cntrl": "\\x00-\\x1f\\x7f",
    "print": " -~", "graph": "!-~",
}


def compile_ere(regex: str) -> re.Pattern[str]:
    """Compile a POSIX extended regex the way devd does: anchored, case-insensitive."""
    try:
        return re.compile(f"(?:{ere_to_python(regex)})", re.IGNORECASE | re.DOTALL)
    except re.error as exc:
        raise DevdSyntaxError(f"bad regular expression {regex!r}: {exc}") from None


def ere_to_python(regex: str) -> str:
    """Translate the POSIX ERE subset devd rules use into Python ``re`` syntax.

    Bracket expressions are rewritten (``[[:digit:]]``, a literal ``\\`` or ``[``
    inside brackets); everything else in ERE means the same in Python.
    """
    out: list[str] = []
    i = 0
    n = len(regex)
    while i < n:
        c = regex[i]
        if c == "\\" and i + 1 < n:
            out.append(regex[i:i + 2])
            i += 2
            continue
        if c != "[":
            out.append(c)
            i += 1
            continue
        # bracket expression
        j = i + 1
        body: list[str] = []
        if j < n and regex[j] == "^":
            body.append("^")
            j += 1
        if j < n and regex[j] == "]":
            body.append("\\]")
            j += 1
        closed = False
        while j < n:
            d = regex[j]
            if d == "]":
                closed = True
                j += 1
                break
            if d == "[" and j + 1 < n and regex[j + 1] == ":":
                end = regex.find(":]", j + 2)
                if end < 0:
                    raise DevdSyntaxError(f"unterminated character class in {regex!r}")
                name = regex[j + 2:end]
                if name not in _CLASSES:
                    raise DevdSyntaxError(f"unknown character class [:{name}:] in {regex!r}")
                body.append(_CLASSES[name])
                j = end + 2
                continue
            if d in "\\[":
                body.append("\\" + d)
            else:
                body.append(d)
            j += 1
        if not closed:
            raise DevdSyntaxError(f"unterminated bracket expression in {regex!r}")
        out.append("[" + "".join(body) + "]")
        i = j
    return "".join(out)


_SET_VAR = re.compile(r"\$([A-Za-z_][A-Za-z0-9_-]*)")


def expand_sets(regex: str, sets: Mapping[str, str]) -> str:
    """Replace ``$name`` in a match regex by the value of ``set name "...";``."""
    if "$" not in regex:
        return regex
    return _SET_VAR.sub(lambda m: sets.get(m.group(1), m.group(0)), regex)


# -- action expansion --------------------------------------------------------------------

def expand_action(action: str, event: Event, *, quote: bool = True) -> str:
    """The shell command devd runs for ``action`` on ``event``.

    ``quote=True`` is recent devd (each value shell-quoted, one argv element);
    ``quote=False`` is older devd (raw text).
    """
    out: list[str] = []
    i = 0
    n = len(action)
    while i < n:
        c = action[i]
        if c != "$" or i + 1 >= n:
            out.append(c)
            i += 1
            continue
        nxt = action[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
            continue
        if nxt == "*":
            value = event.line
            i += 2
        elif nxt == "_" and (i + 2 >= n or not _name_char(action[i + 2])):
            value = event.line[1:]
            i += 2
        elif nxt.isalpha() or nxt in "_-":
            j = i + 1
            while j < n and _name_char(action[j]):
                j += 1
            value = event.get(action[i + 1:j])
            i = j
        else:
            out.append(c)
            i += 1
            continue
        out.append(shlex.quote(value) if quote else value)
    return "".join(out)


def _name_char(c: str) -> bool:
    return c.isalnum() or c in "_-"


def action_argv(action: str, event: Event, *, quote: bool = True) -> list[str]:
    """argv of the command ``/bin/sh -c`` would run (for commands without shell syntax)."""
    return shlex.split(expand_action(action, event, quote=quote))


def action_commands(action: str, event: Event, *, quote: bool = True) -> list[list[str]]:
    """argv of each simple command of an action, split at ``;``, ``&``, ``&&``, ``|``."""
    lexer = shlex.shlex(expand_action(action, event, quote=quote), posix=True,
                        punctuation_chars=";&|")
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token and set(token) <= set(";&|"):
            commands.append([])
        else:
            commands[-1].append(token)
    return [c for c in commands if c]


# -- parsing -----------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<ws>[ \t\r\n]+)
  | (?P<comment>\#[^\n]*|//[^\n]*|/\*.*?\*/)
  | (?P<string>"[^"]*")
  | (?P<punct>[{};])
  | (?P<word>[^\s{};"]+)
    """,
    re.VERBOSE | re.DOTALL,
)


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str
    line: int


def _tokens(text: str, source: str) -> list[_Tok]:
    toks: list[_Tok] = []
    pos = 0
    line = 1
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise DevdSyntaxError(f"{source}:{line}: cannot read {text[pos:pos + 20]!r}")
        kind = m.lastgroup or ""
        value = m.group(0)
        if kind == "string":
            # devd's lexer: no escapes, but backslash-newline plus the next line's
            # leading blanks is a continuation.
            toks.append(_Tok("string", re.sub(r"\\\n[ \t]*", "", value[1:-1]), line))
        elif kind in ("punct", "word"):
            toks.append(_Tok(kind, value, line))
        line += value.count("\n")
        pos = m.end()
    return toks


def parse(text: str, source: str = "<devd.conf>", *, config: DevdConfig | None = None,
          ) -> DevdConfig:
    """Parse one devd.conf file into ``config`` (a new one by default)."""
    cfg = config if config is not None else DevdConfig()
    cfg.files.append(source)
    toks = _tokens(text, source)
    i = 0

    def expect(kind: str, text_: str | None = None) -> _Tok:
        nonlocal i
        if i >= len(toks):
            raise DevdSyntaxError(f"{source}: unexpected end of file")
        tok = toks[i]
        if tok.kind != kind or (text_ is not None and tok.text != text_):
            want = text_ or kind
            raise DevdSyntaxError(f"{source}:{tok.line}: expected {want!r}, got {tok.text!r}")
        i += 1
        return tok

    while i < len(toks):
        head = expect("word")
        keyword = head.text
        if keyword == "options":
            expect("punct", "{")
            for sub in _substatements(toks, i, source):
                i = sub[0]
                words = sub[1]
                if words and words[0].text == "directory" and len(words) >= 2:
                    cfg.directories.append(words[1].text)
                elif words and words[0].text == "set" and len(words) >= 3:
                    cfg.sets[words[1].text] = words[2].text
            i = _after_block(toks, i, source)
            continue
        if keyword not in STATEMENTS:
            raise DevdSyntaxError(f"{source}:{head.line}: unknown statement {keyword!r}")
        prio_tok = expect("word")
        if not prio_tok.text.lstrip("-").isdigit():
            raise DevdSyntaxError(f"{source}:{prio_tok.line}: expected a priority, "
                                  f"got {prio_tok.text!r}")
        expect("punct", "{")
        matches: list[Match] = []
        actions: list[str] = []
        for end, words in _substatements(toks, i, source):
            i = end
            if not words:
                continue
            name = words[0].text
            args = [w.text for w in words[1:]]
            if name == "match" and len(args) == 2:
                regex = args[1]
                negate = regex.startswith("!")
                matches.append(Match(args[0], regex[1:] if negate else regex, negate))
            elif name == "action" and len(args) == 1:
                actions.append(args[0])
            elif name in ("media-type", "device-name", "class", "subdevice"):
                matches.append(Match(name, args[-1] if args else "", kind=name))
            else:
                raise DevdSyntaxError(f"{source}:{words[0].line}: bad sub-statement "
                                      f"{' '.join([name, *args])!r}")
        i = _after_block(toks, i, source)
        cfg.rules.append(Rule(kind=keyword, priority=int(prio_tok.text),
                              matches=tuple(matches), actions=tuple(actions),
                              source=source, line=head.line, order=len(cfg.rules)))
    return cfg


def _substatements(toks: Sequence[_Tok], start: int,
                   source: str) -> Iterable[tuple[int, list[_Tok]]]:
    """Yield (index after ';', words) for each ``word args... ;`` up to the closing ``}``."""
    i = start
    words: list[_Tok] = []
    while i < len(toks):
        tok = toks[i]
        if tok.kind == "punct" and tok.text == "}":
            if words:
                raise DevdSyntaxError(f"{source}:{tok.line}: missing ';' before '}}'")
            return
        if tok.kind == "punct" and tok.text == ";":
            i += 1
            yield i, words
            words = []
            continue
        if tok.kind == "punct":
            raise DevdSyntaxError(f"{source}:{tok.line}: unexpected {tok.text!r}")
        words.append(tok)
        i += 1
    raise DevdSyntaxError(f"{source}: missing '}}'")


def _after_block(toks: Sequence[_Tok], i: int, source: str) -> int:
    """Skip to after ``} ;`` that closes the current block (``i`` is at or before ``}``)."""
    depth = 0
    while i < len(toks):
        tok = toks[i]
        if tok.kind == "punct" and tok.text == "}":
            if depth == 0:
                i += 1
                if i >= len(toks) or toks[i].text != ";":
                    line = toks[i - 1].line
                    raise DevdSyntaxError(f"{source}:{line}: missing ';' after '}}'")
                return i + 1
            depth -= 1
        elif tok.kind == "punct" and tok.text == "{":
            depth += 1
        i += 1
    raise DevdSyntaxError(f"{source}: missing '}}'")


def load_tree(root: Path | str = "/") -> DevdConfig:
    """Read ``/etc/devd.conf`` and every ``*.conf`` in its directories under ``root``.

    The directories are those of devd.conf's ``options`` block (default
    ``/etc/devd`` and ``/usr/local/etc/devd``); files are read in name order (devd
    uses directory order, so ties between files are reported as ties). A file
    that cannot be parsed raises :class:`DevdSyntaxError`.
    """
    base = Path(root)
    cfg = DevdConfig()
    main = under(base, DEVD_CONF)
    if main.is_file():
        parse(main.read_text(encoding="utf-8", errors="replace"), DEVD_CONF, config=cfg)
    dirs = cfg.directories or list(DEFAULT_DIRS)
    for directory in dirs:
        path = under(base, directory)
        if not path.is_dir():
            continue
        for conf in sorted(path.glob("*.conf")):
            if conf.is_file():
                shown = f"{directory.rstrip('/')}/{conf.name}"
                parse(conf.read_text(encoding="utf-8", errors="replace"), shown, config=cfg)
    return cfg


def under(root: Path, absolute: str) -> Path:
    """``absolute`` inside the tree at ``root``."""
    return root / absolute.lstrip("/")
